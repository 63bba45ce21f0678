/* debug.c: asyncio's three best-known pitfalls in C, and what debug mode
 * says about each.
 *
 * Shows: uva_loop_set_debug() (or UVA_DEBUG=1 in the environment) turns on
 * debug mode, which reports
 *   1. a blocking call in a task, while the loop is still blocked (from a
 *      watchdog thread), then the whole stall once the task gives the loop
 *      back;
 *   2. a forgotten await: a future nobody awaited or released, listed when
 *      the loop closes with the line that made it;
 *   3. a lost error: a task that failed and whose status nobody read
 *      (uva_wait only waits; it does not read), when the task is freed.
 * Here the reports go to a callback that prints and counts them; without
 * one they go to stderr. Exits 0 only if every report appeared.
 *
 * asyncio original:
 *   async def lookup(): time.sleep(1)              # blocks the loop
 *   async def fetch(): await asyncio.open_connection("127.0.0.1", port)
 *   async def main():
 *       await lookup()
 *       asyncio.sleep(0.2)                          # never awaited
 *       t = asyncio.create_task(fetch())
 *       await asyncio.wait([t])                     # never t.exception()
 *   asyncio.run(main(), debug=True)
 */
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <uvasync.h>

static atomic_int seen[6]; /* reports per kind */

/* BLOCKED comes from the watchdog thread, everything else from the loop's
 * thread: print and count, nothing more (no uvasync calls in here). */
static void on_report(const uva_debug_report_t *r, void *data) {
  (void)data;
  printf("    debug mode: %s\n", r->message);
  fflush(stdout);
  if (r->kind > 0 && r->kind < 6) atomic_fetch_add(&seen[r->kind], 1);
}

static int lookup(void *arg) {
  (void)arg;
  uva_await(uva_sleep(10), NULL);
  sleep(1); /* pitfall 1: meant uva_await(uva_sleep(1000), NULL), or uva_to_thread */
  return 0;
}

static int refused_port;

static int fetch(void *arg) {
  (void)arg;
  void *v;
  int rc = uva_await(uva_tcp_connect("127.0.0.1", refused_port), &v);
  if (rc == 0) uva_stream_close(v);
  return rc; /* UV_ECONNREFUSED: nothing listens there */
}

static int no_conn(uva_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
  return 0;
}

/* Global, so that leak checkers see the forgotten future as still
 * reachable: the leak is the point here. */
static uva_future_t *later;

static int main_task(void *arg) {
  (void)arg;
  uva_debug_opts_t opts = {.enabled = 1, .slow_ms = 100, .report = on_report};
  if (uva_loop_set_debug(uva_loop_current(), &opts) != 0) return 1;

  printf("1. a blocking call in a task: sleep(1) instead of awaiting uva_sleep(1000)\n");
  fflush(stdout);
  uva_await(uva_spawn_named("lookup", lookup, NULL), NULL);

  printf("2. a forgotten await: a uva_sleep(200) kept for later, never awaited\n");
  later = uva_sleep(200); /* pitfall 2: uva_await(later, NULL) never comes */

  printf("3. a lost error: uva_wait waits for a task but does not read its status\n");
  fflush(stdout);
  uva_server_t *srv; /* a port nothing listens on: one just given to us, closed again */
  if (uva_tcp_listen(&srv, "127.0.0.1", 0, 0, no_conn, NULL) != 0) return 1;
  refused_port = uva_server_port(srv);
  uva_await(uva_server_close(srv, 1), NULL);
  uva_future_t *t = uva_spawn_named("fetch", fetch, NULL);
  uva_await(uva_wait(&t, 1, UVA_ALL_COMPLETED, -1), NULL); /* borrows t */
  uva_release(t); /* pitfall 3: its UV_ECONNREFUSED was never looked at */

  printf("main returns; the loop closes\n");
  fflush(stdout);
  return 0;
}

int main(void) {
  int rc = uva_run(main_task, NULL);
  int ok = rc == 0 && later != NULL && seen[UVA_DEBUG_BLOCKED] >= 1 &&
           seen[UVA_DEBUG_UNBLOCKED] >= 1 &&
           seen[UVA_DEBUG_FORGOTTEN] >= 1 && seen[UVA_DEBUG_UNRETRIEVED] >= 1;
  if (!ok) {
    fprintf(stderr, "unexpected: rc=%s blocked=%d unblocked=%d forgotten=%d unretrieved=%d\n",
            uva_err_name(rc), seen[UVA_DEBUG_BLOCKED], seen[UVA_DEBUG_UNBLOCKED],
            seen[UVA_DEBUG_FORGOTTEN], seen[UVA_DEBUG_UNRETRIEVED]);
    return 1;
  }
  return 0;
}
