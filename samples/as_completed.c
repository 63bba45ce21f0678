/* as_completed.c: take results in the order they complete.
 *
 * Shows: uva_as_completed() consumes the futures and hands them back one by
 * one as they finish; each uva_as_completed_next() is a future whose value is
 * the next finished future (await it with out to own that future, then await
 * that for its result). Tasks of 2 s and 1 s: the 1 s result comes first.
 *
 * asyncio original:
 *   async def main():
 *       for coro in asyncio.as_completed([work("slow", 2), work("fast", 1)]):
 *           print(await coro)        # fast after ~1 s, slow after ~2 s
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int work(void *arg) {
  int ms = (int)(intptr_t)arg;
  int rc = uva_await(uva_sleep((uint64_t)ms), NULL);
  return rc < 0 ? rc : ms;
}

static int main_task(void *arg) {
  (void)arg;
  uva_future_t *fs[2] = {uva_spawn(work, (void *)2000), uva_spawn(work, (void *)1000)};
  uva_as_completed_t *it = uva_as_completed(fs, 2, -1); /* consumes fs */
  if (it == NULL) return UV_ENOMEM;
  int got[2], n = 0, ok = 1;
  for (;;) {
    void *next;
    int rc = uva_await(uva_as_completed_next(it), &next);
    if (rc == UV_EOF) break; /* every future handed out */
    if (rc < 0 || n == 2) { ok = 0; break; }
    int result = uva_await((uva_future_t *)next, NULL); /* consumes it */
    double t = elapsed();
    printf("[%.2fs] got %d\n", t, result);
    if (t < result / 1000.0 - 0.05 || t > result / 1000.0 + 0.5) ok = 0;
    got[n++] = result;
  }
  uva_as_completed_free(it);
  return ok && n == 2 && got[0] == 1000 && got[1] == 2000 ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  if (rc != 0) {
    fprintf(stderr, "unexpected: want 1000 at ~1 s then 2000 at ~2 s\n");
    return 1;
  }
  return 0;
}
