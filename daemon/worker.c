// SPDX-License-Identifier: GPL-2.0
/*
 * worker.c - a fixed pool of threads for the daemon's slow work, and the
 * per-owner queues that feed it.
 *
 * Why: the daemon serves every VM from one event loop, so anything a
 * callback waits for (punching a backing file, populating and measuring a
 * re-back, a QMP exchange with a QEMU that may be stopped) delays every
 * other VM.  Such work becomes a job: its run() does the waiting on a
 * worker thread, on data the job owns (copied ranges, duplicated fds, a
 * monitor nobody else uses meanwhile), and its done() brings the result
 * back to the loop thread, which alone changes the owner's state (block
 * states, counters, messages to the guest).
 *
 * A job moves through
 *
 *	WAITING --its turn--> READY --a thread takes it--> RUNNING
 *	   --run() returns--> FINISHED --the loop reaps it--> done(RAN)
 *
 * Ordering.  Each owner (a VM's reclaim, a VM's monitor) has a queue.  Only
 * a queue's head is ever READY, RUNNING or FINISHED; the next job becomes
 * READY after the head's done() ran.  So one owner's jobs run one at a time
 * and in order, and each sees the state its predecessor's done() left --
 * a re-back queued after a punch of the same block runs after it.  Jobs of
 * different owners run in parallel on the pool's threads.  The daemon
 * keeps two pools (worker_class): a job that waits on a hung monitor for
 * its timeout holds a monitor thread, never one that punches.
 *
 * Bounds.  A queue holds at most WORKER_QUEUE_MAX jobs; worker_submit()
 * says -EAGAIN beyond (owners coalesce their work, so a full queue means a
 * caller that forgot to).  Nothing here ever refuses on behalf of the
 * guest protocol: owners send their ACKs from done(), not through a queue.
 *
 * Completion.  A finished job is put on the pool's finished list and the
 * eventfd is written; the loop's callback reaps one job per call (the loop
 * serves sources round-robin, so a burst of completions does not starve
 * the guests' sockets), calls its done() and makes the queue's next job
 * READY.
 *
 * Going away.  worker_queue_drain()/free() run on the loop thread: jobs
 * WAITING or READY are taken back unrun, a RUNNING one is waited for
 * (the loop blocks for as long as its run() takes: each job bounds its own
 * work, a QMP command by its timeout), a FINISHED one is taken off the
 * finished list; all of them get done(WORKER_CANCELLED), which releases the
 * job without touching its owner.  After that nothing of the queue is left
 * on any thread, so the owner can be freed: no job outlives its owner.
 *
 * Locking.  pool->lock protects the pool's ready and finished lists, each
 * job's state, and stop; cond wakes threads for READY jobs, finished_cond
 * wakes a drain waiting for a RUNNING job.  A queue's own fields (its job
 * list, count) are touched only on the loop thread and need no lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "worker.h"

enum worker_state {
	WORKER_WAITING,
	WORKER_READY,
	WORKER_RUNNING,
	WORKER_FINISHED,
};

/* Per-job bookkeeping the header leaves opaque: kept beside the job. */
struct worker_slot {
	struct worker_job *job;
	enum worker_state state;	/* pool->lock */
	struct worker_slot *next;	/* pool list it is on (pool->lock) */
};

struct worker_pool {
	struct loop *loop;
	int efd;
	struct loop_io io;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a job became READY, or stop */
	pthread_cond_t finished_cond;	/* a job became FINISHED */
	struct worker_slot *ready, *ready_tail;		/* FIFO */
	struct worker_slot *finished, *finished_tail;	/* FIFO */
	bool stop;
	unsigned int nthreads;
	pthread_t *threads;
};

static struct worker_pool *worker_default[WORKER_NCLASSES];

struct worker_queue {
	struct worker_pool *pool;	/* NULL: inline */
	/* loop thread only: the queue's jobs in order, the head first */
	struct worker_slot slots[WORKER_QUEUE_MAX];
	unsigned int first, n;		/* ring of slots */
};

static void worker_list_push(struct worker_slot **head, struct worker_slot **tail,
			     struct worker_slot *s)
{
	s->next = NULL;
	if (*tail)
		(*tail)->next = s;
	else
		*head = s;
	*tail = s;
}

static struct worker_slot *worker_list_pop(struct worker_slot **head,
					   struct worker_slot **tail)
{
	struct worker_slot *s = *head;

	if (!s)
		return NULL;
	*head = s->next;
	if (!*head)
		*tail = NULL;
	s->next = NULL;
	return s;
}

static void worker_list_remove(struct worker_slot **head, struct worker_slot **tail,
			       struct worker_slot *s)
{
	struct worker_slot *prev = NULL;

	for (struct worker_slot *c = *head; c; prev = c, c = c->next) {
		if (c != s)
			continue;
		if (prev)
			prev->next = c->next;
		else
			*head = c->next;
		if (*tail == c)
			*tail = prev;
		c->next = NULL;
		return;
	}
}

