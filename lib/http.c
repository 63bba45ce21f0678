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
 * list on the client (curl_easy_reset keeps nothing of the last request;
 * connections live in the multi handle's pool and are reused).
 *
 * curl_global_init runs once per process (uv_once) and curl_global_cleanup
 * is never called: libcurl's global state lives until exit. */
#include "internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HTTP_DEFAULT_REDIRECTS 10
#define HTTP_FREE_EASY_MAX 256

typedef struct http_poll {
  uv_poll_t poll;
  curl_socket_t fd;
  struct uva_http_client *client;
  uva__link_t link; /* client->polls */
} http_poll_t;

typedef struct body_pool body_pool_t;

struct uva_http_client {
  uva_loop_t *loop;
  body_pool_t *pool;
  CURLM *multi;
  uv_timer_t timer;
  uva__link_t active; /* requests curl has */
  uva__link_t polls;  /* open poll handles */
  CURL **free_easy;
  size_t nfree, free_cap;
  size_t closing;     /* handles whose close callback has not run */
  bool freed;
  char *user_agent;
  int64_t timeout_ms, connect_timeout_ms;
  long max_redirects;
  size_t max_body;
  char last_error[CURL_ERROR_SIZE];
};

typedef struct http_req {
  uva_future_t base;
  uva_http_client_t *client;
  CURL *easy;
  struct curl_slist *headers;
  uva__link_t link; /* client->active */
  bool in_multi;
  bool too_big;
  bool oom;
  size_t max_body;
  char *body;
  size_t body_len, body_cap;
  /* response headers of the last response (redirects reset them) */
  char **hdr_lines;
  size_t nhdr, hdr_cap;
  void *req_body;   /* our copy of the request body */
  char errbuf[CURL_ERROR_SIZE];
} http_req_t;

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
  uva__free((void *)r->effective_url);
  /* headers and their strings are one block */
  uva__free(r->headers);
  uva__free(r);
}

static void response_free_fn(void *v) { uva_http_response_free(v); }

