/* Files: one future kind over uv_fs_t. Every request holds a reference on
 * its future while libuv has it (loop->jobs counts them, so a loop does not
 * close under one). Cancelling follows the header's rule for jobs: a request
 * libuv has not started is taken back (uv_cancel) and its future completes
 * UV_ECANCELED at once; one that has started completes from libuv's
 * callback with its real result, so a buffer the caller lent is never
 * written after the caller was told the operation is over, and an open or
 * a write that happened is not reported as one that did not.
 *
 * Whole-file reads and writes are small state machines over the same
 * request (open, fstat, read..., close), not tasks: no stack per call. */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>

enum { FS_PLAIN, FS_OPEN, FS_STAT, FS_SCANDIR, FS_READ_FILE, FS_WRITE_FILE };
enum { ST_OPEN, ST_FSTAT, ST_READ, ST_WRITE, ST_CLOSE };

typedef struct fsop {
  uva_future_t base;
  uv_fs_t req;
  int kind;
  bool cancel_requested;
  /* whole-file state */
  int step;
  uv_file fd;
  int err;
  char *path;
  uva_bytes_t *buf;
  size_t cap, max;
  size_t want;          /* bytes the current read asked for */
  bool regular;         /* a regular file: a short read means EOF */
  const char *wdata;
  size_t wlen, woff;
} fsop_t;

static int fs_cancel(uva_future_t *f) {
  fsop_t *o = (fsop_t *)f;
  o->cancel_requested = true;
  if (o->kind == FS_READ_FILE || o->kind == FS_WRITE_FILE) {
    /* Stop at the next step (whole_cb). The op's own close is never
     * cancelled: it would leak the fd. */
    if (o->step != ST_CLOSE) uv_cancel((uv_req_t *)&o->req);
    return 1;
  }
  /* Not started: it never will (libuv still calls back, with
   * UV_ECANCELED, and fs_done drops the request's reference then). */
  if (uv_cancel((uv_req_t *)&o->req) == 0) return uva__future_cancel_now(f);
  return 1; /* running: its real result comes */
}

static void fs_destroy(uva_future_t *f) {
  fsop_t *o = (fsop_t *)f;
  uva__free(o->path);
  uva__free(o->buf);
}

static const uva__fops_t fs_fops = {"fs", fs_cancel, fs_destroy, sizeof(fsop_t), NULL};

static fsop_t *fs_new(uva_loop_t **loopp, int kind) {
  uva_loop_t *loop = uva__loop();
  *loopp = loop;
  if (loop == NULL) return NULL;
  fsop_t *o = (fsop_t *)uva__future_alloc(loop, &fs_fops);
  if (o) {
    o->kind = kind;
    o->fd = -1;
  }
  return o;
}

/* Hand the request to libuv (rc from the uv_fs_* call). */
static uva_future_t *fs_started(fsop_t *o, int rc) {
  if (rc < 0) uv_fs_req_cleanup(&o->req); /* refused synchronously */
  return uva__future_started(&o->base, rc);
}

static void fs_done(fsop_t *o, int status, void *value) {
  uva_loop_t *loop = o->base.loop;
  if (o->base.state == UVA__PENDING)
    uva__future_complete(&o->base, status, value, value ? uva_free : NULL);
  else
    uva__free(value); /* cancelled before it started */
  loop->jobs--;
  uva_release(&o->base);
}

static int clamp(ssize_t r) { return r > INT_MAX ? INT_MAX : (int)r; }

/* uv_fs_scandir_next frees each entry as it moves on, so names are copied
 * as they come, then packed into one block the caller frees at once. */
