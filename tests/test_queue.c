/* Queue: FIFO / LIFO / PRIORITY order, back-pressure, task_done/join,
 * shutdown, cancellation of getters and putters, item ownership. Items are
 * counted allocations so a lost or doubly freed item shows up. */
#include "helpers.h"

#include <stdint.h>



/* Counted items: an int holding a value. */
static int items_live, items_freed;
static int *item(int v) {
  int *p = malloc(sizeof *p);
  ck_assert_ptr_nonnull(p);
  *p = v;
  items_live++;
  return p;
}
static void item_free(void *p) {
  items_live--;
  items_freed++;
  free(p);
}
static int take_val(void *p) {
  int v = *(int *)p;
  item_free(p);
  return v;
}
static void reset_items(void) { items_live = items_freed = 0; }

static uva_queue_t *qnew(int kind, size_t maxsize);
static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}
static uva_queue_t *qnew(int kind, size_t maxsize) {
  uva_queue_opts_t o = {kind, maxsize, kind == UVA_QUEUE_PRIORITY ? cmp_int : NULL, item_free};
  uva_queue_t *q = uva_queue_new(&o);
  ck_assert_ptr_nonnull(q);
  return q;
}

static int get_val(uva_queue_t *q) {
  void *v = NULL;
  int rc = uva_await(uva_queue_get(q), &v);
  ck_assert_int_eq(rc, 0);
  return take_val(v);
}

/* ----------------------------------------------------------------- order */

TASK_TEST(test_queue_fifo_order) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  ck_assert(uva_queue_empty(q));
  for (int i = 0; i < 100; i++) ck_assert_int_eq(uva_await(uva_queue_put(q, item(i)), NULL), 0);
  ck_assert_uint_eq(uva_queue_size(q), 100);
  ck_assert(!uva_queue_full(q)); /* unbounded */
  for (int i = 0; i < 50; i++) ck_assert_int_eq(get_val(q), i);
  /* Wrap the ring around and grow it while wrapped. */
  for (int i = 100; i < 200; i++) ck_assert_int_eq(uva_queue_put_nowait(q, item(i)), 0);
  for (int i = 50; i < 200; i++) ck_assert_int_eq(get_val(q), i);
  ck_assert(uva_queue_empty(q));
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_lifo_order) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_LIFO, 0);
  for (int i = 0; i < 40; i++) ck_assert_int_eq(uva_queue_put_nowait(q, item(i)), 0);
  for (int i = 39; i >= 20; i--) ck_assert_int_eq(get_val(q), i);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(99)), 0);
  ck_assert_int_eq(get_val(q), 99);
  for (int i = 19; i >= 0; i--) ck_assert_int_eq(get_val(q), i);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* Priority items: value * 1000 + arrival, compared by value only. */
static int cmp_thousands(const void *a, const void *b) {
  int x = *(const int *)a / 1000, y = *(const int *)b / 1000;
  return (x > y) - (x < y);
}

TASK_TEST(test_queue_priority_order_is_stable_for_ties) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_PRIORITY, 0);
  int vals[] = {5, 3, 9, 1, 7, 3, 0, 8, 2, 6, 4, 1, 9};
  int n = (int)(sizeof vals / sizeof vals[0]);
  for (int i = 0; i < n; i++) ck_assert_int_eq(uva_queue_put_nowait(q, item(vals[i])), 0);
  int prev = -1;
  for (int i = 0; i < n; i++) {
    int v = get_val(q);
    ck_assert_int_ge(v, prev);
    prev = v;
  }
  uva_queue_free(q);

  uva_queue_opts_t o = {UVA_QUEUE_PRIORITY, 0, cmp_thousands, item_free};
  q = uva_queue_new(&o);
  int prio[] = {2, 1, 2, 1, 0, 2, 1, 0};
  for (int i = 0; i < 8; i++) ck_assert_int_eq(uva_queue_put_nowait(q, item(prio[i] * 1000 + i)), 0);
  int want[] = {4, 7, 1, 3, 6, 0, 2, 5}; /* by priority, then arrival */
  for (int i = 0; i < 8; i++) ck_assert_int_eq(get_val(q) % 1000, want[i]);
  /* Many, interleaving puts and gets. */
  srand(7);
  int last = -1, n_out = 0;
  for (int i = 0; i < 900; i++) {
    ck_assert_int_eq(uva_queue_put_nowait(q, item((rand() % 10) * 1000 + i)), 0);
    if (i % 3 == 2) get_val(q);
  }
  while (!uva_queue_empty(q)) {
    int v = get_val(q);
    ck_assert_int_gt(v, last); /* priority order, arrival order among ties */
    last = v;
    n_out++;
  }
  ck_assert_int_eq(n_out, 600);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

