/* file_copy.c: copy a file chunk by chunk with awaited reads and writes.
 *
 * Shows: uva_fs_open/read/write/close are futures over libuv's uv_fs_*;
 * a task reads and writes sequentially while the loop stays free. The
 * whole-file helpers make the test data and check the copy.
 *
 * asyncio original (aiofiles):
 *   async with aiofiles.open(src, "rb") as i, aiofiles.open(dst, "wb") as o:
 *       while chunk := await i.read(65536):
 *           await o.write(chunk)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvasync.h>

#define SRC "/tmp/uvasync-file_copy.src"
#define DST "/tmp/uvasync-file_copy.dst"
#define SIZE (3 * 1024 * 1024 + 123)

static int copy(const char *from, const char *to) {
  int in = uva_await(uva_fs_open(from, O_RDONLY, 0), NULL);
  if (in < 0) return in;
  int out = uva_await(uva_fs_open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644), NULL);
  if (out < 0) {
    uva_await(uva_fs_close(in), NULL);
    return out;
  }
  static char chunk[65536];
  int rc, copied = 0;
  while ((rc = uva_await(uva_fs_read(in, chunk, sizeof chunk, -1), NULL)) > 0) {
    int w = uva_await(uva_fs_write(out, chunk, (size_t)rc, -1), NULL);
    if (w < 0) { rc = w; break; }
    copied += w;
  }
  uva_await(uva_fs_close(in), NULL);
  uva_await(uva_fs_close(out), NULL);
  return rc < 0 ? rc : copied;
}

static int main_task(void *arg) {
  (void)arg;
  char *data = malloc(SIZE);
  if (data == NULL) return UV_ENOMEM;
  for (int i = 0; i < SIZE; i++) data[i] = (char)(i * 31);
  int rc = uva_await(uva_fs_write_file(SRC, data, SIZE), NULL);
  if (rc == 0) rc = copy(SRC, DST);
  printf("copied %d bytes\n", rc);
  void *v = NULL;
  int n = rc < 0 ? rc : uva_await(uva_fs_read_file(DST, 0), &v);
  int same = n == SIZE && memcmp(((uva_bytes_t *)v)->data, data, SIZE) == 0;
  printf("copy %s the original\n", same ? "matches" : "differs from");
  uva_free(v);
  free(data);
  uva_await(uva_fs_unlink(SRC), NULL);
  uva_await(uva_fs_unlink(DST), NULL);
  return same ? 0 : 1;
}

int main(void) { return uva_run(main_task, NULL) == 0 ? 0 : 1; }
