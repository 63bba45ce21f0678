/* Files: futures over uv_fs_*, whole-file helpers, errors, cancellation. */
#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/uvasync-test-fs-%d", (int)getpid());
  mkdir(dir, 0755);
}
static const char *in_dir(const char *name) {
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
  return p[k];
}
static int open_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

TASK_TEST(test_fs_write_file_then_read_file) {
  make_dir();
  const char *text = "hello, files\n";
  ck_assert_int_eq(uva_await(uva_fs_write_file(in_dir("a.txt"), text, strlen(text)), NULL), 0);
  void *v;
  int n = uva_await(uva_fs_read_file(in_dir("a.txt"), 0), &v);
  ck_assert_int_eq(n, (int)strlen(text));
  uva_bytes_t *b = v;
  ck_assert_uint_eq(b->len, strlen(text));
  ck_assert_str_eq(b->data, text);
  uva_free(b);
  /* empty file, a file larger than the first read, a limit */
  ck_assert_int_eq(uva_await(uva_fs_write_file(in_dir("empty"), NULL, 0), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_read_file(in_dir("empty"), 0), NULL), 0);
  enum { BIG = 300000 };
  char *big = malloc(BIG);
  for (int i = 0; i < BIG; i++) big[i] = (char)('a' + i % 26);
  ck_assert_int_eq(uva_await(uva_fs_write_file(in_dir("big"), big, BIG), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_read_file(in_dir("big"), 0), &v), BIG);
  ck_assert_int_eq(memcmp(((uva_bytes_t *)v)->data, big, BIG), 0);
  uva_free(v);
  ck_assert_int_eq(uva_await(uva_fs_read_file(in_dir("big"), 1000), NULL), UV_EFBIG);
  ck_assert_int_eq(uva_await(uva_fs_read_file("/proc/self/status", 0), &v) > 0, 1);
  ck_assert(strstr(((uva_bytes_t *)v)->data, "Name:") != NULL); /* st_size 0: grows */
  uva_free(v);
  /* a /proc file longer than one read: read to the end, not to a short read */
  FILE *fp = fopen("/proc/self/maps", "r");
  size_t want = 0;
  char chunk[4096];
  for (size_t k; (k = fread(chunk, 1, sizeof chunk, fp)) > 0;) want += k;
  fclose(fp);
  int got = uva_await(uva_fs_read_file("/proc/self/maps", 0), &v);
  ck_assert_int_gt(got, 0);
  ck_assert(got + 4096 > (int)want && (int)want + 4096 > got); /* maps changes a little */
  uva_free(v);
  free(big);
  return 0;
}

TASK_TEST(test_fs_errors_are_libuv_codes) {
  make_dir();
  ck_assert_int_eq(uva_await(uva_fs_read_file(in_dir("missing"), 0), NULL), UV_ENOENT);
  ck_assert_int_eq(uva_await(uva_fs_open(in_dir("missing"), O_RDONLY, 0), NULL), UV_ENOENT);
  ck_assert_int_eq(uva_await(uva_fs_stat(in_dir("missing")), NULL), UV_ENOENT);
  ck_assert_int_eq(uva_await(uva_fs_write_file("/proc/nope/x", "x", 1), NULL) < 0, 1);
  ck_assert_int_eq(uva_await(uva_fs_rmdir(in_dir("missing")), NULL), UV_ENOENT);
  ck_assert_int_eq(uva_await(uva_fs_close(-1), NULL), UV_EBADF);
  ck_assert_int_eq(uva_await(uva_fs_open(NULL, O_RDONLY, 0), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_fs_rename(NULL, "x"), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_fs_read_file(NULL, 0), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_fs_read(0, NULL, 5, 0), NULL), UV_EINVAL);
  return 0;
}

