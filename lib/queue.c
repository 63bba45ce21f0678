/* Queue: asyncio.Queue / LifoQueue / PriorityQueue.
 *
 * Items live in a growable power-of-two ring (FIFO pops the front, LIFO the
 * back) or, for PRIORITY, a binary heap ordered by cmp and then by arrival
 * so equal priorities come out first in, first out.
 *
 * Getters, putters and joiners are small futures standing in lines (see
 * sync.c for the waiter discipline). Invariants: getters wait only while
 * the queue is empty, putters only while it is full. A put with a getter
 * waiting hands the item straight to it, and a get from a full queue pulls
 * the first putter's item in, each as one step: nothing is ever woken just
 * to retry, and a cancelled waiter cannot take an item or a slot with it. */
#include "internal.h"

#include <string.h>

#define W(f) ((uva__small_future_t *)(f))
#define LINK_FUTURE(l) UVA_CONTAINER_OF((l), uva_future_t, link)

typedef struct pq_ent {
  void *item;
  uint64_t seq;
} pq_ent_t;

struct uva_queue {
  uva_loop_t *loop;
  int kind;
  size_t maxsize;
  int (*cmp)(const void *a, const void *b);
  uva_free_fn item_free;
  void **ring;   /* FIFO / LIFO */
  pq_ent_t *heap; /* PRIORITY */
  size_t cap, head, len;
  uint64_t seq;
  size_t unfinished; /* put but not yet task_done */
  bool shutdown;
  uva__link_t getters, putters, joiners;
};

static void drop(uva_queue_t *q, void *item) {
  if (item && q->item_free) q->item_free(item);
}

/* ----------------------------------------------------------------- store */

static bool pq_before(const uva_queue_t *q, const pq_ent_t *a, const pq_ent_t *b) {
  int c = q->cmp(a->item, b->item);
  return c < 0 || (c == 0 && a->seq < b->seq);
}

static int store_grow(uva_queue_t *q) {
  size_t cap = q->cap ? q->cap * 2 : 16;
  if (q->kind == UVA_QUEUE_PRIORITY) {
    pq_ent_t *h = uva__malloc(cap * sizeof *h);
    if (h == NULL) return UV_ENOMEM;
    if (q->len) memcpy(h, q->heap, q->len * sizeof *h);
    uva__free(q->heap);
    q->heap = h;
  } else {
    void **r = uva__malloc(cap * sizeof *r);
    if (r == NULL) return UV_ENOMEM;
    for (size_t i = 0; i < q->len; i++) r[i] = q->ring[(q->head + i) & (q->cap - 1)];
    uva__free(q->ring);
    q->ring = r;
    q->head = 0;
  }
  q->cap = cap;
  return 0;
}

static int store_push(uva_queue_t *q, void *item) {
  if (q->len == q->cap && store_grow(q) != 0) return UV_ENOMEM;
  if (q->kind != UVA_QUEUE_PRIORITY) {
    q->ring[(q->head + q->len++) & (q->cap - 1)] = item;
    return 0;
  }
  pq_ent_t e = {item, q->seq++};
  size_t i = q->len++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!pq_before(q, &e, &q->heap[parent])) break;
    q->heap[i] = q->heap[parent];
    i = parent;
  }
  q->heap[i] = e;
  return 0;
}

/* Caller checks len > 0. */
static void *store_pop(uva_queue_t *q) {
  size_t mask = q->cap - 1;
  if (q->kind == UVA_QUEUE_FIFO) {
    void *item = q->ring[q->head];
    q->head = (q->head + 1) & mask;
    q->len--;
    return item;
  }
  if (q->kind == UVA_QUEUE_LIFO) return q->ring[(q->head + --q->len) & mask];
  void *top = q->heap[0].item;
  pq_ent_t e = q->heap[--q->len];
  size_t i = 0, n = q->len;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = l;
    if (l >= n) break;
    if (r < n && pq_before(q, &q->heap[r], &q->heap[l])) m = r;
    if (!pq_before(q, &q->heap[m], &e)) break;
    q->heap[i] = q->heap[m];
    i = m;
  }
  if (n) q->heap[i] = e;
  return top;
}

