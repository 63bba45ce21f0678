/* create_task.c: start tasks first, await them later.
 *
 * Shows: uva_spawn() schedules a task right away (it starts on the next loop
 * turn); the spawner keeps running and awaits the task futures when it needs
 * the results. Tasks of 1 s and 2 s, awaited in turn: about 2 s in all.
 *
 * asyncio original:
 *   async def main():
 *       t1 = asyncio.create_task(work("A", 1))
 *       t2 = asyncio.create_task(work("B", 2))
 *       await t1; await t2          # ~2 s, not 3
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

struct job { const char *name; int ms; };

static int work(void *arg) {
  struct job *j = arg;
  printf("[%.2fs] %s start\n", elapsed(), j->name);
  int rc = uva_await(uva_sleep((uint64_t)j->ms), NULL);
  printf("[%.2fs] %s done\n", elapsed(), j->name);
  return rc < 0 ? rc : j->ms;
}

static double t_first, t_second;

static int main_task(void *arg) {
  (void)arg;
  static struct job a = {"A", 1000}, b = {"B", 2000};
  uva_future_t *t1 = uva_spawn(work, &a);
  uva_future_t *t2 = uva_spawn(work, &b);
  printf("[%.2fs] both tasks created\n", elapsed());

  int r1 = uva_await(t1, NULL); /* consumes t1 */
  t_first = elapsed();
  printf("[%.2fs] A returned %d\n", t_first, r1);
  int r2 = uva_await(t2, NULL); /* B has been running all along */
  t_second = elapsed();
  printf("[%.2fs] B returned %d\n", t_second, r2);
  return r1 == 1000 && r2 == 2000 ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  if (rc != 0 || t_first < 0.95 || t_first > 1.5 || t_second < 1.9 || t_second > 2.6) {
    fprintf(stderr, "unexpected: rc=%d, A at %.2fs (want ~1), B at %.2fs (want ~2)\n",
            rc, t_first, t_second);
    return 1;
  }
  return 0;
}