TASK_TEST(test_fs_descriptor_operations) {
  make_dir();
  const char *p = in_dir("rw");
  int fd = uva_await(uva_fs_open(p, O_RDWR | O_CREAT | O_TRUNC, 0644), NULL);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(uva_await(uva_fs_write(fd, "0123456789", 10, -1), NULL), 10);
  ck_assert_int_eq(uva_await(uva_fs_write(fd, "AB", 2, 3), NULL), 2); /* at an offset */
  char buf[16] = {0};
  ck_assert_int_eq(uva_await(uva_fs_read(fd, buf, sizeof buf, 0), NULL), 10);
  ck_assert_str_eq(buf, "012AB56789");
  ck_assert_int_eq(uva_await(uva_fs_read(fd, buf, sizeof buf, 10), NULL), 0); /* EOF */
  ck_assert_int_eq(uva_await(uva_fs_fsync(fd), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_ftruncate(fd, 4), NULL), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_fs_fstat(fd), &v), 0);
  ck_assert_uint_eq(((uv_stat_t *)v)->st_size, 4);
  uva_free(v);
  /* sendfile to a second file */
  int out = uva_await(uva_fs_open(in_dir("sent"), O_WRONLY | O_CREAT | O_TRUNC, 0644), NULL);
  ck_assert_int_eq(uva_await(uva_fs_sendfile(out, fd, 0, 4), NULL), 4);
  ck_assert_int_eq(uva_await(uva_fs_close(out), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_close(fd), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_stat(in_dir("sent")), &v), 0);
  ck_assert_uint_eq(((uv_stat_t *)v)->st_size, 4);
  uva_free(v);
  return 0;
}

TASK_TEST(test_fs_directory_and_name_operations) {
  make_dir();
  const char *sub = in_dir("sub");
  uva_await(uva_fs_rmdir(sub), NULL);
  ck_assert_int_eq(uva_await(uva_fs_mkdir(sub, 0755), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_mkdir(sub, 0755), NULL), UV_EEXIST);
  char p1[600], p2[600];
  snprintf(p1, sizeof p1, "%s/one", sub);
  snprintf(p2, sizeof p2, "%s/two", sub);
  ck_assert_int_eq(uva_await(uva_fs_write_file(p1, "1", 1), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_copyfile(p1, p2, 0), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_copyfile(p1, p2, UV_FS_COPYFILE_EXCL), NULL), UV_EEXIST);
  void *v;
  ck_assert_int_eq(uva_await(uva_fs_scandir(sub), &v), 2);
  uva_dirents_t *d = v;
  ck_assert_uint_eq(d->n, 2);
  int seen = 0;
  for (size_t i = 0; i < d->n; i++) {
    seen |= strcmp(d->item[i].name, "one") == 0 ? 1 : strcmp(d->item[i].name, "two") == 0 ? 2 : 4;
    ck_assert_int_eq(d->item[i].type, UV_DIRENT_FILE);
  }
  ck_assert_int_eq(seen, 3);
  uva_free(d);
  char p3[600];
  snprintf(p3, sizeof p3, "%s/three", sub);
  ck_assert_int_eq(uva_await(uva_fs_rename(p2, p3), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_rmdir(sub), NULL), UV_ENOTEMPTY);
  ck_assert_int_eq(uva_await(uva_fs_unlink(p1), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_unlink(p3), NULL), 0);
  ck_assert_int_eq(uva_await(uva_fs_rmdir(sub), NULL), 0);
  return 0;
}

/* Cancel whatever is in flight: every future still completes, no
 * descriptor and no allocation is left behind. */
static int reader(void *arg) {
  (void)arg;
  void *v;
  int rc = uva_await(uva_fs_read_file(in_dir("big2"), 0), &v);
  if (rc >= 0) uva_free(v);
  return rc == UV_ECANCELED || rc >= 0 ? 0 : rc;
}
TASK_TEST(test_fs_cancel_in_flight_leaks_nothing) {
  make_dir();
  enum { BIG = 1 << 20 };
  char *big = calloc(1, BIG);
  ck_assert_int_eq(uva_await(uva_fs_write_file(in_dir("big2"), big, BIG), NULL), 0);
  free(big);
  int fds = open_fds();
  for (int round = 0; round < 5; round++) {
    uva_future_t *ts[40];
    for (int i = 0; i < 40; i++) ts[i] = uva_spawn(reader, NULL);
    for (int y = 0; y < round; y++) uva_yield(); /* cancel at different stages */
    for (int i = 0; i < 40; i++) uva_cancel(ts[i]);
    for (int i = 0; i < 40; i++) { /* cancelled before starting, or handled it */
      int rc = uva_await(ts[i], NULL);
      ck_assert(rc == 0 || rc == UV_ECANCELED);
    }
  }
  /* opens cancelled mid-flight: none of their descriptors survive */
  for (int i = 0; i < 50; i++) {
    uva_future_t *f = uva_fs_open(in_dir("big2"), O_RDONLY, 0);
    uva_cancel(f);
    int fd = uva_await(f, NULL);
    if (fd >= 0) uva_await(uva_fs_close(fd), NULL);
  }
  ck_assert_int_eq(open_fds(), fds);
  return 0;
}

