/* cancel.c: cancel a running task; it cleans up and ends cancelled.
 *
 * Shows: uva_cancel() makes the await in progress return UV_ECANCELED, once.
 * The task then runs its cleanup (which may await again: the cancel was
 * delivered) and returns the error; awaiting the task gives UV_ECANCELED.
 * A task of 10 steps of 0.5 s, cancelled after 1 s.
 *
 * asyncio original:
 *   async def steps():
 *       try:
 *           for i in range(10): await asyncio.sleep(0.5); print("step", i)
 *       finally: print("cleanup")
 *   t = asyncio.create_task(steps()); await asyncio.sleep(1); t.cancel()
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int steps_done, cleaned_up;

static int steps(void *arg) {
  (void)arg;
  int rc = 0;
  for (int i = 1; i <= 10 && rc == 0; i++) {
    rc = uva_await(uva_sleep(500), NULL);
    if (rc == 0) printf("[%.2fs] step %d done\n", elapsed(), ++steps_done);
  }
  /* cleanup: runs whatever ended the loop; awaiting works again here */
  printf("[%.2fs] cleanup after %d steps (%s)\n", elapsed(), steps_done, uva_err_name(rc));
  uva_await(uva_sleep(100), NULL);
  printf("[%.2fs] cleanup done\n", elapsed());
  cleaned_up = 1;
  return rc; /* UV_ECANCELED: the task ends cancelled, as re-raising would */
}

static int main_task(void *arg) {
  (void)arg;
  uva_future_t *t = uva_spawn(steps, NULL);
  uva_await(uva_sleep(1000), NULL);
  printf("[%.2fs] cancelling\n", elapsed());
  uva_cancel(t); /* borrows t */
  int st = uva_await(t, NULL);
  printf("[%.2fs] task ended: %s\n", elapsed(), uva_err_name(st));
  return st == UV_ECANCELED ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  /* The cancel comes at 1.00 s, when step 2's sleep ends too. If that sleep
   * was done first, its result is kept and the cancel hits step 3's await
   * (2 steps done); otherwise it interrupts step 2 (1 step done). */
  if (rc != 0 || !cleaned_up || steps_done < 1 || steps_done > 2 || t < 1.05 || t > 1.7) {
    fprintf(stderr, "unexpected: rc=%d cleanup=%d steps=%d after %.2fs\n", rc,
            cleaned_up, steps_done, t);
    return 1;
  }
  return 0;
}
