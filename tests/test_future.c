#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("future"); return s; }
TEST_MAIN(suite)
