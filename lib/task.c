/* Tasks: stackful coroutines. A task is a future whose body runs on its own
 * stack; uva_await() registers the task's embedded wake node on a future
 * and switches back to the loop, which switches in again when that future's
 * callbacks are drained. Stacks are taken when the task first runs (a task
 * cancelled before it starts never gets one) and returned when it ends. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void uva__ctx_entered(void);

static void task_destroy(uva_future_t *f);
static int task_cancel_op(uva_future_t *f) { return uva__task_cancel((uva__task_t *)f); }

const uva__fops_t uva__task_fops = {"task", task_cancel_op, task_destroy, sizeof(uva__task_t), NULL};


uva_future_t *uva_current_task(void) {
  uva__task_t *t = uva__task_current();
  return t ? &t->base : NULL;
}

int uva_is_task(const uva_future_t *f) { return f && f->ops == &uva__task_fops; }

static void task_destroy(uva_future_t *f) {
  uva__task_t *t = (uva__task_t *)f;
  uva_loop_t *loop = f->loop;
  uva__free(t->name);
  t->name = NULL;
  /* Called when the last reference goes; a task holds one on itself
   * until it ends, so it is finished (or never started and cancelled). */
  if (t->ret_value && t->ret_free) t->ret_free(t->ret_value);
  t->ret_value = NULL;
  *(uva__task_t **)t = loop->free_tasks;
  loop->free_tasks = t;
}

static void task_step(uva_future_t *unused, void *data);

/* End a task: record its outcome, wake its waiters, drop its own ref. */
static void task_finish(uva__task_t *t, int rc) {
  uva_loop_t *loop = t->base.loop;
  void *value = NULL;
  uva_free_fn free_fn = NULL;
  /* asyncio: a cancel the task never saw wins over its return value;
   * except one that came only after the task had the result of what it
   * awaited (cancel_late): it then acted on work that happened, and
   * reporting "cancelled" would tell its caller it did not. */
  bool late = t->cancel_late > 0 && t->cancel_requests == t->cancel_late;
  if (t->cancel_pending && !late && rc >= 0) rc = UV_ECANCELED;
  if (rc >= 0) {
    value = t->ret_value;
    free_fn = t->ret_free;
  } else if (t->ret_value && t->ret_free) {
    t->ret_free(t->ret_value);
  }
  t->ret_value = NULL;
  t->finished = 1;
  uva__list_unlink(&t->all);
  loop->ntasks--;
  uva__future_complete(&t->base, rc, value, free_fn);
  uva_release(&t->base);
}

static void task_entry(void) {
  uva__ctx_entered();
  uva_loop_t *loop = uva__loop_tls;
  uva__task_t *t = loop->current;
  t->result = t->fn(t->arg);
  t->finished = 1;
  uva__ctx_switch(&t->ctx, &loop->sched_ctx, t->stack, NULL, true);
  abort(); /* never resumed */
}

static void task_step(uva_future_t *unused, void *data) {
  UVA_UNUSED(unused);
  uva__task_t *t = data;
  uva_loop_t *loop = t->base.loop;
  if (!t->started) {
    if (t->cancel_pending) { /* cancelled before it ever ran */
      t->cancel_pending = 0;
      task_finish(t, UV_ECANCELED);
      return;
    }
    t->stack = uva__stack_get(loop->stacks, loop->stack_size);
    if (t->stack == NULL || uva__ctx_make(&t->ctx, t->stack, task_entry) != 0) {
      if (t->stack) uva__stack_put(loop->stacks, t->stack);
      t->stack = NULL;
      task_finish(t, UV_ENOMEM);
      return;
    }
    t->started = 1;
  }
  if (loop->debug) uva__debug_step(loop, t, NULL);
  loop->current = t;
  uva__ctx_switch(&loop->sched_ctx, &t->ctx, NULL, t->stack, false);
  /* Tasks may have switched among themselves (task_suspend): the one that
   * came back is the current one, not necessarily t. */
  t = loop->current;
  loop->current = NULL;
  if (loop->debug) uva__debug_step(loop, NULL, NULL);
  if (t->finished) {
    /* Scopes a returning task left entered must never fire into the
     * stack the next task reuses. */
    uva__scopes_abandon(t);
    uva__stack_put(loop->stacks, t->stack);
    t->stack = NULL;
    t->finished = 0; /* task_finish sets it for good */
    task_finish(t, t->result);
  }
}

