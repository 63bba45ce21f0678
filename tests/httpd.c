/* The tests' HTTP/1.1 server (see httpd.h), on uvasync's own streams.
 *
 * One task per connection (uva_tcp_listen) serves requests in turn until
 * the client closes, asks for "Connection: close" (or speaks HTTP/1.0
 * without keep-alive), a route closes on purpose, a request is refused
 * (an error status, then a lingering close), the head timeout passes, or
 * httpd_stop cancels it. The head is read line by line (read_until LF),
 * each read under one deadline for the whole head.
 *
 * Every buffer the server makes is plain malloc, not the library's
 * allocator: the tests count library allocations and inject failures into
 * them, and neither must be disturbed (or satisfied) by the server's own
 * memory. Every path out of a connection, cancellation included, goes
 * through conn_main's cleanup. */
#include "httpd.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BODY ((size_t)256 << 20)
#define STORED_MAX 65535 /* largest deflate stored block */
/* A multiple of 26: any slice starting at a multiple of 26 is the
 * pattern from there. */
#define PATTERN_LEN (26 * 2520)
/* Draining a connection before closing it (see linger). */
#define LINGER_MS 2000
#define LINGER_MAX ((size_t)1 << 20)

struct httpd {
  uva_server_t *srv;
  int port;
  httpd_stats_t stats;
  unsigned char *gzip; /* the /gzip body, built once per server */
  size_t gzip_len;
  char *pattern;       /* PATTERN_LEN bytes of the /bytes pattern */
  httpd_hook_fn after_response;
  void *after_response_data;
  int64_t timeout_ms;  /* httpd_set_head_timeout */
};

/* ------------------------------------------------------------ buffers */

/* A growable byte string; an allocation failure is remembered and
 * reported once, by buf_ok, instead of after every append. */
typedef struct buf {
  char *p;
  size_t len, cap;
  bool oom;
} buf_t;

