/* Task stacks: reserved in large mappings, committed on first touch, pooled,
 * and guarded.
 *
 * Why this shape (measured on the 2-vCPU VMs this project runs on):
 *  - a first touch of a fresh anonymous page costs 10-17 us, so a stack must
 *    touch as few pages as possible: a task that awaits right away touches
 *    one 4 KiB page of its stack, nothing else;
 *  - vm.max_map_count is 65530, so one mapping per stack stops near 65k
 *    tasks. Stacks are carved out of chunks of 64 slots: a million tasks take
 *    ~15,600 mappings;
 *  - each slot keeps its lowest UVA__STACK_GAP bytes unused, and the gap is
 *    made to fault (see guard_init): an overflow stops at its first byte
 *    and overflow.c reports which task it was. With Linux >= 6.13 the gap is
 *    a guard region (MADV_GUARD_INSTALL): a marker in the page table, no
 *    mapping of its own, so every stack is guarded however many there are.
 *    Elsewhere (older kernels, qemu-user, which accepts the advice and does
 *    nothing) it is mprotect'ed, which splits the chunk's mapping: two
 *    mappings per stack, so only while the guarded stacks stay within half
 *    of vm.max_map_count (~16k stacks); stacks beyond that keep an
 *    unprotected gap, and the switch code checks the stack pointer against
 *    the usable base on every suspend, which catches an overflow of less
 *    than the gap in a task that suspends;
 *  - a system call costs ~1 us here, as much as the work of most of them:
 *    a chunk's 64 top-page commits and 64 guards are one process_madvise
 *    call each (kernel >= 6.14) rather than 128 madvise calls. Per stack,
 *    guard + commit then cost 0.5 + 0.8 us, against 2.3 us for the commit
 *    alone one slot at a time (and 2.3 us for one mprotect);
 *  - finished tasks' stacks go to a LIFO pool, so the next task reuses warm
 *    pages; beyond `cache` pooled stacks, pages are given back with
 *    MADV_DONTNEED (which keeps guard regions);
 *  - slot tops are staggered by a multiple of 64 bytes (< 2 KiB) so hot
 *    frames of different tasks do not compete for the same cache sets. */
#include "../internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
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

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* PIDFD_SELF_THREAD (Linux 6.14): process_madvise on our own memory
 * without opening a pidfd. */
#define PIDFD_SELF_ (-10000)

#define SLOTS_PER_CHUNK 64
#define PAGE 4096

typedef struct chunk {
  struct chunk *next;
  char *mem;
  size_t slot;
  size_t len;
  size_t vmas;  /* mappings its mprotect'ed gaps count against the budget */
  uva__stack_t stacks[SLOTS_PER_CHUNK];
} chunk_t;

struct uva__stack_pool {
  chunk_t *chunks;
  uva__stack_t *warm;   /* pages still committed */
  uva__stack_t *cold;   /* pages given back */
  size_t nwarm;
  size_t cache;
  uva__altstack_t alt;
};

/* ------------------------------------------------------------- guards */

enum { GUARD_NONE, GUARD_REGION, GUARD_MPROTECT };
static uv_once_t guard_once = UV_ONCE_INIT;
static int guard_mode;
static bool guard_unbounded;  /* UVA_STACK_GUARD=1: mprotect past the budget */
static bool batch_ok;         /* process_madvise(PIDFD_SELF) works */
static atomic_size_t vma_budget, vma_used;

bool uva__on_valgrind(void) {
#ifdef UVA_VALGRIND
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

static long pmadvise(struct iovec *v, size_t n, int advice) {
#ifdef SYS_process_madvise
  return syscall(SYS_process_madvise, PIDFD_SELF_, v, n, advice, 0);
#else
  (void)v, (void)n, (void)advice;
  errno = ENOSYS;
  return -1;
#endif
}

static size_t read_max_map_count(void) {
  size_t n = 65530;
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[32];
    ssize_t k = read(fd, buf, sizeof buf - 1);
    if (k > 0) {
      buf[k] = '\0';
      unsigned long v = strtoul(buf, NULL, 10);
      if (v > 0) n = v;
    }
    close(fd);
  }
  return n;
}

/* Decided once per process: which guard works here, and whether system
 * calls can be batched. The probe costs ~10 us, once. */
