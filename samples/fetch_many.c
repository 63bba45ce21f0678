/* fetch_many.c: fetch several URLs at once and collect the responses.
 *
 * Shows: uva_http_get() starts a request on a client session (one curl
 * multi handle) and returns a future; uva_gather() waits for them all. The
 * pages answer after 100-500 ms: fetched together they take about as long
 * as the slowest one, not the sum. A tiny local server (uva_tcp_listen)
 * stands in for the web, so the sample runs offline.
 *
 * asyncio original (aiohttp):
 *   async with aiohttp.ClientSession() as s:
 *       pages = await asyncio.gather(*(fetch(s, u) for u in urls))
 */
#include <stdio.h>
#include <string.h>
#include <uvasync.h>

#define N 5

/* The stand-in web: GET /page/K answers after K*100 ms. */
static int serve(uva_stream_t *c, void *arg) {
  (void)arg;
  void *v;
  while (uva_await(uva_stream_read_until(c, "\r\n\r\n", 4, 0), &v) > 0) {
    int k = 0;
    sscanf(((uva_bytes_t *)v)->data, "GET /page/%d", &k);
    uva_free(v);
    uva_await(uva_sleep((uint64_t)k * 100), NULL);
    char resp[160], body[64];
    int blen = snprintf(body, sizeof body, "<title>page %d</title>\n", k);
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", blen, body);
    if (uva_await(uva_stream_write(c, resp, (size_t)n), NULL) < 0) break;
  }
  return 0;
}

static int main_task(void *arg) {
  (void)arg;
  uva_server_t *srv;
  uva_http_client_t *client;
  if (uva_tcp_listen(&srv, "127.0.0.1", 0, 0, serve, NULL) < 0) return 1;
  if (uva_http_client_new(&client, NULL) < 0) return 1;

  char urls[N][64];
  uva_future_t *fs[N];
  for (int i = 0; i < N; i++) {
    snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d/page/%d", uva_server_port(srv), N - i);
    fs[i] = uva_http_get(client, urls[i]);
  }
  uint64_t t0 = uv_hrtime();
  void *v;
  int rc = uva_await(uva_gather(fs, N, UVA_RETURN_EXCEPTIONS), &v);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  int ok = rc == 0;
  for (size_t i = 0; ok && i < N; i++) {
    uva_outcome_t *o = &((uva_results_t *)v)->item[i];
    uva_http_response_t *r = o->value;
    if (o->status < 0) {
      printf("%s: %s\n", urls[i], uva_strerror(o->status));
      ok = 0;
    } else {
      printf("%s: %d, %zu bytes, %.2fs\n", urls[i], r->status, r->body_len, r->total_us / 1e6);
      ok = r->status == 200;
    }
  }
  printf("%d pages in %.2fs (the slowest takes 0.5s)\n", N, secs);
  uva_results_free(v);
  uva_http_client_free(client);
  uva_await(uva_server_close(srv, 1), NULL);
  return ok && secs < 1.2 ? 0 : 1; /* one after another would take 1.5s */
}

int main(void) { return uva_run(main_task, NULL) == 0 ? 0 : 1; }
