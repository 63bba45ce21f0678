/* uvasync: Python's asyncio, in C, on libuv.
 *
 * ======================================================================
 * OWNERSHIP: the rules every function in this header follows
 * ======================================================================
 *
 * 1. Futures are reference counted. A function that returns a
 *    `uva_future_t *` hands the caller ONE reference. The caller gives it up
 *    in exactly one of three ways:
 *      - uva_await(f, ...)            consumes it, whatever the outcome;
 *      - passing f to a function documented as "consumes f" (gather,
 *        wait_for, shield, as_completed, ...): it consumes it even when it
 *        fails;
 *      - uva_release(f).
 *    To keep using a future after handing it off, take another reference
 *    with uva_ref(f) first. The one-liner `uva_await(uva_sleep(100), NULL)`
 *    therefore leaks nothing, on any path.
 *    Functions documented as "borrows" (uva_wait, uva_cancel, the getters)
 *    never change the count.
 *
 * 2. A future's result is (status, value, free_fn). status >= 0 is success
 *    (a task's non-negative return value); status < 0 is an error code.
 *    The value belongs to the future until someone takes it:
 *    uva_await(f, &out) with out != NULL moves the value to the caller, who
 *    then frees it (free_fn is no longer called). With out == NULL, or when
 *    the last reference is dropped with the value still inside, the future
 *    calls free_fn(value). A result never leaks because nobody read it.
 *
 * 3. A function that takes a value or an item "takes ownership" takes it
 *    even when it fails: on failure it frees it with the free_fn you gave.
 *    The one exception is the *_nowait functions: they take the item only
 *    when they succeed, so a caller told "full" still has it to retry.
 *
 * 4. Constructors that cannot allocate return NULL. Every function that
 *    takes a future treats NULL as an allocation failure (UV_ENOMEM), so
 *    `uva_await(uva_sleep(10), NULL)` returns UV_ENOMEM instead of crashing.
 *    Bad arguments to a future constructor give a future that is already
 *    failed with UV_EINVAL, so the error arrives where the result would.
 *    Called on a thread with no loop, a future constructor gives a future
 *    failed with UVA_ENOLOOP: one static future that belongs to no loop
 *    and can be awaited, read and released on any thread (uva_await
 *    returns UVA_ENOLOOP), and handed to a combinator or uva_future_on_done
 *    on a thread that has a loop (a child that failed). Object constructors (uva_lock_new...) return
 *    NULL there, as for no memory.
 *
 * 5. Library objects (loops, locks, queues, ...) are created by *_new and
 *    freed by the matching *_free; the caller owns them. `void *arg` and
 *    `void *data` pointers are never touched by the library.
 *
 * 6. One loop per thread. Every object belongs to the loop current on the
 *    thread that created it and must only be used on that thread; the
 *    *_threadsafe functions are the only entry points from other threads.
 *
 * ERRORS: negative errno-style codes. libuv's own codes where one fits
 * (UV_ECANCELED, UV_ETIMEDOUT, UV_ENOMEM, UV_EINVAL, ...) plus the UVA_E*
 * codes below. uva_strerror() describes any of them.
 *
 * TASKS AND CANCELLATION (asyncio's one-shot CancelledError):
 * uva_cancel(task) makes the await in progress return UV_ECANCELED (or, if
 * the task is not suspended, its next await that has to wait: awaiting a
 * future that is already done hands over its result, as in asyncio, where
 * the cancel is thrown at the next suspension). The request is delivered once;
 * later awaits work normally so the task can clean up (they may themselves
 * await). A task that returns while a cancel is still undelivered ends
 * cancelled, as in asyncio (except a late cancel, below). Cancelling a task
 * that has not started yet completes it cancelled without running it. A
 * task awaiting itself (directly or through tasks awaiting each other)
 * gets UVA_EDEADLK instead of waiting forever.
 *
 * CANCELLATION LOSES NOTHING. A cancel can arrive after what the task
 * awaits has completed but before the task has resumed to see it. Then
 * exactly one of two things happens:
 *  - The hand-off is undone, nothing is consumed, and the await returns
 *    UV_ECANCELED (asyncio's outcome): an item handed to a queue getter
 *    goes back where it would be had it never been handed out (ahead of
 *    the items put after it; or to the next getter); a
 *    putter's item comes out of the queue again if no getter took it (and
 *    is freed as a cancelled put's item is); a lock or a semaphore permit
 *    goes on to the next waiter; a condition waiter's wake-up goes to the
 *    next waiter (it still returns holding the lock).
 *  - Or it cannot be undone (a file was written, a job ran, a response
 *    arrived, a sleep ended, a barrier round passed, the put item was
 *    taken already, the object was freed): the operation happened, and the
 *    await returns its result. The cancel is then late: it is delivered at
 *    the task's next await that suspends, but a task that returns before
 *    that ends with its own result, not cancelled, because that result
 *    reports work that was done (asyncio would raise CancelledError at the
 *    await and lose the result).
 * Work that cannot be stopped once it runs (to_thread jobs, file requests)
 * completes with its real outcome when cancelled while running; wait_for
 * returns a result that arrived while it was cancelling. So a caller never
 * sees "cancelled" for an operation that happened, and never loses an item,
 * a permit or a wake-up to a cancel.
 */
#ifndef UVASYNC_H
#define UVASYNC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UVASYNC_VERSION_MAJOR 0
#define UVASYNC_VERSION_MINOR 1
#define UVASYNC_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

#define UVA_ECANCELED UV_ECANCELED /* the operation was cancelled */
#define UVA_ETIMEDOUT UV_ETIMEDOUT /* a deadline passed */
#define UVA_ENOTASK (-30001)       /* a suspending call made outside a task */
#define UVA_EPENDING (-30002)      /* the future is not done yet */
#define UVA_ESHUTDOWN (-30003)     /* the queue was shut down */
#define UVA_EEMPTY (-30004)        /* get_nowait on an empty queue */
#define UVA_EFULL (-30005)         /* put_nowait on a full queue */
#define UVA_EBROKEN (-30006)       /* the barrier is broken */
#define UVA_EBOUND (-30007)        /* bounded semaphore released too often */
#define UVA_ENOTLOCKED (-30008)    /* release of a lock that is not held */
#define UVA_ENOLOOP (-30009)       /* no uvasync loop on this thread */
#define UVA_ECLOSED (-30010)       /* the loop is closing or closed */
#define UVA_ELIMIT (-30011)        /* read_until: no delimiter within the limit */
#define UVA_EDEADLK (-30012)       /* a task awaited itself (or a task awaiting it) */

/* Message for any code above or any libuv code. Never NULL; static. */
const char *uva_strerror(int err);
/* Short name ("UV_ECANCELED", "UVA_ENOTASK"...). Never NULL; static. */
const char *uva_err_name(int err);

/* ----------------------------------------------------------------- types */

typedef struct uva_loop uva_loop_t;
typedef struct uva_future uva_future_t;

/* A task body. Runs on its own stack as plain sequential code. Return a
 * non-negative value for success (it becomes the task's status) or a
 * negative error code. */
typedef int (*uva_task_fn)(void *arg);
/* Frees a result value or a queue item. */
typedef void (*uva_free_fn)(void *value);
/* Done callback: runs on the loop, from the ready queue, never inline. */
typedef void (*uva_done_fn)(uva_future_t *f, void *data);

/* ------------------------------------------------------------------ loop */

/* asyncio.run(): make a loop on this thread, run main(arg) as a task until
 * it returns, then cancel every task still running and wait for them, and
 * close the loop. SIGINT (Ctrl-C) cancels main once; a second SIGINT kills
 * the process the default way. Returns main's status (negative error code
 * if it failed or was cancelled), or UV_EBUSY if this thread already has a
 * loop, UV_ENOMEM, or UV_EINVAL if main is NULL. */
int uva_run(uva_task_fn main, void *arg);
/* Options of uva_run_opts. Zero-initialise it (designated initialisers) and
 * set what you need: a zero field keeps the default. */
typedef struct uva_run_opts {
  /* Stack of every task main spawns, as uva_loop_set_stack_size (default
   * 256 KiB, of which the lowest 16 KiB are the guard gap). */
  size_t stack_size;
  /* Stack of the main task itself (default: stack_size). Deep recursion in
   * main, which a task overflow report points to, needs this one. */
  size_t main_stack_size;
} uva_run_opts_t;
/* uva_run with options (opts may be NULL: uva_run). Returns as uva_run, or
 * UV_EINVAL when a size is out of uva_loop_set_stack_size's range. */
int uva_run_opts(uva_task_fn main, void *arg, const uva_run_opts_t *opts);

/* Make a loop with its own uv_loop_t. It becomes this thread's current loop.
 * The first loop of a process also opens /dev/null on any of the
 * descriptors 0, 1, 2 that is closed, so that no socket takes their
 * numbers (uva_run does this too). Returns 0, UV_EBUSY (this thread has a
 * loop), UV_ENOMEM, or a libuv code. */
int uva_loop_new(uva_loop_t **out);
/* Attach to a uv_loop_t the application already runs (the caller keeps
 * owning and running it). uvasync adds a few handles to it: unreferenced
 * while there is nothing to do, referenced while tasks are ready or sleeping.
 * Work is done from those handles' callbacks, so plain uv_run(uv, ...) drives
 * it. Returns as uva_loop_new. */
