/* Sync objects: Lock, Event, Condition, Semaphore, Barrier. Every test runs
 * under RUN_MAIN, so every path (served, cancelled, freed) must leak nothing. */
#include "helpers.h"

#include <stdint.h>

/* A test whose body runs as the main task and returns 0. */


static int order[32], norder;
static void record(int id) { order[norder++] = id; }

/* ------------------------------------------------------------------ lock */

static uva_lock_t *g_lock;
static int lock_rc[8];

/* Acquire, note the order, hold the lock across a yield, release. */
static int lock_worker(void *arg) {
  int id = (int)(intptr_t)arg;
  int rc = uva_await(uva_lock_acquire(g_lock), NULL);
  lock_rc[id] = rc;
  if (rc != 0) return rc;
  ck_assert(uva_lock_locked(g_lock));
  record(id);
  uva_yield();
  ck_assert_int_eq(uva_lock_release(g_lock), 0);
  return 0;
}

TASK_TEST(test_lock_acquire_release_and_errors) {
  uva_lock_t *l = uva_lock_new();
  ck_assert_ptr_nonnull(l);
  ck_assert(!uva_lock_locked(l));
  ck_assert_int_eq(uva_lock_release(l), UVA_ENOTLOCKED);
  uva_future_t *f = uva_lock_acquire(l);
  ck_assert(uva_future_is_done(f)); /* free lock: no suspension */
  ck_assert_int_eq(uva_await(f, NULL), 0);
  ck_assert(uva_lock_locked(l));
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert(!uva_lock_locked(l));
  ck_assert_int_eq(uva_lock_release(l), UVA_ENOTLOCKED);
  ck_assert_int_eq(uva_await(uva_lock_acquire(NULL), NULL), UV_EINVAL);
  uva_lock_free(l);
  return 0;
}

TASK_TEST(test_lock_waiters_are_served_fifo) {
  g_lock = uva_lock_new();
  norder = 0;
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  uva_future_t *t[4];
  for (int i = 0; i < 4; i++) t[i] = uva_spawn(lock_worker, (void *)(intptr_t)i);
  settle();
  ck_assert_int_eq(norder, 0);
  ck_assert_int_eq(uva_lock_release(g_lock), 0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_await(t[i], NULL), 0);
  ck_assert_int_eq(norder, 4);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(order[i], i);
  ck_assert(!uva_lock_locked(g_lock));
  uva_lock_free(g_lock);
  return 0;
}

TASK_TEST(test_lock_cancelled_waiter_does_not_swallow_release) {
  g_lock = uva_lock_new();
  norder = 0;
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  uva_future_t *a = uva_spawn(lock_worker, (void *)0);
  uva_future_t *b = uva_spawn(lock_worker, (void *)1);
  settle();
  ck_assert_int_eq(uva_cancel(a), 1);
  ck_assert_int_eq(uva_lock_release(g_lock), 0); /* goes to b, not to a */
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(lock_rc[0], UV_ECANCELED);
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 1);
  ck_assert(!uva_lock_locked(g_lock));
  uva_lock_free(g_lock);
  return 0;
}

/* The release hands the lock to a waiting worker, which is cancelled
 * before it resumes (the same loop turn): the cancel wins, as in asyncio,
 * and the lock goes on to the next waiter instead of being held by a task
 * that was told it was cancelled. */
TASK_TEST(test_lock_waiter_cancelled_after_being_served_passes_lock_on) {
  g_lock = uva_lock_new();
  norder = 0;
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  uva_future_t *a = uva_spawn(lock_worker, (void *)0);
  uva_future_t *b = uva_spawn(lock_worker, (void *)1);
  settle();
  ck_assert_int_eq(uva_lock_release(g_lock), 0); /* served to a now... */
  ck_assert_int_eq(uva_cancel(a), 1);            /* ...cancelled before it runs */
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(lock_rc[0], UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 1);
  ck_assert(!uva_lock_locked(g_lock));
  /* alone in line: the lock is simply free again */
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  a = uva_spawn(lock_worker, (void *)0);
  settle();
  ck_assert_int_eq(uva_lock_release(g_lock), 0);
  uva_cancel(a);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert(!uva_lock_locked(g_lock));
  uva_lock_free(g_lock);
  return 0;
}

