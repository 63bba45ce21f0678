/* Combinators: gather, wait, wait_for, shield, as_completed, timeout scopes
 * and task groups, all built from done callbacks on the futures they watch.
 *
 * The ones with many children (gather, wait, as_completed) keep their
 * per-child bookkeeping in a separate block, the hub. Freeing the outer
 * future unhooks every child that is still pending (cheap: a pending
 * future's callback list is short), but a child already done has its
 * callback node on the ready queue, and pulling that out is a scan of the
 * whole queue per child. So those nodes are left to run: they find the hub
 * orphaned, and the last one frees it. Registration never fails halfway:
 * the callback nodes are taken up front. */
#include "internal.h"

#include <limits.h>

/* ------------------------------------------------------------- helpers */

/* uva_free_fn has a void * parameter: call the typed functions through
 * wrappers rather than through a cast pointer. */
static void results_free_fn(void *p) { uva_results_free(p); }
static void release_fn(void *p) { uva_release(p); }

static void release_all(uva_future_t *const *fs, size_t n) {
  if (fs == NULL) return;
  for (size_t i = 0; i < n; i++) uva_release(fs[i]);
}

static uva_future_t *failed_future(uva_loop_t *loop, int err) {
  uva_future_t *f = uva__future_alloc(loop, &uva__plain_fops);
  if (f) uva__future_complete(f, err, NULL, NULL);
  return f;
}

/* size of a header plus n elements, or 0 on overflow */
static size_t array_size(size_t hdr, size_t n, size_t elem) {
  if (n > (SIZE_MAX - hdr) / elem) return 0;
  return hdr + n * elem;
}

static void cbs_unreserve(uva_loop_t *loop, uva__cb_t *chain) {
  while (chain) {
    uva__cb_t *next = chain->next;
    chain->next = loop->free_cbs;
    loop->free_cbs = chain;
    chain = next;
  }
}

/* Take n callback nodes now, so that registering on n children cannot fail
 * after some of them already hold our callbacks. */
static int cbs_reserve(uva_loop_t *loop, size_t n, uva__cb_t **chain) {
  *chain = NULL;
  for (size_t i = 0; i < n; i++) {
    uva__cb_t *cb = uva__cb_alloc(loop);
    if (cb == NULL) {
      cbs_unreserve(loop, *chain);
      *chain = NULL;
      return UV_ENOMEM;
    }
    cb->next = *chain;
    *chain = cb;
  }
  return 0;
}

/* uva_future_on_done with a reserved node. */
static void cb_register(uva__cb_t **chain, uva_future_t *f, uva_done_fn fn, void *data) {
  uva__cb_t *cb = *chain;
  *chain = cb->next;
  cb->fn = fn;
  cb->data = data;
  uva__cb_add(f, cb);
}

static size_t count_nonnull(uva_future_t *const *fs, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += fs[i] != NULL;
  return k;
}

/* One child of a hub. child is set while our callback on it has not run. */
typedef struct slot {
  uva_future_t *child;
  void *hub;
} slot_t;

/* What gather's and wait's hubs share. */
typedef struct hub {
  uva_future_t *outer; /* NULL once the outer future is freed */
  size_t n;
  size_t left;         /* registered callbacks that have not run */
} hub_t;

/* A child's callback runs. Returns false when the outer future is gone:
 * then the last callback to run frees the hub. */
static bool hub_child_ran(hub_t *h, slot_t *s) {
  s->child = NULL;
  h->left--;
  if (h->outer) return true;
  if (h->left == 0) uva__free(h);
  return false;
}

/* The outer future is being freed: unhook the children still pending.
 * Callbacks already queued run later and find the hub orphaned. */
static void hub_orphan(hub_t *h, slot_t *slots, uva_done_fn fn) {
  h->outer = NULL;
  for (size_t i = 0; i < h->n; i++) {
    uva_future_t *c = slots[i].child;
    if (c && c->state == UVA__PENDING) {
      slots[i].child = NULL;
      h->left--;
      uva_future_off_done(c, fn, &slots[i]);
    }
  }
}

/* ------------------------------------------------------------- results */

void uva_results_free(uva_results_t *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++)
    if (r->item[i].value && r->item[i].free_fn) r->item[i].free_fn(r->item[i].value);
  uva__free(r);
}

/* -------------------------------------------------------------- gather */

typedef struct gather gather_t;

typedef struct gather_hub {
  hub_t h;             /* h.outer is the gather_t */
  uva_results_t *res;  /* ours until handed to the outer future */
  int flags;
  bool cancel_requested;
  slot_t slot[];
} gather_hub_t;

struct gather {
  uva_future_t base;
  gather_hub_t *hub;
};