/* Room for n more bytes and a NUL. */
static int buf_reserve(buf_t *b, size_t n) {
  if (b->oom) return UV_ENOMEM;
  if (b->len + n + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap * 2 : 256;
  while (cap < b->len + n + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (p == NULL) {
    b->oom = true;
    return UV_ENOMEM;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static void buf_add(buf_t *b, const void *data, size_t n) {
  if (buf_reserve(b, n) < 0) return;
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_printf(buf_t *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->oom = true; /* only header lines go through here: never that long */
    return;
  }
  buf_add(b, tmp, (size_t)n);
}

static int buf_ok(const buf_t *b) { return b->oom ? UV_ENOMEM : 0; }

static void buf_free(buf_t *b) {
  free(b->p);
  *b = (buf_t){0};
}

/* --------------------------------------------------------------- gzip */

/* Bitwise CRC-32 (gzip's, reflected 0xEDB88320): slow and table-free,
 * plenty for a 1 KiB test body. */
static uint32_t crc32_of(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  while (n--) {
    c ^= *p++;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

static unsigned char *put_le32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) *p++ = (unsigned char)(v >> (8 * i));
  return p;
}

/* A gzip member (RFC 1952) whose deflate stream (RFC 1951) is only
 * stored blocks: valid gzip without zlib. */
static unsigned char *gzip_stored(const unsigned char *data, size_t n, size_t *out_len) {
  size_t blocks = n / STORED_MAX + 1;
  unsigned char *out = malloc(10 + blocks * 5 + n + 8);
  if (out == NULL) return NULL;
  static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  unsigned char *p = out;
  memcpy(p, head, sizeof head);
  p += sizeof head;
  size_t off = 0;
  do {
    size_t m = n - off < STORED_MAX ? n - off : STORED_MAX;
    unsigned len = (unsigned)m, nlen = ~len & 0xffffu;
    *p++ = off + m == n; /* BFINAL; BTYPE 00 = stored; rest of byte padding */
    *p++ = (unsigned char)len;
    *p++ = (unsigned char)(len >> 8);
    *p++ = (unsigned char)nlen;
    *p++ = (unsigned char)(nlen >> 8);
    memcpy(p, data + off, m);
    p += m;
    off += m;
  } while (off < n);
  p = put_le32(p, crc32_of(data, n));
  p = put_le32(p, (uint32_t)n); /* ISIZE: length mod 2^32 */
  *out_len = (size_t)(p - out);
  return out;
}

static int gzip_build(httpd_t *h) {
  size_t line = strlen(HTTPD_GZIP_TEXT_LINE), n = line * HTTPD_GZIP_TEXT_REPEAT;
  unsigned char *text = malloc(n);
  if (text == NULL) return UV_ENOMEM;
  for (size_t i = 0; i < HTTPD_GZIP_TEXT_REPEAT; i++)
    memcpy(text + i * line, HTTPD_GZIP_TEXT_LINE, line);
  h->gzip = gzip_stored(text, n, &h->gzip_len);
  free(text);
  return h->gzip ? 0 : UV_ENOMEM;
}

/* ----------------------------------------------------------- requests */

typedef struct header {
  const char *name, *value;
} header_t;

typedef struct req {
  buf_t head;          /* the head's lines without their line ends, each
                        * NUL-terminated; split in place once complete */
  size_t head_bytes;   /* bytes of head read, line ends included */
  const char *method, *target;
  int version;         /* 10 or 11 (HTTP/1.x, x >= 1); 0 until parsed */
  char path[1024];     /* target without its query string */
  header_t hdr[HTTPD_MAX_HEADERS];
  size_t nhdr;
  buf_t body;
  bool head_only;      /* HEAD: the head of the answer, never its body */
} req_t;

typedef struct conn {
  httpd_t *h;
  uva_stream_t *s;
  req_t rq;
  bool close;          /* after this answer, close the connection */
  bool linger;         /* ...after a half-close and a drain (see linger) */
} conn_t;

/* A positive return of the reading functions below is an HTTP status to
 * answer before closing the connection; negative ones are errors that
 * close it without an answer (the client left, httpd_stop...). */

static void req_clear(req_t *rq) {
  buf_free(&rq->head);
  buf_free(&rq->body);
  *rq = (req_t){0};
}

static const char *req_header(const req_t *rq, const char *name) {
  for (size_t i = 0; i < rq->nhdr; i++)
    if (strcasecmp(rq->hdr[i].name, name) == 0) return rq->hdr[i].value;
  return NULL;
}

static int put(conn_t *k, const void *p, size_t n) {
  return n ? uva_await(uva_stream_write(k->s, p, n), NULL) : 0;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static char *trim(char *s) {
  while (is_blank(*s)) s++;
  size_t n = strlen(s);
  while (n && is_blank(s[n - 1])) s[--n] = '\0';
  return s;
}

/* RFC 9110 5.6.2: tchar. */
static bool is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s) {
  if (*s == '\0') return false;
  for (; *s; s++)
    if (!is_tchar((unsigned char)*s)) return false;
  return true;
}

/* A control character other than HTAB (NUL, a lone CR, DEL...). */
static bool has_ctl(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) return true;
  }
  return false;
}

/* Whether some element of the comma-separated lists in the headers
 * called name is token (case-insensitive). */
static bool list_has(const req_t *rq, const char *name, const char *token) {
  size_t tl = strlen(token);
  for (size_t i = 0; i < rq->nhdr; i++) {
    if (strcasecmp(rq->hdr[i].name, name) != 0) continue;
    for (const char *p = rq->hdr[i].value; *p;) {
      while (is_blank(*p) || *p == ',') p++;
      size_t n = strcspn(p, ",");
      size_t m = n;
      while (m && is_blank(p[m - 1])) m--;
      if (m == tl && strncasecmp(p, token, tl) == 0) return true;
      p += n;
    }
  }
  return false;
}

/* Loop time at which ms from now ends; UINT64_MAX for ms < 0 (never). */
static uint64_t deadline_in(int64_t ms) {
  return ms < 0 ? UINT64_MAX : uva_now() + (uint64_t)ms;
}

/* Await f, but no later than deadline (then UV_ETIMEDOUT, f cancelled). */
static int await_until(uva_future_t *f, uint64_t deadline, void **out) {
  if (deadline == UINT64_MAX) return uva_await(f, out);
  uint64_t now = uva_now();
  return uva_await(uva_wait_for(f, now >= deadline ? 0 : (int64_t)(deadline - now)), out);
}

/* Read one line, LF-terminated, of at most limit bytes (its end
 * included), before deadline. On success *out holds it with its line end
 * (LF, or CRLF) cut off, *raw the bytes it took. */
static int read_line_by(conn_t *k, size_t limit, uint64_t deadline, uva_bytes_t **out,
                        size_t *raw) {
  void *v = NULL;
  int rc = await_until(uva_stream_read_until(k->s, "\n", 1, limit), deadline, &v);
  *out = NULL;
  if (rc < 0) return rc;
  uva_bytes_t *l = v;
  *raw = l->len;
  l->len--; /* the LF */
  if (l->len && l->data[l->len - 1] == '\r') l->len--;
  l->data[l->len] = '\0';
  *out = l;
  return 0;
}

/* A line of a request body (chunk size, chunk end, trailer), under the
 * idle timeout. */
static int read_body_line(conn_t *k, size_t limit, uva_bytes_t **out, size_t *raw) {
  int rc = read_line_by(k, limit, deadline_in(k->h->timeout_ms), out, raw);
  if (rc == UVA_ELIMIT) return 400;
  if (rc == UV_ETIMEDOUT) return 408;
  return rc;
}

/* Read the head into rq->head: lines up to an empty one, all within
 * HTTPD_HEAD_MAX bytes and before the head timeout. Empty lines before the
 * request line are skipped (RFC 9112 2.2). */
static int read_head(conn_t *k) {
  req_t *rq = &k->rq;
  uint64_t deadline = deadline_in(k->h->timeout_ms);
  for (;;) {
    if (rq->head_bytes >= HTTPD_HEAD_MAX) return 431;
    uva_bytes_t *l;
    size_t raw = 0;
    int rc = read_line_by(k, HTTPD_HEAD_MAX - rq->head_bytes, deadline, &l, &raw);
    if (rc == UVA_ELIMIT) return 431;
    if (rc == UV_ETIMEDOUT) {
      k->h->stats.timeouts++;
      /* part of a request came: say why; an idle connection just ends */
      return rq->head_bytes || uva_stream_buffered(k->s) ? 408 : rc;
    }
    if (rc < 0) return rc;
    rq->head_bytes += raw;
    size_t n = l->len;
    bool bad = has_ctl(l->data, n);
    if (n > 0 && !bad) buf_add(&rq->head, l->data, n + 1); /* with its NUL */
    uva_free(l);
    if (bad) return 400;
    if ((rc = buf_ok(&rq->head)) < 0) return rc;
    if (n == 0 && rq->head.len > 0) return 0; /* the end of the head */
  }
}

/* "HTTP/" DIGIT "." DIGIT. */
static int parse_version(req_t *rq, const char *v) {
  if (strncmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
      v[7] > '9' || v[8] != '\0')
    return 400;
  if (v[5] != '1') return 505;
  rq->version = v[7] == '0' ? 10 : 11;
  return 0;
}

/* Split the head into the request line and header fields. */
static int parse_head(req_t *rq) {
  char *p = rq->head.p, *end = p + rq->head.len;
  char *next = p + strlen(p) + 1;
  char *sp1 = strchr(p, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (sp2 == NULL || strchr(sp2 + 1, ' ') != NULL) return 400;
  *sp1 = *sp2 = '\0';
  rq->method = p;
  rq->target = sp1 + 1;
  if (!is_token(rq->method) || *rq->target == '\0' || strchr(rq->target, '\t')) return 400;
  int rc = parse_version(rq, sp2 + 1);
  if (rc != 0) return rc;
  for (p = next; p < end; p = next) {
    next = p + strlen(p) + 1;
    char *colon = strchr(p, ':');
    if (colon == NULL) return 400;
    *colon = '\0';
    /* no blank before the colon (RFC 9112 5.1), nor at the start (an
     * obsolete folded line): a name is a token */
    if (!is_token(p)) return 400;
    if (rq->nhdr == HTTPD_MAX_HEADERS) return 431;
    rq->hdr[rq->nhdr++] = (header_t){p, trim(colon + 1)};
  }
  size_t plen = strcspn(rq->target, "?");
  if (plen >= sizeof rq->path) return 414;
  memcpy(rq->path, rq->target, plen);
  rq->path[plen] = '\0';
  rq->head_only = strcmp(rq->method, "HEAD") == 0;
  return 0;
}

static bool wants_close(const req_t *rq) {
  if (list_has(rq, "Connection", "close")) return true;
  return rq->version == 10 && !list_has(rq, "Connection", "keep-alive");
}

/* Content-Length: 1*DIGIT, no sign, no blanks inside. Several fields, or
 * a list ("5, 5"), must all agree (RFC 9112 6.3). Values too large to
 * hold read as ULLONG_MAX. */
static int content_length(const req_t *rq, bool *has, unsigned long long *out) {
  *has = false;
  *out = 0;
  for (size_t i = 0; i < rq->nhdr; i++) {
    if (strcasecmp(rq->hdr[i].name, "Content-Length") != 0) continue;
    const char *p = rq->hdr[i].value;
    for (;;) {
      if (*p < '0' || *p > '9') return 400;
      unsigned long long v = 0;
      for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        v = v > (ULLONG_MAX - d) / 10 ? ULLONG_MAX : v * 10 + d;
      }
      if (*has && v != *out) return 400;
      *has = true;
      *out = v;
      while (is_blank(*p)) p++;
      if (*p == '\0') break;
      if (*p++ != ',') return 400;
      while (is_blank(*p)) p++;
    }
  }
  return 0;
}

/* Transfer-Encoding, over every such field: 0 if absent, 1 for exactly
 * "chunked", else the status to refuse it with: 400 when chunked is not
 * the final coding once (the body's end cannot be found, RFC 9112 6.3),
 * 501 for a coding the server does not decode ("gzip, chunked"). */
static int transfer_coding(const req_t *rq) {
  bool seen = false, other = false, last_chunked = false;
  int chunked = 0;
  for (size_t i = 0; i < rq->nhdr; i++) {
    if (strcasecmp(rq->hdr[i].name, "Transfer-Encoding") != 0) continue;
    seen = true;
    for (const char *p = rq->hdr[i].value; *p;) {
      while (is_blank(*p) || *p == ',') p++;
      size_t n = strcspn(p, ","), m = n;
      while (m && is_blank(p[m - 1])) m--;
      if (m == 0) break;
      last_chunked = m == 7 && strncasecmp(p, "chunked", 7) == 0;
      if (last_chunked) chunked++;
      else other = true;
      p += n;
    }
  }
  if (!seen) return 0;
  if (!last_chunked || chunked != 1) return 400;
  return other ? 501 : 1;
}

/* Read exactly n more body bytes onto rq->body, each read under the idle
 * timeout. A read borrows the buffer's tail until it is done; nothing
 * else touches the buffer then. */
static int read_body_bytes(conn_t *k, size_t n) {
  buf_t *b = &k->rq.body;
  if (n == 0) return 0;
  if (b->len + n > MAX_BODY) return 413;
  if (buf_reserve(b, n) < 0) return UV_ENOMEM;
  while (n > 0) {
    int rc = await_until(uva_stream_read(k->s, b->p + b->len, n), deadline_in(k->h->timeout_ms),
                         NULL);
    if (rc == UV_ETIMEDOUT) return 408;
    if (rc < 0) return rc;
    b->len += (size_t)rc;
    n -= (size_t)rc;
  }
  b->p[b->len] = '\0';
  return 0;
}

/* chunk-size [chunk-ext]: 1*HEXDIG, then nothing or blanks and ";..."
 * extensions (ignored). No sign, no "0x", no other trailing bytes. */
static bool parse_chunk_size(const char *s, unsigned long long *out) {
  unsigned long long v = 0;
  const char *p = s;
  for (;; p++) {
    unsigned d;
    if (*p >= '0' && *p <= '9') d = (unsigned)(*p - '0');
    else if (*p >= 'a' && *p <= 'f') d = (unsigned)(*p - 'a' + 10);
    else if (*p >= 'A' && *p <= 'F') d = (unsigned)(*p - 'A' + 10);
    else break;
    v = v > (ULLONG_MAX - d) / 16 ? ULLONG_MAX : v * 16 + d;
  }
  if (p == s) return false;
  while (is_blank(*p)) p++;
  if (*p != '\0' && *p != ';') return false;
  *out = v;
  return true;
}

/* A chunked body: size lines, data, line end; then a trailer section up
 * to an empty line (ignored). */
static int read_chunked(conn_t *k) {
  uva_bytes_t *l;
  size_t raw = 0;
  int rc;
  for (;;) {
    if ((rc = read_body_line(k, 4096, &l, &raw)) != 0) return rc;
    unsigned long long n;
    bool ok = parse_chunk_size(l->data, &n);
    uva_free(l);
    if (!ok) return 400;
    if (n == 0) break;
    if (n > MAX_BODY) return 413;
    if ((rc = read_body_bytes(k, (size_t)n)) != 0) return rc;
    /* the data's CRLF (or LF), nothing before it */
    if ((rc = read_body_line(k, 2, &l, &raw)) != 0) return rc;
    ok = l->len == 0;
    uva_free(l);
    if (!ok) return 400;
  }
  for (size_t used = 0;;) {
    if (used >= HTTPD_HEAD_MAX) return 431;
    if ((rc = read_body_line(k, HTTPD_HEAD_MAX - used, &l, &raw)) != 0) return rc == 400 ? 431 : rc;
    used += raw;
    bool last = l->len == 0, bad = has_ctl(l->data, l->len);
    uva_free(l);
    if (bad) return 400;
    if (last) return 0;
  }
}

/* curl holds back a large body after "Expect: 100-continue" until told to
 * go on (or a second passes): answer at once so tests stay fast. Never to
 * an HTTP/1.0 client (RFC 9110 15.2). */
static int maybe_continue(conn_t *k) {
  const char *e = req_header(&k->rq, "Expect");
  if (e == NULL || strcasecmp(e, "100-continue") != 0 || k->rq.version < 11) return 0;
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  k->h->stats.continues++;
  return put(k, cont, sizeof cont - 1);
}

static int read_body(conn_t *k) {
  req_t *rq = &k->rq;
  int te = transfer_coding(rq);
  if (te > 1) return te;
  bool has_cl;
  unsigned long long n;
  int rc = content_length(rq, &has_cl, &n);
  if (rc != 0) return rc;
  if (te == 1) {
    /* chunked wins over a Content-Length; with one, or in HTTP/1.0, the
     * framing is suspect: close after answering (RFC 9112 6.1, 6.3) */
    if (has_cl || rq->version == 10) k->close = k->linger = true;
    if ((rc = maybe_continue(k)) < 0) return rc;
    return read_chunked(k);
  }
  if (n > MAX_BODY) return 413;
  if (n == 0) return 0;
  if ((rc = maybe_continue(k)) < 0) return rc;
  return read_body_bytes(k, (size_t)n);
}

static int read_request(conn_t *k) {
  int rc = read_head(k);
  if (rc == 0) rc = parse_head(&k->rq);
  if (rc != 0) return rc;
  k->h->stats.requests++;
  k->close = wants_close(&k->rq);
  return read_body(k);
}

/* ---------------------------------------------------------- responses */

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "Status";
  }
}

