/* Debug mode: asyncio's debug mode and aiodebug, reporting while it happens
 * where C allows it.
 *
 * Blocking. A watchdog thread per loop looks at what the loop's thread runs
 * now: a task step (from a switch into a task to its next suspension), a
 * done callback from the ready queue, or nothing of the user's. The loop
 * thread records each transition (uva__debug_step) under a mutex with a
 * coarse clock reading: 4 to 6 ns for the uncontended lock pair and 3 ns
 * for CLOCK_MONOTONIC_COARSE here, against 27 to 45 ns for a full
 * clock_gettime on this kvm-clock VM, and its 4 ms resolution is plenty
 * for a 100 ms threshold (not for one of a few ms: set_clock). The watchdog wakes every half threshold and
 * reports a step older than the threshold while it still runs; the loop
 * thread reports the whole stall when the step ends. Waiting in epoll, and
 * a thread that is not running the loop at all (between two
 * uva_loop_run_until calls, or in an attached loop's own callbacks), are
 * "nothing of the user's" and never reported. libuv's idle-time metric was
 * the other candidate: uv_metrics_idle_time (1.44) is readable from another
 * thread and stops advancing while the loop is busy, but it also stops while
 * the thread is outside uv_run, it needs uv_loop_configure before the loop
 * first runs (the application's loop, for an attached one), and it cannot
 * say which task is to blame.
 *
 * Errors nobody retrieved, forgotten futures and unclosed resources are
 * tracked in a table of the objects made while debug mode is on, owned by
 * the loop thread: a task's record says whether its result was read; a
 * future's or a resource's holds the return addresses of where it was made.
 * uva_loop_close lists what is still in the table once every task has
 * ended. The stack walk costs 0.6 to 1 us per future (libgcc's unwinder,
 * up to 6 frames; a plain uva_future_new + uva_release goes from 4 ns to
 * 625 ns, 13 ns with no_sites), as asyncio's debug mode pays for the
 * traceback it takes in every Future() and coroutine. The alternative, __builtin_return_address(0) in
 * each of the ~60 public constructors, costs nothing per call but a hook in
 * every one of them, across a dozen files, and silently misses any
 * constructor added later. Sites are resolved only when a report needs one:
 * dladdr, then addr2line (binutils) when it is installed and the program has
 * debug information. */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

extern char **environ;

/* Return addresses kept per object. The deepest chain from a public
 * constructor down to uva__future_alloc is two library functions
 * (uva_http_get -> uva_http_request, uva_stream_read -> read_start), so
 * four frames above the allocator reach the caller with one to spare.
 * Each frame walked costs 120-170 ns here (libgcc's unwinder). */
#define FRAMES 4
#define DEFAULT_SLOW_MS 100

enum { REC_FUTURE = 1, REC_TASK, REC_RESOURCE };

typedef struct rec {
  const void *key;         /* the object; NULL: empty slot */
  uint64_t seq;            /* creation order, for the close report */
  const char *kind;        /* resources */
  uint8_t type;
  uint8_t retrieved;       /* tasks: someone read the result */
  uint8_t nframes;         /* 0 for tasks */
  union {
    void *frames[FRAMES];  /* futures, resources: innermost first */
    struct {
      const char *file;    /* tasks: the spawn site */
      int line;
    } site;
  } u;
} rec_t;

/* What the watchdog saw blocking, copied under the mutex: the task may
 * rename itself or be freed once the step ends. */
typedef struct blocked {
  int is_task;
  char name[64];
  void (*fn)(void);
  char fn_text[160];       /* fn described, once the watchdog has done it */
  const char *spawn_file, *await_file;
  int spawn_line, await_line;
} blocked_t;

struct uva__debug {
  uva_loop_t *loop;
  /* Options: written before the watchdog starts, read-only while it runs
   * (uva_loop_set_debug restarts it to change them). */
  uint64_t slow_ns;
  uint64_t res_ns;         /* the step clock's resolution: 0 precise (set_clock) */
  uva_debug_fn report;
  void *data;
  bool no_sites;
  /* Shared with the watchdog, under mu. */
  uv_mutex_t mu;
  uv_cond_t cond;          /* wakes the watchdog to stop */
  uv_cond_t delivered;     /* the watchdog's report has returned */
  uv_thread_t thread;
  bool stop;
  bool delivering;         /* the watchdog is delivering a BLOCKED report */
  uint64_t seq;            /* the step now running */
  uint64_t since;          /* when it started (coarse clock, ns) */
  uva__task_t *task;       /* what it runs: a task, */
  void (*cb)(void);        /* a callback, or neither */
  const char *await_file;  /* the task's last await, at the step's start */
  int await_line;
  const char *spawn_file;  /* and its spawn site */
  int spawn_line;
  uint64_t reported;       /* the step reported as blocked (seq) */
  int paused;              /* debug mode's own work in progress */
  blocked_t blocked;
  /* Loop thread only. */
  rec_t *slots;
  size_t cap, len;         /* cap: a power of two, or 0 */
  uint64_t rec_seq;
  /* Functions described (addr2line takes 5 to 10 ms a run): a thousand
   * forgotten tasks of one function cost one run, not a thousand. */
  struct {
    void (*fn)(void);
    char text[160];
  } fn_cache[16];
  unsigned fn_next;
};

