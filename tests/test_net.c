/* Streams and servers: TCP and Unix-domain sockets on loopback, pipes
 * through the subprocess hook, reads, writes, back-pressure, close,
 * cancellation. */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The internal hook for subprocesses (lib/internal.h). */
uva_stream_t *uva__stream_new_pipe(uva_loop_t *loop);
uv_stream_t *uva__stream_handle(uva_stream_t *s);

static const char *sock_path(const char *name) {
  static char p[2][108];
  static int k;
  k ^= 1;
  snprintf(p[k], sizeof p[k], "/tmp/uva-net-%d-%s", (int)getpid(), name);
  return p[k];
}

/* Await a connect and return the stream (NULL on failure, with rc). */
static uva_stream_t *connect_tcp(int port, int *rc) {
  void *v = NULL;
  *rc = uva_await(uva_tcp_connect("127.0.0.1", port), &v);
  return v;
}

/* ---------------------------------------------------------- echo server */

static int echo_conn(uva_stream_t *c, void *arg) {
  (void)arg;
  for (;;) {
    void *v;
    int n = uva_await(uva_stream_read_until(c, "\n", 1, 0), &v);
    if (n < 0) return n == UV_EOF ? 0 : n;
    int rc = uva_await(uva_stream_write(c, ((uva_bytes_t *)v)->data, (size_t)n), NULL);
    uva_free(v);
    if (rc < 0) return rc;
  }
}

static void echo_roundtrip(uva_stream_t *s, int lines) {
  for (int i = 0; i < lines; i++) {
    char line[64];
    int len = snprintf(line, sizeof line, "line %d\n", i);
    ck_assert_int_eq(uva_await(uva_stream_write(s, line, (size_t)len), NULL), 0);
    void *v;
    ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), len);
    ck_assert_str_eq(((uva_bytes_t *)v)->data, line);
    uva_free(v);
  }
}

/* The subprocess hook: a stream around one end of a pipe pair. */
TASK_TEST(test_net_pipe_hook) {
  uv_file in[2], out[2];
  ck_assert_int_eq(uv_pipe(in, 0, 0), 0);
  ck_assert_int_eq(uv_pipe(out, 0, 0), 0);
  uva_stream_t *r = uva__stream_new_pipe(uva_loop_current());
  uva_stream_t *w = uva__stream_new_pipe(NULL);
  ck_assert_ptr_nonnull(r);
  ck_assert_ptr_nonnull(w);
  ck_assert_int_eq(uv_pipe_open((uv_pipe_t *)uva__stream_handle(r), in[0]), 0);
  ck_assert_int_eq(uv_pipe_open((uv_pipe_t *)uva__stream_handle(w), out[1]), 0);
  ck_assert_int_eq(write(in[1], "hello\nworld", 11), 11);
  char buf[32];
  void *v;
  ck_assert_int_eq(uva_await(uva_stream_read_until(r, "\n", 1, 0), &v), 6);
  ck_assert_str_eq(((uva_bytes_t *)v)->data, "hello\n");
  uva_free(v);
  close(in[1]);
  ck_assert_int_eq(uva_await(uva_stream_read(r, buf, sizeof buf), NULL), 5);
  ck_assert_int_eq(memcmp(buf, "world", 5), 0);
  ck_assert_int_eq(uva_await(uva_stream_read(r, buf, sizeof buf), NULL), UV_EOF);
  ck_assert_int_eq(uva_await(uva_stream_write(w, "to child", 8), NULL), 0);
  ck_assert_int_eq(read(out[0], buf, sizeof buf), 8);
  ck_assert_int_eq(memcmp(buf, "to child", 8), 0);
  uva_stream_close(w);
  ck_assert_int_eq(read(out[0], buf, sizeof buf), 0); /* closed: EOF */
  close(out[0]);
  uva_stream_close(r);
  uva_stream_close(NULL);
  /* never connected: closing it is all one can do, and it is enough */
  uva_stream_close(uva__stream_new_pipe(NULL));
  return 0;
}

