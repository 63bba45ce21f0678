/* uvfetch's command line: options, usage, and the URL inputs. Plain
 * blocking stdio: it all happens before the loop starts, and a bad option
 * or an unreadable --input file ends the program with status 2 before any
 * request is made. */
#include "uvfetch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- memory */

/* Out of memory in a command-line tool: say so and stop. */
void die_oom(void) {
  fputs("uvfetch: out of memory\n", stderr);
  exit(1);
}

void *xrealloc(void *p, size_t n) {
  if ((p = realloc(p, n ? n : 1)) == NULL) die_oom();
  return p;
}

char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(xrealloc(NULL, n), s, n);
}

char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = xrealloc(NULL, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* ---------------------------------------------------------------- inputs */

static item_t *add_url(app_t *a, const char *url, size_t len) {
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 64;
    a->items = xrealloc(a->items, a->cap * sizeof *a->items);
  }
  item_t *it = &a->items[a->n++];
  memset(it, 0, sizeof *it);
  it->url = xrealloc(NULL, len + 1);
  memcpy(it->url, url, len);
  it->url[len] = '\0';
  return it;
}

void set_error(item_t *it, int err, const char *msg) {
  free(it->errmsg);
  it->err = err;
  it->errmsg = msg && *msg ? xasprintf("%s: %s", uva_strerror(err), msg)
                           : xstrdup(uva_strerror(err));
}

/* One input line: surrounding blanks trimmed; blank and #comment lines
 * skipped. A NUL byte would silently cut the URL short: it is an error. */
static void add_line(app_t *a, const char *line, size_t len) {
  while (len && isspace((unsigned char)line[len - 1])) len--;
  while (len && isspace((unsigned char)*line)) line++, len--;
  if (len == 0 || *line == '#') return;
  item_t *it = add_url(a, line, len);
  if (strlen(it->url) != len) set_error(it, UV_EINVAL, "NUL byte in the URL");
}

static int read_urls(app_t *a, const char *path) {
  bool std = strcmp(path, "-") == 0;
  FILE *f = std ? stdin : fopen(path, "r");
  a->had_source = true;
  if (f == NULL) {
    fprintf(stderr, "uvfetch: cannot read %s: %s\n", path, strerror(errno));
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) add_line(a, line, (size_t)len);
  int err = ferror(f) ? errno : 0;
  free(line);
  if (!std) fclose(f);
  if (err) {
    fprintf(stderr, "uvfetch: cannot read %s: %s\n", std ? "stdin" : path, strerror(err));
    return -1;
  }
  return 0;
}

/* ----------------------------------------------------------------- usage */

static const char help_text[] =
  "Usage: uvfetch [options] URL...\n"
  "       uvfetch [options] < urls.txt\n"
  "\n"
  "Fetch many URLs concurrently; print one JSON object per URL on stdout:\n"
  "  {\"url\": \"...\", \"status\": 200, \"bytes\": 1234, \"ms\": 12.3, \"attempts\": 1, \"error\": null}\n"
  "A failed fetch has \"status\": null, \"bytes\": null and an \"error\" message.\n"
  "\"final_url\" is added when redirects were followed, \"file\" with --output.\n"
  "URLs come from the arguments, from --input files and from stdin (\"-\", or\n"
  "when neither URLs nor --input are given), one per line; blank lines and\n"
  "lines starting with '#' are skipped.\n"
  "\n"
  "Options:\n"
  "  -c, --concurrency N    at most N requests in flight (default 16)\n"
  "      --per-host N       at most N requests in flight per scheme://host:port\n"
  "                         (default 0: no limit but --concurrency)\n"
  "  -t, --timeout SECONDS  give up an attempt after SECONDS, e.g. 2.5\n"
  "                         (default: no timeout)\n"
  "  -r, --retries N        retry up to N times (default 0) on connection\n"
  "                         refused or reset, timeouts, HTTP 429 and 5xx,\n"
  "                         after 200 ms * 2^n with jitter (at most 10 s;\n"
  "                         a Retry-After in seconds is honoured)\n"
  "  -o, --output DIR       save each body in DIR (created if missing) as\n"
  "                         NNNN-host-path, NNNN the URL's position from 1\n"
  "  -i, --input FILE       read URLs from FILE (\"-\": stdin); may be repeated\n"
  "      --order input|completion\n"
  "                         print each line once every earlier URL is done\n"
  "                         (input, the default) or as soon as it is done\n"
  "  -f, --fail             count an HTTP status >= 400 as a failure\n"
  "  -A, --user-agent S     send S as the User-Agent header\n"
  "  -q, --quiet            no progress bar and no summary on stderr\n"
  "  -h, --help             show this help and exit\n"
  "  -V, --version          show the version and exit\n"
  "\n"
  "On a terminal, stderr shows a progress bar; a summary follows at the end.\n"
  "Exit status: 0 if every fetch succeeded, 1 if any failed, 2 on usage\n"
  "errors, 130 if interrupted.\n"
  "\n"
  "Examples:\n"
  "  uvfetch https://example.com/ https://example.org/\n"
  "  uvfetch -c 64 --per-host 4 --timeout 2.5 --retries 3 -i urls.txt > out.jsonl\n"
  "  grep api urls.txt | uvfetch --order completion --fail -o pages -A bot/1.0 -\n";

