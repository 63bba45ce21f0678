/* Tasks: spawn/await, results, cancellation semantics, names, stacks. */
#include "helpers.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static int ret_arg(void *arg) { return (int)(intptr_t)arg; }

static int sleep_then_ret(void *arg) {
  int rc = uva_await(uva_sleep(5), NULL);
  return rc < 0 ? rc : (int)(intptr_t)arg;
}

static int spawn_and_await_returns_status(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_spawn(ret_arg, (void *)42), NULL), 42);
  ck_assert_int_eq(uva_await(uva_spawn(ret_arg, (void *)(intptr_t)UV_EIO), NULL), UV_EIO);
  ck_assert_int_eq(uva_await(uva_spawn(sleep_then_ret, (void *)9), NULL), 9);
  return 3;
}
START_TEST(test_spawn_and_await_returns_status) {
  ck_assert_int_eq(RUN_MAIN(spawn_and_await_returns_status, NULL), 3);
}
END_TEST

static int order_log[16], order_n;
static int logger(void *arg) {
  order_log[order_n++] = (int)(intptr_t)arg;
  return 0;
}
static int spawn_does_not_run_task_inline(void *arg) {
  (void)arg;
  order_n = 0;
  uva_future_t *a = uva_spawn(logger, (void *)1);
  uva_future_t *b = uva_spawn(logger, (void *)2);
  ck_assert_int_eq(order_n, 0);
  uva_await(b, NULL);
  uva_await(a, NULL);
  ck_assert_int_eq(order_n, 2);
  ck_assert_int_eq(order_log[0], 1); /* started in spawn order */
  ck_assert_int_eq(order_log[1], 2);
  return 0;
}
START_TEST(test_spawn_does_not_run_task_inline) {
  ck_assert_int_eq(RUN_MAIN(spawn_does_not_run_task_inline, NULL), 0);
}
END_TEST

static int nested(void *arg) {
  intptr_t depth = (intptr_t)arg;
  if (depth == 0) return 1;
  int a = uva_await(uva_spawn(nested, (void *)(depth - 1)), NULL);
  int b = uva_await(uva_spawn(nested, (void *)(depth - 1)), NULL);
  return a + b;
}
START_TEST(test_nested_tasks_compose) { ck_assert_int_eq(RUN_MAIN(nested, (void *)8), 256); }
END_TEST

static int yield_then_index(void *arg) {
  uva_yield();
  return (int)(intptr_t)arg;
}
static int ten_thousand_tasks(void *arg) {
  (void)arg;
  enum { N = 10000 };
  static uva_future_t *fs[N];
  for (int i = 0; i < N; i++) fs[i] = uva_spawn(yield_then_index, (void *)(intptr_t)i);
  long sum = 0;
  for (int i = 0; i < N; i++) sum += uva_await(fs[i], NULL);
  ck_assert_int_eq(sum, (long)N * (N - 1) / 2);
  return 0;
}
START_TEST(test_ten_thousand_tasks) { ck_assert_int_eq(RUN_MAIN(ten_thousand_tasks, NULL), 0); }
END_TEST

static int forgotten_done;
static int sleep_then_count(void *arg) {
  int rc = sleep_then_ret(arg);
  forgotten_done++;
  return rc;
}
static int fire_and_forget_is_safe(void *arg) {
  (void)arg;
  forgotten_done = 0;
  for (int i = 0; i < 100; i++) uva_release(uva_spawn(sleep_then_count, NULL));
  WAIT_UNTIL(forgotten_done == 100); /* they ran to their end, unawaited */
  return 0;
}
START_TEST(test_fire_and_forget_is_safe) { ck_assert_int_eq(RUN_MAIN(fire_and_forget_is_safe, NULL), 0); }
END_TEST

/* ---- cancellation ---- */