const char *uva_http_response_header(const uva_http_response_t *r, const char *name) {
  if (r == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
  return NULL;
}

/* ------------------------------------------------------ request futures */

static void req_clear(http_req_t *q) {
  pool_put(q->client->pool, q->body, q->body_cap);
  q->body = NULL;
  q->body_len = q->body_cap = 0;
  for (size_t i = 0; i < q->nhdr; i++) uva__free(q->hdr_lines[i]);
  uva__free(q->hdr_lines);
  q->hdr_lines = NULL;
  q->nhdr = q->hdr_cap = 0;
  uva__free(q->req_body);
  q->req_body = NULL;
  if (q->headers) curl_slist_free_all(q->headers);
  q->headers = NULL;
}

/* Give the easy handle back to the client (or clean it up). */
static void easy_put(uva_http_client_t *c, CURL *e) {
  if (e == NULL) return;
  if (c->freed || c->nfree >= HTTP_FREE_EASY_MAX) {
    curl_easy_cleanup(e);
    return;
  }
  if (c->nfree == c->free_cap) {
    size_t cap = c->free_cap ? c->free_cap * 2 : 16;
    CURL **n = uva__realloc(c->free_easy, cap * sizeof *n);
    if (n == NULL) {
      curl_easy_cleanup(e);
      return;
    }
    c->free_easy = n;
    c->free_cap = cap;
  }
  curl_easy_reset(e);
  c->free_easy[c->nfree++] = e;
}

/* Take the request away from curl (never called inside a curl callback)
 * and drop the client's reference. Completes nothing. */
static void req_detach(http_req_t *q) {
  uva_http_client_t *c = q->client;
  if (q->in_multi) {
    curl_multi_remove_handle(c->multi, q->easy);
    q->in_multi = false;
    uva__list_unlink(&q->link);
  }
  easy_put(c, q->easy);
  q->easy = NULL;
}

static void req_finish(http_req_t *q, int status, void *value) {
  bool held = q->in_multi;
  req_detach(q);
  req_clear(q);
  uva__future_complete(&q->base, status, value, value ? response_free_fn : NULL);
  if (held) uva_release(&q->base); /* the client's reference */
}

static int req_cancel(uva_future_t *f) {
  http_req_t *q = (http_req_t *)f;
  req_finish(q, UV_ECANCELED, NULL);
  return 1;
}

static void req_destroy(uva_future_t *f) {
  http_req_t *q = (http_req_t *)f;
  /* Pending and unreferenced can only happen before it was handed to curl. */
  if (q->easy) easy_put(q->client, q->easy);
  q->easy = NULL;
  req_clear(q);
}

static const uva__fops_t http_fops = {"http", req_cancel, req_destroy, sizeof(http_req_t)};

/* ------------------------------------------------------ curl callbacks */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req_t *q = ud;
  size_t n = size * nmemb;
  if (q->max_body && q->body_len + n > q->max_body) {
    q->too_big = true;
    return CURL_WRITEFUNC_ERROR;
  }
  size_t need = q->body_len + n + 1;
  curl_off_t cl = -1;
  /* A response's first chunk: if its length is announced, size the buffer
   * for all of it at once instead of a chain of reallocs copying it over. */
  if (q->body_len == 0 &&
      curl_easy_getinfo(q->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
      cl > 0 && (q->max_body == 0 || (size_t)cl <= q->max_body) && (size_t)cl + 1 > need)
    need = (size_t)cl + 1;
  if (q->body == NULL) q->body = pool_get(q->client->pool, need, &q->body_cap);
  if (need > q->body_cap) {
    size_t cap = q->body_cap ? q->body_cap * 2 : 4096;
    if (cap < need) cap = need;
    char *b = uva__realloc(q->body, cap);
    if (b == NULL) {
      q->oom = true;
      return CURL_WRITEFUNC_ERROR;
    }
    q->body = b;
    q->body_cap = cap;
  }
  memcpy(q->body + q->body_len, ptr, n);
  q->body_len += n;
  q->body[q->body_len] = '\0';
  return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req_t *q = ud;
  size_t n = size * nmemb, len = n;
  while (len > 0 && (ptr[len - 1] == '\n' || ptr[len - 1] == '\r')) len--;
  if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) { /* a new response */
    for (size_t i = 0; i < q->nhdr; i++) uva__free(q->hdr_lines[i]);
    q->nhdr = 0;
    q->body_len = 0; /* a body of an earlier response (redirect) */
    return n;
  }
  if (len == 0 || memchr(ptr, ':', len) == NULL) return n;
  if (q->nhdr == q->hdr_cap) {
    size_t cap = q->hdr_cap ? q->hdr_cap * 2 : 16;
    char **l = uva__realloc(q->hdr_lines, cap * sizeof *l);
    if (l == NULL) {
      q->oom = true;
      return 0;
    }
    q->hdr_lines = l;
    q->hdr_cap = cap;
  }
  char *s = uva__malloc(len + 1);
  if (s == NULL) {
    q->oom = true;
    return 0;
  }
  memcpy(s, ptr, len);
  s[len] = '\0';
  q->hdr_lines[q->nhdr++] = s;
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

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)e;
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
    if (p == NULL) return -1;
    if (uv_poll_init_socket(c->loop->uv, &p->poll, s) != 0) {
      uva__free(p);
      return -1;
    }
    p->fd = s;
    p->client = c;
    uva__list_push(&c->polls, &p->link);
    curl_multi_assign(c->multi, s, p);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  return uv_poll_start(&p->poll, ev, on_poll) == 0 ? 0 : -1;
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
  long os = 0;
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return UV_EAI_NONAME;
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo(q->easy, CURLINFO_OS_ERRNO, &os);
    return os > 0 ? -(int)os : UV_ECONNREFUSED;
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
  case CURLE_PARTIAL_FILE: return UV_ECONNRESET;
  default: return UV_EIO;
  }
}

static uva_http_response_t *build_response(http_req_t *q) {
  uva_http_response_t *r = uva__calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  long code = 0, ver = 0;
  curl_off_t total = 0;
  char *url = NULL;
  curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(q->easy, CURLINFO_HTTP_VERSION, &ver);
  curl_easy_getinfo(q->easy, CURLINFO_TOTAL_TIME_T, &total);
  curl_easy_getinfo(q->easy, CURLINFO_EFFECTIVE_URL, &url);
  r->status = (int)code;
  r->http_version = ver == CURL_HTTP_VERSION_1_0 ? 10
                  : ver == CURL_HTTP_VERSION_1_1 ? 11
                  : ver == CURL_HTTP_VERSION_2_0 ? 20
                  : ver == CURL_HTTP_VERSION_3 ? 30 : 0;
  r->total_us = (uint64_t)total;
  if ((r->effective_url = uva__strdup(url ? url : "")) == NULL) goto oom;
  /* headers: one block of entries followed by the strings */
  size_t strs = 0;
  for (size_t i = 0; i < q->nhdr; i++) strs += strlen(q->hdr_lines[i]) + 1;
  if (q->nhdr) {
    r->headers = uva__malloc(q->nhdr * sizeof(uva_http_header_t) + strs);
    if (r->headers == NULL) goto oom;
    char *p = (char *)(r->headers + q->nhdr);
    for (size_t i = 0; i < q->nhdr; i++) {
      const char *line = q->hdr_lines[i];
      const char *colon = strchr(line, ':');
      size_t nlen = (size_t)(colon - line);
      const char *v = colon + 1;
      while (*v == ' ' || *v == '\t') v++;
      size_t vlen = strlen(v);
      while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
      memcpy(p, line, nlen);
      p[nlen] = '\0';
      r->headers[i].name = p;
      p += nlen + 1;
      memcpy(p, v, vlen);
      p[vlen] = '\0';
      r->headers[i].value = p;
      p += vlen + 1;
    }
    r->nheaders = q->nhdr;
  }
  if (q->body == NULL) {
    if ((q->body = uva__malloc(1)) == NULL) goto oom;
    q->body_cap = 1;
  }
  if (q->body_len == 0) q->body[0] = '\0';
  r->body = q->body;
  r->body_len = q->body_len;
  r->body_cap_ = q->body_cap;
  r->pool_ = pool_ref(q->client->pool);
  q->body = NULL;
  q->body_len = q->body_cap = 0;
  return r;
oom:
  uva_http_response_free(r);
  return NULL;
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
    if (rc == CURLE_OK && !q->oom) {
      uva_http_response_t *r = build_response(q);
      if (r) req_finish(q, 0, r);
      else req_finish(q, UV_ENOMEM, NULL);
    } else {
      int err = map_error(q, rc);
      if (q->too_big && q->errbuf[0] == '\0')
        strcpy(q->errbuf, "response body larger than max_body");
      snprintf(c->last_error, sizeof c->last_error, "%s",
               q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc));
      req_finish(q, err, NULL);
    }
  }
}

