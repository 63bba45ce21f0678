/* echo_server.c: a line echo server, one task per connection.
 *
 * Shows: uva_tcp_listen() runs the connection function as a new task for
 * every client (asyncio.start_server's client_connected_cb) and closes
 * the connection when it returns; uva_stream_read_until() reads a line,
 * uva_stream_write() sends it back and completes once libuv has written
 * it, so a slow client slows only its own task.
 *
 * usage: echo_server [PORT]     serve on 127.0.0.1:PORT (default 8888)
 *        echo_server --selftest serve on a free port, talk to itself, exit
 *
 * asyncio original:
 *   async def handle(reader, writer):
 *       while line := await reader.readline():
 *           writer.write(line); await writer.drain()
 *       writer.close()
 *   async def main():
 *       server = await asyncio.start_server(handle, "127.0.0.1", 8888)
 *       async with server: await server.serve_forever()
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

static int handle(uva_stream_t *conn, void *arg) {
  (void)arg;
  for (;;) {
    void *line;
    int n = uva_await(uva_stream_read_until(conn, "\n", 1, 0), &line);
    if (n < 0) return n == UV_EOF ? 0 : n; /* the client hung up */
    int rc = uva_await(uva_stream_write(conn, ((uva_bytes_t *)line)->data, (size_t)n), NULL);
    uva_free(line);
    if (rc < 0) return rc;
  }
  /* returning closes conn */
}

/* --selftest: a client in the same program. */
static int selftest_client(int port) {
  void *v;
  int rc = uva_await(uva_tcp_connect("127.0.0.1", port), &v);
  if (rc < 0) return rc;
  uva_stream_t *s = v;
  const char *lines[] = {"hello\n", "echo, echo\n", "bye\n"};
  int ok = 1;
  for (int i = 0; i < 3 && ok; i++) {
    size_t len = strlen(lines[i]);
    ok = uva_await(uva_stream_write(s, lines[i], len), NULL) == 0 &&
         uva_await(uva_stream_read_until(s, "\n", 1, 0), &v) == (int)len;
    if (ok) {
      printf("sent %.*s, got back %s", (int)len - 1, lines[i], ((uva_bytes_t *)v)->data);
      ok = strcmp(((uva_bytes_t *)v)->data, lines[i]) == 0;
      uva_free(v);
    }
  }
  uva_stream_close(s);
  return ok ? 0 : 1;
}

static int port_arg = 8888, selftest = 0;

static int main_task(void *arg) {
  (void)arg;
  uva_server_t *srv;
  int rc = uva_tcp_listen(&srv, "127.0.0.1", selftest ? 0 : port_arg, 0, handle, NULL);
  if (rc < 0) {
    fprintf(stderr, "listen: %s\n", uva_strerror(rc));
    return rc;
  }
  printf("serving on 127.0.0.1:%d\n", uva_server_port(srv));
  if (selftest) {
    rc = selftest_client(uva_server_port(srv));
  } else {
    uva_event_t *never = uva_event_new(); /* nothing sets it: serve until Ctrl-C */
    rc = uva_await(uva_event_wait(never), NULL);
    uva_event_free(never);
    printf("\nshutting down\n");
  }
  uva_await(uva_server_close(srv, 1), NULL); /* stop listening, cancel clients */
  return rc == UV_ECANCELED ? 0 : rc;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--selftest") == 0) selftest = 1;
  else if (argc > 1) port_arg = atoi(argv[1]);
  return uva_run(main_task, NULL) == 0 ? 0 : 1;
}
