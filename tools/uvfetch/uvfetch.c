/* uvfetch: fetch many URLs at once and print one JSON line per URL.
 *
 *   uvfetch [options] URL...        uvfetch [options] < urls.txt
 *
 * A fixed pool of --concurrency worker tasks takes the URLs in input order
 * and fetches them on one shared HTTP client (one curl multi handle, so the
 * workers share its connections). --per-host is a semaphore per
 * scheme://host:port held only around each attempt: waiting for a host's
 * turn does not count against --timeout, and a retry's back-off does not
 * keep the host from other URLs. Bodies go to --output files through
 * uva_fs_write_file, i.e. libuv's thread pool, never blocking the loop.
 * The command line and the inputs are cli.c's. */
#include "uvfetch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_BASE_MS 200u
#define BACKOFF_MAX_MS 10000u
#define NAME_MAX_LEN 100 /* the host-path part of an --output file name */
#define BAR_WIDTH 20

typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->p = xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_fmt(buf_t *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_add(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ------------------------------------------------------------------ JSON */

/* Length of the valid UTF-8 sequence at s, 0 if it is not one. JSON text
 * must be UTF-8, and a URL read from a file may hold any bytes. */
static size_t utf8_seq(const unsigned char *s) {
  unsigned lo = 0x80, hi = 0xbf;
  size_t n;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) n = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef) n = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4) n = 4;
  else return 0;
  if (s[0] == 0xe0) lo = 0xa0;      /* overlong */
  else if (s[0] == 0xed) hi = 0x9f; /* surrogates */
  else if (s[0] == 0xf0) lo = 0x90; /* overlong */
  else if (s[0] == 0xf4) hi = 0x8f; /* above U+10FFFF */
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return n;
}

/* A JSON string (or null): quotes and backslashes escaped, control
 * characters as \u00XX, invalid UTF-8 bytes as U+FFFD. */
static void buf_json(buf_t *b, const char *str) {
  if (str == NULL) {
    buf_str(b, "null");
    return;
  }
  buf_add(b, "\"", 1);
  for (const unsigned char *s = (const unsigned char *)str; *s;) {
    char esc[8];
    size_t n = 1;
    if (*s == '"' || *s == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*s;
      buf_add(b, esc, 2);
    } else if (*s < 0x20 || *s == 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", *s);
      buf_add(b, esc, 6);
    } else if (*s < 0x80) {
      buf_add(b, (const char *)s, 1);
    } else if ((n = utf8_seq(s)) != 0) {
      buf_add(b, (const char *)s, n);
    } else {
      buf_str(b, "\\ufffd");
      n = 1;
    }
    s += n;
  }
  buf_add(b, "\"", 1);
}

/* ------------------------------------------------------------ URLs, hosts */

