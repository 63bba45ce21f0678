/* wait.c: wait for a set of futures, all of them or just the first.
 *
 * Shows: uva_wait() BORROWS the futures (you keep them and look at which are
 * done); its status is how many were done when it returned. ALL_COMPLETED
 * over tasks of 1 s and 2 s returns after ~2 s; FIRST_COMPLETED over the
 * same returns after ~1 s, and we cancel the one still pending.
 *
 * asyncio original:
 *   done, pending = await asyncio.wait([t1, t2])                  # ~2 s
 *   done, pending = await asyncio.wait([t3, t4],
 *                       return_when=asyncio.FIRST_COMPLETED)   # ~1 s
 *   for t in pending: t.cancel()
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int work(void *arg) {
  int ms = (int)(intptr_t)arg;
  int rc = uva_await(uva_sleep((uint64_t)ms), NULL);
  printf("[%.2fs] %d ms task %s\n", elapsed(), ms, rc < 0 ? "cancelled" : "done");
  return rc < 0 ? rc : ms;
}

static int fail(const char *what) {
  fprintf(stderr, "unexpected: %s at %.2fs\n", what, elapsed());
  return 1;
}

static int main_task(void *arg) {
  (void)arg;
  /* 1. ALL_COMPLETED */
  uva_future_t *fs[2] = {uva_spawn(work, (void *)1000), uva_spawn(work, (void *)2000)};
  int ndone = uva_await(uva_wait(fs, 2, UVA_ALL_COMPLETED, -1), NULL);
  double t = elapsed();
  printf("[%.2fs] ALL_COMPLETED: %d done\n", t, ndone);
  int ok = ndone == 2 && uva_future_status(fs[0]) == 1000 &&
           uva_future_status(fs[1]) == 2000;
  uva_release(fs[0]); /* wait only borrowed them: we still hold our refs */
  uva_release(fs[1]);
  if (!ok || t < 1.9 || t > 2.6) return fail("ALL_COMPLETED");

  /* 2. FIRST_COMPLETED */
  double start = elapsed();
  fs[0] = uva_spawn(work, (void *)1000);
  fs[1] = uva_spawn(work, (void *)2000);
  ndone = uva_await(uva_wait(fs, 2, UVA_FIRST_COMPLETED, -1), NULL);
  t = elapsed() - start;
  printf("[%.2fs] FIRST_COMPLETED: %d done, 1 s task done=%d, 2 s task done=%d\n",
         elapsed(), ndone, uva_future_is_done(fs[0]), uva_future_is_done(fs[1]));
  ok = ndone == 1 && uva_future_is_done(fs[0]) && !uva_future_is_done(fs[1]);
  for (int i = 0; i < 2; i++)
    if (!uva_future_is_done(fs[i])) uva_cancel(fs[i]); /* the pending ones */
  int st = uva_await(fs[1], NULL); /* let the cancelled task end */
  uva_release(fs[0]);
  if (!ok || st != UV_ECANCELED || t < 0.95 || t > 1.5) return fail("FIRST_COMPLETED");
  return 0;
}

int main(void) {
  t0 = uv_hrtime();
  return uva_run(main_task, NULL) == 0 ? 0 : 1;
}