START_TEST(test_queue_new_needs_a_loop) {
  ck_assert_ptr_null(uva_queue_new(NULL)); /* no loop on this thread */
}
END_TEST

TASK_TEST(test_queue_new_rejects_priority_without_cmp) {
  uva_queue_opts_t o = {UVA_QUEUE_PRIORITY, 0, NULL, NULL};
  ck_assert_ptr_null(uva_queue_new(&o));
  o.kind = 7;
  ck_assert_ptr_null(uva_queue_new(&o));
  uva_queue_t *q = uva_queue_new(NULL); /* unbounded FIFO, never frees */
  ck_assert_ptr_nonnull(q);
  static int a, b;
  ck_assert_int_eq(uva_queue_put_nowait(q, &a), 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, &b), 0);
  void *v;
  ck_assert_int_eq(uva_queue_get_nowait(q, &v), 0);
  ck_assert_ptr_eq(v, &a);
  uva_queue_free(q); /* &b is not freed: no item_free */
  return 0;
}

/* ---------------------------------------------------- getters and putters */

static uva_queue_t *g_q;
static int got[16], ngot;

static int getter(void *arg) {
  (void)arg;
  void *v = NULL;
  int rc = uva_await(uva_queue_get(g_q), &v);
  if (rc == 0) got[ngot++] = take_val(v);
  return rc;
}

static int putter(void *arg) {
  return uva_await(uva_queue_put(g_q, item((int)(intptr_t)arg)), NULL);
}

TASK_TEST(test_queue_getters_wait_and_are_served_fifo) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 0);
  ngot = 0;
  uva_future_t *t[3];
  for (int i = 0; i < 3; i++) t[i] = uva_spawn(getter, NULL);
  settle();
  ck_assert_int_eq(ngot, 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(uva_queue_put_nowait(g_q, item(10 + i)), 0);
  ck_assert(uva_queue_empty(g_q)); /* handed straight to the getters */
  for (int i = 0; i < 3; i++) ck_assert_int_eq(uva_await(t[i], NULL), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(got[i], 10 + i);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_maxsize_blocks_putter_until_get) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 2);
  ck_assert_int_eq(uva_await(uva_queue_put(g_q, item(0)), NULL), 0);
  ck_assert_int_eq(uva_await(uva_queue_put(g_q, item(1)), NULL), 0);
  ck_assert(uva_queue_full(g_q));
  uva_future_t *p2 = uva_spawn(putter, (void *)2);
  uva_future_t *p3 = uva_spawn(putter, (void *)3);
  settle();
  ck_assert(!uva_future_is_done(p2));
  ck_assert(!uva_future_is_done(p3));
  ck_assert_int_eq(get_val(g_q), 0); /* frees one slot: p2 gets in */
  ck_assert_uint_eq(uva_queue_size(g_q), 2);
  ck_assert_int_eq(uva_await(p2, NULL), 0);
  ck_assert(!uva_future_is_done(p3));
  for (int i = 1; i < 4; i++) ck_assert_int_eq(get_val(g_q), i);
  ck_assert_int_eq(uva_await(p3, NULL), 0);
  ck_assert(uva_queue_empty(g_q));
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_nowait_errors_leave_item_with_caller) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 1);
  void *v = (void *)1;
  ck_assert_int_eq(uva_queue_get_nowait(q, &v), UVA_EEMPTY);
  ck_assert_ptr_null(v);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0);
  int *refused = item(2);
  ck_assert_int_eq(uva_queue_put_nowait(q, refused), UVA_EFULL);
  ck_assert_int_eq(items_freed, 0); /* *_nowait: the caller keeps a refused item */
  item_free(refused);
  ck_assert_int_eq(uva_queue_get_nowait(q, &v), 0);
  ck_assert_int_eq(take_val(v), 1);
  ck_assert_int_eq(uva_queue_task_done(q), 0);
  ck_assert_int_eq(uva_queue_task_done(q), UV_EINVAL); /* once too often */
  ck_assert_int_eq(uva_await(uva_queue_get(NULL), NULL), UV_EINVAL);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_cancelled_getter_does_not_swallow_item) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 0);
  ngot = 0;
  uva_future_t *a = uva_spawn(getter, NULL);
  uva_future_t *b = uva_spawn(getter, NULL);
  settle();
  uva_cancel(a);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(42)), 0);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(ngot, 1);
  ck_assert_int_eq(got[0], 42);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* A reader task whose body is one get, as asyncio's
 * create_task(q.get()): its status is the item's value. */
