/* Context switch: a few lines of assembly per architecture, or ucontext.
 *
 * The assembly backends save only what the ABI says a callee must preserve
 * (x86-64 SysV: rbx rbp r12-r15; AArch64: x19-x30, d8-d15) and swap the stack
 * pointer: about 13 ns a switch here, against ~1,500 ns for glibc's
 * swapcontext, which also saves the signal mask with a system call. The
 * ucontext backend (meson -Dcoro=ucontext) exists for other architectures
 * and as a cross-check: CI runs the whole suite on both.
 *
 * AddressSanitizer must be told about every switch or it reports stack
 * buffer overflows that are not there; the annotations below do that. */
#include "../internal.h"

#include <stdlib.h>
#include <string.h>


#ifdef UVA_ASAN
#include <sanitizer/common_interface_defs.h>
/* The loop thread's own stack, learnt on the first switch into a task. */
static _Thread_local const void *thread_stack_bottom;
static _Thread_local size_t thread_stack_size;
#endif

#if defined(UVA_CORO_UCONTEXT)
#include <ucontext.h>

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

void uva__ctx_switch(uva__ctx_t *from, uva__ctx_t *to, uva__stack_t *from_stack,
                     uva__stack_t *to_stack, bool from_exiting) {
#ifdef UVA_ASAN
  void *fake = NULL;
  const void *bottom = to_stack ? (const void *)to_stack->base : thread_stack_bottom;
  size_t size = to_stack ? (size_t)(to_stack->top - to_stack->base) : thread_stack_size;
  __sanitizer_start_switch_fiber(from_exiting ? NULL : &fake, bottom, size);
  raw_switch(from, to);
  const void *old_bottom;
  size_t old_size;
  __sanitizer_finish_switch_fiber(fake, &old_bottom, &old_size);
  UVA_UNUSED(from_stack);
#else
  UVA_UNUSED(from_stack);
  UVA_UNUSED(to_stack);
  UVA_UNUSED(from_exiting);
  raw_switch(from, to);
#endif
}

/* Called first thing on a new task stack. */
void uva__ctx_entered(void);
void uva__ctx_entered(void) {
#ifdef UVA_ASAN
  const void *old_bottom;
  size_t old_size;
  __sanitizer_finish_switch_fiber(NULL, &old_bottom, &old_size);
  if (thread_stack_bottom == NULL) {
    thread_stack_bottom = old_bottom;
    thread_stack_size = old_size;
  }
#endif
}

int uva__ctx_init(uva__ctx_t *ctx) {
  memset(ctx, 0, sizeof *ctx);
#if defined(UVA_CORO_UCONTEXT)
  ctx->uc = uva__calloc(1, sizeof(ucontext_t));
  if (ctx->uc == NULL) return UV_ENOMEM;
#endif
  return 0;
}