static void gather_complete(gather_hub_t *h, int status) {
  uva_results_t *res = h->res;
  h->res = NULL;
  /* Cancelled after some children had produced values: those operations
   * happened (an item taken from a queue, a response read), and dropping
   * them would lose data. Their results win, as wait_for's do: the gather
   * succeeds, and the children it cancelled read UV_ECANCELED. */
  if (status == UV_ECANCELED && h->cancel_requested)
    for (size_t i = 0; i < res->n; i++)
      if (res->item[i].value) {
        status = 0;
        break;
      }
  if (status >= 0) {
    uva__future_complete(h->h.outer, status, res, results_free_fn);
  } else {
    uva_results_free(res); /* values collected so far go with it */
    uva__future_complete(h->h.outer, status, NULL, NULL);
  }
}

static void gather_child_done(uva_future_t *child, void *data) {
  slot_t *s = data;
  gather_hub_t *h = s->hub;
  if (child->loop && child->loop->debug) uva__debug_retrieved(child); /* as asyncio's gather */
  if (!hub_child_ran(&h->h, s)) return;
  /* Failed already: the child's value is freed when its last ref goes. */
  if (h->h.outer->state != UVA__PENDING) return;
  int st = child->status;
  if (st < 0 && !(h->flags & UVA_RETURN_EXCEPTIONS) && !h->cancel_requested) {
    gather_complete(h, st);
    return;
  }
  uva_outcome_t *o = &h->res->item[s - h->slot];
  o->status = st;
  o->free_fn = child->free_fn;
  o->value = uva_future_take(child);
  if (h->h.left == 0) gather_complete(h, h->cancel_requested ? UV_ECANCELED : 0);
}

static int gather_cancel(uva_future_t *f) {
  gather_hub_t *h = ((gather_t *)f)->hub;
  int any = 0;
  /* A child done already whose callback has not run yet is an item (a
   * lock, a permit) we hold but have not collected: give it back, as an
   * asyncio child task cancelled before it resumed would never take it. */
  for (size_t i = 0; i < h->h.n; i++) {
    uva_future_t *c = h->slot[i].child;
    if (c && (uva_cancel(c) || uva__reclaim(c))) any = 1;
  }
  /* Like asyncio: if no child took the request, the results stand. */
  if (any) h->cancel_requested = true;
  return any;
}

static void gather_destroy(uva_future_t *f) {
  gather_hub_t *h = ((gather_t *)f)->hub;
  if (h == NULL) return;
  hub_orphan(&h->h, h->slot, gather_child_done);
  uva_results_free(h->res);
  h->res = NULL;
  if (h->h.left == 0) uva__free(h);
}

static const uva__fops_t gather_fops = {"gather", gather_cancel, gather_destroy,
                                        sizeof(gather_t), NULL};

uva_future_t *uva_gather(uva_future_t *const *fs, size_t n, int flags) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) {
    release_all(fs, n);
    return uva__noloop();
  }
  if ((fs == NULL && n > 0) || (flags & ~UVA_RETURN_EXCEPTIONS)) {
    release_all(fs, n);
    return failed_future(loop, UV_EINVAL);
  }
  size_t res_size = array_size(sizeof(uva_results_t), n, sizeof(uva_outcome_t));
  size_t hub_size = array_size(sizeof(gather_hub_t), n, sizeof(slot_t));
  gather_t *g = NULL;
  uva_results_t *res = NULL;
  gather_hub_t *h = NULL;
  uva__cb_t *chain = NULL;
  size_t nchild = n ? count_nonnull(fs, n) : 0;
  if (res_size == 0 || hub_size == 0) goto fail;
  if ((g = (gather_t *)uva__future_alloc(loop, &gather_fops)) == NULL) goto fail;
  g->hub = NULL;
  if ((res = uva__calloc(1, res_size)) == NULL) goto fail;
  res->n = n;
  if (n == 0) {
    uva__future_complete(&g->base, 0, res, results_free_fn);
    return &g->base;
  }
  if ((h = uva__malloc(hub_size)) == NULL) goto fail;
  if (cbs_reserve(loop, nchild, &chain) != 0) goto fail;

  h->h.outer = &g->base;
  h->res = res;
  h->h.n = n;
  h->h.left = 0;
  h->flags = flags;
  h->cancel_requested = false;
  g->hub = h;
  int first_err = 0;
  for (size_t i = 0; i < n; i++) {
    slot_t *s = &h->slot[i];
    s->hub = h;
    s->child = fs[i];
    if (fs[i] == NULL) { /* rule 4: an allocation that failed upstream */
      res->item[i].status = UV_ENOMEM;
      if (first_err == 0) first_err = UV_ENOMEM;
      continue;
    }
    h->h.left++;
    cb_register(&chain, fs[i], gather_child_done, s);
    uva_release(fs[i]); /* the registration holds it from now on */
  }
  if (first_err && !(flags & UVA_RETURN_EXCEPTIONS))
    gather_complete(h, first_err);
  else if (h->h.left == 0)
    gather_complete(h, 0);
  return &g->base;