TASK_TEST(test_net_tcp_echo_roundtrip) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, echo_conn, NULL), 0);
  int port = uva_server_port(srv);
  ck_assert_int_gt(port, 0);
  int rc;
  uva_stream_t *a = connect_tcp(port, &rc), *b = connect_tcp(port, &rc);
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(b);
  echo_roundtrip(a, 20);
  echo_roundtrip(b, 5);
  echo_roundtrip(a, 5);
  ck_assert_int_eq(uva_server_connections(srv), 2);
  uva_stream_close(a);
  /* by name: resolved, each address tried (::1 may come first and refuse) */
  void *v;
  ck_assert_int_eq(uva_await(uva_tcp_connect("localhost", port), &v), 0);
  echo_roundtrip(v, 3);
  uva_stream_close(v);
  /* an unread result closes its stream */
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), NULL), 0);
  uva_stream_close(b);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  return 0;
}

TASK_TEST(test_net_tcp_ipv6_if_available) {
  uva_server_t *srv;
  if (uva_tcp_listen(&srv, "::1", 0, 0, echo_conn, NULL) != 0) return 0; /* no IPv6 */
  void *v;
  int rc = uva_await(uva_tcp_connect("::1", uva_server_port(srv)), &v);
  ck_assert_int_eq(rc, 0);
  echo_roundtrip(v, 3);
  uva_stream_close(v);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  return 0;
}

TASK_TEST(test_net_unix_echo_roundtrip) {
  const char *path = sock_path("echo");
  uva_server_t *srv;
  ck_assert_int_eq(uva_unix_listen(&srv, path, 0, echo_conn, NULL), 0);
  ck_assert_int_eq(uva_server_port(srv), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_unix_connect(path), &v), 0);
  echo_roundtrip(v, 10);
  uva_stream_close(v);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  ck_assert_int_eq(access(path, F_OK), -1); /* removed on close */
  ck_assert_int_eq(uva_await(uva_unix_connect(path), NULL), UV_ENOENT);
  /* a stale socket file is replaced */
  ck_assert_int_eq(uva_unix_listen(&srv, path, 0, echo_conn, NULL), 0);
  uva_server_t *again;
  ck_assert_int_eq(uva_unix_listen(&again, path, 0, echo_conn, NULL), 0);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  ck_assert_int_eq(uva_await(uva_server_close(again, 0), NULL), 0);
  char longp[200];
  memset(longp, 'x', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  ck_assert_int_eq(uva_await(uva_unix_connect(longp), NULL), UV_ENAMETOOLONG);
  ck_assert_int_eq(uva_unix_listen(&srv, longp, 0, echo_conn, NULL), UV_ENAMETOOLONG);
  return 0;
}

/* ---------------------------------------------------------------- reads */

static int scripted_conn(uva_stream_t *c, void *arg) {
  (void)arg;
  const char *msg = "hello world\nabcdefXYZ";
  int rc = uva_await(uva_stream_write(c, msg, strlen(msg)), NULL);
  if (rc < 0) return rc;
  return uva_await(uva_sleep(30), NULL); /* then the library closes c */
}

TASK_TEST(test_net_read_variants_and_eof) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "localhost", 0, 0, scripted_conn, NULL), 0);
  int rc;
  uva_stream_t *s = connect_tcp(uva_server_port(srv), &rc);
  ck_assert_ptr_nonnull(s);
  char buf[128] = {0};
  ck_assert_int_eq(uva_await(uva_stream_read_exactly(s, buf, 5), NULL), 5);
  ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), 7);
  ck_assert_str_eq(((uva_bytes_t *)v)->data, " world\n");
  uva_free(v);
  /* a multi-byte delimiter; the limit error consumes nothing */
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "XY", 2, 4), NULL), UVA_ELIMIT);
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "XY", 2, 8), &v), 8);
  ck_assert_str_eq(((uva_bytes_t *)v)->data, "abcdefXY");
  uva_free(v);
  /* EOF in the middle of read_exactly: what arrived stays buffered */
  ck_assert_int_eq(uva_await(uva_stream_read_exactly(s, buf, 100), NULL), UV_EOF);
  ck_assert_uint_eq(uva_stream_buffered(s), 1);
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), NULL), UV_EOF);
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, sizeof buf), NULL), 1);
  ck_assert_int_eq(buf[0], 'Z');
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, sizeof buf), NULL), UV_EOF);
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, sizeof buf), NULL), UV_EOF); /* sticky */
  /* the peer is gone: writing fails sooner or later, with a libuv error */
  int w;
  while ((w = uva_await(uva_stream_write(s, "x", 1), NULL)) == 0) uva_await(uva_sleep(2), NULL);
  ck_assert(w == UV_EPIPE || w == UV_ECONNRESET);
  /* argument errors */
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, 0), NULL), 0);
  ck_assert_int_eq(uva_await(uva_stream_read(NULL, buf, 1), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "", 0, 0), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_stream_write(NULL, "x", 1), NULL), UV_EINVAL);
  uva_stream_close(s);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  return 0;
}

