/* Sync objects: Lock, Event, Condition, Semaphore, Barrier.
 *
 * A waiter is a small future standing in its object's line through its own
 * `link`. The line holds no reference: a waiter whose last reference goes
 * leaves the line in destroy(). Serving a waiter unlinks it and completes it
 * in one step, so the lock / permit / wake-up is handed over atomically and
 * a waiter cancelled before being served simply leaves. Lock and Semaphore
 * hand off directly to the next waiter
 * rather than waking it to retry, so nobody can barge in between.
 *
 * A Condition waiter is one future that first stands in the condition's
 * line and, once notified (or cancelled), moves into the lock's line: the
 * lock serving it is what completes it, so it always ends holding the lock.
 *
 * Cancelled after being served but before its task resumed (the grant and
 * the cancel in the same loop turn), a waiter gives back what it got: the
 * task layer calls the kind's reclaim, the lock or permit goes to the next
 * waiter, a condition's wake-up to the next condition waiter, and the
 * await reports UV_ECANCELED. That is asyncio's outcome (a woken waiter
 * only takes the lock when it runs), reached with direct hand-off. Served
 * waiters stay on their object's `handed` line until then. */
#include "internal.h"

#include <limits.h>

#define W(f) ((uva__small_future_t *)(f))
#define LINK_FUTURE(l) UVA_CONTAINER_OF((l), uva_future_t, link)

static uva_future_t *waiter_new(uva_loop_t *loop, const uva__fops_t *ops,
                                uva__link_t *line, void *owner) {
  uva_future_t *f = uva__future_alloc(loop, ops);
  if (f == NULL) return NULL;
  W(f)->owner = owner;
  uva__list_push(line, &f->link);
  return f;
}

/* Serve the first waiter of a line; NULL if the line is empty. */
static uva_future_t *serve_first(uva__link_t *line, int status) {
  uva__link_t *l = uva__list_shift(line);
  if (l == NULL) return NULL;
  uva_future_t *f = LINK_FUTURE(l);
  uva__future_complete(f, status, NULL, NULL);
  return f;
}

static void fail_all(uva__link_t *line, int status) {
  while (serve_first(line, status)) {
  }
}

/* A waiter given a lock or a permit stays on its object's `handed` line
 * until its future goes (destroy unlinks it): if its task is cancelled
 * before it resumes, reclaim can still give the grant back. */
static void handed_push(uva__link_t *handed, uva_future_t *f) {
  uva__list_push(handed, &f->link);
}

/* The object is going: its served waiters can no longer give anything
 * back to it. */
static void handed_detach(uva__link_t *handed) {
  uva__link_t *l;
  while ((l = uva__list_shift(handed)) != NULL) W(LINK_FUTURE(l))->owner = NULL;
}

/* Take f off its handed line; its owner, or NULL if it has none (any
 * more). */
static void *handed_take(uva_future_t *f) {
  void *owner = W(f)->owner;
  uva__list_unlink(&f->link);
  W(f)->owner = NULL;
  return owner;
}

static int lock_reclaim(uva_future_t *f);
static int sem_reclaim(uva_future_t *f);

/* Plain waiters: leaving the line is all a cancel or a drop needs. */
static const uva__fops_t lock_fops = {"lock", uva__waiter_cancel, uva__waiter_destroy,
                                      sizeof(uva__small_future_t), lock_reclaim};
static const uva__fops_t event_fops = {"event", uva__waiter_cancel, uva__waiter_destroy,
                                       sizeof(uva__small_future_t), NULL};
static const uva__fops_t sem_fops = {"semaphore", uva__waiter_cancel, uva__waiter_destroy,
                                     sizeof(uva__small_future_t), sem_reclaim};

/* ------------------------------------------------------------------ lock */

struct uva_lock {
  uva_loop_t *loop;
  bool locked;
  uva__link_t waiters; /* non-empty only while locked */
  uva__link_t handed;  /* the waiter given the lock, until its task resumes */
};

static void lock_grant(uva_lock_t *l, uva_future_t *f);

uva_lock_t *uva_lock_new(void) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_lock_t *l = uva__calloc(1, sizeof *l);
  if (l == NULL) return NULL;
  l->loop = loop;
  uva__list_init(&l->waiters);
  uva__list_init(&l->handed);
  return l;
}

void uva_lock_free(uva_lock_t *l) {
  if (l == NULL) return;
  fail_all(&l->waiters, UVA_ECLOSED);
  handed_detach(&l->handed);
  uva__free(l);
}

