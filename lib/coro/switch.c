/* Context switch: a few lines of assembly per architecture, or ucontext.
 *
 * The assembly backends save only what the ABI says a callee must preserve
 * (x86-64 SysV: rbx rbp r12-r15; AArch64: x19-x30, d8-d15) and swap the stack
 * pointer: about 13 ns a switch here, against ~1,500 ns for glibc's
 * swapcontext, which also saves the signal mask with a system call. The
 * ucontext backend (meson -Dcoro=ucontext) exists for other architectures
 * and as a cross-check: CI runs the whole suite on both.
 *
 * AddressSanitizer must be told about every switch, and not only when
 * this library is built with it: a program built with -fsanitize=address
 * against the plain library needs it too. Without it, ASan takes the
 * thread's stack bounds for a task's stack, its fast unwinder stops at the
 * first frame of every malloc made in a task, and LeakSanitizer treats
 * allocations without a caller as "maybe allocated in a coroutine" and
 * never reports them (lsan_common.cpp, MarkInvalidPCCb): a leak inside a
 * task went unreported. So the annotations are weak references, non-null
 * only when the program carries ASan's runtime; otherwise a switch costs
 * one predictable branch more (callgrind: pingpong +6 instructions a round
 * trip, of ~820). */
#include "../internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(UVA_CORO_UCONTEXT)
#include <ucontext.h>
#endif

/* AddressSanitizer's fiber interface and LSan's root regions
 * (sanitizer/common_interface_defs.h, sanitizer/lsan_interface.h). */
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size) __attribute__((weak));
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old) __attribute__((weak));
void __lsan_register_root_region(const void *p, size_t size) __attribute__((weak));

/* The loop thread's own stack, learnt on the first switch into a task. */
static _Thread_local const void *thread_stack_bottom UVA_TLS_MODEL;
static _Thread_local size_t thread_stack_size UVA_TLS_MODEL;

#if defined(UVA_CORO_UCONTEXT)

const char *uva__ctx_backend(void) { return "ucontext"; }

/* getcontext() returns twice: keep it in a function whose locals are not
 * modified around it (-Wclobbered). */
static int uc_init(ucontext_t *const uc, uva__stack_t *s, void (*entry)(void)) {
  if (getcontext(uc) != 0) return UV_EINVAL;
  uc->uc_stack.ss_sp = s->base;
  uc->uc_stack.ss_size = (size_t)(s->top - s->base);
  uc->uc_link = NULL;
  makecontext(uc, entry, 0);
  return 0;
}

int uva__ctx_make(uva__ctx_t *ctx, uva__stack_t *s, void (*entry)(void)) {
  if (ctx->uc == NULL && (ctx->uc = uva__malloc(sizeof(ucontext_t))) == NULL)
    return UV_ENOMEM;
  return uc_init(ctx->uc, s, entry);
}

void uva__ctx_destroy(uva__ctx_t *ctx) {
  uva__free(ctx->uc);
  ctx->uc = NULL;
}

static void raw_switch(uva__ctx_t *from, uva__ctx_t *to) {
  /* The loop's own context is saved on first use; tasks got theirs from
   * uva__ctx_make. Allocation failure here cannot be reported, so the
   * loop allocates its context when it is created (see loop.c). */
  swapcontext((ucontext_t *)from->uc, (ucontext_t *)to->uc);
}

#elif defined(__x86_64__)

const char *uva__ctx_backend(void) { return "asm-x86_64"; }

void uva__switch_sp(void **save_sp, void *load_sp);
__asm__(
    ".text\n"
    ".globl uva__switch_sp\n"
    ".type uva__switch_sp,@function\n"
    "uva__switch_sp:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size uva__switch_sp,.-uva__switch_sp\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n");

int uva__ctx_make(uva__ctx_t *ctx, uva__stack_t *s, void (*entry)(void)) {
  void **sp = (void **)((uintptr_t)s->top & ~(uintptr_t)15);
  *--sp = NULL;            /* entry's "return address": rsp % 16 == 8 */
  *--sp = (void *)entry;   /* popped by ret */
  for (int i = 0; i < 6; i++) *--sp = NULL;  /* rbp rbx r12-r15 */
  ctx->sp = sp;
  return 0;
}

void uva__ctx_destroy(uva__ctx_t *ctx) { ctx->sp = NULL; }

static void raw_switch(uva__ctx_t *from, uva__ctx_t *to) {
  uva__switch_sp(&from->sp, to->sp);
}

#elif defined(__aarch64__)

const char *uva__ctx_backend(void) { return "asm-aarch64"; }

void uva__switch_sp(void **save_sp, void *load_sp);
__asm__(
    ".text\n"
    ".globl uva__switch_sp\n"
    ".type uva__switch_sp,%function\n"
    "uva__switch_sp:\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n"
    "  stp x21, x22, [sp, #16]\n"
    "  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n"
    "  stp x27, x28, [sp, #64]\n"
    "  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n"
    "  stp d10, d11, [sp, #112]\n"
    "  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mov x2, sp\n"
    "  str x2, [x0]\n"
    "  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n"
    "  ldp x21, x22, [sp, #16]\n"
    "  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n"
    "  ldp x27, x28, [sp, #64]\n"
    "  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n"
    "  ldp d10, d11, [sp, #112]\n"
    "  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n"
    "  ret\n"
    ".size uva__switch_sp,.-uva__switch_sp\n"
    ".section .note.GNU-stack,\"\",%progbits\n"
    ".text\n");

