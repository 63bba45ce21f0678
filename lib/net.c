/* Streams and servers: asyncio's StreamReader/StreamWriter and
 * start_server over libuv streams (TCP, Unix-domain sockets, pipes).
 *
 * Reading goes through one buffer per stream. libuv reads into it
 * (uv_read_start) while someone waits for data, or while it holds less
 * than HIGH_WATER bytes nobody asked for (read-ahead); above that the
 * stream stops reading, which pushes back on the peer. A read future takes
 * its bytes out of the buffer only at the moment it completes, so a
 * cancelled or failed read consumes nothing.
 *
 * Writes, shutdowns and connects are futures over libuv requests, built as
 * fs.c builds its own: they hold a reference and count in loop->jobs while
 * libuv has the request, and complete only from libuv's callback.
 *
 * A stream's memory lives until libuv's close callback (counted in
 * loop->jobs) and, for a server's connection, until its task has ended
 * (`holds`), so a connection closed early by conn_fn stays a valid pointer
 * that only fails operations. */
#include "internal.h"

#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)      /* free room offered to each libuv read */
#define HIGH_WATER (256 * 1024)     /* read-ahead stops above this */
#define SHRINK_ABOVE (1024 * 1024)  /* an emptied buffer this big is freed */
#define DEFAULT_LIMIT (64 * 1024)   /* read_until: asyncio's default limit */

typedef union handle {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} handle_u;

typedef struct readop readop_t;

struct uva_stream {
  uva_loop_t *loop;
  handle_u u;
  char *buf;             /* buffered input: buf[off .. off+len) */
  size_t off, len, cap;
  int rerr;              /* sticky: UV_EOF or an error, once seen */
  bool reading;          /* uv_read_start is in effect */
  bool read_ahead;       /* someone has read: keep the buffer filled */
  bool closing, closed;  /* uva_stream_close called / libuv closed it */
  int holds;             /* a server's connection task still running */
  readop_t *reader;      /* the pending read */
  /* server connections */
  uva_server_t *srv;
  uva__link_t link;
  uva_future_t *task;
};

static void stream_maybe_free(uva_stream_t *s) {
  if (s->closed && s->holds == 0) {
    uva__free(s->buf);
    uva__free(s);
  }
}

static void on_stream_closed(uv_handle_t *h) {
  uva_stream_t *s = h->data;
  s->closed = true;
  s->loop->jobs--;
  stream_maybe_free(s);
}

/* A write to a socket the peer has closed must fail with UV_EPIPE, not
 * kill the process: like Python and Node, ignore SIGPIPE unless the
 * application has set its own disposition. */