static void *copy_dirents(uv_fs_t *req) {
  size_t n = req->result > 0 ? (size_t)req->result : 0, names = 0, i = 0;
  uv_dirent_t *tmp = uva__calloc(n ? n : 1, sizeof *tmp), ent;
  uva_dirents_t *d = NULL;
  if (tmp == NULL) return NULL;
  /* Read on to UV_EOF even past n: libuv 1.44 frees the last entry only
   * then (its req cleanup leaks it otherwise). */
  bool oom = false;
  while (uv_fs_scandir_next(req, &ent) == 0) {
    if (i == n || oom) continue;
    if ((tmp[i].name = uva__strdup(ent.name)) == NULL) {
      oom = true;
      continue;
    }
    tmp[i++].type = ent.type;
    names += strlen(ent.name) + 1;
  }
  if (!oom) d = uva__malloc(sizeof *d + i * sizeof(uv_dirent_t) + names);
  if (d) {
    char *p = (char *)&d->item[i];
    d->n = i;
    for (size_t k = 0; k < i; k++) {
      size_t len = strlen(tmp[k].name) + 1;
      memcpy(p, tmp[k].name, len);
      d->item[k].name = p;
      d->item[k].type = tmp[k].type;
      p += len;
    }
  }
  for (size_t k = 0; k < n; k++) uva__free((void *)tmp[k].name);
  uva__free(tmp);
  return d;
}

static void fs_cb(uv_fs_t *req) {
  fsop_t *o = UVA_CONTAINER_OF(req, fsop_t, req);
  ssize_t r = req->result;
  void *value = NULL;
  if (r >= 0 && o->kind == FS_STAT) {
    if ((value = uva__malloc(sizeof(uv_stat_t))) == NULL) r = UV_ENOMEM;
    else memcpy(value, &req->statbuf, sizeof(uv_stat_t));
  } else if (r >= 0 && o->kind == FS_SCANDIR) {
    if ((value = copy_dirents(req)) == NULL) r = UV_ENOMEM;
  }
  uv_fs_req_cleanup(req);
  if (o->kind == FS_OPEN && r >= 0 && (o->base.refs == 1 || o->base.state != UVA__PENDING)) {
    uv_fs_t c; /* only the request holds the future: nobody will see this fd */
    uv_fs_close(NULL, &c, (uv_file)r, NULL);
    uv_fs_req_cleanup(&c);
  }
  fs_done(o, r < 0 ? (int)r : clamp(r), value);
}

/* libuv asserts on NULL paths: refuse them here. */
#define FS_SIMPLE(kind, bad, call)                     \
  uva_loop_t *loop;                                    \
  fsop_t *o = fs_new(&loop, kind);                     \
  if (o == NULL) return loop ? NULL : uva__noloop();   \
  return fs_started(o, (bad) ? UV_EINVAL : (call))