uva_future_t *uva_lock_acquire(uva_lock_t *l) {
  if (l == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (!l->locked) {
    uva_future_t *f = uva__future_done(l->loop, 0);
    if (f) l->locked = true;
    return f;
  }
  return waiter_new(l->loop, &lock_fops, &l->waiters, l);
}

int uva_lock_release(uva_lock_t *l) {
  if (l == NULL || !l->locked) return UVA_ENOTLOCKED;
  /* Whoever was given the lock has had it: no grant to give back now. */
  handed_detach(&l->handed);
  uva__link_t *next = uva__list_shift(&l->waiters);
  if (next)
    lock_grant(l, LINK_FUTURE(next)); /* stays locked: ownership moves */
  else
    l->locked = false;
  return 0;
}

int uva_lock_locked(const uva_lock_t *l) { return l && l->locked; }

/* ----------------------------------------------------------------- event */

struct uva_event {
  uva_loop_t *loop;
  bool set;
  uva__link_t waiters;
};

uva_event_t *uva_event_new(void) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_event_t *e = uva__calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->loop = loop;
  uva__list_init(&e->waiters);
  return e;
}

void uva_event_free(uva_event_t *e) {
  if (e == NULL) return;
  fail_all(&e->waiters, UVA_ECLOSED);
  uva__free(e);
}

void uva_event_set(uva_event_t *e) {
  if (e == NULL || e->set) return;
  e->set = true;
  fail_all(&e->waiters, 0);
}

void uva_event_clear(uva_event_t *e) {
  if (e) e->set = false;
}

int uva_event_is_set(const uva_event_t *e) { return e && e->set; }

uva_future_t *uva_event_wait(uva_event_t *e) {
  if (e == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (e->set) return uva__future_done(e->loop, 0);
  return waiter_new(e->loop, &event_fops, &e->waiters, e);
}

/* ------------------------------------------------------------- condition */

struct uva_cond {
  uva_loop_t *loop;
  uva_lock_t *lock;
  bool own_lock;
  uva__link_t waiters; /* waiting for a notify */
};

/* A condition waiter's state lives in its spare `item` field. */
enum { CW_REACQUIRE = 1, CW_NOTIFIED = 2, CW_CANCELLED = 4 };
static inline uintptr_t cw_flags(uva_future_t *f) { return (uintptr_t)W(f)->item; }
static inline void cw_set(uva_future_t *f, uintptr_t bits) {
  W(f)->item = (void *)(cw_flags(f) | bits);
}

static int cond_waiter_cancel(uva_future_t *f);
static int cond_reclaim(uva_future_t *f);
static void cond_pass(uva_cond_t *c);
static const uva__fops_t cond_fops = {"condition", cond_waiter_cancel, uva__waiter_destroy,
                                      sizeof(uva__small_future_t), cond_reclaim};

/* Hand the lock to f (already out of any line). A condition waiter ends
 * here: cancelled or not, it completes only now that it holds the lock. */
static void lock_grant(uva_lock_t *l, uva_future_t *f) {
  l->locked = true;
  if (f->ops != &cond_fops) {
    handed_push(&l->handed, f);
    uva__future_complete(f, 0, NULL, NULL);
    return;
  }
  uintptr_t flags = cw_flags(f);
  uva_cond_t *c = W(f)->owner;
  if (!(flags & CW_CANCELLED)) handed_push(&l->handed, f); /* cond_reclaim */
  uva__future_complete(f, (flags & CW_CANCELLED) ? UV_ECANCELED : 0, NULL, NULL);
  /* Notified, then cancelled: pass the wake-up on rather than lose it. */
  if ((flags & (CW_CANCELLED | CW_NOTIFIED)) == (CW_CANCELLED | CW_NOTIFIED)) cond_pass(c);
}

/* Pass a wake-up on to the next waiter of c (the lock is held). */
static void cond_pass(uva_cond_t *c) {
  uva__link_t *next = uva__list_shift(&c->waiters);
  if (next) {
    uva_future_t *n = LINK_FUTURE(next);
    cw_set(n, CW_REACQUIRE | CW_NOTIFIED);
    uva__list_push(&c->lock->waiters, &n->link); /* locked: it waits its turn */
  }
}

/* A waiter granted the lock was cancelled before its task resumed: the
 * cancel wins and the lock goes on to the next waiter, as in asyncio,
 * where the woken waiter takes the lock only when it runs. */
static int lock_reclaim(uva_future_t *f) {
  uva_lock_t *l = handed_take(f);
  if (l == NULL) return 0;
  uva_lock_release(l);
  return 1;
}

/* A condition waiter woken and given the lock, then cancelled before its
 * task resumed: it ends cancelled, still holding the lock (a cond wait
 * always does), and a wake-up it took from a notify goes to the next
 * waiter (asyncio 3.13 notifies another). */
static int cond_reclaim(uva_future_t *f) {
  uintptr_t flags = cw_flags(f);
  uva_cond_t *c = handed_take(f);
  if (c == NULL) return 0;
  if (flags & CW_NOTIFIED) cond_pass(c);
  return 1;
}

/* Move a condition waiter from the condition's line to the lock's. */
static void cond_reacquire(uva_cond_t *c, uva_future_t *f) {
  uva_lock_t *l = c->lock;
  uva__list_unlink(&f->link);
  cw_set(f, CW_REACQUIRE);
  if (l->locked)
    uva__list_push(&l->waiters, &f->link);
  else
    lock_grant(l, f);
}

static int cond_waiter_cancel(uva_future_t *f) {
  uva_cond_t *c = W(f)->owner;
  cw_set(f, CW_CANCELLED);
  /* In the lock's line already: it completes when it gets the lock. */
  if (!(cw_flags(f) & CW_REACQUIRE)) cond_reacquire(c, f);
  return 1;
}

uva_cond_t *uva_cond_new(uva_lock_t *lock) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_cond_t *c = uva__calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->loop = loop;
  uva__list_init(&c->waiters);
  if (lock == NULL) {
    if ((lock = uva_lock_new()) == NULL) {
      uva__free(c);
      return NULL;
    }
    c->own_lock = true;
  }
  c->lock = lock;
  return c;
}