/* Debug mode's own slow work inside a step (growing the table, a report)
 * is not the step's: the watchdog looks away meanwhile, and the step's
 * start moves forward by it. */
static uint64_t pause_begin(uva__debug_t *d) {
  uv_mutex_lock(&d->mu);
  d->paused++;
  uv_mutex_unlock(&d->mu);
  return uv_hrtime();
}

static void pause_end(uva__debug_t *d, uint64_t t0) {
  uint64_t ns = uv_hrtime() - t0;
  uv_mutex_lock(&d->mu);
  d->paused--;
  d->since += ns;
  uv_mutex_unlock(&d->mu);
}

/* snprintf for messages that may be cut short (a long path, a long name):
 * truncation is fine here, and -Wformat-truncation does not look inside. */
__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t n, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, n, f, ap);
  va_end(ap);
}

static uint64_t now_ns(const uva__debug_t *d) {
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  if (d->res_ns && clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#else
  (void)d;
#endif
  return uv_hrtime();
}

/* The coarse clock reads up to one tick (4 ms at HZ=250) short at a step's
 * start and at its end, so a step read as T ran more than T - res: it is
 * used only where res is under a sixteenth of the threshold, and the
 * watchdog waits for threshold + res. At a 1 ms threshold the coarse clock
 * alone reported 12-15 steps of under 1 ms as "blocked for 4 ms" in 12,000
 * steps of ~80 us; finer thresholds pay the full clock_gettime instead.
 * Both clocks count CLOCK_MONOTONIC, so a step read with one and ended
 * with the other (new options mid-step) is still measured right. */
static void set_clock(uva__debug_t *d) {
  d->res_ns = 0;
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec r;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &r) == 0) {
    uint64_t res = (uint64_t)r.tv_sec * 1000000000u + (uint64_t)r.tv_nsec;
    if (res > 0 && res <= d->slow_ns / 16 && d->slow_ns <= UINT64_MAX - res) d->res_ns = res;
  }
#endif
}

/* ---------------------------------------------------------------- table */

static size_t slot_of(const void *key, size_t cap) {
  uint64_t x = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
  return (size_t)(x >> 32) & (cap - 1);
}

static rec_t *rec_find(uva__debug_t *d, const void *key) {
  if (d->cap == 0) return NULL;
  for (size_t i = slot_of(key, d->cap);; i = (i + 1) & (d->cap - 1)) {
    if (d->slots[i].key == key) return &d->slots[i];
    if (d->slots[i].key == NULL) return NULL;
  }
}

static bool table_grow(uva__debug_t *d) {
  size_t cap = d->cap ? d->cap * 2 : 256;
  rec_t *slots = uva__calloc(cap, sizeof *slots);
  if (slots == NULL) return false;
  for (size_t i = 0; i < d->cap; i++) {
    if (d->slots[i].key == NULL) continue;
    size_t j = slot_of(d->slots[i].key, cap);
    while (slots[j].key) j = (j + 1) & (cap - 1);
    slots[j] = d->slots[i];
  }
  uva__free(d->slots);
  d->slots = slots;
  d->cap = cap;
  return true;
}

/* A fresh record for key (an old one, of an object freed without a hook, is
 * replaced). NULL when out of memory: the object is then not tracked. */
static rec_t *rec_add(uva__debug_t *d, const void *key, int type) {
  rec_t *r = rec_find(d, key);
  if (r == NULL) {
    if ((d->len + 1) * 2 > d->cap) {
      /* 100k live futures: a 20 MB table, first touched here (60 to 200
       * ms of page faults on these VMs) */
      uint64_t t0 = pause_begin(d);
      bool ok = table_grow(d);
      pause_end(d, t0);
      if (!ok) return NULL;
    }
    size_t i = slot_of(key, d->cap);
    while (d->slots[i].key) i = (i + 1) & (d->cap - 1);
    r = &d->slots[i];
    d->len++;
  }
  memset(r, 0, sizeof *r);
  r->key = key;
  r->type = (uint8_t)type;
  r->seq = ++d->rec_seq;
  return r;
}

/* Linear probing's backward-shift deletion: no tombstones to sweep. */
static void rec_del(uva__debug_t *d, rec_t *r) {
  size_t mask = d->cap - 1, i = (size_t)(r - d->slots), j = i;
  d->slots[i].key = NULL;
  d->len--;
  for (;;) {
    j = (j + 1) & mask;
    if (d->slots[j].key == NULL) return;
    size_t k = slot_of(d->slots[j].key, d->cap);
    /* Move j back to the hole at i unless its home k lies in (i, j]. */
    if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
    d->slots[i] = d->slots[j];
    d->slots[j].key = NULL;
    i = j;
  }
}

/* ------------------------------------------------------------ the stack */

typedef struct walk {
  void **ips;
  int n, max, skip;
  uintptr_t top;  /* the running task's stack top, 0 on the thread's stack */
} walk_t;

