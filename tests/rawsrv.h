/* A tiny blocking HTTP server on a pthread (127.0.0.1, ephemeral port) for
 * answers httpd.c cannot give. handler(fd, request_head) writes the answer
 * and returns 1 to keep the connection, 0 to close it. */
#ifndef RAWSRV_H
#define RAWSRV_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*raw_handler_fn)(int fd, const char *head, size_t head_len);

typedef struct rawsrv {
  int lfd, port;
  raw_handler_fn fn;
  pthread_t th;
} rawsrv_t;

static void raw_write(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}
static void raw_puts(int fd, const char *s) { raw_write(fd, s, strlen(s)); }

/* Read until "\r\n\r\n"; returns head length (0 on EOF). */
static size_t raw_read_head(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return 0;
    n++;
    buf[n] = 0;
    if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) return n;
  }
  return 0;
}

typedef struct conn_arg {
  rawsrv_t *s;
  int fd;
} conn_arg_t;

static void *raw_conn_main(void *arg) {
  conn_arg_t *a = arg;
  char head[8192];
  for (;;) {
    size_t n = raw_read_head(a->fd, head, sizeof head);
    if (n == 0) break;
    if (!a->s->fn(a->fd, head, n)) break;
  }
  close(a->fd);
  free(a);
  return NULL;
}

static void *raw_accept_main(void *arg) {
  rawsrv_t *s = arg;
  for (;;) {
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    conn_arg_t *a = malloc(sizeof *a);
    a->s = s;
    a->fd = fd;
    pthread_t t;
    pthread_create(&t, NULL, raw_conn_main, a);
    pthread_detach(t);
  }
}

static rawsrv_t *rawsrv_start(raw_handler_fn fn) {
  rawsrv_t *s = calloc(1, sizeof *s);
  s->fn = fn;
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(s->lfd, (struct sockaddr *)&a, sizeof a);
  listen(s->lfd, 16);
  socklen_t l = sizeof a;
  getsockname(s->lfd, (struct sockaddr *)&a, &l);
  s->port = ntohs(a.sin_port);
  pthread_create(&s->th, NULL, raw_accept_main, s);
  pthread_detach(s->th);
  return s;
}

static const char *rawsrv_url(rawsrv_t *s, const char *path) {
  static char b[8][128];
  static int i;
  i = (i + 1) % 8;
  snprintf(b[i], sizeof b[i], "http://127.0.0.1:%d%s", s->port, path);
  return b[i];
}
#endif