/* A waiter that resumed holds the lock; a later cancel does not take it. */
static int lock_then_check_cancel(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  ck_assert(uva_lock_locked(g_lock));
  ck_assert_int_eq(uva_await(uva_sleep(10000), NULL), UV_ECANCELED);
  ck_assert(uva_lock_locked(g_lock));
  ck_assert_int_eq(uva_lock_release(g_lock), 0);
  return 7;
}
TASK_TEST(test_lock_holder_cancelled_later_keeps_lock_until_release) {
  g_lock = uva_lock_new();
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  uva_future_t *t = uva_spawn(lock_then_check_cancel, NULL);
  settle();
  ck_assert_int_eq(uva_lock_release(g_lock), 0);
  settle(); /* t resumed with the lock and sleeps */
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), 7);
  ck_assert(!uva_lock_locked(g_lock));
  uva_lock_free(g_lock);
  return 0;
}

/* Freed between the grant and the resume: nothing to give the lock back
 * to, so the task's acquire stands (the cancel came too late). */
static int lock_only(void *arg) { return uva_await(uva_lock_acquire(arg), NULL); }
TASK_TEST(test_lock_freed_after_grant_leaves_the_grant) {
  uva_lock_t *l = uva_lock_new();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  uva_future_t *t = uva_spawn(lock_only, l);
  settle();
  ck_assert_int_eq(uva_lock_release(l), 0); /* to t */
  uva_lock_free(l);
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), 0);
  return 0;
}

TASK_TEST(test_lock_dropped_waiter_leaves_the_line) {
  uva_lock_t *l = uva_lock_new();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  uva_future_t *f = uva_lock_acquire(l);
  ck_assert(!uva_future_is_done(f));
  uva_release(f); /* nobody will look: it must leave the line */
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert(!uva_lock_locked(l));
  uva_lock_free(l);
  return 0;
}

TASK_TEST(test_lock_free_with_waiters_fails_them_closed) {
  g_lock = uva_lock_new();
  ck_assert_int_eq(uva_await(uva_lock_acquire(g_lock), NULL), 0);
  uva_future_t *a = uva_spawn(lock_worker, (void *)0);
  uva_future_t *b = uva_spawn(lock_worker, (void *)1);
  settle();
  uva_lock_free(g_lock);
  ck_assert_int_eq(uva_await(a, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_await(b, NULL), UVA_ECLOSED);
  return 0;
}

static int cb_hits;
static void on_lock_done(uva_future_t *f, void *data) {
  ck_assert_int_eq(uva_future_status(f), 0);
  ck_assert_int_eq(uva_lock_release(data), 0);
  cb_hits++;
}

TASK_TEST(test_lock_acquire_with_done_callback) {
  uva_lock_t *l = uva_lock_new();
  cb_hits = 0;
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  uva_future_t *f = uva_lock_acquire(l);
  ck_assert_int_eq(uva_future_on_done(f, on_lock_done, l), 0);
  uva_release(f); /* the registration keeps it alive */
  ck_assert_int_eq(uva_lock_release(l), 0);
  settle();
  ck_assert_int_eq(cb_hits, 1);
  ck_assert(!uva_lock_locked(l));
  uva_lock_free(l);
  return 0;
}

/* ----------------------------------------------------------------- event */

static uva_event_t *g_event;

static int event_waiter(void *arg) {
  int rc = uva_await(uva_event_wait(g_event), NULL);
  if (rc == 0) record((int)(intptr_t)arg);
  return rc;
}

TASK_TEST(test_event_set_wakes_every_waiter) {
  g_event = uva_event_new();
  norder = 0;
  ck_assert(!uva_event_is_set(g_event));
  uva_future_t *t[3];
  for (int i = 0; i < 3; i++) t[i] = uva_spawn(event_waiter, (void *)(intptr_t)i);
  settle();
  ck_assert_int_eq(norder, 0);
  uva_event_set(g_event);
  ck_assert(uva_event_is_set(g_event));
  for (int i = 0; i < 3; i++) ck_assert_int_eq(uva_await(t[i], NULL), 0);
  ck_assert_int_eq(norder, 3);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(order[i], i);
  /* Set: waits are done at once. Cleared: they wait again. */
  uva_future_t *f = uva_event_wait(g_event);
  ck_assert(uva_future_is_done(f));
  ck_assert_int_eq(uva_await(f, NULL), 0);
  uva_event_clear(g_event);
  ck_assert(!uva_event_is_set(g_event));
  f = uva_event_wait(g_event);
  ck_assert(!uva_future_is_done(f));
  uva_event_set(g_event);
  ck_assert_int_eq(uva_await(f, NULL), 0);
  uva_event_free(g_event);
  return 0;
}

TASK_TEST(test_event_cancelled_waiter_leaves_others_woken) {
  g_event = uva_event_new();
  norder = 0;
  uva_future_t *a = uva_spawn(event_waiter, (void *)0);
  uva_future_t *b = uva_spawn(event_waiter, (void *)1);
  settle();
  uva_cancel(a);
  uva_event_set(g_event);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 1);
  uva_event_free(g_event);
  return 0;
}