/* Status line and headers. clen < 0: no Content-Length (the caller's
 * extra headers say how the body ends). extra: whole "Name: v\r\n" lines. */
static int send_head(conn_t *k, int status, const char *extra, long long clen) {
  buf_t b = {0};
  buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, reason(status));
  if (clen >= 0) buf_printf(&b, "Content-Length: %lld\r\n", clen);
  if (k->close) buf_add(&b, "Connection: close\r\n", 19);
  else if (k->rq.version == 10) buf_add(&b, "Connection: keep-alive\r\n", 24);
  if (extra) buf_add(&b, extra, strlen(extra));
  buf_add(&b, "\r\n", 2);
  int rc = buf_ok(&b);
  if (rc == 0) rc = put(k, b.p, b.len);
  buf_free(&b);
  return rc;
}

static int respond(conn_t *k, int status, const char *extra, const void *body, size_t len) {
  int rc = send_head(k, status, extra, (long long)len);
  if (rc == 0 && !k->rq.head_only) rc = put(k, body, len);
  return rc;
}

static int respond_text(conn_t *k, int status, const char *extra, const char *text) {
  return respond(k, status, extra, text, strlen(text));
}

/* Wait ms, but notice meanwhile that the client hung up (a cancelled or
 * timed-out transfer) rather than at the next write, so the connection
 * ends at once and tests can see it go. The watch is a read for a
 * delimiter no client sends: it completes only on end of stream or an
 * error, and consumes nothing when cancelled. */
