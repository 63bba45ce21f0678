/* Task stacks: overflow reports, guards, the fault handler's manners, and
 * uva_run_opts' stack sizes.
 *
 * A test that overflows a stack does it in a child process (fork) whose
 * stderr comes back through a pipe: the child must die of SIGABRT with a
 * report naming the task, its stack size and the way to raise it. Waits
 * are on the pipe's EOF and waitpid, never on time. */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

const char *uva_test_stack_guard(void);
void uva_test_stack_vma_budget(size_t vmas);
int uva_test_stack_guarded(void);

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#endif

/* The library steps aside under ThreadSanitizer (lib/coro/overflow.c). */
#ifdef TEST_TSAN
#define SKIP_UNDER_TSAN()                                                  \
  do {                                                                     \
    fprintf(stderr, "skipped: no overflow handler under ThreadSanitizer\n"); \
    return;                                                                \
  } while (0)
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* ------------------------------------------------------------- children */

typedef struct {
  int status;
  char err[16384];
} child_t;

/* Run fn in a child with stderr captured; the child exits with fn's
 * return value if it returns. */
static void run_child(child_t *c, int (*fn)(void)) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    _exit(fn());
  }
  close(fds[1]);
  size_t n = 0;
  for (;;) {
    char scratch[512];
    char *to = n < sizeof c->err - 1 ? c->err + n : scratch;
    size_t room = n < sizeof c->err - 1 ? sizeof c->err - 1 - n : sizeof scratch;
    ssize_t k = read(fds[0], to, room);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    if (to != scratch) n += (size_t)k;
  }
  c->err[n] = '\0';
  close(fds[0]);
  while (waitpid(pid, &c->status, 0) < 0 && errno == EINTR) {
  }
}

static bool died_of(const child_t *c, int sig) {
  return WIFSIGNALED(c->status) && WTERMSIG(c->status) == sig;
}

static int exit_code(const child_t *c) {
  return WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1;
}

#define CHILD_SKIP 77 /* the child could not set up what the test needs */

static bool child_skipped(const child_t *c) {
  if (exit_code(c) != CHILD_SKIP) return false;
  fprintf(stderr, "skipped: the guard mode was decided before (CK_FORK=no?)\n");
  return true;
}

static void assert_overflow_report(const child_t *c, const char *task, const char *size) {
  ck_assert_msg(died_of(c, SIGABRT), "child status 0x%x, want SIGABRT; stderr:\n%s",
                (unsigned)c->status, c->err);
  char want[128];
  snprintf(want, sizeof want, "stack overflow in task '%s'", task);
  ck_assert_msg(strstr(c->err, want) != NULL, "no \"%s\" in:\n%s", want, c->err);
  snprintf(want, sizeof want, "its stack is %s", size);
  ck_assert_msg(strstr(c->err, want) != NULL, "no \"%s\" in:\n%s", want, c->err);
  ck_assert_msg(strstr(c->err, "uva_loop_set_stack_size") != NULL, "no advice in:\n%s", c->err);
  ck_assert_msg(strstr(c->err, "uva_run_opts") != NULL, "no advice in:\n%s", c->err);
  ck_assert_msg(strstr(c->err, "main_stack_size") != NULL, "no advice in:\n%s", c->err);
}

/* ------------------------------------------------------------ recursion */

/* The compiler must keep the whole buffer: it escapes. */
#define KEEP(buf) __asm__ volatile("" : : "r"(buf) : "memory")

/* Uses about kib KiB of stack without ever suspending. */
static int __attribute__((noinline)) recurse(int kib) {
  char buf[1024];
  memset(buf, kib & 0x7f, sizeof buf);
  KEEP(buf);
  if (kib <= 1) return buf[0];
  return recurse(kib - 1) + buf[1];
}

static int deep_task(void *arg) { return recurse((int)(intptr_t)arg) >= 0 ? 0 : 1; }

