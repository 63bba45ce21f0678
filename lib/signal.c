/* Signals as futures: one uv_signal_t per wait, started one-shot. The
 * handle lives in its own block because uv_close finishes later: a future
 * dropped or cancelled while waiting detaches from it, and the block is
 * freed from the close callback (loop->jobs counts closing handles, so a
 * loop does not close under one). */
#include "internal.h"

#include <signal.h>

typedef struct sighandle {
  uv_signal_t handle;
  uva_future_t *fut; /* NULL once detached */
  uva_loop_t *loop;
  int signum;
} sighandle_t;

typedef struct sigwait {
  uva_future_t base;
  sighandle_t *h;
} sigwait_t;

static void on_closed(uv_handle_t *handle) {
  sighandle_t *h = handle->data;
  h->loop->jobs--;
  uva__free(h);
}

/* Detach the future and close the handle. */
static void sig_close(sigwait_t *w) {
  sighandle_t *h = w->h;
  if (h == NULL) return;
  w->h = NULL;
  h->fut = NULL;
  if (h->signum == SIGINT) h->loop->sigint_waiters--;
  h->loop->jobs++;
  uv_close((uv_handle_t *)&h->handle, on_closed);
}

static void on_signal(uv_signal_t *handle, int signum) {
  sighandle_t *h = handle->data;
  sigwait_t *w = (sigwait_t *)h->fut;
  if (w == NULL) return;
  sig_close(w);
  uva__future_complete(&w->base, signum, NULL, NULL);
}

static int sig_cancel(uva_future_t *f) {
  sig_close((sigwait_t *)f);
  return uva__future_cancel_now(f);
}

static void sig_destroy(uva_future_t *f) { sig_close((sigwait_t *)f); }

static const uva__fops_t sig_fops = {"signal", sig_cancel, sig_destroy, sizeof(sigwait_t), NULL};

uva_future_t *uva_signal_wait(int signum) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (signum <= 0 || signum >= 65 || signum == SIGKILL || signum == SIGSTOP)
    return uva__future_done(loop, UV_EINVAL);
  sigwait_t *w = (sigwait_t *)uva__future_alloc(loop, &sig_fops);
  if (w == NULL) return NULL;
  sighandle_t *h = uva__malloc(sizeof *h);
  if (h == NULL) {
    uva_release(&w->base);
    return NULL;
  }
  int rc = uv_signal_init(loop->uv, &h->handle);
  if (rc != 0) {
    uva__free(h);
    uva__future_complete(&w->base, rc, NULL, NULL);
    return &w->base;
  }
  h->handle.data = h;
  h->fut = &w->base;
  h->loop = loop;
  h->signum = signum;
  w->h = h;
  if (signum == SIGINT) loop->sigint_waiters++;
  /* A signal wait does not keep the loop alive by itself, as asyncio's
   * handlers do not. */
  uv_unref((uv_handle_t *)&h->handle);
  rc = uv_signal_start_oneshot(&h->handle, on_signal, signum);
  if (rc != 0) {
    sig_close(w);
    uva__future_complete(&w->base, rc, NULL, NULL);
  }
  return &w->base;
}