int uva_loop_attach(uva_loop_t **out, uv_loop_t *uv);
/* The uv_loop_t underneath (borrowed). */
uv_loop_t *uva_loop_uv(uva_loop_t *loop);
/* This thread's loop, or NULL. */
uva_loop_t *uva_loop_current(void);
/* loop.run_until_complete(f): run the loop until f is done. Borrows f.
 * Returns f's status. UVA_ENOTASK-style misuse: called from inside a task or
 * a loop callback (UV_EBUSY), f NULL (UV_ENOMEM), f of another loop
 * (UV_EINVAL). */
int uva_loop_run_until(uva_loop_t *loop, uva_future_t *f);
/* Cancel every task still running, run the loop until they end, release
 * what the loop holds and free it. For an attached loop, the uv_loop_t
 * itself is left open for its owner (its handles are closed and run once).
 * Returns 0, or UV_EBUSY when called from inside the loop. */
int uva_loop_close(uva_loop_t *loop);
/* Per-loop tuning. stack_size: bytes of stack per task, rounded up to pages
 * (default 256 KiB, minimum 32 KiB, maximum 1 GiB; the lowest 16 KiB are a
 * guard gap, see README "Stacks"). Affects tasks spawned afterwards. A task
 * that overflows its stack is reported on stderr by name, with its size,
 * and the process aborts (SIGABRT). Returns 0 or UV_EINVAL. */
int uva_loop_set_stack_size(uva_loop_t *loop, size_t stack_size);
/* How many finished tasks' stacks keep their memory for reuse (default
 * 262144). Stacks freed beyond that give their pages back to the kernel. */
int uva_loop_set_stack_cache(uva_loop_t *loop, size_t stacks);
/* Milliseconds of loop time (uv_now). */
uint64_t uva_now(void);

/* --------------------------------------------------------------- futures */

/* A pending future on the current loop, for callback-style producers.
 * NULL on ENOMEM. */
uva_future_t *uva_future_new(void);
/* A future already done with status (>= 0) or failed (< 0). NULL on
 * ENOMEM; UVA_ENOLOOP instead of status on a thread with no loop. */
uva_future_t *uva_future_done_with(int status);

/* Complete f with success: status >= 0, value (may be NULL) and the free_fn
 * that frees it. Takes ownership of value (rule 3). Waiters run later, from
 * the ready queue. Returns 0, UV_EINVAL (status < 0 or f done already: the
 * value is freed). Borrows f. */
int uva_future_resolve(uva_future_t *f, int status, void *value,
                       uva_free_fn free_fn);
/* Complete f with error err (< 0). Returns 0 or UV_EINVAL. Borrows f. */
int uva_future_fail(uva_future_t *f, int err);

/* Request cancellation. Borrows f. For a plain future or a sleep it
 * completes f with UV_ECANCELED now; for a task, see "TASKS AND
 * CANCELLATION"; for combinators, they cancel what they wait on and finish
 * when that has finished. Returns 1 if a request was made, 0 if f was done
 * already (asyncio's Future.cancel() bool). NULL gives 0. */
int uva_cancel(uva_future_t *f);

int uva_future_is_done(const uva_future_t *f);       /* 1 or 0 */
int uva_future_is_cancelled(const uva_future_t *f);  /* 1 or 0 */
/* The status: >= 0 success, < 0 error, UVA_EPENDING while pending. */
int uva_future_status(const uva_future_t *f);
/* The value (borrowed; still owned by f). NULL if none or taken. */
void *uva_future_value(const uva_future_t *f);
/* Move the value out: the caller owns it now and frees it. */
void *uva_future_take(uva_future_t *f);

/* Add one reference; returns f. */
uva_future_t *uva_ref(uva_future_t *f);
/* Drop one reference. At zero the future is freed, and its value with its
 * free_fn. A pending future nobody can complete any more is freed too. NULL
 * is ignored. */
void uva_release(uva_future_t *f);

/* Call fn(f, data) when f is done: from the ready queue on a later loop
 * turn, never inline (also when f is done already). The registration holds a
 * reference on f until fn has run. The no-loop future (rule 4) runs fn on
 * this thread's loop. Returns 0, UV_EINVAL (fn NULL), UV_ENOMEM, or
 * UVA_ENOLOOP (neither f nor this thread has a loop). */
int uva_future_on_done(uva_future_t *f, uva_done_fn fn, void *data);
/* Remove registrations of (fn, data) that have not run yet. Returns how many
 * were removed. */
int uva_future_off_done(uva_future_t *f, uva_done_fn fn, void *data);

/* ----------------------------------------------------------------- tasks */

/* Suspend the current task until f is done. Consumes f. Returns f's status;
 * if out is not NULL, *out receives f's value and the caller owns it (NULL
 * if none or on error). See "TASKS AND CANCELLATION" for how a cancel of
 * the calling task is reported. Outside a task returns UVA_ENOTASK (and
 * releases f); NULL f returns UV_ENOMEM.
 * Use the macro: it records the file and line of the await for task dumps. */
#define uva_await(f, out) uva_await_at((f), (out), __FILE__, __LINE__)
int uva_await_at(uva_future_t *f, void **out, const char *file, int line);

/* asyncio.create_task: run fn(arg) as a task on the current loop. It starts
 * on a later loop turn (never inside uva_spawn). The loop keeps the task
 * alive until it ends, so releasing the returned reference only means you
 * will not look at the result ("fire and forget" is safe). The task's
 * status is fn's return value. NULL on ENOMEM.
 * The macros record the file and line of the spawn for debug mode's
 * reports; (uva_spawn)(fn, arg) calls the function without a site. */
#define uva_spawn(fn, arg) uva_spawn_named_at(NULL, (fn), (arg), __FILE__, __LINE__)
uva_future_t *(uva_spawn)(uva_task_fn fn, void *arg);
/* Same, with a name (copied) for dumps; name may be NULL. */
#define uva_spawn_named(name, fn, arg) \
  uva_spawn_named_at((name), (fn), (arg), __FILE__, __LINE__)
uva_future_t *(uva_spawn_named)(const char *name, uva_task_fn fn, void *arg);
/* The function behind both macros: file (a string that must outlive the
 * task, such as __FILE__; may be NULL) and line say where the spawn is. */
uva_future_t *uva_spawn_named_at(const char *name, uva_task_fn fn, void *arg,
                                 const char *file, int line);

/* Set the value the current task's future will carry (ownership moves to
 * the task; a previous value is freed). Returns 0 or UVA_ENOTASK (the value
 * is freed). */
int uva_task_return(void *value, uva_free_fn free_fn);
/* The running task (borrowed), or NULL outside tasks. */
uva_future_t *uva_current_task(void);
/* 1 if f is a task. */
int uva_is_task(const uva_future_t *f);
/* The task's name ("task-N" unless set). Borrowed: a set name is valid
 * while the task is; "task-N" until the next uva_task_name/uva_task_where
 * call on this thread. */
const char *uva_task_name(const uva_future_t *task);
/* Rename (copied). Returns 0, UV_EINVAL (not a task), UV_ENOMEM. */
int uva_task_set_name(uva_future_t *task, const char *name);
/* Where the task is suspended ("file.c:42"), "running", "ready", "not
 * started" or "done". Borrowed; valid until the next uva_task_name or
 * uva_task_where call on this thread. */
const char *uva_task_where(const uva_future_t *task);
/* Number of cancel requests made to the current task, less those a
 * timeout scope withdrew on exit (asyncio's cancelling(); delivery does not
 * lower it). 0 outside tasks. */
int uva_cancelling(void);
/* Cancel requests made to task so far, less those withdrawn (asyncio's
 * Task.cancelling()); 0 for a non-task. */
int uva_task_cancelling(const uva_future_t *task);
/* asyncio's Task.uncancel(): withdraw one cancel request; when none is
 * left, a request not delivered yet is withdrawn too (asyncio 3.13), so
 * the task's next await runs normally. For code that handles a cancel it
 * caused itself (a timeout scope does this on exit). Returns the requests
 * left, or UV_EINVAL if task is not a task. */
int uva_task_uncancel(uva_future_t *task);
/* Copy up to max borrowed pointers to the loop's unfinished tasks into out;
 * returns the total number of unfinished tasks (asyncio.all_tasks). */
size_t uva_all_tasks(uva_loop_t *loop, uva_future_t **out, size_t max);
/* Print one line per unfinished task (name, state, where) to stream
 * (a FILE *; void * keeps <stdio.h> out of this header). */
void uva_dump_tasks(uva_loop_t *loop, void *stream);

/* ------------------------------------------------------------------ time */

/* A future done after ms milliseconds. The deadline counts from the call
 * (the clock is read then, not the loop's cached time, so work done
 * earlier in the same turn does not shorten it) and is rounded up to loop
 * time's 1 ms granularity: a sleep lasts at least ms (more if the loop is
 * busy). Costs no uv_timer_t:
 * every sleep of a loop shares one deadline heap behind one libuv timer.
 * uva_sleep(0) completes on the next loop turn: its waiter runs after that
 * turn's I/O poll, and ahead of the timers and I/O that turn completes (as
 * in asyncio, where the yielding task is on the ready queue first).
 * NULL on ENOMEM. */