static void *worker_thread(void *arg)
{
	struct worker_pool *p = arg;
	const uint64_t one = 1;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct worker_slot *s;

		while (!p->stop && !p->ready)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop)
			break;
		s = worker_list_pop(&p->ready, &p->ready_tail);
		s->state = WORKER_RUNNING;
		pthread_mutex_unlock(&p->lock);

		s->job->run(s->job);

		pthread_mutex_lock(&p->lock);
		s->state = WORKER_FINISHED;
		worker_list_push(&p->finished, &p->finished_tail, s);
		pthread_cond_broadcast(&p->finished_cond);
		/* the loop reads it after taking the lock: no wakeup is lost */
		if (write(p->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error_errno(-errno, "worker: cannot wake the loop: %m");
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Makes the queue's head READY (loop thread). */
static void worker_queue_kick(struct worker_queue *q)
{
	struct worker_pool *p = q->pool;
	struct worker_slot *s;

	if (!q->n)
		return;
	s = &q->slots[q->first];
	pthread_mutex_lock(&p->lock);
	if (s->state == WORKER_WAITING) {
		s->state = WORKER_READY;
		worker_list_push(&p->ready, &p->ready_tail, s);
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

static struct worker_job *worker_queue_pop(struct worker_queue *q)
{
	struct worker_job *job = q->slots[q->first].job;

	q->slots[q->first].job = NULL;
	q->first = (q->first + 1) % WORKER_QUEUE_MAX;
	q->n--;
	return job;
}

static void worker_pool_io(struct loop_io *io, uint32_t events)
{
	struct worker_pool *p = io->userdata;
	struct worker_queue *q;
	struct worker_slot *s;
	struct worker_job *job;
	uint64_t cnt;

	(void)events;
	pthread_mutex_lock(&p->lock);
	s = worker_list_pop(&p->finished, &p->finished_tail);
	if (!p->finished)	/* drained: let the eventfd go quiet */
		(void)!read(p->efd, &cnt, sizeof(cnt));
	pthread_mutex_unlock(&p->lock);
	if (!s)
		return;
	job = s->job;
	q = job->queue;
	/* only a queue's head is ever FINISHED */
	(void)worker_queue_pop(q);
	job->done(job, WORKER_RAN);
	worker_queue_kick(q);
}

int worker_pool_new(struct loop *loop, unsigned int nthreads,
		    struct worker_pool **ret_pool)
{
	struct worker_pool *p;
	int r;

	if (!nthreads)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->threads = calloc(nthreads, sizeof(*p->threads));
	if (!p->threads) {
		free(p);
		return -ENOMEM;
	}
	p->loop = loop;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pthread_cond_init(&p->finished_cond, NULL);
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		r = -errno;
		goto out_free;
	}
	loop_io_init(&p->io, worker_pool_io, p);
	r = loop_io_add(loop, &p->io, p->efd, EPOLLIN);
	if (r < 0)
		goto out_close;
	for (; p->nthreads < nthreads; p->nthreads++) {
		r = -pthread_create(&p->threads[p->nthreads], NULL, worker_thread, p);
		if (r < 0)
			goto out_stop;
	}
	*ret_pool = p;
	return 0;

out_stop:
	worker_pool_free(p);
	return r;
out_close:
	close(p->efd);
out_free:
	pthread_cond_destroy(&p->finished_cond);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
	return r;
}

void worker_pool_free(struct worker_pool *p)
{
	if (!p)
		return;
	for (int c = 0; c < WORKER_NCLASSES; c++)
		if (worker_default[c] == p)
			worker_default[c] = NULL;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	loop_io_remove(p->loop, &p->io);
	close(p->efd);
	pthread_cond_destroy(&p->finished_cond);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

void worker_pool_set_default(enum worker_class c, struct worker_pool *p)
{
	worker_default[c] = p;
}

struct worker_pool *worker_pool_default(enum worker_class c)
{
	return worker_default[c];
}

int worker_queue_new(struct worker_pool *p, struct worker_queue **ret_queue)
{
	struct worker_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->pool = p;
	*ret_queue = q;
	return 0;
}

int worker_submit(struct worker_queue *q, struct worker_job *job)
{
	struct worker_slot *s;

	if (q->n == WORKER_QUEUE_MAX)
		return -EAGAIN;
	job->queue = q;
	if (!q->pool) {
		job->run(job);
		job->done(job, WORKER_RAN);
		return 0;
	}
	s = &q->slots[(q->first + q->n) % WORKER_QUEUE_MAX];
	s->job = job;
	s->state = WORKER_WAITING;	/* not on any pool list yet: no lock */
	s->next = NULL;
	q->n++;
	if (q->n == 1)
		worker_queue_kick(q);
	return 0;
}

void worker_queue_drain(struct worker_queue *q)
{
	struct worker_pool *p;

	if (!q || !q->n)
		return;
	p = q->pool;
	/* take the head off the pool's lists, waiting for it if it runs */
	pthread_mutex_lock(&p->lock);
	{
		struct worker_slot *s = &q->slots[q->first];

		while (s->state == WORKER_RUNNING)
			pthread_cond_wait(&p->finished_cond, &p->lock);
		if (s->state == WORKER_READY)
			worker_list_remove(&p->ready, &p->ready_tail, s);
		else if (s->state == WORKER_FINISHED)
			worker_list_remove(&p->finished, &p->finished_tail, s);
		s->state = WORKER_WAITING;
	}
	pthread_mutex_unlock(&p->lock);
	/* nothing of this queue is on another thread now */
	while (q->n) {
		struct worker_job *job = worker_queue_pop(q);

		job->done(job, WORKER_CANCELLED);
	}
}

void worker_queue_free(struct worker_queue *q)
{
	if (!q)
		return;
	worker_queue_drain(q);
	free(q);
}

unsigned int worker_queue_pending(const struct worker_queue *q)
{
	return q ? q->n : 0;
}

bool worker_queue_inline(const struct worker_queue *q)
{
	return !q->pool;
}