static _Unwind_Reason_Code walk_frame(struct _Unwind_Context *ctx, void *arg) {
  walk_t *w = arg;
  uintptr_t ip = _Unwind_GetIP(ctx);
  if (ip == 0) return _URC_END_OF_STACK;
  /* A task's entry frame sits at its stack top: nothing the user wrote is
   * above it, and on AArch64 its saved return address is the entry itself,
   * so unwinding on would read past the stack. */
  if (w->top && _Unwind_GetCFA(ctx) + 16 > w->top) return _URC_END_OF_STACK;
  if (w->skip > 0) {
    w->skip--;
    return _URC_NO_REASON;
  }
  w->ips[w->n++] = (void *)ip;
  return w->n < w->max ? _URC_NO_REASON : _URC_END_OF_STACK;
}

/* Return addresses of the hook's callers, skip frames above the hook
 * itself (always inlined into the hook: one frame less to walk). */
__attribute__((always_inline)) static inline int capture(uva_loop_t *loop, void **ips, int max,
                                                         int skip) {
  uva__task_t *t = loop->current;
  walk_t w = {ips, 0, max, 1 + skip, t && t->stack ? (uintptr_t)t->stack->top : 0};
  _Unwind_Backtrace(walk_frame, &w);
  return w.n;
}

/* ---------------------------------------------------------- symbolizing */

/* One code address, described. */
typedef struct sym {
  uintptr_t ip;
  int ret;                 /* a return address: look up the call, ip - 1 */
  char module[256];        /* path of the object file holding ip, or "" */
  uintptr_t off;           /* the address in that file */
  int ours;                /* in this library's own shared object */
  char func[96];           /* the function the frame is in ("" unknown) */
  char line[192];          /* innermost file:line ("" unknown) */
} sym_t;

