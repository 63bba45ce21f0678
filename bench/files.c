/* bench/files: the to_thread_files workload of shared/peers on uvasync and
 * on raw libuv. Read every file of DIR (10,000 x 4 KiB, page cache warm)
 * with 64 in flight, as py_files.py and node_files.mjs do.
 *
 * usage: files {uvasync|uvasync-read_file|raw_libuv} [DIR]
 *   uvasync            64 tasks, each open / read (64 KiB buffer) / close
 *                      with uva_fs_* futures, read until a short read
 *   uvasync-read_file  64 tasks, each uva_fs_read_file (open, fstat, read, close)
 *   raw_libuv          the same open / read / close chain as plain uv_fs_*
 *                      callbacks, 64 chains: the floor for the library
 * Prints one line in the peers' format. Checks the byte total. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uvasync.h>

#define CONC 64

static char **paths;
static size_t npaths, next_path;
static long long total;

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  size_t cap = 1024;
  paths = malloc(cap * sizeof *paths);
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    if (npaths == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    paths[npaths] = malloc(len);
    snprintf(paths[npaths++], len, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  qsort(paths, npaths, sizeof *paths, cmp);
  return 0;
}

/* ---------------------------------------------------------------- uvasync */

static int worker(void *arg) {
  char buf[65536];
  (void)arg;
  while (next_path < npaths) {
    const char *p = paths[next_path++];
    int fd = uva_await(uva_fs_open(p, O_RDONLY, 0), NULL);
    if (fd < 0) return fd;
    for (;;) {
      int r = uva_await(uva_fs_read(fd, buf, sizeof buf, -1), NULL);
      if (r < 0) return r;
      total += r;
      if (r < (int)sizeof buf) break; /* short read of a regular file: EOF */
    }
    int rc = uva_await(uva_fs_close(fd), NULL);
    if (rc < 0) return rc;
  }
  return 0;
}

static int worker_read_file(void *arg) {
  (void)arg;
  while (next_path < npaths) {
    int r = uva_await(uva_fs_read_file(paths[next_path++], 0), NULL);
    if (r < 0) return r;
    total += r;
  }
  return 0;
}

static int run_uvasync(void *use_read_file) {
  uva_future_t *fs[CONC];
  for (int i = 0; i < CONC; i++) fs[i] = uva_spawn(use_read_file ? worker_read_file : worker, NULL);
  return uva_await(uva_gather(fs, CONC, 0), NULL);
}

/* -------------------------------------------------------------- raw libuv */

typedef struct chain {
  uv_fs_t req;
  uv_file fd;
  char buf[65536];
} chain_t;

static void on_read(uv_fs_t *req);

static void start(chain_t *c);
static void on_close(uv_fs_t *req) {
  uv_fs_req_cleanup(req);
  start((chain_t *)req);
}
static void on_read(uv_fs_t *req) {
  chain_t *c = (chain_t *)req;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r > 0) total += r;
  if (r == (ssize_t)sizeof c->buf) {
    uv_buf_t b = uv_buf_init(c->buf, sizeof c->buf);
    uv_fs_read(req->loop, &c->req, c->fd, &b, 1, -1, on_read);
    return;
  }
  uv_fs_close(req->loop, &c->req, c->fd, on_close);
}
static void on_open(uv_fs_t *req) {
  chain_t *c = (chain_t *)req;
  c->fd = (uv_file)req->result;
  uv_fs_req_cleanup(req);
  if (c->fd < 0) {
    fprintf(stderr, "open failed: %s\n", uv_strerror(c->fd));
    exit(1);
  }
  uv_buf_t b = uv_buf_init(c->buf, sizeof c->buf);
  uv_fs_read(req->loop, &c->req, c->fd, &b, 1, -1, on_read);
}
static void start(chain_t *c) {
  if (next_path < npaths)
    uv_fs_open(uv_default_loop(), &c->req, paths[next_path++], O_RDONLY, 0, on_open);
}

int main(int argc, char **argv) {
  const char *peer = argc > 1 ? argv[1] : "uvasync";
  const char *dir = argc > 2 ? argv[2] : "/tmp/files-bench";
  if (list(dir) != 0 || npaths == 0) {
    fprintf(stderr, "files: no files in %s (run shared/peers/files_setup.sh)\n", dir);
    return 2;
  }
  uint64_t t0 = uv_hrtime();
  int rc = 0;
  if (strcmp(peer, "raw_libuv") == 0) {
    static chain_t chains[CONC];
    for (int i = 0; i < CONC; i++) start(&chains[i]);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  } else if (strcmp(peer, "uvasync") == 0) {
    rc = uva_run(run_uvasync, NULL);
  } else if (strcmp(peer, "uvasync-read_file") == 0) {
    rc = uva_run(run_uvasync, "read_file");
  } else {
    fprintf(stderr, "usage: files {uvasync|uvasync-read_file|raw_libuv} [DIR]\n");
    return 2;
  }
  double wall = (double)(uv_hrtime() - t0) / 1e9;
  if (rc < 0 || total != 4096LL * (long long)npaths) {
    fprintf(stderr, "files: rc=%s total=%lld (want %lld)\n", uva_err_name(rc), total,
            4096LL * (long long)npaths);
    return 1;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("workload=to_thread_files peer=%s n=%zu conc=%d wall_s=%.4f files_per_s=%.0f "
         "ns_per_op=%.0f peak_rss_mb=%.1f\n",
         peer, npaths, CONC, wall, (double)npaths / wall, wall * 1e9 / (double)npaths,
         (double)ru.ru_maxrss / 1024.0);
  return 0;
}