static void ignore_sigpipe(void) {
  static atomic_int done;
  if (atomic_exchange(&done, 1)) return;
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* A stream with its handle initialised (pipe or TCP) but not connected. */
static uva_stream_t *stream_new(uva_loop_t *loop, bool pipe) {
  ignore_sigpipe();
  uva_stream_t *s = uva__calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->loop = loop;
  uva__list_init(&s->link);
  int rc = pipe ? uv_pipe_init(loop->uv, &s->u.pipe, 0) : uv_tcp_init(loop->uv, &s->u.tcp);
  if (rc != 0) {
    uva__free(s);
    return NULL;
  }
  s->u.h.data = s;
  /* Only a waiting read keeps the loop alive (see update_reading). */
  uv_unref(&s->u.h);
  return s;
}

uva_stream_t *uva__stream_new_pipe(uva_loop_t *loop) {
  if (loop == NULL && (loop = uva__loop()) == NULL) return NULL;
  return stream_new(loop, true);
}

uv_stream_t *uva__stream_handle(uva_stream_t *s) { return s ? &s->u.s : NULL; }

/* ----------------------------------------------------------------- reads */

enum { R_SOME, R_EXACTLY, R_UNTIL };

struct readop {
  uva_future_t base;
  uva_stream_t *s;       /* while pending */
  union {
    char *dst;           /* R_SOME, R_EXACTLY */
    const char *delim;   /* R_UNTIL */
  } p;
  size_t n;              /* len / exact count / limit */
  size_t dlen;
  size_t scanned;        /* read_until: bytes already searched */
  int kind;
};

static void read_detach(readop_t *r) {
  uva_stream_t *s = r->s;
  if (s && s->reader == r) s->reader = NULL;
  r->s = NULL;
}

static void update_reading(uva_stream_t *s);

static int read_cancel(uva_future_t *f) {
  readop_t *r = (readop_t *)f;
  uva_stream_t *s = r->s;
  read_detach(r);
  uva__future_complete(f, UV_ECANCELED, NULL, NULL);
  if (s) update_reading(s);
  return 1;
}

static void read_destroy(uva_future_t *f) {
  readop_t *r = (readop_t *)f;
  uva_stream_t *s = r->s;
  read_detach(r);
  if (s) update_reading(s);
}

/* Small enough for the loop's free list of small futures (a read per
 * message must not cost a malloc). */
static const uva__fops_t read_fops = {"stream_read", read_cancel, read_destroy,
                                      sizeof(readop_t), NULL};
_Static_assert(sizeof(readop_t) <= sizeof(uva__small_future_t), "readop fits the free list");

static void consume(uva_stream_t *s, size_t k) {
  s->off += k;
  s->len -= k;
  if (s->len == 0) {
    s->off = 0;
    if (s->cap > SHRINK_ABOVE) {
      uva__free(s->buf);
      s->buf = NULL;
      s->cap = 0;
    }
  }
}

static int clamp(size_t n) { return n > INT_MAX ? INT_MAX : (int)n; }

static void read_finish(readop_t *r, int status, void *value) {
  uva_stream_t *s = r->s;
  read_detach(r);
  uva__future_complete(&r->base, status, value, value ? uva_free : NULL);
  update_reading(s);
}

/* Complete r from the buffer if it can be; returns true if it completed. */
static bool read_try(readop_t *r) {
  uva_stream_t *s = r->s;
  char *p = s->buf ? s->buf + s->off : NULL; /* no buffer before the first read */
  size_t avail = s->len;
  switch (r->kind) {
    case R_SOME:
      if (avail) {
        size_t k = avail < r->n ? avail : r->n;
        memcpy(r->p.dst, p, k);
        consume(s, k);
        read_finish(r, clamp(k), NULL);
        return true;
      }
      break;
    case R_EXACTLY:
      if (avail >= r->n) {
        memcpy(r->p.dst, p, r->n);
        consume(s, r->n);
        read_finish(r, (int)r->n, NULL);
        return true;
      }
      break;
    case R_UNTIL: {
      size_t from = r->scanned >= r->dlen ? r->scanned - (r->dlen - 1) : 0;
      char *hit = avail > from ? memmem(p + from, avail - from, r->p.delim, r->dlen) : NULL;
      if (hit) {
        size_t end = (size_t)(hit - p) + r->dlen;
        if (end > r->n) {
          read_finish(r, UVA_ELIMIT, NULL);
          return true;
        }
        uva_bytes_t *b = uva__malloc(sizeof *b + end + 1);
        if (b == NULL) {
          read_finish(r, UV_ENOMEM, NULL);
          return true;
        }
        b->len = end;
        memcpy(b->data, p, end);
        b->data[end] = '\0';
        consume(s, end);
        read_finish(r, clamp(end), b);
        return true;
      }
      r->scanned = avail;
      if (avail >= r->n) { /* no delimiter can end within the limit now */
        read_finish(r, UVA_ELIMIT, NULL);
        return true;
      }
      break;
    }
  }
  if (s->rerr) {
    read_finish(r, s->rerr, NULL);
    return true;
  }
  return false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  UVA_UNUSED(suggested);
  uva_stream_t *s = h->data;
  if (s->cap - s->off - s->len < READ_CHUNK) {
    if (s->off && s->cap - s->len >= READ_CHUNK) { /* room at the front */
      memmove(s->buf, s->buf + s->off, s->len);
      s->off = 0;
    } else {
      size_t cap = s->cap * 2;
      if (cap < s->off + s->len + READ_CHUNK) cap = s->off + s->len + READ_CHUNK;
      char *nb = uva__realloc(s->buf, cap);
      if (nb == NULL) { /* libuv reports UV_ENOBUFS */
        b->base = NULL;
        b->len = 0;
        return;
      }
      s->buf = nb;
      s->cap = cap;
    }
  }
  b->base = s->buf + s->off + s->len;
  b->len = s->cap - s->off - s->len;
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *b) {
  UVA_UNUSED(b);
  uva_stream_t *s = h->data;
  if (nread > 0) {
    s->len += (size_t)nread;
  } else if (nread < 0) {
    s->rerr = nread == UV_ENOBUFS ? UV_ENOMEM : (int)nread;
    uv_read_stop(h);
    s->reading = false;
  }
  if (s->reader == NULL || !read_try(s->reader)) update_reading(s);
}

/* Start or stop libuv's reading to match what the stream needs. */
static void update_reading(uva_stream_t *s) {
  if (s->closing) return;
  bool want = s->rerr == 0 &&
              (s->reader != NULL || (s->read_ahead && s->len < HIGH_WATER));
  if (want && !s->reading) {
    int rc = uv_read_start(&s->u.s, on_alloc, on_read);
    if (rc == 0) {
      s->reading = true;
    } else {
      s->rerr = rc;
      if (s->reader) {
        read_try(s->reader);
        return;
      }
    }
  } else if (!want && s->reading) {
    uv_read_stop(&s->u.s);
    s->reading = false;
  }
  if (s->reader) uv_ref(&s->u.h); else uv_unref(&s->u.h);
}

static uva_future_t *failed(uva_loop_t *loop, int err) { return uva__future_done(loop, err); }

static uva_future_t *read_start(uva_stream_t *s, int kind, void *dst, size_t n,
                                const void *delim, size_t dlen) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (s == NULL || s->loop != loop) return failed(loop, UV_EINVAL);
  if (s->closing) return failed(loop, UVA_ECLOSED);
  if (s->reader) return failed(loop, UV_EBUSY);
  readop_t *r = (readop_t *)uva__future_alloc(loop, &read_fops);
  if (r == NULL) return NULL;
  r->s = s;
  if (kind == R_UNTIL) r->p.delim = delim;
  else r->p.dst = dst;
  r->n = n;
  r->dlen = dlen;
  r->scanned = 0;
  r->kind = kind;
  s->reader = r;
  s->read_ahead = true;
  if (!read_try(r)) update_reading(s);
  return &r->base;
}

