/* HTTP client: one CURLM per client session, driven by the loop the way
 * curl documents for event loops (docs/examples/multi-uv.c):
 *
 *   - CURLMOPT_SOCKETFUNCTION: one uv_poll_t per socket, attached to the
 *     socket with curl_multi_assign (allowed from the socket callback) and
 *     closed (uv_close) as soon as curl says CURL_POLL_REMOVE, so a socket
 *     curl closes is never left polled;
 *   - CURLMOPT_TIMERFUNCTION: one uv_timer_t (timeout 0 is started as a
 *     0 ms timer, never acted on inline);
 *   - curl_multi_socket_action only from the poll and timer callbacks, then
 *     curl_multi_info_read collects the finished transfers and completes
 *     their futures.
 * No curl_multi_* call other than curl_multi_assign is ever made from
 * inside one of curl's callbacks, and our callbacks never run user code.
 *
 * A request is a future kind. While curl has it, the client holds a
 * reference on it (so it is never freed under curl) and keeps it on its
 * `active` list. Cancelling removes the easy handle from the multi handle
 * at once (uva_cancel runs on the loop, never inside a curl callback) and
 * completes the future with UV_ECANCELED. Easy handles go back to a free
 * list on the client: one whose request was a plain GET keeps the client's
 * options, so the next request sets only its own few; any other is reset
 * with curl_easy_reset, which keeps nothing of the last request.
 * Connections live in the multi handle's cache and are reused; the cache
 * is sized by the most requests ever in flight (see req_start).
 *
 * curl_global_init runs once per process (uv_once) and curl_global_cleanup
 * is never called: libcurl's global state lives until exit. */
#include "internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTP_DEFAULT_REDIRECTS 10
#define HTTP_FREE_EASY_MAX 256

typedef struct http_poll {
  uv_poll_t poll;
  curl_socket_t fd;
  struct uva_http_client *client;
  uva__link_t link; /* client->polls */
} http_poll_t;

typedef struct body_pool body_pool_t;

/* An idle easy handle. `ready`: it holds the client's options and nothing
 * else (its last request was a plain GET that succeeded), so the next
 * request sets only its own few; otherwise it was reset. */
struct idle_easy {
  CURL *e;
  bool ready;
};

struct uva_http_client {
  uva_loop_t *loop;
  body_pool_t *pool;
  CURLM *multi;
  CURLSH *share;      /* the cookie jar, when cookies are on */
  uv_timer_t timer;
  uv_timer_t reap;    /* fails transfers whose socket could not be polled */
  uva__link_t active; /* requests the client holds (q->held) */
  uva__link_t polls;  /* open poll handles */
  struct idle_easy *free_easy; /* easy handles between requests */
  size_t nfree, free_cap;
  size_t closing;     /* handles whose close callback has not run */
  size_t nactive;     /* their number */
  size_t peak;        /* the most ever held at once */
  bool freed;
  char *user_agent, *protocols, *ca_file;
  int64_t timeout_ms, connect_timeout_ms;
  long max_redirects;
  size_t max_body, stream_buffer;
  char *scratch;      /* build_head's header copy, reused */
  size_t scratch_cap;
  char last_error[CURL_ERROR_SIZE];
};

/* A request body read from a file on libuv's pool, one buffer at a time:
 * curl's read callback pauses the transfer while the buffer refills. */
typedef struct upload {
  uv_fs_t req;
  uv_file fd;
  int64_t off;        /* file offset of the next read */
  char *buf;
  size_t len, pos;    /* buffered: buf[pos .. len) */
  int err;            /* a failed read, reported as the request's error */
  bool eof, busy, stale, paused, seekable;
} upload_t;

typedef struct http_req {
  uva_future_t base;
  uva_http_client_t *client;
  CURL *easy;
  struct curl_slist *headers;
  uva__link_t link; /* client->active */
  bool held;        /* the client has it: on `active`, with a reference */
  bool added;       /* curl has it (false while body_file opens) */
  bool too_big;
  bool oom;
  bool streaming;
  bool follow;      /* curl follows redirects */
  bool plain;       /* set no option beyond the client's and its own few */
  bool reusable;    /* plain, done, not streamed: its handle stays ready */
  int code;         /* status of the response whose headers are arriving */
  int sock_err;     /* socket() failed with this (UV_EMFILE...), if any */
  size_t max_body;
  char *body;       /* collected body (not streaming) */
  size_t body_len, body_cap;
  void *req_body;   /* our copy of the request body */
  upload_t *up;     /* body_file */
  char *user_err;   /* the request's error buffer, if any */
  uva_future_t *open;           /* streaming: the open future, until done */
  struct uva_http_stream *stream; /* streaming: once the head is in */
  char errbuf[CURL_ERROR_SIZE];
} http_req_t;

struct uva_http_stream {
  http_req_t *q;        /* the transfer (a reference), NULL once closed */
  uva_http_response_t *head;
  char *buf;            /* received, unread: buf[off .. off+len) */
  size_t off, len, cap;
  int end;              /* 0 while running; UV_EOF or the error after */
  char error[CURL_ERROR_SIZE]; /* curl's message for end, if an error */
  bool paused;          /* on_body refused a chunk: resume when read */
  uva_future_t *reader; /* the pending read */
  void *rbuf;
  size_t rlen;
};

static uv_once_t global_once = UV_ONCE_INIT;
static CURLcode global_rc;
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---------------------------------------------------------- body pool */
/* Body buffers go back to a small pool shared by a client and the
 * responses it made: glibc serves multi-MiB blocks with fresh mmaps, and
 * first-touching those pages cost 5x the transfer itself here (1 MiB
 * bodies: 200 MB/s with a fresh buffer each, ~1.4 GB/s reused). Buffers
 * are pooled only while the client lives; the pool goes with its last
 * reference (the client or a response). */
#define POOL_SLOTS 16
#define POOL_MAX_BUF ((size_t)32 << 20)

struct body_pool {
  unsigned refs;
  bool client_alive;
  size_t n;
  struct {
    char *buf;
    size_t cap;
  } slot[POOL_SLOTS];
};

static body_pool_t *pool_ref(body_pool_t *p) {
  if (p) p->refs++;
  return p;
}

static void pool_unref(body_pool_t *p) {
  if (p == NULL || --p->refs) return;
  for (size_t i = 0; i < p->n; i++) uva__free(p->slot[i].buf);
  uva__free(p);
}

static void pool_put(body_pool_t *p, char *buf, size_t cap) {
  if (buf == NULL) return;
  if (p == NULL || !p->client_alive || p->n == POOL_SLOTS || cap > POOL_MAX_BUF) {
    uva__free(buf);
    return;
  }
  p->slot[p->n].buf = buf;
  p->slot[p->n++].cap = cap;
}