/* ---------------------------------------------------------------- waiters */

/* A put waiter owns its item until it is served (item moved, NULL here). */
static int putter_cancel(uva_future_t *f) {
  uva__list_unlink(&f->link);
  void *item = W(f)->item;
  W(f)->item = NULL;
  drop(W(f)->owner, item);
  return uva__future_cancel_now(f);
}

static void putter_destroy(uva_future_t *f) {
  uva__list_unlink(&f->link);
  void *item = W(f)->item;
  W(f)->item = NULL;
  if (item) drop(W(f)->owner, item);
}

static const uva__fops_t get_fops = {"queue.get", uva__waiter_cancel, uva__waiter_destroy,
                                     sizeof(uva__small_future_t)};
static const uva__fops_t put_fops = {"queue.put", putter_cancel, putter_destroy,
                                     sizeof(uva__small_future_t)};
static const uva__fops_t join_fops = {"queue.join", uva__waiter_cancel, uva__waiter_destroy,
                                      sizeof(uva__small_future_t)};

static uva_future_t *shift_future(uva__link_t *line) {
  uva__link_t *l = uva__list_shift(line);
  return l ? LINK_FUTURE(l) : NULL;
}

static void fail_line(uva_queue_t *q, uva__link_t *line, int status) {
  uva_future_t *f;
  while ((f = shift_future(line)) != NULL) {
    void *item = W(f)->item; /* putters only */
    W(f)->item = NULL;
    uva__future_complete(f, status, NULL, NULL);
    drop(q, item);
  }
}

/* ------------------------------------------------------------------ core */

/* Accept an item (room known): straight to the first getter, else store. */
static int enqueue(uva_queue_t *q, void *item) {
  uva_future_t *g = shift_future(&q->getters);
  if (g) {
    q->unfinished++;
    uva__future_complete(g, 0, item, q->item_free);
    return 0;
  }
  if (store_push(q, item) != 0) return UV_ENOMEM; /* the caller still has item */
  q->unfinished++;
  return 0;
}

/* Take the next item (len > 0) and let the first putter into the slot. */
static void *take(uva_queue_t *q) {
  void *item = store_pop(q);
  uva_future_t *p = shift_future(&q->putters);
  if (p) {
    void *pitem = W(p)->item;
    W(p)->item = NULL;
    /* A slot was just freed, so the store has room: this cannot grow. */
    int rc = store_push(q, pitem);
    if (rc == 0) q->unfinished++; else drop(q, pitem);
    uva__future_complete(p, rc, NULL, NULL);
  }
  return item;
}

static bool is_full(const uva_queue_t *q) { return q->maxsize && q->len >= q->maxsize; }

uva_queue_t *uva_queue_new(const uva_queue_opts_t *opts) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_queue_opts_t o = {UVA_QUEUE_FIFO, 0, NULL, NULL};
  if (opts) o = *opts;
  if (o.kind < UVA_QUEUE_FIFO || o.kind > UVA_QUEUE_PRIORITY) return NULL;
  if (o.kind == UVA_QUEUE_PRIORITY && o.cmp == NULL) return NULL;
  uva_queue_t *q = uva__calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  q->loop = loop;
  q->kind = o.kind;
  q->maxsize = o.maxsize;
  q->cmp = o.cmp;
  q->item_free = o.item_free;
  uva__list_init(&q->getters);
  uva__list_init(&q->putters);
  uva__list_init(&q->joiners);
  return q;
}

void uva_queue_free(uva_queue_t *q) {
  if (q == NULL) return;
  fail_line(q, &q->getters, UVA_ECLOSED);
  fail_line(q, &q->putters, UVA_ECLOSED);
  fail_line(q, &q->joiners, UVA_ECLOSED);
  while (q->len) drop(q, store_pop(q));
  uva__free(q->ring);
  uva__free(q->heap);
  uva__free(q);
}