static int pause_watch(conn_t *k, uint64_t ms) {
  static const char never[] = "\x01\xfe" "httpd: never sent" "\xfe\x01";
  uva_future_t *watch = uva_stream_read_until(k->s, never, sizeof never - 1, 0);
  if (watch == NULL) return UV_ENOMEM;
  uint64_t t0 = uva_now();
  int rc = uva_await(uva_wait(&watch, 1, UVA_FIRST_COMPLETED, (int64_t)ms), NULL);
  int st = uva_future_status(watch);
  uva_cancel(watch);
  uva_release(watch);
  if (rc < 0) return rc;
  if (st == UVA_EPENDING) return 0;
  if (st != UVA_ELIMIT) return st < 0 ? st : UV_EINVAL;
  /* A pipelined request longer than the watch's limit: just sleep. */
  uint64_t spent = uva_now() - t0;
  return spent >= ms ? 0 : uva_await(uva_sleep(ms - spent), NULL);
}

/* Write n bytes of the /bytes pattern, starting at byte `from`. */
static int put_pattern(conn_t *k, size_t from, size_t n) {
  while (n > 0) {
    size_t off = from % 26, m = PATTERN_LEN - off;
    if (m > n) m = n;
    int rc = put(k, k->h->pattern + off, m);
    if (rc < 0) return rc;
    from += m;
    n -= m;
  }
  return 0;
}

