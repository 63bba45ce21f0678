/* The loop: a uv_loop_t plus a ready queue, a deadline heap and a stack pool.
 *
 * libuv callbacks only ever complete futures; completing a future queues its
 * waiters on the ready queue, and the queue is drained from one uv_check_t
 * callback per loop turn. A uv_idle_t is active exactly while something is
 * queued, so poll does not block then. Nothing of the user's runs inside a
 * libuv callback other than ours.
 *
 * One drain runs what is ready plus what that wakes up (a future completed
 * by a task resumes its waiter in the same turn: a queue ping-pong then
 * costs ~100 ns, not a trip through epoll), up to DRAIN_BUDGET nodes, so
 * tasks that keep waking each other cannot starve I/O; the rest runs on the
 * next turn, in order. Yields (sleep(0)) always wait for the next turn. */
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_BUDGET 65536

_Thread_local uva_loop_t *uva__loop_tls UVA_TLS_MODEL;

uva_loop_t *uva_loop_current(void) { return uva__loop_tls; }
uv_loop_t *uva_loop_uv(uva_loop_t *loop) { return loop ? loop->uv : NULL; }

/* Before the poll: see uva__turn_start. */
static void on_idle(uv_idle_t *h) { uva__turn_start(h->data); }

void uva__loop_wake(uva_loop_t *loop) {
  if (!loop->idle_on) {
    loop->idle_on = true;
    uv_idle_start(&loop->idle, on_idle);
  }
}

void uva__ready_push(uva_loop_t *loop, uva__cb_t *cb) {
  cb->next = NULL;
  if (loop->ready.tail) loop->ready.tail->next = cb; else loop->ready.head = cb;
  loop->ready.tail = cb;
  uva__loop_wake(loop);
}

void uva__next_push(uva_loop_t *loop, uva__cb_t *cb) {
  cb->next = NULL;
  if (loop->next.tail) loop->next.tail->next = cb; else loop->next.head = cb;
  loop->next.tail = cb;
  uva__loop_wake(loop);
}

void uva__ready_splice(uva_loop_t *loop, uva__cbq_t *q) {
  if (q->head == NULL) return;
  if (loop->ready.tail) loop->ready.tail->next = q->head; else loop->ready.head = q->head;
  loop->ready.tail = q->tail;
  uva__loop_wake(loop);
}

/* Last turn's yields and parked nodes join the ready queue ahead of what
 * this turn's timers and I/O complete, as in asyncio, where a sleep(0) is
 * already on the ready queue when the next turn adds due timers and I/O
 * callbacks behind it. Called from the timer callback (libuv's first
 * phase), the idle callback (before the poll) and the drain. */
void uva__turn_start(uva_loop_t *loop) {
  uva__yields_run(loop);
  if (loop->next.head) {
    uva__cbq_t n = loop->next;
    loop->next.head = loop->next.tail = NULL;
    uva__ready_splice(loop, &n);
  }
}

void uva__drain(uva_loop_t *loop) {
  loop->in_drain = true;
  /* Deadlines made by the tasks below count from now, not from before this
   * turn's I/O callbacks (uv_now was read when the poll returned, and a
   * busy turn made sleeps end early). Once per drain, so that deadlines
   * made together still share their base. */
  uv_update_time(loop->uv);
  uva__turn_start(loop);
  /* Run what is ready and what that wakes, within a budget shared with the
   * direct task-to-task switches in task.c. */
  loop->drain_left = DRAIN_BUDGET;
  uva__cb_t *cb;
  while (loop->drain_left > 0 && (cb = loop->ready.head) != NULL) {
    loop->drain_left--;
    loop->ready.head = cb->next;
    if (loop->ready.head == NULL) loop->ready.tail = NULL;
    /* The node may be reused or freed by fn (a task's embedded wake node
     * is re-armed by its next await): read it first. */
    uva_future_t *f = cb->fut;
    uva_done_fn fn = cb->fn;
    void *data = cb->data;
    if (loop->debug) uva__debug_step(loop, NULL, (void (*)(void))fn);
    if (cb->embedded) {
      /* An embedded node's owner (a task's await) holds its own reference
       * on f: drop the queue's now, so a value nobody reads is freed as
       * soon as the owner lets go, not one callback later. */
      if (f) uva_release(f);
      fn(f, data);
    } else {
      cb->next = loop->free_cbs;
      loop->free_cbs = cb;
      fn(f, data);
      if (f) uva_release(f);
    }
  }
  if (loop->debug) uva__debug_step(loop, NULL, NULL);
  loop->in_drain = false;
  if (loop->ready.head == NULL && loop->next.head == NULL && uva__list_empty(&loop->yields)) {
    loop->idle_on = false;
    uv_idle_stop(&loop->idle);
  }
}

static void on_check(uv_check_t *h) { uva__drain(h->data); }