/* A connection that only writes what it is told to through a queue. */
static int queue_conn(uva_stream_t *c, void *arg) {
  uva_queue_t *q = arg;
  for (;;) {
    void *item;
    int rc = uva_await(uva_queue_get(q), &item);
    if (rc < 0) return rc;
    if (item == NULL) return 0;
    rc = uva_await(uva_stream_write(c, item, strlen(item)), NULL);
    if (rc < 0) return rc;
  }
}

TASK_TEST(test_net_cancelled_reads_lose_nothing) {
  uva_queue_t *q = uva_queue_new(NULL);
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, queue_conn, q), 0);
  int rc;
  uva_stream_t *s = connect_tcp(uva_server_port(srv), &rc);
  char buf[16];
  /* a pending read, cancelled; a second read while one waits is refused */
  uva_future_t *r = uva_stream_read(s, buf, sizeof buf);
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, 1), NULL), UV_EBUSY);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  uva_queue_put_nowait(q, "ab");
  WAIT_UNTIL(uva_stream_buffered(s) >= 2); /* read ahead, nobody reading */
  ck_assert_uint_eq(uva_stream_buffered(s), 2);
  /* read_until with part of the line buffered, cancelled, then resumed */
  r = uva_stream_read_until(s, "\n", 1, 0);
  uva_await(uva_sleep(5), NULL);
  uva_cancel(r);
  ck_assert_int_eq(uva_await(r, NULL), UV_ECANCELED);
  uva_queue_put_nowait(q, "c\n");
  void *v;
  ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), 4);
  ck_assert_str_eq(((uva_bytes_t *)v)->data, "abc\n");
  uva_free(v);
  /* read_exactly cancelled half way, released without an await */
  uva_queue_put_nowait(q, "123");
  r = uva_stream_read_exactly(s, buf, 6);
  WAIT_UNTIL(uva_stream_buffered(s) == 3); /* half of it is in */
  ck_assert(!uva_future_is_done(r));
  uva_release(r);
  uva_queue_put_nowait(q, "456");
  ck_assert_int_eq(uva_await(uva_stream_read_exactly(s, buf, 6), NULL), 6);
  ck_assert_int_eq(memcmp(buf, "123456", 6), 0);
  /* a task cancelled in its read, through wait_for */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_stream_read(s, buf, 1), 10), NULL), UV_ETIMEDOUT);
  uva_queue_put_nowait(q, "z");
  ck_assert_int_eq(uva_await(uva_stream_read(s, buf, sizeof buf), NULL), 1);
  ck_assert_int_eq(buf[0], 'z');
  /* closing fails the pending read */
  r = uva_stream_read(s, buf, 1);
  uva_stream_close(s);
  ck_assert_int_eq(uva_await(r, NULL), UVA_ECLOSED);
  uva_queue_put_nowait(q, NULL);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  uva_queue_free(q);
  return 0;
}

/* ---------------------------------------------------- writes, shutdown */

enum { BIG = 8 << 20 };

