/* HTTP/1.1 request heads, server side: see http1.h. */
#include "http1.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINGER_MS 2000
#define LINGER_MAX ((size_t)1 << 20)

uint64_t http1_deadline_in(int64_t ms) { return ms < 0 ? UINT64_MAX : uva_now() + (uint64_t)ms; }

int http1_await_until(uva_future_t *f, uint64_t deadline, void **out) {
  if (deadline == UINT64_MAX) return uva_await(f, out);
  uint64_t now = uva_now();
  return uva_await(uva_wait_for(f, now >= deadline ? 0 : (int64_t)(deadline - now)), out);
}

bool http1_has_ctl(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) return true;
  }
  return false;
}

/* RFC 9110 5.6.2: token = 1*tchar. */
static bool is_token(const char *p, size_t n) {
  if (n == 0) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL)))
      return false;
  }
  return true;
}

static char *trim(char *s) {
  while (http1_is_blank(*s)) s++;
  size_t n = strlen(s);
  while (n && http1_is_blank(s[n - 1])) s[--n] = '\0';
  return s;
}

/* METHOD SP TARGET SP "HTTP/" DIGIT "." DIGIT. */
static int parse_request_line(http1_head_t *h, char *line, const http1_opts_t *o) {
  char *sp1 = strchr(line, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (sp2 == NULL || strchr(sp2 + 1, ' ') != NULL) return 400;
  *sp1 = *sp2 = '\0';
  h->method = line;
  h->target = sp1 + 1;
  if (!is_token(line, (size_t)(sp1 - line)) || sp2 == sp1 + 1) return 400;
  const char *v = sp2 + 1;
  if (strncmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
      v[7] > '9' || v[8] != '\0')
    return 400;
  if (v[5] != '1') return 505;
  h->version = v[7] == '0' ? 10 : 11;
  if (o->target_max && (size_t)(sp2 - sp1 - 1) >= o->target_max) return 414;
  return strchr(h->target, '\t') ? 400 : 0;
}

/* Name: value. */
static int parse_field(http1_head_t *h, char *line, const http1_opts_t *o) {
  char *colon = strchr(line, ':');
  /* no blank before the colon (RFC 9112 5.1), nor at the start (an
   * obsolete folded line): a name is a token */
  if (colon == NULL || !is_token(line, (size_t)(colon - line))) return 400;
  *colon = '\0';
  if (o->max_fields && h->nfields == o->max_fields) return 431;
  if (h->nfields == h->capfields) {
    size_t cap = h->capfields ? h->capfields * 2 : 16;
    http1_field_t *f = realloc(h->fields, cap * sizeof *f);
    if (f == NULL) return UV_ENOMEM;
    h->fields = f;
    h->capfields = cap;
  }
  http1_field_t *f = &h->fields[h->nfields++];
  *f = (http1_field_t){line, trim(colon + 1)};
  return o->on_field ? o->on_field(o->arg, f->name, f->value) : 0;
}

int http1_read_head(uva_stream_t *s, http1_head_t *h, const http1_opts_t *o) {
  uint64_t deadline = http1_deadline_in(o->timeout_ms);
  int pending = 0; /* the first bad line's status (not eager) */
  for (;;) {
    if (h->bytes >= o->head_max) return 431;
    void *v = NULL;
    int rc = http1_await_until(uva_stream_read_until(s, "\n", 1, o->head_max - h->bytes), deadline,
                               &v);
    if (rc == UVA_ELIMIT) return 431;
    if (rc == UV_ETIMEDOUT) {
      h->timed_out = true;
      /* part of a request came: say why; an idle connection just ends */
      return h->bytes || uva_stream_buffered(s) ? 408 : rc;
    }
    if (rc < 0) return rc;
    uva_bytes_t *l = v;
    h->bytes += l->len;
    size_t n = l->len - 1; /* the LF */
    if (n && l->data[n - 1] == '\r') n--;
    bool bad = http1_has_ctl(l->data, n);
    char *line = NULL;
    if (n > 0 && !bad) {
      /* Every line stored takes no more than it took to read (its NUL for
       * its LF), so head_max bytes hold the head: no moves, and what
       * points into buf stays put. */
      if (h->buf == NULL && (h->buf = malloc(o->head_max)) == NULL) rc = UV_ENOMEM;
      else {
        line = h->buf + h->used;
        memcpy(line, l->data, n);
        line[n] = '\0';
        h->used += n + 1;
      }
    }
    uva_free(l);
    if (rc < 0) return rc;
    if (bad) return 400;
    if (line && pending == 0) {
      rc = line == h->buf ? parse_request_line(h, line, o) : parse_field(h, line, o);
      if (rc < 0 || (rc > 0 && o->eager)) return rc;
      pending = rc;
    }
    if (n == 0 && h->used > 0) return pending; /* the end of the head */
  }
}

void http1_head_free(http1_head_t *h) {
  free(h->buf);
  free(h->fields);
  *h = (http1_head_t){0};
}

const char *http1_field(const http1_head_t *h, const char *name) {
  for (size_t i = 0; i < h->nfields; i++)
    if (strcasecmp(h->fields[i].name, name) == 0) return h->fields[i].value;
  return NULL;
}

bool http1_has_token(const http1_head_t *h, const char *name, const char *token) {
  size_t tl = strlen(token);
  for (size_t i = 0; i < h->nfields; i++) {
    if (strcasecmp(h->fields[i].name, name) != 0) continue;
    for (const char *p = h->fields[i].value; *p;) {
      while (http1_is_blank(*p) || *p == ',') p++;
      size_t n = strcspn(p, ",");
      size_t m = n;
      while (m && http1_is_blank(p[m - 1])) m--;
      if (m == tl && strncasecmp(p, token, tl) == 0) return true;
      p += n;
    }
  }
  return false;
}

int http1_length_value(const char *p, bool *has, unsigned long long *out) {
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
    while (http1_is_blank(*p)) p++;
    if (*p == '\0') return 0;
    if (*p++ != ',') return 400;
    while (http1_is_blank(*p)) p++;
  }
}

