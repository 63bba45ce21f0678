/* producer_consumer.c: hand work from one task to another through a queue.
 *
 * Shows: uva_queue_put/get return futures to await; the consumer marks each
 * item with uva_queue_task_done, so uva_queue_join() completes once every
 * item put has been processed. Then the idle consumer is cancelled.
 * Five items, one a second: about 5 s.
 *
 * asyncio original:
 *   async def consumer(q):
 *       while True: print(await q.get()); q.task_done()
 *   q = asyncio.Queue(); c = asyncio.create_task(consumer(q))
 *   for i in range(5): await asyncio.sleep(1); await q.put(i)
 *   await q.join(); c.cancel()
 */
#include <stdio.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static int consumed, in_order = 1;

static int consumer(void *arg) {
  uva_queue_t *q = arg;
  for (;;) {
    void *item;
    int rc = uva_await(uva_queue_get(q), &item);
    if (rc < 0) { /* cancelled while waiting for the next item */
      printf("[%.2fs] consumer stops: %s\n", elapsed(), uva_err_name(rc));
      return rc;
    }
    int i = (int)(intptr_t)item;
    printf("[%.2fs] consumed %d\n", elapsed(), i);
    if (i != consumed++) in_order = 0;
    uva_queue_task_done(q);
  }
}

static int main_task(void *arg) {
  (void)arg;
  uva_queue_t *q = uva_queue_new(NULL); /* unbounded FIFO of plain pointers */
  if (q == NULL) return UV_ENOMEM;
  uva_future_t *c = uva_spawn(consumer, q);
  for (int i = 0; i < 5; i++) {
    uva_await(uva_sleep(1000), NULL);
    printf("[%.2fs] produced %d\n", elapsed(), i);
    uva_await(uva_queue_put(q, (void *)(intptr_t)i), NULL);
  }
  uva_await(uva_queue_join(q), NULL);
  printf("[%.2fs] all items processed\n", elapsed());
  uva_cancel(c);
  int st = uva_await(c, NULL);
  uva_queue_free(q);
  return st == UV_ECANCELED && consumed == 5 && in_order ? 0 : 1;
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || t < 4.9 || t > 5.8) {
    fprintf(stderr, "unexpected: rc=%d, %d items consumed (in order: %d) after %.2fs\n",
            rc, consumed, in_order, t);
    return 1;
  }
  return 0;
}