static int cleanup_ran, second_await_rc, first_await_rc;
static int cancellable_waiting; /* set as cancellable starts its await */
static int cancellable(void *arg) {
  (void)arg;
  cancellable_waiting = 1;
  first_await_rc = uva_await(uva_sleep(FOREVER_MS), NULL);
  /* One-shot: the next await works, so cleanup can await. */
  second_await_rc = uva_await(uva_sleep(1), NULL);
  cleanup_ran = 1;
  return first_await_rc;
}
static int cancel_is_delivered_once(void *arg) {
  (void)arg;
  cleanup_ran = cancellable_waiting = 0;
  uva_future_t *t = uva_spawn(cancellable, NULL);
  WAIT_UNTIL(cancellable_waiting);
  ck_assert_int_eq(uva_cancel(uva_ref(t)), 1);
  uva_release(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_int_eq(first_await_rc, UV_ECANCELED);
  ck_assert_int_eq(second_await_rc, 0);
  ck_assert_int_eq(cleanup_ran, 1);
  return 0;
}
START_TEST(test_cancel_is_delivered_once_and_cleanup_can_await) {
  ck_assert_int_eq(RUN_MAIN(cancel_is_delivered_once, NULL), 0);
}
END_TEST

static int started_flag;
static int never_runs(void *arg) {
  (void)arg;
  started_flag = 1;
  return 0;
}
static int cancel_before_start(void *arg) {
  (void)arg;
  started_flag = 0;
  uva_future_t *t = uva_spawn(never_runs, NULL);
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_int_eq(started_flag, 0);
  return 0;
}
START_TEST(test_cancel_before_start_never_runs_body) {
  ck_assert_int_eq(RUN_MAIN(cancel_before_start, NULL), 0);
}
END_TEST

static int self_cancel_then_return(void *arg) {
  (void)arg;
  uva_cancel(uva_current_task());
  ck_assert_int_eq(uva_cancelling(), 1);
  return 5; /* returns with the cancel undelivered */
}
static int self_cancel_then_await(void *arg) {
  (void)arg;
  uva_cancel(uva_current_task());
  /* delivered here, at once: the sleep never ends by itself */
  int rc = uva_await(uva_sleep(FOREVER_MS), NULL);
  return rc == UV_ECANCELED ? 11 : rc;
}
static int undelivered_cancel(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_spawn(self_cancel_then_return, NULL), NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(uva_spawn(self_cancel_then_await, NULL), NULL), 11);
  return 0;
}
START_TEST(test_task_returning_with_undelivered_cancel_ends_cancelled) {
  ck_assert_int_eq(RUN_MAIN(undelivered_cancel, NULL), 0);
}
END_TEST

/* The awaited future finished with a result before the cancel could take
 * effect: the result is returned and the cancel comes at the next await. */
static uva_future_t *shared_fut;
static int racer_first_rc, racer_second_rc;
static int racer(void *arg) {
  (void)arg;
  racer_first_rc = uva_await(uva_ref(shared_fut), NULL);
  racer_second_rc = uva_await(uva_sleep(1000), NULL);
  return 0;
}
static int result_before_cancel_is_not_lost(void *arg) {
  (void)arg;
  shared_fut = uva_future_new();
  uva_future_t *t = uva_spawn(racer, NULL);
  uva_yield(); /* racer is now awaiting shared_fut */
  uva_future_resolve(shared_fut, 77, NULL, NULL); /* racer's wake-up queued */
  uva_cancel(t);                                   /* cancel arrives after */
  ck_assert_int_eq(uva_await(t, NULL), 0); /* racer handled it and returned 0 */
  ck_assert_int_eq(racer_first_rc, 77);
  ck_assert_int_eq(racer_second_rc, UV_ECANCELED);
  uva_release(shared_fut);
  return 0;
}
START_TEST(test_result_before_cancel_is_not_lost) {
  ck_assert_int_eq(RUN_MAIN(result_before_cancel_is_not_lost, NULL), 0);
}
END_TEST