static int reader(void *arg) {
  void *v = NULL;
  int rc = uva_await(uva_queue_get(arg), &v);
  return rc < 0 ? rc : take_val(v);
}

/* asyncio test_get_cancel_drop_one_pending_reader: put hands item 1 to the
 * waiting reader, which is cancelled before it resumes. The cancelled
 * reader takes nothing; the next reader gets 1, not 2. */
static void get_cancel_drop_one(int kind) {
  reset_items();
  uva_queue_t *q = qnew(kind, 0);
  uva_future_t *r = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(2)), 0);
  ck_assert_int_eq(uva_cancel(r), 1);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  ck_assert_uint_eq(uva_queue_size(q), 2); /* 1 is back */
  ck_assert_int_eq(uva_await(uva_spawn(reader, q), NULL), 1);
  ck_assert_int_eq(get_val(q), 2);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
}
TASK_TEST(test_queue_get_cancel_drop_one_pending_reader) {
  get_cancel_drop_one(UVA_QUEUE_FIFO);
  get_cancel_drop_one(UVA_QUEUE_PRIORITY);
  return 0;
}

/* LIFO: the given-back item goes under the items put after it, as if it
 * had never been handed out (asyncio's LifoQueue still holds 1 under 2 when
 * the woken reader is cancelled, and the next get pops 2). */
TASK_TEST(test_queue_lifo_getter_gives_item_back_under_later_puts) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_LIFO, 0);
  uva_future_t *r = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0); /* to r */
  ck_assert_int_eq(uva_queue_put_nowait(q, item(2)), 0);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  ck_assert_int_eq(get_val(q), 2);
  ck_assert_int_eq(get_val(q), 1);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* Two readers served 1 and 2, a third item stored, both readers cancelled
 * before they resume: the queue holds 1, 2, 3 in the order they were put,
 * as in asyncio, where neither reader took anything. Each give-back went
 * to the front, so the second (2) landed ahead of the first (1). */
static void two_give_backs(int kind, const int want[3]) {
  reset_items();
  uva_queue_opts_t o = {kind, 0, cmp_thousands, item_free}; /* all ties */
  uva_queue_t *q = uva_queue_new(&o);
  uva_future_t *r1 = uva_spawn(reader, q), *r2 = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0); /* to r1 */
  ck_assert_int_eq(uva_queue_put_nowait(q, item(2)), 0); /* to r2 */
  ck_assert_int_eq(uva_queue_put_nowait(q, item(3)), 0);
  uva_cancel(r1);
  uva_cancel(r2);
  ck_assert_int_eq(uva_await(r1, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(r2, NULL), UV_ECANCELED);
  ck_assert_uint_eq(uva_queue_size(q), 3);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(get_val(q), want[i]);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
}
TASK_TEST(test_queue_give_backs_keep_the_order_items_were_put_in) {
  two_give_backs(UVA_QUEUE_FIFO, (const int[]){1, 2, 3});
  two_give_backs(UVA_QUEUE_PRIORITY, (const int[]){1, 2, 3});
  two_give_backs(UVA_QUEUE_LIFO, (const int[]){3, 2, 1});
  return 0;
}

/* Give-backs into a full queue: it holds maxsize + 2 for a while, every
 * item in the order it was put, and the waiting writer gets in only once
 * the queue is below maxsize again. */
