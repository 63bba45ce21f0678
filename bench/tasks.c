/* bench/tasks: the task workloads of shared/peers (py_tasks.py, node_tasks.mjs)
 * on uvasync. usage: tasks {spawn|pingpong|timers|memory} [N]
 *
 * Prints one line per run in the peers' format:
 *   workload=spawn peer=uvasync n=200000 wall_s=... ns_per_op=... peak_rss_mb=...
 * wall_s times the whole uva_run (loop creation to close), as the peers time
 * asyncio.run. Results are checked (sums, tokens); a wrong one exits 1.
 * Nothing here asserts on speed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uvasync.h>

static size_t n;
static char extra[256]; /* workload-specific fields, " key=value ..." */

#define CHECK(cond, ...)                                       \
  do {                                                         \
    if (!(cond)) {                                             \
      fprintf(stderr, "tasks: check failed: " __VA_ARGS__);    \
      fprintf(stderr, "\n");                                   \
      return 1;                                                \
    }                                                          \
  } while (0)

static void add_field(const char *key, const char *fmt, double v) {
  size_t len = strlen(extra);
  int k = snprintf(extra + len, sizeof extra - len, " %s=", key);
  if (k > 0 && (size_t)k < sizeof extra - len)
    snprintf(extra + len + (size_t)k, sizeof extra - len - (size_t)k, fmt, v);
}

static double peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0;
}