uva_future_t *uva__spawn(uva_loop_t *loop, const char *name, uva_task_fn fn, void *arg) {
  uva__task_t *t = loop->free_tasks;
  if (t) {
    loop->free_tasks = *(uva__task_t **)t;
  } else {
    t = uva__malloc(sizeof *t);
    if (t == NULL) return NULL;
    memset(&t->ctx, 0, sizeof t->ctx);
  }
  uva__ctx_t ctx = t->ctx; /* the ucontext backend keeps its buffer */
  memset(t, 0, sizeof *t);
  t->ctx = ctx;
  if (name && (t->name = uva__strdup(name)) == NULL) {
    *(uva__task_t **)t = loop->free_tasks;
    loop->free_tasks = t;
    return NULL;
  }
  t->base.ops = &uva__task_fops;
  t->base.loop = loop;
  t->base.refs = 2; /* the caller's, and the task's own until it ends */
  t->base.status = UVA_EPENDING;
  t->base.is_task = 1;
  uva__list_init(&t->base.link);
  t->fn = fn;
  t->arg = arg;
  t->id = ++loop->task_ids;
  uva__list_push(&loop->tasks, &t->all);
  loop->ntasks++;
  t->wake.embedded = true;
  t->wake.fn = task_step;
  t->wake.data = t;
  t->wake.fut = NULL;
  uva__ready_push(loop, &t->wake);
  if (loop->debug) uva__debug_task_new(t);
  return &t->base;
}

uva_future_t *uva_spawn_named_at(const char *name, uva_task_fn fn, void *arg,
                                 const char *file, int line) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (fn == NULL || loop->closing) {
    uva_future_t *f = uva__future_alloc(loop, &uva__plain_fops);
    if (f) uva__future_complete(f, fn ? UVA_ECLOSED : UV_EINVAL, NULL, NULL);
    return f;
  }
  uva_future_t *f = uva__spawn(loop, name, fn, arg);
  if (f && loop->debug) uva__debug_task_site((uva__task_t *)f, file, line);
  return f;
}

/* The plain functions, for callers without the macros (bindings, function
 * pointers): no spawn site. */
uva_future_t *(uva_spawn)(uva_task_fn fn, void *arg) {
  return uva_spawn_named_at(NULL, fn, arg, NULL, 0);
}

uva_future_t *(uva_spawn_named)(const char *name, uva_task_fn fn, void *arg) {
  return uva_spawn_named_at(name, fn, arg, NULL, 0);
}

int uva__task_cancel(uva__task_t *t) {
  if (t->finished || t->base.state != UVA__PENDING) return 0;
  /* Tasks awaiting each other through a combinator (A awaits a gather of
   * B, B awaits A) would pass the request round forever: the request
   * coming back is the one being made. */
  if (t->in_cancel) return 1;
  t->cancel_requests++;
  t->cancel_pending = 1; /* one more request than cancel_late: not late */
  if (t->awaiting) {
    t->in_cancel = 1;
    uva_cancel(t->awaiting);
    t->in_cancel = 0;
  }
  return 1;
}

/* Would t awaiting f wait for itself? Follows the chain of tasks each
 * awaiting the next (a chain cannot loop elsewhere: each link was checked
 * when it was made). */
static bool awaits_itself(uva__task_t *t, uva_future_t *f) {
  while (f && f->ops == &uva__task_fops) {
    if (f == &t->base) return true;
    f = ((uva__task_t *)f)->awaiting;
  }
  return false;
}

/* Switch back to the loop. Checks the stack on the way out: an overflow
 * into the guard gap is reported here rather than left to corrupt. */