TASK_TEST(test_queue_give_backs_over_maxsize_keep_order_and_hold_writers) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 2);
  uva_future_t *r1 = uva_spawn(reader, g_q), *r2 = uva_spawn(reader, g_q);
  settle();
  for (int i = 1; i <= 4; i++) ck_assert_int_eq(uva_queue_put_nowait(g_q, item(i)), 0);
  uva_cancel(r2); /* the later one first: it still resumes second */
  uva_cancel(r1);
  ck_assert_int_eq(uva_await(r1, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(r2, NULL), UV_ECANCELED);
  ck_assert_uint_eq(uva_queue_size(g_q), 4);
  uva_future_t *w = uva_spawn(putter, (void *)5); /* full: waits */
  settle();
  int *refused = item(9);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, refused), UVA_EFULL);
  item_free(refused);
  ck_assert_int_eq(get_val(g_q), 1);
  ck_assert_int_eq(get_val(g_q), 2);
  ck_assert(!uva_future_is_done(w)); /* 2 left: still full */
  ck_assert_int_eq(get_val(g_q), 3);
  ck_assert_int_eq(uva_await(w, NULL), 0);
  ck_assert_int_eq(get_val(g_q), 4);
  ck_assert_int_eq(get_val(g_q), 5);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* asyncio test_get_cancel_drop_many_pending_readers: three readers, two
 * items, the first reader cancelled after being served: the two others
 * end with both items between them. */
TASK_TEST(test_queue_get_cancel_drop_many_pending_readers) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  uva_future_t *r1 = uva_spawn(reader, q);
  uva_future_t *r2 = uva_spawn(reader, q);
  uva_future_t *r3 = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0); /* to r1 */
  ck_assert_int_eq(uva_queue_put_nowait(q, item(2)), 0); /* to r2 */
  uva_cancel(r1);
  ck_assert_int_eq(uva_await(r1, NULL), UV_ECANCELED);
  int a = uva_await(r2, NULL), b = uva_await(r3, NULL);
  ck_assert((a == 1 && b == 2) || (a == 2 && b == 1));
  ck_assert(uva_queue_empty(q));
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* join counts the given-back item as still unfinished. */
TASK_TEST(test_queue_given_back_item_is_still_unfinished) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  uva_future_t *r = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  uva_future_t *j = uva_queue_join(q);
  settle();
  ck_assert(!uva_future_is_done(j));
  ck_assert_int_eq(get_val(q), 1);
  ck_assert_int_eq(uva_queue_task_done(q), 0);
  ck_assert_int_eq(uva_await(j, NULL), 0);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* An immediate shutdown between the hand-off and the cancel: the item is
 * dropped like the ones in the queue (and counted done), not given back. */
TASK_TEST(test_queue_given_back_item_after_immediate_shutdown_is_dropped) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  uva_future_t *r = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(1)), 0);
  uva_queue_shutdown(q, 1);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  ck_assert_int_eq(items_freed, 1);
  ck_assert_int_eq(uva_await(uva_queue_join(q), NULL), 0);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* The queue freed between the hand-off and the task resuming: nothing to
 * give the item back to, so the get stands (and the item is the task's). */
TASK_TEST(test_queue_freed_after_hand_off_keeps_item_with_getter) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  uva_future_t *r = uva_spawn(reader, q);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(q, item(7)), 0);
  uva_queue_free(q);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), 7); /* the cancel came too late */
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* A getter that went on after being served keeps its item: the cancel is
 * delivered at its next await. */
static int get_then_check_cancel(void *arg) {
  (void)arg;
  void *v = NULL;
  ck_assert_int_eq(uva_await(uva_queue_get(g_q), &v), 0);
  got[ngot++] = take_val(v);
  ck_assert_int_eq(uva_await(uva_sleep(10000), NULL), UV_ECANCELED); /* then the cancel */
  return 5;
}
TASK_TEST(test_queue_getter_cancelled_after_it_resumed_keeps_item) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 0);
  ngot = 0;
  uva_future_t *t = uva_spawn(get_then_check_cancel, NULL);
  settle();
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(8)), 0);
  settle(); /* t resumes with the item, then sleeps */
  uva_cancel(t);
  ck_assert_int_eq(uva_await(t, NULL), 5);
  ck_assert_int_eq(ngot, 1);
  ck_assert_int_eq(got[0], 8);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* asyncio test_put_cancel_drop: a get makes room and lets the waiting
 * writer's item in; the writer is cancelled before it resumes. The put
 * did not happen: a retry puts 2 once, and the queue ends empty. */
