/* to_thread.c: push blocking calls onto a thread; the loop keeps ticking.
 *
 * Shows:
 *  - uva_to_thread() runs a plain blocking C function on libuv's thread pool
 *    and gives back a future of its result. While the slow read blocks a
 *    pool thread, the ticker task keeps running on the loop (the read even
 *    waits for three ticks: it could not get them if it blocked the loop);
 *  - the job's argument is borrowed until the future is done, so the
 *    natural code, free(arg) after the await, is safe even when the task
 *    awaiting it is cancelled: the await returns once the job has let go of
 *    arg, with the job's real result, and the cancel comes at the next
 *    await. A long job sees the request with uva_job_cancelled() and stops;
 *  - uva_to_thread_owned() for a job you want to be able to abandon (a
 *    wait_for around a call that may hang): the library owns the argument
 *    and frees it when the job is really over.
 *
 * asyncio original:
 *   def blocking_read(path):
 *       time.sleep(1); return open(path).read()
 *   async def main():
 *       data, _ = await asyncio.gather(asyncio.to_thread(blocking_read, p), ticker())
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }
static atomic_int ticks;

/* Ordinary blocking C: runs on a pool thread, never touches the loop. */
static int blocking_read(void *path, void **value) {
  while (atomic_load(&ticks) < 3) uv_sleep(50); /* a slow disk */
  FILE *f = fopen(path, "r");
  if (f == NULL) return UV_ENOENT;
  char *buf = calloc(1, 256);
  size_t n = buf ? fread(buf, 1, 255, f) : 0;
  fclose(f);
  *value = buf;
  return (int)n;
}

static int ticker(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) {
    printf("[%.2fs] tick\n", elapsed());
    atomic_fetch_add(&ticks, 1);
    if (uva_await(uva_sleep(100), NULL) < 0) return -1;
  }
  return 0;
}

/* A long job that polls a device until told to stop. Its state is the
 * argument, which the job writes to until it returns. */
typedef struct {
  int polls;
  char log[64];
} poll_state_t;
static int poll_device(void *arg, void **value) {
  (void)value;
  poll_state_t *st = arg;
  while (!uva_job_cancelled()) {
    st->polls++;
    uv_sleep(10);
  }
  snprintf(st->log, sizeof st->log, "stopped after %d polls", st->polls);
  return UV_ECANCELED;
}
static int poller(void *arg) {
  (void)arg;
  poll_state_t *st = calloc(1, sizeof *st);
  if (st == NULL) return UV_ENOMEM;
  int rc = uva_await(uva_to_thread(NULL, poll_device, st, NULL), NULL);
  /* The job has returned: st is ours again, even though we were cancelled. */
  printf("[%.2fs] poller: %s\n", elapsed(), st->polls ? st->log : "cancelled before it started");
  free(st);
  return rc;
}

/* A call that hangs until released: the sample releases it at the end. */
static uv_sem_t hung;
static int arg_freed;
static int hangs(void *arg, void **value) {
  (void)value;
  uv_sem_wait(&hung);
  ((char *)arg)[0] = '!'; /* still uses its argument */
  return 0;
}
static void free_request(void *p) {
  arg_freed++;
  free(p);
}

static int main_task(void *arg) {
  (void)arg;
  /* 1. the loop ticks while a pool thread blocks */
  uva_future_t *t = uva_spawn(ticker, NULL);
  void *text;
  int n = uva_await(uva_to_thread(NULL, blocking_read, "/etc/os-release", free), &text);
  if (n < 0) return n;
  char *nl = strchr(text, '\n');
  if (nl) *nl = '\0';
  printf("[%.2fs] read %d bytes after %d ticks: %s\n", elapsed(), n, atomic_load(&ticks),
         (char *)text);
  free(text);
  int rc = uva_await(t, NULL);
  if (rc < 0) return rc;

  /* 2. cancel a task awaiting a running job: the natural code stays safe */
  uva_future_t *p = uva_spawn(poller, NULL);
  uva_await(uva_sleep(50), NULL);
  uva_cancel(p);
  if ((rc = uva_await(p, NULL)) != UV_ECANCELED) return -1;

  /* 3. abandon a job that hangs: the library frees its argument later */
  char *req = calloc(1, 16);
  if (req == NULL) return UV_ENOMEM;
  rc = uva_await(uva_wait_for(uva_to_thread_owned(NULL, hangs, req, free_request, NULL), 100), NULL);
  printf("[%.2fs] hung job: %s; its argument %s\n", elapsed(), uva_strerror(rc),
         arg_freed ? "freed" : "not freed yet");
  if (rc != UV_ETIMEDOUT || arg_freed) return -1;
  uv_sem_post(&hung); /* let it end: the loop waits for it before closing */
  return 0;
}

int main(void) {
  t0 = uv_hrtime();
  uv_sem_init(&hung, 0);
  int rc = uva_run(main_task, NULL);
  uv_sem_destroy(&hung);
  if (rc != 0 || atomic_load(&ticks) < 3 || arg_freed != 1) {
    fprintf(stderr, "unexpected: rc=%d, %d ticks, hung job's argument freed %d times\n", rc,
            atomic_load(&ticks), arg_freed);
    return 1;
  }
  printf("[%.2fs] hung job's argument freed once the job returned\n", elapsed());
  return 0;
}
