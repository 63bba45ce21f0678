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
 *   /hold                never answers (until the client hangs up or
 *                        httpd_stop)
 *   /gate/N/K            200, Content-Length: N, the /bytes pattern: the
 *                        first K bytes at once, the rest once the test
 *                        lets the request through (httpd_gate_pass)
 *   /barrier/N/M         200, M bytes of the /bytes pattern, once N
 *                        requests have come to /barrier (all N then go on
 *                        together; the next one starts a new round)
 *   anything else        404 "not found"
 * A query string (?...) is ignored for routing. HEAD gets the head of the
 * GET answer without its body. /delay, /drip, /hold, /gate and /barrier
 * notice a client that hangs up while they wait (not only at their next
 * write) and end the connection at once (stats.aborted).
 *
 * The last three are how tests wait on events rather than on time: a
 * request that must still be in flight when the test looks is held until
 * the test says (or forever), not for a number of milliseconds a slow
 * machine could use up, and /barrier proves that a client had N requests
 * out at once, however slowly it sent them.
 *
 * Parsing (RFC 9112), strictly: lines end in CRLF or a bare LF (both
 * accepted, in the head, chunk lines and trailers); empty lines before the
 * request line are skipped; the request line is METHOD SP TARGET SP
 * HTTP/D.D; header names are tokens (so "Name : v" is refused); control
 * characters other than HTAB (a lone CR, NUL...) are refused anywhere in
 * the head, so nothing a client sends can split a header the server
 * echoes. Content-Length is digits only (no sign); several of them must
 * agree. Transfer-Encoding must be exactly "chunked" (chunk sizes are hex
 * digits only, then extensions); with a Content-Length too, chunked wins
 * and the connection is closed after the answer. HTTP/1.0: closed after
 * the answer unless "Connection: keep-alive" (echoed back); never sent a
 * chunked answer (/chunked is close-delimited) nor "100 Continue".
 * "Connection" is a comma-separated list of tokens.
 *
 * Refused requests get an answer and the connection is closed (after a
 * half-close and a short drain of what the client still sends, so the
 * answer is not lost to a reset): 400 (malformed), 408 (timeout, see
 * httpd_set_head_timeout, when part of a request had arrived; an idle
 * connection is just closed), 413 (body over 256 MiB), 414 (path over
 * 1023 bytes), 431 (head over HTTPD_HEAD_MAX bytes or over
 * HTTPD_MAX_HEADERS fields), 501 (a transfer coding other than chunked),
 * 505 (HTTP major version other than 1).
 */
#ifndef UVA_TEST_HTTPD_H
#define UVA_TEST_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <uvasync.h>

#define HTTPD_GZIP_TEXT_LINE "hello gzip\n"
#define HTTPD_GZIP_TEXT_REPEAT 100
/* Largest request head (request line, fields, line ends; empty lines
 * before the request line count too) and most header fields. */
#define HTTPD_HEAD_MAX (64 * 1024)
#define HTTPD_MAX_HEADERS 100
/* Default of httpd_set_head_timeout. */
#define HTTPD_HEAD_TIMEOUT_MS 10000

typedef struct httpd httpd_t;

typedef struct httpd_stats {
  long connections;   /* connections accepted so far */
  long requests;      /* requests parsed so far */
  long active;        /* connections open now */
  long max_active;    /* most connections open at once */
  long continues;     /* "100 Continue" interim answers sent */
  long aborted;       /* /delay, /drip answers abandoned because the
                       * client hung up (httpd_stop's cancels: not) */
  long refused;       /* requests answered with an error status (400,
                       * 408, 413, 414, 431, 501, 505) and closed */
  long timeouts;      /* connections closed by the head timeout (408
                       * answered or idle) */
  long holds;         /* requests that have reached the wait of /hold,
                       * /gate (after its first K bytes) or /barrier */
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
/* Time limit on reading requests, in ms (default HTTPD_HEAD_TIMEOUT_MS;
 * < 0: none). A request head must be complete within ms of the server
 * starting to wait for it (after the previous answer: this is also the
 * keep-alive idle timeout), and each read of a request body (a piece of
 * data, a chunk line) must bring something within ms. On expiry the
 * connection is closed, after a 408 answer if part of a request had
 * arrived. Applies to heads the server starts waiting for afterwards. */
void httpd_set_head_timeout(httpd_t *h, int64_t ms);
/* Let n more requests through /gate (now waiting or still to come). */
void httpd_gate_pass(httpd_t *h, long n);
/* Stop listening, cancel every connection, wait for them, free h. */
void httpd_stop(httpd_t *h);
/* The /bytes pattern: byte i of a /bytes body. */
static inline char httpd_pattern(size_t i) { return (char)('a' + i % 26); }

#endif
