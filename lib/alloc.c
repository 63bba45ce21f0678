/* The allocator seam. Every allocation in lib/ comes through here so that
 * tests can count what is still live when a loop closes (a leak is a test
 * failure) and make the Nth allocation fail (every failure must become an
 * error code). The counters are atomics so executor threads may allocate. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long live;
static atomic_long count;
static atomic_long fail_at = -1;

static bool should_fail(void) {
  long n = atomic_fetch_add(&count, 1) + 1;
  long f = atomic_load(&fail_at);
  return f >= 0 && n >= f;
}

void *uva__malloc(size_t n) {
  if (should_fail()) return NULL;
  void *p = malloc(n ? n : 1);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

void *uva__calloc(size_t n, size_t size) {
  if (should_fail()) return NULL;
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

void *uva__realloc(void *p, size_t n) {
  if (p == NULL) return uva__malloc(n);
  if (should_fail()) return NULL;
  return realloc(p, n ? n : 1);
}

void uva__free(void *p) {
  if (p == NULL) return;
  atomic_fetch_sub(&live, 1);
  free(p);
}

char *uva__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = uva__malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* The public free for every value the library hands out. */
void uva_free(void *p) { uva__free(p); }

long uva_test_alloc_live(void) { return atomic_load(&live); }
long uva_test_alloc_count(void) { return atomic_load(&count); }
void uva_test_alloc_fail_after(long n) {
  atomic_store(&fail_at, n < 0 ? -1 : atomic_load(&count) + n);
}
