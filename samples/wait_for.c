/* wait_for.c: give an operation a deadline.
 *
 * Shows: uva_wait_for() consumes a future; when the timeout passes it
 * cancels the operation, waits until it has really ended, and completes with
 * UV_ETIMEDOUT. A 5 s operation with a 2 s timeout: UV_ETIMEDOUT after ~2 s,
 * and the operation saw its cancel.
 *
 * asyncio original:
 *   try:
 *       await asyncio.wait_for(slow_operation(), timeout=2)   # sleeps 5 s
 *   except TimeoutError:
 *       print("timed out")
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int op_saw_cancel;

static int slow_operation(void *arg) {
  (void)arg;
  printf("[%.2fs] operation start (takes 5 s)\n", elapsed());
  int rc = uva_await(uva_sleep(5000), NULL);
  if (rc == UV_ECANCELED) op_saw_cancel = 1;
  printf("[%.2fs] operation ends: %s\n", elapsed(), rc ? uva_err_name(rc) : "done");
  return rc;
}

static int main_task(void *arg) {
  (void)arg;
  int rc = uva_await(uva_wait_for(uva_spawn(slow_operation, NULL), 2000), NULL);
  printf("[%.2fs] wait_for: %s\n", elapsed(), uva_err_name(rc));
  return rc == UV_ETIMEDOUT ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || !op_saw_cancel || t < 1.95 || t > 2.6) {
    fprintf(stderr, "unexpected: rc=%d cancel seen=%d after %.2fs\n", rc, op_saw_cancel, t);
    return 1;
  }
  return 0;
}