/* The smallest pooled buffer of at least want bytes, else the largest. */
static char *pool_get(body_pool_t *p, size_t want, size_t *cap) {
  if (p == NULL || p->n == 0) return NULL;
  size_t best = 0;
  for (size_t i = 1; i < p->n; i++) {
    bool fits = p->slot[i].cap >= want, best_fits = p->slot[best].cap >= want;
    if ((fits && (!best_fits || p->slot[i].cap < p->slot[best].cap)) ||
        (!fits && !best_fits && p->slot[i].cap > p->slot[best].cap))
      best = i;
  }
  char *buf = p->slot[best].buf;
  *cap = p->slot[best].cap;
  p->slot[best] = p->slot[--p->n];
  return buf;
}

/* ---------------------------------------------------------- responses */

void uva_http_response_free(uva_http_response_t *r) {
  if (r == NULL) return;
  pool_put(r->pool_, r->body, r->body_cap_);
  pool_unref(r->pool_);
  uva__free(r); /* the URL and the headers are in the same block */
}

static void response_free_fn(void *v) { uva_http_response_free(v); }

const char *uva_http_response_header(const uva_http_response_t *r, const char *name) {
  if (r == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
  return NULL;
}

static uint64_t info_us(CURL *e, CURLINFO what) {
  curl_off_t v = 0;
  return curl_easy_getinfo(e, what, &v) == CURLE_OK && v > 0 ? (uint64_t)v : 0;
}

static void fill_times(uva_http_response_t *r, CURL *e) {
  r->dns_us = info_us(e, CURLINFO_NAMELOOKUP_TIME_T);
  r->connect_us = info_us(e, CURLINFO_CONNECT_TIME_T);
  r->tls_us = info_us(e, CURLINFO_APPCONNECT_TIME_T);
  r->first_byte_us = info_us(e, CURLINFO_STARTTRANSFER_TIME_T);
  r->total_us = info_us(e, CURLINFO_TOTAL_TIME_T);
}

/* Status, version, URL, timings and headers of the final response, the
 * headers read with curl's header API (request -1: the last one, so the
 * headers of redirects are not included). No body. NULL on ENOMEM.
 * curl_easy_nextheader counts the headers of the same name on every call,
 * so the headers are walked once, into the client's scratch buffer
 * ("name\0value\0" each), and copied into the response from there. */
static uva_http_response_t *build_head(http_req_t *q) {
  uva_http_client_t *c = q->client;
  long code = 0, ver = 0, redirs = 0;
  char *url = NULL;
  curl_easy_getinfo(q->easy, CURLINFO_EFFECTIVE_URL, &url);
  if (url == NULL) url = "";
  size_t n = 0, used = 0;
  struct curl_header *h = NULL;
  while ((h = curl_easy_nextheader(q->easy, CURLH_HEADER, -1, h)) != NULL) {
    const char *v = h->value;
    while (*v == ' ' || *v == '\t') v++;
    size_t nlen = strlen(h->name), vlen = strlen(v);
    /* curl 7.88 leaves the CR of an empty value in */
    while (vlen && strchr(" \t\r\n", v[vlen - 1])) vlen--;
    size_t need = used + nlen + vlen + 2;
    if (need > c->scratch_cap) {
      size_t cap = c->scratch_cap ? c->scratch_cap : 1024;
      while (cap < need) cap *= 2;
      char *b = uva__realloc(c->scratch, cap);
      if (b == NULL) return NULL;
      c->scratch = b;
      c->scratch_cap = cap;
    }
    memcpy(c->scratch + used, h->name, nlen + 1);
    used += nlen + 1;
    memcpy(c->scratch + used, v, vlen);
    c->scratch[used + vlen] = '\0';
    used += vlen + 1;
    n++;
  }
  /* One block: the struct, the header entries, then the strings (the URL
   * and each name and value): one allocation per response. */
  size_t ulen = strlen(url) + 1;
  uva_http_response_t *r = uva__malloc(sizeof *r + n * sizeof *r->headers + ulen + used);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof *r);
  curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(q->easy, CURLINFO_HTTP_VERSION, &ver);
  curl_easy_getinfo(q->easy, CURLINFO_REDIRECT_COUNT, &redirs);
  r->status = (int)code;
  r->http_version = ver == CURL_HTTP_VERSION_1_0 ? 10
                  : ver == CURL_HTTP_VERSION_1_1 ? 11
                  : ver == CURL_HTTP_VERSION_2_0 ? 20
                  : ver == CURL_HTTP_VERSION_3 ? 30 : 0;
  r->redirects = (int)redirs;
  fill_times(r, q->easy);
  r->headers = n ? (uva_http_header_t *)(r + 1) : NULL;
  char *p = (char *)(r + 1) + n * sizeof *r->headers;
  memcpy(p, url, ulen);
  r->effective_url = p;
  p += ulen;
  if (used) memcpy(p, c->scratch, used);
  for (size_t i = 0; i < n; i++) {
    r->headers[i].name = p;
    p += strlen(p) + 1;
    r->headers[i].value = p;
    p += strlen(p) + 1;
  }
  r->nheaders = n;
  return r;
}

static uva_http_response_t *build_response(http_req_t *q) {
  uva_http_response_t *r = build_head(q);
  if (r == NULL) return NULL;
  if (q->body == NULL) {
    if ((q->body = uva__malloc(1)) == NULL) {
      uva_http_response_free(r);
      return NULL;
    }
    q->body_cap = 1;
  }
  q->body[q->body_len] = '\0'; /* on_body always leaves room for it */
  r->body = q->body;
  r->body_len = q->body_len;
  r->body_cap_ = q->body_cap;
  r->pool_ = pool_ref(q->client->pool);
  q->body = NULL;
  q->body_len = q->body_cap = 0;
  return r;
}

/* ------------------------------------------------------ request futures */

static void upload_free(http_req_t *q) {
  upload_t *u = q->up;
  if (u == NULL || u->busy) return; /* a read in flight frees it after */
  if (u->fd >= 0) close(u->fd);
  uva__free(u->buf);
  uva__free(u);
  q->up = NULL;
}

/* Everything of the request but the easy handle. A finished request no
 * longer touches its client here (a stream may outlive it). */
static void req_clear(http_req_t *q) {
  if (q->body) pool_put(q->client->pool, q->body, q->body_cap);
  q->body = NULL;
  q->body_len = q->body_cap = 0;
  uva__free(q->req_body);
  q->req_body = NULL;
  if (q->headers) curl_slist_free_all(q->headers);
  q->headers = NULL;
  upload_free(q);
}

/* Give the easy handle back to the client (or clean it up). A handle
 * whose request set only the client's options keeps them (curl's own
 * advice: reuse handles); any other is reset, so nothing of one request
 * (method, body, headers, timeouts, a paused or failed state) reaches the
 * next. */
