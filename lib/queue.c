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
 * to retry, and a cancelled waiter cannot take an item or a slot with it.
 *
 * A waiter served that way stays on the `handed` line until its future
 * goes. If its task is cancelled in between (before it resumed), the task
 * layer asks for the hand-off back (reclaim): the item returns to the
 * place it would hold had it never been handed out (every item carries
 * the seq of its put, and the ring is kept in seq order), or the putter's
 * item leaves the store if no getter took it yet,
 * so the cancel wins and nothing is consumed, as in asyncio, where a woken
 * waiter only takes its item when it runs. */
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
  pq_ent_t *ents; /* a ring (FIFO / LIFO) or a heap (PRIORITY) */
  size_t cap, head, len;
  uint64_t seq;           /* the next put's; ring entries are in seq order */
  size_t unfinished; /* put but not yet task_done */
  bool shutdown, immediate;
  uva__link_t getters, putters, joiners;
  uva__link_t handed; /* served getters and putters whose task has not
                       * resumed yet: their hand-off can still be undone */
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
  pq_ent_t *e = uva__malloc(cap * sizeof *e);
  if (e == NULL) return UV_ENOMEM;
  if (q->kind == UVA_QUEUE_PRIORITY) {
    if (q->len) memcpy(e, q->ents, q->len * sizeof *e);
  } else {
    for (size_t i = 0; i < q->len; i++) e[i] = q->ents[(q->head + i) & (q->cap - 1)];
    q->head = 0;
  }
  uva__free(q->ents);
  q->ents = e;
  q->cap = cap;
  return 0;
}

static pq_ent_t *ring_at(uva_queue_t *q, size_t i) {
  return &q->ents[(q->head + i) & (q->cap - 1)];
}

static void heap_up(uva_queue_t *q, size_t i) {
  pq_ent_t e = q->ents[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!pq_before(q, &e, &q->ents[parent])) break;
    q->ents[i] = q->ents[parent];
    i = parent;
  }
  q->ents[i] = e;
}

static void heap_down(uva_queue_t *q, size_t i) {
  pq_ent_t e = q->ents[i];
  size_t n = q->len;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = l;
    if (l >= n) break;
    if (r < n && pq_before(q, &q->ents[r], &q->ents[l])) m = r;
    if (!pq_before(q, &q->ents[m], &e)) break;
    q->ents[i] = q->ents[m];
    i = m;
  }
  q->ents[i] = e;
}

/* Store an item with the seq of its put; it identifies it while it is
 * stored (see putter_reclaim) and orders it. A new put has the highest seq
 * and goes to the back (FIFO) or the top (LIFO). An item given back by a
 * getter that was cancelled before it resumed has an older one: it goes
 * where it would be had it never been handed out, under everything put
 * after it (the front of a FIFO, the bottom of a LIFO; two give-backs in a
 * row keep their own order). */
static int store_push(uva_queue_t *q, void *item, uint64_t seq) {
  if (q->len == q->cap && store_grow(q) != 0) return UV_ENOMEM;
  pq_ent_t e = {item, seq};
  if (q->kind == UVA_QUEUE_PRIORITY) {
    q->ents[q->len++] = e;
    heap_up(q, q->len - 1);
    return 0;
  }
  size_t i = q->len;
  while (i > 0 && ring_at(q, i - 1)->seq > seq) i--; /* given back: few to pass */
  if (i == 0 && q->len > 0) { /* the usual give-back: the oldest of all */
    q->head = (q->head - 1) & (q->cap - 1);
    q->ents[q->head] = e;
  } else {
    for (size_t k = q->len; k > i; k--) *ring_at(q, k) = *ring_at(q, k - 1);
    *ring_at(q, i) = e;
  }
  q->len++;
  return 0;
}

/* Caller checks len > 0. */
static void *store_pop(uva_queue_t *q) {
  if (q->kind == UVA_QUEUE_FIFO) {
    void *item = q->ents[q->head].item;
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return item;
  }
  if (q->kind == UVA_QUEUE_LIFO) return ring_at(q, --q->len)->item;
  void *top = q->ents[0].item;
  q->ents[0] = q->ents[--q->len];
  if (q->len) heap_down(q, 0);
  return top;
}

/* Take out the stored entry with this seq, if it is still there. Linear:
 * only a putter cancelled in the instant after being served needs it. */
static bool store_remove(uva_queue_t *q, uint64_t seq, void **item) {
  for (size_t i = 0; i < q->len; i++) {
    pq_ent_t *e = q->kind == UVA_QUEUE_PRIORITY ? &q->ents[i] : ring_at(q, i);
    if (e->seq != seq) continue;
    *item = e->item;
    if (q->kind == UVA_QUEUE_PRIORITY) {
      q->ents[i] = q->ents[--q->len];
      if (i < q->len) {
        heap_down(q, i);
        heap_up(q, i);
      }
    } else {
      for (size_t k = i; k + 1 < q->len; k++) *ring_at(q, k) = *ring_at(q, k + 1);
      q->len--;
    }
    return true;
  }
  return false;
}

/* ---------------------------------------------------------------- waiters */

/* A served putter remembers its item's seq here, and a served getter the
 * seq of the put that handed it its item (their timer is unused). */
