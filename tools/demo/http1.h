/* The server side of an HTTP/1.1 request head (RFC 9112), over uvasync
 * streams: shared by the demo site (site.c) and the tests' server
 * (tests/httpd.c). Call from a task.
 *
 * http1_read_head reads a head line by line (read_until LF), every read
 * under one deadline for the whole head: lines end in CRLF or a bare LF;
 * empty lines before the request line are skipped; control characters
 * other than HTAB (a lone CR, NUL...) are refused; the request line is
 * METHOD SP TARGET SP HTTP/D.D (the method a token, no HTAB in the
 * target); a field is Name: value, the name a token (so no blank before
 * the colon, nor a folded line), the value with its surrounding blanks
 * cut off.
 *
 * A positive return from the functions below is an HTTP status to refuse
 * the request with (then close the connection: see http1_refuse); a
 * negative one an error that closes it without an answer (the client left,
 * a cancellation, the head timeout on an idle connection...).
 *
 * Memory is plain malloc, never the library's allocator (the tests count
 * and fail the library's allocations). */
#ifndef UVA_DEMO_HTTP1_H
#define UVA_DEMO_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uvasync.h>

typedef struct http1_field {
  const char *name, *value;
} http1_field_t;

typedef struct http1_head {
  char *buf;              /* the head's lines, NUL-terminated (internal) */
  size_t used;            /* bytes of buf in use */
  size_t bytes;           /* bytes of head read, line ends and empty lines
                           * before the request line included */
  const char *method, *target; /* set once the request line has split */
  int version;            /* 10 or 11 (HTTP/1.x, x >= 1); 0 until the
                           * request line's method, target and version
                           * are all good */
  http1_field_t *fields;  /* in order of arrival */
  size_t nfields, capfields;
  bool timed_out;         /* the read ended by the head timeout (408 or
                           * UV_ETIMEDOUT returned) */
} http1_head_t;

typedef struct http1_opts {
  size_t head_max;        /* most bytes of head (431 beyond) */
  size_t max_fields;      /* most header fields (431 beyond); 0: no limit */
  size_t target_max;      /* a target of this many bytes or more: 414,
                           * checked with the request line; 0: no limit */
  int64_t timeout_ms;     /* the whole head within this; < 0: none. On
                           * expiry 408 if part of a request had come,
                           * else UV_ETIMEDOUT (just close) */
  bool eager;             /* refuse at the first bad line, without reading
                           * the rest of the head; else read the whole
                           * head first (a bad line's status is returned
                           * at its end, unless reading it fails) */
  /* Called for each field as it is parsed (NULL: none); nonzero: that
   * status (or error) for the request, as if the parser found it. */
  int (*on_field)(void *arg, const char *name, const char *value);
  void *arg;
} http1_opts_t;

/* Read a request head from s into *h (zeroed, or freed with
 * http1_head_free, first). 0, a status or an error (see above). */
int http1_read_head(uva_stream_t *s, http1_head_t *h, const http1_opts_t *o);
void http1_head_free(http1_head_t *h);

/* The value of the first field called name (case-insensitive), or NULL. */
const char *http1_field(const http1_head_t *h, const char *name);
/* Whether some element of the comma-separated lists in the fields called
 * name is token (case-insensitive): "Connection" and "close". */
bool http1_has_token(const http1_head_t *h, const char *name, const char *token);
/* Content-Length: 1*DIGIT, no sign, no blanks inside. Several fields, or a
 * list ("5, 5"), must all agree (RFC 9112 6.3), else 400. Values too large
 * to hold read as ULLONG_MAX. http1_length_value takes one field's value
 * (*has, *out: what earlier ones said); http1_content_length all of h's. */
int http1_length_value(const char *v, bool *has, unsigned long long *out);
int http1_content_length(const http1_head_t *h, bool *has, unsigned long long *out);

/* A control character other than HTAB (NUL, a lone CR, DEL...). */
bool http1_has_ctl(const char *p, size_t n);
static inline bool http1_is_blank(char c) { return c == ' ' || c == '\t'; }

/* Loop time at which ms from now ends; UINT64_MAX for ms < 0 (never). */
uint64_t http1_deadline_in(int64_t ms);
/* Await f, but no later than deadline (then UV_ETIMEDOUT, f cancelled). */
int http1_await_until(uva_future_t *f, uint64_t deadline, void **out);

/* The reason phrase of status ("Status" for one not in the table). */
const char *http1_reason(int status);
/* Before closing a connection whose client may still be sending (a refused
 * request, a suspect body): half-close, then read and drop what still
 * comes, for up to 2 s (less if timeout_ms, the idle timeout, is shorter)
 * and 1 MiB. Closing with unread data would reset the connection, and a
 * reset can destroy the answer before the client has read it. */
void http1_linger(uva_stream_t *s, int64_t timeout_ms);
/* Refuse a request: "HTTP/1.1 status reason", the lines of extra (whole
 * "Name: v\r\n" lines, or ""), Content-Length, "Connection: close", then
 * body unless head_only; then linger (timeout_ms as there) if that was
 * written. The caller closes the connection. */
void http1_refuse(uva_stream_t *s, int status, const char *extra, const char *body,
                  bool head_only, int64_t timeout_ms);

#endif
