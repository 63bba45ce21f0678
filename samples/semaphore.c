/* semaphore.c: bound how many tasks run a section at once.
 *
 * Shows: uva_sem_acquire() is a future done once a permit is ours;
 * uva_sem_release() hands it to the next waiter, first come first served.
 * Ten tasks of 1 s with at most 3 at once run in 4 waves: about 4 s.
 *
 * asyncio original:
 *   sem = asyncio.Semaphore(3)
 *   async def job(i):
 *       async with sem: await asyncio.sleep(1)
 *   await asyncio.gather(*(job(i) for i in range(10)))     # ~4 s
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static uva_sem_t *sem;
static int running, max_running;

static int job(void *arg) {
  int i = (int)(intptr_t)arg;
  int rc = uva_await(uva_sem_acquire(sem), NULL);
  if (rc < 0) return rc;
  if (++running > max_running) max_running = running;
  printf("[%.2fs] job %d start (%d running)\n", elapsed(), i, running);
  rc = uva_await(uva_sleep(1000), NULL);
  running--;
  uva_sem_release(sem); /* on every path that acquired */
  return rc < 0 ? rc : i;
}

static int main_task(void *arg) {
  (void)arg;
  sem = uva_sem_new(3, 0);
  if (sem == NULL) return UV_ENOMEM;
  uva_future_t *fs[10];
  for (int i = 0; i < 10; i++) fs[i] = uva_spawn(job, (void *)(intptr_t)i);
  void *value;
  int rc = uva_await(uva_gather(fs, 10, 0), &value);
  printf("[%.2fs] all done, at most %d at once\n", elapsed(), max_running);
  uva_results_free(value);
  uva_sem_free(sem);
  return rc;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || max_running != 3 || t < 3.9 || t > 4.8) {
    fprintf(stderr, "unexpected: rc=%d, max %d running after %.2fs\n", rc, max_running, t);
    return 1;
  }
  return 0;
}