/* main: 64 KiB stacks (48 KiB usable), then a task that needs 1 MiB. */
static int overflow_main(void *arg) {
  (void)arg;
  if (uva_loop_set_stack_size(uva_loop_current(), 64 * 1024) != 0) return 1;
  uva_future_t *f = uva_spawn_named("deep-one", deep_task, (void *)(intptr_t)1024);
  int rc = uva_await(f, NULL);
  uva_release(f);
  return rc == 0 ? 0 : 2;
}

static int child_overflow(void) { return uva_run(overflow_main, NULL); }

static int child_overflow_mode(const char *mode) {
  setenv("UVA_STACK_GUARD", mode, 1);
  const char *want = strcmp(mode, "0") == 0 ? "none" : mode;
  /* The mode is decided once per process, at the first loop: a test
   * process that already made one (CK_FORK=no) cannot switch. */
  if (strcmp(uva_test_stack_guard(), want) != 0) return CHILD_SKIP;
  return uva_run(overflow_main, NULL);
}
static int child_overflow_mprotect(void) { return child_overflow_mode("mprotect"); }

START_TEST(test_overflow_reported) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_overflow);
  assert_overflow_report(&c, "deep-one", "48 KiB");
  ck_assert_msg(strstr(c.err, "fault at 0x") != NULL, "no fault address in:\n%s", c.err);
}
END_TEST

/* The guard older kernels and qemu get: mprotect'ed gaps. */
START_TEST(test_overflow_reported_mprotect) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_overflow_mprotect);
  if (child_skipped(&c)) return;
  assert_overflow_report(&c, "deep-one", "48 KiB");
}
END_TEST

/* No guard (UVA_STACK_GUARD=0): a task that runs into its gap and then
 * suspends is caught by the stack-pointer check. 52 KiB of frames on a
 * 48 KiB stack end a few KiB into the 16 KiB gap. */
static int __attribute__((noinline)) recurse_then_yield(int kib) {
  char buf[1024];
  memset(buf, kib & 0x7f, sizeof buf);
  KEEP(buf);
  if (kib <= 1) return uva_yield();
  return recurse_then_yield(kib - 1) + buf[1];
}
static int gap_task(void *arg) { return recurse_then_yield((int)(intptr_t)arg); }
static int gap_main(void *arg) {
  (void)arg;
  if (uva_loop_set_stack_size(uva_loop_current(), 64 * 1024) != 0) return 1;
  uva_future_t *f = uva_spawn_named("gap-walker", gap_task, (void *)(intptr_t)52);
  int rc = uva_await(f, NULL);
  uva_release(f);
  return rc == 0 ? 0 : 2;
}
static int child_unguarded(void) {
  setenv("UVA_STACK_GUARD", "0", 1);
  if (strcmp(uva_test_stack_guard(), "none") != 0) return CHILD_SKIP;
  return uva_run(gap_main, NULL);
}

START_TEST(test_overflow_unguarded_sp_check) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_unguarded);
  if (child_skipped(&c)) return;
  assert_overflow_report(&c, "gap-walker", "48 KiB");
}
END_TEST

/* Without a name a task is reported by its id; the main task of uva_run
 * is 'main', with the default 256 KiB (240 usable). */
static int main_recurses(void *arg) { return recurse((int)(intptr_t)arg) >= 0 ? 0 : 1; }
static int child_main_overflow(void) { return uva_run(main_recurses, (void *)(intptr_t)512); }

START_TEST(test_overflow_in_main_task) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_main_overflow);
  assert_overflow_report(&c, "main", "240 KiB");
}
END_TEST

/* -------------------------------------------------------- uva_run_opts */