fail:
  uva__free(h);
  uva__free(res);
  if (g) uva_release(&g->base);
  release_all(fs, n);
  return NULL;
}

/* ---------------------------------------------------------------- wait */

typedef struct wait_fut wait_fut_t;

typedef struct wait_hub {
  hub_t h;            /* h.outer is the wait_fut_t */
  size_t ndone;       /* callbacks run while the wait was pending */
  int return_when;
  slot_t slot[];
} wait_hub_t;

struct wait_fut {
  uva_future_t base;
  wait_hub_t *hub;
  uva__timer_t timer;
};

static void wait_child_done(uva_future_t *child, void *data);

/* Complete the wait: count what is done now, unhook what is not. */
static void wait_finish(wait_fut_t *w, int cancelled) {
  wait_hub_t *h = w->hub;
  uva__timer_stop(w->base.loop, &w->timer);
  size_t done = h->ndone;
  for (size_t i = 0; i < h->h.n; i++) {
    uva_future_t *c = h->slot[i].child;
    if (c == NULL) continue;
    if (c->state == UVA__DONE) {
      done++; /* its callback is queued; it will find the wait done */
    } else {
      h->slot[i].child = NULL;
      h->h.left--;
      uva_future_off_done(c, wait_child_done, &h->slot[i]);
    }
  }
  int st = cancelled ? UV_ECANCELED : done > INT_MAX ? INT_MAX : (int)done;
  uva__future_complete(&w->base, st, NULL, NULL);
}

static void wait_child_done(uva_future_t *child, void *data) {
  slot_t *s = data;
  wait_hub_t *h = s->hub;
  if (!hub_child_ran(&h->h, s)) return;
  wait_fut_t *w = (wait_fut_t *)h->h.outer;
  if (w->base.state != UVA__PENDING) return;
  h->ndone++;
  int st = child->status;
  /* asyncio: a cancelled future is not an exception for FIRST_EXCEPTION. */
  if (h->ndone == h->h.n || h->return_when == UVA_FIRST_COMPLETED ||
      (h->return_when == UVA_FIRST_EXCEPTION && st < 0 && st != UV_ECANCELED))
    wait_finish(w, 0);
}

static void wait_fire(uva__timer_t *t) {
  wait_fut_t *w = UVA_CONTAINER_OF(t, wait_fut_t, timer);
  if (w->base.state == UVA__PENDING) wait_finish(w, 0);
}

static int wait_cancel(uva_future_t *f) {
  wait_finish((wait_fut_t *)f, 1);
  return 1;
}

static void wait_destroy(uva_future_t *f) {
  wait_fut_t *w = (wait_fut_t *)f;
  wait_hub_t *h = w->hub;
  uva__timer_stop(f->loop, &w->timer);
  if (h == NULL) return;
  hub_orphan(&h->h, h->slot, wait_child_done);
  if (h->h.left == 0) uva__free(h);
}

static const uva__fops_t wait_fops = {"wait", wait_cancel, wait_destroy,
                                      sizeof(wait_fut_t), NULL};

uva_future_t *uva_wait(uva_future_t *const *fs, size_t n, int return_when,
                       int64_t timeout_ms) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  /* asyncio.wait raises ValueError for an empty set. */
  bool bad = fs == NULL || n == 0 ||
             (return_when != UVA_FIRST_COMPLETED && return_when != UVA_FIRST_EXCEPTION &&
              return_when != UVA_ALL_COMPLETED);
  for (size_t i = 0; !bad && i < n; i++) bad = fs[i] == NULL;
  if (bad) return failed_future(loop, UV_EINVAL);

  size_t hub_size = array_size(sizeof(wait_hub_t), n, sizeof(slot_t));
  if (hub_size == 0) return NULL;
  wait_fut_t *w = (wait_fut_t *)uva__future_alloc(loop, &wait_fops);
  if (w == NULL) return NULL;
  w->hub = NULL;
  w->timer.index = SIZE_MAX;
  w->timer.fire = wait_fire;
  wait_hub_t *h = uva__malloc(hub_size);
  uva__cb_t *chain = NULL;
  if (h == NULL || cbs_reserve(loop, n, &chain) != 0 ||
      (timeout_ms >= 0 &&
       uva__timer_start(loop, &w->timer, uva__deadline((uint64_t)timeout_ms)) != 0)) {
    cbs_unreserve(loop, chain);
    uva__free(h);
    uva_release(&w->base);
    return NULL;
  }
  h->h.outer = &w->base;
  h->h.n = n;
  h->h.left = n;
  h->ndone = 0;
  h->return_when = return_when;
  w->hub = h;
  for (size_t i = 0; i < n; i++) {
    h->slot[i].hub = h;
    h->slot[i].child = fs[i];
    cb_register(&chain, fs[i], wait_child_done, &h->slot[i]);
  }
  return &w->base;
}

