/* echo_client.c: connect, send a few lines, print what comes back.
 *
 * Shows: uva_tcp_connect() resolves the host and tries each address in
 * turn (asyncio.open_connection); its value is the stream, which the
 * caller closes. Writes and reads are awaited one after the other, as
 * plain sequential code.
 *
 * usage: echo_client [HOST [PORT]]  talk to an echo server (echo_server),
 *                                   default 127.0.0.1 8888
 *        echo_client --selftest     start a tiny echo server in this
 *                                   process first and talk to it
 *
 * asyncio original:
 *   async def main():
 *       reader, writer = await asyncio.open_connection("127.0.0.1", 8888)
 *       for line in ["one", "two", "three"]:
 *           writer.write(line.encode() + b"\n"); await writer.drain()
 *           print((await reader.readline()).decode(), end="")
 *       writer.close(); await writer.wait_closed()
 *   asyncio.run(main())
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

static const char *host = "127.0.0.1";
static int port = 8888, selftest = 0;

static int client(void) {
  void *v;
  int rc = uva_await(uva_tcp_connect(host, port), &v);
  if (rc < 0) {
    fprintf(stderr, "connect %s:%d: %s\n", host, port, uva_strerror(rc));
    return rc;
  }
  uva_stream_t *s = v; /* ours now: close it */
  const char *lines[] = {"one\n", "two\n", "three\n"};
  int matched = 0;
  for (int i = 0; i < 3; i++) {
    if ((rc = uva_await(uva_stream_write(s, lines[i], strlen(lines[i])), NULL)) < 0) break;
    if ((rc = uva_await(uva_stream_read_until(s, "\n", 1, 0), &v)) < 0) break;
    uva_bytes_t *reply = v;
    printf("%s", reply->data);
    matched += strcmp(reply->data, lines[i]) == 0;
    uva_free(reply);
  }
  uva_stream_close(s);
  if (rc < 0) fprintf(stderr, "echo: %s\n", uva_strerror(rc));
  return rc < 0 ? rc : matched == 3 ? 0 : 1;
}

/* --selftest: the smallest echo server, in this process. */
static int echo(uva_stream_t *conn, void *arg) {
  (void)arg;
  char buf[4096];
  int n;
  while ((n = uva_await(uva_stream_read(conn, buf, sizeof buf), NULL)) > 0)
    if (uva_await(uva_stream_write(conn, buf, (size_t)n), NULL) < 0) break;
  return 0;
}

static int main_task(void *arg) {
  (void)arg;
  uva_server_t *srv = NULL;
  if (selftest) {
    int rc = uva_tcp_listen(&srv, "127.0.0.1", 0, 0, echo, NULL);
    if (rc < 0) return rc;
    port = uva_server_port(srv);
  }
  int rc = client();
  if (srv) uva_await(uva_server_close(srv, 1), NULL);
  return rc;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--selftest") == 0) {
    selftest = 1;
  } else {
    if (argc > 1) host = argv[1];
    if (argc > 2) port = atoi(argv[2]);
  }
  return uva_run(main_task, NULL) == 0 ? 0 : 1;
}