/* A program started with stdin, stdout or stderr closed would hand those
 * numbers to the loop's own descriptors (epoll, sockets), and libuv
 * aborts when it closes one of them (it asserts fd > 2); writes meant for
 * stdout would also land in a socket. Like curl's tool, hold the numbers
 * with /dev/null (inherited by children, so no O_CLOEXEC). Once per
 * process, before the first loop opens anything. */
static uv_once_t stdio_once = UV_ONCE_INIT;
static void stdio_guard(void) {
  int fd;
  while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
  }
  if (fd > 2) close(fd);
}

static int loop_init(uva_loop_t **out, uv_loop_t *uv) {
  *out = NULL;
  if (uva__loop_tls != NULL) return UV_EBUSY;
  uva_loop_t *loop = uva__calloc(1, sizeof *loop);
  if (loop == NULL) return UV_ENOMEM;
  int rc = UV_ENOMEM;
  loop->stacks = uva__stack_pool_new();
  if (loop->stacks == NULL) goto fail;
  if ((rc = uva__ctx_init(&loop->sched_ctx)) != 0) goto fail;
  if (uv == NULL) {
    uv_once(&stdio_once, stdio_guard);
    uv = uva__malloc(sizeof *uv);
    rc = UV_ENOMEM;
    if (uv == NULL) goto fail;
    if ((rc = uv_loop_init(uv)) != 0) {
      uva__free(uv);
      goto fail;
    }
    loop->own_uv = true;
  }
  loop->uv = uv;
  loop->stack_size = 256 * 1024;
  uva__list_init(&loop->yields);
  uva__list_init(&loop->tasks);
  loop->done0.ops = &uva__plain_fops;
  loop->done0.loop = loop;
  loop->done0.refs = 1u << 30;
  loop->done0.state = UVA__DONE;
  loop->done0.status = 0;
  uva__list_init(&loop->done0.link);
  if ((rc = uva__ts_init(loop)) != 0) goto fail_uv;
  uv_idle_init(uv, &loop->idle);
  uv_check_init(uv, &loop->check);
  uv_timer_init(uv, &loop->timer);
  loop->idle.data = loop->check.data = loop->timer.data = loop;
  uv_check_start(&loop->check, on_check);
  /* The check handle is always active; unreferenced, it does not keep the
   * loop alive by itself: only ready work (idle), sleeps (timer) and the
   * application's own handles do. */
  uv_unref((uv_handle_t *)&loop->check);
  uva__loop_tls = loop;
  *out = loop;
  uva__debug_loop_init(loop); /* UVA_DEBUG=1 */
  return 0;
fail_uv:
  if (loop->own_uv) {
    uv_loop_close(uv);
    uva__free(uv);
  }
fail:
  uva__ctx_destroy(&loop->sched_ctx);
  uva__stack_pool_free(loop->stacks);
  uva__free(loop);
  return rc;
}

int uva_loop_new(uva_loop_t **out) {
  if (out == NULL) return UV_EINVAL;
  return loop_init(out, NULL);
}

int uva_loop_attach(uva_loop_t **out, uv_loop_t *uv) {
  if (out == NULL || uv == NULL) return UV_EINVAL;
  return loop_init(out, uv);
}

int uva_loop_set_stack_size(uva_loop_t *loop, size_t size) {
  if (loop == NULL || size < 32 * 1024 || size > ((size_t)1 << 30)) return UV_EINVAL;
  size_t page = 4096;
  loop->stack_size = (size + page - 1) & ~(page - 1);
  return 0;
}

int uva_loop_set_stack_cache(uva_loop_t *loop, size_t stacks) {
  if (loop == NULL) return UV_EINVAL;
  uva__stack_pool_set_cache(loop->stacks, stacks);
  return 0;
}

/* One blocking turn of the loop. When nothing keeps it alive, wait for a
 * wake-up from another thread (the async handle) rather than spin: like
 * asyncio, a future nobody will complete waits forever. */
static bool idle_now(uva_loop_t *loop) {
  return loop->ready.head == NULL && loop->next.head == NULL &&
         uva__list_empty(&loop->yields);
}

static bool close_done(uva_loop_t *loop) {
  return loop->ntasks == 0 && loop->jobs == 0 && idle_now(loop);
}

/* `until` is the future being waited for, NULL while closing. */
static void turn(uva_loop_t *loop, uva_future_t *until) {
  if (uv_run(loop->uv, UV_RUN_ONCE) == 0 && idle_now(loop) &&
      (until ? until->state == UVA__PENDING : !close_done(loop))) {
    uv_ref((uv_handle_t *)&loop->async);
    uv_run(loop->uv, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&loop->async);
  }
}

int uva_loop_run_until(uva_loop_t *loop, uva_future_t *f) {
  if (f == NULL) return UV_ENOMEM;
  if (loop == NULL || f->loop != loop) return UV_EINVAL;
  if (loop->in_drain || loop->current) return UV_EBUSY;
  uva_ref(f);
  while (f->state == UVA__PENDING) turn(loop, f);
  int st = f->status;
  if (loop->debug) uva__debug_retrieved(f);
  uva_release(f);
  return st;
}