static void easy_put(uva_http_client_t *c, CURL *e, bool ready) {
  if (e == NULL) return;
  if (c->freed || c->nfree >= HTTP_FREE_EASY_MAX) {
    curl_easy_cleanup(e);
    return;
  }
  if (c->nfree == c->free_cap) {
    size_t cap = c->free_cap ? c->free_cap * 2 : 16;
    struct idle_easy *n = uva__realloc(c->free_easy, cap * sizeof *n);
    if (n == NULL) {
      curl_easy_cleanup(e);
      return;
    }
    c->free_easy = n;
    c->free_cap = cap;
  }
  if (ready) {
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL); /* q->errbuf goes with q */
  } else {
    /* libcurl 7.88's reset drops the handle's cookie file list without
     * freeing it (ASan saw the leak): clearing the option frees it. */
    if (c->share) curl_easy_setopt(e, CURLOPT_COOKIEFILE, NULL);
    curl_easy_reset(e);
  }
  c->free_easy[c->nfree++] = (struct idle_easy){e, ready};
}

/* Take the request away from curl (never inside a curl callback), give
 * back its easy handle and free what it holds. Returns whether the client
 * held a reference (the caller drops it last: it may free q). */
static bool req_detach(http_req_t *q) {
  bool held = q->held;
  if (q->held) {
    if (q->added) curl_multi_remove_handle(q->client->multi, q->easy);
    q->added = false;
    q->held = false;
    q->client->nactive--;
    uva__list_unlink(&q->link);
  }
  if (q->easy) easy_put(q->client, q->easy, q->reusable);
  q->easy = NULL;
  req_clear(q);
  return held;
}

static void req_finish(http_req_t *q, int status, void *value) {
  bool held = req_detach(q);
  uva__future_complete(&q->base, status, value, value ? response_free_fn : NULL);
  if (held) uva_release(&q->base); /* the client's reference */
}

static void set_error(http_req_t *q, const char *msg);

static int req_cancel(uva_future_t *f) {
  set_error((http_req_t *)f, "cancelled");
  req_finish((http_req_t *)f, UV_ECANCELED, NULL);
  return 1;
}

static void req_destroy(uva_future_t *f) {
  /* Pending and unreferenced only happens before curl had it. */
  req_detach((http_req_t *)f);
}

static const uva__fops_t http_fops = {"http", req_cancel, req_destroy, sizeof(http_req_t), NULL};

/* ---------------------------------------------------------- streaming */
/* A streaming request is an http_req_t the user never sees, referenced by
 * the client while curl has it and by its open future (then by its
 * stream). The open future and the reads are small futures pointing back
 * through `owner`. */

static void xfer_fail(http_req_t *q, CURLcode rc);

/* Set curl's pause state from ours. Unpausing may call on_body/on_upload at
 * once, and an error there comes back from curl_easy_pause only: end the
 * transfer with it (we are not inside a curl callback here). */
static void pause_update(http_req_t *q) {
  int mask = 0;
  if (q->stream && q->stream->paused) mask |= CURLPAUSE_RECV;
  if (q->up && q->up->paused) mask |= CURLPAUSE_SEND;
  CURLcode rc = curl_easy_pause(q->easy, mask);
  if (rc != CURLE_OK) xfer_fail(q, rc);
}

static size_t take(uva_http_stream_t *s, void *buf, size_t len) {
  size_t n = s->len < len ? s->len : len;
  memcpy(buf, s->buf + s->off, n);
  s->off += n;
  s->len -= n;
  if (s->len == 0) s->off = 0;
  return n;
}

/* Complete the pending read with status and forget it. */
static void reader_done(uva_http_stream_t *s, int status) {
  uva_future_t *f = s->reader;
  s->reader = NULL;
  ((uva__small_future_t *)f)->owner = NULL;
  uva__future_complete(f, status, NULL, NULL);
}

/* Complete the pending read if there is something to give it. */
static void stream_serve(uva_http_stream_t *s) {
  if (s->reader == NULL || (s->len == 0 && s->end == 0)) return;
  reader_done(s, s->len ? (int)take(s, s->rbuf, s->rlen) : s->end);
}

/* Resume a transfer paused for back-pressure once there is room. */
static void stream_resume(uva_http_stream_t *s) {
  http_req_t *q = s->q;
  if (!s->paused || q == NULL || !q->held || s->len >= q->client->stream_buffer) return;
  s->paused = false;
  pause_update(q);
}

static void stream_free_fn(void *v) { uva_http_stream_close(v); }

/* The final head is in (from on_header): complete the open future with a
 * new stream, which takes over the open future's reference on q. */
static int stream_open(http_req_t *q) {
  uva_http_stream_t *s = uva__calloc(1, sizeof *s);
  if (s == NULL) return UV_ENOMEM;
  if ((s->head = build_head(q)) == NULL || (s->head->body = uva__calloc(1, 1)) == NULL) {
    if (s->head) uva_http_response_free(s->head);
    uva__free(s);
    return UV_ENOMEM;
  }
  s->head->body_cap_ = 1;
  if (q->base.loop->debug) uva__debug_open(q->base.loop, s, "HTTP stream", q->open);
  s->q = q;
  q->stream = s;
  q->user_err = NULL; /* borrowed until the open is done: later errors go to s */
  uva_future_t *f = q->open;
  q->open = NULL;
  ((uva__small_future_t *)f)->owner = NULL;
  uva__future_complete(f, 0, s, stream_free_fn);
  return 0;
}

/* q loses its open future before a head came: take it from curl and drop
 * the open future's reference (and the client's). */
static void open_drop(http_req_t *q) {
  q->open = NULL;
  q->user_err = NULL;
  if (req_detach(q)) uva_release(&q->base);
  uva_release(&q->base); /* the open future's */
}

/* The transfer ends before a head: fail the open future, drop q. */
static void open_fail(http_req_t *q, int status) {
  uva_future_t *f = q->open;
  ((uva__small_future_t *)f)->owner = NULL;
  open_drop(q);
  uva__future_complete(f, status, NULL, NULL);
}

/* The transfer of a streaming request ended with status (0: complete). */
static void stream_end(http_req_t *q, int status) {
  if (q->open && status == 0 && stream_open(q) < 0) status = UV_ENOMEM;
  if (q->open) {
    open_fail(q, status);
    return;
  }
  uva_http_stream_t *s = q->stream;
  if (s) {
    fill_times(s->head, q->easy);
    s->end = status == 0 ? UV_EOF : status;
  }
  if (req_detach(q)) uva_release(&q->base); /* s still holds one */
  if (s) stream_serve(s);
}

static int open_cancel(uva_future_t *f) {
  http_req_t *q = ((uva__small_future_t *)f)->owner;
  set_error(q, "cancelled");
  open_fail(q, UV_ECANCELED);
  return 1;
}

static void open_destroy(uva_future_t *f) {
  http_req_t *q = ((uva__small_future_t *)f)->owner;
  if (q) open_drop(q); /* NULL once done: its value (the stream) was handled */
}

static const uva__fops_t open_fops = {"http_stream_open", open_cancel, open_destroy,
                                      sizeof(uva__small_future_t), NULL};