static long rss_bytes(void) { /* resident pages from /proc/self/statm */
  long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

/* Gather n futures; check that the statuses sum to 0 + 1 + ... + n-1. */
static int gather_and_check(uva_future_t **fs, size_t count) {
  void *value;
  int rc = uva_await(uva_gather(fs, count, 0), &value);
  CHECK(rc == 0, "gather: %s", uva_err_name(rc));
  uva_results_t *res = value;
  unsigned long long sum = 0;
  int bad = res->n != count;
  for (size_t i = 0; i < res->n; i++) {
    if (res->item[i].status < 0) bad = 1;
    sum += (unsigned long long)res->item[i].status;
  }
  uva_results_free(res);
  CHECK(!bad && sum == (unsigned long long)count * (count - 1) / 2,
        "sum %llu, want %llu", sum, (unsigned long long)count * (count - 1) / 2);
  return 0;
}

/* ---------------------------------------------------------------- spawn */
/* N tasks, each awaits sleep(0) once and returns its index; gather all. */

static int spawn_task(void *arg) {
  int rc = uva_yield();
  return rc < 0 ? rc : (int)(intptr_t)arg;
}

static int spawn_pass(void) {
  uva_future_t **fs = malloc(n * sizeof *fs);
  CHECK(fs != NULL, "out of memory");
  for (size_t i = 0; i < n; i++) fs[i] = uva_spawn(spawn_task, (void *)(intptr_t)i);
  int rc = gather_and_check(fs, n);
  free(fs);
  return rc;
}

static int spawn_main(void *arg) {
  (void)arg;
  return spawn_pass();
}

/* Same process, a new loop: one pass (a fresh loop has a fresh stack pool),
 * then a second pass on that loop, whose stacks and free lists are warm. */
static double rerun_s, warm_s;
static int spawn_twice_main(void *arg) {
  (void)arg;
  uint64_t a = uv_hrtime();
  if (spawn_pass() != 0) return 1;
  uint64_t b = uv_hrtime();
  if (spawn_pass() != 0) return 1;
  uint64_t c = uv_hrtime();
  rerun_s = (double)(b - a) / 1e9;
  warm_s = (double)(c - b) / 1e9;
  return 0;
}

/* ------------------------------------------------------------- pingpong */
/* Two tasks pass a token through two queues, n round trips. */

static uva_queue_t *q1, *q2;

static int pong(void *arg) {
  (void)arg;
  for (size_t i = 0; i < n; i++) {
    void *item;
    int rc = uva_await(uva_queue_get(q1), &item);
    if (rc < 0) return rc;
    rc = uva_await(uva_queue_put(q2, item), NULL);
    if (rc < 0) return rc;
  }
  return 0;
}

static int pingpong_main(void *arg) {
  (void)arg;
  q1 = uva_queue_new(NULL);
  q2 = uva_queue_new(NULL);
  CHECK(q1 && q2, "out of memory");
  uva_future_t *t = uva_spawn(pong, NULL);
  for (size_t i = 0; i < n; i++) {
    int rc = uva_await(uva_queue_put(q1, (void *)(intptr_t)i), NULL);
    CHECK(rc == 0, "put: %s", uva_err_name(rc));
    void *item;
    rc = uva_await(uva_queue_get(q2), &item);
    CHECK(rc == 0 && (intptr_t)item == (intptr_t)i, "round trip %zu: rc %s, token %ld",
          i, uva_err_name(rc), (long)(intptr_t)item);
  }
  int rc = uva_await(t, NULL);
  CHECK(rc == 0, "pong: %s", uva_err_name(rc));
  uva_queue_free(q1);
  uva_queue_free(q2);
  return 0;
}

/* --------------------------------------------------------------- timers */
/* n tasks each sleep (i * 7919) % 100 ms; gather all. */

static int timer_task(void *arg) {
  size_t i = (size_t)(intptr_t)arg;
  int rc = uva_await(uva_sleep((i * 7919) % 100), NULL);
  return rc < 0 ? rc : (int)i;
}

static int timers_main(void *arg) {
  (void)arg;
  uva_future_t **fs = malloc(n * sizeof *fs);
  CHECK(fs != NULL, "out of memory");
  for (size_t i = 0; i < n; i++) fs[i] = uva_spawn(timer_task, (void *)(intptr_t)i);
  int rc = gather_and_check(fs, n);
  free(fs);
  return rc;
}

/* --------------------------------------------------------------- memory */
/* n tasks park on one event; RSS once all are parked minus RSS before. */

static uva_event_t *ev;
static size_t parked;

static int event_task(void *arg) {
  parked++;
  int rc = uva_await(uva_event_wait(ev), NULL);
  return rc < 0 ? rc : (int)(intptr_t)arg;
}

static int memory_main(void *arg) {
  (void)arg;
  ev = uva_event_new();
  uva_future_t **fs = malloc(n * sizeof *fs); /* allocated before "before" */
  CHECK(ev && fs, "out of memory");
  memset(fs, 0, n * sizeof *fs);
  long before = rss_bytes();
  for (size_t i = 0; i < n; i++) fs[i] = uva_spawn(event_task, (void *)(intptr_t)i);
  uva_yield(); /* let every task run up to its wait, as the peers do */
  uva_yield();
  long after = rss_bytes();
  CHECK(parked == n, "%zu tasks parked, want %zu", parked, n);
  uva_event_set(ev);
  int rc = gather_and_check(fs, n);
  free(fs);
  uva_event_free(ev);
  CHECK(before > 0 && after > 0, "cannot read /proc/self/statm");
  add_field("rss_delta_mb", "%.1f", (double)(after - before) / (1 << 20));
  add_field("bytes_per_task", "%.0f", (double)(after - before) / (double)n);
  return rc;
}

/* ----------------------------------------------------------------- main */

static void report(const char *wl, double wall, double peak) {
  printf("workload=%s peer=uvasync n=%zu wall_s=%.4f ns_per_op=%.0f%s peak_rss_mb=%.1f\n",
         wl, n, wall, wall * 1e9 / (double)n, extra, peak);
  fflush(stdout);
}

int main(int argc, char **argv) {
  static const struct { const char *name; uva_task_fn fn; size_t n; } wls[] = {
    {"spawn", spawn_main, 200000},
    {"pingpong", pingpong_main, 1000000},
    {"timers", timers_main, 100000},
    {"memory", memory_main, 100000},
  };
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s {spawn|pingpong|timers|memory} [N]\n", argv[0]);
    return 2;
  }
  for (size_t w = 0; w < sizeof wls / sizeof wls[0]; w++) {
    if (strcmp(argv[1], wls[w].name) != 0) continue;
    n = argc > 2 ? strtoul(argv[2], NULL, 10) : wls[w].n;
    if (n < 1 || n > 100000000) {
      fprintf(stderr, "tasks: N must be 1..100000000\n");
      return 2;
    }
    uint64_t t0 = uv_hrtime();
    int rc = uva_run(wls[w].fn, NULL);
    double wall = (double)(uv_hrtime() - t0) / 1e9;
    double peak = peak_rss_mb(); /* before any extra pass */
    if (rc != 0) {
      fprintf(stderr, "tasks: %s failed: %s\n", wls[w].name, uva_err_name(rc));
      return 1;
    }
    if (wls[w].fn == spawn_main) {
      rc = uva_run(spawn_twice_main, NULL);
      if (rc != 0) {
        fprintf(stderr, "tasks: spawn (second run) failed: %s\n", uva_err_name(rc));
        return 1;
      }
      add_field("rerun_ns_per_op", "%.0f", rerun_s * 1e9 / (double)n);
      add_field("warm_ns_per_op", "%.0f", warm_s * 1e9 / (double)n);
    }
    report(wls[w].name, wall, peak);
    return 0;
  }
  fprintf(stderr, "tasks: unknown workload '%s'\n", argv[1]);
  return 2;
}
