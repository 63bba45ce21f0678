/* gather.c: run two tasks concurrently and collect both results.
 *
 * Shows: uva_gather() consumes the futures it is given and completes when
 * all are done; its value is a uva_results_t with one outcome per future,
 * in the order given (not the order they finished). A sleeps 2 s, B 1 s:
 * the whole thing takes about 2 s, not 3.
 *
 * asyncio original:
 *   async def work(name, secs):
 *       await asyncio.sleep(secs); return secs
 *   async def main():
 *       print(await asyncio.gather(work("A", 2), work("B", 1)))
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <string.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

struct job { const char *name; int ms; };
static char finish_order[8]; /* names in the order the jobs ended */

static int work(void *arg) {
  struct job *j = arg;
  printf("[%.2fs] %s start\n", elapsed(), j->name);
  int rc = uva_await(uva_sleep((uint64_t)j->ms), NULL);
  if (rc < 0) return rc;
  printf("[%.2fs] %s done\n", elapsed(), j->name);
  strcat(finish_order, j->name);
  return j->ms; /* a task's non-negative return value is its status */
}

static int main_task(void *arg) {
  (void)arg;
  static struct job a = {"A", 2000}, b = {"B", 1000};
  uva_future_t *fs[2] = {uva_spawn(work, &a), uva_spawn(work, &b)};
  void *value;
  int rc = uva_await(uva_gather(fs, 2, 0), &value); /* consumes fs[0], fs[1] */
  if (rc < 0) return rc;
  uva_results_t *res = value; /* ours now: free it */
  printf("[%.2fs] results: A=%d B=%d\n", elapsed(), res->item[0].status,
         res->item[1].status);
  int ok = res->n == 2 && res->item[0].status == 2000 && res->item[1].status == 1000;
  uva_results_free(res);
  return ok ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || t < 1.9 || t > 2.6 || strcmp(finish_order, "BA") != 0) {
    fprintf(stderr, "unexpected: rc=%d after %.2fs, finish order \"%s\" (want BA)\n",
            rc, t, finish_order);
    return 1;
  }
  return 0;
}