uva_future_t *uva_sleep(uint64_t ms);
/* asyncio.sleep(0): let every other ready task and I/O run once. Returns 0,
 * UV_ECANCELED, or UVA_ENOTASK. The macro is that await, so the task's
 * await site is the caller's line; (uva_yield)() is the same function. */
#define uva_yield() uva_await_at(uva_sleep(0), NULL, __FILE__, __LINE__)
int (uva_yield)(void);

/* ----------------------------------------------------------- combinators */

/* One child's outcome, as gather reports it. */
typedef struct uva_outcome {
  int status;          /* child's status (>= 0) or error (< 0) */
  void *value;         /* child's value, owned by the results list */
  uva_free_fn free_fn; /* how the list frees it; set NULL to steal value */
} uva_outcome_t;

typedef struct uva_results {
  size_t n;
  uva_outcome_t item[]; /* in the order the futures were given */
} uva_results_t;

/* Free a results list and every value still in it. NULL is ignored. */
void uva_results_free(uva_results_t *r);

#define UVA_RETURN_EXCEPTIONS 1

/* asyncio.gather. Consumes the n futures. The returned future completes
 * when every child is done; its value is a uva_results_t (free_fn
 * uva_results_free). Without UVA_RETURN_EXCEPTIONS, the first child error
 * fails the gather at once with that code (the other children keep running,
 * as in asyncio); with it, the gather always succeeds with status 0 and each
 * outcome carries its own status. Cancelling the gather cancels every child
 * (a child whose hand-off the gather has not collected yet gives it back)
 * and, once all have ended, completes cancelled; but if children had
 * already produced values (items, responses: work that happened), those
 * results win, as with wait_for: the gather then succeeds, and the children
 * it cancelled read UV_ECANCELED in their outcomes. n == 0 gives an empty
 * list at once. NULL in fs counts as a child failed with UV_ENOMEM. */
uva_future_t *uva_gather(uva_future_t *const *fs, size_t n, int flags);

enum uva_return_when {
  UVA_FIRST_COMPLETED = 1,
  UVA_FIRST_EXCEPTION = 2,
  UVA_ALL_COMPLETED = 3
};

/* asyncio.wait. BORROWS the n futures (you keep them to look at which are
 * done: uva_future_is_done). Completes when return_when is met or after
 * timeout_ms (< 0: no timeout); on timeout nothing is cancelled. Status: the
 * number of futures done at that moment. Cancelling the wait cancels only the
 * wait, not the futures. UV_EINVAL for a bad return_when or NULL futures. */
uva_future_t *uva_wait(uva_future_t *const *fs, size_t n, int return_when,
                       int64_t timeout_ms);

/* asyncio.wait_for. Consumes f. Completes with f's outcome, or, after
 * timeout_ms, cancels f, waits until f has really ended and then completes
 * with UV_ETIMEDOUT; if f produced a result while being cancelled, that
 * result wins and is not lost. Cancelling the wait_for cancels f and ends
 * with UV_ECANCELED (never turned into a timeout); f done with a hand-off
 * wait_for has not seen yet gives it back then (see CANCELLATION LOSES
 * NOTHING). timeout_ms 0: f is
 * cancelled at once unless it is done already (a task that has not started
 * never runs), as in asyncio. timeout_ms < 0: no timeout (asyncio's None;
 * asyncio times out at once for a negative timeout, C has no None). */
uva_future_t *uva_wait_for(uva_future_t *f, int64_t timeout_ms);

/* asyncio.shield. Consumes f. The returned future mirrors f's outcome, but
 * cancelling it does not cancel f (f runs on; its result is freed when it
 * arrives unless someone else holds f). Once f is done, a cancel is
 * refused (0) and the shield completes with f's outcome, as wait_for. */
uva_future_t *uva_shield(uva_future_t *f);

/* asyncio.as_completed: consumes the n futures and hands them back in the
 * order they complete. */
typedef struct uva_as_completed uva_as_completed_t;
/* NULL on ENOMEM (the futures are released). timeout_ms < 0: none. */
uva_as_completed_t *uva_as_completed(uva_future_t *const *fs, size_t n,
                                     int64_t timeout_ms);
/* A future whose value is the next completed future (free_fn uva_release):
 * await it with out to own that future, then await that one for its
 * result. Status UV_EOF when every future has been handed out,
 * UV_ETIMEDOUT after the timeout. */
uva_future_t *uva_as_completed_next(uva_as_completed_t *it);
/* Release the futures not handed out yet (they are not cancelled) and free
 * the iterator. */
void uva_as_completed_free(uva_as_completed_t *it);

/* asyncio.timeout(): a deadline around a block of awaits in one task.
 * Lives on the task's stack; enter and exit in the same task, nested scopes
 * exit in reverse order. When the deadline passes, the task is cancelled:
 * the await in progress returns UV_ECANCELED, and uva_timeout_exit turns
 * that into UV_ETIMEDOUT. A cancel from outside stays UV_ECANCELED. */
typedef struct uva_timeout {
  uint64_t deadline;    /* loop time (uv_now) of the deadline; UINT64_MAX: none */
  void *node_;          /* private from here on */
  int state_;
  int cancels_before_;
} uva_timeout_t;

/* Enter a scope ending ms from now (ms < 0: no deadline yet, asyncio's
 * timeout(None); asyncio expires a negative one at once). ms 0 expires the
 * scope now: the block's next await that suspends is cancelled, ahead of
 * what it waits for (a uva_yield() inside a 0 ms scope times out), as
 * asyncio's timeout(0). Returns 0, UVA_ENOTASK, UV_EINVAL (t is already
 * entered) or UV_ENOMEM. A task that returns without exiting its scopes
 * has them stopped when it ends. */
int uva_timeout_enter(uva_timeout_t *t, int64_t ms);
/* asyncio.timeout_at(): enter a scope ending at an absolute loop time
 * (uva_now() units, ms; UINT64_MAX: none; one that has passed expires now,
 * as ms 0 does). Returns as uva_timeout_enter. */
int uva_timeout_enter_at(uva_timeout_t *t, uint64_t deadline);
/* asyncio's Timeout.reschedule(): move the deadline of an entered scope
 * that has not expired to ms from now (< 0: none; 0: expire now). Returns
 * 0 or UV_EINVAL (not entered, expired or exited), UV_ENOMEM. */
int uva_timeout_reschedule(uva_timeout_t *t, int64_t ms);
/* The same with an absolute loop-time deadline (UINT64_MAX: none). */
int uva_timeout_reschedule_at(uva_timeout_t *t, uint64_t deadline);
/* 1 if the deadline passed while the scope was active. */
int uva_timeout_expired(const uva_timeout_t *t);
/* Leave the scope. rc is the block's result; returns UV_ETIMEDOUT if rc is
 * UV_ECANCELED caused by this scope's deadline, else rc. An expiry the block
 * never saw (it finished first) is withdrawn. */
int uva_timeout_exit(uva_timeout_t *t, int rc);

/* asyncio.TaskGroup. */
typedef struct uva_group uva_group_t;
/* NULL on ENOMEM / no loop. */
uva_group_t *uva_group_new(void);
/* Spawn fn(arg) in the group. If task_out is not NULL it receives a new
 * reference to the task. When any task of the group fails (status < 0 other
 * than UV_ECANCELED), every other task is cancelled. Returns 0, UV_ENOMEM,
 * or UVA_ECLOSED (group already failed or joined: nothing spawned). The
 * macro records the spawn site as uva_spawn's does. */
#define uva_group_spawn(g, fn, arg, task_out) \
  uva_group_spawn_at((g), (fn), (arg), (task_out), __FILE__, __LINE__)
int (uva_group_spawn)(uva_group_t *g, uva_task_fn fn, void *arg,
                      uva_future_t **task_out);
int uva_group_spawn_at(uva_group_t *g, uva_task_fn fn, void *arg,
                       uva_future_t **task_out, const char *file, int line);
/* asyncio's TaskGroup.cancel(): end the group early without an error.
 * Every task of the group is cancelled, and so is the task that made the
 * group (the body: its await in progress returns UV_ECANCELED, so it
 * stops where it waits and goes on to uva_group_join), unless it is in
 * uva_group_join already. uva_group_join then takes that cancel back and
 * returns 0 (or the first failure of a task that failed), not
 * UV_ECANCELED; a cancel of the body from elsewhere still wins. Callable
 * from the body or from a task of the group, any number of times, until
 * uva_group_join returns (which frees the group). Spawning afterwards
 * gives UVA_ECLOSED. */
void uva_group_cancel(uva_group_t *g);
/* In a task: wait for every task of the group, then free the group. Returns
 * 0, or the first failure's code. If the calling task is cancelled while
 * waiting, the group's tasks are cancelled, waited for, and UV_ECANCELED is
 * returned. UVA_ENOTASK outside a task (the group is cancelled and freed
 * once its tasks end). */
int uva_group_join(uva_group_t *g);