static int read_cancel(uva_future_t *f) {
  reader_done(((uva__small_future_t *)f)->owner, UV_ECANCELED);
  return 1;
}

static void read_destroy(uva_future_t *f) {
  uva_http_stream_t *s = ((uva__small_future_t *)f)->owner;
  if (s) s->reader = NULL;
}

static const uva__fops_t read_fops = {"http_stream_read", read_cancel, read_destroy,
                                      sizeof(uva__small_future_t), NULL};

const uva_http_response_t *uva_http_stream_response(const uva_http_stream_t *s) {
  return s ? s->head : NULL;
}

const char *uva_http_stream_error(const uva_http_stream_t *s) { return s ? s->error : ""; }

size_t uva_http_stream_buffered(const uva_http_stream_t *s) { return s ? s->len : 0; }

uva_future_t *uva_http_stream_read(uva_http_stream_t *s, void *buf, size_t len) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (s == NULL || (buf == NULL && len)) return uva__future_done(loop, UV_EINVAL);
  if (len == 0) return uva__future_done(loop, 0);
  if (s->reader) return uva__future_done(loop, UV_EBUSY);
  if (len > INT_MAX) len = INT_MAX;
  if (s->len) { /* the future first: a NULL return must consume nothing */
    uva_future_t *f = uva__future_alloc(loop, &uva__plain_fops);
    if (f == NULL) return NULL;
    uva__future_complete(f, (int)take(s, buf, len), NULL, NULL);
    stream_resume(s);
    return f;
  }
  if (s->end) return uva__future_done(loop, s->end);
  uva_future_t *f = uva__future_alloc(loop, &read_fops);
  if (f == NULL) return NULL;
  ((uva__small_future_t *)f)->owner = s;
  s->reader = f;
  s->rbuf = buf;
  s->rlen = len;
  stream_resume(s);
  return f;
}

void uva_http_stream_close(uva_http_stream_t *s) {
  if (s == NULL) return;
  uva_loop_t *loop = uva__loop_tls; /* s->q is gone once the transfer ended */
  if (loop && loop->debug) uva__debug_close(loop, s);
  if (s->reader) reader_done(s, UV_ECANCELED);
  http_req_t *q = s->q;
  if (q) {
    q->stream = NULL;
    if (req_detach(q)) uva_release(&q->base);
    uva_release(&q->base); /* the stream's */
  }
  uva_http_response_free(s->head);
  uva__free(s->buf);
  uva__free(s);
}

/* ------------------------------------------------------------- uploads */

#define UPLOAD_BUF (256 * 1024)

static void on_upload_read(uv_fs_t *r);

/* The upload's pool request (the open, then each read) is in flight: it
 * holds a reference on q (the buffer must outlive a cancelled request) and
 * counts as a loop job. */
static void upload_busy(http_req_t *q) {
  q->up->req.data = q;
  q->up->busy = true;
  q->base.refs++;
  q->base.loop->jobs++;
}

/* It is back: its result. The caller drops its reference on q last. */
static ssize_t upload_back(http_req_t *q) {
  ssize_t res = q->up->req.result;
  uv_fs_req_cleanup(&q->up->req);
  q->base.loop->jobs--;
  q->up->busy = false;
  return res;
}

/* Read the next buffer on libuv's pool. */
static void upload_fill(http_req_t *q) {
  upload_t *u = q->up;
  uv_buf_t b = uv_buf_init(u->buf, UPLOAD_BUF);
  int rc = uv_fs_read(q->base.loop->uv, &u->req, u->fd, &b, 1, u->seekable ? u->off : -1,
                      on_upload_read);
  if (rc < 0) u->err = rc;
  else upload_busy(q);
}

static void on_upload_read(uv_fs_t *r) {
  http_req_t *q = r->data;
  upload_t *u = q->up;
  ssize_t res = upload_back(q);
  if (!q->held) {
    upload_free(q);
  } else if (u->stale) { /* curl rewound meanwhile: read again from there */
    u->stale = false;
    if (u->paused) upload_fill(q);
  } else {
    if (res < 0) u->err = (int)res;
    else if (res == 0) u->eof = true;
    else {
      u->len = (size_t)res;
      u->pos = 0;
      u->off += res;
    }
    if (u->paused) {
      u->paused = false;
      pause_update(q);
    }
  }
  uva_release(&q->base);
}

static size_t on_upload(char *buf, size_t size, size_t nitems, void *ud) {
  http_req_t *q = ud;
  upload_t *u = q->up;
  size_t want = size * nitems;
  if (u->pos < u->len) {
    size_t n = u->len - u->pos < want ? u->len - u->pos : want;
    memcpy(buf, u->buf + u->pos, n);
    u->pos += n;
    /* read ahead while curl sends what it just got */
    if (u->pos == u->len && !u->busy && !u->eof && !u->err) upload_fill(q);
    return n;
  }
  if (u->err) return CURL_READFUNC_ABORT;
  if (u->eof) return 0;
  if (!u->busy) upload_fill(q);
  if (u->err) return CURL_READFUNC_ABORT;
  u->paused = true;
  return CURL_READFUNC_PAUSE;
}

