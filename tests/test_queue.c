#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("queue"); return s; }
TEST_MAIN(suite)