static int writer(void *arg) {
  return uva_await(uva_queue_put(g_q, item((int)(intptr_t)arg)), NULL);
}
static void put_cancel_drop(int kind) {
  reset_items();
  g_q = qnew(kind, 1);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  uva_future_t *w = uva_spawn(writer, (void *)2);
  settle();
  void *v;
  ck_assert_int_eq(uva_queue_get_nowait(g_q, &v), 0);
  ck_assert_int_eq(take_val(v), 1);
  ck_assert_int_eq(uva_cancel(w), 1);
  ck_assert_int_eq(uva_await(w, NULL), UV_ECANCELED);
  ck_assert_int_eq(items_freed, 2); /* 1 taken, the cancelled put's 2 freed */
  ck_assert(uva_queue_empty(g_q));
  ck_assert_int_eq(uva_await(uva_spawn(writer, (void *)2), NULL), 0); /* the retry */
  ck_assert_int_eq(uva_queue_get_nowait(g_q, &v), 0);
  ck_assert_int_eq(take_val(v), 2);
  ck_assert(uva_queue_empty(g_q));
  ck_assert_int_eq(uva_queue_task_done(g_q), 0);
  ck_assert_int_eq(uva_queue_task_done(g_q), 0);
  ck_assert_int_eq(uva_queue_task_done(g_q), UV_EINVAL); /* the dropped put is not counted */
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
}
TASK_TEST(test_queue_put_cancel_drop) {
  put_cancel_drop(UVA_QUEUE_FIFO);
  put_cancel_drop(UVA_QUEUE_LIFO);
  put_cancel_drop(UVA_QUEUE_PRIORITY);
  return 0;
}

/* The writer's item was let in AND taken by a getter before the cancel:
 * the put happened, and the writer reports success (nothing twice). */
TASK_TEST(test_queue_put_taken_before_cancel_stands) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 1);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  uva_future_t *w = uva_spawn(writer, (void *)2);
  settle();
  ck_assert_int_eq(get_val(g_q), 1); /* lets 2 in */
  ck_assert_int_eq(get_val(g_q), 2); /* and takes it */
  uva_cancel(w);
  ck_assert_int_eq(uva_await(w, NULL), 0);
  ck_assert(uva_queue_empty(g_q));
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* A cancelled writer gives its slot to the next waiting writer. */
TASK_TEST(test_queue_cancelled_writer_lets_next_writer_in) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 1);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  uva_future_t *w2 = uva_spawn(writer, (void *)2);
  uva_future_t *w3 = uva_spawn(writer, (void *)3);
  settle();
  ck_assert_int_eq(get_val(g_q), 1); /* lets 2 in */
  uva_cancel(w2);
  ck_assert_int_eq(uva_await(w2, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(w3, NULL), 0);
  ck_assert_int_eq(get_val(g_q), 3);
  ck_assert(uva_queue_empty(g_q));
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_cancelled_putter_frees_item_and_keeps_order) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 1);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(0)), 0);
  uva_future_t *a = uva_spawn(putter, (void *)1);
  uva_future_t *b = uva_spawn(putter, (void *)2);
  settle();
  uva_cancel(a);
  ck_assert_int_eq(uva_await(a, NULL), UV_ECANCELED);
  ck_assert_int_eq(items_freed, 1); /* a's item, by rule 3 */
  ck_assert_int_eq(get_val(g_q), 0);
  ck_assert_int_eq(uva_await(b, NULL), 0);
  ck_assert_int_eq(get_val(g_q), 2);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_dropped_put_future_frees_its_item) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 1);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(0)), 0);
  uva_future_t *f = uva_queue_put(q, item(1));
  ck_assert(!uva_future_is_done(f));
  uva_release(f);
  ck_assert_int_eq(items_freed, 1);
  ck_assert_int_eq(get_val(q), 0);
  ck_assert(uva_queue_empty(q)); /* the dropped put left the line */
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_get_without_out_frees_item) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(3)), 0);
  ck_assert_int_eq(uva_await(uva_queue_get(q), NULL), 0);
  ck_assert_int_eq(items_freed, 1);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* ------------------------------------------------------ task_done / join */

static int consumed;
static int consumer(void *arg) {
  (void)arg;
  for (;;) {
    void *v;
    int rc = uva_await(uva_queue_get(g_q), &v);
    if (rc != 0) return rc == UVA_ESHUTDOWN ? 0 : rc;
    take_val(v);
    uva_await(uva_sleep(1), NULL);
    consumed++;
    ck_assert_int_eq(uva_queue_task_done(g_q), 0);
  }
}

