/* Internal structures shared by the layers in lib/. Not installed. */
#ifndef UVA_INTERNAL_H
#define UVA_INTERNAL_H

#include "uvasync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UVA_UNUSED(x) ((void)(x))

/* Built with AddressSanitizer (clang spells it __has_feature, gcc a macro). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UVA_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UVA_ASAN 1
#endif
#define UVA_CONTAINER_OF(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

/* ------------------------------------------------------------ allocator */
/* The one allocator seam: every allocation in lib/ goes through these, so
 * tests can count live blocks and make the Nth allocation fail. */
void *uva__malloc(size_t n);
void *uva__calloc(size_t n, size_t size);
void *uva__realloc(void *p, size_t n);
void uva__free(void *p);
char *uva__strdup(const char *s);

/* Test hooks (exported from the static library only for tests). */
long uva_test_alloc_live(void);          /* blocks currently allocated */
void uva_test_alloc_fail_after(long n);  /* n-th allocation from now fails; -1 off */
long uva_test_alloc_count(void);         /* allocations made so far */

/* -------------------------------------------------------------- lists */
/* Circular doubly linked list with a sentinel head. */
typedef struct uva__link {
  struct uva__link *prev, *next;
} uva__link_t;

static inline void uva__list_init(uva__link_t *h) { h->prev = h->next = h; }
static inline bool uva__list_empty(const uva__link_t *h) { return h->next == h; }
static inline void uva__list_push(uva__link_t *h, uva__link_t *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}
static inline void uva__list_unlink(uva__link_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}
static inline uva__link_t *uva__list_shift(uva__link_t *h) {
  uva__link_t *n = h->next;
  if (n == h) return NULL;
  uva__list_unlink(n);
  return n;
}

/* ----------------------------------------------------------- callbacks */
/* A done callback waiting on a future, then a node on the ready queue.
 * Singly linked in both places: completing a future splices its whole list
 * onto the ready queue in O(1). */
typedef struct uva__cb {
  struct uva__cb *next;
  uva_done_fn fn;
  void *data;
  uva_future_t *fut;  /* holds a reference while registered/queued */
  bool embedded;      /* part of a larger struct: not from the free list */
} uva__cb_t;

typedef struct uva__cbq {
  uva__cb_t *head, *tail;
} uva__cbq_t;

/* ---------------------------------------------------------------- timers */
/* An entry in the loop's deadline heap. Embedded in whatever needs a
 * deadline (sleep futures, timeout scopes, wait_for...). */
typedef struct uva__timer {
  uint64_t deadline;
  uint64_t seq;      /* FIFO among equal deadlines */
  size_t index;      /* position in the heap; SIZE_MAX when not armed */
  void (*fire)(struct uva__timer *t);
} uva__timer_t;

int uva__timer_start(uva_loop_t *loop, uva__timer_t *t, uint64_t deadline);
/* The loop-time deadline at least ms from now (a fresh clock read). */
uint64_t uva__deadline(uint64_t ms);
void uva__timer_stop(uva_loop_t *loop, uva__timer_t *t);
static inline bool uva__timer_armed(const uva__timer_t *t) {
  return t->index != SIZE_MAX;
}

/* --------------------------------------------------------------- futures */
enum { UVA__PENDING = 0, UVA__DONE = 1 };

typedef struct uva__fops {
  const char *kind;
  /* Request cancellation of a pending future. Returns 1 if accepted. */
  int (*cancel)(uva_future_t *f);
  /* Free kind-specific resources; the base is freed by the caller. */
  void (*destroy)(uva_future_t *f);
  size_t size; /* allocation size: small futures come from a free list */
  /* Undo a hand-off the awaiting task has not seen yet (an item, a lock, a
   * permit given to a waiter that was then cancelled before it resumed),
   * so that the cancel wins and nothing is consumed. Returns 1 if undone
   * (the future's value is gone then), 0 if it cannot be (the operation
   * happened; the task sees its result). NULL: nothing to undo. */
  int (*reclaim)(uva_future_t *f);
} uva__fops_t;

struct uva_future {
  const uva__fops_t *ops;
  uva_loop_t *loop;
  uint32_t refs;
  uint8_t state;
  uint8_t is_task;
  int status;
  void *value;
  uva_free_fn free_fn;
  uva__cbq_t cbs;        /* done callbacks not yet queued */
  uva__link_t link;      /* the one list a pending future sits on */
};

