/* Stack overflow reports: a SIGSEGV/SIGBUS handler that knows task stacks.
 *
 * A task's stack ends in a gap that faults (stack.c). A fault there is an
 * overflow, and without this file it is a bare "Segmentation fault" that
 * names nothing. The handler runs on an alternate signal stack (the task's
 * own is exhausted), recognises an address in the gap of a task of this
 * thread's loop, or just below it, prints which task, its stack size and
 * how to raise it, and aborts. Every other fault goes to the handler that
 * was there before ours, so a program's own handler and the default core
 * dump behave as if we were not there.
 *
 *  - Installed once per process, when the first loop is made, and never
 *    again: a handler the program installs later replaces ours for good
 *    (it gets every fault; if it chains to the previous handler, as
 *    sanitizers and crash reporters do, overflows are still reported).
 *  - One alternate stack per loop thread, made with the loop and removed
 *    when it closes. A thread that already has one (a sanitizer gives every
 *    thread its own) keeps it.
 *  - Everything in the handler is async-signal-safe: the loop is found
 *    through an initial-exec TLS variable, the message is formatted in a
 *    local buffer and written with write(2).
 *  - Stepping aside: a library built with ThreadSanitizer does not install
 *    the handler (TSan defers and re-dispatches signals itself). Built with
 *    AddressSanitizer it does: ASan's handler is then the previous one and
 *    gets every fault that is not an overflow. */
#include "../internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UVA_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define UVA_TSAN 1
#endif

/* Enough for our handler (it uses < 1 KiB) and for a chained one that
 * formats a report; sized like glibc's SIGSTKSZ with headroom, and never
 * touched unless a signal comes (MAP_NORESERVE). */
#define ALT_SIZE (64 * 1024)
#define ALT_GUARD 4096


static struct sigaction prev_segv, prev_bus;

static uv_once_t install_once = UV_ONCE_INIT;

/* ------------------------------------------------ async-signal-safe text */
typedef struct {
  char buf[768];
  size_t len;
} msg_t;

static void put(msg_t *m, const char *s) {
  while (*s && m->len < sizeof m->buf) m->buf[m->len++] = *s++;
}

