/* DNS: futures over uv_getaddrinfo / uv_getnameinfo (libuv's pool), built
 * as fs.c builds its requests: a reference and a loop->jobs count while
 * libuv has the request, completion only from libuv's callback. Cancelling
 * takes a queued request out (libuv calls back UV_EAI_CANCELED); a running
 * one completes UV_ECANCELED when it ends, its result freed. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct dnsop {
  uva_future_t base;
  union {
    uv_getaddrinfo_t ai;
    uv_getnameinfo_t ni;
  } req;
  bool cancel_requested;
} dnsop_t;

static int dns_cancel(uva_future_t *f) {
  dnsop_t *o = (dnsop_t *)f;
  o->cancel_requested = true;
  uv_cancel((uv_req_t *)&o->req);
  return 1;
}

static const uva__fops_t dns_fops = {"dns", dns_cancel, NULL, sizeof(dnsop_t), NULL};

static void free_addrinfo(void *p) { uv_freeaddrinfo(p); }

static void dns_done(dnsop_t *o, int status, void *value, uva_free_fn free_fn) {
  uva_loop_t *loop = o->base.loop;
  if (status == UV_EAI_CANCELED || (o->cancel_requested && status >= 0)) {
    if (value) free_fn(value);
    status = UV_ECANCELED;
    value = NULL;
  }
  uva__future_complete(&o->base, status, value, value ? free_fn : NULL);
  loop->jobs--;
  uva_release(&o->base);
}

static dnsop_t *dns_new(uva_loop_t *loop) {
  return (dnsop_t *)uva__future_alloc(loop, &dns_fops);
}

static uva_future_t *dns_started(dnsop_t *o, int rc) { return uva__future_started(&o->base, rc); }

static void on_addrinfo(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dnsop_t *o = UVA_CONTAINER_OF(req, dnsop_t, req.ai);
  int n = 0;
  if (status == 0)
    for (struct addrinfo *a = res; a; a = a->ai_next) n++;
  dns_done(o, status < 0 ? status : n, res, free_addrinfo);
}

uva_future_t *uva_getaddrinfo(const char *host, const char *service,
                              const struct addrinfo *hints) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (host == NULL && service == NULL) return uva__future_done(loop, UV_EINVAL);
  dnsop_t *o = dns_new(loop);
  if (o == NULL) return NULL;
  return dns_started(o, uv_getaddrinfo(loop->uv, &o->req.ai, on_addrinfo, host, service, hints));
}

static void on_nameinfo(uv_getnameinfo_t *req, int status, const char *host,
                        const char *service) {
  dnsop_t *o = UVA_CONTAINER_OF(req, dnsop_t, req.ni);
  uva_nameinfo_t *v = NULL;
  if (status == 0) {
    if ((v = uva__malloc(sizeof *v)) == NULL) {
      status = UV_ENOMEM;
    } else {
      snprintf(v->host, sizeof v->host, "%s", host ? host : "");
      snprintf(v->service, sizeof v->service, "%s", service ? service : "");
    }
  }
  dns_done(o, status, v, uva_free);
}

uva_future_t *uva_getnameinfo(const struct sockaddr *addr, int flags) {
  uva_loop_t *loop = uva__loop();
  if (loop == NULL) return uva__noloop();
  if (addr == NULL || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return uva__future_done(loop, UV_EINVAL);
  dnsop_t *o = dns_new(loop);
  if (o == NULL) return NULL;
  return dns_started(o, uv_getnameinfo(loop->uv, &o->req.ni, on_nameinfo, addr, flags));
}
