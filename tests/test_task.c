#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("task"); return s; }
TEST_MAIN(suite)