static int on_seek(void *ud, curl_off_t offset, int origin) {
  http_req_t *q = ud;
  upload_t *u = q->up;
  if (origin != SEEK_SET || !u->seekable || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
  u->off = offset;
  u->len = u->pos = 0;
  u->eof = false;
  u->err = 0;
  if (u->busy) u->stale = true;
  return CURL_SEEKFUNC_OK;
}

/* ------------------------------------------------------ curl callbacks */

/* The length the response announced, on its first chunk (-1 otherwise,
 * or when it announced none). */
static curl_off_t first_chunk_length(http_req_t *q) {
  curl_off_t cl = -1;
  if (q->body_len == 0) curl_easy_getinfo(q->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  return cl;
}

/* max_body, checked on the final response's body only: curl's
 * MAXFILESIZE would also judge the Content-Length of a HEAD answer or of a
 * redirect it follows. The announced length (cl, from the first chunk) is
 * checked too, so an oversized body fails before it is downloaded. */
static bool too_big(http_req_t *q, size_t n, curl_off_t cl) {
  if (q->max_body && ((cl > 0 && (uint64_t)cl > q->max_body) || q->body_len + n > q->max_body))
    q->too_big = true;
  return q->too_big;
}

/* Make *buf hold at least need bytes: double, or jump to need. */
static bool grow(char **buf, size_t *cap, size_t need, size_t first) {
  if (need <= *cap) return true;
  size_t c = *cap ? *cap * 2 : first;
  if (c < need) c = need;
  char *b = uva__realloc(*buf, c);
  if (b == NULL) return false;
  *buf = b;
  *cap = c;
  return true;
}

static size_t on_stream_body(http_req_t *q, const char *ptr, size_t n) {
  /* curl skips the bodies of redirects it follows, so a body is the final
   * response's even if its head looked like a redirect */
  if (q->stream == NULL && q->open && stream_open(q) < 0) {
    q->oom = true;
    return CURL_WRITEFUNC_ERROR;
  }
  uva_http_stream_t *s = q->stream;
  if (s == NULL) return n;
  if (too_big(q, n, first_chunk_length(q))) return CURL_WRITEFUNC_ERROR;
  if (s->len >= q->client->stream_buffer) { /* the reader is behind */
    s->paused = true;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (s->off && s->off + s->len + n > s->cap) {
    memmove(s->buf, s->buf + s->off, s->len);
    s->off = 0;
  }
  if (!grow(&s->buf, &s->cap, s->len + n, 16384)) {
    q->oom = true;
    return CURL_WRITEFUNC_ERROR;
  }
  memcpy(s->buf + s->off + s->len, ptr, n);
  s->len += n;
  q->body_len += n; /* counts the body for max_body */
  stream_serve(s);
  return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req_t *q = ud;
  size_t n = size * nmemb;
  if (q->streaming) return on_stream_body(q, ptr, n);
  curl_off_t cl = first_chunk_length(q);
  if (too_big(q, n, cl)) return CURL_WRITEFUNC_ERROR;
  size_t need = q->body_len + n + 1;
  /* A response's first chunk: if its length is announced (and within
   * max_body, or too_big said no), size the buffer for all of it at once
   * instead of a chain of reallocs copying it over. */
  if (cl > 0 && (size_t)cl + 1 > need) need = (size_t)cl + 1;
  if (q->body == NULL) q->body = pool_get(q->client->pool, need, &q->body_cap);
  if (!grow(&q->body, &q->body_cap, need, 4096)) {
    q->oom = true;
    return CURL_WRITEFUNC_ERROR;
  }
  memcpy(q->body + q->body_len, ptr, n);
  q->body_len += n;
  return n;
}

/* Is the response whose headers just ended the one the user gets? Not a
 * 1xx, and not a redirect curl is about to follow. */
static bool head_is_final(http_req_t *q) {
  if (q->code >= 100 && q->code < 200) return false;
  if (!q->follow || q->code < 300 || q->code >= 400) return true;
  /* curl follows any 3xx whose Location is not empty */
  struct curl_header *h;
  if (curl_easy_header(q->easy, "Location", 0, CURLH_HEADER, -1, &h) != CURLHE_OK) return true;
  const char *v = h->value;
  while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') v++;
  return *v == '\0';
}

/* Headers are read at the end with curl's header API; this only tracks
 * where each response begins and, when streaming, where the final head
 * ends. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req_t *q = ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) { /* a new response */
    q->body_len = 0; /* any body of an earlier one */
    q->code = 0;
    size_t i = 5;
    while (i < n && ptr[i] != ' ') i++;
    for (i++; i < n && ptr[i] >= '0' && ptr[i] <= '9'; i++) q->code = q->code * 10 + (ptr[i] - '0');
    return n;
  }
  bool end = (n == 2 && ptr[0] == '\r') || (n == 1 && ptr[0] == '\n');
  if (end && q->streaming && q->open && head_is_final(q) && stream_open(q) < 0) {
    q->oom = true;
    return 0;
  }
  return n;
}

static void poll_closed(uv_handle_t *h);
static void check_done(uva_http_client_t *c);

static void on_poll(uv_poll_t *h, int status, int events) {
  http_poll_t *p = UVA_CONTAINER_OF(h, http_poll_t, poll);
  uva_http_client_t *c = p->client;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(c->multi, p->fd, flags, &running);
  check_done(c);
}

static void on_timer(uv_timer_t *t) {
  uva_http_client_t *c = UVA_CONTAINER_OF(t, uva_http_client_t, timer);
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

static void poll_close(http_poll_t *p) {
  uva__list_unlink(&p->link);
  p->client->closing++;
  p->client->loop->jobs++;
  uv_close((uv_handle_t *)&p->poll, poll_closed);
}

static void on_reap(uv_timer_t *t) {
  uva_http_client_t *c = UVA_CONTAINER_OF(t, uva_http_client_t, reap);
  for (uva__link_t *l = c->active.next; l != &c->active;) {
    http_req_t *q = UVA_CONTAINER_OF(l, http_req_t, link);
    l = l->next;
    if (q->oom) {
      xfer_fail(q, CURLE_OUT_OF_MEMORY);
      l = c->active.next; /* finishing may have changed the list */
    }
  }
}

/* A socket we cannot watch (out of memory): returning an error to curl
 * would break the whole multi handle, so accept it and fail the transfer
 * that wanted it from a 0 ms timer, outside curl's callback. */
static int socket_fail(uva_http_client_t *c, CURL *e) {
  http_req_t *q = NULL;
  curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&q);
  if (q) q->oom = true;
  uv_timer_start(&c->reap, on_reap, 0, 0);
  return 0;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  uva_http_client_t *c = userp;
  http_poll_t *p = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (p) {
      uv_poll_stop(&p->poll);
      poll_close(p);
      curl_multi_assign(c->multi, s, NULL);
    }
    return 0;
  }
  if (p == NULL) {
    p = uva__malloc(sizeof *p);
    if (p == NULL) return socket_fail(c, e);
    if (uv_poll_init_socket(c->loop->uv, &p->poll, s) != 0) {
      uva__free(p);
      return socket_fail(c, e);
    }
    p->fd = s;
    p->client = c;
    uva__list_push(&c->polls, &p->link);
    curl_multi_assign(c->multi, s, p);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  return uv_poll_start(&p->poll, ev, on_poll) == 0 ? 0 : socket_fail(c, e);
}

static int on_timeout(CURLM *m, long ms, void *userp) {
  (void)m;
  uva_http_client_t *c = userp;
  if (ms < 0) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
  return 0;
}

/* -------------------------------------------------------- completion */

static int map_error(http_req_t *q, CURLcode rc) {
  if (q->oom) return UV_ENOMEM;
  if (q->too_big) return UV_E2BIG;
  if (q->up && q->up->err && (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR))
    return q->up->err;
  long os = 0;
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return UV_EAI_NONAME;
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo(q->easy, CURLINFO_OS_ERRNO, &os);
    return os > 0 ? -(int)os : q->sock_err ? q->sock_err : UV_ECONNREFUSED;
  case CURLE_OPERATION_TIMEDOUT: return UV_ETIMEDOUT;
  case CURLE_TOO_MANY_REDIRECTS: return UV_ELOOP;
  case CURLE_UNSUPPORTED_PROTOCOL: return UV_EPROTONOSUPPORT;
  case CURLE_URL_MALFORMAT: return UV_EINVAL;
  case CURLE_FILESIZE_EXCEEDED: return UV_E2BIG;
  case CURLE_OUT_OF_MEMORY: return UV_ENOMEM;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED: return UV_EPROTO;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_PARTIAL_FILE: return UV_ECONNRESET;
  case CURLE_FILE_COULDNT_READ_FILE: return UV_ENOENT;
  default: return UV_EIO;
  }
}