/* ------------------------------------------------------------- routes */

/* Each route answers one request; a negative return closes the
 * connection. rest: what follows the route's prefix in the path. */
typedef int (*route_fn)(conn_t *k, const char *rest);

/* A decimal number that is all of s (and fits). */
static bool parse_num(const char *s, const char *stop, unsigned long long *out) {
  char *end;
  if (*s < '0' || *s > '9') return false;
  *out = strtoull(s, &end, 10);
  return *end == '\0' || (stop && strchr(stop, *end));
}

static int route_ok(conn_t *k, const char *rest) {
  (void)rest;
  /* blanks around the value: clients must trim them */
  return respond_text(k, 200, "Content-Type: text/plain\r\nX-Test:  yes \r\n", "hello");
}

static int route_not_found(conn_t *k, const char *rest) {
  (void)rest;
  return respond_text(k, 404, NULL, "not found");
}

static int route_status(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n) || n < 200 || n > 999)
    return respond_text(k, 400, NULL, "bad status");
  /* these never have a body: sending one would corrupt the connection */
  if (n == 204 || n == 304) return respond(k, (int)n, NULL, NULL, 0);
  char body[32];
  snprintf(body, sizeof body, "status %llu", n);
  return respond_text(k, (int)n, NULL, body);
}

static int route_delay(conn_t *k, const char *rest) {
  unsigned long long ms;
  if (!parse_num(rest, NULL, &ms)) return route_not_found(k, rest);
  int rc = pause_watch(k, ms);
  if (rc < 0) {
    if (rc != UV_ECANCELED) k->h->stats.aborted++; /* not httpd_stop */
    return rc;
  }
  return respond_text(k, 200, NULL, "delayed");
}