/* Small futures (plain, sleep, sync waiters) share one free-list size. */
typedef struct uva__small_future {
  uva_future_t base;
  uva__timer_t timer;
  void *item;            /* queue put: the item to insert */
  void *owner;           /* the sync object whose line it stands in */
} uva__small_future_t;

/* What a future constructor returns on a thread with no loop: one static
 * future, failed with UVA_ENOLOOP, that belongs to no loop. Reference
 * counting leaves it alone (it is shared by every thread), so awaiting,
 * releasing or reading it is safe anywhere. */
extern uva_future_t uva__noloop_future;
static inline uva_future_t *uva__noloop(void) { return &uva__noloop_future; }

uva_future_t *uva__future_alloc(uva_loop_t *loop, const uva__fops_t *ops);
void uva__future_complete(uva_future_t *f, int status, void *value,
                          uva_free_fn free_fn);
/* A future already done with status and no value on loop (NULL: this
 * thread's). Status 0 gives the loop's shared done0. NULL on ENOMEM. */
uva_future_t *uva__future_done(uva_loop_t *loop, int status);
/* A request was handed to libuv (rc from the uv_* call). On rc < 0 no
 * callback will come: complete f with rc. Otherwise take the reference and
 * the loop->jobs count the request holds until its callback. Returns f. */
uva_future_t *uva__future_started(uva_future_t *f, int rc);
/* fops for futures standing in a line by their link: leaving the line is
 * all a cancel or a drop needs. */
int uva__waiter_cancel(uva_future_t *f);
/* f is done with a result that whoever waits on it has not seen yet (a
 * task not resumed, a combinator whose callback has not run): if its kind
 * can give the hand-off back (fops.reclaim), do it, so f reads as
 * cancelled (status UV_ECANCELED, no value) and nothing was consumed.
 * Returns 1 if given back. */
int uva__reclaim(uva_future_t *f);
void uva__waiter_destroy(uva_future_t *f);
/* Default cancel: complete with UV_ECANCELED now. */
int uva__future_cancel_now(uva_future_t *f);
extern const uva__fops_t uva__plain_fops;
uva__cb_t *uva__cb_alloc(uva_loop_t *loop);
void uva__cb_add(uva_future_t *f, uva__cb_t *cb);

/* -------------------------------------------------------------- stacks */
typedef struct uva__stack {
  struct uva__stack *next;  /* pool free list */
  char *base;               /* lowest usable address (above the guard gap) */
  char *top;                /* highest address, 16-aligned */
  size_t size;              /* slot size */
  unsigned valgrind_id;
  bool guarded;             /* the gap faults (see stack.c) */
} uva__stack_t;

/* The alternate signal stack a loop's thread gets for overflow reports
 * (overflow.c): made when the pool is, unless the thread has one. */
typedef struct uva__altstack {
  void *mem;                /* NULL: none of ours */
  size_t len;
  uv_thread_t thread;
} uva__altstack_t;
void uva__altstack_open(uva__altstack_t *a);
void uva__altstack_close(uva__altstack_t *a);

typedef struct uva__stack_pool uva__stack_pool_t;
uva__stack_pool_t *uva__stack_pool_new(void);
void uva__stack_pool_free(uva__stack_pool_t *p);
uva__stack_t *uva__stack_get(uva__stack_pool_t *p, size_t size);
void uva__stack_put(uva__stack_pool_t *p, uva__stack_t *s);
void uva__stack_pool_set_cache(uva__stack_pool_t *p, size_t n);
#define UVA__STACK_GAP (16 * 1024)
/* Running under valgrind (which neither re-runs a faulting instruction
 * after a handler returns nor honours every madvise). */
bool uva__on_valgrind(void);
struct uva__task;
/* Report a task's stack overflow on stderr and abort. Async-signal-safe
 * (write(2) only); fault is the faulting address, or NULL. */
_Noreturn void uva__stack_overflow(struct uva__task *t, const void *fault);

/* -------------------------------------------------------- context switch */
/* A saved context is an opaque pointer (the saved stack pointer for the asm
 * backends, a ucontext_t * for the fallback). */
typedef struct uva__ctx {
  void *sp;
#if defined(UVA_CORO_UCONTEXT)
  void *uc;  /* ucontext_t, allocated lazily */
#endif
} uva__ctx_t;