static host_t *host_get(app_t *a, const char *scheme, const char *name, const char *port) {
  char *key = xasprintf("%s://%s:%s", scheme, name, port);
  for (char *p = key; *p; p++) *p = (char)tolower((unsigned char)*p);
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (const char *p = key; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211u;
  host_t **slot = &a->buckets[h & (a->nbuckets - 1)];
  for (host_t *e = *slot; e; e = e->next)
    if (strcmp(e->key, key) == 0) {
      free(key);
      return e;
    }
  host_t *e = xrealloc(NULL, sizeof *e);
  e->key = key;
  e->sem = NULL;
  if (a->per_host > 0 && (e->sem = uva_sem_new((unsigned)a->per_host, 0)) == NULL) die_oom();
  e->next = *slot;
  *slot = e;
  return e;
}

static void free_hosts(app_t *a) {
  for (size_t i = 0; i < a->nbuckets; i++)
    for (host_t *e = a->buckets[i], *next; e; e = next) {
      next = e->next;
      uva_sem_free(e->sem);
      free(e->key);
      free(e);
    }
  free(a->buckets);
  a->buckets = NULL;
}

/* DIR/NNNN-host-path: only [A-Za-z0-9._-] from the URL, never "..", no
 * '/', so the name cannot leave DIR; the index keeps it unique. */
static char *file_name(const app_t *a, size_t i, const char *host, const char *path) {
  char *raw = xasprintf("%s%s", host, path), name[NAME_MAX_LEN + 1];
  size_t n = 0;
  for (const char *s = raw; *s && n < NAME_MAX_LEN; s++) {
    char c = *s == '/' ? '-' : isalnum((unsigned char)*s) || *s == '.' || *s == '-' ? *s : '_';
    if (n && strchr("._-", c) && name[n - 1] == c) continue; /* no "..", no runs */
    name[n++] = c;
  }
  while (n && strchr("._-", name[n - 1])) n--;
  name[n] = '\0';
  free(raw);
  return xasprintf("%s/%0*zu%s%s", a->outdir, a->digits, i + 1, n ? "-" : "", name);
}

static void parse_item(app_t *a, item_t *it) {
  char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
  CURLU *u = curl_url();
  if (u == NULL) die_oom();
  /* curl guesses the scheme of "host/path" the same way for the request */
  CURLUcode uc = curl_url_set(u, CURLUPART_URL, it->url, CURLU_GUESS_SCHEME);
  if (!uc) uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  /* ALLOWED_PROTOCOLS, as the client is told */
  bool allowed = !uc && (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0);
  if (allowed) uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
  if (allowed && !uc) uc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
  if (allowed && !uc) uc = curl_url_get(u, CURLUPART_PATH, &path, 0);
  if (uc) {
    set_error(it, uc == CURLUE_UNSUPPORTED_SCHEME ? UV_EPROTONOSUPPORT : UV_EINVAL,
              curl_url_strerror(uc));
  } else if (!allowed) {
    /* Refused here, before any request: curl would too, but a clear
     * message is cheaper to make than a transfer. */
    char *msg = xasprintf("scheme \"%s\" not allowed (http and https only)", scheme);
    set_error(it, UV_EPROTONOSUPPORT, msg);
    free(msg);
  } else {
    it->host = host_get(a, scheme, host, port);
    if (a->outdir) it->file = file_name(a, (size_t)(it - a->items), host, path);
  }
  curl_free(scheme), curl_free(host), curl_free(port), curl_free(path);
  curl_url_cleanup(u);
}

static void prepare(app_t *a) {
  for (a->nbuckets = 16; a->nbuckets < a->n; a->nbuckets *= 2) {}
  a->buckets = xrealloc(NULL, a->nbuckets * sizeof *a->buckets);
  memset(a->buckets, 0, a->nbuckets * sizeof *a->buckets);
  a->digits = snprintf(NULL, 0, "%zu", a->n);
  if (a->digits < 4) a->digits = 4;
  for (size_t i = 0; i < a->n; i++)
    if (!a->items[i].err) parse_item(a, &a->items[i]);
}

/* --output DIR: made if missing; anything but a directory is a usage
 * error, found before any request goes out. */
static int make_outdir(const app_t *a) {
  int rc = uva_await(uva_fs_mkdir(a->outdir, 0777), NULL);
  if (rc == UV_EEXIST) {
    void *st = NULL;
    rc = uva_await(uva_fs_stat(a->outdir), &st);
    if (rc == 0 && !S_ISDIR(((uv_stat_t *)st)->st_mode)) rc = UV_ENOTDIR;
    uva_free(st);
  }
  if (rc < 0) fprintf(stderr, "uvfetch: --output %s: %s\n", a->outdir, uva_strerror(rc));
  return rc < 0 ? EXIT_USAGE : 0;
}

/* -------------------------------------------------------------- fetching */

/* Errors worth another attempt: the connection failed, timed out or was
 * cut. Never a bad URL, a refused protocol, a DNS "no such name"... */
static bool transient_error(int err) {
  return err == UV_ECONNREFUSED || err == UV_ETIMEDOUT || err == UV_ECONNRESET ||
         err == UV_ECONNABORTED || err == UV_ENETUNREACH || err == UV_EHOSTUNREACH ||
         err == UV_EPIPE || err == UV_EAI_AGAIN;
}

static bool transient_status(int status) {
  return status == 429 || (status >= 500 && status <= 599);
}

/* 200 ms * 2^retry, capped, of which a random upper half is waited, so
 * that many clients retrying together spread out; a Retry-After in
 * seconds (429, 503) is honoured up to the cap. */
static uint64_t backoff_ms(long retry, const uva_http_response_t *r) {
  uint64_t full = (uint64_t)BACKOFF_BASE_MS << (retry < 8 ? retry : 8);
  if (full > BACKOFF_MAX_MS) full = BACKOFF_MAX_MS;
  uint64_t ms = full / 2 + (uint64_t)rand() % (full / 2 + 1);
  const char *ra = r ? uva_http_response_header(r, "Retry-After") : NULL;
  if (ra && isdigit((unsigned char)*ra)) {
    unsigned long s = strtoul(ra, NULL, 10);
    uint64_t want = s >= BACKOFF_MAX_MS / 1000 ? BACKOFF_MAX_MS : s * 1000;
    if (want > ms) ms = want;
  }
  return ms;
}

/* A cancel of this task (Ctrl-C), not a request that ended cancelled. */
static bool interrupted(int rc) { return rc == UV_ECANCELED && uva_cancelling() > 0; }

static void clear_error(item_t *it) {
  free(it->errmsg);
  it->errmsg = NULL;
  it->err = 0;
}

/* One attempt, holding the host's permit only while the request runs. */
static int attempt(app_t *a, item_t *it, uva_http_response_t **out) {
  uva_sem_t *sem = it->host->sem;
  void *v = NULL;
  *out = NULL;
  int rc = sem ? uva_await(uva_sem_acquire(sem), NULL) : 0;
  if (rc < 0) {
    if (!interrupted(rc)) set_error(it, rc, "waiting for --per-host");
    return rc;
  }
  if (it->attempts++ == 0) it->t0 = uv_hrtime();
  char err[UVA_HTTP_ERROR_SIZE];
  uva_http_request_t rq = {.url = it->url, .error = err};
  rc = uva_await(uva_http_request(a->client, &rq), &v);
  if (sem) uva_sem_release(sem);
  if (rc < 0) set_error(it, rc, err);
  else clear_error(it);
  *out = v;
  return rc;
}

/* Keep what the JSON line reports of the final response; save its body. */
static int take_response(app_t *a, item_t *it, uva_http_response_t *r) {
  int rc = 0;
  it->status = r->status;
  it->bytes = r->body_len;
  if (r->redirects > 0) it->final_url = xstrdup(r->effective_url);
  if (a->fail && r->status >= 400) { /* a failure, and no body saved, as curl --fail */
    it->err = UV_EIO;
    it->errmsg = xasprintf("HTTP status %d", r->status);
  } else if (it->file) {
    rc = uva_await(uva_fs_write_file(it->file, r->body, r->body_len), NULL);
    if (rc == 0) it->saved = true;
    else if (!interrupted(rc)) set_error(it, rc, "writing the --output file");
  }
  uva_http_response_free(r);
  return rc;
}

static int fetch(app_t *a, item_t *it) {
  uva_http_response_t *r = NULL;
  int rc = 0;
  if (it->err) return 0; /* not a URL: no request */
  for (long retry = 0;; retry++) {
    rc = attempt(a, it, &r);
    if (interrupted(rc)) return rc;
    if (retry >= a->retries || !(rc < 0 ? transient_error(rc) : transient_status(r->status))) break;
    uint64_t ms = backoff_ms(retry, r);
    uva_http_response_free(r);
    if (interrupted(uva_await(uva_sleep(ms), NULL))) return UV_ECANCELED;
  }
  if (it->attempts) it->ms = (double)(uv_hrtime() - it->t0) / 1e6;
  return r ? take_response(a, it, r) : 0;
}

/* ---------------------------------------------------------------- output */

static void clear_bar(app_t *a) {
  if (a->bar_shown) fputs("\r\033[K", stderr);
  a->bar_shown = false;
}

static void print_line(app_t *a, item_t *it) {
  if (a->stdout_tty) clear_bar(a); /* same screen: the bar comes back next tick */
  fputs(it->line, stdout);
  free(it->line);
  it->line = NULL;
}

static void emit(app_t *a, item_t *it) {
  if (a->by_completion) print_line(a, it);
  else
    for (; a->printed < a->n && a->items[a->printed].done; a->printed++)
      print_line(a, &a->items[a->printed]);
  fflush(stdout);
}

static void finish(app_t *a, item_t *it) {
  buf_t b = {0};
  a->bytes += it->bytes;
  *(it->err ? &a->nfailed : &a->nok) += 1;
  buf_str(&b, "{\"url\": ");
  buf_json(&b, it->url);
  if (it->status) buf_fmt(&b, ", \"status\": %d, \"bytes\": %zu", it->status, it->bytes);
  else buf_str(&b, ", \"status\": null, \"bytes\": null");
  buf_fmt(&b, ", \"ms\": %.1f, \"attempts\": %d, \"error\": ", it->ms, it->attempts);
  buf_json(&b, it->errmsg);
  if (it->final_url) buf_str(&b, ", \"final_url\": "), buf_json(&b, it->final_url);
  if (it->saved) buf_str(&b, ", \"file\": "), buf_json(&b, it->file);
  buf_str(&b, "}\n");
  it->line = b.p;
  it->done = true;
  emit(a, it);
}

static int worker(void *arg) {
  app_t *a = arg;
  while (a->next < a->n) {
    item_t *it = &a->items[a->next++];
    int rc = fetch(a, it);
    if (interrupted(rc)) return rc;
    finish(a, it);
  }
  return 0;
}

static double elapsed(const app_t *a) { return (double)(uv_hrtime() - a->t0) / 1e9; }

static void human_bytes(uint64_t n, char *out, size_t cap) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  int i = 0;
  for (; v >= 1024 && i < 4; i++) v /= 1024;
  snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
}

