/* A small HTTP/1.1 server for tests, built on uvasync's own TCP streams
 * (127.0.0.1 only). It runs on the calling thread's loop: start and stop it
 * from a task. Persistent connections (HTTP/1.1 keep-alive, "Connection:
 * close" honoured), request bodies with Content-Length or chunked, and
 * "Expect: 100-continue" answered.
 *
 * Routes (any method unless said):
 *   /ok                  200 "hello", Content-Type: text/plain, X-Test: yes
 *                        (sent as "X-Test:  yes ": clients trim blanks)
 *   /status/N            status N, body "status N" (N in 200..999; 204
 *                        and 304 have no body; other N: 400)
 *   /delay/MS            200 "delayed", sent after MS milliseconds
 *   /redirect/N          302 to /redirect/N-1 (body "redirecting");
 *                        /redirect/0 is 200 "done"
 *   /loop                302 to /loop, forever
 *   /chunked/N           200, Transfer-Encoding: chunked, N chunks
 *                        "chunk 0\n", "chunk 1\n", ...
 *   /bytes/N             200, N bytes with Content-Length, byte i is
 *                        'a' + i % 26 (httpd_pattern)
 *   /reset               Content-Length: 100000, sends 1000 bytes, closes
 *   /drip/N/MS           Content-Length: N, one byte every MS ms (byte i
 *                        is httpd_pattern(i); the first after MS ms)
 *   /gzip                Content-Encoding: gzip; decodes to
 *                        "hello gzip\n" x 100 (HTTPD_GZIP_TEXT)
 *   /echo                200; body = the request body; X-Echo-Method:
 *                        the method; each request header Name: v comes
 *                        back as X-Echo-Name: v
 *   /set-cookie/N/V      200 "ok", Set-Cookie: N=V; Path=/
 *   /close               closes the connection without answering
 *   anything else        404 "not found"
 * A query string (?...) is ignored for routing. HEAD gets the head of the
 * GET answer without its body. /delay and /drip notice a client that hangs
 * up while they wait (not only at their next write) and end the
 * connection at once (stats.aborted). A malformed request gets 400 and
 * the connection is closed.
 */
#ifndef UVA_TEST_HTTPD_H
#define UVA_TEST_HTTPD_H

#include <stddef.h>
#include <uvasync.h>

#define HTTPD_GZIP_TEXT_LINE "hello gzip\n"
#define HTTPD_GZIP_TEXT_REPEAT 100

typedef struct httpd httpd_t;

typedef struct httpd_stats {
  long connections;   /* connections accepted so far */
  long requests;      /* requests parsed so far */
  long active;        /* connections open now */
  long max_active;    /* most connections open at once */
  long continues;     /* "100 Continue" interim answers sent */
  long aborted;       /* /delay, /drip answers abandoned because the
                       * client hung up (httpd_stop's cancels: not) */
} httpd_stats_t;

typedef void (*httpd_hook_fn)(void *data);

/* Listen on 127.0.0.1:port (0: an ephemeral port). 0 or a negative error. */
int httpd_start(httpd_t **out, int port);
int httpd_port(const httpd_t *h);
/* "http://127.0.0.1:PORT" + path, in one of 8 rotating static buffers. */
const char *httpd_url(const httpd_t *h, const char *path);
const httpd_stats_t *httpd_stats(const httpd_t *h);
/* Call fn(data) in the connection's task each time an answer has been
 * written completely (before the next request is read); fn NULL: none.
 * The allocation-failure sweep uses it to start failing allocations only
 * once the server has done its part. */
void httpd_set_after_response(httpd_t *h, httpd_hook_fn fn, void *data);
/* Stop listening, cancel every connection, wait for them, free h. */
void httpd_stop(httpd_t *h);
/* The /bytes pattern: byte i of a /bytes body. */
static inline char httpd_pattern(size_t i) { return (char)('a' + i % 26); }

#endif