/* ------------------------------------------------------------ wait_for */

typedef struct wait_for {
  uva_future_t base;
  uva_future_t *child; /* while our callback on it has not run */
  uva__timer_t timer;
  bool timed_out, cancelled;
} wait_for_t;

static void wait_for_child_done(uva_future_t *child, void *data) {
  wait_for_t *w = data;
  if (child->loop && child->loop->debug) uva__debug_retrieved(child);
  w->child = NULL;
  uva__timer_stop(w->base.loop, &w->timer);
  if (w->base.state != UVA__PENDING) return;
  int st = child->status;
  /* A result that arrived while f was being cancelled wins; a cancel we
   * asked for because of the deadline is the timeout; one from outside
   * stays a cancel. */
  if (st == UV_ECANCELED && w->timed_out && !w->cancelled) st = UV_ETIMEDOUT;
  if (st >= 0)
    uva__future_complete(&w->base, st, uva_future_take(child), child->free_fn);
  else
    uva__future_complete(&w->base, st, NULL, NULL);
}

static void wait_for_fire(uva__timer_t *t) {
  wait_for_t *w = UVA_CONTAINER_OF(t, wait_for_t, timer);
  if (w->child == NULL || w->child->state != UVA__PENDING) return;
  w->timed_out = true;
  uva_cancel(w->child);
}

static int wait_for_cancel(uva_future_t *f) {
  wait_for_t *w = (wait_for_t *)f;
  /* A child done already but not seen by us yet gives a hand-off back. */
  if (w->child == NULL || !(uva_cancel(w->child) || uva__reclaim(w->child)))
    return 0; /* outcome decided */
  w->cancelled = true;
  uva__timer_stop(f->loop, &w->timer);
  return 1;
}

static void wait_for_destroy(uva_future_t *f) {
  wait_for_t *w = (wait_for_t *)f;
  uva__timer_stop(f->loop, &w->timer);
  uva_future_t *c = w->child;
  w->child = NULL;
  if (c) uva_future_off_done(c, wait_for_child_done, w);
}

static const uva__fops_t wait_for_fops = {"wait_for", wait_for_cancel, wait_for_destroy,
                                          sizeof(wait_for_t), NULL};

uva_future_t *uva_wait_for(uva_future_t *f, int64_t timeout_ms) {
  if (f == NULL) return NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) {
    uva_release(f);
    return uva__noloop();
  }
  wait_for_t *w = (wait_for_t *)uva__future_alloc(loop, &wait_for_fops);
  if (w == NULL) {
    uva_release(f);
    return NULL;
  }
  w->child = NULL;
  w->timer.index = SIZE_MAX;
  w->timer.fire = wait_for_fire;
  w->timed_out = w->cancelled = false;
  if (uva_future_on_done(f, wait_for_child_done, w) != 0) {
    uva_release(&w->base);
    uva_release(f);
    return NULL;
  }
  w->child = f;
  /* A future done already wins even over a zero timeout. A zero timeout
   * cancels a pending one now, as asyncio does: a task that has not
   * started never runs, and the result is UV_ETIMEDOUT. */
  if (timeout_ms == 0 && f->state == UVA__PENDING) {
    w->timed_out = true;
    uva_cancel(f);
  } else if (timeout_ms > 0 && f->state == UVA__PENDING &&
      uva__timer_start(loop, &w->timer, uva__deadline((uint64_t)timeout_ms)) != 0) {
    uva_release(&w->base); /* unhooks f */
    uva_release(f);
    return NULL;
  }
  uva_release(f); /* the registration holds it */
  return &w->base;
}

/* -------------------------------------------------------------- shield */

typedef struct shield {
  uva_future_t base;
  uva_future_t *child; /* while our callback on it has not run */
} shield_t;

static void shield_child_done(uva_future_t *child, void *data) {
  shield_t *s = data;
  if (child->loop && child->loop->debug) uva__debug_retrieved(child); /* as asyncio's shield */
  s->child = NULL;
  if (s->base.state != UVA__PENDING) return; /* cancelled: the value goes with f */
  int st = child->status;
  if (st >= 0)
    uva__future_complete(&s->base, st, uva_future_take(child), child->free_fn);
  else
    uva__future_complete(&s->base, st, NULL, NULL);
}

static void shield_destroy(uva_future_t *f) {
  shield_t *s = (shield_t *)f;
  uva_future_t *c = s->child;
  s->child = NULL;
  /* A task runs on regardless; a plain future nobody else holds is freed. */
  if (c) uva_future_off_done(c, shield_child_done, s);
}

/* Cancelling the outer completes it now and leaves f alone. Not once f is
 * done: its callback, queued already, hands its outcome over, as wait_for
 * does. Completing cancelled then would free f's result with f: a queue
 * item f took, consumed and lost, behind a "cancelled". */