static void guard_init(void) {
  const char *g = getenv("UVA_STACK_GUARD");
  bool off = g && strcmp(g, "0") == 0;
  bool only_mprotect = g && strcmp(g, "mprotect") == 0;
  guard_unbounded = g && strcmp(g, "1") == 0;
  /* Half the mappings for guards leaves the other half to everything else
   * the program maps (libraries, malloc arenas, thread stacks: a few
   * hundred in a typical program). */
  atomic_store(&vma_budget, read_max_map_count() / 2);
  bool region = false;
  char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p != MAP_FAILED) {
    /* valgrind 3.19 does not know process_madvise and warns about it. */
    struct iovec v = {p + PAGE, PAGE};
    batch_ok = !uva__on_valgrind() && pmadvise(&v, 1, MADV_POPULATE_WRITE) == PAGE;
    if (!only_mprotect) {
      v.iov_base = p;
      int rc = batch_ok && pmadvise(&v, 1, MADV_GUARD_INSTALL) == PAGE
                   ? 0 : madvise(p, PAGE, MADV_GUARD_INSTALL);
      /* Check that the guard faults: qemu-user returns 0 for advice it does
       * not implement. The kernel writing to a guard page fails with
       * EFAULT instead of faulting (qemu writes to the unguarded page). */
      region = rc == 0 && uname((struct utsname *)(void *)p) != 0 && errno == EFAULT;
    }
    munmap(p, 2 * PAGE);
  }
  guard_mode = off ? GUARD_NONE : region ? GUARD_REGION : GUARD_MPROTECT;
}

/* Make the gaps of a fresh chunk fault, and commit the slots' top pages. */
static void chunk_prepare(chunk_t *c) {
  struct iovec gaps[SLOTS_PER_CHUNK], tops[SLOTS_PER_CHUNK];
  for (int i = 0; i < SLOTS_PER_CHUNK; i++) {
    uva__stack_t *s = &c->stacks[i];
    gaps[i].iov_base = s->base - UVA__STACK_GAP;
    gaps[i].iov_len = UVA__STACK_GAP;
    /* Every task touches its top page: committing it with a system call is
     * 2-3x cheaper here than taking the page fault. */
    tops[i].iov_base = (void *)(((uintptr_t)s->top - 1) & ~(uintptr_t)(PAGE - 1));
    tops[i].iov_len = PAGE;
  }
  /* Fails harmlessly on kernels before 5.14 (no MADV_POPULATE_WRITE). */
  if (!batch_ok || pmadvise(tops, SLOTS_PER_CHUNK, MADV_POPULATE_WRITE) < 0)
    for (int i = 0; i < SLOTS_PER_CHUNK; i++)
      madvise(tops[i].iov_base, PAGE, MADV_POPULATE_WRITE);

  bool guarded = false;
  if (guard_mode == GUARD_REGION) {
    const long all = (long)(SLOTS_PER_CHUNK * UVA__STACK_GAP);
    guarded = batch_ok && pmadvise(gaps, SLOTS_PER_CHUNK, MADV_GUARD_INSTALL) == all;
    if (!guarded) {
      int i = 0;
      while (i < SLOTS_PER_CHUNK && madvise(gaps[i].iov_base, UVA__STACK_GAP, MADV_GUARD_INSTALL) == 0)
        i++;
      guarded = i == SLOTS_PER_CHUNK;
    }
    /* Refused (an mlock'ed mapping): fall back to mprotect below. */
  }
  if (!guarded && guard_mode != GUARD_NONE) {
    /* Reserve the mappings first: [gap][stack] per slot. */
    size_t need = 2 * SLOTS_PER_CHUNK;
    size_t used = atomic_fetch_add(&vma_used, need) + need;
    if (used <= atomic_load(&vma_budget) || guard_unbounded) {
      c->vmas = need;
      guarded = true;
      for (int i = 0; i < SLOTS_PER_CHUNK; i++)
        if (mprotect(gaps[i].iov_base, UVA__STACK_GAP, PROT_NONE) != 0) {
          guarded = false; /* out of mappings after all */
          for (int j = 0; j < i; j++)
            mprotect(gaps[j].iov_base, UVA__STACK_GAP, PROT_READ | PROT_WRITE);
          break;
        }
    }
    if (!guarded) {
      atomic_fetch_sub(&vma_used, need);
      c->vmas = 0;
    }
  }
  for (int i = 0; i < SLOTS_PER_CHUNK; i++) c->stacks[i].guarded = guarded;
}

/* --------------------------------------------------------------- pool */

uva__stack_pool_t *uva__stack_pool_new(void) {
  uv_once(&guard_once, guard_init);
  uva__stack_pool_t *p = uva__calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->cache = 262144;
  uva__altstack_open(&p->alt);
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
    if (c->vmas) atomic_fetch_sub(&vma_used, c->vmas);
    uva__free(c);
    c = next;
  }
  uva__altstack_close(&p->alt);
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
#ifdef UVA_VALGRIND
    s->valgrind_id = VALGRIND_STACK_REGISTER(s->base, s->top);
#endif
    s->next = p->cold;
    p->cold = s;
  }
  chunk_prepare(c);
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

/* ---------------------------------------------------------- test hooks */

const char *uva_test_stack_guard(void) {
  uv_once(&guard_once, guard_init);
  static const char *const names[] = {"none", "region", "mprotect"};
  return names[guard_mode];
}

void uva_test_stack_vma_budget(size_t vmas) {
  uv_once(&guard_once, guard_init);
  atomic_store(&vma_budget, vmas);
}

int uva_test_stack_guarded(void) {
  uva__task_t *t = uva__task_current();
  return t && t->stack ? t->stack->guarded : -1;
}