/* --------------------------------------------------------- sync objects */
/* Every acquire/wait returns a future: await it in a task, or add a done
 * callback. Waiters are served first come, first served, and a lock or a
 * permit is handed straight to the next waiter, so nobody barges in
 * between (a release followed at once by an acquire queues behind the
 * waiter it woke). A waiter whose future is cancelled before it was served
 * leaves the line without taking a wake-up, a permit or an item from
 * anyone; one served and then cancelled before its task resumed gives it
 * back (see CANCELLATION LOSES NOTHING at the top). Freeing an object with
 * waiters fails them with UVA_ECLOSED. */

typedef struct uva_lock uva_lock_t;
uva_lock_t *uva_lock_new(void);                  /* NULL on ENOMEM/no loop */
void uva_lock_free(uva_lock_t *l);
/* Done (status 0) when the caller holds the lock. */
uva_future_t *uva_lock_acquire(uva_lock_t *l);
/* 0, or UVA_ENOTLOCKED if not held. Hands the lock to the next waiter. */
int uva_lock_release(uva_lock_t *l);
int uva_lock_locked(const uva_lock_t *l);

typedef struct uva_event uva_event_t;
uva_event_t *uva_event_new(void);
void uva_event_free(uva_event_t *e);
void uva_event_set(uva_event_t *e);      /* wakes every waiter */
void uva_event_clear(uva_event_t *e);
int uva_event_is_set(const uva_event_t *e);
uva_future_t *uva_event_wait(uva_event_t *e);  /* done (0) once set */

/* Condition over a lock: lock NULL makes a private one (borrowed from the
 * caller otherwise, and must outlive the condition). */
typedef struct uva_cond uva_cond_t;
uva_cond_t *uva_cond_new(uva_lock_t *lock);
void uva_cond_free(uva_cond_t *c);
uva_lock_t *uva_cond_lock(uva_cond_t *c);
/* The caller must hold the lock (UVA_ENOTLOCKED otherwise, as a failed
 * future). Releases it, waits for a notify, re-acquires it, then completes
 * (0). Even when cancelled, the future completes only once the lock is held
 * again, as in asyncio. */
uva_future_t *uva_cond_wait(uva_cond_t *c);
/* Wake up to n waiters / all. Returns the number woken, or UVA_ENOTLOCKED. */
int uva_cond_notify(uva_cond_t *c, int n);
int uva_cond_notify_all(uva_cond_t *c);
/* asyncio's Condition.wait_for(predicate), in a task holding the lock:
 * call pred(arg) and, while it returns 0, wait (uva_cond_wait) and call it
 * again, always with the lock held. Returns pred's last result: > 0 once
 * true, or a negative value pred returned (an error of its own, which
 * stops the wait); or the wait's error (UV_ECANCELED: the lock is held
 * again, as after uva_cond_wait), UVA_ENOTLOCKED, UVA_ENOTASK outside a
 * task, UV_EINVAL for NULL arguments. */
int uva_cond_wait_for(uva_cond_t *c, int (*pred)(void *arg), void *arg);

typedef struct uva_sem uva_sem_t;
/* value >= 0 permits. bounded: release beyond the initial value fails with
 * UVA_EBOUND (asyncio.BoundedSemaphore). NULL on ENOMEM / no loop. */
uva_sem_t *uva_sem_new(unsigned value, int bounded);
void uva_sem_free(uva_sem_t *s);
uva_future_t *uva_sem_acquire(uva_sem_t *s);  /* done (0) with a permit */
int uva_sem_release(uva_sem_t *s);           /* 0 or UVA_EBOUND */
int uva_sem_locked(const uva_sem_t *s);      /* 1 if acquire would wait */
unsigned uva_sem_value(const uva_sem_t *s);

typedef struct uva_barrier uva_barrier_t;
uva_barrier_t *uva_barrier_new(unsigned parties);  /* parties >= 1 */
void uva_barrier_free(uva_barrier_t *b);
/* Done when `parties` tasks have arrived; status is the arrival index
 * (0 .. parties-1). UVA_EBROKEN once the barrier is broken (abort, or a
 * waiter cancelled while others were waiting: asyncio only forgets such a
 * waiter, which can hand out an arrival index twice). The next round
 * starts as soon as a round is released: a task that passes and waits
 * again joins it at once, where asyncio holds it back until every task of
 * the released round has resumed ("draining"). Rounds are made of the
 * same tasks, in the same arrival order, either way; only the moment the
 * early task's wait starts differs. */
uva_future_t *uva_barrier_wait(uva_barrier_t *b);
void uva_barrier_abort(uva_barrier_t *b);  /* break it: waiters fail */
void uva_barrier_reset(uva_barrier_t *b);  /* waiters fail, then reusable */
unsigned uva_barrier_waiting(const uva_barrier_t *b);
int uva_barrier_broken(const uva_barrier_t *b);

/* ----------------------------------------------------------------- queue */

enum uva_queue_kind { UVA_QUEUE_FIFO = 0, UVA_QUEUE_LIFO = 1, UVA_QUEUE_PRIORITY = 2 };

typedef struct uva_queue_opts {
  int kind;                                  /* enum uva_queue_kind */
  size_t maxsize;                            /* 0 = unbounded */
  int (*cmp)(const void *a, const void *b);  /* PRIORITY: < 0 if a first */
  uva_free_fn item_free;                     /* frees items the queue drops */
} uva_queue_opts_t;

typedef struct uva_queue uva_queue_t;
/* opts NULL: unbounded FIFO that never frees items. NULL on ENOMEM, no
 * loop, or PRIORITY without cmp. Items are void *: the queue owns an item
 * from put until get hands it out (rule 3: a failed put frees the item with
 * item_free). */
uva_queue_t *uva_queue_new(const uva_queue_opts_t *opts);
/* Fails pending getters/putters/joiners with UVA_ECLOSED, frees items left. */
void uva_queue_free(uva_queue_t *q);
/* Done (0) once the item is in the queue (waits while full). UVA_ESHUTDOWN
 * after shutdown. */
uva_future_t *uva_queue_put(uva_queue_t *q, void *item);
/* Done with the item as value (free_fn item_free). UVA_ESHUTDOWN once shut
 * down and empty (or at once after an immediate shutdown). */
uva_future_t *uva_queue_get(uva_queue_t *q);
/* 0, UVA_EFULL, UVA_ESHUTDOWN, UV_ENOMEM; on error the caller keeps item. */
int uva_queue_put_nowait(uva_queue_t *q, void *item);
int uva_queue_get_nowait(uva_queue_t *q, void **item); /* 0, UVA_EEMPTY, UVA_ESHUTDOWN */
/* One item handed out by get is processed. 0, or UV_EINVAL if called more
 * times than there were items. */
int uva_queue_task_done(uva_queue_t *q);
/* Done when every item put has been marked task_done. */
uva_future_t *uva_queue_join(uva_queue_t *q);
/* asyncio Queue.shutdown(immediate): puts fail from now on; getters fail
 * once the queue is empty. immediate also drops the items left (freed with
 * item_free, each counted as task_done) and fails getters at once. */
void uva_queue_shutdown(uva_queue_t *q, int immediate);
size_t uva_queue_size(const uva_queue_t *q);
int uva_queue_empty(const uva_queue_t *q);
int uva_queue_full(const uva_queue_t *q);

/* ----------------------------------------------------- other threads */

/* These functions may be called from any number of threads at any time,
 * also while the loop thread is in uva_loop_close and after it has
 * returned: a call is either accepted (it WILL run, before
 * uva_loop_close returns) or refused with UVA_ECLOSED, never dropped.
 * The library keeps a registry of live loops, so a pointer to a loop that
 * has been closed is recognised and refused, not dereferenced. The one
 * case it cannot tell apart: once a loop is freed, a new loop may be
 * created at the same address, and calls with the old pointer then go to
 * the new loop. A thread that calls a loop which may close should stop at
 * its first UVA_ECLOSED (or learn of the close some other way) before a new
 * loop can be created in its place. */

/* loop.call_soon_threadsafe: from any thread, run fn(arg) on the loop's
 * thread on a later loop turn. Returns 0 (fn will run), UV_ENOMEM,
 * UV_EINVAL (loop or fn NULL) or UVA_ECLOSED (loop closing or closed: fn
 * will not run). Calls run in the order they were made, but relative to
 * work queued on the loop's own thread they join the ready queue when the
 * loop wakes for them (libuv's uv_async, in the poll phase), not at the
 * moment of the call: asyncio puts them in the same queue as call_soon,
 * in call order. */
int uva_call_threadsafe(uva_loop_t *loop, void (*fn)(void *arg), void *arg);

/* asyncio.run_coroutine_threadsafe: spawn fn(arg) as a task on loop from
 * another thread and wait for its result there. */
typedef struct uva_tsfuture uva_tsfuture_t;
/* NULL on ENOMEM or a NULL loop or fn. The handle always gets a result:
 * UVA_ECLOSED if the loop was closing or closed (the task never ran),
 * UV_ECANCELED if it was cancelled (by uva_tsfuture_cancel or by the
 * loop's close), else the task's outcome. */