static int shield_cancel(uva_future_t *f) {
  shield_t *s = (shield_t *)f;
  if (s->child && s->child->state != UVA__PENDING) return 0; /* outcome decided */
  return uva__future_cancel_now(f);
}

static const uva__fops_t shield_fops = {"shield", shield_cancel, shield_destroy,
                                        sizeof(shield_t), NULL};

uva_future_t *uva_shield(uva_future_t *f) {
  if (f == NULL) return NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) {
    uva_release(f);
    return uva__noloop();
  }
  shield_t *s = (shield_t *)uva__future_alloc(loop, &shield_fops);
  if (s == NULL) {
    uva_release(f);
    return NULL;
  }
  s->child = NULL;
  if (uva_future_on_done(f, shield_child_done, s) != 0) {
    uva_release(&s->base);
    uva_release(f);
    return NULL;
  }
  s->child = f;
  uva_release(f);
  return &s->base;
}

/* -------------------------------------------------------- as_completed */

/* Each of the n items is handed out exactly once, as a future, as
 * UV_ENOMEM (a NULL given in) or as UV_ETIMEDOUT; UV_EOF after that. */
struct uva_as_completed {
  uva_loop_t *loop;
  size_t n;
  size_t left;        /* registered callbacks that have not run */
  size_t unresolved;  /* children neither done nor timed out */
  size_t timed_out;   /* UV_ETIMEDOUT items not handed out yet */
  uva_future_t **q;   /* done, not handed out (our refs; NULL: ENOMEM) */
  size_t qhead, qtail;
  uva__link_t waiters; /* futures from next(), first come first served */
  uva__timer_t timer;
  bool freed;
  slot_t slot[];       /* slot.child is our ref while unresolved */
};

static void ac_waiter_destroy(uva_future_t *f) { uva__list_unlink(&f->link); }
static int ac_waiter_cancel(uva_future_t *f) {
  uva__list_unlink(&f->link); /* leaves the line without taking an item */
  return uva__future_cancel_now(f);
}
static const uva__fops_t ac_waiter_fops = {"as_completed", ac_waiter_cancel,
                                           ac_waiter_destroy, sizeof(uva_future_t), NULL};

/* Hand out what can be handed out to the waiters in line. */
static void ac_serve(uva_as_completed_t *it) {
  uva__link_t *l;
  while (!uva__list_empty(&it->waiters)) {
    int st;
    uva_future_t *c = NULL;
    if (it->qhead < it->qtail) {
      c = it->q[it->qhead++];
      st = c ? 0 : UV_ENOMEM;
    } else if (it->unresolved) {
      return;
    } else if (it->timed_out) {
      it->timed_out--;
      st = UV_ETIMEDOUT;
    } else {
      st = UV_EOF;
    }
    l = uva__list_shift(&it->waiters);
    uva_future_t *w = UVA_CONTAINER_OF(l, uva_future_t, link);
    uva__future_complete(w, st, c, c ? release_fn : NULL);
  }
}

static void ac_child_done(uva_future_t *child, void *data) {
  slot_t *s = data;
  uva_as_completed_t *it = s->hub;
  it->left--;
  if (it->freed) {
    if (it->left == 0) uva__free(it);
    return;
  }
  if (s->child == NULL) return; /* queued by the timeout already */
  s->child = NULL;
  it->q[it->qtail++] = child; /* our reference moves with it */
  if (--it->unresolved == 0) uva__timer_stop(it->loop, &it->timer);
  ac_serve(it);
}

static void ac_fire(uva__timer_t *t) {
  uva_as_completed_t *it = UVA_CONTAINER_OF(t, uva_as_completed_t, timer);
  for (size_t i = 0; i < it->n; i++) {
    slot_t *s = &it->slot[i];
    uva_future_t *c = s->child;
    if (c == NULL) continue;
    s->child = NULL;
    it->unresolved--;
    if (c->state == UVA__DONE) {
      it->q[it->qtail++] = c; /* done in time; its queued callback is ignored */
    } else {
      it->left--;
      uva_future_off_done(c, ac_child_done, s);
      uva_release(c); /* not cancelled, as in asyncio */
      it->timed_out++;
    }
  }
  ac_serve(it);
}