static void put_u(msg_t *m, uintptr_t v, unsigned base) {
  char d[24];
  int n = 0;
  do {
    d[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v && n < (int)sizeof d);
  if (base == 16) put(m, "0x");
  while (n > 0 && m->len < sizeof m->buf) m->buf[m->len++] = d[--n];
}

void uva__stack_overflow(uva__task_t *t, const void *fault) {
  msg_t m = {.len = 0};
  put(&m, "uvasync: stack overflow in task '");
  if (t->name) {
    put(&m, t->name);
  } else {
    put(&m, "task-");
    put_u(&m, (uintptr_t)t->id, 10);
  }
  put(&m, "': its stack is ");
  put_u(&m, (uintptr_t)((t->stack->size - UVA__STACK_GAP) / 1024), 10);
  put(&m, " KiB");
  if (fault) {
    put(&m, " (fault at ");
    put_u(&m, (uintptr_t)fault, 16);
    put(&m, ", ");
    put_u(&m, (uintptr_t)t->stack->base - (uintptr_t)fault, 10);
    put(&m, " bytes past its end)");
  }
  put(&m, ".\nuvasync: give tasks a larger stack with uva_loop_set_stack_size(loop, bytes) "
          "before spawning them, or run with uva_run_opts() and a larger .stack_size "
          "(every task) or .main_stack_size (the main task).\n");
  const char *p = m.buf;
  size_t left = m.len;
  while (left > 0) {
    ssize_t k = write(STDERR_FILENO, p, left);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    p += k;
    left -= (size_t)k;
  }
  abort();
}

/* ------------------------------------------------------------- handler */

/* The gap, and as much again below it: a frame larger than what is left
 * of the stack starts its writes further down (for the lowest slot of a
 * chunk that is outside the chunk). */
static bool near_base(const uva__stack_t *s, uintptr_t a) {
  uintptr_t base = (uintptr_t)s->base;
  return a < base && base - a <= 2 * UVA__STACK_GAP;
}

static uva__task_t *overflowed_task(uintptr_t a) {
  uva_loop_t *loop = uva__loop_tls;
  if (loop == NULL) return NULL;
  uva__task_t *t = loop->current;
  if (t && t->stack && near_base(t->stack, a)) return t;
  /* A task switching straight to the next one has already made that one
   * current while it pushes its registers: look at every task. */
  for (uva__link_t *l = loop->tasks.next; l != &loop->tasks; l = l->next) {
    t = UVA_CONTAINER_OF(l, uva__task_t, all);
    if (t->stack && near_base(t->stack, a)) return t;
  }
  return NULL;
}

static void chain(int sig, siginfo_t *si, void *uc) {
  struct sigaction *prev = sig == SIGSEGV ? &prev_segv : &prev_bus;
  void (*handler)(int) = prev->sa_handler;
  if (!(prev->sa_flags & SA_SIGINFO) && (handler == SIG_DFL || handler == SIG_IGN)) {
    /* Sent with kill() and ignored before: stays ignored. */
    if (handler == SIG_IGN && si->si_code <= 0) return;
    /* The default action: put it back and let the instruction fault again
     * on return (the core dump shows the real fault), or re-send a signal
     * that was sent (it is blocked until we return). */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (si->si_code <= 0 || uva__on_valgrind()) raise(sig); /* valgrind does not fault again */
    return;
  }
  /* The previous handler, as the kernel would have run it. */
  struct sigaction p = *prev;
  if (p.sa_flags & SA_RESETHAND) {
    memset(prev, 0, sizeof *prev);
    prev->sa_handler = SIG_DFL;
  }
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &p.sa_mask, &old);
  if (p.sa_flags & SA_SIGINFO) p.sa_sigaction(sig, si, uc);
  else p.sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  int saved = errno;
  /* si_code > 0: raised by the kernel for this access, not sent. */
  if (si != NULL && si->si_code > 0) {
    uva__task_t *t = overflowed_task((uintptr_t)si->si_addr);
    if (t) uva__stack_overflow(t, si->si_addr);
  }
  chain(sig, si, uc);
  errno = saved;
}

static void install(void) {
#ifdef UVA_TSAN
  (void)on_fault; /* TSan defers and re-dispatches signals itself */
#else
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &prev_segv);
  sigaction(SIGBUS, &sa, &prev_bus);
#endif
}

/* ------------------------------------------------------ alternate stack */

void uva__altstack_open(uva__altstack_t *a) {
  memset(a, 0, sizeof *a);
  uv_once(&install_once, install);
#ifndef UVA_TSAN
  stack_t cur;
  if (sigaltstack(NULL, &cur) != 0 || !(cur.ss_flags & SS_DISABLE)) return;
  size_t len = ALT_SIZE + ALT_GUARD;
  char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) return; /* overflows are then bare faults */
  /* A handler that overruns the alternate stack faults too, rather than
   * writing into whatever is mapped below it. */
  mprotect(mem, ALT_GUARD, PROT_NONE);
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_sp = mem + ALT_GUARD;
  ss.ss_size = ALT_SIZE;
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(mem, len);
    return;
  }
  a->mem = mem;
  a->len = len;
  a->thread = uv_thread_self();
#endif
}

void uva__altstack_close(uva__altstack_t *a) {
  if (a->mem == NULL) return;
  uv_thread_t self = uv_thread_self();
  /* sigaltstack is per thread: a loop closed from another thread leaves
   * its thread's alternate stack in place (it may still take a signal). */
  if (!uv_thread_equal(&a->thread, &self)) return;
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == (char *)a->mem + ALT_GUARD) {
    stack_t off;
    memset(&off, 0, sizeof off);
    off.ss_flags = SS_DISABLE;
    if (sigaltstack(&off, NULL) != 0) return; /* running on it: keep it */
  }
  munmap(a->mem, a->len);
  a->mem = NULL;
}
