/* SPDX-License-Identifier: GPL-2.0 */
/*
 * worker.h - slow work off the event loop: a fixed pool of threads that run
 * jobs, and per-owner queues that keep one owner's jobs in order (prefix
 * worker_).
 *
 * A job's run() runs on a worker thread and may only touch what the job
 * itself holds (copies, duplicated fds); its done() runs afterwards on the
 * loop's thread, where the owner's state may change.  worker.c says how the
 * pieces fit and what a queue that goes away waits for.
 */
#ifndef VDF_WORKER_H
#define VDF_WORKER_H

#include <stdbool.h>

struct loop;
struct worker_pool;
struct worker_queue;
struct worker_job;

/* Most jobs one queue holds (waiting + running + finished, not done yet). */
#define WORKER_QUEUE_MAX	16

enum worker_end {
	WORKER_RAN,		/* run() finished; the owner is there */
	WORKER_CANCELLED,	/* the queue is going away: run() may or may not
				 * have run; release the job, touch no owner
				 * state */
};

/* On a worker thread (or inline, see worker_queue_new()). */
typedef void (*worker_run_fn)(struct worker_job *job);
/*
 * On the loop's thread, once per submitted job.  It may submit more jobs
 * (after WORKER_RAN only) but not free or drain the job's own queue.
 */
typedef void (*worker_done_fn)(struct worker_job *job, enum worker_end end);

/* Embedded by the owner in its job; the fields below are worker.c's. */
struct worker_job {
	worker_run_fn run;
	worker_done_fn done;
	struct worker_queue *queue;	/* set by worker_submit() */
};

/*
 * nthreads threads; finished jobs come back through an eventfd the loop
 * watches.  The pool must outlive every queue made from it.
 */
int worker_pool_new(struct loop *loop, unsigned int nthreads,
		    struct worker_pool **ret_pool);
void worker_pool_free(struct worker_pool *p);

/*
 * The daemon's pools (vmdefragd sets them once, before any queue is
 * made), for owners created deep in the tree; NULL until set, and then
 * queues run their jobs inline.  Two, so that monitors that hang (each
 * holding a thread for its command timeout) never take the threads that
 * punch and re-back.
 */
enum worker_class {
	WORKER_BACKING,		/* punch, re-back: bounded by the kernel */
	WORKER_MONITOR,		/* QMP / libvirt: bounded by their timeouts */
	WORKER_NCLASSES,
};

void worker_pool_set_default(enum worker_class c, struct worker_pool *p);
struct worker_pool *worker_pool_default(enum worker_class c);

/*
 * A queue of one owner's jobs: they run one at a time, in the order
 * submitted, and the next one's run() starts only after the previous
 * one's done().  p NULL: every job runs inline, run() then done() within
 * worker_submit() (tests, and a daemon built without threads for it).
 */
int worker_queue_new(struct worker_pool *p, struct worker_queue **ret_queue);
/*
 * Cancels the jobs not started, waits for the running one's run() to
 * return, and calls done(WORKER_CANCELLED) for each; NULL is a no-op.
 * The wait is as long as that run() takes: jobs bound their own work.
 */
void worker_queue_free(struct worker_queue *q);
/* The same, keeping the queue for later jobs. */
void worker_queue_drain(struct worker_queue *q);

/*
 * Queues job (run and done set by the caller).  -EAGAIN when the queue
 * holds WORKER_QUEUE_MAX jobs already (nothing is queued then).  With an
 * inline queue done() has run when this returns 0.
 */
int worker_submit(struct worker_queue *q, struct worker_job *job);

/* Jobs submitted whose done() has not run yet. */
unsigned int worker_queue_pending(const struct worker_queue *q);
bool worker_queue_inline(const struct worker_queue *q);

#endif /* VDF_WORKER_H */
