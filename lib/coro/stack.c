/* Task stacks: reserved in large mappings, committed on first touch, pooled.
 *
 * Why this shape (measured on the 2-vCPU VMs this project runs on):
 *  - a first touch of a fresh anonymous page costs 10-17 us, so a stack must
 *    touch as few pages as possible: a task that awaits right away touches
 *    one 4 KiB page of its stack, nothing else;
 *  - vm.max_map_count is 65530, so one mapping per stack (or an mprotect'ed
 *    guard page per stack, which splits a mapping in two) stops near 32k
 *    tasks. Stacks are carved out of chunks of 64 slots: a million tasks take
 *    ~15,600 mappings;
 *  - instead of a guard page, each slot keeps its lowest UVA__STACK_GAP bytes
 *    unused (never touched, so free) and the switch code checks the stack
 *    pointer against the usable base on every suspend: an overflow of less
 *    than the gap is caught and reported, not silently corrupting. Set
 *    UVA_STACK_GUARD=1 to also mprotect the gaps (a fault at the first byte
 *    over, at the cost of two mappings per stack);
 *  - finished tasks' stacks go to a LIFO pool, so the next task reuses warm
 *    pages; beyond `cache` pooled stacks, pages are given back with
 *    MADV_DONTNEED;
 *  - slot tops are staggered by a multiple of 64 bytes (< 2 KiB) so hot
 *    frames of different tasks do not compete for the same cache sets. */
#include "../internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef UVA_ASAN
#include <sanitizer/asan_interface.h>
/* A task's last frame never returns (it switches away for good), so its
 * redzones stay poisoned in ASan's shadow: clear them before the stack is
 * reused or unmapped, or the next task trips over stale poison. */
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UVA_VALGRIND 1
#endif
#endif

#define SLOTS_PER_CHUNK 64

typedef struct chunk {
  struct chunk *next;
  char *mem;
  size_t slot;
  size_t len;
  uva__stack_t stacks[SLOTS_PER_CHUNK];
} chunk_t;

struct uva__stack_pool {
  chunk_t *chunks;
  uva__stack_t *warm;   /* pages still committed */
  uva__stack_t *cold;   /* pages given back */
  size_t nwarm;
  size_t cache;
  bool guard;
};

uva__stack_pool_t *uva__stack_pool_new(void) {
  uva__stack_pool_t *p = uva__calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->cache = 262144;
  const char *g = getenv("UVA_STACK_GUARD");
  p->guard = g != NULL && g[0] == '1';
  return p;
}

void uva__stack_pool_set_cache(uva__stack_pool_t *p, size_t n) { p->cache = n; }

static void stack_release_pages(uva__stack_t *s) {
  /* The slot's top page holds nothing of ours (metadata lives in the chunk
   * header), so the whole usable part can go. */
  madvise(s->base, (size_t)(s->top - s->base), MADV_DONTNEED);
}

void uva__stack_pool_free(uva__stack_pool_t *p) {
  if (p == NULL) return;
  chunk_t *c = p->chunks;
  while (c) {
    chunk_t *next = c->next;
#ifdef UVA_VALGRIND
    for (int i = 0; i < SLOTS_PER_CHUNK; i++) VALGRIND_STACK_DEREGISTER(c->stacks[i].valgrind_id);
#endif
    UNPOISON(c->mem, c->len);
    munmap(c->mem, c->len);
    uva__free(c);
    c = next;
  }
  uva__free(p);
}

static int chunk_add(uva__stack_pool_t *p, size_t slot) {
  chunk_t *c = uva__calloc(1, sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->slot = slot;
  c->len = slot * SLOTS_PER_CHUNK;
  c->mem = mmap(NULL, c->len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (c->mem == MAP_FAILED) {
    uva__free(c);
    return UV_ENOMEM;
  }
#ifdef MADV_NOHUGEPAGE
  /* A huge page would commit 2 MiB for a task that needs 4 KiB. */
  madvise(c->mem, c->len, MADV_NOHUGEPAGE);
#endif
  for (int i = SLOTS_PER_CHUNK - 1; i >= 0; i--) {
    uva__stack_t *s = &c->stacks[i];
    char *slot_lo = c->mem + (size_t)i * slot;
    s->base = slot_lo + UVA__STACK_GAP;
    /* Stagger the tops within their page: slots are 2^n apart, so without
     * this every task's hot frames would land in the same L1/L2 cache sets
     * and evict each other (warm spawn of 200k tasks ran at ~1 us/task). */
    s->top = slot_lo + slot - (size_t)((i * 7) % 32) * 64;
    s->size = slot;
    if (p->guard) mprotect(slot_lo, UVA__STACK_GAP, PROT_NONE);
#ifdef MADV_POPULATE_WRITE
    /* Commit the top page (every task touches it) with one system call:
     * on these VMs that is 2-3x cheaper than taking the page fault. Fails
     * harmlessly on kernels before 5.14. */
    madvise((void *)(((uintptr_t)s->top - 1) & ~(uintptr_t)4095), 4096, MADV_POPULATE_WRITE);
#endif
#ifdef UVA_VALGRIND
    s->valgrind_id = VALGRIND_STACK_REGISTER(s->base, s->top);
#endif
    s->next = p->cold;
    p->cold = s;
  }
  c->next = p->chunks;
  p->chunks = c;
  return 0;
}

uva__stack_t *uva__stack_get(uva__stack_pool_t *p, size_t size) {
  /* Only the heads are looked at: when the loop's stack size changes, the
   * pooled stacks of the old size stay below and new chunks are made. */
  if (p->warm && p->warm->size == size) {
    uva__stack_t *s = p->warm;
    p->warm = s->next;
    p->nwarm--;
    return s;
  }
  if ((p->cold == NULL || p->cold->size != size) && chunk_add(p, size) != 0)
    return NULL;
  uva__stack_t *s = p->cold;
  p->cold = s->next;
  return s;
}

static void stack_unpoison(uva__stack_t *s) { UNPOISON(s->base, (size_t)(s->top - s->base)); }

void uva__stack_put(uva__stack_pool_t *p, uva__stack_t *s) {
  stack_unpoison(s);
  if (p->nwarm < p->cache) {
    s->next = p->warm;
    p->warm = s;
    p->nwarm++;
  } else {
    stack_release_pages(s);
    s->next = p->cold;
    p->cold = s;
  }
}