void uva_cond_free(uva_cond_t *c) {
  if (c == NULL) return;
  fail_all(&c->waiters, UVA_ECLOSED);
  if (c->own_lock) {
    uva_lock_free(c->lock);
  } else {
    /* Our waiters still in a borrowed lock's line would point back at c. */
    uva__link_t *h = &c->lock->waiters, *l = h->next;
    while (l != h) {
      uva__link_t *next = l->next;
      uva_future_t *f = LINK_FUTURE(l);
      if (f->ops == &cond_fops && W(f)->owner == c) {
        uva__list_unlink(l);
        uva__future_complete(f, UVA_ECLOSED, NULL, NULL);
      }
      l = next;
    }
    /* One of ours given the lock but not resumed yet: nothing to pass a
     * wake-up on to any more. */
    h = &c->lock->handed;
    for (l = h->next; l != h; l = l->next) {
      uva_future_t *f = LINK_FUTURE(l);
      if (f->ops == &cond_fops && W(f)->owner == c) W(f)->owner = NULL;
    }
  }
  uva__free(c);
}

uva_lock_t *uva_cond_lock(uva_cond_t *c) { return c ? c->lock : NULL; }

uva_future_t *uva_cond_wait(uva_cond_t *c) {
  if (c == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (!c->lock->locked) return uva__future_done(c->loop, UVA_ENOTLOCKED);
  uva_future_t *f = waiter_new(c->loop, &cond_fops, &c->waiters, c);
  if (f) uva_lock_release(c->lock);
  return f;
}

int uva_cond_notify(uva_cond_t *c, int n) {
  if (c == NULL || !c->lock->locked) return UVA_ENOTLOCKED;
  int woken = 0;
  while (woken < n && !uva__list_empty(&c->waiters)) {
    uva_future_t *f = LINK_FUTURE(c->waiters.next);
    cw_set(f, CW_NOTIFIED);
    cond_reacquire(c, f);
    woken++;
  }
  return woken;
}

int uva_cond_notify_all(uva_cond_t *c) { return uva_cond_notify(c, INT_MAX); }

/* asyncio's Condition.wait_for is a loop in a coroutine; so is this, in
 * the calling task. */
int uva_cond_wait_for(uva_cond_t *c, int (*pred)(void *arg), void *arg) {
  if (c == NULL || pred == NULL) return UV_EINVAL;
  if (uva__task_current() == NULL) return UVA_ENOTASK;
  if (!c->lock->locked) return UVA_ENOTLOCKED;
  int r;
  while ((r = pred(arg)) == 0) {
    int rc = uva_await(uva_cond_wait(c), NULL);
    if (rc < 0) return rc;
  }
  return r;
}

/* ------------------------------------------------------------- semaphore */

struct uva_sem {
  uva_loop_t *loop;
  unsigned value; /* > 0 only while nobody waits */
  unsigned bound;
  bool bounded;
  uva__link_t waiters;
  uva__link_t handed; /* waiters given a permit whose task has not resumed */
};

uva_sem_t *uva_sem_new(unsigned value, int bounded) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  uva_sem_t *s = uva__calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->loop = loop;
  s->value = s->bound = value;
  s->bounded = bounded != 0;
  uva__list_init(&s->waiters);
  uva__list_init(&s->handed);
  return s;
}