static void draw_bar(app_t *a) {
  size_t done = a->nok + a->nfailed, fill = a->n ? done * BAR_WIDTH / a->n : BAR_WIDTH;
  char bar[BAR_WIDTH + 1], size[32];
  memset(bar, '#', fill);
  memset(bar + fill, '.', BAR_WIDTH - fill);
  bar[BAR_WIDTH] = '\0';
  human_bytes(a->bytes, size, sizeof size);
  fprintf(stderr, "\r\033[K[%s] %zu/%zu ok %zu failed %zu %s %.1fs", bar, done, a->n, a->nok,
          a->nfailed, size, elapsed(a));
  a->bar_shown = true;
}

/* Redraws the bar ten times a second until cancelled, then clears it. */
static int progress(void *arg) {
  app_t *a = arg;
  do draw_bar(a);
  while (uva_await(uva_sleep(100), NULL) == 0);
  clear_bar(a);
  return 0;
}

static void summary(const app_t *a) {
  char size[32];
  double secs = elapsed(a);
  size_t left = a->n - a->nok - a->nfailed;
  human_bytes(a->bytes, size, sizeof size);
  fprintf(stderr, "uvfetch: %zu URL%s: %zu ok, %zu failed", a->n, a->n == 1 ? "" : "s", a->nok,
          a->nfailed);
  if (left) fprintf(stderr, ", %zu not done (interrupted)", left);
  fprintf(stderr, "; %s in %.2f s (%.1f req/s)\n", size, secs,
          secs > 0 ? (double)(a->nok + a->nfailed) / secs : 0.0);
}

