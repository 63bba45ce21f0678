/* A generated web site for the crawl demo and the crawler's tests, served on
 * 127.0.0.1 by a small HTTP/1.1 server built on uvasync (uva_tcp_listen, a
 * task per connection, keep-alive). It runs on the calling thread's loop:
 * call site_start and site_stop from a task.
 *
 * Every response (pages, files, redirects, 404s) is sent after a delay
 * drawn from [min_delay_ms, max_delay_ms], the same for the same seed and
 * path, so a crawler that fetches one page at a time is slow and one that
 * fetches many at once is not.
 *
 * THE LINK STRUCTURE (pages = P, numbered 0 .. P-1):
 *
 *   Page 0 is "/"; page p >= 1 is "/page/p.html". The pages form a tree
 *   with three children per page: the children of p are 3p+1, 3p+2, 3p+3
 *   (those < P), so the parent of p is (p-1)/3 and the depth of p (links
 *   to follow from "/") is 0 for page 0, 1 for pages 1-3, 2 for 4-12,
 *   3 for 13-39, 4 for 40-120 (pages [(3^d-1)/2, (3^(d+1)-1)/2)).
 *   A page is linked to only by its parent, so that depth is exact.
 *
 *   Page p (titled "Page p of P" + "\n\t" + "uvasync crawl site": a crawler
 *   that turns whitespace runs into one space prints
 *   "Page p of P uvasync crawl site") links to:
 *     - its children, each in one of these forms (by c % 6):
 *         0 "c.html"           (from "/": "page/c.html")
 *         1 "/page/c.html"
 *         2 "http://127.0.0.1:PORT/page/c.html"
 *         3 "./c.html#top"     (from "/": "./page/c.html#top")
 *         4 "../page/c.html"   (from "/" too: ".." stops at the root)
 *         5 c % 12 == 5:  "/go/c", a 302 redirect to "/page/c.html": the
 *                         links on page c are then relative to its final
 *                         URL, not to "/go/c" (a crawler that resolves
 *                         against the requested URL asks for /go/N.html,
 *                         a 404);
 *           c % 12 == 11: "HTTP://127.0.0.1:PORT/page/./c.html"
 *       and the first child a second time, with "#comments" appended;
 *     - "/" (as "/", "../" or "http://127.0.0.1:PORT/#top"), its parent,
 *       and "#top" (itself): all at a lower depth, already visited;
 *     - when p % 4 == 0, one non-HTML resource (site_resource_path):
 *       "/files/p.txt" (text/plain) when p % 8 == 0, else "/img/p.png"
 *       (image/png), linked as "files/0.txt" (from "/"), "/files/p.txt" or
 *       "../img/p.png". It is one link deeper than p. The text file's body
 *       reads like HTML, <a href="/secret/p.html">; a crawler that parses
 *       non-HTML responses would ask for /secret/..., which is a 404 and
 *       shows up in the request log;
 *     - links a same-host crawler must skip: "http://example.invalid/"
 *       (another host; never resolves), "mailto:webmaster@example.invalid",
 *       "http://localhost:PORT/page/p.html" (this very server under
 *       another host name: a crawler that followed it would request
 *       /page/p.html twice) and "http://127.0.0.1:1/" (another port).
 *
 * So a breadth-first crawl from "/" with a depth limit D fetches exactly
 * the pages of depth <= D and the resources of pages of depth <= D - 1,
 * each once (site_expected). For P = 40:
 *     D = 0: 1   (/)
 *     D = 1: 5   (+ /page/1-3.html, /files/0.txt)
 *     D = 2: 14  (+ /page/4-12.html)
 *     D = 3: 44  (+ /page/13-39.html, /img/4.png, /files/8.txt, /img/12.png)
 *     D >= 4: 50 (+ the resources of pages 16, 20, ..., 36)
 * plus one extra request per /go/ redirect crossed (pages 5, 17, 29 ...).
 *
 * Other paths: "/page/0.html", pages >= P, resources of pages that have
 * none, /secret/... and anything else are 404 (text/html; the path is
 * HTML-escaped in it). GET and HEAD are answered, any method in fact.
 *
 * HTTP/1.1 and 1.0 (RFC 9112): lines end in CRLF or a bare LF; empty lines
 * before the request line are skipped; a connection is closed after an
 * answer when the request's Connection list (comma-separated tokens) has
 * "close", or for HTTP/1.0 unless it has "keep-alive" (then echoed back).
 * Request bodies are not expected: a Content-Length body (digits only; a
 * repeated Content-Length must agree) of up to 1 MiB is read and dropped.
 * Refused, with an answer and the connection closed (after a half-close
 * and a short drain of what the client still sends): 400 (malformed: no
 * version, a header name that is not a token ("Name : v"), a control
 * character, a bad Content-Length), 408 (head timeout, when part of a
 * request had arrived; an idle connection is just closed), 413 (body over
 * 1 MiB), 414 (target over 1023 bytes), 431 (head over 16 KiB), 501 (any
 * Transfer-Encoding: chunked request bodies are not read), 505 (HTTP/2+).
 * Refused requests are not logged (site_log) nor counted in `requests`. */