static int slow_sink(uva_stream_t *c, void *arg) {
  /* nobody reads until the test has seen the writer wait (an event, not a
   * sleep: under ASan and a loaded CI the client can be slower than any
   * fixed delay) */
  uva_await(uva_event_wait(arg), NULL);
  static char buf[65536];
  size_t total = 0;
  unsigned sum = 0;
  for (;;) {
    int n = uva_await(uva_stream_read(c, buf, sizeof buf), NULL);
    if (n == UV_EOF) break;
    if (n < 0) return n;
    for (int i = 0; i < n; i++) sum = sum * 31 + (unsigned char)buf[i];
    total += (size_t)n;
    if ((total & ((1 << 20) - 1)) < (size_t)n) uva_await(uva_sleep(1), NULL); /* slow */
  }
  char reply[64];
  int len = snprintf(reply, sizeof reply, "%zu %u\n", total, sum);
  return uva_await(uva_stream_write(c, reply, (size_t)len), NULL);
}

TASK_TEST(test_net_large_write_to_slow_reader) {
  uva_server_t *srv;
  uva_event_t *go = uva_event_new();
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, slow_sink, go), 0);
  int rc;
  uva_stream_t *s = connect_tcp(uva_server_port(srv), &rc);
  char *big = malloc(BIG);
  unsigned sum = 0;
  for (int i = 0; i < BIG; i++) {
    big[i] = (char)(i * 7 + i / 4096);
    sum = sum * 31 + (unsigned char)big[i];
  }
  uva_future_t *w = uva_stream_write(s, big, BIG);
  uva_await(uva_sleep(50), NULL);
  ck_assert(!uva_future_is_done(w)); /* the peer does not read yet */
  ck_assert_uint_gt(uva_stream_write_queue_size(s), 0);
  uva_event_set(go);
  ck_assert_int_eq(uva_await(w, NULL), 0);
  ck_assert_int_eq(uva_await(uva_stream_shutdown(s), NULL), 0); /* peer sees EOF */
  void *v;
  ck_assert_int_gt(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), 0);
  char want[64];
  snprintf(want, sizeof want, "%d %u\n", BIG, sum);
  ck_assert_str_eq(((uva_bytes_t *)v)->data, want);
  uva_free(v);
  free(big);
  uva_stream_close(s);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  uva_event_free(go);
  return 0;
}

/* Input back-pressure: a client floods a server connection that does not
 * read; the server stops reading (bounded buffer), so the flood stalls. */
static int lazy_conn(uva_stream_t *c, void *arg) {
  uva_event_t *go = arg;
  char b;
  /* read one byte so read-ahead starts, then sit on the rest */
  int rc = uva_await(uva_stream_read(c, &b, 1), NULL);
  if (rc < 0) return rc;
  rc = uva_await(uva_event_wait(go), NULL);
  if (rc < 0) return rc;
  size_t buffered = uva_stream_buffered(c);
  ck_assert_uint_le(buffered, 4u << 20); /* not the whole flood */
  static char buf[65536];
  size_t total = 1;
  while ((rc = uva_await(uva_stream_read(c, buf, sizeof buf), NULL)) > 0) total += (size_t)rc;
  return total == (size_t)BIG ? 0 : -1;
}

TASK_TEST(test_net_input_back_pressure) {
  uva_event_t *go = uva_event_new();
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, lazy_conn, go), 0);
  int rc;
  uva_stream_t *s = connect_tcp(uva_server_port(srv), &rc);
  char *big = calloc(1, BIG);
  uva_future_t *w = uva_stream_write(s, big, BIG);
  uva_await(uva_sleep(150), NULL);
  ck_assert(!uva_future_is_done(w));
  uva_event_set(go);
  ck_assert_int_eq(uva_await(w, NULL), 0);
  uva_stream_close(s);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  free(big);
  uva_event_free(go);
  return 0;
}