/* The same race when the task returns right after that await: its result
 * stands. The cancel came after the work it reports was done; ending
 * "cancelled" would tell the caller it was not (a put made twice, a
 * response dropped). */
static int returns_what_it_awaited(void *arg) {
  (void)arg;
  return uva_await(uva_ref(shared_fut), NULL);
}
static int late_cancel_keeps_result(void *arg) {
  (void)arg;
  shared_fut = uva_future_new();
  uva_future_t *t = uva_spawn(returns_what_it_awaited, NULL);
  uva_yield();
  uva_future_resolve(shared_fut, 77, NULL, NULL);
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), 77);
  uva_release(shared_fut);
  /* A cancel made while the task runs (not in that window) still wins. */
  ck_assert_int_eq(uva_await(uva_spawn(self_cancel_then_return, NULL), NULL), UV_ECANCELED);
  return 0;
}
START_TEST(test_late_cancel_does_not_undo_a_returned_result) {
  ck_assert_int_eq(RUN_MAIN(late_cancel_keeps_result, NULL), 0);
}
END_TEST

/* A late cancel stays late through a request the task makes and takes
 * back before it returns (what a timeout scope or a group does on exit): the
 * task still returns before any await that suspends, so its result stands.
 * The withdrawn request used to clear the lateness for good, and the task
 * ended cancelled. */
static int late_then_withdrawn_request(void *arg) {
  (void)arg;
  int rc = uva_await(uva_ref(shared_fut), NULL); /* the cancel comes late */
  uva_future_t *me = uva_current_task();
  ck_assert_int_eq(uva_cancel(me), 1);
  ck_assert_int_eq(uva_task_uncancel(me), 1); /* the late one is left */
  return rc;
}
static int late_cancel_survives_withdrawn_request(void *arg) {
  (void)arg;
  shared_fut = uva_future_new();
  uva_future_t *t = uva_spawn(late_then_withdrawn_request, NULL);
  uva_yield();
  uva_future_resolve(shared_fut, 77, NULL, NULL);
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), 77);
  uva_release(shared_fut);
  return 0;
}
START_TEST(test_late_cancel_survives_a_request_withdrawn_before_return) {
  ck_assert_int_eq(RUN_MAIN(late_cancel_survives_withdrawn_request, NULL), 0);
}
END_TEST

/* Once the task has gone on to an await that suspends, a late cancel is an
 * ordinary one: that await was where it was delivered. Here that await is
 * a task that turns the cancel into an error of its own (as a fresh cancel
 * would find it), and the outer task then returns a result: it ends
 * cancelled, as it does when the cancel is fresh. It used to keep its
 * result, though it returned after its next suspending await. */
static uva_future_t *eio_gate;
static int cancel_becomes_eio(void *arg) {
  (void)arg;
  int rc = uva_await(uva_ref(eio_gate), NULL);
  return rc == UV_ECANCELED ? UV_EIO : rc;
}
static int late_then_awaits_task(void *arg) {
  uva_future_t *b = arg;
  if (shared_fut) ck_assert_int_eq(uva_await(uva_ref(shared_fut), NULL), 77); /* late */
  ck_assert_int_eq(uva_await(b, NULL), UV_EIO); /* suspends: the cancel goes to b */
  return 7;
}
static int late_cancel_after_suspending_await(void *arg) {
  (void)arg;
  for (int late = 0; late < 2; late++) {
    eio_gate = uva_future_new();
    shared_fut = late ? uva_future_new() : NULL;
    uva_future_t *b = uva_spawn(cancel_becomes_eio, NULL);
    uva_future_t *t = uva_spawn(late_then_awaits_task, b);
    settle(); /* b awaits eio_gate; t awaits shared_fut, or b */
    if (late) uva_future_resolve(shared_fut, 77, NULL, NULL);
    ck_assert_int_eq(uva_cancel(t), 1);
    ck_assert_msg(uva_await(t, NULL) == UV_ECANCELED, "%s cancel: the task kept its result",
                  late ? "late" : "fresh");
    uva_release(shared_fut);
    uva_release(eio_gate);
  }
  shared_fut = NULL;
  return 0;
}
START_TEST(test_late_cancel_is_ordinary_after_a_suspending_await) {
  ck_assert_int_eq(RUN_MAIN(late_cancel_after_suspending_await, NULL), 0);
}
END_TEST