int http1_content_length(const http1_head_t *h, bool *has, unsigned long long *out) {
  *has = false;
  *out = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    if (strcasecmp(h->fields[i].name, "Content-Length") != 0) continue;
    int rc = http1_length_value(h->fields[i].value, has, out);
    if (rc != 0) return rc;
  }
  return 0;
}

const char *http1_reason(int status) {
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

void http1_linger(uva_stream_t *s, int64_t timeout_ms) {
  if (uva_await(uva_stream_shutdown(s), NULL) < 0) return;
  uint64_t deadline =
      http1_deadline_in(timeout_ms < 0 || timeout_ms > LINGER_MS ? LINGER_MS : timeout_ms);
  char scratch[4096];
  for (size_t total = 0; total < LINGER_MAX;) {
    int rc = http1_await_until(uva_stream_read(s, scratch, sizeof scratch), deadline, NULL);
    if (rc <= 0) return;
    total += (size_t)rc;
  }
}

void http1_refuse(uva_stream_t *s, int status, const char *extra, const char *body,
                  bool head_only, int64_t timeout_ms) {
  static const char fmt[] = "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s";
  const char *reason = http1_reason(status);
  size_t blen = strlen(body);
  int n = snprintf(NULL, 0, fmt, status, reason, extra, blen, head_only ? "" : body);
  char *msg = n < 0 ? NULL : malloc((size_t)n + 1);
  if (msg == NULL) return;
  snprintf(msg, (size_t)n + 1, fmt, status, reason, extra, blen, head_only ? "" : body);
  int rc = uva_await(uva_stream_write(s, msg, (size_t)n), NULL);
  free(msg);
  if (rc == 0) http1_linger(s, timeout_ms);
}