TASK_TEST(test_net_write_cancel_and_close) {
  uva_event_t *go = uva_event_new();
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, lazy_conn, go), 0);
  int rc;
  char *big = calloc(1, BIG);
  /* cancelled, then the peer takes the data: the write happened, and says
   * so (a retry after "cancelled" would send it twice) */
  uva_stream_t *s = connect_tcp(uva_server_port(srv), &rc);
  uva_future_t *w = uva_stream_write(s, big, BIG);
  uva_await(uva_sleep(20), NULL);
  ck_assert_int_eq(uva_cancel(w), 1);
  ck_assert(!uva_future_is_done(w)); /* libuv still has the buffer */
  uva_event_set(go);
  ck_assert_int_eq(uva_await(w, NULL), 0);
  uva_stream_close(s);
  /* cancelled and closed: libuv gives the buffer back at once */
  uva_event_clear(go);
  s = connect_tcp(uva_server_port(srv), &rc);
  w = uva_stream_write(s, big, BIG);
  uva_future_t *w2 = uva_stream_write(s, "x", 1);
  uva_future_t *sh = uva_stream_shutdown(s);
  uva_await(uva_sleep(20), NULL);
  uva_cancel(w);
  uva_stream_close(s);
  ck_assert_int_eq(uva_await(w, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_await(w2, NULL), UVA_ECLOSED);
  ck_assert_int_eq(uva_await(sh, NULL), UVA_ECLOSED);
  uva_event_set(go);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  free(big);
  uva_event_free(go);
  return 0;
}

/* ------------------------------------------------------------- connect */

TASK_TEST(test_net_connect_refused_and_errors) {
  /* a port nobody listens on: bind, read the port, close */
  uv_tcp_t t;
  uv_tcp_init(uva_loop_uv(uva_loop_current()), &t);
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", 0, &sin);
  ck_assert_int_eq(uv_tcp_bind(&t, (struct sockaddr *)&sin, 0), 0);
  int len = sizeof sin;
  uv_tcp_getsockname(&t, (struct sockaddr *)&sin, &len);
  int port = ntohs(sin.sin_port);
  uv_close((uv_handle_t *)&t, NULL);
  uva_await(uva_sleep(0), NULL);
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), NULL), UV_ECONNREFUSED);
  ck_assert_int_eq(uva_await(uva_tcp_connect("localhost", port), NULL), UV_ECONNREFUSED);
  ck_assert_int_lt(uva_await(uva_tcp_connect("no-such-host.invalid", 80), NULL), 0);
  ck_assert_int_eq(uva_await(uva_tcp_connect(NULL, 80), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", 0), NULL), UV_EINVAL);
  ck_assert_int_eq(uva_await(uva_unix_connect(NULL), NULL), UV_EINVAL);
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "not an address", 0, 0, echo_conn, NULL), UV_EINVAL);
  ck_assert_ptr_null(srv);
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, NULL, NULL), UV_EINVAL);
  /* the port is taken */
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, echo_conn, NULL), 0);
  uva_server_t *two;
  ck_assert_int_eq(uva_tcp_listen(&two, "127.0.0.1", uva_server_port(srv), 0, echo_conn, NULL),
                   UV_EADDRINUSE);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  ck_assert_int_eq(uva_await(uva_server_close(NULL, 0), NULL), UV_EINVAL);
  return 0;
}

TASK_TEST(test_net_connect_cancel) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, echo_conn, NULL), 0);
  int port = uva_server_port(srv);
  int ok = 0, cancelled = 0;
  for (int round = 0; round < 40; round++) {
    uva_future_t *f = round % 2 ? uva_tcp_connect("localhost", port)
                                : uva_tcp_connect("127.0.0.1", port);
    for (int y = 0; y < round % 4; y++) uva_yield();
    uva_cancel(f);
    void *v;
    int rc = uva_await(f, &v);
    if (rc == 0) {
      ok++;
      uva_stream_close(v);
    } else {
      ck_assert_int_eq(rc, UV_ECANCELED);
      cancelled++;
    }
  }
  ck_assert_int_gt(cancelled, 0);
  /* unix: cancelled at once */
  uva_future_t *f = uva_unix_connect(sock_path("nobody"));
  uva_cancel(f);
  ck_assert_int_eq(uva_await(f, NULL), UV_ECANCELED);
  /* released while connecting */
  uva_release(uva_tcp_connect("127.0.0.1", port));
  uva_release(uva_tcp_connect("localhost", port));
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  return 0;
}