uva_tsfuture_t *uva_submit_threadsafe(uva_loop_t *loop, uva_task_fn fn, void *arg);
/* Block the calling thread (not the loop's) until the task ends or
 * timeout_ms passes (< 0: forever). Returns the task's status, or
 * UV_ETIMEDOUT (the task keeps running), or UV_EBUSY when called on the
 * loop's own thread before the task ended (it would deadlock). *out
 * receives the value (owned by the caller) when not NULL and the task
 * succeeded. */
int uva_tsfuture_wait(uva_tsfuture_t *t, int64_t timeout_ms, void **out);
/* Ask the loop to cancel the task (from any thread; nothing if it is done
 * or the loop closed). */
void uva_tsfuture_cancel(uva_tsfuture_t *t);
/* Free the handle (from any thread). The task runs on if not done. */
void uva_tsfuture_free(uva_tsfuture_t *t);

/* ------------------------------------------------- to_thread, executors */

/* A blocking job for another thread. Return a status (>= 0 success, < 0 an
 * error code); on success *value may be set to a result, which the future
 * then carries with the free_fn given to uva_to_thread. The job must not
 * touch the loop (use uva_call_threadsafe for that).
 *
 * JOBS, BORROWED MEMORY AND CANCELLATION (uva_to_thread and the uva_fs_*
 * requests follow this rule). What a job or request borrows (to_thread's
 * arg, the buffers of uva_fs_read/write...) stays borrowed until its future
 * is done, and the future is not done while the job can still touch it. So
 * the natural code, free(arg) once the await has returned, is safe on every
 * path, cancelled or not. Cancelling:
 *  - a job not started yet takes it out of the queue: it never runs, and
 *    the future completes with UV_ECANCELED at once;
 *  - a running job cannot be stopped: its future completes when it
 *    returns, with its real outcome (status and value: the work happened,
 *    and the caller sees it). A cancelled task awaiting it gets that
 *    outcome, and the cancel at its next await. The job can notice the
 *    request (uva_job_cancelled) and return early, UV_ECANCELED say.
 * To abandon a job that may never return (wait_for around it), hand the
 * library its argument instead: uva_to_thread_owned. */
typedef int (*uva_work_fn)(void *arg, void **value);

/* A pool of dedicated threads. libuv's own pool (4 threads unless
 * UV_THREADPOOL_SIZE says otherwise) also runs file-system and DNS
 * requests: a few long blocking jobs there stall every fs and DNS operation
 * of the process. Give long or numerous blocking jobs an executor of their
 * own; keep short ones on libuv's pool (ex NULL), which needs no threads of
 * its own. */
typedef struct uva_executor uva_executor_t;

/* Start an executor of `threads` threads (1..1024) for this thread's loop.
 * Returns 0, UV_EINVAL, UVA_ENOLOOP, UV_ENOMEM or a libuv thread error. */
int uva_executor_new(uva_executor_t **out, unsigned threads);
/* Stop it: jobs not started yet complete with UV_ECANCELED (owned
 * arguments are freed), running jobs are waited for (this blocks the loop
 * thread until they return), then the threads are joined. Call it before
 * closing the loop. NULL is ignored. */
void uva_executor_free(uva_executor_t *ex);

/* asyncio.to_thread / run_in_executor: run fn(arg, &value) on ex's threads
 * (NULL: libuv's pool) and complete the returned future with its status and
 * value. arg is borrowed until the future is done; cancelling follows the
 * rule above. NULL on ENOMEM; a failed future (UV_EINVAL) for a
 * NULL fn or an executor of another loop. */
uva_future_t *uva_to_thread(uva_executor_t *ex, uva_work_fn fn, void *arg,
                            uva_free_fn free_fn);
/* The same for a job you want to be able to abandon: the library owns arg
 * from this call on and calls arg_free(arg) (if not NULL) exactly once, on
 * the loop's thread, when the job has returned or was dropped unstarted,
 * and also when the call fails (rule 3; with no loop, on the calling
 * thread). Cancelling completes the future with UV_ECANCELED at once, also
 * while the job runs: the job runs on, its late value is freed with
 * free_fn, and arg after it. The loop still waits for the job before it
 * closes. */
uva_future_t *uva_to_thread_owned(uva_executor_t *ex, uva_work_fn fn, void *arg,
                                  uva_free_fn arg_free, uva_free_fn free_fn);
/* Inside a job (on the worker thread): 1 once a cancel was requested for
 * the job running on this thread, else 0 (also outside jobs). A long job
 * can poll it and stop early. */
int uva_job_cancelled(void);

/* ----------------------------------------------------------------- files */
/* Futures over libuv's uv_fs_* requests (they run on libuv's pool). Each
 * completes with libuv's result: >= 0 on success (a file descriptor, a byte
 * count, 0) or a negative libuv error (UV_ENOENT, UV_EACCES, ...). Paths are
 * copied; buffers are borrowed until the future is done.
 * Cancelling follows the rule of the to_thread section (JOBS, BORROWED
 * MEMORY AND CANCELLATION): a request not started yet completes with
 * UV_ECANCELED at once; one that is running completes with its real result
 * when it ends: an open that ran gives its descriptor, which the caller
 * then owns and closes; a write that ran gives its byte count. An open whose
 * future nobody holds any more closes the descriptor it got.
 * uva_fs_read_file and uva_fs_write_file are several requests: cancelled,
 * they stop at the next step, close what they opened and complete with
 * UV_ECANCELED (a write_file cancelled midway leaves the file partly
 * written); a cancel that comes once all the data is through gets the real
 * result. */

/* Memory the library hands you as a value (uv_stat_t, uva_bytes_t,
 * uva_dirents_t) is freed with uva_free. NULL is ignored. */
void uva_free(void *p);

typedef struct uva_bytes {
  size_t len;
  char data[]; /* len bytes, then a NUL (handy for text) */
} uva_bytes_t;

typedef struct uva_dirents {
  size_t n;
  uv_dirent_t item[]; /* names point into the same block */
} uva_dirents_t;

uva_future_t *uva_fs_open(const char *path, int flags, int mode); /* status: fd */
uva_future_t *uva_fs_close(uv_file fd);
/* offset < 0: at the file position (and advance it). Status: bytes, 0 at EOF. */
uva_future_t *uva_fs_read(uv_file fd, void *buf, size_t len, int64_t offset);
uva_future_t *uva_fs_write(uv_file fd, const void *buf, size_t len, int64_t offset);
uva_future_t *uva_fs_stat(const char *path); /* value: uv_stat_t * */
uva_future_t *uva_fs_fstat(uv_file fd);      /* value: uv_stat_t * */
uva_future_t *uva_fs_unlink(const char *path);
uva_future_t *uva_fs_rename(const char *from, const char *to);
uva_future_t *uva_fs_mkdir(const char *path, int mode);
uva_future_t *uva_fs_rmdir(const char *path);
uva_future_t *uva_fs_scandir(const char *path); /* value: uva_dirents_t *, status: n */
uva_future_t *uva_fs_fsync(uv_file fd);
uva_future_t *uva_fs_ftruncate(uv_file fd, int64_t length);
/* flags: UV_FS_COPYFILE_EXCL, UV_FS_COPYFILE_FICLONE... */
uva_future_t *uva_fs_copyfile(const char *from, const char *to, int flags);
/* Status: bytes sent. */
uva_future_t *uva_fs_sendfile(uv_file out_fd, uv_file in_fd, int64_t in_offset, size_t len);

/* Read a whole file (aiofiles' `await f.read()`): value is a uva_bytes_t,
 * status the length (INT_MAX if larger). UV_EFBIG if it is larger than
 * max_len (0: no limit). */
uva_future_t *uva_fs_read_file(const char *path, size_t max_len);
/* Create or truncate path (mode 0644) and write len bytes of data
 * (borrowed until done). Status 0. */
uva_future_t *uva_fs_write_file(const char *path, const void *data, size_t len);

/* --------------------------------------------------------------- signals */

/* Done (status signum) the next time the process receives signal signum
 * (SIGINT, SIGTERM, SIGHUP, SIGUSR1...). While a task awaits SIGINT this
 * way, Ctrl-C goes to it instead of cancelling uva_run's main task.
 * UV_EINVAL for an invalid signal number. */
uva_future_t *uva_signal_wait(int signum);

/* ----------------------------------------------------------- subprocesses */

enum uva_stdio_mode { UVA_STDIO_INHERIT = 0, UVA_STDIO_PIPE = 1, UVA_STDIO_IGNORE = 2 };

typedef struct uva_process_opts {
  const char *file;   /* the program, looked up in PATH */
  char **args;        /* argv, NULL-terminated (args[0] is the name); NULL: {file} */
  char **env;         /* "K=V" strings, NULL-terminated; NULL: inherit */
  const char *cwd;    /* NULL: inherit */
  int stdio[3];       /* stdin, stdout, stderr: enum uva_stdio_mode */
} uva_process_opts_t;

typedef struct uva_process uva_process_t;
typedef struct uva_stream uva_stream_t; /* see the streams section */

/* asyncio.create_subprocess_exec: start the program now. Piped stdio
 * become streams (uva_process_stdio). Returns 0, or UV_ENOENT (no such
 * program), UV_EACCES, UV_EINVAL, UV_ENOMEM, UVA_ENOLOOP; opts is borrowed. */
