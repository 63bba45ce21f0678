/* to_thread.c: push a blocking call onto a thread; the loop keeps ticking.
 *
 * Shows: uva_to_thread() runs a plain blocking C function on libuv's thread
 * pool and gives back a future of its result. While the slow read blocks a
 * pool thread for a second, the ticker task keeps running on the loop.
 *
 * asyncio original:
 *   def blocking_read(path):
 *       time.sleep(1); return open(path).read()
 *   async def main():
 *       data, _ = await asyncio.gather(asyncio.to_thread(blocking_read, p), ticker())
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

static uint64_t t0;
static double elapsed(void) { return (double)(uv_hrtime() - t0) / 1e9; }
static int ticks_during_read, read_done;

/* Ordinary blocking C: runs on a pool thread, never touches the loop. */
static int blocking_read(void *path, void **value) {
  uv_sleep(1000); /* a slow disk */
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
    if (!read_done) ticks_during_read++;
    if (uva_await(uva_sleep(250), NULL) < 0) return -1;
  }
  return 0;
}

static int main_task(void *arg) {
  (void)arg;
  uva_future_t *t = uva_spawn(ticker, NULL);
  void *text;
  int n = uva_await(uva_to_thread(NULL, blocking_read, "/etc/os-release", free), &text);
  read_done = 1;
  if (n < 0) return n;
  char *nl = strchr(text, '\n');
  if (nl) *nl = '\0';
  printf("[%.2fs] read %d bytes: %s\n", elapsed(), n, (char *)text);
  free(text);
  return uva_await(t, NULL);
}

int main(void) {
  t0 = uv_hrtime();
  int rc = uva_run(main_task, NULL);
  double t = elapsed();
  if (rc != 0 || ticks_during_read < 3 || t < 0.95 || t > 1.8) {
    fprintf(stderr, "unexpected: rc=%d, %d ticks during the read, %.2fs\n", rc,
            ticks_during_read, t);
    return 1;
  }
  return 0;
}