/* The recursion that overflowed main above fits in a 2 MiB main stack. */
START_TEST(test_main_stack_size) {
  long live = uva_test_alloc_live();
  uva_run_opts_t o = {.main_stack_size = 2 << 20};
  ck_assert_int_eq(uva_run_opts(main_recurses, (void *)(intptr_t)512, &o), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

/* stack_size is every other task's; the main task keeps its own. */
static int spawn_deep_main(void *arg) {
  uva_future_t *f = uva_spawn_named("deep", deep_task, arg);
  int rc = uva_await(f, NULL);
  uva_release(f);
  return rc;
}
START_TEST(test_task_stack_size) {
  uva_run_opts_t o = {.stack_size = 1 << 20, .main_stack_size = 64 << 10};
  ck_assert_int_eq(uva_run_opts(spawn_deep_main, (void *)(intptr_t)512, &o), 0);
  /* NULL options are uva_run's defaults: a small recursion works. */
  ck_assert_int_eq(uva_run_opts(spawn_deep_main, (void *)(intptr_t)64, NULL), 0);
}
END_TEST

static int never_called(void *arg) {
  (void)arg;
  return 99;
}
START_TEST(test_run_opts_invalid) {
  long live = uva_test_alloc_live();
  uva_run_opts_t small = {.stack_size = 1024};
  ck_assert_int_eq(uva_run_opts(never_called, NULL, &small), UV_EINVAL);
  uva_run_opts_t huge = {.main_stack_size = (size_t)2 << 30};
  ck_assert_int_eq(uva_run_opts(never_called, NULL, &huge), UV_EINVAL);
  ck_assert_int_eq(uva_run_opts(NULL, NULL, NULL), UV_EINVAL);
  ck_assert_int_eq(uva_test_alloc_live(), live);
  /* No loop left behind on this thread. */
  ck_assert_ptr_null(uva_loop_current());
}
END_TEST

/* --------------------------------------------------- the fault handler */

static char *noaccess; /* a PROT_NONE page: a fault that is no overflow */

static int touch_noaccess(void *arg) {
  (void)arg;
  return *(volatile char *)noaccess;
}

static void user_handler(int sig) {
  static const char m[] = "user handler\n";
  ssize_t k = write(STDERR_FILENO, m, sizeof m - 1);
  (void)k;
  _exit(sig == SIGSEGV ? 42 : 43);
}

static void install_user_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = user_handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
}

static int map_noaccess(void) {
  noaccess = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return noaccess == MAP_FAILED ? -1 : 0;
}

/* Installed before the first loop: ours chains to it. */
static int child_handler_before(void) {
  if (map_noaccess() != 0) return 1;
  install_user_handler();
  return uva_run(touch_noaccess, NULL) == 0 ? 2 : 3;
}

/* Installed from inside a task, after ours: it replaces ours. */
static int install_then_touch(void *arg) {
  install_user_handler();
  return touch_noaccess(arg);
}
static int child_handler_after(void) {
  if (map_noaccess() != 0) return 1;
  return uva_run(install_then_touch, NULL) == 0 ? 2 : 3;
}

START_TEST(test_user_handler_gets_other_faults) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_handler_before);
  ck_assert_msg(exit_code(&c) == 42, "status 0x%x, stderr:\n%s", (unsigned)c.status, c.err);
  ck_assert_ptr_nonnull(strstr(c.err, "user handler"));
  ck_assert_ptr_null(strstr(c.err, "stack overflow"));
  run_child(&c, child_handler_after);
  ck_assert_msg(exit_code(&c) == 42, "status 0x%x, stderr:\n%s", (unsigned)c.status, c.err);
  ck_assert_ptr_null(strstr(c.err, "stack overflow"));
}
END_TEST

/* Nobody's handler: a fault that is no overflow keeps its default action
 * (or, under ASan, ASan's report: its handler was there first). */
static int child_fault_default(void) {
  if (map_noaccess() != 0) return 1;
  return uva_run(touch_noaccess, NULL) == 0 ? 2 : 3;
}

START_TEST(test_other_fault_default_action) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_fault_default);
  ck_assert_ptr_null(strstr(c.err, "stack overflow"));
#ifdef TEST_ASAN
  ck_assert_msg(strstr(c.err, "AddressSanitizer: SEGV") != NULL, "stderr:\n%s", c.err);
#else
  ck_assert_msg(died_of(&c, SIGSEGV), "status 0x%x, stderr:\n%s", (unsigned)c.status, c.err);
#endif
}
END_TEST