/* asyncio raises at once for a task awaiting itself; uvasync returns
 * UVA_EDEADLK instead of hanging (and a cancel afterwards does not recurse
 * through the task's own await). */
static int awaits_self(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_ref(uva_current_task()), NULL), UVA_EDEADLK);
  ck_assert_int_eq(uva_await(uva_sleep(10000), NULL), UV_ECANCELED);
  return 3;
}
static uva_future_t *cycle_a;
static int awaits_a(void *arg) {
  (void)arg;
  return uva_await(uva_ref(cycle_a), NULL); /* a awaits us: a cycle */
}
static int awaits_b(void *arg) {
  (void)arg;
  uva_future_t *b = uva_spawn(awaits_a, NULL);
  return uva_await(b, NULL) == UVA_EDEADLK ? 9 : -1;
}
static int self_await_main(void *arg) {
  (void)arg;
  uva_future_t *t = uva_spawn(awaits_self, NULL);
  settle();
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), 3);
  cycle_a = uva_spawn(awaits_b, NULL);
  ck_assert_int_eq(uva_await(uva_ref(cycle_a), NULL), 9);
  uva_release(cycle_a);
  return 0;
}
START_TEST(test_task_awaiting_itself_is_edeadlk) {
  ck_assert_int_eq(RUN_MAIN(self_await_main, NULL), 0);
}
END_TEST

/* Two tasks awaiting each other through gathers (a cycle no check can see
 * without walking combinators): cancelling one must not pass the request
 * round forever (it overflowed the stack). The cycle itself stays a
 * deadlock, as in asyncio, so this runs on a loop it never closes. */
static uva_future_t *gcycle[2];
static int gathers_other(void *arg) {
  intptr_t i = (intptr_t)arg;
  while (gcycle[1 - i] == NULL) uva_yield();
  uva_future_t *other = uva_ref(gcycle[1 - i]);
  return uva_await(uva_gather(&other, 1, 0), NULL);
}
START_TEST(test_cancel_through_an_await_cycle_returns) {
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  gcycle[0] = uva_spawn(gathers_other, (void *)0);
  gcycle[1] = uva_spawn(gathers_other, (void *)1);
  uva_future_t *tick = uva_sleep(20); /* both are in their gathers by then */
  ck_assert_int_eq(uva_loop_run_until(loop, tick), 0);
  ck_assert_str_ne(uva_task_where(gcycle[0]), "ready");
  ck_assert_int_eq(uva_cancel(gcycle[0]), 1); /* returns */
  ck_assert_int_eq(uva_task_cancelling(gcycle[0]), 1);
  ck_assert_int_eq(uva_task_cancelling(gcycle[1]), 1);
  uva_release(tick);
  /* the loop is left open on purpose: its tasks wait for each other */
}
END_TEST

/* asyncio 3.11+: cancelling() counts requests, uncancel() withdraws one;
 * at zero an undelivered request is withdrawn too (3.13). */