/* A request failed: its message goes to its buffer, its stream and the
 * client. */
static void set_error(http_req_t *q, const char *msg) {
  snprintf(q->client->last_error, sizeof q->client->last_error, "%s", msg);
  if (q->user_err) snprintf(q->user_err, UVA_HTTP_ERROR_SIZE, "%s", msg);
  if (q->stream) snprintf(q->stream->error, sizeof q->stream->error, "%s", msg);
}

/* End a transfer that failed with rc (or a failure of ours: oom, too_big,
 * an upload read), never from inside a curl callback. */
static void xfer_fail(http_req_t *q, CURLcode rc) {
  int err = map_error(q, rc);
  if (q->errbuf[0] == '\0') {
    if (q->too_big) strcpy(q->errbuf, "response body larger than max_body");
    else if (err == UV_ENOMEM) strcpy(q->errbuf, "out of memory");
    else if (q->up && q->up->err == err)
      snprintf(q->errbuf, sizeof q->errbuf, "reading body_file: %s", uv_strerror(err));
  } else if (q->sock_err && err == q->sock_err) { /* curl's text blames the server */
    size_t n = strlen(q->errbuf);
    snprintf(q->errbuf + n, sizeof q->errbuf - n, " (socket: %s)", uv_strerror(err));
  }
  set_error(q, q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc));
  if (q->streaming) stream_end(q, err);
  else req_finish(q, err, NULL);
}

static void check_done(uva_http_client_t *c) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    http_req_t *q = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
    if (q == NULL) continue;
    CURLcode rc = m->data.result;
    if (rc != CURLE_OK || q->oom || q->too_big) {
      xfer_fail(q, rc);
    } else if (q->streaming) {
      stream_end(q, 0);
    } else {
      q->reusable = q->plain;
      uva_http_response_t *r = build_response(q);
      req_finish(q, r ? 0 : UV_ENOMEM, r);
    }
  }
}

/* ------------------------------------------------------------- client */

static void client_release(uva_http_client_t *c) {
  for (size_t i = 0; i < c->nfree; i++) curl_easy_cleanup(c->free_easy[i].e);
  c->nfree = 0;
  if (c->multi) curl_multi_cleanup(c->multi); /* may report CURL_POLL_REMOVE */
  c->multi = NULL;
  if (c->share) curl_share_cleanup(c->share);
  c->share = NULL;
  pool_unref(c->pool);
  c->pool = NULL;
}

static void client_maybe_free(uva_http_client_t *c) {
  if (c->closing > 0) return;
  uva__free(c->free_easy);
  uva__free(c->scratch);
  uva__free(c->user_agent);
  uva__free(c->protocols);
  uva__free(c->ca_file);
  uva__free(c);
}

static int client_opts(uva_http_client_t *c, const uva_http_client_opts_t *o) {
  const char *ua = o && o->user_agent ? o->user_agent : "uvasync/0.1.0";
  if (strpbrk(ua, "\r\n")) return UV_EINVAL;
  if ((c->user_agent = uva__strdup(ua)) == NULL) return UV_ENOMEM;
  c->max_redirects = HTTP_DEFAULT_REDIRECTS;
  c->stream_buffer = 256 * 1024;
  if (o == NULL) return 0;
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 0;
  c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 0;
  if (o->max_redirects > 0) c->max_redirects = o->max_redirects;
  c->max_body = o->max_body;
  if (o->stream_buffer) c->stream_buffer = o->stream_buffer;
  if (o->max_connections > 0)
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, o->max_connections);
  if (o->max_host_connections > 0)
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, o->max_host_connections);
  if (o->ca_file && (c->ca_file = uva__strdup(o->ca_file)) == NULL) return UV_ENOMEM;
  if (o->protocols) {
    /* curl checks the list; keep the handle that checked it */
    CURL *e = curl_easy_init();
    if (e == NULL || (c->protocols = uva__strdup(o->protocols)) == NULL) {
      if (e) curl_easy_cleanup(e);
      return UV_ENOMEM;
    }
    CURLcode rc = curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, c->protocols);
    easy_put(c, e, false);
    if (rc == CURLE_OUT_OF_MEMORY) return UV_ENOMEM;
    if (rc != CURLE_OK) return UV_EINVAL;
  }
  if (o->cookies) {
    if ((c->share = curl_share_init()) == NULL ||
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE) != CURLSHE_OK)
      return UV_ENOMEM;
  }
  return 0;
}

int uva_http_client_new(uva_http_client_t **out, const uva_http_client_opts_t *opts) {
  if (out == NULL) return UV_EINVAL;
  *out = NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  uv_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return UV_ENOMEM;
  uva_http_client_t *c = uva__calloc(1, sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->loop = loop;
  uva__list_init(&c->active);
  uva__list_init(&c->polls);
  int rc = UV_ENOMEM;
  if ((c->pool = uva__calloc(1, sizeof *c->pool)) == NULL) goto fail;
  c->pool->refs = 1;
  c->pool->client_alive = true;
  if ((c->multi = curl_multi_init()) == NULL) goto fail;
  if ((rc = client_opts(c, opts)) < 0) goto fail;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  if ((rc = uv_timer_init(loop->uv, &c->timer)) != 0) goto fail;
  uv_timer_init(loop->uv, &c->reap); /* cannot fail once a timer could */
  if (loop->debug) uva__debug_open(loop, c, "HTTP client", NULL);
  *out = c;
  return 0;
fail:
  c->freed = true;
  client_release(c);
  client_maybe_free(c);
  return rc;
}

static void poll_closed(uv_handle_t *h) {
  http_poll_t *p = UVA_CONTAINER_OF((uv_poll_t *)h, http_poll_t, poll);
  uva_http_client_t *c = p->client;
  c->loop->jobs--;
  uva__free(p);
  if (--c->closing == 0 && c->freed) client_maybe_free(c);
}

static void timer_closed(uv_handle_t *h) {
  uva_http_client_t *c = h->data;
  c->loop->jobs--;
  if (--c->closing == 0) client_maybe_free(c);
}

void uva_http_client_free(uva_http_client_t *c) {
  if (c == NULL || c->freed) return;
  if (c->loop->debug) uva__debug_close(c->loop, c);
  /* Fail what is still running, then drop the multi handle. */
  while (!uva__list_empty(&c->active)) {
    http_req_t *q = UVA_CONTAINER_OF(c->active.next, http_req_t, link);
    set_error(q, "client freed");
    if (q->streaming) stream_end(q, UV_ECANCELED);
    else req_finish(q, UV_ECANCELED, NULL);
  }
  c->freed = true;
  /* Pooled buffers go now; responses still out free theirs themselves. */
  for (size_t i = 0; i < c->pool->n; i++) uva__free(c->pool->slot[i].buf);
  c->pool->n = 0;
  c->pool->client_alive = false;
  client_release(c);
  while (!uva__list_empty(&c->polls)) {
    http_poll_t *p = UVA_CONTAINER_OF(c->polls.next, http_poll_t, link);
    poll_close(p);
  }
  uv_timer_t *timers[] = {&c->timer, &c->reap};
  for (int i = 0; i < 2; i++) {
    uv_timer_stop(timers[i]);
    timers[i]->data = c;
    c->closing++;
    c->loop->jobs++;
    uv_close((uv_handle_t *)timers[i], timer_closed);
  }
}

const char *uva_http_last_error(const uva_http_client_t *c) {
  return c ? c->last_error : "";
}

/* ----------------------------------------------------------- requests */

static bool bad_text(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n') return true;
  return false;
}

static bool bad_url(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == ' ') return true;
  return false;
}