uva_future_t *uva_queue_put(uva_queue_t *q, void *item) {
  if (q == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (q->shutdown) {
    drop(q, item);
    return uva__future_done(q->loop, UVA_ESHUTDOWN);
  }
  if (!is_full(q)) {
    int rc = enqueue(q, item);
    if (rc != 0) drop(q, item); /* rule 3: put takes the item even on failure */
    return uva__future_done(q->loop, rc);
  }
  uva_future_t *f = uva__future_alloc(q->loop, &put_fops);
  if (f == NULL) {
    drop(q, item);
    return NULL;
  }
  W(f)->owner = q;
  W(f)->item = item;
  uva__list_push(&q->putters, &f->link);
  return f;
}

uva_future_t *uva_queue_get(uva_queue_t *q) {
  if (q == NULL) return uva__future_done(NULL, UV_EINVAL);
  uva_future_t *f = uva__future_alloc(q->loop, &get_fops);
  if (f == NULL) return NULL;
  if (q->len) {
    void *item = take(q);
    uva__future_complete(f, 0, item, q->item_free);
  } else if (q->shutdown) {
    uva__future_complete(f, UVA_ESHUTDOWN, NULL, NULL);
  } else {
    W(f)->owner = q;
    uva__list_push(&q->getters, &f->link);
  }
  return f;
}

int uva_queue_put_nowait(uva_queue_t *q, void *item) {
  if (q == NULL) return UV_EINVAL;
  /* Rule 3's exception for *_nowait: on failure the caller keeps the item,
   * so it can retry or hand it elsewhere (asyncio's QueueFull). */
  if (q->shutdown) return UVA_ESHUTDOWN;
  if (is_full(q)) return UVA_EFULL;
  return enqueue(q, item);
}

int uva_queue_get_nowait(uva_queue_t *q, void **item) {
  if (item) *item = NULL;
  if (q == NULL || item == NULL) return UV_EINVAL;
  if (q->len == 0) return q->shutdown ? UVA_ESHUTDOWN : UVA_EEMPTY;
  *item = take(q);
  return 0;
}

static void joiners_wake(uva_queue_t *q) {
  uva_future_t *f;
  while ((f = shift_future(&q->joiners)) != NULL) uva__future_complete(f, 0, NULL, NULL);
}

int uva_queue_task_done(uva_queue_t *q) {
  if (q == NULL || q->unfinished == 0) return UV_EINVAL;
  if (--q->unfinished == 0) joiners_wake(q);
  return 0;
}

uva_future_t *uva_queue_join(uva_queue_t *q) {
  if (q == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (q->unfinished == 0) return uva__future_done(q->loop, 0);
  uva_future_t *f = uva__future_alloc(q->loop, &join_fops);
  if (f == NULL) return NULL;
  W(f)->owner = q;
  uva__list_push(&q->joiners, &f->link);
  return f;
}

void uva_queue_shutdown(uva_queue_t *q, int immediate) {
  if (q == NULL) return;
  q->shutdown = true;
  if (immediate) {
    while (q->len) {
      void *item = store_pop(q);
      if (q->unfinished) q->unfinished--;
      drop(q, item);
    }
    if (q->unfinished == 0) joiners_wake(q);
  }
  /* Getters wait only on an empty queue: none of them can be served now. */
  fail_line(q, &q->getters, UVA_ESHUTDOWN);
  fail_line(q, &q->putters, UVA_ESHUTDOWN);
}

size_t uva_queue_size(const uva_queue_t *q) { return q ? q->len : 0; }
int uva_queue_empty(const uva_queue_t *q) { return q == NULL || q->len == 0; }
int uva_queue_full(const uva_queue_t *q) { return q && is_full(q); }