int uva__ctx_init(uva__ctx_t *ctx); /* zeroed; ucontext allocates */
/* Prepare ctx to run entry() on stack s when first switched to. */
int uva__ctx_make(uva__ctx_t *ctx, uva__stack_t *s, void (*entry)(void));
void uva__ctx_destroy(uva__ctx_t *ctx);
/* Save the current context into from, resume to. `to_stack` is the stack
 * being entered (NULL for the loop's own thread stack) and `from_stack` the
 * one being left; both only for sanitizer annotations. `from_exiting` says
 * the context left will never be resumed. */
void uva__ctx_switch(uva__ctx_t *from, uva__ctx_t *to, uva__stack_t *from_stack,
                     uva__stack_t *to_stack, bool from_exiting);
const char *uva__ctx_backend(void);

/* ------------------------------------------------------------------ task */
typedef struct uva__task {
  uva_future_t base;
  uva_task_fn fn;
  void *arg;
  uva__ctx_t ctx;
  uva__stack_t *stack;
  uva__cb_t wake;           /* the await's wake-up node */
  uva_future_t *awaiting;   /* what the task is suspended on */
  const char *await_file;
  int await_line;
  int cancel_requests;      /* asyncio cancelling() */
  int cancel_pending;       /* a request not yet delivered */
  int cancel_late;          /* the pending cancel is late while
                             * cancel_requests == cancel_late (> 0): the
                             * requests came after the awaited result was
                             * in, and the task saw that result. Delivered
                             * at the next await that suspends, but it does
                             * not undo a task that returns before that. A
                             * count, not a flag: a request made later is
                             * not late, and withdrawing it (uncancel, a
                             * timeout scope's exit) leaves the late ones
                             * late again. Never above cancel_requests. */
  uint8_t in_cancel;        /* uva__task_cancel is running for this task
                             * (await cycles would recurse forever) */
  uint8_t started, finished;
  int result;
  void *ret_value;
  uva_free_fn ret_free;
  char *name;
  uint64_t id;
  struct uva__scope *timeouts; /* innermost active timeout scope */
  uva__link_t all;          /* loop's list of unfinished tasks */
} uva__task_t;

extern const uva__fops_t uva__task_fops;
/* Internal spawn on a given loop. */
uva_future_t *uva__spawn(uva_loop_t *loop, const char *name, uva_task_fn fn,
                         void *arg);
typedef struct uva__scope uva__scope_t;
/* Stop and free the timeout scopes a finished task left entered. */
void uva__scopes_abandon(uva__task_t *t);
/* Cancel a task with a request counted for a timeout scope. */
int uva__task_cancel(uva__task_t *t);

/* ------------------------------------------------------------------ loop */
struct uva_loop {
  uv_loop_t *uv;
  bool own_uv;
  bool closing;
  bool in_drain;
  size_t drain_left;  /* nodes this drain may still run (direct switches too) */
  struct uva__debug *debug; /* debug mode (lib/debug.c); NULL when off */
  uv_idle_t idle;     /* keeps poll from blocking while work is ready */
  bool idle_on;       /* idle is started (cheaper than uv_is_active) */
  uv_check_t check;   /* drains the ready queue once per loop turn */
  uv_timer_t timer;   /* the earliest deadline of the heap */
  uv_async_t async;   /* wake-ups from other threads */
  uv_signal_t sigint; /* uva_run only */
  bool sigint_active;
  int sigint_waiters;  /* tasks awaiting SIGINT: Ctrl-C is theirs then */
  bool timer_active;
  bool in_timer_cb;
  uint64_t timer_due;
  uva__cbq_t ready;   /* run on this turn */
  uva__cbq_t next;    /* run on the next turn (yields) */
  uva__timer_t **heap;
  size_t heap_len, heap_cap;
  uint64_t timer_seq;
  uva__link_t yields; /* sleep(0) futures */
  /* free lists */
  uva__small_future_t *free_small;
  uva__task_t *free_tasks;
  uva__cb_t *free_cbs;
  size_t stack_size;
  uva__stack_pool_t *stacks;
  uva__ctx_t sched_ctx;         /* the loop's own (thread) stack */
  uva__task_t *current;
  uva__link_t tasks;            /* unfinished tasks */
  size_t ntasks;
  uint64_t task_ids;
  /* thread-safe submissions, guarded by the registry's lock (thread.c) */
  uva_loop_t *ts_next;          /* registry chain of live loops */
  struct uva__tscall *ts_head, *ts_tail;
  size_t jobs;                  /* requests and closing handles libuv still has:
                                 * to_thread, fs, DNS, streams... uva_loop_close
                                 * waits for them */
  uva_future_t *main_task;
  /* The future every fast path that is done with status 0 and no value
   * returns (a free lock, a put with room, uva_sleep-free yields...): one
   * shared, never freed instance instead of an allocation each time. */
  uva_future_t done0;
};

