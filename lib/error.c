/* One strerror for libuv's codes and ours. */
#include "internal.h"

#define UVA_ERRORS(X)                                              \
  X(UVA_ENOTASK, "operation must be called from inside a task")    \
  X(UVA_EPENDING, "future is not done yet")                        \
  X(UVA_ESHUTDOWN, "queue is shut down")                           \
  X(UVA_EEMPTY, "queue is empty")                                  \
  X(UVA_EFULL, "queue is full")                                    \
  X(UVA_EBROKEN, "barrier is broken")                              \
  X(UVA_EBOUND, "bounded semaphore released too many times")       \
  X(UVA_ENOTLOCKED, "lock is not held")                            \
  X(UVA_ENOLOOP, "no uvasync loop on this thread")                 \
  X(UVA_ECLOSED, "loop or object is closed")                       \
  X(UVA_ELIMIT, "delimiter not found within the limit")           \
  X(UVA_EDEADLK, "a task cannot await itself or a task awaiting it")

const char *uva_strerror(int err) {
#define X(code, msg) \
  if (err == code) return msg;
  UVA_ERRORS(X)
#undef X
  if (err >= 0) return "success";
  /* uv_strerror() leaks a string for unknown codes; the _r form does not. */
  static _Thread_local char buf[96];
  return uv_strerror_r(err, buf, sizeof buf);
}

const char *uva_err_name(int err) {
#define X(code, msg) \
  if (err == code) return #code;
  UVA_ERRORS(X)
#undef X
  if (err >= 0) return "OK";
  static _Thread_local char buf[64];
  return uv_err_name_r(err, buf, sizeof buf);
}