/* Holding libuv's pool: jobs that say they started (through a tally on
 * the loop, bumped with uva_call_threadsafe) and wait for the test's go.
 * With every pool thread held, a request is surely queued. */
typedef struct {
  uva_loop_t *loop;
  int n;
  uva_event_t *ev;
} tally_t;
static tally_t started;
static uv_sem_t go;
static void tally_bump(void *arg) {
  tally_t *t = arg;
  t->n++;
  uva_event_set(t->ev);
}
static void tally_wait(tally_t *t, int n) {
  while (t->n < n) {
    uva_event_clear(t->ev);
    ck_assert_int_eq(uva_await(uva_event_wait(t->ev), NULL), 0);
  }
}
static int hold_job(void *arg, void **value) {
  (void)arg;
  (void)value;
  if (uva_call_threadsafe(started.loop, tally_bump, &started) != 0) abort();
  uv_sem_wait(&go);
  return 0;
}
static int pool_size(void) { /* as libuv 1.44 reads it */
  const char *v = getenv("UV_THREADPOOL_SIZE");
  int n = v ? atoi(v) : 4;
  return n < 1 ? 1 : n > 1024 ? 1024 : n;
}
static uva_future_t *held[1024];
static void hold_pool(void) {
  started.loop = uva_loop_current();
  started.n = 0;
  started.ev = uva_event_new();
  uv_sem_init(&go, 0);
  for (int i = 0; i < pool_size(); i++) held[i] = uva_to_thread(NULL, hold_job, NULL, NULL);
  tally_wait(&started, pool_size());
}
static void release_pool(void) {
  for (int i = 0; i < pool_size(); i++) uv_sem_post(&go);
  for (int i = 0; i < pool_size(); i++) ck_assert_int_eq(uva_await(held[i], NULL), 0);
  uva_event_free(started.ev);
  uv_sem_destroy(&go);
}

/* Cancelled before it started: done at once with UV_ECANCELED, and it
 * never happens (the write wrote nothing, the open opened nothing). */
TASK_TEST(test_fs_cancel_queued_request_completes_at_once) {
  make_dir();
  int fds = open_fds();
  int fd = uva_await(uva_fs_open(in_dir("queued"), O_RDWR | O_CREAT | O_TRUNC, 0644), NULL);
  ck_assert_int_ge(fd, 0);
  hold_pool();
  uva_future_t *w = uva_fs_write(fd, "never", 5, 0);
  uva_future_t *o = uva_fs_open(in_dir("queued"), O_RDONLY, 0);
  ck_assert_int_eq(uva_cancel(w), 1);
  ck_assert_int_eq(uva_cancel(o), 1);
  ck_assert_int_eq(uva_future_status(w), UV_ECANCELED); /* at once: the pool is still held */
  ck_assert_int_eq(uva_future_status(o), UV_ECANCELED);
  ck_assert_int_eq(uva_await(w, NULL), UV_ECANCELED);
  ck_assert_int_eq(uva_await(o, NULL), UV_ECANCELED);
  release_pool();
  void *v;
  ck_assert_int_eq(uva_await(uva_fs_fstat(fd), &v), 0);
  ck_assert_uint_eq(((uv_stat_t *)v)->st_size, 0); /* nothing was written */
  uva_free(v);
  ck_assert_int_eq(uva_await(uva_fs_close(fd), NULL), 0);
  ck_assert_int_eq(open_fds(), fds);
  return 0;
}

/* Cancelled once it has started: the real result. The loop's thread
 * itself waits (blocking, so no callback can come in between) for the
 * request to have run, then cancels: an open of a FIFO gets through only
 * once the open of the other end runs in the pool; a pool write into a
 * full pipe has run once its bytes can be read. */
