/* bench/http: the http_small / http_large workloads of shared/peers on the
 * uvasync HTTP client: N GETs of URL with C in flight (C tasks, each
 * awaiting one uva_http_get after another on one client session).
 * usage: http WORKLOAD URL N C     e.g. http http_small http://127.0.0.1:8089/1k.bin 20000 100
 * Prints one line in the peers' format; checks every status is 200. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <uvasync.h>

static const char *url;
static long n, conc, started, failed;
static double body_bytes;
static uva_http_client_t *client;

static int worker(void *arg) {
  (void)arg;
  while (started < n) {
    started++;
    void *v;
    int rc = uva_await(uva_http_get(client, url), &v);
    uva_http_response_t *r = v;
    if (rc < 0 || r->status != 200) failed++;
    else body_bytes += (double)r->body_len;
    uva_http_response_free(r);
  }
  return 0;
}

static int run(void *arg) {
  (void)arg;
  uva_http_client_opts_t opts = {0};
  int rc = uva_http_client_new(&client, &opts);
  if (rc < 0) return rc;
  uva_future_t **fs = malloc(sizeof *fs * (size_t)conc);
  for (long i = 0; i < conc; i++) fs[i] = uva_spawn(worker, NULL);
  rc = uva_await(uva_gather(fs, (size_t)conc, 0), NULL);
  free(fs);
  uva_http_client_free(client);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s WORKLOAD URL N C\n", argv[0]);
    return 2;
  }
  url = argv[2];
  n = atol(argv[3]);
  conc = atol(argv[4]);
  if (n <= 0 || conc <= 0) return 2;
  uint64_t t0 = uv_hrtime();
  int rc = uva_run(run, NULL);
  double wall = (double)(uv_hrtime() - t0) / 1e9;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("workload=%s peer=uvasync n=%ld conc=%ld failed=%ld wall_s=%.4f req_per_s=%.0f "
         "mb_per_s=%.1f peak_rss_mb=%.1f\n",
         argv[1], n, conc, failed, wall, (double)n / wall, body_bytes / wall / 1e6,
         (double)ru.ru_maxrss / 1024.0);
  return rc < 0 || failed ? 1 : 0;
}