static void task_suspend(uva__task_t *t) {
  char probe;
  if ((char *)&probe < t->stack->base) uva__stack_overflow(t, NULL);
  uva_loop_t *loop = t->base.loop;
  /* If the next ready node resumes a started task, switch to it directly:
   * half the switches of going through the loop, and no drain iteration. */
  uva__cb_t *cb = loop->ready.head;
  if (cb && cb->fn == task_step && loop->drain_left > 0 && loop->in_drain) {
    uva__task_t *n = cb->data;
    if (n->started) {
      loop->drain_left--;
      loop->ready.head = cb->next;
      if (loop->ready.head == NULL) loop->ready.tail = NULL;
      if (cb->fut) uva_release(cb->fut); /* as the drain does for embedded nodes */
      if (loop->debug) uva__debug_step(loop, n, NULL);
      if (n == t) return;
      loop->current = n;
      uva__ctx_switch(&t->ctx, &n->ctx, t->stack, n->stack, false);
      return; /* whoever resumed us set loop->current */
    }
  }
  uva__ctx_switch(&t->ctx, &loop->sched_ctx, t->stack, NULL, false);
}

/* The task resumed from f with a cancel pending (or before it suspends:
 * resumed false). The rare cases of an await, kept off its hot path. */
static __attribute__((noinline)) int await_cancel_pending(uva__task_t *t, uva_future_t *f,
                                                          bool resumed) {
  if (!resumed) {
    /* A cancel that arrived while the task was not awaiting is delivered
     * at the first await that would suspend, as asyncio delivers it at the
     * next suspension: a future that is already done (a free lock, a
     * non-empty queue) still hands over its result, so nothing is lost.
     * A late cancel is delivered here too: from now on it is an ordinary
     * one (unless what f returns cannot be given back either). */
    t->cancel_late = 0;
    uva_cancel(f);
    return 0;
  }
  int st = f->status;
  if (st >= 0) {
    /* The cancel came while f's result was already on its way to us (f
     * was done, or finished anyway). A hand-off that can be undone (an
     * item, a lock, a permit) is given back and the cancel wins, as in
     * asyncio; anything else happened, so the task gets its result and
     * the cancel follows at the next await that suspends. */
    if (uva__reclaim(f))
      st = UV_ECANCELED;
    else
      t->cancel_late = t->cancel_requests;
  }
  if (st == UV_ECANCELED) { /* delivered */
    t->cancel_pending = 0;
    t->cancel_late = 0;
  }
  return st;
}

int uva_await_at(uva_future_t *f, void **out, const char *file, int line) {
  if (out) *out = NULL;
  if (f == NULL) return UV_ENOMEM;
  if (f->loop == NULL) return f->status; /* made on a thread with no loop */
  uva__task_t *t = uva__task_current();
  if (t == NULL || t->base.loop != f->loop) {
    uva_release(f);
    return t ? UV_EINVAL : UVA_ENOTASK;
  }
  int st;
  if (f->state == UVA__PENDING) {
    /* asyncio raises "Task cannot await on itself"; waiting would hang. */
    if (f->is_task && awaits_itself(t, f)) {
      uva_release(f);
      return UVA_EDEADLK;
    }
    if (t->cancel_pending) await_cancel_pending(t, f, false);
  }
  if (f->state == UVA__PENDING) {
    t->awaiting = f;
    t->await_file = file;
    t->await_line = line;
    uva__cb_add(f, &t->wake);
    task_suspend(t);
    t->awaiting = NULL;
    st = t->cancel_pending ? await_cancel_pending(t, f, true) : f->status;
  } else {
    st = f->status;
    if (st == UV_ECANCELED && t->cancel_pending) { /* delivered */
      t->cancel_pending = 0;
      t->cancel_late = 0;
    }
  }
  if (st < 0 && f->loop->debug) uva__debug_retrieved(f); /* only errors are reported */
  if (out && st >= 0) {
    *out = f->value;
    f->value = NULL;
  }
  uva_release(f);
  return st;
}