TASK_TEST(test_event_free_with_waiters_fails_them_closed) {
  g_event = uva_event_new();
  uva_future_t *a = uva_spawn(event_waiter, (void *)0);
  settle();
  uva_event_free(g_event);
  ck_assert_int_eq(uva_await(a, NULL), UVA_ECLOSED);
  return 0;
}

/* ------------------------------------------------------------- condition */

static uva_cond_t *g_cond;
static int cond_rc[8], cond_locked_after[8];

/* Lock, wait, note whether the lock is held on return, release. */
static int cond_waiter(void *arg) {
  int id = (int)(intptr_t)arg;
  uva_lock_t *l = uva_cond_lock(g_cond);
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  int rc = uva_await(uva_cond_wait(g_cond), NULL);
  cond_rc[id] = rc;
  if (rc == 0 || rc == UV_ECANCELED) { /* else the lock may be gone */
    cond_locked_after[id] = uva_lock_locked(l);
    record(id);
    ck_assert_int_eq(uva_lock_release(l), 0);
  }
  return rc;
}

TASK_TEST(test_cond_wait_and_notify_need_the_lock) {
  uva_cond_t *c = uva_cond_new(NULL);
  ck_assert_ptr_nonnull(uva_cond_lock(c));
  ck_assert_int_eq(uva_await(uva_cond_wait(c), NULL), UVA_ENOTLOCKED);
  ck_assert_int_eq(uva_cond_notify(c, 1), UVA_ENOTLOCKED);
  ck_assert_int_eq(uva_cond_notify_all(c), UVA_ENOTLOCKED);
  ck_assert_int_eq(uva_await(uva_lock_acquire(uva_cond_lock(c)), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(c, 1), 0); /* nobody waiting */
  ck_assert_int_eq(uva_lock_release(uva_cond_lock(c)), 0);
  uva_cond_free(c);
  return 0;
}

TASK_TEST(test_cond_notify_one_wakes_in_order_with_lock_held) {
  uva_lock_t *l = uva_lock_new();
  g_cond = uva_cond_new(l); /* borrowed lock */
  ck_assert_ptr_eq(uva_cond_lock(g_cond), l);
  norder = 0;
  uva_future_t *t[3];
  for (int i = 0; i < 3; i++) t[i] = uva_spawn(cond_waiter, (void *)(intptr_t)i);
  settle();
  ck_assert(!uva_lock_locked(l)); /* every waiter released it */
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 1), 1);
  ck_assert_int_eq(uva_lock_release(l), 0);
  settle();
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 0);
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 5), 2);
  ck_assert_int_eq(uva_lock_release(l), 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(uva_await(t[i], NULL), 0);
    ck_assert_int_eq(cond_locked_after[i], 1);
    ck_assert_int_eq(order[i], i);
  }
  uva_cond_free(g_cond);
  uva_lock_free(l);
  return 0;
}

TASK_TEST(test_cond_notify_all_wakes_every_waiter) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  norder = 0;
  uva_future_t *t[4];
  for (int i = 0; i < 4; i++) t[i] = uva_spawn(cond_waiter, (void *)(intptr_t)i);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify_all(g_cond), 4);
  ck_assert_int_eq(uva_lock_release(l), 0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(uva_await(t[i], NULL), 0);
  ck_assert_int_eq(norder, 4);
  uva_cond_free(g_cond);
  return 0;
}

TASK_TEST(test_cond_wait_completes_only_once_lock_is_reacquired) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  norder = 0;
  uva_future_t *t = uva_spawn(cond_waiter, (void *)0);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 1), 1);
  ck_assert_int_eq(uva_await(uva_sleep(5), NULL), 0); /* still holding it */
  ck_assert(!uva_future_is_done(t));
  ck_assert_int_eq(norder, 0);
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert_int_eq(uva_await(t, NULL), 0);
  ck_assert_int_eq(cond_locked_after[0], 1);
  uva_cond_free(g_cond);
  return 0;
}