int uva_process_spawn(uva_process_t **out, const uva_process_opts_t *opts);
/* The stream of fd 0, 1 or 2 if it was piped, else NULL. Borrowed: the
 * process owns and closes it in uva_process_free, so do not close it
 * yourself; to give the child EOF on stdin, uva_stream_shutdown it. */
uva_stream_t *uva_process_stdio(uva_process_t *p, int fd);
int uva_process_pid(const uva_process_t *p);
/* Done when the process exits: status is its exit code (0-255), or 128 +
 * the signal number if a signal ended it. Each call gives its own future:
 * cancelling a wait neither kills the process nor affects other waits. */
uva_future_t *uva_process_wait(uva_process_t *p);
/* Send a signal. 0, UV_ESRCH once it has exited, or a libuv error. */
int uva_process_kill(uva_process_t *p, int signum);
/* Close the piped streams and free the process handle; pending waits fail
 * with UVA_ECLOSED. A process still running is not killed (kill it first
 * if you mean to). NULL is ignored. */
void uva_process_free(uva_process_t *p);

/* ------------------------------------------------------------------- DNS */
/* Both run on libuv's pool. Cancelling takes a request that has not
 * started out of the queue; one that is running completes (UV_ECANCELED)
 * when it ends, and its result is freed. */

/* asyncio's loop.getaddrinfo. host and/or service (one may be NULL; both
 * NULL is UV_EINVAL) and hints (may be NULL: any family) are copied. Value:
 * the `struct addrinfo *` list (free_fn calls uv_freeaddrinfo; free a taken
 * list with uv_freeaddrinfo, not uva_free), status the number of addresses.
 * Errors: libuv's UV_EAI_* codes (UV_EAI_NONAME for a name that does not
 * exist...). */
uva_future_t *uva_getaddrinfo(const char *host, const char *service,
                              const struct addrinfo *hints);

typedef struct uva_nameinfo {
  char host[1025];   /* NUL-terminated */
  char service[32];  /* NUL-terminated */
} uva_nameinfo_t;
/* asyncio's loop.getnameinfo. addr (AF_INET or AF_INET6) is copied; flags
 * are getnameinfo(3)'s NI_*. Value: a uva_nameinfo_t (free with uva_free),
 * status 0. Errors: UV_EAI_*, UV_EINVAL for a NULL or non-IP address. */
uva_future_t *uva_getnameinfo(const struct sockaddr *addr, int flags);

/* --------------------------------------------------------------- streams */
/* asyncio's StreamReader/StreamWriter pair over one libuv stream (TCP,
 * Unix-domain socket, pipe). A stream belongs to the loop that made it.
 *
 * Reading. The stream reads into an internal buffer; every read takes its
 * bytes from that buffer at the moment it completes, so a read that is
 * cancelled (or fails) consumes nothing: the next read sees every byte.
 * Input back-pressure: once the buffer holds more than 256 KiB that nobody
 * asked for, the stream stops reading from the socket (uv_read_stop) until
 * a read takes some. One read at a time: a second read while one is
 * pending fails with UV_EBUSY (asyncio raises RuntimeError). End of stream
 * is UV_EOF, always distinct from errors; it is sticky, as errors are.
 *
 * Writing. uva_stream_write borrows the buffer until its future is done,
 * which is when libuv has handed every byte to the kernel (or failed).
 * Writes go out in the order they were made. Output back-pressure: a
 * writer that awaits each write has at most one buffer in flight, so its
 * memory cannot grow however slow the peer; a writer that fires many
 * writes without awaiting them can check uva_stream_write_queue_size().
 * A write that libuv has started cannot be withdrawn: cancelling it changes
 * nothing, and it completes when libuv calls back with what happened: 0
 * once the peer has taken the data (the write happened: a retry would
 * send it twice), UVA_ECLOSED if the stream was closed first (close the
 * stream to stop it for good).
 *
 * TCP streams have TCP_NODELAY set (as asyncio does): small writes go out
 * at once.
 *
 * Stream handles do not keep an attached uv_loop_t alive on their own
 * except while a read is waiting; a stream that is never closed leaks. */
typedef struct uva_stream uva_stream_t;

/* asyncio.open_connection(host, port). host is a name or a numeric
 * address (copied); a name is resolved with getaddrinfo and each address
 * is tried in turn until one connects. Value: the uva_stream_t * (free_fn
 * closes it, so an unread result leaks nothing; once you take it, close it
 * with uva_stream_close). Status 0. Errors: UV_ECONNREFUSED,
 * UV_ETIMEDOUT, UV_EAI_* (resolution), UV_EINVAL (NULL host, port outside
 * 1..65535); with several addresses, the last attempt's error. Cancelling
 * stops resolution or closes the socket being connected. */
uva_future_t *uva_tcp_connect(const char *host, int port);
/* Connect to a Unix-domain socket at path (copied). As uva_tcp_connect;
 * UV_ENOENT if nothing is there, UV_ENAMETOOLONG for a path too long for
 * sockaddr_un. */
uva_future_t *uva_unix_connect(const char *path);

/* Read up to len bytes into buf (borrowed until done). Status: bytes read
 * (> 0), UV_EOF at end of stream, or a negative error. len 0 gives 0 at
 * once. */
uva_future_t *uva_stream_read(uva_stream_t *s, void *buf, size_t len);
/* Read exactly n bytes (n <= INT_MAX) into buf. Status n, or UV_EOF if the
 * stream ended before n bytes arrived (or another error). On failure no
 * byte is consumed: what did arrive stays buffered (uva_stream_buffered()
 * says how much) and uva_stream_read hands it out. */
uva_future_t *uva_stream_read_exactly(uva_stream_t *s, void *buf, size_t n);
/* Read up to and including the delimiter (delim, dlen >= 1, borrowed
 * until done). Value: a uva_bytes_t holding the data and the delimiter
 * (free with uva_free), status its length. limit: the largest result
 * accepted (0: 64 KiB, asyncio's default); UVA_ELIMIT if the delimiter is
 * not within the first limit bytes. UV_EOF if the stream ended first. On
 * either error nothing is consumed (the data stays buffered, as asyncio's
 * LimitOverrunError leaves it). */
uva_future_t *uva_stream_read_until(uva_stream_t *s, const void *delim, size_t dlen,
                                    size_t limit);
/* Bytes received and not yet read. */
size_t uva_stream_buffered(const uva_stream_t *s);

/* Write len bytes of buf (borrowed until done). Status 0 once libuv has
 * written them all, or a negative error (UV_EPIPE, UV_ECONNRESET,
 * UVA_ECLOSED if the stream was closed first). Writes that fit in the
 * socket's buffer right away complete without an allocation. */
uva_future_t *uva_stream_write(uva_stream_t *s, const void *buf, size_t len);
/* Bytes accepted by writes and not yet handed to the kernel. */
size_t uva_stream_write_queue_size(const uva_stream_t *s);
/* Half-close (asyncio's write_eof): after the writes made so far, send
 * end of stream; reading goes on. Status 0 or a libuv error. */
uva_future_t *uva_stream_shutdown(uva_stream_t *s);
/* Close the stream and free it. Safe at any time on the loop's thread:
 * a pending read fails at once with UVA_ECLOSED, pending writes and
 * shutdowns with UVA_ECLOSED when libuv gives them back. The memory stays
 * until libuv has closed the handle (the loop waits for that before
 * closing), but s must not be used after this call, except a server's
 * connection stream, which stays valid (every operation failing with
 * UVA_ECLOSED) until its conn_fn returns. NULL and a second close are
 * ignored. */
void uva_stream_close(uva_stream_t *s);

/* --------------------------------------------------------------- servers */
/* asyncio.start_server. Each accepted connection runs conn_fn(conn, arg)
 * as a new task; the library closes conn when conn_fn returns (conn_fn may
 * close it earlier itself). conn_fn's status is ignored. */
typedef struct uva_server uva_server_t;
typedef int (*uva_conn_fn)(uva_stream_t *conn, void *arg);

/* Listen on host:port (TCP). host: a numeric IPv4/IPv6 address,
 * "localhost" (127.0.0.1) or NULL (0.0.0.0: every interface); not
 * resolved. port 0 picks a free port (see uva_server_port). backlog <= 0:
 * 511. On success *out is the server, which the caller must close with
 * uva_server_close. Returns 0, UV_EINVAL, UV_EADDRINUSE, UVA_ENOLOOP,
 * UV_ENOMEM or another libuv error. Call on the loop's thread. */
int uva_tcp_listen(uva_server_t **out, const char *host, int port, int backlog,
                   uva_conn_fn conn_fn, void *arg);
/* Listen on a Unix-domain socket at path. A socket file left at path is
 * removed first (as asyncio does); the file is removed on close. */
int uva_unix_listen(uva_server_t **out, const char *path, int backlog,
                    uva_conn_fn conn_fn, void *arg);
/* The TCP port the server listens on (the one picked for port 0); 0 for a
 * Unix-domain server. */
