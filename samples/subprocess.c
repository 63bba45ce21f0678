/* subprocess.c: run a program, feed its stdin, read its stdout, await exit.
 *
 * Shows: uva_process_spawn with piped stdio; the pipes are uvasync streams,
 * so writing, reading and waiting for the exit are all awaits.
 *
 * asyncio original:
 *   p = await asyncio.create_subprocess_exec("sort", stdin=PIPE, stdout=PIPE)
 *   out, _ = await p.communicate(b"pear\napple\nfig\n")
 *   print(out.decode(), p.returncode)
 */
#include <stdio.h>
#include <string.h>
#include <uvasync.h>

static int main_task(void *arg) {
  (void)arg;
  char *args[] = {"sort", NULL};
  uva_process_opts_t o = {.file = "sort", .args = args,
                          .stdio = {UVA_STDIO_PIPE, UVA_STDIO_PIPE, UVA_STDIO_INHERIT}};
  uva_process_t *p;
  int rc = uva_process_spawn(&p, &o);
  if (rc < 0) return rc;
  const char *in = "pear\napple\nfig\n";
  uva_stream_t *child_in = uva_process_stdio(p, 0), *child_out = uva_process_stdio(p, 1);
  uva_await(uva_stream_write(child_in, in, strlen(in)), NULL);
  uva_await(uva_stream_shutdown(child_in), NULL); /* EOF: sort may answer now */
  char out[256];
  size_t len = 0;
  int r;
  while ((r = uva_await(uva_stream_read(child_out, out + len, sizeof out - 1 - len), NULL)) > 0)
    len += (size_t)r;
  out[len] = '\0';
  int status = uva_await(uva_process_wait(p), NULL);
  uva_process_free(p);
  printf("%sexit status %d\n", out, status);
  return status == 0 && strcmp(out, "apple\nfig\npear\n") == 0 ? 0 : 1;
}

int main(void) { return uva_run(main_task, NULL) == 0 ? 0 : 1; }