TASK_TEST(test_cond_cancelled_wait_returns_with_lock_held) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  norder = 0;
  uva_future_t *t = uva_spawn(cond_waiter, (void *)0);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cancel(t), 1);
  settle();
  ck_assert(!uva_future_is_done(t)); /* waits for the lock we hold */
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_int_eq(cond_rc[0], UV_ECANCELED);
  ck_assert_int_eq(cond_locked_after[0], 1);
  ck_assert(!uva_lock_locked(l));
  uva_cond_free(g_cond);
  return 0;
}

TASK_TEST(test_cond_cancelled_wait_with_free_lock_completes_at_once) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  uva_future_t *t = uva_spawn(cond_waiter, (void *)0);
  settle();
  ck_assert(!uva_lock_locked(l));
  ck_assert_int_eq(uva_cancel(t), 1);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  ck_assert_int_eq(cond_locked_after[0], 1);
  ck_assert(!uva_lock_locked(l));
  uva_cond_free(g_cond);
  return 0;
}

TASK_TEST(test_cond_notified_then_cancelled_waiter_passes_wakeup_on) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  norder = 0;
  uva_future_t *a = uva_spawn(cond_waiter, (void *)0);
  uva_future_t *b = uva_spawn(cond_waiter, (void *)1);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 1), 1); /* a is notified... */
  ck_assert_int_eq(uva_cancel(a), 1);              /* ...then cancelled */
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0); /* got the wake-up a dropped */
  ck_assert_int_eq(cond_locked_after[0], 1);
  ck_assert_int_eq(cond_locked_after[1], 1);
  ck_assert_int_eq(norder, 2);
  ck_assert_int_eq(order[0], 0);
  ck_assert_int_eq(order[1], 1);
  uva_cond_free(g_cond);
  return 0;
}

/* Notified and given the lock, then cancelled before it resumed: it ends
 * cancelled, holding the lock (a cond wait always does), and the wake-up
 * goes to the next waiter (asyncio 3.13 notifies another). */
TASK_TEST(test_cond_woken_then_cancelled_before_resuming_passes_wakeup_on) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  norder = 0;
  uva_future_t *a = uva_spawn(cond_waiter, (void *)0);
  uva_future_t *b = uva_spawn(cond_waiter, (void *)1);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 1), 1); /* a is notified */
  ck_assert_int_eq(uva_lock_release(l), 0);        /* ...and given the lock */
  ck_assert_int_eq(uva_cancel(a), 1);              /* ...then cancelled */
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(cond_locked_after[0], 1);
  ck_assert_int_eq(uva_await(b, NULL), 0); /* got the wake-up a dropped */
  ck_assert_int_eq(cond_locked_after[1], 1);
  ck_assert_int_eq(norder, 2);
  ck_assert(!uva_lock_locked(l));
  uva_cond_free(g_cond);
  return 0;
}

/* asyncio's Condition.wait_for(predicate). */
static int level;
static int level_ge_3(void *arg) {
  (void)arg;
  ck_assert(uva_lock_locked(uva_cond_lock(g_cond))); /* always with the lock */
  return level >= 3 ? level : 0;
}
static int pred_fails(void *arg) {
  (void)arg;
  return UV_EIO;
}
static int level_waiter(void *arg) {
  (void)arg;
  uva_lock_t *l = uva_cond_lock(g_cond);
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  int rc = uva_cond_wait_for(g_cond, level_ge_3, NULL);
  ck_assert(uva_lock_locked(l));
  ck_assert_int_eq(uva_lock_release(l), 0);
  return rc;
}
TASK_TEST(test_cond_wait_for_predicate) {
  g_cond = uva_cond_new(NULL);
  uva_lock_t *l = uva_cond_lock(g_cond);
  level = 0;
  ck_assert_int_eq(uva_cond_wait_for(g_cond, level_ge_3, NULL), UVA_ENOTLOCKED);
  uva_future_t *t = uva_spawn(level_waiter, NULL);
  for (int i = 1; i <= 3; i++) {
    settle();
    ck_assert(!uva_future_is_done(t));
    ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
    level = i;
    uva_cond_notify_all(g_cond);
    ck_assert_int_eq(uva_lock_release(l), 0);
  }
  ck_assert_int_eq(uva_await(t, NULL), 3);
  /* true at once: no wait; a negative result is an error that stops it */
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_wait_for(g_cond, level_ge_3, NULL), 3);
  ck_assert_int_eq(uva_cond_wait_for(g_cond, pred_fails, NULL), UV_EIO);
  ck_assert_int_eq(uva_cond_wait_for(g_cond, NULL, NULL), UV_EINVAL);
  ck_assert_int_eq(uva_lock_release(l), 0);
  /* cancelled while waiting: returns UV_ECANCELED, holding the lock */
  level = 0;
  t = uva_spawn(level_waiter, NULL);
  settle();
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), UV_ECANCELED);
  uva_cond_free(g_cond);
  return 0;
}

