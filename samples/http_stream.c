/* http_stream.c: download a large body to a file, chunk by chunk.
 *
 * Shows: uva_http_stream_open() returns once the response headers are in;
 * uva_http_stream_read() then hands the body out in chunks, each written
 * to the file on the thread pool (uva_fs_write). Memory stays bounded: when
 * the file is slower than the network, the library pauses the transfer
 * (curl_easy_pause) instead of buffering the whole body.
 *
 *   http_stream URL FILE     download URL into FILE
 *   http_stream --selftest   download 64 MiB from a local server
 *
 * asyncio original (aiohttp):
 *   async with session.get(url) as r:
 *       async for chunk in r.content.iter_chunked(65536):
 *           await aiofiles_file.write(chunk)
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <uvasync.h>

#define BODY ((size_t)64 << 20)

static const char *url, *path;

/* --selftest's server: one response of BODY bytes. */
static int serve(uva_stream_t *c, void *arg) {
  (void)arg;
  static char chunk[65536];
  void *v;
  if (uva_await(uva_stream_read_until(c, "\r\n\r\n", 4, 0), &v) < 0) return 0;
  uva_free(v);
  char head[128];
  int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", BODY);
  uva_await(uva_stream_write(c, head, (size_t)n), NULL);
  memset(chunk, 'x', sizeof chunk);
  for (size_t sent = 0; sent < BODY; sent += sizeof chunk)
    if (uva_await(uva_stream_write(c, chunk, sizeof chunk), NULL) < 0) break;
  return 0;
}

static int download(uva_http_client_t *client) {
  uva_http_request_t rq = {.url = url};
  void *v;
  int rc = uva_await(uva_http_stream_open(client, &rq), &v);
  if (rc < 0) {
    fprintf(stderr, "%s: %s (%s)\n", url, uva_strerror(rc), uva_http_last_error(client));
    return -1;
  }
  uva_http_stream_t *s = v;
  const uva_http_response_t *head = uva_http_stream_response(s);
  const char *len = uva_http_response_header(head, "Content-Length");
  printf("%s: HTTP %d, Content-Length %s\n", url, head->status, len ? len : "(none)");
  int fd = uva_await(uva_fs_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), NULL);
  static char buf[65536];
  int64_t total = 0;
  uint64_t t0 = uv_hrtime();
  while (fd >= 0 && (rc = uva_await(uva_http_stream_read(s, buf, sizeof buf), NULL)) > 0) {
    if ((rc = uva_await(uva_fs_write(fd, buf, (size_t)rc, total), NULL)) < 0) break;
    total += rc;
  }
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  if (fd >= 0) uva_await(uva_fs_close(fd), NULL);
  uva_http_stream_close(s);
  if (fd < 0 || rc != UV_EOF) {
    fprintf(stderr, "%s: %s\n", fd < 0 ? path : url, uva_strerror(fd < 0 ? fd : rc));
    return -1;
  }
  printf("wrote %lld bytes to %s in %.2f s (%.0f MB/s)\n", (long long)total, path, secs,
         (double)total / secs / 1e6);
  return (int)(total > 0 ? 0 : -1);
}

static int main_task(void *arg) {
  (void)arg;
  uva_http_client_t *client;
  uva_server_t *srv = NULL;
  static char self_url[64];
  if (url == NULL) { /* --selftest */
    if (uva_tcp_listen(&srv, "127.0.0.1", 0, 0, serve, NULL) < 0) return 1;
    snprintf(self_url, sizeof self_url, "http://127.0.0.1:%d/big", uva_server_port(srv));
    url = self_url;
    path = "/tmp/uvasync-http_stream.out";
  }
  if (uva_http_client_new(&client, NULL) < 0) return 1;
  int rc = download(client);
  uva_http_client_free(client);
  if (srv) {
    uva_await(uva_server_close(srv, 1), NULL);
    uv_stat_t *st = NULL;
    if (rc == 0 && uva_await(uva_fs_stat(path), (void **)&st) == 0 && st->st_size != BODY) rc = -1;
    uva_free(st);
    uva_await(uva_fs_unlink(path), NULL);
  }
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 3) {
    url = argv[1];
    path = argv[2];
  } else if (!(argc == 2 && strcmp(argv[1], "--selftest") == 0)) {
    fprintf(stderr, "usage: http_stream URL FILE | --selftest\n");
    return 2;
  }
  return uva_run(main_task, NULL);
}