/* initial-exec: the library is compiled -fPIC (for the shared build), and
 * the default TLS model would make every access a __tls_get_addr call. */
#if defined(__GNUC__)
#define UVA_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define UVA_TLS_MODEL
#endif
extern _Thread_local uva_loop_t *uva__loop_tls UVA_TLS_MODEL;

static inline uva_loop_t *uva__loop(void) { return uva__loop_tls; }
static inline uva__task_t *uva__task_current(void) {
  uva_loop_t *loop = uva__loop_tls;
  return loop ? loop->current : NULL;
}
/* Put a callback node on the ready queue. */
void uva__ready_push(uva_loop_t *loop, uva__cb_t *cb);
void uva__next_push(uva_loop_t *loop, uva__cb_t *cb);
void uva__ready_splice(uva_loop_t *loop, uva__cbq_t *q);
void uva__loop_wake(uva_loop_t *loop);
/* Run the ready queue (check callback). */
void uva__drain(uva_loop_t *loop);
void uva__turn_start(uva_loop_t *loop);
/* Timer heap maintenance. */
void uva__timers_close(uva_loop_t *loop);
void uva__yields_run(uva_loop_t *loop);
/* Thread-safe parts. */
int uva__ts_init(uva_loop_t *loop);
void uva__ts_close(uva_loop_t *loop);
void uva__tasks_close(uva_loop_t *loop);

/* ---------------------------------------------------------- debug mode */
/* lib/debug.c. Every call site tests loop->debug first, so debug mode off
 * costs one predictable branch per hook; the functions assume it is on.
 * `cold` makes the compiler lay the calls out of the hot paths (without it
 * gather_child_done ran 10 more instructions per child, debug mode off). */
#if defined(__GNUC__)
#define UVA_COLD __attribute__((cold))
#else
#define UVA_COLD
#endif
typedef struct uva__debug uva__debug_t;
void uva__debug_loop_init(uva_loop_t *loop);   /* UVA_DEBUG=1 in the environment */
UVA_COLD void uva__debug_loop_close(uva_loop_t *loop); /* leak reports, then off */
/* The loop thread starts running task t (t != NULL), callback cb (any
 * function pointer: a done callback, a uva_call_threadsafe function), or
 * nothing of the user's (both NULL). */
UVA_COLD void uva__debug_step(uva_loop_t *loop, uva__task_t *t, void (*cb)(void));
UVA_COLD void uva__debug_future_new(uva_future_t *f); /* records where f was made */
UVA_COLD void uva__debug_task_new(uva__task_t *t);
/* Where uva_spawn was called (file outlives the task: __FILE__). Kept in
 * debug mode's record, not in the task: 16 more bytes would take
 * uva__task_t from 248 to 264 bytes, past 256, and the warm spawn pass is
 * bound by cache misses (README, Benchmarks). */
UVA_COLD void uva__debug_task_site(uva__task_t *t, const char *file, int line);
UVA_COLD void uva__debug_future_free(uva_future_t *f); /* futures and tasks */
UVA_COLD void uva__debug_retrieved(const uva_future_t *f); /* a task's result was read */
UVA_COLD void uva__debug_rename(uva__task_t *t, char *name); /* takes name */
/* Resources (HTTP clients and streams, TCP/Unix streams and servers,
 * executors, processes): opened with a kind ("HTTP client"), closed. The
 * creation site is the caller's, or that of future `from` (a connect or a
 * stream open that made the object later, from a libuv callback). Closing
 * also stops tracking a future the program never sees (an internal one). */
UVA_COLD void uva__debug_open(uva_loop_t *loop, const void *obj, const char *kind,
                              const uva_future_t *from);
UVA_COLD void uva__debug_close(uva_loop_t *loop, const void *obj);

/* ---------------------------------------------------------------- net */
/* For subprocesses: a stream around a fresh, initialised uv_pipe_t (ipc 0),
 * not connected yet. Pass uva__stream_handle(s) to uv_spawn's stdio
 * (UV_CREATE_PIPE); after a successful spawn it works with
 * uva_stream_read/write/close like any other stream (close it on failure
 * too). NULL on ENOMEM or when this thread has no loop. */
uva_stream_t *uva__stream_new_pipe(uva_loop_t *loop);
uv_stream_t *uva__stream_handle(uva_stream_t *s);

#endif