static int counts_cancels(void *arg) {
  (void)arg;
  uva_future_t *me = uva_current_task();
  ck_assert_int_eq(uva_task_cancelling(me), 0);
  uva_cancel(me);
  uva_cancel(me);
  ck_assert_int_eq(uva_cancelling(), 2);
  ck_assert_int_eq(uva_task_uncancel(me), 1);
  ck_assert_int_eq(uva_await(uva_sleep(10000), NULL), UV_ECANCELED); /* still pending */
  ck_assert_int_eq(uva_task_cancelling(me), 1);     /* delivery does not lower it */
  uva_cancel(me);
  ck_assert_int_eq(uva_task_uncancel(me), 1);
  ck_assert_int_eq(uva_task_uncancel(me), 0);        /* zero: withdrawn */
  ck_assert_int_eq(uva_task_uncancel(me), 0);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), 0); /* nothing pending */
  ck_assert_int_eq(uva_task_uncancel(NULL), UV_EINVAL);
  return 0;
}
START_TEST(test_task_cancelling_and_uncancel) {
  ck_assert_int_eq(RUN_MAIN(counts_cancels, NULL), 0);
}
END_TEST

static int awaits_inner(void *arg) {
  return uva_await(uva_ref((uva_future_t *)arg), NULL);
}
static int cancel_propagates_to_awaited_task(void *arg) {
  (void)arg;
  cancellable_waiting = 0;
  uva_future_t *inner = uva_spawn(cancellable, NULL);
  uva_future_t *outer = uva_spawn(awaits_inner, inner);
  WAIT_UNTIL(cancellable_waiting); /* outer, spawned after, awaits it by then */
  uva_cancel(outer);
  ck_assert_int_eq(uva_await(outer, NULL), UV_ECANCELED);
  ck_assert(uva_future_is_cancelled(inner));
  uva_release(inner);
  return 0;
}
START_TEST(test_cancel_propagates_to_awaited_task) {
  ck_assert_int_eq(RUN_MAIN(cancel_propagates_to_awaited_task, NULL), 0);
}
END_TEST

/* ---- results, names, introspection ---- */

static int frees;
static void count_free(void *p) { frees++; free(p); }
static int returns_string(void *arg) {
  uva_task_return(strdup((const char *)arg), count_free);
  return 0;
}
static int failing_with_value(void *arg) {
  (void)arg;
  uva_task_return(strdup("dropped"), count_free);
  return UV_EIO;
}
static int task_values_are_owned(void *arg) {
  (void)arg;
  frees = 0;
  void *v;
  ck_assert_int_eq(uva_await(uva_spawn(returns_string, "hi"), &v), 0);
  ck_assert_str_eq(v, "hi");
  free(v);
  ck_assert_int_eq(uva_await(uva_spawn(returns_string, "unread"), NULL), 0);
  ck_assert_int_eq(frees, 1);
  ck_assert_int_eq(uva_await(uva_spawn(failing_with_value, NULL), &v), UV_EIO);
  ck_assert_ptr_null(v);
  ck_assert_int_eq(frees, 2);
  return 0;
}
START_TEST(test_task_values_are_owned) { ck_assert_int_eq(RUN_MAIN(task_values_are_owned, NULL), 0); }
END_TEST

static int introspect(void *arg) {
  (void)arg;
  uva_future_t *me = uva_current_task();
  ck_assert(uva_is_task(me));
  ck_assert_str_eq(uva_task_name(me), "main");
  ck_assert_str_eq(uva_task_where(me), "running");
  uva_future_t *t = uva_spawn_named("sleeper", cancellable, NULL);
  ck_assert_str_eq(uva_task_where(t), "not started");
  uva_yield();
  ck_assert(strstr(uva_task_where(t), "test_task.c:") != NULL);
  ck_assert_int_eq(uva_task_set_name(t, "renamed"), 0);
  ck_assert_str_eq(uva_task_name(t), "renamed");
  uva_future_t *all[4];
  ck_assert_int_eq(uva_all_tasks(uva_loop_current(), all, 4), 2);
  char buf[512] = {0};
  FILE *fp = fmemopen(buf, sizeof buf - 1, "w");
  uva_dump_tasks(uva_loop_current(), fp);
  fclose(fp);
  ck_assert(strstr(buf, "renamed") && strstr(buf, "sleep"));
  uva_cancel(t);
  uva_await(t, NULL);
  return 0;
}
START_TEST(test_task_names_current_and_all_tasks) {
  ck_assert_int_eq(RUN_MAIN(introspect, NULL), 0);
}
END_TEST