uva_future_t *uva_stream_read(uva_stream_t *s, void *buf, size_t len) {
  if (buf == NULL || len == 0) return uva__future_done(NULL, len ? UV_EINVAL : 0);
  return read_start(s, R_SOME, buf, len > INT_MAX ? INT_MAX : len, NULL, 0);
}

uva_future_t *uva_stream_read_exactly(uva_stream_t *s, void *buf, size_t n) {
  if ((buf == NULL && n) || n > INT_MAX) return uva__future_done(NULL, UV_EINVAL);
  if (n == 0) return uva__future_done(NULL, 0);
  return read_start(s, R_EXACTLY, buf, n, NULL, 0);
}

uva_future_t *uva_stream_read_until(uva_stream_t *s, const void *delim, size_t dlen,
                                    size_t limit) {
  if (delim == NULL || dlen == 0) return uva__future_done(NULL, UV_EINVAL);
  if (limit == 0) limit = DEFAULT_LIMIT;
  return read_start(s, R_UNTIL, NULL, limit, delim, dlen);
}

size_t uva_stream_buffered(const uva_stream_t *s) { return s ? s->len : 0; }

/* ------------------------------------------------- writes and shutdowns */

typedef struct reqop {
  uva_future_t base;
  union {
    uv_write_t write;
    uv_shutdown_t shutdown;
  } req;
  uva_stream_t *s;
} reqop_t;

/* A write or shutdown libuv has cannot be withdrawn: the future completes
 * when libuv calls back, with what really happened (a write that went out
 * reports 0, so a retry after a cancel does not send it twice). */
static int req_cancel(uva_future_t *f) {
  UVA_UNUSED(f);
  return 1;
}

static const uva__fops_t req_fops = {"stream_req", req_cancel, NULL, sizeof(reqop_t), NULL};

static void req_done(reqop_t *o, int status) {
  uva_loop_t *loop = o->base.loop;
  if (status == UV_ECANCELED && o->s->closing) status = UVA_ECLOSED;
  uva__future_complete(&o->base, status, NULL, NULL);
  loop->jobs--;
  uva_release(&o->base);
}

