#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("loop"); return s; }
TEST_MAIN(suite)
