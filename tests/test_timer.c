#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("timer"); return s; }
TEST_MAIN(suite)