static bool bad_method(const char *s) {
  if (*s == '\0') return true;
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7f) return true;
  return false;
}

static void on_upload_open(uv_fs_t *r);

/* Open body_file on libuv's pool (a FIFO waits there for its writer, not
 * on the loop); curl gets q when it is open (on_upload_open). */
static int upload_open(http_req_t *q, const char *path) {
  upload_t *u = uva__calloc(1, sizeof *u);
  if (u == NULL) return UV_ENOMEM;
  u->fd = -1;
  q->up = u;
  if ((u->buf = uva__malloc(UPLOAD_BUF)) == NULL) return UV_ENOMEM;
  int rc = uv_fs_open(q->base.loop->uv, &u->req, path, O_RDONLY | O_CLOEXEC, 0, on_upload_open);
  if (rc < 0) return rc;
  upload_busy(q);
  return 0;
}

/* The body's length (-1: unknown, sent chunked), once it is open. */
static int upload_size(upload_t *u, curl_off_t *size) {
  struct stat st;
  if (fstat(u->fd, &st) < 0) return -errno;
  if (S_ISDIR(st.st_mode)) return UV_EISDIR;
  u->seekable = S_ISREG(st.st_mode);
  *size = u->seekable ? (curl_off_t)st.st_size : -1;
  return 0;
}

static void req_fail_start(http_req_t *q, int rc);

/* The message of a request that could not start (curl has none). */
static void start_error(http_req_t *q, int rc, bool file) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s%s", file ? "body_file: " : "", uva_strerror(rc));
  set_error(q, msg);
}

static void on_upload_open(uv_fs_t *r) {
  http_req_t *q = r->data;
  upload_t *u = q->up;
  int rc = (int)upload_back(q);
  if (rc >= 0) u->fd = rc;
  if (!q->held) { /* finished (cancelled, client freed) meanwhile */
    upload_free(q);
  } else {
    curl_off_t size = -1;
    if (rc >= 0) rc = upload_size(u, &size);
    if (rc >= 0 && curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE_LARGE, size) != CURLE_OK)
      rc = UV_ENOMEM;
    if (rc >= 0 && curl_multi_add_handle(q->client->multi, q->easy) != CURLM_OK) rc = UV_ENOMEM;
    if (rc >= 0) q->added = true;
    else req_fail_start(q, rc);
  }
  uva_release(&q->base); /* the open's */
}

/* Open curl's sockets ourselves, for two things curl's own socket() does
 * not give: close-on-exec (a child from uva_spawn_process must not hold
 * our connections), and the errno when it fails. curl then reports only
 * CURLE_COULDNT_CONNECT with no OS errno, which would read as "connection
 * refused" when the process is out of descriptors. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  http_req_t *q = ud;
  (void)purpose;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd == CURL_SOCKET_BAD) q->sock_err = -errno;
  return fd;
}

/* The client's options, the same for every request: set once per handle
 * (after curl_easy_init or curl_easy_reset). */
static int easy_base(uva_http_client_t *c, CURL *e) {
  const char *protos = c->protocols ? c->protocols : "http,https";
#define SET(opt, val) \
  do { if (curl_easy_setopt(e, opt, val) == CURLE_OUT_OF_MEMORY) return UV_ENOMEM; } while (0)
  SET(CURLOPT_PROTOCOLS_STR, protos);
  SET(CURLOPT_REDIR_PROTOCOLS_STR, protos);
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file) SET(CURLOPT_CAINFO, c->ca_file);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_USERAGENT, c->user_agent);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
  SET(CURLOPT_MAXREDIRS, c->max_redirects);
  SET(CURLOPT_ACCEPT_ENCODING, "");
  if (c->share) {
    SET(CURLOPT_SHARE, c->share);
    SET(CURLOPT_COOKIEFILE, ""); /* turns the cookie engine on, no file */
  }
  if (c->timeout_ms > 0) SET(CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
  if (c->connect_timeout_ms > 0) SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
  return 0;
}

/* A request that sets no option beyond easy_base's and the few every
 * request sets (a GET with the client's timeouts and redirect limit). */
static bool is_plain(const uva_http_request_t *rq) {
  return rq->body == NULL && rq->body_file == NULL && rq->headers == NULL &&
         (rq->method == NULL || strcmp(rq->method, "GET") == 0) &&
         rq->http_version == UVA_HTTP_VERSION_DEFAULT && rq->timeout_ms == 0 &&
         rq->connect_timeout_ms == 0 && rq->max_redirects <= 0;
}