/* -------------------------------------------------------- server close */

static int forever_conn(uva_stream_t *c, void *arg) {
  (void)arg;
  char b[16];
  int rc;
  while ((rc = uva_await(uva_stream_read(c, b, sizeof b), NULL)) > 0) {}
  return rc;
}

/* Says bye once the test sets the event arg: it is still working until
 * then, however long the test takes to look. */
static int bye_conn(uva_stream_t *c, void *arg) {
  int rc = uva_await(uva_event_wait(arg), NULL);
  if (rc < 0) return rc;
  rc = uva_await(uva_stream_write(c, "bye\n", 4), NULL);
  uva_stream_close(c); /* early: the library's own close is then a no-op */
  ck_assert_int_eq(uva_await(uva_stream_write(c, "x", 1), NULL), UVA_ECLOSED);
  return rc;
}

TASK_TEST(test_net_server_close_cancel_and_drain) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, forever_conn, NULL), 0);
  int port = uva_server_port(srv), rc;
  uva_stream_t *c[3];
  for (int i = 0; i < 3; i++) c[i] = connect_tcp(port, &rc);
  WAIT_UNTIL(uva_server_connections(srv) >= 3);
  ck_assert_uint_eq(uva_server_connections(srv), 3);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  char b[8];
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(uva_await(uva_stream_read(c[i], b, sizeof b), NULL), UV_EOF);
    uva_stream_close(c[i]);
  }
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), NULL), UV_ECONNREFUSED);
  /* drain: the connections finish their work */
  uva_event_t *bye = uva_event_new();
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, bye_conn, bye), 0);
  port = uva_server_port(srv);
  for (int i = 0; i < 3; i++) c[i] = connect_tcp(port, &rc);
  WAIT_UNTIL(uva_server_connections(srv) >= 3);
  uva_future_t *closing = uva_server_close(srv, 0);
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), NULL), UV_ECONNREFUSED);
  ck_assert(!uva_future_is_done(closing)); /* the three still work */
  uva_event_set(bye);
  ck_assert_int_eq(uva_await(closing, NULL), 0);
  uva_event_free(bye);
  for (int i = 0; i < 3; i++) {
    void *v;
    ck_assert_int_eq(uva_await(uva_stream_read_until(c[i], "\n", 1, 0), &v), 4);
    uva_free(v);
    ck_assert_int_eq(uva_await(uva_stream_read(c[i], b, sizeof b), NULL), UV_EOF);
    uva_stream_close(c[i]);
  }
  return 0;
}

TASK_TEST(test_net_server_close_cancelled) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, forever_conn, NULL), 0);
  int rc;
  uva_stream_t *c = connect_tcp(uva_server_port(srv), &rc);
  WAIT_UNTIL(uva_server_connections(srv) >= 1);
  /* a drain that would never end, given up after 20 ms: the connection
   * task is cancelled and waited for */
  ck_assert_int_eq(uva_await(uva_wait_for(uva_server_close(srv, 0), 20), NULL), UV_ETIMEDOUT);
  char b[8];
  ck_assert_int_eq(uva_await(uva_stream_read(c, b, sizeof b), NULL), UV_EOF);
  uva_stream_close(c);
  /* released at once: still closes and frees itself */
  ck_assert_int_eq(uva_unix_listen(&srv, sock_path("rel"), 0, forever_conn, NULL), 0);
  uva_release(uva_server_close(srv, 1));
  return 0;
}

/* Connections still running when main returns are cancelled by the loop,
 * and their streams closed; only the server is the caller's to close. */