static int route_redirect(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  if (n == 0) return respond_text(k, 200, NULL, "done");
  char loc[64];
  snprintf(loc, sizeof loc, "Location: /redirect/%llu\r\n", n - 1);
  return respond_text(k, 302, loc, "redirecting");
}

static int route_loop(conn_t *k, const char *rest) {
  (void)rest;
  return respond_text(k, 302, "Location: /loop\r\n", "redirecting");
}

/* HTTP/1.0 has no chunked coding: the same data then goes without
 * framing, and the connection's end ends it. */
static int route_chunked(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  bool framed = k->rq.version >= 11;
  if (!framed) k->close = true;
  int rc = send_head(k, 200, framed ? "Transfer-Encoding: chunked\r\n" : NULL, -1);
  if (k->rq.head_only) return rc;
  for (unsigned long long i = 0; rc == 0 && i < n; i++) {
    char chunk[64], data[32];
    int len = snprintf(data, sizeof data, "chunk %llu\n", i);
    int clen = framed ? snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", (unsigned)len, data)
                      : snprintf(chunk, sizeof chunk, "%s", data);
    rc = put(k, chunk, (size_t)clen);
  }
  return rc == 0 && framed ? put(k, "0\r\n\r\n", 5) : rc;
}

static int route_bytes(conn_t *k, const char *rest) {
  unsigned long long n;
  if (!parse_num(rest, NULL, &n)) return route_not_found(k, rest);
  int rc = send_head(k, 200, "Content-Type: application/octet-stream\r\n", (long long)n);
  return rc == 0 && !k->rq.head_only ? put_pattern(k, 0, (size_t)n) : rc;
}