uva_as_completed_t *uva_as_completed(uva_future_t *const *fs, size_t n,
                                     int64_t timeout_ms) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL || (fs == NULL && n > 0)) {
    release_all(fs, n);
    return NULL;
  }
  size_t size = array_size(sizeof(uva_as_completed_t), n,
                           sizeof(slot_t) + sizeof(uva_future_t *));
  size_t nchild = n ? count_nonnull(fs, n) : 0;
  uva_as_completed_t *it = size ? uva__malloc(size) : NULL;
  uva__cb_t *chain = NULL;
  if (it) {
    it->timer.index = SIZE_MAX;
    it->timer.fire = ac_fire;
  }
  if (it == NULL || cbs_reserve(loop, nchild, &chain) != 0 ||
      (timeout_ms >= 0 && nchild > 0 &&
       uva__timer_start(loop, &it->timer, uva__deadline((uint64_t)timeout_ms)) != 0)) {
    cbs_unreserve(loop, chain);
    uva__free(it);
    release_all(fs, n);
    return NULL;
  }
  it->loop = loop;
  it->n = n;
  it->left = it->unresolved = nchild;
  it->timed_out = 0;
  it->q = (uva_future_t **)(void *)&it->slot[n];
  it->qhead = it->qtail = 0;
  uva__list_init(&it->waiters);
  it->freed = false;
  for (size_t i = 0; i < n; i++) {
    it->slot[i].hub = it;
    it->slot[i].child = fs[i];
    if (fs[i] == NULL)
      it->q[it->qtail++] = NULL;
    else
      cb_register(&chain, fs[i], ac_child_done, &it->slot[i]);
  }
  return it;
}

uva_future_t *uva_as_completed_next(uva_as_completed_t *it) {
  if (it == NULL || it->freed) return NULL;
  uva_future_t *w = uva__future_alloc(it->loop, &ac_waiter_fops);
  if (w == NULL) return NULL;
  uva__list_push(&it->waiters, &w->link);
  ac_serve(it);
  return w;
}

void uva_as_completed_free(uva_as_completed_t *it) {
  if (it == NULL) return;
  uva__timer_stop(it->loop, &it->timer);
  uva__link_t *l;
  while ((l = uva__list_shift(&it->waiters)) != NULL)
    uva__future_complete(UVA_CONTAINER_OF(l, uva_future_t, link), UVA_ECLOSED, NULL, NULL);
  while (it->qhead < it->qtail) uva_release(it->q[it->qhead++]);
  for (size_t i = 0; i < it->n; i++) {
    uva_future_t *c = it->slot[i].child;
    if (c == NULL) continue;
    it->slot[i].child = NULL;
    if (c->state == UVA__PENDING) {
      it->left--;
      uva_future_off_done(c, ac_child_done, &it->slot[i]);
    }
    uva_release(c);
  }
  it->freed = true;
  if (it->left == 0) uva__free(it);
}

/* ------------------------------------------------------------ timeouts */

/* A scope's heap entry lives off the task's stack, in a node the loop
 * owns: a task that returns with a scope still entered leaves its frames
 * dead (and about to be reused), so nothing of the heap may point there.
 * The node points back at the user's struct only while the scope is
 * entered in a live task. */
struct uva__scope {
  uva__timer_t timer;
  uva_timeout_t *user;
  uva__task_t *task;
  struct uva__scope *outer; /* the task's next enclosing scope */
};

enum {
  TO_IDLE = 0,  /* never entered (or enter failed) */
  TO_ENTERED,
  TO_EXPIRING,  /* deadline passed, scope still active */
  TO_EXPIRED,
  TO_EXITED,
  TO_STATE = 0xff,
  TO_PENDING_AT_ENTER = 0x100 /* an undelivered cancel predates the scope */
};

static int to_state(const uva_timeout_t *t) { return t->state_ & TO_STATE; }

static void timeout_fire(uva__timer_t *tm) {
  uva__scope_t *n = UVA_CONTAINER_OF(tm, uva__scope_t, timer);
  n->user->state_ = (n->user->state_ & ~TO_STATE) | TO_EXPIRING;
  uva__task_cancel(n->task);
}

/* Arm the scope for an absolute deadline (UINT64_MAX: none). One that
 * has passed already expires now, as asyncio's timeout(0) does with
 * call_soon: the task's next await that suspends gets the cancel, ahead of
 * anything it waits for (a sleep(0) inside timeout(0) times out). */
static int timeout_arm_at(uva__scope_t *n, uint64_t deadline) {
  uva_loop_t *loop = n->task->base.loop;
  if (deadline == UINT64_MAX) {
    uva__timer_stop(loop, &n->timer);
    n->user->deadline = UINT64_MAX;
    return 0;
  }
  if (deadline <= uv_hrtime() / 1000000u) {
    uva__timer_stop(loop, &n->timer);
    n->user->deadline = deadline;
    timeout_fire(&n->timer);
    return 0;
  }
  int rc = uva__timer_start(loop, &n->timer, deadline);
  if (rc == 0) n->user->deadline = deadline;
  return rc;
}

static uint64_t deadline_in(int64_t ms) {
  if (ms < 0) return UINT64_MAX;
  return ms == 0 ? 0 : uva__deadline((uint64_t)ms);
}

/* Unlink n from its task's scope stack and free it. */
static void scope_drop(uva__scope_t *n) {
  uva__timer_stop(n->task->base.loop, &n->timer);
  for (uva__scope_t **pp = &n->task->timeouts; *pp; pp = &(*pp)->outer) {
    if (*pp == n) {
      *pp = n->outer;
      break;
    }
  }
  uva__free(n);
}