void uva_sem_free(uva_sem_t *s) {
  if (s == NULL) return;
  fail_all(&s->waiters, UVA_ECLOSED);
  handed_detach(&s->handed);
  uva__free(s);
}

/* A permit is free: hand it to the first waiter, else keep it. */
static void sem_give(uva_sem_t *s) {
  uva__link_t *l = uva__list_shift(&s->waiters);
  if (l == NULL) {
    s->value++;
    return;
  }
  uva_future_t *f = LINK_FUTURE(l);
  handed_push(&s->handed, f);
  uva__future_complete(f, 0, NULL, NULL);
}

/* Given a permit, then cancelled before its task resumed: the permit goes
 * on to the next waiter (asyncio undoes the bookkeeping the same way). */
static int sem_reclaim(uva_future_t *f) {
  uva_sem_t *s = handed_take(f);
  if (s == NULL) return 0;
  sem_give(s);
  return 1;
}

uva_future_t *uva_sem_acquire(uva_sem_t *s) {
  if (s == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (s->value > 0 && uva__list_empty(&s->waiters)) {
    uva_future_t *f = uva__future_done(s->loop, 0);
    if (f) s->value--;
    return f;
  }
  return waiter_new(s->loop, &sem_fops, &s->waiters, s);
}

int uva_sem_release(uva_sem_t *s) {
  if (s == NULL) return UV_EINVAL;
  if (s->bounded && s->value >= s->bound) return UVA_EBOUND;
  sem_give(s);
  return 0;
}

int uva_sem_locked(const uva_sem_t *s) {
  return s && (s->value == 0 || !uva__list_empty(&s->waiters));
}

unsigned uva_sem_value(const uva_sem_t *s) { return s ? s->value : 0; }

/* --------------------------------------------------------------- barrier */

struct uva_barrier {
  uva_loop_t *loop;
  unsigned parties;
  unsigned count; /* waiters in line */
  bool broken;
  uva__link_t waiters;
};

static void barrier_fail_all(uva_barrier_t *b) {
  b->count = 0;
  fail_all(&b->waiters, UVA_EBROKEN);
}

/* A waiter leaving early breaks the round for those left in it: the
 * others could otherwise never be released with consistent indices. */
static int barrier_waiter_cancel(uva_future_t *f) {
  uva_barrier_t *b = W(f)->owner;
  uva__list_unlink(&f->link);
  b->count--;
  if (b->count > 0) {
    b->broken = true;
    barrier_fail_all(b);
  }
  return uva__future_cancel_now(f);
}

static void barrier_waiter_destroy(uva_future_t *f) {
  if (f->state != UVA__PENDING) return;
  uva_barrier_t *b = W(f)->owner;
  uva__list_unlink(&f->link);
  b->count--;
}

static const uva__fops_t barrier_fops = {"barrier", barrier_waiter_cancel,
                                         barrier_waiter_destroy, sizeof(uva__small_future_t), NULL};

uva_barrier_t *uva_barrier_new(unsigned parties) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL || parties == 0) return NULL;
  uva_barrier_t *b = uva__calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  b->loop = loop;
  b->parties = parties;
  uva__list_init(&b->waiters);
  return b;
}

void uva_barrier_free(uva_barrier_t *b) {
  if (b == NULL) return;
  b->count = 0;
  fail_all(&b->waiters, UVA_ECLOSED);
  uva__free(b);
}

uva_future_t *uva_barrier_wait(uva_barrier_t *b) {
  if (b == NULL) return uva__future_done(NULL, UV_EINVAL);
  if (b->broken) return uva__future_done(b->loop, UVA_EBROKEN);
  if (b->count + 1 < b->parties) {
    uva_future_t *f = waiter_new(b->loop, &barrier_fops, &b->waiters, b);
    if (f) b->count++;
    return f;
  }
  /* Last to arrive: release the round; arrival index = place in line. */
  uva_future_t *f = uva__future_done(b->loop, (int)b->count);
  if (f == NULL) return NULL;
  int i = 0;
  b->count = 0;
  while (serve_first(&b->waiters, i)) i++;
  return f;
}

void uva_barrier_abort(uva_barrier_t *b) {
  if (b == NULL) return;
  b->broken = true;
  barrier_fail_all(b);
}

void uva_barrier_reset(uva_barrier_t *b) {
  if (b == NULL) return;
  barrier_fail_all(b);
  b->broken = false;
}

unsigned uva_barrier_waiting(const uva_barrier_t *b) { return b ? b->count : 0; }
int uva_barrier_broken(const uva_barrier_t *b) { return b && b->broken; }