static int leave_running(void *arg) {
  (void)arg;
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, forever_conn, NULL), 0);
  int rc;
  uva_stream_t *c = connect_tcp(uva_server_port(srv), &rc);
  WAIT_UNTIL(uva_server_connections(srv) >= 1);
  uva_release(uva_server_close(srv, 0)); /* drain, never awaited */
  uva_release(uva_stream_read(c, &rc, 1));  /* released pending */
  uva_release(uva_stream_write(c, "abc", 3));
  uva_stream_close(c); /* the server's task then sees EOF and ends */
  return 0;
}
START_TEST(test_net_loop_close_with_connections_running) {
  ck_assert_int_eq(RUN_MAIN(leave_running, NULL), 0);
}
END_TEST

/* A connection that shuts its own server down (a "quit" command). */
static int quitting_conn(uva_stream_t *c, void *arg) {
  uva_server_t **srv = arg;
  char b;
  int rc = uva_await(uva_stream_read(c, &b, 1), NULL);
  if (rc < 0) return rc;
  return uva_await(uva_server_close(*srv, 1), NULL); /* cancels us too */
}

TASK_TEST(test_net_connection_closes_its_server) {
  static uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, quitting_conn, &srv), 0);
  int port = uva_server_port(srv), rc;
  uva_stream_t *idle = connect_tcp(port, &rc), *s = connect_tcp(port, &rc);
  ck_assert_int_eq(uva_await(uva_stream_write(s, "q", 1), NULL), 0);
  char b;
  ck_assert_int_eq(uva_await(uva_stream_read(s, &b, 1), NULL), UV_EOF);
  ck_assert_int_eq(uva_await(uva_stream_read(idle, &b, 1), NULL), UV_EOF); /* cancelled */
  uva_stream_close(s);
  uva_stream_close(idle);
  ck_assert_int_eq(uva_await(uva_tcp_connect("127.0.0.1", port), NULL), UV_ECONNREFUSED);
  return 0;
}

/* Allocation failures in connect and read_until: an error, nothing lost. */
TASK_TEST(test_net_out_of_memory) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, scripted_conn, NULL), 0);
  int port = uva_server_port(srv), failures = 0;
  for (int k = 0; k < 4; k++) {
    uva_test_alloc_fail_after(k);
    uva_future_t *f = uva_tcp_connect("127.0.0.1", port);
    uva_test_alloc_fail_after(-1);
    void *v;
    int rc = uva_await(f, &v);
    if (rc == UV_ENOMEM) {
      failures++;
      continue;
    }
    ck_assert_int_eq(rc, 0);
    uva_stream_t *s = v;
    char hello[5];
    ck_assert_int_eq(uva_await(uva_stream_read_exactly(s, hello, 5), NULL), 5);
    WAIT_UNTIL(uva_stream_buffered(s) >= 16);
    uva_test_alloc_fail_after(0); /* the result's allocation fails */
    ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), UV_ENOMEM);
    uva_test_alloc_fail_after(-1);
    ck_assert_int_eq(uva_await(uva_stream_read_until(s, "\n", 1, 0), &v), 7); /* still there */
    uva_free(v);
    uva_stream_close(s);
  }
  ck_assert_int_ge(failures, 2);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 1), NULL), 0);
  return 0;
}

/* An accept whose stream cannot be allocated is retried from a timer
 * (libuv stops watching the listening socket until the pending connection
 * is taken). When that timer cannot be armed either (the loop's deadline
 * heap cannot grow: here it was never allocated, no sleep came first), the
 * server must still accept later: this one waits for the accept that
 * proves it, and hangs (Check's timeout) if the server has stopped. */
static int note_conn(uva_stream_t *c, void *arg) {
  (void)c;
  uva_future_resolve(arg, 0, NULL, NULL);
  return 0;
}

static void never_due(uv_timer_t *t) { (void)t; }

static int blocking_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0); /* the kernel accepts */
  return fd;
}

