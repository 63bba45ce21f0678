#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("thread"); return s; }
TEST_MAIN(suite)