TASK_TEST(test_queue_join_waits_for_every_task_done) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 3);
  consumed = 0;
  ck_assert_int_eq(uva_await(uva_queue_join(g_q), NULL), 0); /* nothing put */
  uva_future_t *c[2] = {uva_spawn(consumer, NULL), uva_spawn(consumer, NULL)};
  for (int i = 0; i < 10; i++) ck_assert_int_eq(uva_await(uva_queue_put(g_q, item(i)), NULL), 0);
  uva_future_t *j = uva_queue_join(g_q);
  ck_assert_int_eq(uva_await(j, NULL), 0);
  ck_assert_int_eq(consumed, 10);
  uva_queue_shutdown(g_q, 0); /* the consumers' gets fail: they end */
  for (int i = 0; i < 2; i++) ck_assert_int_eq(uva_await(c[i], NULL), 0);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* -------------------------------------------------------------- shutdown */

TASK_TEST(test_queue_shutdown_fails_putters_and_getters_once_empty) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 1);
  ngot = 0;
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  uva_future_t *p = uva_spawn(putter, (void *)2);
  settle();
  uva_queue_shutdown(g_q, 0);
  ck_assert_int_eq(uva_await(p, NULL), UVA_ESHUTDOWN);
  ck_assert_int_eq(items_freed, 1);
  ck_assert_int_eq(uva_await(uva_queue_put(g_q, item(3)), NULL), UVA_ESHUTDOWN);
  int *kept = item(4);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, kept), UVA_ESHUTDOWN);
  ck_assert_int_eq(items_freed, 2); /* put freed item 3; item 4 is still ours */
  item_free(kept);
  /* What is in the queue can still be taken; then gets fail. */
  ck_assert_int_eq(get_val(g_q), 1);
  ck_assert_int_eq(uva_await(uva_queue_get(g_q), NULL), UVA_ESHUTDOWN);
  void *v;
  ck_assert_int_eq(uva_queue_get_nowait(g_q, &v), UVA_ESHUTDOWN);
  uva_queue_free(g_q);

  g_q = qnew(UVA_QUEUE_FIFO, 0);
  uva_future_t *g = uva_spawn(getter, NULL);
  settle();
  uva_queue_shutdown(g_q, 0);
  ck_assert_int_eq(uva_await(g, NULL), UVA_ESHUTDOWN);
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_shutdown_immediate_drops_items_and_wakes_joiners) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 3);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(uva_queue_put_nowait(g_q, item(i)), 0);
  uva_future_t *p = uva_spawn(putter, (void *)9);
  uva_future_t *j = uva_queue_join(g_q);
  settle();
  ck_assert(!uva_future_is_done(j));
  uva_queue_shutdown(g_q, 1);
  ck_assert_int_eq(items_freed, 4); /* three queued, one from the putter */
  ck_assert(uva_queue_empty(g_q));
  ck_assert_int_eq(uva_await(j, NULL), 0); /* each drop counted as done */
  ck_assert_int_eq(uva_await(p, NULL), UVA_ESHUTDOWN);
  ck_assert_int_eq(uva_await(uva_queue_get(g_q), NULL), UVA_ESHUTDOWN);
  ck_assert_int_eq(uva_queue_task_done(g_q), UV_EINVAL);
  uva_queue_free(g_q);

  /* An item handed out but not yet done keeps joiners waiting. */
  g_q = qnew(UVA_QUEUE_FIFO, 0);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(2)), 0);
  ck_assert_int_eq(get_val(g_q), 1);
  uva_future_t *g = uva_spawn(getter, NULL);
  j = uva_queue_join(g_q);
  uva_queue_shutdown(g_q, 1);
  ck_assert(!uva_future_is_done(j));
  ck_assert_int_eq(uva_queue_task_done(g_q), 0);
  ck_assert_int_eq(uva_await(j, NULL), 0);
  ck_assert_int_eq(uva_await(g, NULL), UVA_ESHUTDOWN); /* fails at once */
  uva_queue_free(g_q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

TASK_TEST(test_queue_free_frees_items_and_fails_waiters_closed) {
  reset_items();
  g_q = qnew(UVA_QUEUE_FIFO, 2);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(1)), 0);
  ck_assert_int_eq(uva_queue_put_nowait(g_q, item(2)), 0);
  uva_future_t *p = uva_spawn(putter, (void *)3);
  uva_future_t *j = uva_queue_join(g_q);
  settle();
  uva_queue_free(g_q);
  ck_assert_int_eq(items_freed, 3);
  ck_assert_int_eq(uva_await(p, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_await(j, NULL), UVA_ECLOSED);

  g_q = qnew(UVA_QUEUE_LIFO, 0);
  uva_future_t *g = uva_spawn(getter, NULL);
  settle();
  uva_queue_free(g_q);
  ck_assert_int_eq(uva_await(g, NULL), UVA_ECLOSED);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* ---------------------------------------------------- callbacks, no tasks */

static int cb_value;
static void on_get(uva_future_t *f, void *data) {
  ck_assert_int_eq(uva_future_status(f), 0);
  cb_value = take_val(uva_future_take(f));
  *(int *)data += 1;
}

TASK_TEST(test_queue_get_with_done_callback) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  int hits = 0;
  uva_future_t *f = uva_queue_get(q);
  ck_assert_int_eq(uva_future_on_done(f, on_get, &hits), 0);
  uva_release(f);
  settle();
  ck_assert_int_eq(hits, 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(77)), 0);
  settle();
  ck_assert_int_eq(hits, 1);
  ck_assert_int_eq(cb_value, 77);
  /* A get on a non-empty queue is done at once; its callback still runs
   * from the loop, never inline. */
  ck_assert_int_eq(uva_queue_put_nowait(q, item(78)), 0);
  f = uva_queue_get(q);
  ck_assert(uva_future_is_done(f));
  ck_assert_int_eq(uva_future_on_done(f, on_get, &hits), 0);
  uva_release(f);
  ck_assert_int_eq(hits, 1);
  settle();
  ck_assert_int_eq(hits, 2);
  ck_assert_int_eq(cb_value, 78);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