START_TEST(test_await_outside_task_is_enotask) {
  uva_loop_t *loop;
  long live = uva_test_alloc_live();
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  ck_assert_int_eq(uva_await(uva_sleep(1), NULL), UVA_ENOTASK);
  ck_assert_int_eq(uva_yield(), UVA_ENOTASK);
  ck_assert_int_eq(uva_task_return(NULL, NULL), UVA_ENOTASK);
  ck_assert_ptr_null(uva_current_task());
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

/* ---- stacks ---- */

static int deep(int n) {
  volatile char pad[1024];
  pad[0] = (char)n;
  return n == 0 ? pad[0] : deep(n - 1) + 1;
}
static int uses_most_of_stack(void *arg) {
  (void)arg;
  return deep(150); /* ~150-200 KiB of a 240 KiB stack */
}
static int deep_stacks_work(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_spawn(uses_most_of_stack, NULL), NULL), 150);
  return 0;
}
START_TEST(test_task_can_use_most_of_its_stack) { ck_assert_int_eq(RUN_MAIN(deep_stacks_work, NULL), 0); }
END_TEST

static void touch_top(char *p, size_t n) { p[n - 1] = 1; }
static void (*volatile escape)(char *, size_t) = touch_top;
static int overflow_then_await(void *arg) {
  (void)arg;
  char big[300 * 1024]; /* more than the stack: the frame ends below it */
  escape(big, sizeof big); /* the pointer escapes: the array must exist */
  uva_yield();             /* the check on suspend reports it */
  return big[sizeof big - 1];
}
static int overflow_main(void *arg) {
  (void)arg;
  return uva_await(uva_spawn(overflow_then_await, NULL), NULL);
}
START_TEST(test_stack_overflow_is_detected) {
  uva_run(overflow_main, NULL); /* aborts: SIGABRT expected */
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("task");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_spawn_and_await_returns_status);
  tcase_add_test(tc, test_spawn_does_not_run_task_inline);
  tcase_add_test(tc, test_nested_tasks_compose);
  tcase_add_test(tc, test_ten_thousand_tasks);
  tcase_add_test(tc, test_fire_and_forget_is_safe);
  tcase_add_test(tc, test_cancel_is_delivered_once_and_cleanup_can_await);
  tcase_add_test(tc, test_cancel_before_start_never_runs_body);
  tcase_add_test(tc, test_task_returning_with_undelivered_cancel_ends_cancelled);
  tcase_add_test(tc, test_result_before_cancel_is_not_lost);
  tcase_add_test(tc, test_late_cancel_does_not_undo_a_returned_result);
  tcase_add_test(tc, test_late_cancel_survives_a_request_withdrawn_before_return);
  tcase_add_test(tc, test_late_cancel_is_ordinary_after_a_suspending_await);
  tcase_add_test(tc, test_task_awaiting_itself_is_edeadlk);
  tcase_add_test(tc, test_cancel_through_an_await_cycle_returns);
  tcase_add_test(tc, test_task_cancelling_and_uncancel);
  tcase_add_test(tc, test_cancel_propagates_to_awaited_task);
  tcase_add_test(tc, test_task_values_are_owned);
  tcase_add_test(tc, test_task_names_current_and_all_tasks);
  tcase_add_test(tc, test_await_outside_task_is_enotask);
  tcase_add_test(tc, test_task_can_use_most_of_its_stack);
  suite_add_tcase(s, tc);
  TCase *ov = tcase_create("overflow");
  tcase_add_test_raise_signal(ov, test_stack_overflow_is_detected, SIGABRT);
  suite_add_tcase(s, ov);
  return s;
}
TEST_MAIN(suite)