static void on_write(uv_write_t *req, int status) {
  req_done(UVA_CONTAINER_OF(req, reqop_t, req.write), status);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  req_done(UVA_CONTAINER_OF(req, reqop_t, req.shutdown), status);
}

static uva_future_t *req_started(reqop_t *o, int rc) { return uva__future_started(&o->base, rc); }

uva_future_t *uva_stream_write(uva_stream_t *s, const void *buf, size_t len) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (s == NULL || s->loop != loop || (buf == NULL && len)) return failed(loop, UV_EINVAL);
  if (s->closing) return failed(loop, UVA_ECLOSED);
  if (len == 0) return uva__future_done(loop, 0);
  uv_buf_t b;
  b.base = (char *)buf;
  b.len = len;
  /* Fast path: the kernel takes it all now (libuv refuses while writes are
   * queued, so order is kept). */
  if (s->u.s.write_queue_size == 0) {
    int n = uv_try_write(&s->u.s, &b, 1);
    if (n > 0 && (size_t)n == len) return uva__future_done(loop, 0);
    if (n < 0 && n != UV_EAGAIN) return failed(loop, n);
    if (n > 0) {
      b.base += n;
      b.len -= (size_t)n;
    }
  }
  reqop_t *o = (reqop_t *)uva__future_alloc(loop, &req_fops);
  if (o == NULL) return NULL;
  o->s = s;
  return req_started(o, uv_write(&o->req.write, &s->u.s, &b, 1, on_write));
}

size_t uva_stream_write_queue_size(const uva_stream_t *s) {
  return s ? s->u.s.write_queue_size : 0;
}

uva_future_t *uva_stream_shutdown(uva_stream_t *s) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (s == NULL || s->loop != loop) return failed(loop, UV_EINVAL);
  if (s->closing) return failed(loop, UVA_ECLOSED);
  reqop_t *o = (reqop_t *)uva__future_alloc(loop, &req_fops);
  if (o == NULL) return NULL;
  o->s = s;
  return req_started(o, uv_shutdown(&o->req.shutdown, &s->u.s, on_shutdown));
}

void uva_stream_close(uva_stream_t *s) {
  if (s == NULL || s->closing) return;
  if (s->loop->debug) uva__debug_close(s->loop, s);
  s->closing = true;
  if (s->reader) {
    readop_t *r = s->reader;
    read_detach(r);
    uva__future_complete(&r->base, UVA_ECLOSED, NULL, NULL);
  }
  s->reading = false;
  s->loop->jobs++;
  uv_close(&s->u.h, on_stream_closed);
}

static void stream_free_fn(void *p) { uva_stream_close(p); }

/* -------------------------------------------------------------- connect */

typedef struct connop {
  uva_future_t base;
  uv_getaddrinfo_t gai;
  uv_connect_t req;
  uva_stream_t *s;           /* the attempt in progress */
  struct addrinfo *res, *cur;
  struct sockaddr_storage addr; /* a numeric host: no resolution */
  char *path;                /* Unix-domain */
  int err;
  bool resolving, numeric, tried, cancel_requested;
} connop_t;

static int conn_cancel(uva_future_t *f) {
  connop_t *o = (connop_t *)f;
  o->cancel_requested = true;
  if (o->resolving) uv_cancel((uv_req_t *)&o->gai);
  else if (o->s) uva_stream_close(o->s); /* libuv calls back UV_ECANCELED */
  return 1;
}

static void conn_destroy(uva_future_t *f) { uva__free(((connop_t *)f)->path); }

static const uva__fops_t conn_fops = {"connect", conn_cancel, conn_destroy, sizeof(connop_t), NULL};

static void conn_done(connop_t *o, int status, uva_stream_t *s) {
  uva_loop_t *loop = o->base.loop;
  if (o->res) uv_freeaddrinfo(o->res);
  o->res = o->cur = NULL;
  if (s && loop->debug) uva__debug_open(loop, s, o->path ? "Unix stream" : "TCP stream", &o->base);
  uva__future_complete(&o->base, status, s, s ? stream_free_fn : NULL);
  loop->jobs--;
  uva_release(&o->base);
}

static void on_connect(uv_connect_t *req, int status);

