/* Time: one binary heap of deadlines behind one uv_timer_t per loop.
 * 100k concurrent sleeps cost 100k heap inserts, not 100k uv_timer_t
 * init/start/close round trips. Equal deadlines fire in arrival order. */
#include "internal.h"

static bool before(const uva__timer_t *a, const uva__timer_t *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(uva_loop_t *loop, size_t i, uva__timer_t *t) {
  loop->heap[i] = t;
  t->index = i;
}

static void sift_up(uva_loop_t *loop, size_t i) {
  uva__timer_t *t = loop->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(t, loop->heap[parent])) break;
    heap_set(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_set(loop, i, t);
}

static void sift_down(uva_loop_t *loop, size_t i) {
  uva__timer_t *t = loop->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    uva__timer_t *best = t;
    if (l < loop->heap_len && before(loop->heap[l], best)) m = l, best = loop->heap[l];
    if (r < loop->heap_len && before(loop->heap[r], best)) m = r, best = loop->heap[r];
    if (m == i) break;
    heap_set(loop, i, best);
    i = m;
  }
  heap_set(loop, i, t);
}

static void on_timer(uv_timer_t *h);

static void rearm(uva_loop_t *loop) {
  if (loop->heap_len == 0) {
    if (loop->timer_active) uv_timer_stop(&loop->timer);
    loop->timer_active = false;
    return;
  }
  uint64_t due = loop->heap[0]->deadline;
  if (loop->timer_active && loop->timer_due == due) return;
  uint64_t now = uv_now(loop->uv);
  uv_timer_start(&loop->timer, on_timer, due > now ? due - now : 0, 0);
  loop->timer_active = true;
  loop->timer_due = due;
}

static void on_timer(uv_timer_t *h) {
  uva_loop_t *loop = h->data;
  uva__turn_start(loop); /* last turn's sleep(0)s go before these */
  uint64_t now = uv_now(loop->uv);
  loop->timer_active = false;
  loop->in_timer_cb = true;
  while (loop->heap_len && loop->heap[0]->deadline <= now) {
    uva__timer_t *t = loop->heap[0];
    uva__timer_stop(loop, t);
    t->fire(t);
  }
  loop->in_timer_cb = false;
  rearm(loop);
}

int uva__timer_start(uva_loop_t *loop, uva__timer_t *t, uint64_t deadline) {
  if (uva__timer_armed(t)) uva__timer_stop(loop, t);
  if (loop->heap_len == loop->heap_cap) {
    size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
    uva__timer_t **h = uva__realloc(loop->heap, cap * sizeof *h);
    if (h == NULL) return UV_ENOMEM;
    loop->heap = h;
    loop->heap_cap = cap;
  }
  t->deadline = deadline;
  t->seq = ++loop->timer_seq;
  loop->heap[loop->heap_len] = t;
  t->index = loop->heap_len++;
  sift_up(loop, t->index);
  if (t->index == 0 && !loop->in_timer_cb) rearm(loop);
  return 0;
}

void uva__timer_stop(uva_loop_t *loop, uva__timer_t *t) {
  size_t i = t->index;
  if (i == SIZE_MAX) return;
  t->index = SIZE_MAX;
  uva__timer_t *last = loop->heap[--loop->heap_len];
  if (i != loop->heap_len) {
    heap_set(loop, i, last);
    sift_down(loop, i);
    sift_up(loop, last->index);
  }
  if (i == 0 && !loop->in_timer_cb) rearm(loop);
}

void uva__timers_close(uva_loop_t *loop) {
  uva__free(loop->heap);
  loop->heap = NULL;
  loop->heap_len = loop->heap_cap = 0;
}

/* The loop-time deadline at least ms from this call. uv_now() is read when
 * the loop leaves the poll, and a task that computed for 40 ms before
 * calling uva_sleep(100) woke after 60 ms counting from it. So read the
 * clock itself (clock_gettime, ~31 ns here) and round up to the next
 * millisecond: loop time is the same monotonic clock floored to ms, so the
 * timer cannot fire before the full ms have passed. */
uint64_t uva__deadline(uint64_t ms) {
  uint64_t now_ns = uv_hrtime();
  if (ms > (UINT64_MAX - now_ns) / 1000000u - 1) return UINT64_MAX - 1;
  return (now_ns + ms * 1000000u + 999999u) / 1000000u;
}

/* ---------------------------------------------------------------- sleep */

static void sleep_fire(uva__timer_t *t) {
  uva__small_future_t *s = UVA_CONTAINER_OF(t, uva__small_future_t, timer);
  uva__future_complete(&s->base, 0, NULL, NULL);
}

static int sleep_cancel(uva_future_t *f) {
  uva__small_future_t *s = (uva__small_future_t *)f;
  uva__timer_stop(f->loop, &s->timer);
  uva__list_unlink(&f->link);
  return uva__future_cancel_now(f);
}

static void sleep_destroy(uva_future_t *f) {
  uva__small_future_t *s = (uva__small_future_t *)f;
  uva__timer_stop(f->loop, &s->timer);
  uva__list_unlink(&f->link);
}

static const uva__fops_t sleep_fops = {"sleep", sleep_cancel, sleep_destroy,
                                       sizeof(uva__small_future_t), NULL};

uva_future_t *uva_sleep(uint64_t ms) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  uva_future_t *f = uva__future_alloc(loop, &sleep_fops);
  if (f == NULL) return NULL;
  if (ms == 0) {
    /* Done at the start of the next turn; its waiters run after that
     * turn's I/O poll, ahead of what the turn's timers and I/O wake
     * (uva__turn_start): asyncio's sleep(0). */
    uva__list_push(&loop->yields, &f->link);
    uva__loop_wake(loop);
  } else {
    uva__small_future_t *s = (uva__small_future_t *)f;
    s->timer.fire = sleep_fire;
    if (uva__timer_start(loop, &s->timer, uva__deadline(ms)) != 0) {
      uva_release(f);
      return NULL;
    }
  }
  return f;
}

void uva__yields_run(uva_loop_t *loop) {
  if (uva__list_empty(&loop->yields)) return;
  uva__link_t batch;
  uva__list_init(&batch);
  /* Move the whole list: sleeps made while these run belong to next turn. */
  batch.next = loop->yields.next;
  batch.prev = loop->yields.prev;
  batch.next->prev = &batch;
  batch.prev->next = &batch;
  uva__list_init(&loop->yields);
  uva__link_t *l;
  while ((l = uva__list_shift(&batch)) != NULL) {
    uva_future_t *f = UVA_CONTAINER_OF(l, uva_future_t, link);
    uva__future_complete(f, 0, NULL, NULL);
  }
}

int (uva_yield)(void) { return uva_await(uva_sleep(0), NULL); }

uint64_t uva_now(void) {
  uva_loop_t *loop = uva__loop();
  return loop ? uv_now(loop->uv) : 0;
}