/* A handler installed after ours that chains to the one it replaced (as
 * crash reporters do) still lets the overflow be reported. */
static struct sigaction chained_prev;
static void chaining_handler(int sig, siginfo_t *si, void *uc) {
  static const char m[] = "chaining handler\n";
  ssize_t k = write(STDERR_FILENO, m, sizeof m - 1);
  (void)k;
  if (chained_prev.sa_flags & SA_SIGINFO) chained_prev.sa_sigaction(sig, si, uc);
  else if (chained_prev.sa_handler != SIG_DFL && chained_prev.sa_handler != SIG_IGN)
    chained_prev.sa_handler(sig);
  else _exit(44);
}
static int chain_main(void *arg) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = chaining_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &chained_prev);
  return overflow_main(arg);
}
static int child_chain(void) { return uva_run(chain_main, NULL); }

START_TEST(test_chaining_handler_keeps_report) {
  SKIP_UNDER_TSAN();
  child_t c;
  run_child(&c, child_chain);
  ck_assert_ptr_nonnull(strstr(c.err, "chaining handler"));
  assert_overflow_report(&c, "deep-one", "48 KiB");
}
END_TEST

/* ------------------------------------------------- alternate stacks */

static bool altstack_on(void) {
  stack_t ss;
  ck_assert_int_eq(sigaltstack(NULL, &ss), 0);
  return !(ss.ss_flags & SS_DISABLE);
}

START_TEST(test_altstack_per_loop) {
  SKIP_UNDER_TSAN();
#ifdef TEST_ASAN
  /* ASan gives every thread an alternate stack of its own, which we keep. */
  ck_assert(altstack_on());
  return;
#endif
  ck_assert(!altstack_on());
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  ck_assert(altstack_on());
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert(!altstack_on());
}
END_TEST

/* A thread that has its own alternate stack keeps it, through the loop's
 * close too. Under ASan the thread has ASan's already (and ASan unmaps
 * whatever is the alternate stack when the thread ends): that one. */
static void *own_altstack_thread(void *arg) {
  (void)arg;
  static char mem[64 * 1024];
  stack_t own;
  if (sigaltstack(NULL, &own) != 0) return "sigaltstack";
  bool mine = own.ss_flags & SS_DISABLE;
  if (mine) {
    own.ss_sp = mem;
    own.ss_size = sizeof mem;
    own.ss_flags = 0;
    if (sigaltstack(&own, NULL) != 0) return "sigaltstack";
  }
  const char *err = NULL;
  uva_loop_t *loop;
  if (uva_loop_new(&loop) != 0) return "uva_loop_new";
  stack_t cur;
  sigaltstack(NULL, &cur);
  if (cur.ss_sp != own.ss_sp) err = "replaced while the loop lives";
  uva_loop_close(loop);
  sigaltstack(NULL, &cur);
  if (err == NULL && (cur.ss_sp != own.ss_sp || (cur.ss_flags & SS_DISABLE)))
    err = "removed by the close";
  if (mine) {
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
  }
  return (void *)err;
}

START_TEST(test_altstack_kept) {
  SKIP_UNDER_TSAN();
  pthread_t th;
  void *err = "not run";
  ck_assert_int_eq(pthread_create(&th, NULL, own_altstack_thread, NULL), 0);
  ck_assert_int_eq(pthread_join(th, &err), 0);
  ck_assert_msg(err == NULL, "%s", (const char *)err);
}
END_TEST

/* ---------------------------------------------------------------- guards */

static int count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  ck_assert_ptr_nonnull(f);
  int n = 0, ch;
  while ((ch = fgetc(f)) != EOF) n += ch == '\n';
  fclose(f);
  return n;
}

static uva_event_t *park;
static int guarded_count;
static int parked_task(void *arg) {
  (void)arg;
  guarded_count += uva_test_stack_guarded() == 1;
  return uva_await(uva_event_wait(park), NULL);
}