uva_future_t *uva_fs_open(const char *path, int flags, int mode) {
  FS_SIMPLE(FS_OPEN, path == NULL, uv_fs_open(loop->uv, &o->req, path, flags, mode, fs_cb));
}
uva_future_t *uva_fs_close(uv_file fd) {
  FS_SIMPLE(FS_PLAIN, 0, uv_fs_close(loop->uv, &o->req, fd, fs_cb));
}
uva_future_t *uva_fs_read(uv_file fd, void *buf, size_t len, int64_t offset) {
  uv_buf_t b = uv_buf_init(buf, len > UINT_MAX ? UINT_MAX : (unsigned)len);
  FS_SIMPLE(FS_PLAIN, buf == NULL && len > 0, uv_fs_read(loop->uv, &o->req, fd, &b, 1, offset, fs_cb));
}
uva_future_t *uva_fs_write(uv_file fd, const void *buf, size_t len, int64_t offset) {
  uv_buf_t b = uv_buf_init((char *)buf, len > UINT_MAX ? UINT_MAX : (unsigned)len);
  FS_SIMPLE(FS_PLAIN, buf == NULL && len > 0, uv_fs_write(loop->uv, &o->req, fd, &b, 1, offset, fs_cb));
}
uva_future_t *uva_fs_stat(const char *path) {
  FS_SIMPLE(FS_STAT, path == NULL, uv_fs_stat(loop->uv, &o->req, path, fs_cb));
}
uva_future_t *uva_fs_fstat(uv_file fd) {
  FS_SIMPLE(FS_STAT, 0, uv_fs_fstat(loop->uv, &o->req, fd, fs_cb));
}
uva_future_t *uva_fs_unlink(const char *path) {
  FS_SIMPLE(FS_PLAIN, path == NULL, uv_fs_unlink(loop->uv, &o->req, path, fs_cb));
}
uva_future_t *uva_fs_rename(const char *from, const char *to) {
  FS_SIMPLE(FS_PLAIN, from == NULL || to == NULL, uv_fs_rename(loop->uv, &o->req, from, to, fs_cb));
}
uva_future_t *uva_fs_mkdir(const char *path, int mode) {
  FS_SIMPLE(FS_PLAIN, path == NULL, uv_fs_mkdir(loop->uv, &o->req, path, mode, fs_cb));
}
uva_future_t *uva_fs_rmdir(const char *path) {
  FS_SIMPLE(FS_PLAIN, path == NULL, uv_fs_rmdir(loop->uv, &o->req, path, fs_cb));
}
uva_future_t *uva_fs_scandir(const char *path) {
  FS_SIMPLE(FS_SCANDIR, path == NULL, uv_fs_scandir(loop->uv, &o->req, path, 0, fs_cb));
}
uva_future_t *uva_fs_fsync(uv_file fd) {
  FS_SIMPLE(FS_PLAIN, 0, uv_fs_fsync(loop->uv, &o->req, fd, fs_cb));
}
uva_future_t *uva_fs_ftruncate(uv_file fd, int64_t length) {
  FS_SIMPLE(FS_PLAIN, 0, uv_fs_ftruncate(loop->uv, &o->req, fd, length, fs_cb));
}
uva_future_t *uva_fs_copyfile(const char *from, const char *to, int flags) {
  FS_SIMPLE(FS_PLAIN, from == NULL || to == NULL, uv_fs_copyfile(loop->uv, &o->req, from, to, flags, fs_cb));
}
uva_future_t *uva_fs_sendfile(uv_file out_fd, uv_file in_fd, int64_t in_offset, size_t len) {
  FS_SIMPLE(FS_PLAIN, 0, uv_fs_sendfile(loop->uv, &o->req, out_fd, in_fd, in_offset, len, fs_cb));
}

/* ----------------------------------------------------------- whole files */

static void whole_step(fsop_t *o);

static void whole_cb(uv_fs_t *req) {
  fsop_t *o = UVA_CONTAINER_OF(req, fsop_t, req);
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (o->step == ST_CLOSE) {
    o->fd = -1;
  } else if (r < 0) {
    o->err = (int)r;
  } else if (o->step == ST_OPEN) {
    o->fd = (uv_file)r;
    o->step = o->kind == FS_READ_FILE ? ST_FSTAT : ST_WRITE;
  } else if (o->step == ST_FSTAT) {
    /* /proc and pipes report 0: start small and grow. */
    uint64_t size = req->statbuf.st_size;
    if (o->max && size > o->max) o->err = UV_EFBIG;
    /* Room for one byte more than the size: the first read comes back
     * short, which on a regular file is EOF, so no extra read is needed. */
    /* (/proc files say size 0 and hand out a page per read: read those
     * to the end.) */
    o->regular = (req->statbuf.st_mode & S_IFMT) == S_IFREG && size > 0;
    o->cap = (size_t)size + 2 < 4096 ? 4096 : (size_t)size + 2;
    o->step = ST_READ;
  } else if (o->step == ST_READ) {
    o->buf->len += (size_t)r;
    if (r == 0 || (o->regular && (size_t)r < o->want)) o->step = ST_CLOSE; /* EOF */
  } else if (o->step == ST_WRITE) {
    o->woff += (size_t)r;
    if (o->woff == o->wlen) o->step = ST_CLOSE;
  }
  /* Cancelled: skip what is left, but a cancel that comes once the data is
   * through (only the close left) gets the real result. */
  if (o->cancel_requested && o->err == 0 && o->step != ST_CLOSE) o->err = UV_ECANCELED;
  whole_step(o);
}