int uva_task_return(void *value, uva_free_fn free_fn) {
  uva__task_t *t = uva__task_current();
  if (t == NULL) {
    if (value && free_fn) free_fn(value);
    return UVA_ENOTASK;
  }
  if (t->ret_value && t->ret_free) t->ret_free(t->ret_value);
  t->ret_value = value;
  t->ret_free = free_fn;
  return 0;
}

/* Names of unnamed tasks and await sites are formatted on demand into a
 * per-thread buffer rather than kept in every task. */
static _Thread_local char fmt_buf[96];

const char *uva_task_name(const uva_future_t *f) {
  if (!uva_is_task(f)) return "";
  uva__task_t *t = (uva__task_t *)f;
  if (t->name) return t->name;
  snprintf(fmt_buf, sizeof fmt_buf, "task-%llu", (unsigned long long)t->id);
  return fmt_buf;
}

int uva_task_set_name(uva_future_t *f, const char *name) {
  if (!uva_is_task(f) || name == NULL) return UV_EINVAL;
  char *n = uva__strdup(name);
  if (n == NULL) return UV_ENOMEM;
  uva__task_t *t = (uva__task_t *)f;
  if (f->loop->debug) return uva__debug_rename(t, n), 0; /* the watchdog reads names */
  uva__free(t->name);
  t->name = n;
  return 0;
}

const char *uva_task_where(const uva_future_t *f) {
  if (!uva_is_task(f)) return "";
  uva__task_t *t = (uva__task_t *)f;
  if (f->state == UVA__DONE) return "done";
  if (!t->started) return "not started";
  if (t->base.loop->current == t) return "running";
  if (t->awaiting == NULL) return "ready";
  snprintf(fmt_buf, sizeof fmt_buf, "%s:%d", t->await_file ? t->await_file : "?",
           t->await_line);
  return fmt_buf;
}

int uva_cancelling(void) {
  uva__task_t *t = uva__task_current();
  return t ? t->cancel_requests : 0;
}

int uva_task_cancelling(const uva_future_t *task) {
  return uva_is_task(task) ? ((const uva__task_t *)task)->cancel_requests : 0;
}

int uva_task_uncancel(uva_future_t *task) {
  if (!uva_is_task(task)) return UV_EINVAL;
  uva__task_t *t = (uva__task_t *)task;
  if (t->cancel_requests > 0) t->cancel_requests--;
  /* The one withdrawn is the latest: late ones left stay late. */
  if (t->cancel_late > t->cancel_requests) t->cancel_late = t->cancel_requests;
  /* asyncio 3.13: at zero, a request not delivered yet is withdrawn. */
  if (t->cancel_requests == 0) t->cancel_pending = 0;
  return t->cancel_requests;
}

size_t uva_all_tasks(uva_loop_t *loop, uva_future_t **out, size_t max) {
  if (loop == NULL) return 0;
  size_t i = 0;
  for (uva__link_t *l = loop->tasks.next; l != &loop->tasks; l = l->next, i++)
    if (out && i < max) out[i] = &UVA_CONTAINER_OF(l, uva__task_t, all)->base;
  return i;
}

void uva_dump_tasks(uva_loop_t *loop, void *stream) {
  FILE *fp = stream ? stream : stderr;
  if (loop == NULL) return;
  for (uva__link_t *l = loop->tasks.next; l != &loop->tasks; l = l->next) {
    uva__task_t *t = UVA_CONTAINER_OF(l, uva__task_t, all);
    char name[64];
    snprintf(name, sizeof name, "%s", uva_task_name(&t->base));
    fprintf(fp, "%-20s awaiting %-8s at %s\n", name,
            t->awaiting ? t->awaiting->ops->kind : "-", uva_task_where(&t->base));
  }
}

void uva__tasks_close(uva_loop_t *loop) {
  loop->closing = true;
  for (uva__link_t *l = loop->tasks.next; l != &loop->tasks; l = l->next)
    uva__task_cancel(UVA_CONTAINER_OF(l, uva__task_t, all));
}