enum { OPT_PER_HOST = 256, OPT_ORDER };
/* Leading '-': non-options come back in place (as 1), so URL arguments and
 * --input files keep their relative order. */
static const char shortopts[] = "-c:t:r:o:i:fA:qhV";
static const struct option longopts[] = {
  {"concurrency", required_argument, NULL, 'c'},
  {"per-host", required_argument, NULL, OPT_PER_HOST},
  {"timeout", required_argument, NULL, 't'},
  {"retries", required_argument, NULL, 'r'},
  {"output", required_argument, NULL, 'o'},
  {"input", required_argument, NULL, 'i'},
  {"order", required_argument, NULL, OPT_ORDER},
  {"fail", no_argument, NULL, 'f'},
  {"user-agent", required_argument, NULL, 'A'},
  {"quiet", no_argument, NULL, 'q'},
  {"help", no_argument, NULL, 'h'},
  {"version", no_argument, NULL, 'V'},
  {NULL, 0, NULL, 0},
};

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("uvfetch: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\nTry 'uvfetch --help' for more information.\n", stderr);
  va_end(ap);
  return EXIT_USAGE;
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool parse_seconds(const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 1e6) return false;
  *ms = (int64_t)(v * 1000);
  if ((double)*ms < v * 1000) ++*ms; /* round up: 0.0001 s is 1 ms, not none */
  return true;
}

static bool bad_text(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
  return false;
}

static int print_version(void) {
  printf("uvfetch %s (uvasync %s, %s)\n", UVFETCH_VERSION, UVFETCH_VERSION, curl_version());
  return 0;
}

/* One option. Returns -1 to go on, or the exit status. */
static int parse_opt(app_t *a, int c, char *arg, const char *name) {
  switch (c) {
  case 1:
    a->had_source = true;
    if (strcmp(arg, "-") == 0) return read_urls(a, "-") < 0 ? EXIT_USAGE : -1;
    add_url(a, arg, strlen(arg)); /* as is, not trimmed: "" is a bad URL */
    return -1;
  case 'c':
    if (!parse_long(arg, 1, 10000, &a->concurrency))
      return usage_error("%s: expected a number from 1 to 10000, got '%s'", name, arg);
    return -1;
  case OPT_PER_HOST:
    if (!parse_long(arg, 0, 10000, &a->per_host))
      return usage_error("%s: expected a number from 0 to 10000, got '%s'", name, arg);
    return -1;
  case 't':
    if (!parse_seconds(arg, &a->timeout_ms))
      return usage_error("%s: expected seconds (> 0, e.g. 2.5), got '%s'", name, arg);
    return -1;
  case 'r':
    if (!parse_long(arg, 0, 100, &a->retries))
      return usage_error("%s: expected a number from 0 to 100, got '%s'", name, arg);
    return -1;
  case 'o': a->outdir = arg; return -1;
  case 'i': return read_urls(a, arg) < 0 ? EXIT_USAGE : -1;
  case OPT_ORDER:
    if (strcmp(arg, "input") && strcmp(arg, "completion"))
      return usage_error("%s: expected 'input' or 'completion', got '%s'", name, arg);
    a->by_completion = arg[0] == 'c';
    return -1;
  case 'f': a->fail = true; return -1;
  case 'A':
    if (bad_text(arg)) return usage_error("%s: control characters are not allowed", name);
    a->user_agent = arg;
    return -1;
  case 'q': a->quiet = true; return -1;
  case 'h': fputs(help_text, stdout); return 0;
  case 'V': return print_version();
  default: return -2; /* not reached: getopt reports unknown options as '?' */
  }
}

/* "--name" of option c, for messages. */
static const char *option_name(int c) {
  static char name[32];
  for (const struct option *o = longopts; o->name; o++)
    if (o->val == c) snprintf(name, sizeof name, "--%s", o->name);
  return name;
}

/* getopt said '?' about arg: say what was wrong with it. */
static int bad_option(const char *arg) {
  if (optopt == 0) return usage_error("unknown option %s", arg);
  if (strncmp(arg, "--", 2) != 0)
    return usage_error(strchr(shortopts, optopt) ? "option -%c needs a value" : "unknown option -%c",
                       optopt);
  return usage_error(strchr(arg, '=') ? "%s takes no value" : "%s needs a value",
                     option_name(optopt));
}

/* Returns -1 to go on, or the exit status. */
int parse_args(app_t *a, int argc, char **argv) {
  int c, idx, rc;
  opterr = 0; /* our own messages, and exit status 2 */
  while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
    const char *arg = argv[optind - 1];
    if (c == '?') return bad_option(arg);
    if ((rc = parse_opt(a, c, optarg, option_name(c))) >= 0) return rc;
  }
  for (; optind < argc; optind++) /* after "--" */
    if ((rc = parse_opt(a, 1, argv[optind], NULL)) >= 0) return rc;
  if (a->had_source) return -1;
  /* nothing given and nothing piped in: most likely a mistake */
  if (isatty(STDIN_FILENO))
    return usage_error("no URLs: give them as arguments, with --input, or on stdin\n"
                       "('-' reads them from the terminal)");
  return read_urls(a, "-") < 0 ? EXIT_USAGE : -1;
}