void uva__scopes_abandon(uva__task_t *task) {
  while (task->timeouts) scope_drop(task->timeouts);
}

/* Enter a scope, then arm it (a deadline passed already fires into the
 * entered scope). */
static int timeout_enter_at(uva_timeout_t *t, uint64_t deadline) {
  if (t == NULL) return UV_EINVAL;
  uva__task_t *task = uva__task_current();
  for (uva__scope_t *o = task ? task->timeouts : NULL; o; o = o->outer)
    if (o->user == t) return UV_EINVAL; /* active already */
  t->state_ = TO_IDLE;
  t->node_ = NULL;
  t->deadline = UINT64_MAX;
  if (task == NULL) return UVA_ENOTASK;
  uva__scope_t *n = uva__malloc(sizeof *n);
  if (n == NULL) return UV_ENOMEM;
  n->timer.index = SIZE_MAX;
  n->timer.fire = timeout_fire;
  n->user = t;
  n->task = task;
  t->cancels_before_ = task->cancel_requests;
  t->state_ = TO_ENTERED | (task->cancel_pending ? TO_PENDING_AT_ENTER : 0);
  t->node_ = n;
  n->outer = task->timeouts;
  task->timeouts = n;
  int rc = timeout_arm_at(n, deadline);
  if (rc != 0) { /* UV_ENOMEM: the scope is not entered */
    task->timeouts = n->outer;
    uva__free(n);
    t->state_ = TO_IDLE;
    t->node_ = NULL;
  }
  return rc;
}

int uva_timeout_enter(uva_timeout_t *t, int64_t ms) { return timeout_enter_at(t, deadline_in(ms)); }

int uva_timeout_enter_at(uva_timeout_t *t, uint64_t deadline) {
  return timeout_enter_at(t, deadline);
}

int uva_timeout_reschedule(uva_timeout_t *t, int64_t ms) {
  if (t == NULL || to_state(t) != TO_ENTERED) return UV_EINVAL;
  return timeout_arm_at(t->node_, deadline_in(ms));
}

int uva_timeout_reschedule_at(uva_timeout_t *t, uint64_t deadline) {
  if (t == NULL || to_state(t) != TO_ENTERED) return UV_EINVAL;
  return timeout_arm_at(t->node_, deadline);
}

int uva_timeout_expired(const uva_timeout_t *t) {
  return t && (to_state(t) == TO_EXPIRING || to_state(t) == TO_EXPIRED);
}

int uva_timeout_exit(uva_timeout_t *t, int rc) {
  if (t == NULL) return rc;
  int st = to_state(t);
  if (st != TO_ENTERED && st != TO_EXPIRING) return rc;
  uva__scope_t *n = t->node_;
  uva__task_t *task = n->task;
  scope_drop(n);
  t->node_ = NULL;
  if (st == TO_ENTERED) {
    t->state_ = TO_EXITED;
    return rc;
  }
  bool pending_before = t->state_ & TO_PENDING_AT_ENTER;
  t->state_ = TO_EXPIRED;
  if (task->cancel_requests > 0) task->cancel_requests--; /* asyncio uncancel() */
  if (task->cancel_late > task->cancel_requests) task->cancel_late = task->cancel_requests;
  if (task->cancel_requests <= t->cancels_before_) {
    /* No other cancel since enter: ours. If the block never saw it (it
     * finished first), withdraw it rather than hit the next await; one
     * pending since before the scope stays (late, if it was). */
    if (!pending_before) {
      task->cancel_pending = 0;
      task->cancel_late = 0;
    }
    if (rc == UV_ECANCELED) rc = UV_ETIMEDOUT;
  }
  return rc;
}

/* --------------------------------------------------------------- group */

/* The group is a future too: join awaits it, and cancelling that await
 * (the joining task being cancelled) is a request to cancel the tasks. It
 * completes once the last task has ended during a join. */
struct uva_group {
  uva_future_t base;
  uva__link_t tasks;  /* group_node_t of unfinished tasks */
  size_t count;
  int first_error;
  bool aborting, joining, join_cancelled, orphan;
  uva__task_t *parent; /* the task that made the group (a reference), or NULL */
  bool parent_cancelled; /* uva_group_cancel cancelled it; join withdraws that */
};

typedef struct group_node {
  uva__link_t link;
  uva_future_t *task; /* held by our registration on it */
  uva_group_t *g;
} group_node_t;

static void group_abort(uva_group_t *g) {
  g->aborting = true;
  for (uva__link_t *l = g->tasks.next; l != &g->tasks; l = l->next)
    uva_cancel(UVA_CONTAINER_OF(l, group_node_t, link)->task);
}

