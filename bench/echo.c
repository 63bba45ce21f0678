/* bench/echo: request rate of an echo server, uvasync against raw libuv.
 *
 * usage: echo {uvasync|raw_libuv} [ROUND_TRIPS [CONNECTIONS]]
 *   (defaults 100000 round trips over 50 connections)
 *
 * The server runs on its own thread and loop:
 *   uvasync    uva_tcp_listen; one task per connection looping
 *              uva_stream_read (64 KiB buffer) / uva_stream_write
 *   raw_libuv  the floor: uv_read_start into a per-connection buffer,
 *              uv_try_write it back (uv_write of a copy only when the
 *              socket is full): no allocation per message
 * The load generator is the same for both: raw libuv on the main thread,
 * CONNECTIONS connections each doing request/response ping-pong of 64-byte
 * messages until ROUND_TRIPS round trips are done in total.
 * Prints: workload=echo peer=P n=ROUND_TRIPS conc=CONNECTIONS wall_s=...
 * req_per_s=...  Checks every reply byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

#define MSG 64

/* ----------------------------------------------------- server handshake */

static uv_mutex_t mu;
static uv_cond_t cond;
static int server_port;           /* set once listening */
static uva_loop_t *server_loop;   /* uvasync */
static uv_async_t *raw_stop;      /* raw libuv */

static void publish_port(int port) {
  uv_mutex_lock(&mu);
  server_port = port;
  uv_cond_signal(&cond);
  uv_mutex_unlock(&mu);
}

/* ------------------------------------------------------ uvasync server */

static int echo_conn(uva_stream_t *c, void *arg) {
  (void)arg;
  char buf[65536];
  int n;
  while ((n = uva_await(uva_stream_read(c, buf, sizeof buf), NULL)) > 0)
    if (uva_await(uva_stream_write(c, buf, (size_t)n), NULL) < 0) break;
  return 0;
}

static uva_event_t *stop_ev;
static void set_stop(void *arg) { uva_event_set(arg); }

static int uva_server_main(void *arg) {
  (void)arg;
  uva_server_t *srv;
  stop_ev = uva_event_new();
  if (uva_tcp_listen(&srv, "127.0.0.1", 0, 1024, echo_conn, NULL) != 0) {
    publish_port(-1);
    return 1;
  }
  server_loop = uva_loop_current();
  publish_port(uva_server_port(srv));
  uva_await(uva_event_wait(stop_ev), NULL);
  uva_await(uva_server_close(srv, 1), NULL);
  uva_event_free(stop_ev);
  return 0;
}

static void uva_server_thread(void *arg) {
  (void)arg;
  uva_run(uva_server_main, NULL);
}

/* ----------------------------------------------------- raw libuv server */

typedef struct rconn {
  uv_tcp_t tcp;
  char buf[65536];
} rconn_t;

typedef struct rwrite {
  uv_write_t req;
  char data[];
} rwrite_t;

static void raw_free(uv_handle_t *h) { free(h->data); }

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)s;
  rconn_t *c = h->data;
  *b = uv_buf_init(c->buf, sizeof c->buf);
}

static void raw_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  if (n < 0) {
    uv_close((uv_handle_t *)st, raw_free);
    return;
  }
  if (n == 0) return;
  uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
  int w = uv_try_write(st, &out, 1);
  if (w == n) return;
  if (w < 0 && w != UV_EAGAIN) {
    uv_close((uv_handle_t *)st, raw_free);
    return;
  }
  if (w < 0) w = 0;
  rwrite_t *r = malloc(sizeof *r + (size_t)(n - w));
  memcpy(r->data, b->base + w, (size_t)(n - w));
  out = uv_buf_init(r->data, (unsigned)(n - w));
  uv_write(&r->req, st, &out, 1, raw_written);
}

static void raw_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  rconn_t *c = malloc(sizeof *c);
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, raw_free);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, raw_alloc, raw_read);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  uv_close(h, h->type == UV_TCP && h->data ? raw_free : NULL);
}

static void raw_stop_cb(uv_async_t *a) { uv_walk(a->loop, close_any, NULL); }