static void self_module(char *out, size_t n) {
  ssize_t k = readlink("/proc/self/exe", out, n - 1);
  out[k > 0 ? k : 0] = '\0';
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static void sym_locate(sym_t *s) {
  Dl_info info, self;
  struct link_map *lm = NULL;
  const ElfW(Sym) *es = NULL;
  uintptr_t look = s->ip - (s->ret ? 1 : 0);
  s->module[0] = s->func[0] = s->line[0] = '\0';
  s->off = look;
  s->ours = 0;
  if (dladdr1((void *)look, &info, (void **)&lm, RTLD_DL_LINKMAP) == 0 || lm == NULL) return;
  s->off = look - (uintptr_t)lm->l_addr;
  if (lm->l_name && lm->l_name[0])
    fmt(s->module, sizeof s->module, "%s", lm->l_name);
  else
    self_module(s->module, sizeof s->module);
  if (dladdr((void *)&uva__debug_step, &self) && self.dli_fbase == info.dli_fbase &&
      lm->l_name && lm->l_name[0])
    s->ours = 1; /* a shared libuvasync: the module says it all */
  /* dladdr names the closest exported symbol, which for a static function
   * is some other one: believe it only if ip is inside it. */
  if (dladdr1((void *)look, &info, (void **)&es, RTLD_DL_SYMENT) && info.dli_sname && es &&
      look >= (uintptr_t)info.dli_saddr && look < (uintptr_t)info.dli_saddr + es->st_size)
    fmt(s->func, sizeof s->func, "%s", info.dli_sname);
}

/* Run addr2line -a -f -i on n addresses of module; its output goes to out.
 * Returns the length, 0 if it could not run or failed. */
static size_t addr2line(const char *module, const uintptr_t *offs, size_t n, char *out,
                        size_t cap) {
  enum { MAXN = 64 };
  char hex[MAXN][24];
  char *argv[8 + MAXN];
  int k = 0;
  if (n > MAXN || module[0] == '\0' || cap < 2) return 0;
  argv[k++] = "addr2line";
  argv[k++] = "-a";
  argv[k++] = "-f";
  argv[k++] = "-i";
  argv[k++] = "-e";
  argv[k++] = (char *)module;
  for (size_t i = 0; i < n; i++) {
    fmt(hex[i], sizeof hex[i], "0x%llx", (unsigned long long)offs[i]);
    argv[k++] = hex[i];
  }
  argv[k] = NULL;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return 0;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, "addr2line", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  size_t len = 0;
  if (rc == 0) {
    char sink[512];
    for (;;) {
      bool room = len < cap - 1;
      ssize_t r = read(p[0], room ? out + len : sink, room ? cap - 1 - len : sizeof sink);
      if (r > 0) {
        if (room) len += (size_t)r;
      } else if (r == 0 || errno != EINTR) {
        break;
      }
    }
  }
  close(p[0]);
  if (rc != 0) return 0;
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return 0;
  out[len] = '\0';
  return len;
}

/* "/src/build/../lib/x.c:12 (discriminator 3)" -> "/src/lib/x.c:12" */
static void tidy_line(char *s) {
  char *d = strstr(s, " (discriminator");
  if (d) *d = '\0';
  char *p;
  while ((p = strstr(s, "/../")) != NULL) {
    char *q = p; /* start of the segment before "/.." */
    while (q > s && q[-1] != '/') q--;
    if (q == p || strncmp(q, "../", 3) == 0) break; /* nothing to fold */
    memmove(q, p + 4, strlen(p + 4) + 1);
  }
}

/* Fill func (the outermost function of each inline chain: the frame's own)
 * and line (the innermost file:line) from addr2line's -a -f -i output. */
static void parse_a2l(char *out, sym_t **group, size_t n) {
  size_t i = (size_t)-1;
  char *save = NULL;
  int field = 0; /* 0: a function name next, 1: a file:line */
  for (char *ln = strtok_r(out, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
    if (ln[0] == '0' && ln[1] == 'x') { /* -a: a new address */
      if (++i >= n) return;
      field = 0;
      continue;
    }
    if (i >= n) continue;
    sym_t *s = group[i];
    if (field == 0) {
      if (strcmp(ln, "??") != 0) fmt(s->func, sizeof s->func, "%s", ln);
    } else if (s->line[0] == '\0' && strncmp(ln, "??", 2) != 0) {
      fmt(s->line, sizeof s->line, "%s", ln);
      tidy_line(s->line);
    }
    field ^= 1;
  }
}

/* Describe every address of syms: module, function, file:line where the
 * tools allow. out (cap bytes) is scratch for addr2line's output. */
static void symbolize(sym_t *syms, size_t n, char *out, size_t cap) {
  enum { BATCH = 64 };
  for (size_t i = 0; i < n; i++) sym_locate(&syms[i]);
  bool *done = uva__calloc(n ? n : 1, sizeof *done);
  if (done == NULL) return;
  for (size_t i = 0; i < n; i++) {
    if (done[i] || syms[i].module[0] == '\0') continue;
    /* One addr2line per module and batch of addresses. */
    sym_t *group[BATCH];
    uintptr_t offs[BATCH];
    size_t k = 0;
    for (size_t j = i; j < n && k < BATCH; j++) {
      if (done[j] || strcmp(syms[j].module, syms[i].module) != 0) continue;
      done[j] = true;
      group[k] = &syms[j];
      offs[k++] = syms[j].off;
    }
    /* Addresses of the module beyond this batch start batches of their own. */
    if (addr2line(syms[i].module, offs, k, out, cap) > 0) parse_a2l(out, group, k);
  }
  uva__free(done);
}

/* A function pointer as text: its symbol, else module+0xoffset. */
static void describe_fn(void (*fn)(void), char *buf, size_t n) {
  sym_t s;
  char out[2048];
  memset(&s, 0, sizeof s);
  s.ip = (uintptr_t)fn;
  sym_locate(&s);
  if (s.func[0] == '\0' && s.module[0] && addr2line(s.module, &s.off, 1, out, sizeof out) > 0) {
    sym_t *g = &s;
    parse_a2l(out, &g, 1);
  }
  if (s.func[0])
    fmt(buf, n, "%s", s.func);
  else if (s.module[0])
    fmt(buf, n, "%s+0x%llx", base_name(s.module), (unsigned long long)s.off);
  else
    fmt(buf, n, "%p", (void *)(uintptr_t)fn);
}

/* Is s in the library? A shared libuvasync says so by its module. In a
 * static link, by the frame's file: lib_dir is the directory of this file's
 * own debug information ("/src/uvasync/lib/"), or by a uva_ name. */
static bool sym_is_lib(const sym_t *s, const char *lib_dir) {
  if (s->ours || strncmp(s->func, "uva_", 4) == 0) return true;
  size_t k = strlen(lib_dir);
  return k > 0 && strncmp(s->line, lib_dir, k) == 0;
}

static void describe_sym(const sym_t *s, char *buf, size_t n) {
  if (s->line[0] && s->func[0])
    fmt(buf, n, "%s (in %s)", s->line, s->func);
  else if (s->line[0])
    fmt(buf, n, "%s", s->line);
  else if (s->func[0] && s->module[0])
    fmt(buf, n, "%s (%s+0x%llx)", s->func, base_name(s->module), (unsigned long long)s->off);
  else if (s->module[0])
    fmt(buf, n, "%s+0x%llx", base_name(s->module), (unsigned long long)s->off);
  else
    fmt(buf, n, "%p", (void *)s->ip);
}

/* The first frame outside the library: where the program made the object.
 * With neither names nor lines (no addr2line, a stripped program) the
 * library's frames cannot be told apart: list them all, innermost first,
 * for addr2line -e elsewhere. */
static void describe_site(sym_t *const *frames, int nframes, const char *lib_dir, char *buf,
                          size_t n) {
  buf[0] = '\0';
  bool known = false;
  for (int i = 0; i < nframes; i++) known |= frames[i]->func[0] || frames[i]->line[0];
  if (!known) {
    size_t len = 0;
    for (int i = 0; i < nframes && len + 1 < n; i++) {
      describe_sym(frames[i], buf + len + (i > 0), n - len - (i > 0));
      if (i > 0) buf[len] = ' ';
      len += strlen(buf + len);
    }
    return;
  }
  for (int i = 0; i < nframes; i++) {
    if (!sym_is_lib(frames[i], lib_dir)) {
      describe_sym(frames[i], buf, n);
      return;
    }
  }
  if (nframes > 0) describe_sym(frames[nframes - 1], buf, n); /* best we have */
}

/* -------------------------------------------------------------- reports */

static void deliver(uva__debug_t *d, uva_debug_report_t *r) {
  if (d->report)
    d->report(r, d->data);
  else
    fprintf(stderr, "uvasync debug: %s\n", r->message);
}

static void task_name(const uva__task_t *t, char *buf, size_t n) {
  if (t->name)
    fmt(buf, n, "%s", t->name);
  else
    fmt(buf, n, "task-%llu", (unsigned long long)t->id);
}

static void site_text(const char *file, int line, char *buf, size_t n) {
  if (file)
    fmt(buf, n, "%s:%d", file, line);
  else
    buf[0] = '\0';
}

/* On the loop thread: describe_fn through the cache. */
static void loop_describe_fn(uva__debug_t *d, void (*fn)(void), char *buf, size_t n) {
  for (size_t i = 0; i < sizeof d->fn_cache / sizeof d->fn_cache[0]; i++) {
    if (d->fn_cache[i].fn == fn && fn) {
      fmt(buf, n, "%s", d->fn_cache[i].text);
      return;
    }
  }
  unsigned k = d->fn_next++ % (sizeof d->fn_cache / sizeof d->fn_cache[0]);
  describe_fn(fn, d->fn_cache[k].text, sizeof d->fn_cache[k].text);
  d->fn_cache[k].fn = fn;
  fmt(buf, n, "%s", d->fn_cache[k].text);
}

/* BLOCKED from the watchdog, UNBLOCKED from the loop thread; b->fn_text is
 * filled in by the first. */
static void report_blocked(uva__debug_t *d, blocked_t *b, int kind, uint64_t ns) {
  char fn[160], site[256], await_site[256], msg[1024];
  if (b->fn_text[0] == '\0') describe_fn(b->fn, b->fn_text, sizeof b->fn_text);
  fmt(fn, sizeof fn, "%s", b->fn_text);
  site_text(b->spawn_file, b->spawn_line, site, sizeof site);
  site_text(b->await_file, b->await_line, await_site, sizeof await_site);
  uint64_t ms = ns / 1000000u, th = d->slow_ns / 1000000u;
  char who[640];
  if (b->is_task) {
    char since[300];
    if (await_site[0])
      fmt(since, sizeof since, "since its await at %s", await_site);
    else
      fmt(since, sizeof since, "since it started");
    fmt(who, sizeof who, "task '%s' (%s%s%s), %s", b->name, fn,
             site[0] ? ", spawned at " : "", site, since);
  } else {
    fmt(who, sizeof who, "done callback %s", fn);
  }
  if (kind == UVA_DEBUG_BLOCKED)
    fmt(msg, sizeof msg,
             "loop blocked for %llu ms (threshold %llu ms) by %s; still blocked",
             (unsigned long long)ms, (unsigned long long)th, who);
  else
    fmt(msg, sizeof msg, "loop was blocked for %llu ms in all (threshold %llu ms) by %s",
             (unsigned long long)ms, (unsigned long long)th, who);
  uva_debug_report_t r;
  memset(&r, 0, sizeof r);
  r.kind = kind;
  r.message = msg;
  r.object = b->is_task ? "task" : "callback";
  r.task = b->is_task ? b->name : NULL;
  r.fn = fn;
  r.site = site[0] ? site : NULL;
  r.await_site = await_site[0] ? await_site : NULL;
  r.ms = ms;
  r.threshold_ms = th;
  deliver(d, &r);
}

static void watchdog(void *arg) {
  uva__debug_t *d = arg;
  uint64_t tick = d->slow_ns / 2;
  if (tick < 1000000u) tick = 1000000u;
  uv_mutex_lock(&d->mu);
  while (!d->stop) {
    uv_cond_timedwait(&d->cond, &d->mu, tick);
    if (d->stop) break;
    if ((d->task == NULL && d->cb == NULL) || d->reported == d->seq || d->paused) continue;
    uint64_t now = now_ns(d);
    if (now < d->since || now - d->since < d->slow_ns + d->res_ns) continue; /* (credit) */
    /* The step may end as soon as we unlock: copy what the report needs.
     * The task is alive while its step runs (it holds a reference on
     * itself until it ends, and it ends only after the step); its name
     * changes only under this mutex (uva__debug_rename). */
    blocked_t *b = &d->blocked;
    memset(b, 0, sizeof *b);
    if (d->task) {
      uva__task_t *t = d->task;
      b->is_task = 1;
      task_name(t, b->name, sizeof b->name);
      b->fn = (void (*)(void))t->fn;
      b->spawn_file = d->spawn_file;
      b->spawn_line = d->spawn_line;
      b->await_file = d->await_file;
      b->await_line = d->await_line;
    } else {
      b->fn = d->cb;
    }
    d->reported = d->seq;
    d->delivering = true;
    blocked_t copy = *b;
    uint64_t ns = now - d->since;
    uv_mutex_unlock(&d->mu);
    report_blocked(d, &copy, UVA_DEBUG_BLOCKED, ns);
    uv_mutex_lock(&d->mu);
    memcpy(d->blocked.fn_text, copy.fn_text, sizeof copy.fn_text); /* for UNBLOCKED */
    d->delivering = false;
    uv_cond_signal(&d->delivered);
  }
  uv_mutex_unlock(&d->mu);
}

/* ------------------------------------------------------------ the hooks */

void uva__debug_step(uva_loop_t *loop, uva__task_t *t, void (*cb)(void)) {
  uva__debug_t *d = loop->debug;
  const rec_t *r = t ? rec_find(d, t) : NULL; /* the table is ours: no lock */
  const char *spawn_file = r && r->type == REC_TASK ? r->u.site.file : NULL;
  int spawn_line = spawn_file ? r->u.site.line : 0;
  uint64_t now = now_ns(d);
  uv_mutex_lock(&d->mu);
  if (d->reported == d->seq) {
    /* The step ending was reported blocked: say how long it took in all,
     * before the next one starts (the report must not count against it;
     * the watchdog does not report the same step twice), and after the
     * watchdog's own report has returned, so that they arrive in order. */
    while (d->delivering) uv_cond_wait(&d->delivered, &d->mu);
    blocked_t b = d->blocked;
    uint64_t ns = now > d->since ? now - d->since : 0;
    uv_mutex_unlock(&d->mu);
    report_blocked(d, &b, UVA_DEBUG_UNBLOCKED, ns);
    now = now_ns(d);
    uv_mutex_lock(&d->mu);
  }
  d->seq++;
  d->since = now;
  d->task = t;
  d->cb = t ? NULL : cb;
  if (t) {
    d->await_file = t->await_file;
    d->await_line = t->await_line;
    d->spawn_file = spawn_file;
    d->spawn_line = spawn_line;
  }
  uv_mutex_unlock(&d->mu);
}

void uva__debug_future_new(uva_future_t *f) {
  uva__debug_t *d = f->loop->debug;
  rec_t *r = rec_add(d, f, REC_FUTURE);
  /* skip 1: uva__future_alloc, always there */
  if (r && !d->no_sites) r->nframes = (uint8_t)capture(f->loop, r->u.frames, FRAMES, 1);
}

void uva__debug_task_new(uva__task_t *t) {
  rec_add(t->base.loop->debug, t, REC_TASK); /* uva__debug_task_site follows */
}

void uva__debug_task_site(uva__task_t *t, const char *file, int line) {
  rec_t *r = rec_find(t->base.loop->debug, t);
  if (r && r->type == REC_TASK) {
    r->u.site.file = file;
    r->u.site.line = line;
  }
}

void uva__debug_retrieved(const uva_future_t *f) {
  if (!f->is_task) return;
  rec_t *r = rec_find(f->loop->debug, f);
  if (r) r->retrieved = 1;
}

void uva__debug_rename(uva__task_t *t, char *name) {
  uva__debug_t *d = t->base.loop->debug;
  uv_mutex_lock(&d->mu);
  char *old = t->name;
  t->name = name;
  uv_mutex_unlock(&d->mu);
  uva__free(old);
}

void uva__debug_future_free(uva_future_t *f) {
  uva__debug_t *d = f->loop->debug;
  rec_t *r = rec_find(d, f);
  if (r == NULL) return;
  bool lost = r->type == REC_TASK && !r->retrieved && f->state == UVA__DONE &&
              f->status < 0 && f->status != UV_ECANCELED;
  const char *spawn_file = lost ? r->u.site.file : NULL;
  int spawn_line = lost ? r->u.site.line : 0;
  rec_del(d, r);
  if (!lost) return;
  uint64_t t0 = pause_begin(d);
  uva__task_t *t = (uva__task_t *)f;
  char name[64], fn[160], site[256], msg[1024];
  task_name(t, name, sizeof name);
  loop_describe_fn(d, (void (*)(void))t->fn, fn, sizeof fn);
  site_text(spawn_file, spawn_line, site, sizeof site);
  fmt(msg, sizeof msg,
           "task '%s' (%s%s%s) failed with %s (%s) and nobody retrieved its status "
           "(await it, or read uva_future_status)",
           name, fn, site[0] ? ", spawned at " : "", site, uva_err_name(f->status),
           uva_strerror(f->status));
  uva_debug_report_t rep;
  memset(&rep, 0, sizeof rep);
  rep.kind = UVA_DEBUG_UNRETRIEVED;
  rep.message = msg;
  rep.object = "task";
  rep.task = name;
  rep.fn = fn;
  rep.site = site[0] ? site : NULL;
  rep.status = f->status;
  deliver(d, &rep);
  pause_end(d, t0);
}

void uva__debug_open(uva_loop_t *loop, const void *obj, const char *kind,
                     const uva_future_t *from) {
  uva__debug_t *d = loop->debug;
  const rec_t *src = from ? rec_find(d, from) : NULL;
  void *frames[FRAMES] = {0};
  int n = src ? src->nframes : d->no_sites ? 0 : capture(loop, frames, FRAMES, 0);
  if (src) memcpy(frames, src->u.frames, sizeof frames);
  rec_t *r = rec_add(d, obj, REC_RESOURCE); /* may move src: copied first */
  if (r == NULL) return;
  r->kind = kind;
  r->nframes = (uint8_t)n;
  memcpy(r->u.frames, frames, sizeof frames);
}

void uva__debug_close(uva_loop_t *loop, const void *obj) {
  uva__debug_t *d = loop->debug;
  rec_t *r = rec_find(d, obj);
  if (r) rec_del(d, r);
}

/* --------------------------------------------------------- loop close */

static const char *closer_of(const char *kind) {
  static const struct { const char *kind, *fn; } map[] = {
      {"HTTP client", "uva_http_client_free"}, {"HTTP stream", "uva_http_stream_close"},
      {"TCP stream", "uva_stream_close"},      {"Unix stream", "uva_stream_close"},
      {"TCP server", "uva_server_close"},      {"Unix server", "uva_server_close"},
      {"executor", "uva_executor_free"},       {"process", "uva_process_free"},
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(map[i].kind, kind) == 0) return map[i].fn;
  return "its close function";
}

static int by_seq(const void *a, const void *b) {
  const rec_t *x = *(rec_t *const *)a, *y = *(rec_t *const *)b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_ip(const void *a, const void *b) {
  uintptr_t x = ((const sym_t *)a)->ip, y = ((const sym_t *)b)->ip;
  return x < y ? -1 : x > y;
}

static void report_leak(uva__debug_t *d, const rec_t *r, sym_t *syms, size_t nsyms,
                        const char *lib_dir) {
  char msg[1024], site[320], name[64], fn[160], state[160];
  sym_t *frames[FRAMES];
  for (int i = 0; i < r->nframes; i++) {
    sym_t key;
    key.ip = (uintptr_t)r->u.frames[i];
    frames[i] = bsearch(&key, syms, nsyms, sizeof *syms, by_ip);
  }
  int nframes = r->nframes;
  for (int i = 0; i < nframes; i++)
    if (frames[i] == NULL) nframes = i; /* cannot happen: every frame was looked up */
  uva_debug_report_t rep;
  memset(&rep, 0, sizeof rep);
  rep.message = msg;
  site[0] = '\0';
  if (r->type == REC_TASK) {
    const uva__task_t *t = r->key;
    const uva_future_t *f = &t->base;
    task_name(t, name, sizeof name);
    loop_describe_fn(d, (void (*)(void))t->fn, fn, sizeof fn);
    site_text(r->u.site.file, r->u.site.line, site, sizeof site);
    if (f->state != UVA__DONE)
      fmt(state, sizeof state, "still pending");
    else if (f->status < 0)
      fmt(state, sizeof state, "it ended with %s%s", uva_err_name(f->status),
               f->status != UV_ECANCELED && !r->retrieved ? ", never retrieved" : "");
    else
      fmt(state, sizeof state, "it ended with status %d", f->status);
    fmt(msg, sizeof msg,
             "task '%s' (%s%s%s) is still referenced after the loop closed: never "
             "awaited or released (%s)",
             name, fn, site[0] ? ", spawned at " : "", site, state);
    rep.kind = UVA_DEBUG_FORGOTTEN;
    rep.object = "task";
    rep.task = name;
    rep.fn = fn;
    rep.status = f->state == UVA__DONE ? f->status : UVA_EPENDING;
  } else if (r->type == REC_FUTURE) {
    const uva_future_t *f = r->key;
    describe_site(frames, nframes, lib_dir, site, sizeof site);
    if (f->state != UVA__DONE)
      fmt(state, sizeof state, "pending");
    else if (f->status < 0)
      fmt(state, sizeof state, "done, %s", uva_err_name(f->status));
    else
      fmt(state, sizeof state, "done, status %d", f->status);
    bool plain = strcmp(f->ops->kind, "future") == 0;
    fmt(msg, sizeof msg,
        "%s%sfuture created at %s is still referenced after the loop closed: never awaited "
        "or released (%s)",
        plain ? "" : f->ops->kind, plain ? "" : " ", site[0] ? site : "?", state);
    rep.kind = UVA_DEBUG_FORGOTTEN;
    rep.object = f->ops->kind;
    rep.status = f->state == UVA__DONE ? f->status : UVA_EPENDING;
  } else {
    describe_site(frames, nframes, lib_dir, site, sizeof site);
    fmt(msg, sizeof msg, "unclosed %s created at %s: still open when the loop closed (%s)",
             r->kind, site[0] ? site : "?", closer_of(r->kind));
    rep.kind = UVA_DEBUG_UNCLOSED;
    rep.object = r->kind;
  }
  rep.site = site[0] ? site : NULL;
  deliver(d, &rep);
}

static void report_leaks(uva__debug_t *d) {
  if (d->len == 0) return;
  /* sorted by address for bsearch; one spare slot for the library's own */
  rec_t **live = uva__malloc(d->len * sizeof *live);
  sym_t *syms = uva__calloc(d->len * FRAMES + 1, sizeof *syms);
  size_t cap = 64 * 1024;
  char *out = uva__malloc(cap);
  if (live == NULL || syms == NULL || out == NULL) goto done;
  size_t n = 0, nsyms = 0;
  for (size_t i = 0; i < d->cap; i++) {
    if (d->slots[i].key == NULL) continue;
    live[n++] = &d->slots[i];
    for (int k = 0; k < d->slots[i].nframes; k++) {
      syms[nsyms].ip = (uintptr_t)d->slots[i].u.frames[k];
      syms[nsyms++].ret = 1;
    }
  }
  qsort(live, n, sizeof *live, by_seq);
  qsort(syms, nsyms, sizeof *syms, by_ip);
  size_t u = 0; /* one lookup per distinct address */
  for (size_t i = 0; i < nsyms; i++)
    if (u == 0 || syms[i].ip != syms[u - 1].ip) syms[u++] = syms[i];
  /* One more address, of this very function, gives the library's source
   * directory as its debug information spells it. */
  sym_t *self = &syms[u];
  memset(self, 0, sizeof *self);
  self->ip = (uintptr_t)&report_leaks;
  symbolize(syms, u + 1, out, cap);
  char lib_dir[192] = "";
  if (self->line[0]) {
    fmt(lib_dir, sizeof lib_dir, "%s", self->line);
    char *slash = strrchr(lib_dir, '/');
    if (slash) slash[1] = '\0';
    else lib_dir[0] = '\0';
  }
  for (size_t i = 0; i < n; i++) report_leak(d, live[i], syms, u, lib_dir);
done:
  uva__free(out);
  uva__free(syms);
  uva__free(live);
}

/* ------------------------------------------------------------ on / off */

static void watchdog_stop(uva__debug_t *d) {
  uv_mutex_lock(&d->mu);
  d->stop = true;
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
  uv_thread_join(&d->thread);
}

static int watchdog_start(uva__debug_t *d) {
  d->stop = false;
  return uv_thread_create(&d->thread, watchdog, d);
}

static void debug_free(uva__debug_t *d) {
  uv_cond_destroy(&d->delivered);
  uv_cond_destroy(&d->cond);
  uv_mutex_destroy(&d->mu);
  uva__free(d->slots);
  uva__free(d);
}

static uint64_t env_slow_ms(void) {
  const char *s = getenv("UVA_DEBUG_SLOW_MS");
  if (s == NULL || *s == '\0') return DEFAULT_SLOW_MS;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  return *end == '\0' && v > 0 ? (uint64_t)v : DEFAULT_SLOW_MS;
}

int uva_loop_set_debug(uva_loop_t *loop, const uva_debug_opts_t *opts) {
  if (loop == NULL) return UV_EINVAL;
  uva__debug_t *d = loop->debug;
  if (opts == NULL || !opts->enabled) {
    if (d == NULL) return 0;
    loop->debug = NULL;
    watchdog_stop(d);
    debug_free(d);
    return 0;
  }
  uint64_t slow_ms = opts->slow_ms ? opts->slow_ms : env_slow_ms();
  if (slow_ms > UINT64_MAX / 1000000u) slow_ms = UINT64_MAX / 1000000u;
  if (d) { /* new options: the watchdog reads them unlocked, so restart it */
    watchdog_stop(d);
    d->slow_ns = slow_ms * 1000000u;
    set_clock(d);
    d->report = opts->report;
    d->data = opts->data;
    d->no_sites = opts->no_sites != 0;
    int rc = watchdog_start(d);
    if (rc != 0) {
      loop->debug = NULL;
      debug_free(d);
    }
    return rc;
  }
  if ((d = uva__calloc(1, sizeof *d)) == NULL) return UV_ENOMEM;
  d->loop = loop;
  d->slow_ns = slow_ms * 1000000u;
  set_clock(d);
  d->report = opts->report;
  d->data = opts->data;
  d->no_sites = opts->no_sites != 0;
  d->seq = 1; /* reported == 0: nothing reported yet */
  int rc = uv_mutex_init(&d->mu);
  if (rc != 0) {
    uva__free(d);
    return rc;
  }
  if ((rc = uv_cond_init(&d->cond)) != 0) {
    uv_mutex_destroy(&d->mu);
    uva__free(d);
    return rc;
  }
  if ((rc = uv_cond_init(&d->delivered)) != 0) {
    uv_cond_destroy(&d->cond);
    uv_mutex_destroy(&d->mu);
    uva__free(d);
    return rc;
  }
  if ((rc = watchdog_start(d)) != 0) {
    debug_free(d);
    return rc;
  }
  loop->debug = d;
  return 0;
}

int uva_loop_debug(const uva_loop_t *loop) { return loop && loop->debug ? 1 : 0; }

void uva__debug_loop_init(uva_loop_t *loop) {
  const char *s = getenv("UVA_DEBUG");
  if (s == NULL || *s == '\0' || strcmp(s, "0") == 0) return;
  uva_debug_opts_t o = {.enabled = 1};
  int rc = uva_loop_set_debug(loop, &o);
  if (rc != 0)
    fprintf(stderr, "uvasync debug: UVA_DEBUG is set but debug mode could not start: %s\n",
            uva_strerror(rc));
}

void uva__debug_loop_close(uva_loop_t *loop) {
  uva__debug_t *d = loop->debug;
  loop->debug = NULL; /* what the rest of close frees is not reported */
  watchdog_stop(d);
  report_leaks(d);
  debug_free(d);
}