/* Try the next address, or finish with the last error. */
static void conn_next(connop_t *o) {
  uva_loop_t *loop = o->base.loop;
  while (!o->cancel_requested) {
    const struct sockaddr *sa;
    if (o->path || o->numeric) {
      if (o->tried) break;
      o->tried = true;
      sa = (const struct sockaddr *)&o->addr;
    } else {
      if (o->cur == NULL) break;
      sa = o->cur->ai_addr;
      o->cur = o->cur->ai_next;
    }
    uva_stream_t *s = stream_new(loop, o->path != NULL);
    if (s == NULL) {
      o->err = UV_ENOMEM;
      break;
    }
    int rc = 0;
    if (o->path) uv_pipe_connect(&o->req, &s->u.pipe, o->path, on_connect);
    else rc = uv_tcp_connect(&o->req, &s->u.tcp, sa, on_connect);
    if (rc == 0) {
      o->s = s;
      return;
    }
    o->err = rc;
    uva_stream_close(s);
  }
  conn_done(o, o->cancel_requested ? UV_ECANCELED : o->err ? o->err : UV_EINVAL, NULL);
}

static void on_connect(uv_connect_t *req, int status) {
  connop_t *o = UVA_CONTAINER_OF(req, connop_t, req);
  uva_stream_t *s = o->s;
  o->s = NULL;
  if (status == 0 && !o->cancel_requested) {
    if (o->path == NULL) uv_tcp_nodelay(&s->u.tcp, 1); /* as asyncio does */
    conn_done(o, 0, s);
    return;
  }
  uva_stream_close(s); /* the half-open or failed socket */
  o->err = status;
  conn_next(o);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  connop_t *o = UVA_CONTAINER_OF(req, connop_t, gai);
  o->resolving = false;
  o->res = o->cur = res;
  if (status < 0 && !o->cancel_requested) {
    conn_done(o, status, NULL);
    return;
  }
  conn_next(o);
}

static connop_t *conn_new(uva_loop_t *loop) {
  connop_t *o = (connop_t *)uva__future_alloc(loop, &conn_fops);
  if (o) {
    o->base.refs++; /* the operation's own, until conn_done */
    loop->jobs++;
  }
  return o;
}

uva_future_t *uva_tcp_connect(const char *host, int port) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (host == NULL || port <= 0 || port > 65535) return failed(loop, UV_EINVAL);
  connop_t *o = conn_new(loop);
  if (o == NULL) return NULL;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&o->addr) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&o->addr) == 0) {
    o->numeric = true;
    conn_next(o);
    return &o->base;
  }
  char service[8];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
  int rc = uv_getaddrinfo(loop->uv, &o->gai, on_resolved, host, service, &hints);
  if (rc < 0) {
    conn_done(o, rc, NULL);
    return &o->base;
  }
  o->resolving = true;
  return &o->base;
}

uva_future_t *uva_unix_connect(const char *path) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (path == NULL || path[0] == '\0') return failed(loop, UV_EINVAL);
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return failed(loop, UV_ENAMETOOLONG);
  connop_t *o = conn_new(loop);
  if (o == NULL) return NULL;
  if ((o->path = uva__strdup(path)) == NULL) {
    loop->jobs--;
    o->base.refs = 1;
    uva_release(&o->base);
    return NULL;
  }
  conn_next(o);
  return &o->base;
}

/* --------------------------------------------------------------- servers */

struct uva_server {
  uva_loop_t *loop;
  handle_u u;
  uva_conn_fn fn;
  void *arg;
  char *path;               /* Unix-domain: removed on close */
  int port;
  bool closing, handle_closed;
  uva__link_t conns;        /* connection streams whose task runs */
  size_t nconns;
  uva_future_t *close_fut;  /* a reference, until it completes */
  /* Accept again after running out of memory. A libuv timer of its own,
   * made the first time it is needed: arming one in the loop's heap can
   * itself fail for memory (the heap grows), and then nothing would ever
   * accept again. */
  uv_timer_t retry;
  bool retry_made;
  int handles;              /* our libuv handles not closed yet */
};

typedef struct closeop {
  uva_future_t base;
  uva_server_t *srv;
} closeop_t;

static void cancel_conns(uva_server_t *srv) {
  for (uva__link_t *l = srv->conns.next, *next; l != &srv->conns; l = next) {
    next = l->next;
    uva_cancel(UVA_CONTAINER_OF(l, uva_stream_t, link)->task);
  }
}