/* ------------------------------------------------------------- client */

int uva_http_client_new(uva_http_client_t **out, const uva_http_client_opts_t *opts) {
  if (out == NULL) return UV_EINVAL;
  *out = NULL;
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return UVA_ENOLOOP;
  uv_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return UV_ENOMEM;
  uva_http_client_t *c = uva__calloc(1, sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  if ((c->pool = uva__calloc(1, sizeof *c->pool)) == NULL) {
    uva__free(c);
    return UV_ENOMEM;
  }
  c->pool->refs = 1;
  c->pool->client_alive = true;
  c->loop = loop;
  uva__list_init(&c->active);
  uva__list_init(&c->polls);
  c->max_redirects = HTTP_DEFAULT_REDIRECTS;
  const char *ua = "uvasync/" "0.1.0";
  long maxconn = 0, maxhost = 0;
  if (opts) {
    if (opts->user_agent) ua = opts->user_agent;
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 0;
    c->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 0;
    if (opts->max_redirects > 0) c->max_redirects = opts->max_redirects;
    c->max_body = opts->max_body;
    maxconn = opts->max_connections > 0 ? opts->max_connections : 0;
    maxhost = opts->max_host_connections > 0 ? opts->max_host_connections : 0;
  }
  if (strpbrk(ua, "\r\n")) {
    pool_unref(c->pool);
    uva__free(c);
    return UV_EINVAL;
  }
  if ((c->user_agent = uva__strdup(ua)) == NULL || (c->multi = curl_multi_init()) == NULL) {
    uva__free(c->user_agent);
    pool_unref(c->pool);
    uva__free(c);
    return UV_ENOMEM;
  }
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  if (maxconn) curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxconn);
  if (maxhost) curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxhost);
  int rc = uv_timer_init(loop->uv, &c->timer);
  if (rc != 0) {
    curl_multi_cleanup(c->multi);
    uva__free(c->user_agent);
    pool_unref(c->pool);
    uva__free(c);
    return rc;
  }
  *out = c;
  return 0;
}

static void client_maybe_free(uva_http_client_t *c) {
  if (c->closing > 0) return;
  uva__free(c->free_easy);
  uva__free(c->user_agent);
  uva__free(c);
}

static void poll_closed(uv_handle_t *h) {
  http_poll_t *p = UVA_CONTAINER_OF((uv_poll_t *)h, http_poll_t, poll);
  uva_http_client_t *c = p->client;
  c->loop->jobs--;
  uva__free(p);
  if (--c->closing == 0 && c->freed) client_maybe_free(c);
}

static void timer_closed(uv_handle_t *h) {
  uva_http_client_t *c = UVA_CONTAINER_OF((uv_timer_t *)h, uva_http_client_t, timer);
  c->loop->jobs--;
  if (--c->closing == 0) client_maybe_free(c);
}