TASK_TEST(test_fs_cancel_started_request_gives_real_result) {
  make_dir();
  int fds = open_fds();
  /* open */
  const char *fifo = in_dir("fifo");
  unlink(fifo);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  uva_future_t *o = uva_fs_open(fifo, O_RDONLY, 0);
  int wfd = open(fifo, O_WRONLY); /* returns once the pool's open runs */
  ck_assert_int_ge(wfd, 0);
  ck_assert_int_eq(uva_cancel(o), 1);
  int fd = uva_await(o, NULL);
  ck_assert_int_ge(fd, 0); /* the open happened: its fd is ours */
  ck_assert_int_eq(write(wfd, "hi", 2), 2);
  char two[2];
  ck_assert_int_eq(uva_await(uva_fs_read(fd, two, 2, -1), NULL), 2); /* and it works */
  close(wfd);
  ck_assert_int_eq(uva_await(uva_fs_close(fd), NULL), 0);
  unlink(fifo);
  /* write */
  int pp[2];
  ck_assert_int_eq(pipe(pp), 0);
  int cap = fcntl(pp[1], F_GETPIPE_SZ);
  ck_assert_int_gt(cap, 0);
  char *buf = calloc(1, (size_t)cap);
  ck_assert_int_eq(write(pp[1], buf, (size_t)cap), cap); /* full */
  uva_future_t *w = uva_fs_write(pp[1], buf, 100, -1);
  char sink[4096]; /* not buf: the write borrows it until it is done */
  for (size_t got = 0; got < (size_t)cap + 100;) { /* blocks until the write ran */
    ssize_t r = read(pp[0], sink, sizeof sink);
    ck_assert_int_gt(r, 0);
    got += (size_t)r;
  }
  ck_assert_int_eq(uva_cancel(w), 1);
  ck_assert_int_eq(uva_await(w, NULL), 100); /* its byte count, not UV_ECANCELED */
  close(pp[0]);
  close(pp[1]);
  free(buf);
  ck_assert_int_eq(open_fds(), fds);
  return 0;
}

/* An open whose future nobody holds: the library closes what it opened. */
static int drop_opens(void *arg) {
  if (arg == NULL) return 0; /* a first run: libuv's process-wide fds */
  for (int i = 0; i < 20; i++) uva_release(uva_fs_open(in_dir("dropped"), O_RDONLY, 0));
  return 0; /* the loop waits for the opens before it closes */
}
START_TEST(test_fs_dropped_open_closes_its_fd) {
  make_dir();
  FILE *f = fopen(in_dir("dropped"), "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  ck_assert_int_eq(RUN_MAIN(drop_opens, NULL), 0);
  int fds = open_fds();
  ck_assert_int_eq(RUN_MAIN(drop_opens, "open"), 0);
  ck_assert_int_eq(open_fds(), fds);
}
END_TEST

static int fire_and_forget(void *arg) {
  (void)arg;
  make_dir();
  uva_release(uva_fs_write_file(in_dir("late"), "late", 4)); /* nobody awaits */
  return 0;
}
START_TEST(test_fs_loop_close_waits_for_requests_in_flight) {
  ck_assert_int_eq(RUN_MAIN(fire_and_forget, NULL), 0);
  FILE *f = fopen(in_dir("late"), "r");
  ck_assert_ptr_nonnull(f);
  char buf[8] = {0};
  ck_assert_uint_eq(fread(buf, 1, sizeof buf, f), 4);
  fclose(f);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("fs");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_fs_write_file_then_read_file);
  tcase_add_test(tc, test_fs_errors_are_libuv_codes);
  tcase_add_test(tc, test_fs_descriptor_operations);
  tcase_add_test(tc, test_fs_directory_and_name_operations);
  tcase_add_test(tc, test_fs_cancel_in_flight_leaks_nothing);
  tcase_add_test(tc, test_fs_cancel_queued_request_completes_at_once);
  tcase_add_test(tc, test_fs_cancel_started_request_gives_real_result);
  tcase_add_test(tc, test_fs_dropped_open_closes_its_fd);
  tcase_add_test(tc, test_fs_loop_close_waits_for_requests_in_flight);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