static void on_close_noop(uv_handle_t *h) { UVA_UNUSED(h); }

int uva_loop_close(uva_loop_t *loop) {
  if (loop == NULL) return UV_EINVAL;
  if (loop->in_drain || loop->current) return UV_EBUSY;
  /* asyncio.run's shutdown: cancel what is left and let it finish. */
  uva__tasks_close(loop);
  while (!close_done(loop)) turn(loop, NULL);
  /* Refuse calls from other threads from now on; run those accepted (they
   * may start requests: wait for those too). */
  uva__ts_close(loop);
  while (!close_done(loop)) turn(loop, NULL);
  /* Everything has run: what is still referenced or open now was left so
   * by the program. */
  if (loop->debug) uva__debug_loop_close(loop);
  uv_close((uv_handle_t *)&loop->idle, on_close_noop);
  uv_close((uv_handle_t *)&loop->check, on_close_noop);
  uv_close((uv_handle_t *)&loop->timer, on_close_noop);
  uv_close((uv_handle_t *)&loop->async, on_close_noop);
  if (loop->sigint_active) uv_close((uv_handle_t *)&loop->sigint, on_close_noop);
  uv_run(loop->uv, UV_RUN_NOWAIT);
  if (loop->own_uv) {
    uv_run(loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(loop->uv);
    uva__free(loop->uv);
  }
  uva__timers_close(loop);
  while (loop->free_small) {
    uva__small_future_t *s = loop->free_small;
    loop->free_small = *(uva__small_future_t **)s;
    uva__free(s);
  }
  while (loop->free_tasks) {
    uva__task_t *t = loop->free_tasks;
    loop->free_tasks = *(uva__task_t **)t;
    uva__ctx_destroy(&t->ctx);
    uva__free(t);
  }
  while (loop->free_cbs) {
    uva__cb_t *cb = loop->free_cbs;
    loop->free_cbs = cb->next;
    uva__free(cb);
  }
  uva__stack_pool_free(loop->stacks);
  uva__ctx_destroy(&loop->sched_ctx);
  if (uva__loop_tls == loop) uva__loop_tls = NULL;
  uva__free(loop);
  return 0;
}

/* -------------------------------------------------------------- uva_run */

static void on_sigint(uv_signal_t *h, int signum) {
  uva_loop_t *loop = h->data;
  if (loop->sigint_waiters > 0) return; /* a task awaits Ctrl-C itself */
  if (loop->main_task && !uva_future_is_done(loop->main_task) &&
      !uva_future_is_cancelled(loop->main_task) && h->signum == signum) {
    /* First Ctrl-C: cancel main and let it clean up. A second one gets
     * the default action (asyncio raises KeyboardInterrupt then). */
    uva_cancel(loop->main_task);
    uv_signal_stop(h);
    signal(SIGINT, SIG_DFL);
  }
}

/* The main task's stack size is the loop's while it is spawned and takes
 * its stack (on its first run, before any other task exists); its first
 * act is to set the size every other task gets. */
typedef struct run_main {
  uva_loop_t *loop;
  size_t stack_size;
  uva_task_fn fn;
  void *arg;
} run_main_t;

static int run_main(void *arg) {
  run_main_t *r = arg;
  r->loop->stack_size = r->stack_size;
  return r->fn(r->arg);
}

int uva_run(uva_task_fn main, void *arg) { return uva_run_opts(main, arg, NULL); }

int uva_run_opts(uva_task_fn main, void *arg, const uva_run_opts_t *opts) {
  if (main == NULL) return UV_EINVAL;
  uva_loop_t *loop;
  int rc = uva_loop_new(&loop);
  if (rc != 0) return rc;
  run_main_t r = {loop, loop->stack_size, main, arg};
  if (opts && opts->stack_size && (rc = uva_loop_set_stack_size(loop, opts->stack_size)) != 0) {
    uva_loop_close(loop);
    return rc;
  }
  r.stack_size = loop->stack_size;
  if (opts && opts->main_stack_size &&
      (rc = uva_loop_set_stack_size(loop, opts->main_stack_size)) != 0) {
    uva_loop_close(loop);
    return rc;
  }
  if (uv_signal_init(loop->uv, &loop->sigint) == 0) {
    loop->sigint_active = true;
    loop->sigint.data = loop;
    uv_signal_start(&loop->sigint, on_sigint, SIGINT);
    uv_unref((uv_handle_t *)&loop->sigint);
  }
  uva_future_t *f = uva__spawn(loop, "main", run_main, &r);
  if (f == NULL) {
    rc = UV_ENOMEM;
  } else {
    loop->main_task = f;
    rc = uva_loop_run_until(loop, f);
    loop->main_task = NULL;
    uva_release(f);
  }
  uva_loop_close(loop);
  return rc;
}