#ifndef UVA_DEMO_SITE_H
#define UVA_DEMO_SITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct site site_t;

typedef struct site_opts {
  int port;          /* 0: an ephemeral port */
  int pages;         /* HTML pages, "/" included (>= 1) */
  int min_delay_ms;  /* every response waits a delay in [min, max] ms */
  int max_delay_ms;
  uint32_t seed;     /* picks the delays (with the path) */
  int broken_page;   /* > 0: requests for this page get the connection
                      * closed without an answer (a crawl error) */
  int head_timeout_ms; /* a request head must be complete within this of
                        * the server starting to wait for it (also the
                        * keep-alive idle time), and each read of a body
                        * bring data within it; else the connection is
                        * closed (408 if part of a request came).
                        * 0: 10000; < 0: none */
} site_opts_t;

/* 40 pages, 100-300 ms. */
#define SITE_OPTS_DEFAULT {.port = 0, .pages = 40, .min_delay_ms = 100, .max_delay_ms = 300, .seed = 1}

typedef struct site_stats {
  long connections;    /* connections accepted */
  long requests;       /* requests received (each logged, see site_log) */
  long pages;          /* 200 text/html answers */
  long files;          /* 200 answers of other types */
  long redirects;      /* 302 answers */
  long not_found;      /* 404 answers */
  long in_flight;      /* requests received and not answered yet */
  long max_in_flight;  /* the most at once */
  long refused;        /* requests refused (400, 408, 413, 414, 431, 501,
                        * 505: see above) */
  long timeouts;       /* connections closed by the head timeout */
} site_stats_t;

/* One received request: the path asked for and when it arrived. */
typedef struct site_request {
  char path[120];      /* truncated if longer */
  uint64_t t_ns;       /* uv_hrtime() when the request head was read */
} site_request_t;

/* Listen on 127.0.0.1:opts->port (opts NULL: SITE_OPTS_DEFAULT). Returns 0
 * or a negative error (UV_EINVAL for pages < 1 or a bad delay range,
 * UV_EADDRINUSE, ...). */
int site_start(site_t **out, const site_opts_t *opts);
int site_port(const site_t *s);
/* "http://127.0.0.1:PORT" + path, in one of 8 rotating static buffers. */
const char *site_url(const site_t *s, const char *path);
const site_stats_t *site_stats(const site_t *s);
/* The requests received since the start or the last reset, in order. */
const site_request_t *site_log(const site_t *s, size_t *n);
/* Zero the counters (in_flight excepted) and empty the log. */
void site_reset_stats(site_t *s);
/* Hold the next n requests for anything but "/" (a crawl's start page)
 * until all n have arrived, then let them go on together (each then waits
 * its delay): a test's proof, by an event rather than by timing, that a
 * client had n requests out at once. */
void site_hold_together(site_t *s, int n);
/* Stop listening, cancel the connections, wait for them (in a task) and
 * free everything. NULL is ignored. */
void site_stop(site_t *s);

/* The link structure above, for tests and the demo. */
int site_page_depth(int page);
/* Path of page p ("/" or "/page/p.html") into buf; returns buf. */
char *site_page_path(int page, char *buf, size_t len);
/* Path of page p's resource into buf; returns buf, or NULL if p has none. */
char *site_resource_path(int page, char *buf, size_t len);
/* 1 if page p is linked to through a /go/p redirect. */
int site_page_redirected(int page);
/* Documents (pages + resources) a correct breadth-first crawl from "/"
 * with depth limit `depth` fetches on a site of `pages` pages. */
long site_expected(int pages, int depth);

#endif