/* Cancelling the close future cancels the connection tasks and completes
 * it at once: waiting for them here would deadlock a connection task that
 * closes its own server (it would wait for itself). The server still frees
 * itself once they have ended. */
static int close_cancel(uva_future_t *f) {
  closeop_t *c = (closeop_t *)f;
  uva_server_t *srv = c->srv;
  if (srv == NULL) return 0;
  c->srv = NULL;
  srv->close_fut = NULL;
  cancel_conns(srv);
  uva__future_complete(f, UV_ECANCELED, NULL, NULL);
  uva_release(f); /* the server's reference; the caller holds one */
  return 1;
}

static const uva__fops_t close_fops = {"server_close", close_cancel, NULL, sizeof(closeop_t), NULL};

static void server_free(uva_server_t *srv) {
  uva__free(srv->path);
  uva__free(srv);
}

/* After close: free the server once its socket and connections are gone. */
static void server_check(uva_server_t *srv) {
  if (!srv->closing || !srv->handle_closed || srv->nconns) return;
  uva_future_t *f = srv->close_fut;
  if (f) {
    ((closeop_t *)f)->srv = NULL;
    uva__future_complete(f, 0, NULL, NULL);
    uva_release(f);
  }
  server_free(srv);
}

static void on_server_closed(uv_handle_t *h) {
  uva_server_t *srv = h->data;
  srv->loop->jobs--;
  if (--srv->handles == 0) {
    srv->handle_closed = true;
    server_check(srv);
  }
}

static int conn_body(void *arg) {
  uva_stream_t *s = arg;
  return s->srv->fn(s, s->srv->arg);
}

static void conn_end(uva_future_t *f, void *data) {
  /* conn_fn's status is ignored (header): the library has read it, so
   * debug mode does not report a handler's error as one nobody read. */
  if (f->loop->debug) uva__debug_retrieved(f);
  uva_stream_t *s = data;
  uva_server_t *srv = s->srv;
  uva__list_unlink(&s->link);
  srv->nconns--;
  uva_release(s->task);
  s->task = NULL;
  uva_stream_close(s);
  s->holds--;
  stream_maybe_free(s);
  server_check(srv);
}

static void on_connection(uv_stream_t *h, int status);

static void retry_accept(uv_timer_t *t) {
  uva_server_t *srv = t->data;
  on_connection(&srv->u.s, 0);
}

static void on_connection(uv_stream_t *h, int status) {
  uva_server_t *srv = h->data;
  uva_loop_t *loop = srv->loop;
  if (status < 0 || srv->closing) return;
  uva_stream_t *s = stream_new(loop, srv->path != NULL);
  if (s == NULL) {
    /* libuv stops watching the listening socket until this connection is
     * accepted, so nobody would call us again: try again in 10 ms. */
    if (!srv->retry_made) {
      uv_timer_init(loop->uv, &srv->retry); /* cannot fail: no allocation */
      uv_unref((uv_handle_t *)&srv->retry);  /* as the listening socket */
      srv->retry.data = srv;
      srv->retry_made = true;
      srv->handles++;
    }
    uv_timer_start(&srv->retry, retry_accept, 10, 0);
    return;
  }
  if (uv_accept(h, &s->u.s) != 0 || loop->closing) {
    uva_stream_close(s);
    return;
  }
  if (srv->path == NULL) uv_tcp_nodelay(&s->u.tcp, 1); /* as asyncio does */
  s->srv = srv;
  s->task = uva__spawn(loop, NULL, conn_body, s);
  if (s->task == NULL) {
    uva_stream_close(s);
    return;
  }
  if (uva_future_on_done(s->task, conn_end, s) != 0) {
    uva_cancel(s->task); /* not started: it ends without running */
    uva_release(s->task);
    uva_stream_close(s);
    return;
  }
  s->holds = 1;
  uva__list_push(&srv->conns, &s->link);
  srv->nconns++;
}

static void on_server_closed_free(uv_handle_t *h) {
  uva_server_t *srv = h->data;
  srv->loop->jobs--;
  server_free(srv);
}

/* Bind (done by bind_fn), listen, and hand out the server; on error close
 * the handle and free it. */