TASK_TEST(test_cond_free_with_waiters_fails_them_closed) {
  g_cond = uva_cond_new(NULL);
  uva_future_t *t = uva_spawn(cond_waiter, (void *)0);
  settle();
  uva_cond_free(g_cond);
  ck_assert_int_eq(uva_await(t, NULL), UVA_ECLOSED);
  return 0;
}

TASK_TEST(test_cond_free_fails_waiters_queued_on_borrowed_lock) {
  uva_lock_t *l = uva_lock_new();
  g_cond = uva_cond_new(l);
  uva_future_t *t = uva_spawn(cond_waiter, (void *)0);
  settle();
  ck_assert_int_eq(uva_await(uva_lock_acquire(l), NULL), 0);
  ck_assert_int_eq(uva_cond_notify(g_cond, 1), 1); /* now in the lock's line */
  uva_cond_free(g_cond);
  ck_assert_int_eq(uva_await(t, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_lock_release(l), 0);
  ck_assert(!uva_lock_locked(l)); /* the lock did not go to a dead waiter */
  uva_lock_free(l);
  return 0;
}

/* ------------------------------------------------------------- semaphore */

static uva_sem_t *g_sem;
static int active, max_active;

static int sem_worker(void *arg) {
  int id = (int)(intptr_t)arg;
  int rc = uva_await(uva_sem_acquire(g_sem), NULL);
  if (rc != 0) return rc;
  record(id);
  if (++active > max_active) max_active = active;
  uva_await(uva_sleep(2), NULL);
  active--;
  ck_assert_int_eq(uva_sem_release(g_sem), 0);
  return 0;
}

TASK_TEST(test_sem_limits_concurrency_to_n_of_m) {
  g_sem = uva_sem_new(2, 0);
  active = max_active = norder = 0;
  uva_future_t *t[6];
  for (int i = 0; i < 6; i++) t[i] = uva_spawn(sem_worker, (void *)(intptr_t)i);
  for (int i = 0; i < 6; i++) ck_assert_int_eq(uva_await(t[i], NULL), 0);
  ck_assert_int_eq(max_active, 2);
  for (int i = 0; i < 6; i++) ck_assert_int_eq(order[i], i); /* FIFO */
  ck_assert_uint_eq(uva_sem_value(g_sem), 2);
  uva_sem_free(g_sem);
  return 0;
}

TASK_TEST(test_sem_value_and_locked) {
  uva_sem_t *s = uva_sem_new(1, 0);
  ck_assert(!uva_sem_locked(s));
  ck_assert_uint_eq(uva_sem_value(s), 1);
  uva_future_t *f = uva_sem_acquire(s);
  ck_assert(uva_future_is_done(f));
  ck_assert_int_eq(uva_await(f, NULL), 0);
  ck_assert(uva_sem_locked(s));
  ck_assert_uint_eq(uva_sem_value(s), 0);
  ck_assert_int_eq(uva_sem_release(s), 0);
  ck_assert_int_eq(uva_sem_release(s), 0); /* unbounded: may go above */
  ck_assert_uint_eq(uva_sem_value(s), 2);
  uva_sem_free(s);
  return 0;
}

TASK_TEST(test_bounded_sem_over_release_fails_ebound) {
  uva_sem_t *s = uva_sem_new(1, 1);
  ck_assert_int_eq(uva_sem_release(s), UVA_EBOUND);
  ck_assert_int_eq(uva_await(uva_sem_acquire(s), NULL), 0);
  ck_assert_int_eq(uva_sem_release(s), 0);
  ck_assert_int_eq(uva_sem_release(s), UVA_EBOUND);
  ck_assert_uint_eq(uva_sem_value(s), 1);
  uva_sem_free(s);
  return 0;
}

TASK_TEST(test_sem_cancelled_waiter_does_not_swallow_permit) {
  g_sem = uva_sem_new(0, 0);
  norder = active = max_active = 0;
  uva_future_t *a = uva_spawn(sem_worker, (void *)0);
  uva_future_t *b = uva_spawn(sem_worker, (void *)1);
  settle();
  ck_assert(uva_sem_locked(g_sem));
  uva_cancel(a);
  ck_assert_int_eq(uva_sem_release(g_sem), 0); /* to b */
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 1);
  ck_assert_uint_eq(uva_sem_value(g_sem), 1); /* b gave it back */
  uva_sem_free(g_sem);
  return 0;
}