static int req_setup(http_req_t *q, const uva_http_request_t *rq, bool ready) {
  uva_http_client_t *c = q->client;
  CURL *e = q->easy;
  int rc;
  if (!ready && (rc = easy_base(c, e)) < 0) return rc;
  q->max_body = rq->max_body ? rq->max_body : c->max_body;
  q->follow = rq->follow_redirects != UVA_HTTP_NO_FOLLOW;
  q->plain = is_plain(rq);
  SET(CURLOPT_URL, rq->url);
  SET(CURLOPT_PRIVATE, (void *)q);
  SET(CURLOPT_ERRORBUFFER, q->errbuf);
  SET(CURLOPT_WRITEDATA, (void *)q);
  SET(CURLOPT_HEADERDATA, (void *)q);
  SET(CURLOPT_OPENSOCKETDATA, (void *)q);
  SET(CURLOPT_FOLLOWLOCATION, q->follow ? 1L : 0L);
  /* Wait for a connection that may multiplex (HTTP/2) rather than open
   * one more; plain http:// is HTTP/1.1 unless asked. */
  SET(CURLOPT_PIPEWAIT, rq->http_version == UVA_HTTP_VERSION_2 ||
                            (rq->http_version == UVA_HTTP_VERSION_DEFAULT &&
                             strncasecmp(rq->url, "https:", 6) == 0) ? 1L : 0L);
  if (q->plain) return 0;
  if (rq->max_redirects > 0) SET(CURLOPT_MAXREDIRS, (long)rq->max_redirects);
  /* < 0: none (0 is curl's "no timeout", and its 300 s connect default) */
  if (rq->timeout_ms) SET(CURLOPT_TIMEOUT_MS, rq->timeout_ms > 0 ? (long)rq->timeout_ms : 0L);
  if (rq->connect_timeout_ms)
    SET(CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms > 0 ? (long)rq->connect_timeout_ms : 0L);
  if (rq->http_version == UVA_HTTP_VERSION_1_1) {
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  } else if (rq->http_version == UVA_HTTP_VERSION_2) {
    if (curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE))
      return UV_EPROTONOSUPPORT; /* a libcurl without HTTP/2 */
  }
  if (rq->body) {
    if (rq->body_len) {
      if ((q->req_body = uva__malloc(rq->body_len)) == NULL) return UV_ENOMEM;
      memcpy(q->req_body, rq->body, rq->body_len);
    }
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    SET(CURLOPT_POSTFIELDS, q->req_body ? (char *)q->req_body : "");
  } else if (rq->body_file) {
    if ((rc = upload_open(q, rq->body_file)) < 0) return rc;
    SET(CURLOPT_POST, 1L); /* the length when it is open */
    SET(CURLOPT_READFUNCTION, on_upload);
    SET(CURLOPT_READDATA, (void *)q);
    SET(CURLOPT_SEEKFUNCTION, on_seek);
    SET(CURLOPT_SEEKDATA, (void *)q);
  }
  if (rq->method) {
    bool has_body = rq->body || rq->body_file;
    if (strcmp(rq->method, "GET") == 0 && !has_body) SET(CURLOPT_HTTPGET, 1L);
    else if (strcmp(rq->method, "HEAD") == 0) SET(CURLOPT_NOBODY, 1L);
    else SET(CURLOPT_CUSTOMREQUEST, rq->method);
  }
  if (rq->headers) {
    for (const char *const *h = rq->headers; *h; h++) {
      struct curl_slist *n = curl_slist_append(q->headers, *h);
      if (n == NULL) return UV_ENOMEM;
      q->headers = n;
    }
    SET(CURLOPT_HTTPHEADER, q->headers);
  }
#undef SET
  return 0;
}

static int validate(const uva_http_request_t *rq) {
  if (rq == NULL || rq->url == NULL || bad_url(rq->url)) return UV_EINVAL;
  if (rq->method && bad_method(rq->method)) return UV_EINVAL;
  if (rq->body == NULL && rq->body_len) return UV_EINVAL;
  if (rq->body && rq->body_file) return UV_EINVAL;
  if (rq->follow_redirects < 0 || rq->follow_redirects > UVA_HTTP_NO_FOLLOW) return UV_EINVAL;
  if (rq->http_version < 0 || rq->http_version > UVA_HTTP_VERSION_2) return UV_EINVAL;
  if (rq->headers)
    for (const char *const *h = rq->headers; *h; h++)
      if (bad_text(*h) || (strchr(*h, ':') == NULL && strchr(*h, ';') == NULL))
        return UV_EINVAL;
  return 0;
}

/* Hand q to curl. On failure q is not in curl and the caller fails it. */
static int req_start(uva_http_client_t *c, const uva_http_request_t *rq, http_req_t *q) {
  q->client = c;
  q->user_err = rq->error;
  if (q->user_err) q->user_err[0] = '\0';
  uva__list_init(&q->link);
  bool ready = false;
  if (c->nfree) {
    c->nfree--;
    q->easy = c->free_easy[c->nfree].e;
    ready = c->free_easy[c->nfree].ready;
  } else if ((q->easy = curl_easy_init()) == NULL) {
    return UV_ENOMEM;
  }
  int rc = req_setup(q, rq, ready);
  if (rc < 0) {
    start_error(q, rc, rq->body_file != NULL);
    return rc;
  }
  if (q->up == NULL) { /* a body_file is added once it is open */
    if (curl_multi_add_handle(c->multi, q->easy) != CURLM_OK) return UV_ENOMEM;
    q->added = true;
  }
  q->held = true;
  uva__list_push(&c->active, &q->link);
  /* curl's connection cache holds 4 idle connections per easy handle it
   * has *now*: when a burst of transfers ends before the next requests are
   * added (our waiters run after curl returns), it closes the connections
   * they will want (60,000 GETs at 100 in flight opened 8,143 connections
   * instead of 100). Keep curl's 4 per handle, of the most ever in flight. */
  if (++c->nactive > c->peak) {
    c->peak = c->nactive;
    long cache = c->peak < LONG_MAX / 4 ? (long)(4 * c->peak) : LONG_MAX;
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, cache);
  }
  q->base.refs++; /* the client's, while it holds q */
  return 0;
}

/* body_file could not be opened, or q could not be given to curl after. */
static void req_fail_start(http_req_t *q, int rc) {
  start_error(q, rc, true);
  if (q->streaming) stream_end(q, rc);
  else req_finish(q, rc, NULL);
}

/* Checks shared by both entry points: 0, or the error to fail with. */
static int request_check(uva_http_client_t *c, const uva_http_request_t *rq, uva_loop_t *loop) {
  if (c == NULL || c->freed || c->loop != loop) return UV_EINVAL;
  int rc = validate(rq);
  if (rc < 0) {
    memcpy(c->last_error, "invalid request", sizeof "invalid request");
    if (rq && rq->error) memcpy(rq->error, "invalid request", sizeof "invalid request");
  }
  return rc;
}

uva_future_t *uva_http_request(uva_http_client_t *c, const uva_http_request_t *rq) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  int rc = request_check(c, rq, loop);
  if (rc < 0) return uva__future_done(loop, rc);
  http_req_t *q = (http_req_t *)uva__future_alloc(loop, &http_fops);
  if (q == NULL) return NULL;
  if ((rc = req_start(c, rq, q)) < 0) req_finish(q, rc, NULL);
  return &q->base;
}

uva_future_t *uva_http_get(uva_http_client_t *c, const char *url) {
  uva_http_request_t rq;
  memset(&rq, 0, sizeof rq);
  rq.url = url;
  return uva_http_request(c, &rq);
}

uva_future_t *uva_http_stream_open(uva_http_client_t *c, const uva_http_request_t *rq) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  int rc = request_check(c, rq, loop);
  if (rc < 0) return uva__future_done(loop, rc);
  http_req_t *q = (http_req_t *)uva__future_alloc(loop, &http_fops);
  if (q == NULL) return NULL;
  if (loop->debug) uva__debug_close(loop, q); /* internal: the caller holds f */
  uva_future_t *f = uva__future_alloc(loop, &open_fops);
  if (f == NULL) {
    uva_release(&q->base);
    return NULL;
  }
  q->client = c;
  q->streaming = true;
  q->open = f;
  ((uva__small_future_t *)f)->owner = q;
  if ((rc = req_start(c, rq, q)) < 0) open_fail(q, rc);
  return f;
}