static void raw_server_thread(void *arg) {
  (void)arg;
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t srv;
  uv_async_t stop;
  uv_tcp_init(&loop, &srv);
  srv.data = NULL;
  uv_async_init(&loop, &stop, raw_stop_cb);
  stop.data = NULL;
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", 0, &sin);
  if (uv_tcp_bind(&srv, (struct sockaddr *)&sin, 0) != 0 ||
      uv_listen((uv_stream_t *)&srv, 1024, raw_connection) != 0) {
    publish_port(-1);
    return;
  }
  int len = sizeof sin;
  uv_tcp_getsockname(&srv, (struct sockaddr *)&sin, &len);
  raw_stop = &stop;
  publish_port(ntohs(sin.sin_port));
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* ------------------------------------------------------ load generator */

static long total, started, completed;
static int bad;
static char msg[MSG];

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  char buf[MSG * 4];
  size_t got;
} client_t;

static void c_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)s;
  client_t *c = h->data;
  *b = uv_buf_init(c->buf + c->got, (unsigned)(sizeof c->buf - c->got));
}

static void c_written(uv_write_t *req, int status) {
  (void)req;
  if (status < 0) bad = 1;
}

static void c_send(client_t *c) {
  started++;
  uv_buf_t b = uv_buf_init(msg, MSG);
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) == MSG) return;
  uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, c_written);
}

static void c_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  (void)b;
  client_t *c = st->data;
  if (n < 0) {
    bad = 1;
    uv_close((uv_handle_t *)st, NULL);
    return;
  }
  c->got += (size_t)n;
  if (c->got < MSG) return;
  if (c->got != MSG || memcmp(c->buf, msg, MSG) != 0) bad = 1;
  c->got = 0;
  completed++;
  if (started < total) c_send(c);
  else uv_close((uv_handle_t *)st, NULL);
}

static void c_connected(uv_connect_t *req, int status) {
  client_t *c = req->data;
  if (status < 0) {
    bad = 1;
    uv_close((uv_handle_t *)&c->tcp, NULL);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, c_alloc, c_read);
  if (started < total) c_send(c);
  else uv_close((uv_handle_t *)&c->tcp, NULL);
}

int main(int argc, char **argv) {
  const char *peer = argc > 1 ? argv[1] : "uvasync";
  total = argc > 2 ? atol(argv[2]) : 100000;
  int conc = argc > 3 ? atoi(argv[3]) : 50;
  int uvasync = strcmp(peer, "uvasync") == 0;
  if ((!uvasync && strcmp(peer, "raw_libuv") != 0) || total <= 0 || conc <= 0) {
    fprintf(stderr, "usage: echo {uvasync|raw_libuv} [ROUND_TRIPS [CONNECTIONS]]\n");
    return 2;
  }
  for (int i = 0; i < MSG; i++) msg[i] = (char)('a' + i % 26);
  uv_mutex_init(&mu);
  uv_cond_init(&cond);
  uv_thread_t th;
  uv_thread_create(&th, uvasync ? uva_server_thread : raw_server_thread, NULL);
  uv_mutex_lock(&mu);
  while (server_port == 0) uv_cond_wait(&cond, &mu);
  uv_mutex_unlock(&mu);
  if (server_port < 0) return 1;

  uv_loop_t *loop = uv_default_loop();
  client_t *cs = calloc((size_t)conc, sizeof *cs);
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", server_port, &sin);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < conc; i++) {
    uv_tcp_init(loop, &cs[i].tcp);
    cs[i].tcp.data = &cs[i];
    cs[i].creq.data = &cs[i];
    uv_tcp_connect(&cs[i].creq, &cs[i].tcp, (struct sockaddr *)&sin, c_connected);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double wall = (double)(uv_hrtime() - t0) / 1e9;

  if (uvasync) uva_call_threadsafe(server_loop, set_stop, stop_ev);
  else uv_async_send(raw_stop);
  uv_thread_join(&th);
  free(cs);
  if (bad || completed != total) {
    fprintf(stderr, "echo: %ld of %ld round trips, %s\n", completed, total,
            bad ? "bad reply or error" : "short");
    return 1;
  }
  printf("workload=echo peer=%s n=%ld conc=%d wall_s=%.3f req_per_s=%.0f\n", peer, total,
         conc, wall, (double)total / wall);
  return 0;
}