START_TEST(test_net_accept_recovers_when_its_retry_cannot_be_armed) {
  long live = uva_test_alloc_live();
  uva_loop_t *loop;
  ck_assert_int_eq(uva_loop_new(&loop), 0);
  uva_future_t *accepted = uva_future_new();
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 0, note_conn, accepted), 0);
  int fd = blocking_connect(uva_server_port(srv)); /* pending in the backlog */
  /* one turn with every allocation failing: the listening socket is
   * readable, the stream and the retry timer's heap cannot be had (a
   * plain libuv timer, never due, keeps the loop alive for that turn: the
   * listener alone does not) */
  uv_timer_t alive;
  uv_timer_init(uva_loop_uv(loop), &alive);
  ck_assert_int_eq(uv_timer_start(&alive, never_due, UINT64_MAX / 2, 0), 0);
  uva_test_alloc_fail_after(0);
  uv_run(uva_loop_uv(loop), UV_RUN_NOWAIT);
  uva_test_alloc_fail_after(-1);
  uv_close((uv_handle_t *)&alive, NULL);
  ck_assert_int_eq(uva_server_connections(srv), 0);
  ck_assert_int_eq(uva_loop_run_until(loop, accepted), 0);
  close(fd);
  uva_release(accepted);
  uva_future_t *closing = uva_server_close(srv, 1);
  ck_assert_int_eq(uva_loop_run_until(loop, closing), 0);
  uva_release(closing);
  ck_assert_int_eq(uva_loop_close(loop), 0);
  ck_assert_int_eq(uva_test_alloc_live(), live);
}
END_TEST

/* ---------------------------------------------------------- many at once */

enum { NCONN = 1000 };
static int nclient_ok;

static int one_client(void *arg) {
  int port = (int)(intptr_t)arg;
  void *v;
  int rc = uva_await(uva_tcp_connect("127.0.0.1", port), &v);
  if (rc < 0) return rc;
  uva_stream_t *s = v;
  char line[32], back[32];
  int len = snprintf(line, sizeof line, "client %p\n", (void *)s);
  rc = uva_await(uva_stream_write(s, line, (size_t)len), NULL);
  if (rc == 0) rc = uva_await(uva_stream_read_exactly(s, back, (size_t)len), NULL);
  if (rc == len && memcmp(line, back, (size_t)len) == 0) nclient_ok++;
  uva_stream_close(s);
  return rc < 0 ? rc : 0;
}

TASK_TEST(test_net_many_concurrent_connections) {
  uva_server_t *srv;
  ck_assert_int_eq(uva_tcp_listen(&srv, "127.0.0.1", 0, 4096, echo_conn, NULL), 0);
  uva_future_t **ts = malloc(NCONN * sizeof *ts);
  nclient_ok = 0;
  for (int i = 0; i < NCONN; i++)
    ts[i] = uva_spawn(one_client, (void *)(intptr_t)uva_server_port(srv));
  uva_future_t *all = uva_gather(ts, NCONN, 0);
  ck_assert_int_eq(uva_await(all, NULL), 0);
  free(ts);
  ck_assert_int_eq(nclient_ok, NCONN);
  ck_assert_int_eq(uva_await(uva_server_close(srv, 0), NULL), 0);
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("net");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_net_pipe_hook);
  tcase_add_test(tc, test_net_tcp_echo_roundtrip);
  tcase_add_test(tc, test_net_tcp_ipv6_if_available);
  tcase_add_test(tc, test_net_unix_echo_roundtrip);
  tcase_add_test(tc, test_net_read_variants_and_eof);
  tcase_add_test(tc, test_net_cancelled_reads_lose_nothing);
  tcase_add_test(tc, test_net_large_write_to_slow_reader);
  tcase_add_test(tc, test_net_input_back_pressure);
  tcase_add_test(tc, test_net_write_cancel_and_close);
  tcase_add_test(tc, test_net_connect_refused_and_errors);
  tcase_add_test(tc, test_net_connect_cancel);
  tcase_add_test(tc, test_net_server_close_cancel_and_drain);
  tcase_add_test(tc, test_net_server_close_cancelled);
  tcase_add_test(tc, test_net_loop_close_with_connections_running);
  tcase_add_test(tc, test_net_connection_closes_its_server);
  tcase_add_test(tc, test_net_out_of_memory);
  tcase_add_test(tc, test_net_accept_recovers_when_its_retry_cannot_be_armed);
  tcase_add_test(tc, test_net_many_concurrent_connections);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