/* Given a permit, then cancelled before it resumed: the permit goes on to
 * the next waiter (asyncio undoes the same bookkeeping). */
TASK_TEST(test_sem_waiter_cancelled_after_being_served_passes_permit_on) {
  g_sem = uva_sem_new(0, 0);
  norder = 0;
  uva_future_t *a = uva_spawn(sem_worker, (void *)0);
  uva_future_t *b = uva_spawn(sem_worker, (void *)1);
  settle();
  ck_assert_int_eq(uva_sem_release(g_sem), 0); /* hands the permit to a */
  ck_assert_uint_eq(uva_sem_value(g_sem), 0);
  uva_cancel(a);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(norder, 1);
  ck_assert_int_eq(order[0], 1);
  ck_assert_uint_eq(uva_sem_value(g_sem), 1); /* b gave it back */
  /* nobody else in line: the permit is counted again */
  uva_future_t *c = uva_spawn(sem_worker, (void *)2);
  ck_assert_int_eq(uva_await(uva_sem_acquire(g_sem), NULL), 0);
  settle();
  ck_assert_int_eq(uva_sem_release(g_sem), 0);
  uva_cancel(c);
  ck_assert_int_eq(uva_await(c, NULL), UV_ECANCELED);
  ck_assert_uint_eq(uva_sem_value(g_sem), 1);
  uva_sem_free(g_sem);
  return 0;
}

/* FIFO when a holder releases and at once acquires again while a woken
 * waiter has not resumed yet: the waiter keeps its turn, as with asyncio's
 * fair Semaphore (3.11.1+). */
static int sem_reacquirer(void *arg) {
  (void)arg;
  ck_assert_int_eq(uva_await(uva_sem_acquire(g_sem), NULL), 0);
  record(100);
  settle(); /* the others line up */
  ck_assert_int_eq(uva_sem_release(g_sem), 0); /* to worker 0 */
  ck_assert_int_eq(uva_await(uva_sem_acquire(g_sem), NULL), 0); /* behind 0 and 1 */
  record(101);
  ck_assert_int_eq(uva_sem_release(g_sem), 0);
  return 0;
}
TASK_TEST(test_sem_reacquire_does_not_overtake_woken_waiter) {
  g_sem = uva_sem_new(1, 0);
  norder = 0;
  active = max_active = 0;
  uva_future_t *r = uva_spawn(sem_reacquirer, NULL);
  uva_future_t *w0 = uva_spawn(sem_worker, (void *)0);
  uva_future_t *w1 = uva_spawn(sem_worker, (void *)1);
  ck_assert_int_eq(uva_await(r, NULL), 0);
  ck_assert_int_eq(uva_await(w0, NULL), 0);
  ck_assert_int_eq(uva_await(w1, NULL), 0);
  ck_assert_int_eq(norder, 4);
  ck_assert_int_eq(order[0], 100);
  ck_assert_int_eq(order[1], 0);
  ck_assert_int_eq(order[2], 1);
  ck_assert_int_eq(order[3], 101);
  ck_assert_int_eq(max_active, 1);
  uva_sem_free(g_sem);
  return 0;
}

TASK_TEST(test_sem_free_with_waiters_fails_them_closed) {
  g_sem = uva_sem_new(0, 0);
  uva_future_t *a = uva_spawn(sem_worker, (void *)0);
  settle();
  uva_sem_free(g_sem);
  ck_assert_int_eq(uva_await(a, NULL), UVA_ECLOSED);
  return 0;
}

/* --------------------------------------------------------------- barrier */

static uva_barrier_t *g_bar;

static int barrier_worker(void *arg) {
  (void)arg;
  return uva_await(uva_barrier_wait(g_bar), NULL);
}

