#include "helpers.h"
static Suite *suite(void) { Suite *s = suite_create("sync"); return s; }
TEST_MAIN(suite)
