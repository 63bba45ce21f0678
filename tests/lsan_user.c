/* A user's program, built with -fsanitize=address against the plain
 * (unsanitized) shared library by tests/lsan_user.sh, which runs it.
 * usage: lsan_user MODE
 *   leak   a task leaks 4243 bytes: LeakSanitizer must report them
 *   clean  a task allocates and frees: nothing to report
 *   held   a task holds an allocation only on its stack and waits; another
 *          task calls exit(0) while it is suspended, with an allocation held
 *          only in main()'s frame: nothing to report either */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

static void *volatile sink;
static uva_event_t *ev;

static int leaker(void *arg) {
  (void)arg;
  char *p = malloc(4243);
  memset(p, 1, 4243);
  sink = p;
  sink = NULL;
  return 0;
}

static int tidy(void *arg) {
  (void)arg;
  char *p = malloc(4243);
  memset(p, 1, 4243);
  sink = p;
  sink = NULL;
  free(p);
  return 0;
}

static int holder(void *arg) {
  (void)arg;
  char *volatile p = malloc(4244);
  memset(p, 2, 4244);
  int rc = uva_await(uva_event_wait(ev), NULL); /* never set */
  free(p);
  return rc;
}

static int run(void *arg) {
  const char *mode = arg;
  if (strcmp(mode, "held") == 0) {
    ev = uva_event_new();
    uva_future_t *h = uva_spawn(holder, NULL);
    for (int i = 0; i < 4; i++) uva_yield();
    exit(uva_future_is_done(h) ? 3 : 0);
  }
  uva_future_t *t = uva_spawn(strcmp(mode, "leak") == 0 ? leaker : tidy, NULL);
  int rc = uva_await(t, NULL);
  uva_release(t);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  char *volatile in_main = malloc(4245); /* only main()'s frame points here */
  memset(in_main, 3, 4245);
  int rc = uva_run(run, argv[1]);
  free(in_main);
  return rc == 0 ? 0 : 1;
}
