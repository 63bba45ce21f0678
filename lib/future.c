/* Futures: the state machine every layer above speaks.
 *
 * Completing a future never runs a waiter: its callback list is spliced onto
 * the loop's ready queue in O(1), and the loop runs it on this or the next
 * turn. A pending future nobody references any more is freed, and its kind's
 * destroy() unhooks it from whatever could have completed it (a timer, a
 * waiter line), so producers need not hold references of their own. */
#include "internal.h"

#include <string.h>

const uva__fops_t uva__plain_fops = {"future", uva__future_cancel_now, NULL,
                                     sizeof(uva__small_future_t), NULL};

uva_future_t uva__noloop_future = {
    .ops = &uva__plain_fops,
    .loop = NULL,
    .refs = 1u << 30,
    .state = UVA__DONE,
    .status = UVA_ENOLOOP,
    .link = {&uva__noloop_future.link, &uva__noloop_future.link},
};

uva_future_t *uva__future_alloc(uva_loop_t *loop, const uva__fops_t *ops) {
  uva_future_t *f;
  if (ops->size <= sizeof(uva__small_future_t)) {
    /* The hot path (sleeps, waiters, queue ops): a free-list pop and a
     * field-by-field init, no memset. */
    uva__small_future_t *s = loop->free_small;
    if (s) {
      loop->free_small = *(uva__small_future_t **)s;
    } else if ((s = uva__malloc(sizeof *s)) == NULL) {
      return NULL;
    }
    s->timer.index = SIZE_MAX;
    s->timer.fire = NULL;
    s->item = NULL;
    s->owner = NULL;
    f = &s->base;
    f->is_task = 0;
    f->value = NULL;
    f->free_fn = NULL;
    f->cbs.head = f->cbs.tail = NULL;
  } else {
    /* Larger kinds (combinators) get zeroed memory beyond the base. */
    if ((f = uva__calloc(1, ops->size)) == NULL) return NULL;
  }
  f->ops = ops;
  f->loop = loop;
  f->refs = 1;
  f->state = UVA__PENDING;
  f->status = UVA_EPENDING;
  uva__list_init(&f->link);
  if (loop->debug) uva__debug_future_new(f);
  return f;
}

static void future_free(uva_future_t *f) {
  uva_loop_t *loop = f->loop;
  if (f == &loop->done0) { /* shared: never freed (its count is huge anyway) */
    f->refs = 1u << 30;
    return;
  }
  if (loop->debug) uva__debug_future_free(f);
  const uva__fops_t *ops = f->ops;
  if (f->value && f->free_fn) f->free_fn(f->value);
  f->value = NULL;
  if (ops->destroy) ops->destroy(f); /* may recycle f (tasks) */
  if (ops->size <= sizeof(uva__small_future_t)) {
    *(uva__small_future_t **)f = loop->free_small;
    loop->free_small = (uva__small_future_t *)f;
  } else if (ops != &uva__task_fops) {
    uva__free(f);
  } /* tasks: their destroy() recycled them */
}

uva_future_t *uva_ref(uva_future_t *f) {
  if (f && f->loop) f->refs++;
  return f;
}

void uva_release(uva_future_t *f) {
  if (f && f->loop && --f->refs == 0) future_free(f);
}

uva__cb_t *uva__cb_alloc(uva_loop_t *loop) {
  uva__cb_t *cb = loop->free_cbs;
  if (cb) {
    loop->free_cbs = cb->next;
  } else {
    cb = uva__malloc(sizeof *cb);
    if (cb == NULL) return NULL;
  }
  memset(cb, 0, sizeof *cb);
  return cb;
}

/* Register cb on f (or queue it at once if f is done). Takes a reference on
 * f that the loop drops after cb has run. The no-loop future is done and
 * shared by every thread: its node goes on this thread's loop, and its
 * count is left alone. */
void uva__cb_add(uva_future_t *f, uva__cb_t *cb) {
  if (f->loop) f->refs++;
  cb->fut = f;
  cb->next = NULL;
  if (f->state == UVA__DONE) {
    uva__ready_push(f->loop ? f->loop : uva__loop(), cb);
  } else if (f->cbs.tail) {
    f->cbs.tail->next = cb;
    f->cbs.tail = cb;
  } else {
    f->cbs.head = f->cbs.tail = cb;
  }
}

void uva__future_complete(uva_future_t *f, int status, void *value,
                          uva_free_fn free_fn) {
  f->state = UVA__DONE;
  f->status = status;
  f->value = value;
  f->free_fn = free_fn;
  if (f->cbs.head) {
    uva__ready_splice(f->loop, &f->cbs);
    f->cbs.head = f->cbs.tail = NULL;
  }
}

int uva__future_cancel_now(uva_future_t *f) {
  uva__future_complete(f, UV_ECANCELED, NULL, NULL);
  return 1;
}

uva_future_t *uva__future_started(uva_future_t *f, int rc) {
  if (rc < 0) {
    uva__future_complete(f, rc, NULL, NULL);
  } else {
    f->refs++; /* libuv's, until the callback */
    f->loop->jobs++;
  }
  return f;
}