static int run_all(app_t *a) {
  size_t nw = a->n < (size_t)a->concurrency ? a->n : (size_t)a->concurrency;
  uva_future_t **ws = xrealloc(NULL, nw * sizeof *ws);
  a->t0 = uv_hrtime();
  uva_future_t *bar = a->progress ? uva_spawn_named("progress", progress, a) : NULL;
  for (size_t i = 0; i < nw; i++) ws[i] = uva_spawn_named("worker", worker, a);
  int rc = uva_await(uva_gather(ws, nw, UVA_RETURN_EXCEPTIONS), NULL);
  free(ws);
  if (bar) uva_cancel(bar), uva_await(bar, NULL);
  /* interrupted: what did finish is still printed (in input order) */
  for (size_t i = a->printed; i < a->n; i++)
    if (a->items[i].line) print_line(a, &a->items[i]);
  if (!a->quiet) summary(a);
  if (rc < 0) return interrupted(rc) ? EXIT_INTERRUPTED : 1;
  return a->nfailed ? 1 : 0;
}

static int amain(void *arg) {
  app_t *a = arg;
  uva_http_client_opts_t o = {.user_agent = a->user_agent, .timeout_ms = a->timeout_ms,
                              .protocols = ALLOWED_PROTOCOLS};
  int rc = uva_http_client_new(&a->client, &o);
  if (rc < 0) {
    fprintf(stderr, "uvfetch: cannot start the HTTP client: %s\n", uva_strerror(rc));
    return 1;
  }
  prepare(a);
  rc = a->outdir ? make_outdir(a) : 0;
  if (rc == 0) rc = run_all(a);
  uva_http_client_free(a->client);
  free_hosts(a);
  return rc;
}

static void free_items(app_t *a) {
  for (size_t i = 0; i < a->n; i++) {
    item_t *it = &a->items[i];
    free(it->url), free(it->file), free(it->errmsg);
    free(it->final_url), free(it->line);
  }
  free(a->items);
}

/* Each request in flight holds a socket, and the default soft limit of
 * 1024 descriptors would turn -c 1000 into a storm of failed connects:
 * raise it to the hard limit, as servers do. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char **argv) {
  app_t a = {.concurrency = 16};
  raise_fd_limit();
  int rc = parse_args(&a, argc, argv);
  if (rc < 0) {
    a.progress = !a.quiet && isatty(STDERR_FILENO);
    a.stdout_tty = isatty(STDOUT_FILENO);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    rc = uva_run(amain, &a);
    if (rc < 0) {
      fprintf(stderr, "uvfetch: %s\n", uva_strerror(rc));
      rc = rc == UV_ECANCELED ? EXIT_INTERRUPTED : 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
      fprintf(stderr, "uvfetch: cannot write the output: %s\n", strerror(errno));
      rc = rc ? rc : 1;
    }
  }
  free_items(&a);
  return rc;
}