static int route_reset(conn_t *k, const char *rest) {
  (void)rest;
  int rc = send_head(k, 200, NULL, 100000);
  if (rc == 0 && !k->rq.head_only) rc = put_pattern(k, 0, 1000);
  return rc < 0 ? rc : UV_ECONNRESET; /* close: the body stays short */
}

static int route_drip(conn_t *k, const char *rest) {
  unsigned long long n, ms;
  const char *slash = strchr(rest, '/');
  if (!parse_num(rest, "/", &n) || slash == NULL || !parse_num(slash + 1, NULL, &ms))
    return route_not_found(k, rest);
  int rc = send_head(k, 200, NULL, (long long)n);
  if (k->rq.head_only) return rc;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    rc = pause_watch(k, ms);
    if (rc == 0) rc = put_pattern(k, i, 1);
  }
  /* a hang-up shows up in the pause or, racing it, as a failed write */
  if (rc < 0 && rc != UV_ECANCELED) k->h->stats.aborted++;
  return rc;
}

static int route_gzip(conn_t *k, const char *rest) {
  (void)rest;
  return respond(k, 200, "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n", k->h->gzip,
                 k->h->gzip_len);
}

static int route_echo(conn_t *k, const char *rest) {
  (void)rest;
  /* every name is a token and no value holds a control character
   * (parse_head, read_head): nothing here can end a line early */
  buf_t extra = {0};
  buf_add(&extra, "X-Echo-Method: ", 15);
  buf_add(&extra, k->rq.method, strlen(k->rq.method));
  buf_add(&extra, "\r\n", 2);
  for (size_t i = 0; i < k->rq.nhdr; i++) {
    buf_add(&extra, "X-Echo-", 7);
    buf_add(&extra, k->rq.hdr[i].name, strlen(k->rq.hdr[i].name));
    buf_add(&extra, ": ", 2);
    buf_add(&extra, k->rq.hdr[i].value, strlen(k->rq.hdr[i].value));
    buf_add(&extra, "\r\n", 2);
  }
  int rc = buf_ok(&extra);
  if (rc == 0) rc = respond(k, 200, extra.p, k->rq.body.p, k->rq.body.len);
  buf_free(&extra);
  return rc;
}

static int route_set_cookie(conn_t *k, const char *rest) {
  const char *slash = strchr(rest, '/');
  if (slash == NULL || slash == rest || strlen(rest) > 512) return route_not_found(k, rest);
  char line[600];
  snprintf(line, sizeof line, "Set-Cookie: %.*s=%s; Path=/\r\n", (int)(slash - rest), rest,
           slash + 1);
  return respond_text(k, 200, line, "ok");
}

static int route_close(conn_t *k, const char *rest) {
  (void)k;
  (void)rest;
  return UV_ECONNRESET;
}

static const struct route {
  const char *path; /* ending in '/': a prefix followed by arguments */
  route_fn fn;
} routes[] = {
    {"/ok", route_ok},           {"/status/", route_status},
    {"/delay/", route_delay},    {"/redirect/", route_redirect},
    {"/loop", route_loop},       {"/chunked/", route_chunked},
    {"/bytes/", route_bytes},    {"/reset", route_reset},
    {"/drip/", route_drip},      {"/gzip", route_gzip},
    {"/echo", route_echo},       {"/set-cookie/", route_set_cookie},
    {"/close", route_close},
};

static int dispatch(conn_t *k) {
  const char *path = k->rq.path;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    const char *r = routes[i].path;
    size_t n = strlen(r);
    bool prefix = r[n - 1] == '/';
    if (prefix ? strncmp(path, r, n) == 0 : strcmp(path, r) == 0)
      return routes[i].fn(k, path + (prefix ? n : 0));
  }
  return route_not_found(k, path);
}

/* --------------------------------------------------------- connections */