static int server_start(uva_server_t **out, uva_server_t *srv, int rc, int backlog) {
  if (rc == 0) rc = uv_listen(&srv->u.s, backlog > 0 ? backlog : 511, on_connection);
  if (rc == 0 && srv->path == NULL) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    rc = uv_tcp_getsockname(&srv->u.tcp, (struct sockaddr *)&ss, &len);
    if (rc == 0)
      srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
  }
  if (rc != 0) {
    srv->loop->jobs++;
    uv_close(&srv->u.h, on_server_closed_free);
    return rc;
  }
  /* A listening server does not keep the loop alive by itself: a server
   * left open leaks (tests see it) instead of hanging loop close. */
  uv_unref(&srv->u.h);
  if (srv->loop->debug)
    uva__debug_open(srv->loop, srv, srv->path ? "Unix server" : "TCP server", NULL);
  *out = srv;
  return 0;
}

static uva_server_t *server_new(uva_loop_t *loop, uva_conn_fn fn, void *arg) {
  uva_server_t *srv = uva__calloc(1, sizeof *srv);
  if (srv == NULL) return NULL;
  srv->loop = loop;
  srv->fn = fn;
  srv->arg = arg;
  srv->handles = 1; /* the listening socket */
  uva__list_init(&srv->conns);
  return srv;
}

int uva_tcp_listen(uva_server_t **out, const char *host, int port, int backlog,
                   uva_conn_fn conn_fn, void *arg) {
  if (out) *out = NULL;
  if (out == NULL || conn_fn == NULL || port < 0 || port > 65535) return UV_EINVAL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  struct sockaddr_storage ss;
  if (host == NULL) host = "0.0.0.0";
  else if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  uva_server_t *srv = server_new(loop, conn_fn, arg);
  if (srv == NULL) return UV_ENOMEM;
  int rc = uv_tcp_init(loop->uv, &srv->u.tcp);
  if (rc != 0) {
    server_free(srv);
    return rc;
  }
  srv->u.h.data = srv;
  return server_start(out, srv, uv_tcp_bind(&srv->u.tcp, (struct sockaddr *)&ss, 0), backlog);
}

int uva_unix_listen(uva_server_t **out, const char *path, int backlog,
                    uva_conn_fn conn_fn, void *arg) {
  if (out) *out = NULL;
  if (out == NULL || conn_fn == NULL || path == NULL || path[0] == '\0') return UV_EINVAL;
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return UV_ENAMETOOLONG;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  uva_server_t *srv = server_new(loop, conn_fn, arg);
  if (srv == NULL || (srv->path = uva__strdup(path)) == NULL) {
    if (srv) server_free(srv);
    return UV_ENOMEM;
  }
  int rc = uv_pipe_init(loop->uv, &srv->u.pipe, 0);
  if (rc != 0) {
    server_free(srv);
    return rc;
  }
  srv->u.h.data = srv;
  struct stat st;
  if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path); /* stale */
  rc = uv_pipe_bind(&srv->u.pipe, path);
  if (rc != 0) { /* not ours: never remove it */
    uva__free(srv->path);
    srv->path = NULL;
    srv->loop->jobs++;
    uv_close(&srv->u.h, on_server_closed_free);
    return rc;
  }
  return server_start(out, srv, 0, backlog);
}

int uva_server_port(const uva_server_t *srv) { return srv ? srv->port : 0; }

size_t uva_server_connections(const uva_server_t *srv) { return srv ? srv->nconns : 0; }

uva_future_t *uva_server_close(uva_server_t *srv, int cancel_connections) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (srv == NULL || srv->loop != loop || srv->closing) return failed(loop, UV_EINVAL);
  closeop_t *c = (closeop_t *)uva__future_alloc(loop, &close_fops);
  if (c == NULL) return NULL;
  c->srv = srv;
  if (loop->debug) uva__debug_close(loop, srv);
  srv->close_fut = uva_ref(&c->base);
  srv->closing = true;
  if (srv->retry_made) {
    loop->jobs++;
    uv_close((uv_handle_t *)&srv->retry, on_server_closed);
  }
  if (srv->path) unlink(srv->path);
  loop->jobs++;
  uv_close(&srv->u.h, on_server_closed);
  if (cancel_connections) cancel_conns(srv);
  return &c->base;
}