int uva_server_port(const uva_server_t *srv);
/* Connections currently running. */
size_t uva_server_connections(const uva_server_t *srv);
/* Stop listening at once, then either cancel every running connection
 * task (cancel_connections = 1) or let them finish (0: drain). The future
 * completes (status 0) when the listening socket is closed and every
 * connection task has ended; the server is freed then (do not use srv
 * after this call). Cancelling the future (a wait_for around a drain that
 * takes too long) cancels the connection tasks and completes it at once
 * with UV_ECANCELED; the server is freed when they have ended (the loop
 * waits for them before it closes). A connection task may close its own
 * server: with cancel_connections = 1 its await returns UV_ECANCELED (it
 * is one of the connections); awaiting a drain there would wait for
 * itself, so release that future instead. NULL on ENOMEM (nothing was
 * done: retry). A NULL srv gives a future failed with UV_EINVAL. */
uva_future_t *uva_server_close(uva_server_t *srv, int cancel_connections);

/* ----------------------------------------------------------- HTTP client */
/* aiohttp's ClientSession on libcurl's multi_socket interface, driven by
 * the loop (one uv_poll_t per socket curl uses, one uv_timer_t). Only http
 * and https URLs are allowed (also for redirects) unless the client's
 * `protocols` widens that; TLS peer and host verification are always on.
 * Connections are reused between requests of the same client, HTTP/2
 * connections multiplex them; compressed responses are decoded.
 *
 * Ownership: a client belongs to its creator, who frees it
 * (uva_http_client_free) on the loop's thread before the loop closes. A
 * response or stream taken from a future belongs to the taker
 * (uva_http_response_free, uva_http_stream_close) and may outlive the
 * client. Everything a request struct points to is copied when the request
 * starts, except the `error` buffer.
 *
 * libcurl is initialised once per process (curl_global_init, on first
 * uva_http_client_new) and never cleaned up: its global state lives until
 * exit.
 *
 * Errors of a request future (distinct codes):
 *   UV_EAI_NONAME       the host name could not be resolved
 *   UV_ECONNREFUSED     the connection was refused (or another connect
 *                       error: the OS's code when curl reports one,
 *                       e.g. UV_ENETUNREACH)
 *   UV_EMFILE, UV_ENFILE  no descriptor for the socket (the client opens
 *                       its sockets close-on-exec)
 *   UV_ETIMEDOUT        timeout_ms or connect_timeout_ms passed
 *   UV_ELOOP            more redirects than max_redirects
 *   UV_EPROTONOSUPPORT  a scheme other than http/https (ftp://, file://...)
 *   UV_EPROTO           TLS failure (handshake, certificate verification)
 *   UV_ECONNRESET       the peer closed or reset the connection before a
 *                       complete response (also: empty reply)
 *   UV_E2BIG            the body is larger than max_body
 *   UV_EINVAL           bad arguments: NULL url, a URL with spaces or
 *                       control characters, a malformed URL, a header
 *                       with CR or LF or without ':' (or ';'), a bad method
 *   UV_ECANCELED        cancelled, or the client was freed
 *   UV_ENOENT, UV_EACCES, UV_EISDIR...  body_file could not be opened or
 *                       read (the error of open(2) or read(2))
 *   UV_EPROTONOSUPPORT  also: http_version 2 with a libcurl without HTTP/2
 *   UV_ENOMEM, UV_EIO   out of memory; any other curl failure (a reply
 *                       that is not HTTP...)
 * An HTTP error status (404, 500...) is NOT an error: the future succeeds
 * and the response carries the status.
 *
 * Error text: a failed future has no value, so curl's own message goes to
 * the request's `error` buffer when it has one (curl's ERRORBUFFER model),
 * and the most recent failure of a client is also kept on the client:
 * uva_http_last_error(). With several requests in flight, use the buffer:
 * the client's copy is overwritten by whichever request fails last. */

typedef struct uva_http_client uva_http_client_t;

typedef struct uva_http_client_opts {
  const char *user_agent;      /* copied; NULL: "uvasync/<version>" */
  int64_t timeout_ms;          /* default total timeout per request; <= 0: none */
  int64_t connect_timeout_ms;  /* default connect timeout; <= 0: curl's (300 s) */
  long max_redirects;          /* default redirect limit; <= 0: 10 */
  size_t max_body;             /* default body limit in bytes; 0: none */
  long max_connections;        /* total open connections; <= 0: no limit.
                                * Idle ones are kept for reuse, up to 4 per
                                * request ever in flight at once (curl's
                                * cache; idle over 118 s: closed) */
  long max_host_connections;   /* per host; <= 0: no limit */
  int cookies;                 /* nonzero: an in-memory cookie jar shared by
                                * the client's requests (curl's engine) */
  const char *protocols;       /* schemes allowed (also for redirects), in
                                * curl's syntax ("http,https,file"); NULL:
                                * "http,https"; copied */
  const char *ca_file;         /* PEM file of the CAs that verify servers;
                                * NULL: the system's bundle; copied */
  size_t stream_buffer;        /* streaming: bytes buffered before the
                                * transfer pauses; 0: 256 KiB */
} uva_http_client_opts_t;

/* Make a client on this thread's loop. opts may be NULL (defaults above);
 * it is copied. Returns 0, UV_EINVAL (out NULL, user agent with CR/LF, a
 * protocols list curl rejects), UVA_ENOLOOP or UV_ENOMEM. Free it with uva_http_client_free before the
 * loop closes (before main returns under uva_run). */
int uva_http_client_new(uva_http_client_t **out, const uva_http_client_opts_t *opts);
/* Free a client: requests still running complete with UV_ECANCELED, every
 * connection is closed; the memory goes when libuv has closed the handles
 * (the loop waits for that before it closes). NULL is ignored. */
void uva_http_client_free(uva_http_client_t *c);
/* curl's message for the client's most recent failed request ("" if none).
 * Borrowed, valid until the next failure or uva_http_client_free. */
const char *uva_http_last_error(const uva_http_client_t *c);

enum uva_http_follow {
  UVA_HTTP_FOLLOW_DEFAULT = 0, /* follow redirects (the default) */
  UVA_HTTP_FOLLOW = 1,
  UVA_HTTP_NO_FOLLOW = 2       /* a 3xx is the response */
};

enum uva_http_version {
  UVA_HTTP_VERSION_DEFAULT = 0, /* HTTP/2 over TLS when the server offers
                                 * it (ALPN), else HTTP/1.1 */
  UVA_HTTP_VERSION_1_1 = 1,     /* HTTP/1.1 only */
  UVA_HTTP_VERSION_2 = 2        /* HTTP/2, also over plain http:// (prior
                                 * knowledge: the server must speak h2c) */
};

typedef struct uva_http_request {
  const char *method;           /* NULL: GET, or POST when body is set */
  const char *url;              /* required; copied */
  const char *const *headers;   /* "Name: value" strings, NULL-terminated;
                                 * "Name:" removes a default header,
                                 * "Name;" sends it empty; copied */
  const void *body;             /* request body, copied; NULL: none */
  size_t body_len;
  const char *body_file;        /* request body streamed from this file
                                 * (path, copied; opened and read in chunks
                                 * on libuv's pool, so a FIFO waits there
                                 * for its writer; the transfer, and its
                                 * timeouts, start once it is open; a pipe
                                 * is sent chunked); not with body */
  int http_version;             /* enum uva_http_version */
  int64_t timeout_ms;           /* 0: client's default; < 0: none */
  int64_t connect_timeout_ms;   /* 0: client's default */
  int follow_redirects;         /* enum uva_http_follow */
  long max_redirects;           /* <= 0: client's default */
  size_t max_body;              /* 0: client's default; checked on the
                                 * final body only (not HEAD, not the
                                 * redirects curl follows) */
  char *error;                  /* optional: UVA_HTTP_ERROR_SIZE bytes,
                                 * borrowed until the future is done; gets
                                 * curl's message if the request fails
                                 * ("" otherwise) */
} uva_http_request_t;

#define UVA_HTTP_ERROR_SIZE 256

typedef struct uva_http_header {
  const char *name;             /* as the server sent it */
  const char *value;            /* leading/trailing blanks removed */
} uva_http_header_t;

typedef struct uva_http_response {
  int status;                   /* HTTP status code (200, 404...) */
  int http_version;             /* 10, 11, 20 or 30 */
  const char *effective_url;    /* after redirects */
  int redirects;                /* redirects followed */
  /* Timings in microseconds from the start of the transfer to the end of
   * each phase (curl's *_TIME_T; a phase that did not happen, e.g. TLS on
   * http:// or DNS on a reused connection, reads 0): */
  uint64_t dns_us;              /* name resolved */
  uint64_t connect_us;          /* TCP connected */
  uint64_t tls_us;              /* TLS handshake done */
  uint64_t first_byte_us;       /* first response byte received */
  uint64_t total_us;            /* transfer complete */
  size_t nheaders;              /* headers of the final response, in order */
  uva_http_header_t *headers;
  char *body;                   /* body_len bytes, then a NUL */
  size_t body_len;
  size_t body_cap_;             /* private from here on */
  struct body_pool *pool_;
} uva_http_response_t;

/* Free a response (everything it points to). NULL is ignored. */
void uva_http_response_free(uva_http_response_t *r);
/* First header named name (case-insensitive), borrowed from r; NULL if
 * absent. */
const char *uva_http_response_header(const uva_http_response_t *r, const char *name);

