/* hello.c: the smallest uvasync program.
 *
 * Shows: uva_run() makes a loop and runs a main task on it; uva_await()
 * suspends that task on a future (a 1 s sleep) without blocking the thread.
 *
 * asyncio original:
 *   async def main():
 *       print("hello")
 *       await asyncio.sleep(1)
 *       print("world")
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int main_task(void *arg) {
  (void)arg;
  printf("[%.2fs] hello\n", elapsed());
  int rc = uva_await(uva_sleep(1000), NULL); /* consumes the sleep future */
  printf("[%.2fs] world\n", elapsed());
  return rc;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || t < 0.95 || t > 1.6) {
    fprintf(stderr, "unexpected: rc=%s after %.2fs (want 0 after ~1s)\n",
            uva_err_name(rc), t);
    return 1;
  }
  return 0;
}