/* Spawn n tasks that park; returns how many had a guarded stack. */
static int park_tasks(int n) {
  park = uva_event_new();
  ck_assert_ptr_nonnull(park);
  guarded_count = 0;
  uva_future_t **fs = calloc((size_t)n, sizeof *fs);
  ck_assert_ptr_nonnull(fs);
  for (int i = 0; i < n; i++) ck_assert_ptr_nonnull(fs[i] = uva_spawn(parked_task, NULL));
  settle();
  int got = guarded_count;
  uva_event_set(park);
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(uva_await(fs[i], NULL), 0);
    uva_release(fs[i]);
  }
  free(fs);
  uva_event_free(park);
  return got;
}

/* Guard regions cost no mapping: 640 guarded stacks add a handful of
 * mappings (chunks), not 1,280. */
TASK_TEST(test_guard_regions_cost_no_mappings) {
  if (strcmp(uva_test_stack_guard(), "region") != 0) {
    fprintf(stderr, "skipped: guard mode is %s here (kernel < 6.13 or qemu)\n",
            uva_test_stack_guard());
    return 0;
  }
  int before = count_maps();
  ck_assert_int_eq(park_tasks(640), 640);
  int after = count_maps();
  ck_assert_msg(after - before < 40, "%d mappings before, %d after", before, after);
  return 0;
}

/* mprotect'ed gaps count against a budget of mappings; stacks beyond it
 * are not guarded, and still work. */
static int budget_main(void *arg) {
  (void)arg;
  /* The main task's chunk holds 128 of the 256: one more chunk fits. */
  uva_test_stack_vma_budget(256);
  int guarded = park_tasks(64 * 4);
  return guarded == 127 ? 0 : 1000 + guarded;
}
static int child_budget(void) {
  setenv("UVA_STACK_GUARD", "mprotect", 1);
  if (strcmp(uva_test_stack_guard(), "mprotect") != 0) return CHILD_SKIP;
  return uva_run(budget_main, NULL);
}

START_TEST(test_mprotect_budget) {
  child_t c;
  run_child(&c, child_budget);
  if (child_skipped(&c)) return;
  ck_assert_msg(exit_code(&c) == 0, "status 0x%x (1000 + guarded stacks), stderr:\n%s",
                (unsigned)c.status, c.err);
}
END_TEST

/* The guard is installed before a stack is handed out, and pooled stacks
 * keep it (MADV_DONTNEED keeps guard regions). */
TASK_TEST(test_reused_stacks_stay_guarded) {
  if (strcmp(uva_test_stack_guard(), "none") == 0) return 0;
  ck_assert_int_eq(uva_loop_set_stack_cache(uva_loop_current(), 0), 0);
  ck_assert_int_eq(park_tasks(70), 70);
  ck_assert_int_eq(park_tasks(70), 70);
  return 0;
}

static Suite *stack_suite(void) {
  Suite *s = suite_create("stack");
  TCase *tc = tcase_create("overflow");
  tcase_add_test(tc, test_overflow_reported);
  tcase_add_test(tc, test_overflow_reported_mprotect);
  tcase_add_test(tc, test_overflow_unguarded_sp_check);
  tcase_add_test(tc, test_overflow_in_main_task);
  suite_add_tcase(s, tc);
  tc = tcase_create("run_opts");
  tcase_add_test(tc, test_main_stack_size);
  tcase_add_test(tc, test_task_stack_size);
  tcase_add_test(tc, test_run_opts_invalid);
  suite_add_tcase(s, tc);
  tc = tcase_create("handler");
  tcase_add_test(tc, test_user_handler_gets_other_faults);
  tcase_add_test(tc, test_other_fault_default_action);
  tcase_add_test(tc, test_chaining_handler_keeps_report);
  tcase_add_test(tc, test_altstack_per_loop);
  tcase_add_test(tc, test_altstack_kept);
  suite_add_tcase(s, tc);
  tc = tcase_create("guards");
  tcase_add_test(tc, test_guard_regions_cost_no_mappings);
  tcase_add_test(tc, test_mprotect_budget);
  tcase_add_test(tc, test_reused_stacks_stay_guarded);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(stack_suite)
