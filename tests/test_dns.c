/* DNS: getaddrinfo / getnameinfo futures, errors, cancellation. */
#include "helpers.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

TASK_TEST(test_dns_getaddrinfo_localhost) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  void *v;
  int n = uva_await(uva_getaddrinfo("localhost", "80", &hints), &v);
  ck_assert_int_ge(n, 1);
  struct addrinfo *ai = v;
  int count = 0, loopback = 0;
  for (struct addrinfo *a = ai; a; a = a->ai_next, count++) {
    ck_assert_int_eq(a->ai_family, AF_INET);
    struct sockaddr_in *sin = (struct sockaddr_in *)a->ai_addr;
    ck_assert_int_eq(ntohs(sin->sin_port), 80);
    if (ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK) loopback = 1;
  }
  ck_assert_int_eq(count, n);
  ck_assert_int_eq(loopback, 1);
  uv_freeaddrinfo(ai);
  /* an unread result is freed by the future; NULL hints */
  ck_assert_int_ge(uva_await(uva_getaddrinfo("127.0.0.1", NULL, NULL), NULL), 1);
  return 0;
}

TASK_TEST(test_dns_getaddrinfo_errors) {
  int rc = uva_await(uva_getaddrinfo("no-such-host.invalid", "80", NULL), NULL);
  ck_assert_int_lt(rc, 0);
  ck_assert_int_ne(rc, UV_ECANCELED);
  ck_assert(strncmp(uva_err_name(rc), "EAI_", 4) == 0);
  ck_assert_int_eq(uva_await(uva_getaddrinfo(NULL, NULL, NULL), NULL), UV_EINVAL);
  return 0;
}

TASK_TEST(test_dns_getnameinfo) {
  struct sockaddr_in sin;
  ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 8080, &sin), 0);
  void *v;
  ck_assert_int_eq(uva_await(uva_getnameinfo((struct sockaddr *)&sin,
                                             NI_NUMERICHOST | NI_NUMERICSERV), &v), 0);
  uva_nameinfo_t *ni = v;
  ck_assert_str_eq(ni->host, "127.0.0.1");
  ck_assert_str_eq(ni->service, "8080");
  uva_free(ni);
  ck_assert_int_eq(uva_await(uva_getnameinfo((struct sockaddr *)&sin, 0), &v), 0);
  ck_assert(strlen(((uva_nameinfo_t *)v)->host) > 0); /* "localhost" usually */
  uva_free(v);
  struct sockaddr_in6 sin6;
  ck_assert_int_eq(uv_ip6_addr("::1", 443, &sin6), 0);
  ck_assert_int_eq(uva_await(uva_getnameinfo((struct sockaddr *)&sin6,
                                             NI_NUMERICHOST | NI_NUMERICSERV), &v), 0);
  ck_assert_str_eq(((uva_nameinfo_t *)v)->host, "::1");
  uva_free(v);
  ck_assert_int_eq(uva_await(uva_getnameinfo(NULL, 0), NULL), UV_EINVAL);
  struct sockaddr bad = {.sa_family = AF_UNIX};
  ck_assert_int_eq(uva_await(uva_getnameinfo(&bad, 0), NULL), UV_EINVAL);
  return 0;
}

/* Many requests, cancelled at once (most are still queued behind libuv's 4
 * pool threads) and after a few turns: each completes, nothing leaks. */
TASK_TEST(test_dns_cancel_leaks_nothing) {
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", 80, &sin);
  for (int round = 0; round < 3; round++) {
    uva_future_t *fs[64];
    for (int i = 0; i < 64; i++)
      fs[i] = i % 2 ? uva_getaddrinfo("localhost", "80", NULL)
                    : uva_getnameinfo((struct sockaddr *)&sin, NI_NUMERICHOST);
    for (int y = 0; y < round; y++) uva_yield();
    int cancelled = 0;
    for (int i = 0; i < 64; i++) uva_cancel(fs[i]);
    for (int i = 0; i < 64; i++) {
      int rc = uva_await(fs[i], NULL);
      ck_assert(rc >= 0 || rc == UV_ECANCELED);
      cancelled += rc == UV_ECANCELED;
    }
    ck_assert_int_gt(cancelled, 0);
  }
  /* released unawaited, and a request still in flight when main returns */
  uva_release(uva_getaddrinfo("localhost", NULL, NULL));
  return 0;
}

static Suite *suite(void) {
  Suite *s = suite_create("dns");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_dns_getaddrinfo_localhost);
  tcase_add_test(tc, test_dns_getaddrinfo_errors);
  tcase_add_test(tc, test_dns_getnameinfo);
  tcase_add_test(tc, test_dns_cancel_leaks_nothing);
  suite_add_tcase(s, tc);
  return s;
}
TEST_MAIN(suite)