static void group_child_done(uva_future_t *task, void *data) {
  group_node_t *node = data;
  uva_group_t *g = node->g;
  if (task->loop->debug) uva__debug_retrieved(task);
  uva__list_unlink(&node->link);
  uva__free(node);
  g->count--;
  int st = task->status;
  if (st < 0 && st != UV_ECANCELED) {
    if (g->first_error == 0) g->first_error = st;
    if (!g->aborting) group_abort(g);
  }
  if (g->count == 0) {
    if (g->joining && g->base.state == UVA__PENDING)
      uva__future_complete(&g->base, g->join_cancelled ? UV_ECANCELED : g->first_error,
                           NULL, NULL);
    if (g->orphan) uva_release(&g->base);
  }
}

static int group_cancel(uva_future_t *f) {
  uva_group_t *g = (uva_group_t *)f;
  g->join_cancelled = true;
  group_abort(g);
  return 1;
}

static void group_destroy(uva_future_t *f) {
  uva_group_t *g = (uva_group_t *)f;
  if (g->parent) uva_release(&g->parent->base);
  g->parent = NULL;
}

static const uva__fops_t group_fops = {"group", group_cancel, group_destroy,
                                       sizeof(uva_group_t), NULL};

uva_group_t *uva_group_new(void) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_group_t *g = (uva_group_t *)uva__future_alloc(loop, &group_fops);
  if (g == NULL) return NULL;
  uva__list_init(&g->tasks);
  g->count = 0;
  g->first_error = 0;
  g->aborting = g->joining = g->join_cancelled = g->orphan = false;
  g->parent = uva__task_current();
  if (g->parent) uva_ref(&g->parent->base);
  g->parent_cancelled = false;
  return g;
}

void uva_group_cancel(uva_group_t *g) {
  if (g == NULL) return;
  if (!g->aborting) group_abort(g);
  /* asyncio 3.14's TaskGroup.cancel(): the body is cancelled too, so it
   * stops where it waits; join takes that request back and reports no
   * cancel. Not while the body is already in join. */
  if (g->parent && !g->joining && !g->parent_cancelled &&
      uva__task_cancel(g->parent))
    g->parent_cancelled = true;
}

int (uva_group_spawn)(uva_group_t *g, uva_task_fn fn, void *arg, uva_future_t **task_out) {
  return uva_group_spawn_at(g, fn, arg, task_out, NULL, 0);
}

int uva_group_spawn_at(uva_group_t *g, uva_task_fn fn, void *arg, uva_future_t **task_out,
                       const char *file, int line) {
  if (task_out) *task_out = NULL;
  if (g == NULL || fn == NULL) return UV_EINVAL;
  /* asyncio: no new tasks once shutting down, or once a join found none. */
  if (g->aborting || g->orphan || g->base.state != UVA__PENDING ||
      (g->joining && g->count == 0))
    return UVA_ECLOSED;
  uva_loop_t *loop = g->base.loop;
  group_node_t *node = uva__malloc(sizeof *node);
  uva__cb_t *cb = node ? uva__cb_alloc(loop) : NULL;
  uva_future_t *f = cb ? uva_spawn_named_at(NULL, fn, arg, file, line) : NULL;
  int rc = UV_ENOMEM;
  if (f && !uva_is_task(f)) { /* the loop is closing */
    rc = f->status;
    uva_release(f);
    f = NULL;
  }
  if (f == NULL) {
    if (cb) cbs_unreserve(loop, cb);
    uva__free(node);
    return rc;
  }
  node->task = f;
  node->g = g;
  uva__list_push(&g->tasks, &node->link);
  g->count++;
  cb->next = NULL;
  cb_register(&cb, f, group_child_done, node);
  if (task_out)
    *task_out = f;
  else
    uva_release(f);
  return 0;
}

int uva_group_join(uva_group_t *g) {
  if (g == NULL) return UV_EINVAL;
  uva__task_t *t = uva__task_current();
  if (t && t->base.loop != g->base.loop) return UV_EINVAL;
  if (t == NULL) {
    g->orphan = true;
    group_abort(g);
    if (g->count == 0) uva_release(&g->base);
    return UVA_ENOTASK;
  }
  g->joining = true;
  /* The body's own cancel from uva_group_cancel is the group's doing, not
   * a cancel of the body: withdraw it (uncancel), so that only cancels
   * from elsewhere reach the join. */
  if (g->parent_cancelled && t == g->parent) {
    g->parent_cancelled = false;
    uva_task_uncancel(&t->base);
  }
  /* One await normally. A cancel pending at entry is delivered by the
   * await without suspending (it reaches group_cancel first): wait again. */
  while (g->count > 0 && g->base.state == UVA__PENDING) uva_await(uva_ref(&g->base), NULL);
  int rc = g->join_cancelled ? UV_ECANCELED : g->first_error;
  uva_release(&g->base);
  return rc;
}