void uva_http_client_free(uva_http_client_t *c) {
  if (c == NULL || c->freed) return;
  /* Fail what is still running, then drop the multi handle. */
  while (!uva__list_empty(&c->active)) {
    http_req_t *q = UVA_CONTAINER_OF(c->active.next, http_req_t, link);
    memcpy(c->last_error, "client freed", sizeof "client freed");
    req_finish(q, UV_ECANCELED, NULL);
  }
  c->freed = true;
  /* Pooled buffers go now; responses still out free theirs themselves. */
  for (size_t i = 0; i < c->pool->n; i++) uva__free(c->pool->slot[i].buf);
  c->pool->n = 0;
  c->pool->client_alive = false;
  pool_unref(c->pool);
  c->pool = NULL;
  for (size_t i = 0; i < c->nfree; i++) curl_easy_cleanup(c->free_easy[i]);
  c->nfree = 0;
  curl_multi_cleanup(c->multi); /* may report CURL_POLL_REMOVE for the rest */
  c->multi = NULL;
  while (!uva__list_empty(&c->polls)) {
    http_poll_t *p = UVA_CONTAINER_OF(c->polls.next, http_poll_t, link);
    poll_close(p);
  }
  uv_timer_stop(&c->timer);
  c->closing++;
  c->loop->jobs++;
  uv_close((uv_handle_t *)&c->timer, timer_closed);
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

static int req_setup(http_req_t *q, const uva_http_request_t *rq) {
  uva_http_client_t *c = q->client;
  CURL *e = q->easy;
  int64_t timeout = rq->timeout_ms ? rq->timeout_ms : c->timeout_ms;
  int64_t ctimeout = rq->connect_timeout_ms ? rq->connect_timeout_ms : c->connect_timeout_ms;
  long redirs = rq->max_redirects > 0 ? rq->max_redirects : c->max_redirects;
  q->max_body = rq->max_body ? rq->max_body : c->max_body;
  bool follow = rq->follow_redirects != UVA_HTTP_NO_FOLLOW;
#define SET(opt, val) \
  do { if (curl_easy_setopt(e, opt, val) == CURLE_OUT_OF_MEMORY) return UV_ENOMEM; } while (0)
  SET(CURLOPT_URL, rq->url);
  SET(CURLOPT_PRIVATE, (void *)q);
  SET(CURLOPT_ERRORBUFFER, q->errbuf);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_USERAGENT, c->user_agent);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)q);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)q);
  SET(CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
  SET(CURLOPT_MAXREDIRS, redirs);
  SET(CURLOPT_ACCEPT_ENCODING, "");
  if (timeout > 0) SET(CURLOPT_TIMEOUT_MS, (long)timeout);
  if (ctimeout > 0) SET(CURLOPT_CONNECTTIMEOUT_MS, (long)ctimeout);
  if (q->max_body) SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)q->max_body);
  if (rq->body) {
    if (rq->body_len) {
      if ((q->req_body = uva__malloc(rq->body_len)) == NULL) return UV_ENOMEM;
      memcpy(q->req_body, rq->body, rq->body_len);
    }
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    SET(CURLOPT_POSTFIELDS, q->req_body ? (char *)q->req_body : "");
  }
  if (rq->method) {
    if (strcmp(rq->method, "GET") == 0 && !rq->body) SET(CURLOPT_HTTPGET, 1L);
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
  if (rq->follow_redirects < 0 || rq->follow_redirects > UVA_HTTP_NO_FOLLOW) return UV_EINVAL;
  if (rq->headers)
    for (const char *const *h = rq->headers; *h; h++)
      if (bad_text(*h) || (strchr(*h, ':') == NULL && strchr(*h, ';') == NULL))
        return UV_EINVAL;
  return 0;
}

uva_future_t *uva_http_request(uva_http_client_t *c, const uva_http_request_t *rq) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return NULL;
  if (c == NULL || c->freed || c->loop != loop) return uva__future_done(loop, UV_EINVAL);
  int rc = validate(rq);
  if (rc < 0) {
    memcpy(c->last_error, "invalid request", sizeof "invalid request");
    return uva__future_done(loop, rc);
  }
  http_req_t *q = (http_req_t *)uva__future_alloc(loop, &http_fops);
  if (q == NULL) return NULL;
  q->client = c;
  uva__list_init(&q->link);
  if (c->nfree) q->easy = c->free_easy[--c->nfree];
  else if ((q->easy = curl_easy_init()) == NULL) goto oom;
  if ((rc = req_setup(q, rq)) < 0) goto fail;
  if (curl_multi_add_handle(c->multi, q->easy) != CURLM_OK) goto oom;
  q->in_multi = true;
  uva__list_push(&c->active, &q->link);
  q->base.refs++; /* the client's, while curl has it */
  return &q->base;
oom:
  rc = UV_ENOMEM;
fail:
  req_finish(q, rc, NULL);
  return &q->base;
}

uva_future_t *uva_http_get(uva_http_client_t *c, const char *url) {
  uva_http_request_t rq;
  memset(&rq, 0, sizeof rq);
  rq.url = url;
  return uva_http_request(c, &rq);
}