/* Issue the next request, or finish. */
static void whole_step(fsop_t *o) {
  uv_loop_t *uv = o->base.loop->uv;
  int rc = 0;
  if (o->err && o->fd >= 0) o->step = ST_CLOSE;
  if (o->err && o->fd < 0) {
    fs_done(o, o->err, NULL);
    return;
  }
  switch (o->step) {
    case ST_OPEN:
      rc = o->kind == FS_READ_FILE
               ? uv_fs_open(uv, &o->req, o->path, O_RDONLY, 0, whole_cb)
               : uv_fs_open(uv, &o->req, o->path, O_WRONLY | O_CREAT | O_TRUNC, 0644, whole_cb);
      break;
    case ST_FSTAT:
      rc = uv_fs_fstat(uv, &o->req, o->fd, whole_cb);
      break;
    case ST_READ: {
      size_t len = o->buf ? o->buf->len : 0;
      if (o->buf == NULL || len + 1 >= o->cap) {
        size_t cap = o->buf ? o->cap * 2 : o->cap;
        if (o->max && cap > o->max + 1) cap = o->max + 1;
        if (o->buf && len + 1 >= cap) { /* full at max_len and not at EOF */
          o->err = UV_EFBIG;
          whole_step(o);
          return;
        }
        uva_bytes_t *b = uva__realloc(o->buf, sizeof *b + cap);
        if (b == NULL) {
          o->err = UV_ENOMEM;
          whole_step(o);
          return;
        }
        if (o->buf == NULL) b->len = 0;
        o->buf = b;
        o->cap = cap;
      }
      size_t want = o->cap - 1 - o->buf->len;
      o->want = want > UINT_MAX ? UINT_MAX : want;
      uv_buf_t ub = uv_buf_init(o->buf->data + o->buf->len, (unsigned)o->want);
      rc = uv_fs_read(uv, &o->req, o->fd, &ub, 1, -1, whole_cb);
      break;
    }
    case ST_WRITE: {
      if (o->wlen == 0) {
        o->step = ST_CLOSE;
        whole_step(o);
        return;
      }
      size_t want = o->wlen - o->woff;
      uv_buf_t ub = uv_buf_init((char *)o->wdata + o->woff,
                                want > UINT_MAX ? UINT_MAX : (unsigned)want);
      rc = uv_fs_write(uv, &o->req, o->fd, &ub, 1, -1, whole_cb);
      break;
    }
    case ST_CLOSE:
      if (o->fd < 0) { /* closed: done */
        if (o->err) {
          fs_done(o, o->err, NULL);
        } else if (o->kind == FS_READ_FILE) {
          uva_bytes_t *b = o->buf;
          o->buf = NULL;
          b->data[b->len] = '\0';
          fs_done(o, clamp((ssize_t)b->len), b);
        } else {
          fs_done(o, 0, NULL);
        }
        return;
      }
      rc = uv_fs_close(uv, &o->req, o->fd, whole_cb);
      break;
  }
  if (rc < 0) { /* refused synchronously */
    uv_fs_req_cleanup(&o->req);
    if (o->step == ST_CLOSE) o->fd = -1; /* nothing more we can do */
    o->err = o->err ? o->err : rc;
    whole_step(o);
  }
}

static uva_future_t *whole_start(int kind, const char *path, size_t max, const void *data,
                                 size_t len) {
  uva_loop_t *loop;
  fsop_t *o = fs_new(&loop, kind);
  if (o == NULL) return loop ? NULL : uva__noloop();
  if (path == NULL || (data == NULL && len)) {
    uva__future_complete(&o->base, UV_EINVAL, NULL, NULL);
    return &o->base;
  }
  if ((o->path = uva__strdup(path)) == NULL) {
    uva_release(&o->base);
    return NULL;
  }
  o->max = max;
  o->wdata = data;
  o->wlen = len;
  o->step = ST_OPEN;
  o->base.refs++; /* the state machine's, until fs_done */
  loop->jobs++;
  whole_step(o);
  return &o->base;
}

uva_future_t *uva_fs_read_file(const char *path, size_t max_len) {
  return whole_start(FS_READ_FILE, path, max_len, NULL, 0);
}

uva_future_t *uva_fs_write_file(const char *path, const void *data, size_t len) {
  return whole_start(FS_WRITE_FILE, path, 0, data, len);
}