TASK_TEST(test_barrier_of_three_gives_arrival_indices) {
  ck_assert_ptr_null(uva_barrier_new(0));
  g_bar = uva_barrier_new(3);
  for (int round = 0; round < 2; round++) {
    uva_future_t *a = uva_spawn(barrier_worker, NULL);
    uva_future_t *b = uva_spawn(barrier_worker, NULL);
    settle();
    ck_assert_uint_eq(uva_barrier_waiting(g_bar), 2);
    ck_assert(!uva_future_is_done(a));
    int last = uva_await(uva_barrier_wait(g_bar), NULL);
    ck_assert_int_eq(last, 2);
    ck_assert_int_eq(uva_await(a, NULL), 0);
    ck_assert_int_eq(uva_await(b, NULL), 1);
    ck_assert_uint_eq(uva_barrier_waiting(g_bar), 0);
  }
  ck_assert(!uva_barrier_broken(g_bar));
  uva_barrier_free(g_bar);
  uva_barrier_t *one = uva_barrier_new(1);
  ck_assert_int_eq(uva_await(uva_barrier_wait(one), NULL), 0);
  uva_barrier_free(one);
  return 0;
}

TASK_TEST(test_barrier_abort_breaks_it_until_reset) {
  g_bar = uva_barrier_new(3);
  uva_future_t *a = uva_spawn(barrier_worker, NULL);
  uva_future_t *b = uva_spawn(barrier_worker, NULL);
  settle();
  uva_barrier_abort(g_bar);
  ck_assert(uva_barrier_broken(g_bar));
  ck_assert_int_eq(uva_await(a, NULL), UVA_EBROKEN);
  ck_assert_int_eq(uva_await(b, NULL), UVA_EBROKEN);
  ck_assert_int_eq(uva_await(uva_barrier_wait(g_bar), NULL), UVA_EBROKEN);
  uva_barrier_reset(g_bar);
  ck_assert(!uva_barrier_broken(g_bar));
  a = uva_spawn(barrier_worker, NULL);
  b = uva_spawn(barrier_worker, NULL);
  settle();
  ck_assert_int_eq(uva_await(uva_barrier_wait(g_bar), NULL), 2);
  ck_assert_int_eq(uva_await(a, NULL), 0);
  ck_assert_int_eq(uva_await(b, NULL), 1);
  uva_barrier_free(g_bar);
  return 0;
}

TASK_TEST(test_barrier_reset_fails_waiters_then_is_reusable) {
  g_bar = uva_barrier_new(2);
  uva_future_t *a = uva_spawn(barrier_worker, NULL);
  settle();
  uva_barrier_reset(g_bar);
  ck_assert_int_eq(uva_await(a, NULL), UVA_EBROKEN);
  ck_assert(!uva_barrier_broken(g_bar));
  ck_assert_uint_eq(uva_barrier_waiting(g_bar), 0);
  a = uva_spawn(barrier_worker, NULL);
  settle();
  ck_assert_int_eq(uva_await(uva_barrier_wait(g_bar), NULL), 1);
  ck_assert_int_eq(uva_await(a, NULL), 0);
  uva_barrier_free(g_bar);
  return 0;
}

TASK_TEST(test_barrier_cancelled_waiter_breaks_it_for_the_others) {
  g_bar = uva_barrier_new(3);
  uva_future_t *a = uva_spawn(barrier_worker, NULL);
  uva_future_t *b = uva_spawn(barrier_worker, NULL);
  settle();
  uva_cancel(a);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), UVA_EBROKEN);
  ck_assert(uva_barrier_broken(g_bar));
  uva_barrier_free(g_bar);
  return 0;
}

TASK_TEST(test_barrier_lone_cancelled_waiter_leaves_it_intact) {
  g_bar = uva_barrier_new(2);
  uva_future_t *a = uva_spawn(barrier_worker, NULL);
  settle();
  uva_cancel(a);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert(!uva_barrier_broken(g_bar));
  ck_assert_uint_eq(uva_barrier_waiting(g_bar), 0);
  a = uva_spawn(barrier_worker, NULL);
  settle();
  ck_assert_int_eq(uva_await(uva_barrier_wait(g_bar), NULL), 1);
  ck_assert_int_eq(uva_await(a, NULL), 0);
  uva_barrier_free(g_bar);
  return 0;
}