/* Start a request on client c. Value: a uva_http_response_t * (free_fn
 * uva_http_response_free; free a taken one with uva_http_response_free),
 * status 0. Errors: see above; bad arguments (c NULL or of another loop,
 * rq NULL, a header with CR/LF...) give a future already failed with
 * UV_EINVAL (a client used after uva_http_client_free is undefined
 * behaviour, as any freed pointer). NULL on ENOMEM. Cancelling (uva_cancel, wait_for) removes the transfer from curl
 * at once and completes the future with UV_ECANCELED. rq and everything it
 * points to may be freed as soon as this returns, except the error buffer,
 * borrowed until the future is done. A body_file that cannot be opened
 * fails the future with the open error (UV_ENOENT, UV_EACCES, UV_EISDIR). */
uva_future_t *uva_http_request(uva_http_client_t *c, const uva_http_request_t *rq);
/* A GET of url with the client's defaults. */
uva_future_t *uva_http_get(uva_http_client_t *c, const char *url);

/* Streaming: the body is read chunk by chunk instead of collected.
 *
 * uva_http_stream_open starts rq on c like uva_http_request. Its value,
 * once the headers of the final response are in, is a uva_http_stream_t *
 * (free_fn uva_http_stream_close; close a taken one yourself). The errors
 * are those of uva_http_request; a failure after the headers shows up on
 * uva_http_stream_read instead.
 *
 * Back-pressure: the library buffers at most the client's stream_buffer
 * bytes (plus one network chunk) per stream; when the reader falls behind
 * the transfer is paused (curl_easy_pause) and resumed as it reads. max_body
 * still applies to the whole body. */
typedef struct uva_http_stream uva_http_stream_t;
uva_future_t *uva_http_stream_open(uva_http_client_t *c, const uva_http_request_t *rq);
/* The response head (status, version, effective URL, headers; body empty).
 * Borrowed from s. Its timings are filled in when the body has ended. */
const uva_http_response_t *uva_http_stream_response(const uva_http_stream_t *s);
/* Read up to len bytes of body into buf (borrowed until done). Status:
 * bytes read (> 0), UV_EOF once the whole body was read, or the transfer's
 * error (UV_ECONNRESET, UV_ETIMEDOUT, UV_E2BIG...); errors are sticky.
 * One read at a time: a second read while one is pending fails with
 * UV_EBUSY; len 0 gives 0 at once; s NULL gives UV_EINVAL. */
uva_future_t *uva_http_stream_read(uva_http_stream_t *s, void *buf, size_t len);
/* curl's message for the error the stream's transfer ended with ("" if
 * none). Borrowed from s. */
const char *uva_http_stream_error(const uva_http_stream_t *s);
/* Body bytes received and not yet read (0 for NULL). */
size_t uva_http_stream_buffered(const uva_http_stream_t *s);
/* Stop the transfer if it is still running, fail a pending read with
 * UV_ECANCELED and free s. NULL is ignored. A stream must be closed before
 * its client is freed (a client freed first ends the transfer with
 * UV_ECANCELED; the stream is still closed by its owner). */
void uva_http_stream_close(uva_http_stream_t *s);

/* ------------------------------------------------------------ debug mode */
/* asyncio's debug mode, in C terms. Turn it on for every loop of the process
 * with UVA_DEBUG=1 in the environment (read when a loop is made: uva_run,
 * uva_loop_new, uva_loop_attach), or for one loop with uva_loop_set_debug.
 * It reports four kinds of mistakes:
 *
 *  UVA_DEBUG_BLOCKED      a task step or a done callback has run for longer
 *                         than the threshold without giving the loop back
 *                         (a blocking sleep(), read() or long computation in
 *                         a task). Reported WHILE the loop is blocked, from
 *                         a watchdog thread: the task's name, the function it
 *                         was spawned with, where it was spawned and where it
 *                         last awaited (or the callback's function).
 *                         Followed by UVA_DEBUG_UNBLOCKED, on the loop's
 *                         thread, with the whole stall, once the step ends.
 *                         Time the loop spends waiting for I/O, and time the
 *                         thread spends outside the loop (between two
 *                         uva_loop_run_until calls, or in an attached loop's
 *                         own callbacks) is never reported.
 *  UVA_DEBUG_UNRETRIEVED  a task failed (status < 0, not UV_ECANCELED) and
 *                         nobody read its status before it was freed
 *                         (asyncio: "Task exception was never retrieved").
 *                         Reading is uva_await, uva_future_status,
 *                         uva_future_value, uva_future_take, or handing the
 *                         task to gather, wait_for, shield or a group;
 *                         uva_wait only borrows and does not count.
 *  UVA_DEBUG_FORGOTTEN    at uva_loop_close, after every task has been
 *                         cancelled and has ended: a task or future still
 *                         referenced by the program (never awaited nor
 *                         released), with where it was spawned or created.
 *  UVA_DEBUG_UNCLOSED     at uva_loop_close: an HTTP client or stream, a TCP
 *                         or Unix stream or server, an executor or a process
 *                         still open, with where it was made (aiohttp:
 *                         "Unclosed client session").
 *
 * Creation sites. Tasks: the file and line of uva_spawn (the macros). Other
 * futures and resources: the call stack is recorded when they are made
 * (a few return addresses, about 1 us each) and resolved only when a report
 * needs it, with dladdr and, when the program has debug information and
 * addr2line (binutils) is installed, to file:line. Without those, a site
 * reads "module+0xoffset" (feed it to addr2line -e module).
 *
 * Cost: with debug mode off, a predictable branch at each hook (nothing
 * measurable). On: a mutex and a coarse clock read at each task switch and
 * done callback, the stack walk for each future made, and a watchdog thread
 * that wakes every half threshold. */

enum uva_debug_kind {
  UVA_DEBUG_BLOCKED = 1,     /* the loop is blocked now (watchdog thread) */
  UVA_DEBUG_UNBLOCKED = 2,   /* the blocked step ended: the whole stall */
  UVA_DEBUG_UNRETRIEVED = 3, /* a failed task's error was never read */
  UVA_DEBUG_FORGOTTEN = 4,   /* a future or task still referenced at close */
  UVA_DEBUG_UNCLOSED = 5     /* a resource still open at close */
};

/* One report. Every pointer is borrowed for the duration of the callback;
 * fields that do not apply to the kind are NULL or 0. */
typedef struct uva_debug_report {
  int kind;                /* enum uva_debug_kind */
  const char *message;     /* the report as one line, as printed to stderr
                            * (without "uvasync debug: " and the newline) */
  const char *object;      /* "task", a future's kind ("future", "sleep",
                            * "gather"...), a resource ("HTTP client", "TCP
                            * stream", "TCP server", "executor"...), or
                            * "callback" for a blocking done callback */
  const char *task;        /* the task's name ("task-N" unless named) */
  const char *fn;          /* the task's function or the blocking callback:
                            * its symbol, else "module+0xoffset" */
  const char *site;        /* where the task was spawned or the object made:
                            * "file.c:42", else a symbol or module+0xoffset
                            * (several, innermost first, when nothing tells
                            * the library's frames from the program's);
                            * NULL if unknown */
  const char *await_site;  /* BLOCKED, UNBLOCKED: the task's last await
                            * ("file.c:42"); NULL before its first await */
  int status;              /* UNRETRIEVED: the error; FORGOTTEN: the status
                            * (UVA_EPENDING if not done) */
  uint64_t ms;             /* BLOCKED: blocked so far; UNBLOCKED: in all */
  uint64_t threshold_ms;   /* BLOCKED, UNBLOCKED: the threshold in force */
} uva_debug_report_t;

/* Receives reports instead of stderr. UVA_DEBUG_BLOCKED arrives on the
 * watchdog thread while the loop's thread is stuck, every other kind on the
 * loop's thread from inside the library: the callback must not call
 * uvasync functions (uva_err_name and uva_strerror excepted) and, on the
 * watchdog thread, must not touch the loop or its objects at all. */
typedef void (*uva_debug_fn)(const uva_debug_report_t *r, void *data);

typedef struct uva_debug_opts {
  int enabled;             /* 0 turns debug mode off */
  uint64_t slow_ms;        /* blocking threshold; 0: UVA_DEBUG_SLOW_MS from
                            * the environment, else 100 (asyncio's
                            * slow_callback_duration) */
  uva_debug_fn report;     /* NULL: one line per report on stderr */
  void *data;              /* passed to report */
  int no_sites;            /* nonzero: do not walk the stack when futures
                            * and resources are made (it costs about 1 us
                            * each); their reports then have no site */
} uva_debug_opts_t;

/* Turn debug mode on or off for loop, or change its options (opts is
 * copied; NULL turns it off). Call it on the loop's thread, also from a
 * task. Turning it on starts the watchdog thread; futures and tasks made
 * before that are not tracked. Turning it off (or closing the loop) joins
 * the watchdog, so no report arrives after this returns. Returns 0,
 * UV_EINVAL (loop NULL), UV_ENOMEM or a libuv thread error. */
int uva_loop_set_debug(uva_loop_t *loop, const uva_debug_opts_t *opts);
/* 1 if debug mode is on for loop, else 0. */
int uva_loop_debug(const uva_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif /* UVASYNC_H */