int uva__reclaim(uva_future_t *f) {
  if (f->state != UVA__DONE || f->status < 0 || f->ops->reclaim == NULL || !f->ops->reclaim(f))
    return 0;
  f->status = UV_ECANCELED;
  return 1;
}

int uva__waiter_cancel(uva_future_t *f) {
  uva__list_unlink(&f->link);
  return uva__future_cancel_now(f);
}

void uva__waiter_destroy(uva_future_t *f) { uva__list_unlink(&f->link); }

uva_future_t *uva_future_new(void) {
  uva_loop_t *loop = uva__loop();
  return loop ? uva__future_alloc(loop, &uva__plain_fops) : uva__noloop();
}

uva_future_t *uva__future_done(uva_loop_t *loop, int status) {
  if (loop == NULL && (loop = uva__loop()) == NULL) return uva__noloop();
  if (status == 0) return uva_ref(&loop->done0);
  uva_future_t *f = uva__future_alloc(loop, &uva__plain_fops);
  if (f) uva__future_complete(f, status, NULL, NULL);
  return f;
}

uva_future_t *uva_future_done_with(int status) { return uva__future_done(NULL, status); }

int uva_future_resolve(uva_future_t *f, int status, void *value, uva_free_fn free_fn) {
  if (f == NULL || f->state != UVA__PENDING || status < 0 || f->ops != &uva__plain_fops) {
    if (value && free_fn) free_fn(value);
    return UV_EINVAL;
  }
  uva__future_complete(f, status, value, free_fn);
  return 0;
}

int uva_future_fail(uva_future_t *f, int err) {
  if (f == NULL || f->state != UVA__PENDING || err >= 0 || f->ops != &uva__plain_fops)
    return UV_EINVAL;
  uva__future_complete(f, err, NULL, NULL);
  return 0;
}

int uva_cancel(uva_future_t *f) {
  if (f == NULL || f->state != UVA__PENDING) return 0;
  return f->ops->cancel(f);
}

int uva_future_is_done(const uva_future_t *f) { return f && f->state == UVA__DONE; }
int uva_future_is_cancelled(const uva_future_t *f) {
  return f && f->state == UVA__DONE && f->status == UV_ECANCELED;
}
int uva_future_status(const uva_future_t *f) {
  if (f == NULL) return UV_ENOMEM;
  if (f->loop && f->loop->debug && f->state == UVA__DONE) uva__debug_retrieved(f);
  return f->state == UVA__DONE ? f->status : UVA_EPENDING;
}
void *uva_future_value(const uva_future_t *f) {
  if (f && f->loop && f->loop->debug && f->state == UVA__DONE) uva__debug_retrieved(f);
  return f ? f->value : NULL;
}
void *uva_future_take(uva_future_t *f) {
  if (f == NULL || f->loop == NULL) return NULL; /* the no-loop future: never written */
  if (f->loop && f->loop->debug && f->state == UVA__DONE) uva__debug_retrieved(f);
  void *v = f->value;
  f->value = NULL;
  return v;
}

int uva_future_on_done(uva_future_t *f, uva_done_fn fn, void *data) {
  if (f == NULL || fn == NULL) return f ? UV_EINVAL : UV_ENOMEM;
  /* The no-loop future runs fn on this thread's loop, if it has one. */
  uva_loop_t *loop = f->loop ? f->loop : uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  uva__cb_t *cb = uva__cb_alloc(loop);
  if (cb == NULL) return UV_ENOMEM;
  cb->fn = fn;
  cb->data = data;
  uva__cb_add(f, cb);
  return 0;
}

/* Remove matching nodes from a queue; returns how many. */
static int cbq_remove(uva_loop_t *loop, uva__cbq_t *q, uva_future_t *f,
                      uva_done_fn fn, void *data) {
  int n = 0;
  uva__cb_t *prev = NULL, *cb = q->head;
  while (cb) {
    uva__cb_t *next = cb->next;
    if (cb->fut == f && cb->fn == fn && cb->data == data && !cb->embedded) {
      if (prev) prev->next = next; else q->head = next;
      if (q->tail == cb) q->tail = prev;
      cb->next = loop->free_cbs;
      loop->free_cbs = cb;
      n++;
    } else {
      prev = cb;
    }
    cb = next;
  }
  return n;
}

int uva_future_off_done(uva_future_t *f, uva_done_fn fn, void *data) {
  if (f == NULL) return 0;
  uva_loop_t *loop = f->loop ? f->loop : uva__loop(); /* as on_done */
  if (loop == NULL) return 0;
  int n = cbq_remove(loop, &f->cbs, f, fn, data);
  if (f->state == UVA__DONE) {
    n += cbq_remove(loop, &loop->ready, f, fn, data);
    n += cbq_remove(loop, &loop->next, f, fn, data);
  }
  /* Each removed registration held a reference. Drop them last: f may go. */
  for (int i = 0; i < n; i++) uva_release(f);
  return n;
}