/* Before closing a connection whose client may still be sending (a
 * refused request, a suspect body): half-close after the answer, then
 * read and drop what still comes, for a while and up to a limit. Closing
 * with unread data would reset the connection, and a reset can destroy
 * the answer before the client has read it. */
static void linger(conn_t *k) {
  if (uva_await(uva_stream_shutdown(k->s), NULL) < 0) return;
  int64_t ms = k->h->timeout_ms;
  uint64_t deadline = deadline_in(ms < 0 || ms > LINGER_MS ? LINGER_MS : ms);
  char scratch[4096];
  for (size_t total = 0; total < LINGER_MAX;) {
    int rc = await_until(uva_stream_read(k->s, scratch, sizeof scratch), deadline, NULL);
    if (rc <= 0) return;
    total += (size_t)rc;
  }
}

/* One request and its answer. Nonzero: stop serving this connection. */
static int serve_one(conn_t *k) {
  int rc = read_request(k);
  if (rc > 0) { /* refused: answer, then close */
    k->close = true;
    k->h->stats.refused++;
    if (respond_text(k, rc, NULL, rc == 400 ? "bad request" : reason(rc)) == 0) linger(k);
    return UV_EOF;
  }
  if (rc == 0) rc = dispatch(k);
  if (rc == 0 && k->h->after_response) k->h->after_response(k->h->after_response_data);
  if (rc == 0 && k->close) {
    if (k->linger) linger(k);
    rc = UV_EOF;
  }
  return rc;
}

static int conn_main(uva_stream_t *s, void *arg) {
  httpd_t *h = arg;
  h->stats.connections++;
  if (++h->stats.active > h->stats.max_active) h->stats.max_active = h->stats.active;
  conn_t k = {.h = h, .s = s};
  int rc;
  do {
    rc = serve_one(&k);
    req_clear(&k.rq);
  } while (rc == 0);
  h->stats.active--; /* last touch of h: httpd_stop waits for this */
  return 0;
}

/* ----------------------------------------------------------------- API */

int httpd_start(httpd_t **out, int port) {
  *out = NULL;
  httpd_t *h = calloc(1, sizeof *h);
  if (h == NULL) return UV_ENOMEM;
  h->timeout_ms = HTTPD_HEAD_TIMEOUT_MS;
  int rc = gzip_build(h);
  if (rc == 0 && (h->pattern = malloc(PATTERN_LEN)) == NULL) rc = UV_ENOMEM;
  for (size_t i = 0; rc == 0 && i < PATTERN_LEN; i++) h->pattern[i] = httpd_pattern(i);
  if (rc == 0) rc = uva_tcp_listen(&h->srv, "127.0.0.1", port, 0, conn_main, h);
  if (rc < 0) {
    free(h->pattern);
    free(h->gzip);
    free(h);
    return rc;
  }
  h->port = uva_server_port(h->srv);
  *out = h;
  return 0;
}

int httpd_port(const httpd_t *h) { return h->port; }

const char *httpd_url(const httpd_t *h, const char *path) {
  static char buf[8][1100];
  static unsigned k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "http://127.0.0.1:%d%s", h->port, path);
  return buf[k];
}

const httpd_stats_t *httpd_stats(const httpd_t *h) { return &h->stats; }

void httpd_set_after_response(httpd_t *h, httpd_hook_fn fn, void *data) {
  h->after_response = fn;
  h->after_response_data = data;
}

void httpd_set_head_timeout(httpd_t *h, int64_t ms) { h->timeout_ms = ms < 0 ? -1 : ms; }

void httpd_stop(httpd_t *h) {
  if (h == NULL) return;
  /* uva_server_close is NULL only when an allocation failed (a test that
   * left failure injection on): nothing was done, so retry. */
  uva_future_t *f;
  for (int i = 0; (f = uva_server_close(h->srv, 1)) == NULL; i++) {
    if (i == 1000) {
      fprintf(stderr, "httpd_stop: cannot allocate (failure injection left on?)\n");
      abort();
    }
    uva_yield();
  }
  uva_await(f, NULL);
  /* If the caller was cancelled during that await, the connections may
   * still be ending: they touch h until the very end, so wait for them. */
  while (h->stats.active > 0) uva_await(uva_sleep(1), NULL);
  free(h->pattern);
  free(h->gzip);
  free(h);
}