#define PUT_SEQ(f) (W(f)->timer.deadline)
#define GET_SEQ(f) (W(f)->timer.deadline)

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

static int getter_reclaim(uva_future_t *f);
static int putter_reclaim(uva_future_t *f);

static const uva__fops_t get_fops = {"queue.get", uva__waiter_cancel, uva__waiter_destroy,
                                     sizeof(uva__small_future_t), getter_reclaim};
static const uva__fops_t put_fops = {"queue.put", putter_cancel, putter_destroy,
                                     sizeof(uva__small_future_t), putter_reclaim};
static const uva__fops_t join_fops = {"queue.join", uva__waiter_cancel, uva__waiter_destroy,
                                      sizeof(uva__small_future_t), NULL};

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

/* Complete a waiter that got what it waited for, keeping it on the
 * handed line until its future goes (destroy unlinks it). */
static void serve(uva_queue_t *q, uva_future_t *f, int status, void *item) {
  uva__list_push(&q->handed, &f->link);
  uva__future_complete(f, status, item, item ? q->item_free : NULL);
}

static void joiners_wake(uva_queue_t *q);
static bool is_full(const uva_queue_t *q) { return q->maxsize && q->len >= q->maxsize; }

/* ------------------------------------------------------------------ core */

/* Accept an item (room known): straight to the first getter, else store. */
static int enqueue(uva_queue_t *q, void *item) {
  uva_future_t *g = shift_future(&q->getters);
  if (g) {
    q->unfinished++;
    GET_SEQ(g) = q->seq++;
    serve(q, g, 0, item);
    return 0;
  }
  if (store_push(q, item, q->seq) != 0) return UV_ENOMEM; /* the caller keeps item */
  q->seq++;
  q->unfinished++;
  return 0;
}

/* A slot is free: let the first putter's item in. */
static void admit_putter(uva_queue_t *q) {
  if (is_full(q)) return; /* still over: an item given back (getter_reclaim) */
  uva_future_t *p = shift_future(&q->putters);
  if (p == NULL) return;
  void *pitem = W(p)->item;
  W(p)->item = NULL;
  /* A slot was just freed, so the store has room: this cannot grow. */
  uint64_t seq = q->seq;
  int rc = store_push(q, pitem, seq);
  if (rc == 0) {
    q->seq++;
    q->unfinished++;
    PUT_SEQ(p) = seq;
    serve(q, p, 0, NULL);
  } else {
    drop(q, pitem);
    uva__future_complete(p, rc, NULL, NULL);
  }
}

/* Take the next item (len > 0) and let the first putter into the slot. */
static void *take(uva_queue_t *q) {
  void *item = store_pop(q);
  admit_putter(q);
  return item;
}

/* A getter served an item was cancelled before its task resumed: the item
 * goes back as if it had never been handed out (to the next getter in
 * line, or into the store in the order of its put): asyncio's cancelled
 * getter takes nothing. The store may hold maxsize + 1 items for a moment
 * then. */
static int getter_reclaim(uva_future_t *f) {
  uva_queue_t *q = W(f)->owner;
  void *item = f->value;
  if (q == NULL || item == NULL) return 0; /* queue freed: nothing to give back to */
  if (q->immediate) {
    drop(q, item); /* shut down at once since: dropped like the others */
    if (q->unfinished && --q->unfinished == 0) joiners_wake(q);
  } else {
    uva_future_t *g = shift_future(&q->getters);
    if (g) {
      GET_SEQ(g) = GET_SEQ(f);
      serve(q, g, 0, item);
    } else if (store_push(q, item, GET_SEQ(f)) != 0) {
      return 0; /* no memory to give it back: the get stands */
    }
  }
  f->value = NULL;
  f->free_fn = NULL;
  uva__list_unlink(&f->link);
  W(f)->owner = NULL;
  return 1;
}

/* A putter let in was cancelled before its task resumed: its item comes
 * out again if no getter has taken it yet (asyncio's cancelled putter
 * puts nothing), and is freed as a cancelled put's item is (rule 3).
 * Taken already: the put happened and the task sees that. */
static int putter_reclaim(uva_future_t *f) {
  uva_queue_t *q = W(f)->owner;
  void *item = NULL;
  if (q == NULL || !store_remove(q, PUT_SEQ(f), &item)) return 0;
  uva__list_unlink(&f->link);
  W(f)->owner = NULL;
  drop(q, item);
  if (q->unfinished && --q->unfinished == 0) joiners_wake(q);
  admit_putter(q);
  return 1;
}

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
  uva__list_init(&q->handed);
  return q;
}

void uva_queue_free(uva_queue_t *q) {
  if (q == NULL) return;
  fail_line(q, &q->getters, UVA_ECLOSED);
  fail_line(q, &q->putters, UVA_ECLOSED);
  fail_line(q, &q->joiners, UVA_ECLOSED);
  /* Served waiters outlive the queue: nothing to give back to now. */
  uva_future_t *f;
  while ((f = shift_future(&q->handed)) != NULL) W(f)->owner = NULL;
  while (q->len) drop(q, store_pop(q));
  uva__free(q->ents);
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
    uva__future_complete(f, 0, item, q->item_free); /* not waited: no undo */
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
    q->immediate = true;
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
