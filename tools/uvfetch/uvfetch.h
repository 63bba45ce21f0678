/* uvfetch's shared declarations: cli.c turns the command line into an
 * app_t (options and the URLs, read before the loop starts); uvfetch.c
 * fetches them. */
#ifndef UVFETCH_H
#define UVFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uvasync.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define UVFETCH_VERSION \
  STR(UVASYNC_VERSION_MAJOR) "." STR(UVASYNC_VERSION_MINOR) "." STR(UVASYNC_VERSION_PATCH)

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
/* The schemes the client allows; anything else is refused before a
 * request is made. */
#define ALLOWED_PROTOCOLS "http,https"

typedef struct host {
  char *key;         /* scheme://host:port */
  uva_sem_t *sem;    /* --per-host permits; NULL without --per-host */
  struct host *next; /* hash chain */
} host_t;

typedef struct item {
  char *url;       /* as given */
  char *file;      /* --output path, or NULL */
  host_t *host;    /* NULL: the URL did not parse */
  int err;         /* 0, or why the fetch failed */
  char *errmsg;    /* "uva_strerror(err): curl's message" */
  int status;      /* HTTP status of the final response; 0: none */
  size_t bytes;
  int attempts;
  uint64_t t0;     /* uv_hrtime when the first attempt started */
  double ms;
  char *final_url; /* set when redirects were followed */
  bool saved;      /* the body is in file */
  bool done;
  char *line;      /* the JSON line, until printed */
} item_t;

typedef struct app {
  long concurrency, per_host, retries;
  int64_t timeout_ms;
  const char *outdir, *user_agent;
  bool by_completion, fail, quiet, progress, stdout_tty, had_source;
  item_t *items;
  size_t n, cap;
  uva_http_client_t *client;
  host_t **buckets;
  size_t nbuckets;
  size_t next;    /* the next item a worker takes */
  size_t printed; /* --order input: items printed so far */
  size_t nok, nfailed;
  uint64_t bytes, t0;
  bool bar_shown;
  int digits;     /* width of the index in file names */
} app_t;

/* Out of memory: say so and exit (a command-line tool has nothing better
 * to do). */
void die_oom(void);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Record why it failed: "uva_strerror(err): msg". */
void set_error(item_t *it, int err, const char *msg);

/* Parse the command line into a, reading the URLs it names (arguments,
 * --input files, stdin). Returns -1 to go on, or the exit status (0 after
 * --help or --version, EXIT_USAGE after a message on stderr). */
int parse_args(app_t *a, int argc, char **argv);

#endif