/* Plain loop API, no task at all. */
START_TEST(test_queue_callback_style_without_tasks) {
  long live = uva_test_alloc_live();
  reset_items();
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  int hits = 0;
  uva_future_t *f = uva_queue_get(q);
  ck_assert_int_eq(uva_future_on_done(f, on_get, &hits), 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(5)), 0);
  ck_assert_int_eq(uva_loop_run_until(loop, f), 0);
  uva_release(f);
  uva_future_t *s = uva_sleep(0);
  uva_loop_run_until(loop, s); /* let the callback run */
  uva_release(s);
  ck_assert_int_eq(hits, 1);
  ck_assert_int_eq(cb_value, 5);
  uva_queue_free(q);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
  ck_assert_int_eq(items_live, 0);
}
END_TEST

/* --------------------------------------------------------- ping-pong */

static uva_queue_t *g_ping, *g_pong;
#define ROUNDS 20000

static int ponger(void *arg) {
  (void)arg;
  for (int i = 0; i < ROUNDS; i++) {
    void *v;
    if (uva_await(uva_queue_get(g_ping), &v) != 0) return -1;
    if (uva_await(uva_queue_put(g_pong, v), NULL) != 0) return -1;
  }
  return 0;
}

TASK_TEST(test_queue_ping_pong_between_two_tasks) {
  g_ping = uva_queue_new(NULL);
  g_pong = uva_queue_new(NULL);
  uva_future_t *t = uva_spawn(ponger, NULL);
  for (intptr_t i = 0; i < ROUNDS; i++) {
    void *v;
    ck_assert_int_eq(uva_await(uva_queue_put(g_ping, (void *)i), NULL), 0);
    ck_assert_int_eq(uva_await(uva_queue_get(g_pong), &v), 0);
    ck_assert_ptr_eq(v, (void *)i);
  }
  ck_assert_int_eq(uva_await(t, NULL), 0);
  uva_queue_free(g_ping);
  uva_queue_free(g_pong);
  return 0;
}

/* -------------------------------------------------------- out of memory */