TASK_TEST(test_barrier_free_with_waiters_fails_them_closed) {
  g_bar = uva_barrier_new(3);
  uva_future_t *a = uva_spawn(barrier_worker, NULL);
  settle();
  uva_barrier_free(g_bar);
  ck_assert_int_eq(uva_await(a, NULL), UVA_ECLOSED);
  return 0;
}

/* ------------------------------------------------------------ no loop */

START_TEST(test_sync_constructors_need_a_loop) {
  ck_assert_ptr_null(uva_lock_new());
  ck_assert_ptr_null(uva_event_new());
  ck_assert_ptr_null(uva_cond_new(NULL));
  ck_assert_ptr_null(uva_sem_new(1, 0));
  ck_assert_ptr_null(uva_barrier_new(2));
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("sync");
  TCase *tc = tcase_create("lock");
  tcase_add_test(tc, test_lock_acquire_release_and_errors);
  tcase_add_test(tc, test_lock_waiters_are_served_fifo);
  tcase_add_test(tc, test_lock_cancelled_waiter_does_not_swallow_release);
  tcase_add_test(tc, test_lock_waiter_cancelled_after_being_served_passes_lock_on);
  tcase_add_test(tc, test_lock_holder_cancelled_later_keeps_lock_until_release);
  tcase_add_test(tc, test_lock_freed_after_grant_leaves_the_grant);
  tcase_add_test(tc, test_lock_dropped_waiter_leaves_the_line);
  tcase_add_test(tc, test_lock_free_with_waiters_fails_them_closed);
  tcase_add_test(tc, test_lock_acquire_with_done_callback);
  suite_add_tcase(s, tc);
  tc = tcase_create("event");
  tcase_add_test(tc, test_event_set_wakes_every_waiter);
  tcase_add_test(tc, test_event_cancelled_waiter_leaves_others_woken);
  tcase_add_test(tc, test_event_free_with_waiters_fails_them_closed);
  suite_add_tcase(s, tc);
  tc = tcase_create("condition");
  tcase_add_test(tc, test_cond_wait_and_notify_need_the_lock);
  tcase_add_test(tc, test_cond_notify_one_wakes_in_order_with_lock_held);
  tcase_add_test(tc, test_cond_notify_all_wakes_every_waiter);
  tcase_add_test(tc, test_cond_wait_completes_only_once_lock_is_reacquired);
  tcase_add_test(tc, test_cond_cancelled_wait_returns_with_lock_held);
  tcase_add_test(tc, test_cond_cancelled_wait_with_free_lock_completes_at_once);
  tcase_add_test(tc, test_cond_notified_then_cancelled_waiter_passes_wakeup_on);
  tcase_add_test(tc, test_cond_woken_then_cancelled_before_resuming_passes_wakeup_on);
  tcase_add_test(tc, test_cond_wait_for_predicate);
  tcase_add_test(tc, test_cond_free_with_waiters_fails_them_closed);
  tcase_add_test(tc, test_cond_free_fails_waiters_queued_on_borrowed_lock);
  suite_add_tcase(s, tc);
  tc = tcase_create("semaphore");
  tcase_add_test(tc, test_sem_limits_concurrency_to_n_of_m);
  tcase_add_test(tc, test_sem_value_and_locked);
  tcase_add_test(tc, test_bounded_sem_over_release_fails_ebound);
  tcase_add_test(tc, test_sem_cancelled_waiter_does_not_swallow_permit);
  tcase_add_test(tc, test_sem_waiter_cancelled_after_being_served_passes_permit_on);
  tcase_add_test(tc, test_sem_reacquire_does_not_overtake_woken_waiter);
  tcase_add_test(tc, test_sem_free_with_waiters_fails_them_closed);
  suite_add_tcase(s, tc);
  tc = tcase_create("barrier");
  tcase_add_test(tc, test_barrier_of_three_gives_arrival_indices);
  tcase_add_test(tc, test_barrier_abort_breaks_it_until_reset);
  tcase_add_test(tc, test_barrier_reset_fails_waiters_then_is_reusable);
  tcase_add_test(tc, test_barrier_cancelled_waiter_breaks_it_for_the_others);
  tcase_add_test(tc, test_barrier_lone_cancelled_waiter_leaves_it_intact);
  tcase_add_test(tc, test_barrier_free_with_waiters_fails_them_closed);
  tcase_add_test(tc, test_sync_constructors_need_a_loop);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(suite)
