#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("combine"); return s; }
TEST_MAIN(suite)