int uva__ctx_make(uva__ctx_t *ctx, uva__stack_t *s, void (*entry)(void)) {
  char *top = (char *)((uintptr_t)s->top & ~(uintptr_t)15);
  void **frame = (void **)(top - 176);
  memset(frame, 0, 176);
  frame[11] = (void *)entry; /* x30 slot: where ret goes */
  ctx->sp = frame;
  return 0;
}

void uva__ctx_destroy(uva__ctx_t *ctx) { ctx->sp = NULL; }

static void raw_switch(uva__ctx_t *from, uva__ctx_t *to) {
  uva__switch_sp(&from->sp, to->sp);
}

#else
#error "no assembly context switch for this architecture: configure with -Dcoro=ucontext"
#endif

/* Out of line, so that the plain switch below stays a test and a tail
 * call (callgrind: 12 instructions a switch inline, 3 like this). */
static void __attribute__((noinline)) switch_annotated(uva__ctx_t *from, uva__ctx_t *to,
                                                       uva__stack_t *to_stack,
                                                       bool from_exiting) {
  void *fake = NULL;
  const void *bottom = to_stack ? (const void *)to_stack->base : thread_stack_bottom;
  size_t size = to_stack ? (size_t)(to_stack->top - to_stack->base) : thread_stack_size;
  __sanitizer_start_switch_fiber(from_exiting ? NULL : &fake, bottom, size);
  raw_switch(from, to);
  const void *old_bottom;
  size_t old_size;
  __sanitizer_finish_switch_fiber(fake, &old_bottom, &old_size);
}

void uva__ctx_switch(uva__ctx_t *from, uva__ctx_t *to, uva__stack_t *from_stack,
                     uva__stack_t *to_stack, bool from_exiting) {
  UVA_UNUSED(from_stack);
  if (__builtin_expect(__sanitizer_start_switch_fiber != NULL, 0))
    switch_annotated(from, to, to_stack, from_exiting);
  else
    raw_switch(from, to);
}

/* Called first thing on a new task stack. */
void uva__ctx_entered(void);
void uva__ctx_entered(void) {
  if (__sanitizer_finish_switch_fiber == NULL) return;
  const void *old_bottom;
  size_t old_size;
  __sanitizer_finish_switch_fiber(NULL, &old_bottom, &old_size);
  if (thread_stack_bottom == NULL) {
    thread_stack_bottom = old_bottom;
    thread_stack_size = old_size;
  }
}

/* ------------------------------------------------- LeakSanitizer at exit */
/* LSan scans each thread's current stack only. With the annotations above,
 * that is the running task's, so a leak check at exit() called from a task
 * would see neither the suspended tasks' stacks nor the thread's own (main()'s
 * locals), and report what only they point to. LSan's check at exit is an
 * atexit handler registered when its runtime starts, so ours, registered
 * later, runs first: it hands LSan those stacks as root regions. Only for
 * this thread's loop (another thread's tasks change under us), and only at
 * exit: a check the program runs itself (__lsan_do_leak_check) while tasks
 * are suspended does not see their stacks. */
static void *saved_sp(uva__task_t *t) {
#if defined(UVA_CORO_UCONTEXT)
  ucontext_t *uc = t->ctx.uc;
#if defined(__x86_64__)
  return uc ? (void *)uc->uc_mcontext.gregs[REG_RSP] : NULL;
#elif defined(__aarch64__)
  return uc ? (void *)uc->uc_mcontext.sp : NULL;
#else
  UVA_UNUSED(uc);
  return NULL;
#endif
#else
  return t->ctx.sp;
#endif
}

static void lsan_at_exit(void) {
  uva_loop_t *loop = uva__loop_tls;
  if (loop == NULL || loop->current == NULL) return; /* LSan sees it all */
  if (thread_stack_bottom)
    __lsan_register_root_region(thread_stack_bottom, thread_stack_size);
  for (uva__link_t *l = loop->tasks.next; l != &loop->tasks; l = l->next) {
    uva__task_t *t = UVA_CONTAINER_OF(l, uva__task_t, all);
    if (t == loop->current || t->stack == NULL || !t->started) continue;
    char *sp = saved_sp(t);
    if (sp == NULL || sp < t->stack->base || sp >= t->stack->top) sp = t->stack->base;
    __lsan_register_root_region(sp, (size_t)(t->stack->top - sp));
  }
}

static uv_once_t lsan_once = UV_ONCE_INIT;
static void lsan_init(void) {
  if (__lsan_register_root_region != NULL && __sanitizer_start_switch_fiber != NULL)
    atexit(lsan_at_exit);
}

int uva__ctx_init(uva__ctx_t *ctx) {
  uv_once(&lsan_once, lsan_init);
  memset(ctx, 0, sizeof *ctx);
#if defined(UVA_CORO_UCONTEXT)
  ctx->uc = uva__calloc(1, sizeof(ucontext_t));
  if (ctx->uc == NULL) return UV_ENOMEM;
#endif
  return 0;
}