TASK_TEST(test_queue_put_when_store_cannot_grow_keeps_rule3) {
  reset_items();
  uva_queue_t *q = qnew(UVA_QUEUE_FIFO, 0);
  ck_assert_int_eq(uva_queue_put_nowait(q, item(0)), 0); /* first block */
  int n = 1;
  while (uva_queue_size(q) < 16) ck_assert_int_eq(uva_queue_put_nowait(q, item(n++)), 0);
  int *extra = item(n);
  uva_test_alloc_fail_after(1);
  int rc = uva_queue_put_nowait(q, extra);
  uva_test_alloc_fail_after(-1);
  ck_assert_int_eq(rc, UV_ENOMEM);
  ck_assert_int_eq(items_freed, 0); /* *_nowait: still the caller's */
  item_free(extra);
  /* put (not nowait) takes the item even when it fails (rule 3). */
  uva_test_alloc_fail_after(1);
  rc = uva_await(uva_queue_put(q, item(n)), NULL);
  uva_test_alloc_fail_after(-1);
  ck_assert_int_eq(rc, UV_ENOMEM);
  ck_assert_int_eq(items_freed, 2);
  ck_assert_uint_eq(uva_queue_size(q), 16);
  for (int i = 0; i < 16; i++) ck_assert_int_eq(get_val(q), i);
  uva_queue_free(q);
  ck_assert_int_eq(items_live, 0);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("queue");
  TCase *tc = tcase_create("order");
  tcase_add_test(tc, test_queue_fifo_order);
  tcase_add_test(tc, test_queue_lifo_order);
  tcase_add_test(tc, test_queue_priority_order_is_stable_for_ties);
  tcase_add_test(tc, test_queue_new_needs_a_loop);
  tcase_add_test(tc, test_queue_new_rejects_priority_without_cmp);
  suite_add_tcase(s, tc);
  tc = tcase_create("waiters");
  tcase_add_test(tc, test_queue_getters_wait_and_are_served_fifo);
  tcase_add_test(tc, test_queue_maxsize_blocks_putter_until_get);
  tcase_add_test(tc, test_queue_nowait_errors_leave_item_with_caller);
  tcase_add_test(tc, test_queue_cancelled_getter_does_not_swallow_item);
  tcase_add_test(tc, test_queue_get_cancel_drop_one_pending_reader);
  tcase_add_test(tc, test_queue_lifo_getter_gives_item_back_under_later_puts);
  tcase_add_test(tc, test_queue_give_backs_keep_the_order_items_were_put_in);
  tcase_add_test(tc, test_queue_give_backs_over_maxsize_keep_order_and_hold_writers);
  tcase_add_test(tc, test_queue_get_cancel_drop_many_pending_readers);
  tcase_add_test(tc, test_queue_given_back_item_is_still_unfinished);
  tcase_add_test(tc, test_queue_given_back_item_after_immediate_shutdown_is_dropped);
  tcase_add_test(tc, test_queue_freed_after_hand_off_keeps_item_with_getter);
  tcase_add_test(tc, test_queue_getter_cancelled_after_it_resumed_keeps_item);
  tcase_add_test(tc, test_queue_put_cancel_drop);
  tcase_add_test(tc, test_queue_put_taken_before_cancel_stands);
  tcase_add_test(tc, test_queue_cancelled_writer_lets_next_writer_in);
  tcase_add_test(tc, test_queue_cancelled_putter_frees_item_and_keeps_order);
  tcase_add_test(tc, test_queue_dropped_put_future_frees_its_item);
  tcase_add_test(tc, test_queue_get_without_out_frees_item);
  suite_add_tcase(s, tc);
  tc = tcase_create("join_shutdown");
  tcase_add_test(tc, test_queue_join_waits_for_every_task_done);
  tcase_add_test(tc, test_queue_shutdown_fails_putters_and_getters_once_empty);
  tcase_add_test(tc, test_queue_shutdown_immediate_drops_items_and_wakes_joiners);
  tcase_add_test(tc, test_queue_free_frees_items_and_fails_waiters_closed);
  suite_add_tcase(s, tc);
  tc = tcase_create("callbacks");
  tcase_add_test(tc, test_queue_get_with_done_callback);
  tcase_add_test(tc, test_queue_callback_style_without_tasks);
  tcase_add_test(tc, test_queue_ping_pong_between_two_tasks);
  tcase_add_test(tc, test_queue_put_when_store_cannot_grow_keeps_rule3);
  suite_add_tcase(s, tc);
  return s;
}

TEST_MAIN(suite)
