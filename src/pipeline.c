/* SPDX-License-Identifier: MIT */
/*
 * The pipeline (see pipeline.h).  One mutex guards positions and flags; the
 * events themselves are written by the reader into free ring slots and read
 * by the sinks from published slots without it, so the plugins' callbacks
 * never run under the lock.  The ring is written in place by the eventer's
 * read(), and sinks write straight from it: no event is copied in between.
 */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "event-text.h"
#include "kernel-helpers.h"
#include "seal.h"
#include "spool.h"

#define READ_TIMEOUT_MS 100
#define FLUSH_INTERVAL_NS 1000000000ull
/*
 * A sink that has caught up waits this long for more before it flushes:
 * under a steady stream its flushes (a database's commit, a partial
 * ClickHouse insert that waits for the inserts in flight) then come every
 * FLUSH_INTERVAL_NS, not after every read; a lull flushes 20 ms later.
 */
#define LINGER_MS 20
#define STATS_INTERVAL_NS 1000000000ull
#define DRAIN_LIMIT_NS 3000000000ull /* at most this long reading the rest at a stop */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct sink_thread {
	struct pipeline *p;
	struct pipeline_stage stage;
	pthread_t thread;
	bool started;
	uint64_t read_pos; /* guarded by p->mu */
	uint64_t written;  /* guarded by p->mu */
	bool failed;       /* guarded by p->mu: gave up, no longer holds the ring */
	bool left_in_spool; /* guarded by p->mu: stopped, the rest stays spooled */
	bool reopen;        /* guarded by p->mu: reopen its files before the next write */
	uint64_t errors;    /* guarded by p->mu: failed write()/flush() calls */
	uint64_t retries;   /* guarded by p->mu: TCP_AUDIT_RETRY answers */
	bool unavailable;   /* guarded by p->mu: its last write or flush failed or was a RETRY */
	struct tcp_audit_event *buf; /* spool mode: the batch read from the spool */
	struct seal_chain *chain;    /* --seal: its seals' chain */
	bool chain_closed;           /* guarded by p->mu: its closing seal is stored */
	uint64_t seals;              /* guarded by p->mu: seals made */
	uint64_t seal_cpu_ns;        /* guarded by p->mu: this thread's CPU time making them */
};

/*
 * A block of the backlog: events read while the ring was full, waiting to go
 * into it.  Only the reader touches blocks, so they need no lock; the count
 * of spilled events is under p->mu for the counters.
 */
#define SPILL_EVENTS 4096 /* 1 MiB */
/*
 * Drained blocks kept for reuse (16 MiB at most), so that a backlog that
 * fills and drains with every insert of a slow sink does not map and fault
 * in its memory again each time.
 */
#define SPILL_KEEP 16

struct spill {
	struct spill *next;
	size_t n, taken;
	struct tcp_audit_event ev[SPILL_EVENTS];
};

struct pipeline {
	pthread_mutex_t mu;
	pthread_cond_t data;  /* new events, or reading ended */
	pthread_cond_t space; /* a sink advanced, or stop */
	pthread_cond_t state; /* a thread finished */

	struct pipeline_config cfg;
	struct tcp_audit_event *ring;
	uint64_t cap;
	uint64_t write_pos;

	bool stop;       /* stop reading */
	uint64_t stop_ns; /* CLOCK_MONOTONIC of the stop */
	bool abandon;    /* stop delivering */
	bool reader_done;
	bool failed;
	bool end_of_stream;
	int running; /* threads not yet finished */

	struct spill *spill_head, *spill_tail; /* reader only */
	struct spill *spill_free;              /* reader only: drained blocks kept */
	unsigned n_spill_free;
	uint64_t spilled;                      /* events in the backlog, under mu */
	uint64_t spilled_peak;

	struct pipeline_stage eventer;
	pthread_t reader;
	bool reader_started;
	uint64_t read;
	uint64_t lost_kernel;
	uint64_t skipped_input;
	uint64_t gap_records;

	struct tcp_audit_event *inbuf; /* spool mode: what the eventer reads into */
	uint64_t lost_spool;           /* under mu: abandoned before the spool had them */
	bool spool_waiting, spool_dropping; /* reader only: the episode was logged */

	size_t n_sinks;
	struct sink_thread sinks[];
};

static void deadline_after_ms(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Lowest read position of the sinks still taking events; p->mu held. */
static uint64_t min_read_pos(const struct pipeline *p)
{
	uint64_t min = p->write_pos;

	for (size_t i = 0; i < p->n_sinks; i++)
		if (!p->sinks[i].failed && p->sinks[i].read_pos < min)
			min = p->sinks[i].read_pos;
	return min;
}

/* Contiguous free slots at write_pos (at most max); p->mu held. */
static size_t free_room(const struct pipeline *p, size_t max)
{
	uint64_t used = p->write_pos - min_read_pos(p);
	uint64_t start = p->write_pos & (p->cap - 1);
	uint64_t n = p->cap - used;

	if (n > p->cap - start)
		n = p->cap - start;
	return n < max ? (size_t)n : max;
}

static void publish(struct pipeline *p, size_t n)
{
	pthread_mutex_lock(&p->mu);
	p->write_pos += n;
	pthread_cond_broadcast(&p->data);
	pthread_mutex_unlock(&p->mu);
}

/*
 * A backlog block: a drained one, else a new mapping with its pages made at
 * once (MAP_POPULATE: one call instead of a page fault per 4 KiB, which the
 * reader paid at ~0.4 us an event while a replay ran ahead of a slow sink).
 */
static struct spill *spill_alloc(struct pipeline *p)
{
	struct spill *b = p->spill_free;

	if (b) {
		p->spill_free = b->next;
		p->n_spill_free--;
		return b;
	}
	b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	return b == MAP_FAILED ? NULL : b;
}

static void spill_release(struct pipeline *p, struct spill *b, bool keep)
{
	if (keep && p->n_spill_free < SPILL_KEEP) {
		b->next = p->spill_free;
		p->spill_free = b;
		p->n_spill_free++;
	} else {
		munmap(b, sizeof(*b));
	}
}

/*
 * Moves backlog blocks into the ring while it has room.  With wait, until the
 * backlog is empty (or the run is abandoned).
 */
static void drain_spill(struct pipeline *p, bool wait)
{
	while (p->spill_head) {
		struct spill *b = p->spill_head;
		pthread_mutex_lock(&p->mu);
		size_t room = free_room(p, b->n - b->taken);
		while (wait && room == 0 && !p->abandon) {
			pthread_cond_wait(&p->space, &p->mu);
			room = free_room(p, b->n - b->taken);
		}
		uint64_t start = p->write_pos & (p->cap - 1);
		pthread_mutex_unlock(&p->mu);
		if (room == 0)
			return;
		memcpy(&p->ring[start], &b->ev[b->taken], room * sizeof(b->ev[0]));
		b->taken += room;
		pthread_mutex_lock(&p->mu);
		p->spilled -= room;
		pthread_mutex_unlock(&p->mu);
		publish(p, room);
		if (b->taken == b->n) {
			p->spill_head = b->next;
			if (!p->spill_head)
				p->spill_tail = NULL;
			spill_release(p, b, true);
		}
	}
}

/*
 * Where the next events go: free ring slots when nothing is backlogged, else
 * the backlog's last block while the backlog is under its limit, else wait
 * for the sinks (backpressure).  Returns NULL when reading must stop (unless
 * final, for what must still be delivered).  *room: how many fit; *in_ring.
 */
static struct tcp_audit_event *obtain(struct pipeline *p, size_t max, bool final, size_t *room,
				      bool *in_ring)
{
	if (p->cfg.spool) { /* the spool takes what comes: read into the batch buffer */
		pthread_mutex_lock(&p->mu);
		bool quit = p->abandon || (p->stop && !final);
		pthread_mutex_unlock(&p->mu);
		if (quit)
			return NULL;
		*room = max < p->cfg.batch_size ? max : p->cfg.batch_size;
		*in_ring = false;
		return p->inbuf;
	}
	for (;;) {
		drain_spill(p, false);
		pthread_mutex_lock(&p->mu);
		if (p->abandon || (p->stop && !final)) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		if (!p->spill_head) {
			*room = free_room(p, max);
			if (*room) {
				uint64_t start = p->write_pos & (p->cap - 1);
				pthread_mutex_unlock(&p->mu);
				*in_ring = true;
				return &p->ring[start];
			}
		}
		bool may_spill = p->spilled + max <= p->cfg.max_backlog;
		if (!may_spill) /* backpressure: the eventer's own buffer waits too */
			pthread_cond_wait(&p->space, &p->mu);
		pthread_mutex_unlock(&p->mu);
		if (!may_spill)
			continue;

		struct spill *t = p->spill_tail;
		if (!t || t->n == SPILL_EVENTS) {
			t = spill_alloc(p);
			if (!t) { /* no memory for a backlog: wait for the sinks instead */
				pthread_mutex_lock(&p->mu);
				pthread_cond_wait(&p->space, &p->mu);
				pthread_mutex_unlock(&p->mu);
				continue;
			}
			t->next = NULL;
			t->n = t->taken = 0;
			if (p->spill_tail)
				p->spill_tail->next = t;
			else
				p->spill_head = t;
			p->spill_tail = t;
		}
		*room = SPILL_EVENTS - t->n < max ? SPILL_EVENTS - t->n : max;
		*in_ring = false;
		return &t->ev[t->n];
	}
}

static void spool_commit(struct pipeline *p, const struct tcp_audit_event *ev, size_t n);

/* Hands over n events written where obtain() said. */
static void commit(struct pipeline *p, size_t n, bool in_ring)
{
	if (p->cfg.spool) {
		spool_commit(p, p->inbuf, n);
		return;
	}
	if (in_ring) {
		publish(p, n);
		return;
	}
	p->spill_tail->n += n;
	pthread_mutex_lock(&p->mu);
	p->spilled += n;
	if (p->spilled > p->spilled_peak)
		p->spilled_peak = p->spilled;
	pthread_mutex_unlock(&p->mu);
}

/*
 * Writes a gap record for events the eventer lost, so the archive tells "no
 * connections" from "connections we missed".  It goes in line with the
 * events, and even when reading has been stopped: the loss must reach the
 * sinks.
 */
static void add_gap_record(struct pipeline *p, uint64_t lost)
{
	size_t room;
	bool in_ring;
	struct tcp_audit_event *ev = obtain(p, 1, true, &room, &in_ring);

	if (!ev)
		return;
	memset(ev, 0, sizeof(*ev));
	ev->kind = TCP_AUDIT_KIND_GAP;
	ev->gap_stage = TCP_AUDIT_STAGE_KERNEL;
	ev->gap_lost = lost;
	ev->time_ns = clock_now_ns(CLOCK_REALTIME);
	ev->ktime_ns = clock_now_ns(CLOCK_MONOTONIC);
	ev->valid = TCP_AUDIT_HAS_KTIME;
	origin_stamp(p->cfg.origin, ev);
	pthread_mutex_lock(&p->mu);
	p->gap_records++;
	pthread_mutex_unlock(&p->mu);
	commit(p, 1, in_ring);
}

/*
 * Appends events to the spool.  When it is full (on_full=block) or cannot be
 * written (disk full), reading waits until a sink confirms or the disk has
 * room, logged once per episode; the eventer's kernel buffer takes the burst
 * meanwhile, and counts what it cannot take.  At a stop what was read goes in
 * above the cap rather than be lost.  Under on_full=drop_oldest the spool
 * removes the oldest segment instead; each sink that misses those events
 * finds a gap record in their place.
 */
static void spool_commit(struct pipeline *p, const struct tcp_audit_event *ev, size_t n)
{
	struct spool *sp = p->cfg.spool;
	size_t done = 0;

	while (done < n) {
		uint64_t dropped = 0;
		pthread_mutex_lock(&p->mu);
		bool force = p->stop;
		pthread_mutex_unlock(&p->mu);
		ssize_t k = spool_append(sp, ev + done, n - done, force, &dropped);
		if (dropped && !p->spool_dropping) {
			log_warning("spool is full: dropping the oldest events a sink has not "
				    "had (on_full=drop_oldest); counted, and each sink that misses "
				    "them gets a gap record");
			p->spool_dropping = true;
		}
		if (k > 0) {
			done += (size_t)k;
			publish(p, (size_t)k);
			continue;
		}
		if (!p->spool_waiting) {
			if (k == 0)
				log_warning("spool is full (on_full=block): reading waits for the "
					    "sinks; the kernel's buffer holds new events meanwhile");
			else
				log_error("spool: cannot append: %s: reading waits and retries",
					  strerror((int)-k));
		}
		p->spool_waiting = true;
		struct timespec deadline;
		deadline_after_ms(&deadline, BACKOFF_MIN_MS);
		pthread_mutex_lock(&p->mu);
		if (p->abandon) {
			p->lost_spool += n - done;
			pthread_mutex_unlock(&p->mu);
			return;
		}
		pthread_cond_timedwait(&p->space, &p->mu, &deadline);
		pthread_mutex_unlock(&p->mu);
	}
	/* an episode ends when the spool has room to spare again */
	if ((p->spool_dropping || p->spool_waiting) && spool_bytes(sp) < spool_cap(sp) / 2) {
		log_info("spool is below half full again");
		p->spool_dropping = p->spool_waiting = false;
	}
}

/* at_stop: after the drain, when what is left unread counts too */
static void poll_eventer_stats(struct pipeline *p, bool at_stop)
{
	struct tcp_audit_eventer_stats st = {0};
	const struct tcp_audit_plugin *d = p->eventer.desc;

	if (!d->eventer_stats || d->eventer_stats(p->eventer.self, &st) < 0)
		return;
	pthread_mutex_lock(&p->mu);
	uint64_t new_loss = st.lost > p->lost_kernel ? st.lost - p->lost_kernel : 0;
	p->lost_kernel += new_loss;
	p->skipped_input = st.skipped;
	pthread_mutex_unlock(&p->mu);
	if (new_loss) {
		log_warning("%s lost %llu events (%llu in all): %s; a gap record goes to every sink",
			    p->eventer.label, (unsigned long long)new_loss,
			    (unsigned long long)p->lost_kernel,
			    at_stop ? "the kernel buffer was full or the kernel skipped their tracing "
				      "program's run, or they were still in the buffer when the stop's "
				      "drain ran out of time"
				    : "the kernel buffer was full or the kernel skipped their tracing "
				      "program's run (nested in another on its CPU)");
		add_gap_record(p, new_loss);
	}
}

static void fill_host(struct pipeline *p, struct tcp_audit_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!(ev[i].valid & TCP_AUDIT_HAS_HOST))
			origin_stamp(p->cfg.origin, &ev[i]);
	}
}

/*
 * With p->mu held, for a sink that has read everything up to pos: whether
 * more comes within LINGER_MS (never once reading is done: the end is
 * flushed at once).
 */
static bool more_soon(struct pipeline *p, uint64_t pos)
{
	struct timespec deadline;

	deadline_after_ms(&deadline, LINGER_MS);
	while (p->write_pos == pos && !p->reader_done && !p->abandon)
		if (pthread_cond_timedwait(&p->data, &p->mu, &deadline) == ETIMEDOUT)
			break;
	return p->write_pos != pos && !p->abandon;
}

/* Sleeps up to ms unless the pipeline is told to stop (or abandon). */
static void pause_ms(struct pipeline *p, int ms, bool until_abandon_only)
{
	struct timespec deadline;

	deadline_after_ms(&deadline, ms);
	pthread_mutex_lock(&p->mu);
	while (!p->abandon && (until_abandon_only || !p->stop))
		if (pthread_cond_timedwait(&p->space, &p->mu, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&p->mu);
}

/* Hands over n events an eventer read into dest (where obtain() said). */
static void take(struct pipeline *p, struct tcp_audit_event *dest, size_t n, size_t room,
		 bool in_ring)
{
	if (n > room)
		n = room; /* a broken plugin must not run past the buffer */
	fill_host(p, dest, n);
	pthread_mutex_lock(&p->mu);
	p->read += (uint64_t)n;
	pthread_mutex_unlock(&p->mu);
	commit(p, n, in_ring);
}

/*
 * Stopping: takes what the eventer's buffer already holds (a kernel ring's
 * events happened before the stop), for at most DRAIN_LIMIT_NS under a
 * load that keeps adding to it.
 */
static void drain_eventer(struct pipeline *p)
{
	const struct tcp_audit_plugin *d = p->eventer.desc;
	uint64_t deadline = clock_now_ns(CLOCK_MONOTONIC) + DRAIN_LIMIT_NS;

	while (clock_now_ns(CLOCK_MONOTONIC) < deadline) {
		size_t room;
		bool in_ring;
		struct tcp_audit_event *dest = obtain(p, p->cfg.batch_size, true, &room, &in_ring);
		if (!dest)
			return; /* abandoned */
		int n = d->eventer_read(p->eventer.self, dest, room, TCP_AUDIT_READ_DRAIN);
		if (n <= 0)
			return;
		take(p, dest, (size_t)n, room, in_ring);
	}
}

static void *reader_main(void *arg)
{
	struct pipeline *p = arg;
	const struct tcp_audit_plugin *d = p->eventer.desc;
	uint64_t next_stats = clock_now_ns(CLOCK_MONOTONIC) + STATS_INTERVAL_NS;
	int errors = 0;
	bool stopped = false;

	for (;;) {
		size_t room;
		bool in_ring;
		struct tcp_audit_event *dest = obtain(p, p->cfg.batch_size, false, &room, &in_ring);
		if (!dest) {
			stopped = true;
			break;
		}

		int n = d->eventer_read(p->eventer.self, dest, room, READ_TIMEOUT_MS);
		if (n > 0) {
			take(p, dest, (size_t)n, room, in_ring);
			errors = 0;
		} else if (n == TCP_AUDIT_END) {
			pthread_mutex_lock(&p->mu);
			p->end_of_stream = true;
			pthread_mutex_unlock(&p->mu);
			break;
		} else if (n == TCP_AUDIT_FATAL) {
			log_error("%s cannot go on: stopping", p->eventer.label);
			pthread_mutex_lock(&p->mu);
			p->failed = true;
			pthread_mutex_unlock(&p->mu);
			break;
		} else if (n < 0) {
			errors++;
			log_error("%s: read failed: %s (%d in a row)", p->eventer.label,
				  strerror(-n), errors);
			if (errors >= p->cfg.max_errors) {
				log_error("%s failed %d times in a row: stopping", p->eventer.label,
					  errors);
				pthread_mutex_lock(&p->mu);
				p->failed = true;
				pthread_mutex_unlock(&p->mu);
				break;
			}
			pause_ms(p, BACKOFF_MIN_MS, false);
		}
		uint64_t now = clock_now_ns(CLOCK_MONOTONIC);
		if (now >= next_stats) {
			poll_eventer_stats(p, false);
			next_stats = now + STATS_INTERVAL_NS;
		}
	}
	if (stopped)
		drain_eventer(p);
	poll_eventer_stats(p, stopped);
	d->eventer_close(p->eventer.self);
	p->eventer.self = NULL;
	drain_spill(p, true); /* what was read goes to the sinks */
	while (p->spill_head) { /* abandoned: drop it */
		struct spill *b = p->spill_head;
		p->spill_head = b->next;
		spill_release(p, b, false);
	}
	p->spill_tail = NULL;
	while (p->spill_free) {
		struct spill *b = p->spill_free;
		p->spill_free = b->next;
		spill_release(p, b, false);
	}
	p->n_spill_free = 0;

	pthread_mutex_lock(&p->mu);
	p->reader_done = true;
	p->running--;
	pthread_cond_broadcast(&p->data);
	pthread_cond_broadcast(&p->state);
	pthread_mutex_unlock(&p->mu);
	if (p->cfg.reading_ended)
		p->cfg.reading_ended(p->cfg.reading_ended_arg);
	return NULL;
}

/* p->mu held. */
static void request_stop(struct pipeline *p)
{
	if (!p->stop)
		p->stop_ns = clock_now_ns(CLOCK_MONOTONIC);
	p->stop = true;
	pthread_cond_broadcast(&p->space);
}

/* For the metrics: a sink's failed and retried calls (rare: a lock is fine). */
static void note_trouble(struct sink_thread *s, uint64_t errors, uint64_t retries,
			 bool unavailable)
{
	pthread_mutex_lock(&s->p->mu);
	s->errors += errors;
	s->retries += retries;
	s->unavailable = unavailable;
	pthread_mutex_unlock(&s->p->mu);
}

/*
 * Calls write() (or flush() when n == 0) until it succeeds.  RETRY waits with
 * a growing backoff and is not a failure; other errors count, and max_errors
 * in a row make the sink give up.  Returns false when it gave up or the run
 * was abandoned.
 */
static bool deliver_as(struct sink_thread *s, const struct tcp_audit_event *ev, size_t n,
		       bool closing)
{
	struct pipeline *p = s->p;
	const struct tcp_audit_plugin *d = s->stage.desc;
	int errors = 0, backoff = BACKOFF_MIN_MS;
	uint64_t unavailable_since = 0;
	struct tcp_audit_seal seal;
	bool sealed = s->chain && (n || closing);

	/* made once: a retried batch comes with the same seal */
	if (sealed) {
		uint64_t t0 = clock_now_ns(CLOCK_THREAD_CPUTIME_ID);
		int r = seal_chain_make(s->chain, ev, n, closing, &seal);
		if (r != 0) {
			log_error("%s: cannot seal a batch: %s", s->stage.label,
				  r == -ENOMEM ? "out of memory" : "libcrypto's AES-256-GCM failed");
			return false;
		}
		uint64_t spent = clock_now_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		pthread_mutex_lock(&p->mu);
		s->seals++;
		s->seal_cpu_ns += spent;
		pthread_mutex_unlock(&p->mu);
	}
	for (;;) {
		int r = sealed ? d->sinker_write_sealed(s->stage.self, ev, n, &seal)
			: n    ? d->sinker_write(s->stage.self, ev, n)
			       : (d->sinker_flush ? d->sinker_flush(s->stage.self) : 0);
		if (r == 0) {
			if (sealed)
				seal_chain_advance(s->chain);
			if (unavailable_since)
				log_info("%s is writing again after %.1f s", s->stage.label,
					 (double)(clock_now_ns(CLOCK_MONOTONIC) - unavailable_since) / 1e9);
			if (errors || unavailable_since)
				note_trouble(s, 0, 0, false);
			return true;
		}
		note_trouble(s, r != TCP_AUDIT_RETRY, r == TCP_AUDIT_RETRY, true);
		if (r == TCP_AUDIT_RETRY) {
			if (!unavailable_since) {
				unavailable_since = clock_now_ns(CLOCK_MONOTONIC);
				log_warning("%s is unavailable: holding its events and retrying",
					    s->stage.label);
			}
		} else {
			errors++;
			log_error("%s: %s failed: %s (%d in a row)", s->stage.label,
				  n ? "write" : "flush", r < 0 && r > -4096 ? strerror(-r) : "error",
				  errors);
			if (errors >= p->cfg.max_errors) {
				log_error("%s failed %d times in a row: stopping", s->stage.label,
					  errors);
				return false;
			}
		}
		pause_ms(p, backoff, true);
		pthread_mutex_lock(&p->mu);
		bool abandon = p->abandon;
		bool leave = p->cfg.spool && p->stop &&
			     clock_now_ns(CLOCK_MONOTONIC) >=
				     p->stop_ns + (uint64_t)p->cfg.stop_grace_ms * 1000000u;
		if (leave)
			s->left_in_spool = true;
		uint64_t left = p->write_pos - s->read_pos;
		pthread_mutex_unlock(&p->mu);
		if (abandon)
			return false;
		if (leave) {
			log_warning("%s still cannot store %.1f s after the stop: its %llu undelivered "
				    "events stay in the spool for the next start",
				    s->stage.label, (double)p->cfg.stop_grace_ms / 1000.0,
				    (unsigned long long)left);
			return false;
		}
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

static bool deliver(struct sink_thread *s, const struct tcp_audit_event *ev, size_t n)
{
	return deliver_as(s, ev, n, false);
}

/*
 * At the end of a sink that stored everything: its closing seal, flushed.
 * Called and returns with p->mu held.
 */
static bool close_chain(struct sink_thread *s)
{
	struct pipeline *p = s->p;

	if (!s->chain || p->abandon || s->left_in_spool || s->read_pos != p->write_pos)
		return true;
	pthread_mutex_unlock(&p->mu);
	bool ok = deliver_as(s, NULL, 0, true) && deliver(s, NULL, 0);
	pthread_mutex_lock(&p->mu);
	s->chain_closed = ok;
	return ok;
}

/*
 * SIGHUP: what the sink wrote goes into the file it was written to (flushed
 * and, with a spool, its position confirmed, so that a restart does not
 * write it again into the new one), then the sink reopens its files.  A
 * failed reopen is logged, not counted.  Returns false if the flush failed
 * for good.  Called without p->mu; pos: the sink's read position.
 */
static bool reopen_files(struct sink_thread *s, bool dirty, uint64_t pos)
{
	struct pipeline *p = s->p;
	const struct tcp_audit_plugin *d = s->stage.desc;

	if (dirty) {
		if (!deliver(s, NULL, 0))
			return false;
		int r = p->cfg.spool ? spool_confirm(p->cfg.spool, (size_t)(s - p->sinks), pos) : 0;
		if (r < 0)
			log_error("%s: cannot save its spool position: %s", s->stage.label,
				  strerror(-r));
	}
	if (!TCP_AUDIT_PLUGIN_HAS(d, sinker_reopen) || !d->sinker_reopen)
		return true;
	int r = d->sinker_reopen(s->stage.self);
	if (r)
		log_error("%s: cannot reopen its files: %s (it goes on writing where it did)",
			  s->stage.label, r < 0 && r > -4096 ? strerror(-r) : "error");
	return true;
}

static void *sink_main(void *arg)
{
	struct sink_thread *s = arg;
	struct pipeline *p = s->p;
	bool dirty = false, ok = true;
	uint64_t last_flush = clock_now_ns(CLOCK_MONOTONIC);

	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->abandon)
			break;
		if (s->reopen) {
			uint64_t pos = s->read_pos;
			s->reopen = false;
			pthread_mutex_unlock(&p->mu);
			ok = reopen_files(s, dirty, pos);
			dirty = false;
			pthread_mutex_lock(&p->mu);
			if (!ok)
				break;
			continue;
		}
		if (s->read_pos == p->write_pos) {
			if (dirty && more_soon(p, s->read_pos))
				continue;
			if (dirty) {
				/* caught up: make what we wrote visible now */
				pthread_mutex_unlock(&p->mu);
				ok = deliver(s, NULL, 0);
				last_flush = clock_now_ns(CLOCK_MONOTONIC);
				dirty = false;
				pthread_mutex_lock(&p->mu);
				if (!ok)
					break;
				continue;
			}
			if (p->reader_done)
				break;
			pthread_cond_wait(&p->data, &p->mu);
			continue;
		}
		uint64_t start = s->read_pos & (p->cap - 1);
		uint64_t n = p->write_pos - s->read_pos;
		if (n > p->cap - start)
			n = p->cap - start;
		if (n > p->cfg.batch_size)
			n = p->cfg.batch_size;
		pthread_mutex_unlock(&p->mu);

		ok = deliver(s, &p->ring[start], (size_t)n);
		if (ok) {
			dirty = true;
			uint64_t now = clock_now_ns(CLOCK_MONOTONIC);
			if (now - last_flush >= FLUSH_INTERVAL_NS) {
				ok = deliver(s, NULL, 0);
				last_flush = now;
				dirty = false;
			}
		}
		pthread_mutex_lock(&p->mu);
		if (!ok) /* the batch was not written: it stays undelivered */
			break;
		s->read_pos += n;
		s->written += n;
		pthread_cond_broadcast(&p->space);
	}
	if (ok)
		ok = close_chain(s);
	if (!ok && !p->abandon && !s->left_in_spool) {
		s->failed = true;
		p->failed = true;
		request_stop(p); /* stop reading; the other sinks still drain */
	}
	p->running--;
	pthread_cond_broadcast(&p->state);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/*
 * A sink's thread with a spool: reads its batches from the spool at its own
 * position and confirms a position to the spool each time the sink has
 * flushed, so what it stored is not handed to it again after a restart.
 */
static void *sink_spool_main(void *arg)
{
	struct sink_thread *s = arg;
	struct pipeline *p = s->p;
	struct spool *sp = p->cfg.spool;
	size_t idx = (size_t)(s - p->sinks);
	bool dirty = false, ok = true;
	uint64_t last_flush = clock_now_ns(CLOCK_MONOTONIC);
	int read_errors = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->abandon)
			break;
		if (s->reopen) {
			uint64_t pos = s->read_pos;
			s->reopen = false;
			pthread_mutex_unlock(&p->mu);
			ok = reopen_files(s, dirty, pos);
			dirty = false;
			pthread_mutex_lock(&p->mu);
			if (!ok)
				break;
			continue;
		}
		uint64_t pos = s->read_pos, end = p->write_pos;
		if (pos == end && !dirty) {
			if (p->reader_done)
				break;
			pthread_cond_wait(&p->data, &p->mu);
			continue;
		}
		pthread_mutex_unlock(&p->mu);

		uint64_t next = pos;
		ssize_t m = 0;
		if (pos < end) {
			m = spool_read(sp, idx, pos, end, s->buf, p->cfg.batch_size, &next);
			if (m < 0) {
				read_errors++;
				log_error("%s: cannot read the spool: %s (%d in a row)", s->stage.label,
					  strerror((int)-m), read_errors);
				ok = read_errors < p->cfg.max_errors;
				if (ok)
					pause_ms(p, BACKOFF_MIN_MS, true);
				pthread_mutex_lock(&p->mu);
				if (!ok)
					break;
				continue;
			}
			read_errors = 0;
			if (m > 0) {
				ok = deliver(s, s->buf, (size_t)m);
				if (ok)
					dirty = true;
			}
		}
		uint64_t now = clock_now_ns(CLOCK_MONOTONIC);
		bool flush = ok && dirty && now - last_flush >= FLUSH_INTERVAL_NS;
		if (ok && dirty && !flush && next == end) {
			pthread_mutex_lock(&p->mu);
			flush = !more_soon(p, end);
			pthread_mutex_unlock(&p->mu);
		}
		if (flush) {
			ok = deliver(s, NULL, 0);
			last_flush = now;
			dirty = false;
			int r = ok ? spool_confirm(sp, idx, next) : 0;
			if (r < 0)
				log_error("%s: cannot save its spool position: %s", s->stage.label,
					  strerror(-r));
		}
		pthread_mutex_lock(&p->mu);
		if (!ok)
			break;
		s->read_pos = next;
		s->written += (uint64_t)m;
		pthread_cond_broadcast(&p->space);
	}
	if (ok)
		ok = close_chain(s);
	if (!ok && !p->abandon && !s->left_in_spool) {
		s->failed = true;
		p->failed = true;
		request_stop(p);
	}
	p->running--;
	pthread_cond_broadcast(&p->state);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static uint64_t round_up_pow2(uint64_t v)
{
	uint64_t x = 1;

	while (x < v)
		x <<= 1;
	return x;
}

int pipeline_start(struct pipeline **out, const struct pipeline_config *cfg,
		   const struct pipeline_stage *eventer, const struct pipeline_stage *sinks,
		   size_t n_sinks)
{
	struct pipeline *p;
	pthread_condattr_t ca;
	int r;

	p = calloc(1, sizeof(*p) + n_sinks * sizeof(p->sinks[0]));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	if (cfg->spool) { /* no ring: the spool holds the events */
		p->inbuf = calloc(cfg->batch_size, sizeof(*p->inbuf));
		bool no_mem = !p->inbuf;
		for (size_t i = 0; i < n_sinks; i++) {
			p->sinks[i].buf = calloc(cfg->batch_size, sizeof(*p->sinks[i].buf));
			no_mem = no_mem || !p->sinks[i].buf;
			p->sinks[i].read_pos = spool_start(cfg->spool, i);
		}
		p->write_pos = spool_end(cfg->spool);
		if (no_mem) {
			for (size_t i = 0; i < n_sinks; i++)
				free(p->sinks[i].buf);
			free(p->inbuf);
			free(p);
			return -ENOMEM;
		}
	} else {
		p->cap = round_up_pow2(cfg->queue_size < 2 ? 2 : cfg->queue_size);
		p->ring = calloc(p->cap, sizeof(*p->ring));
		if (!p->ring) {
			free(p);
			return -ENOMEM;
		}
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->data, &ca);
	pthread_cond_init(&p->space, &ca);
	pthread_cond_init(&p->state, &ca);
	pthread_condattr_destroy(&ca);
	p->eventer = *eventer;
	p->n_sinks = n_sinks;

	for (size_t i = 0; cfg->sealer && i < n_sinks; i++) {
		p->sinks[i].chain = seal_chain_new(cfg->sealer);
		if (!p->sinks[i].chain) {
			pipeline_free(p);
			return -ENOMEM;
		}
	}
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < n_sinks; i++) {
		struct sink_thread *s = &p->sinks[i];
		s->p = p;
		s->stage = sinks[i];
		r = -pthread_create(&s->thread, NULL, cfg->spool ? sink_spool_main : sink_main, s);
		if (r)
			goto fail;
		s->started = true;
		p->running++;
	}
	r = -pthread_create(&p->reader, NULL, reader_main, p);
	if (r)
		goto fail;
	p->reader_started = true;
	p->running++;
	pthread_mutex_unlock(&p->mu);
	*out = p;
	return 0;
fail:
	/* nothing was read: let the started sinks finish at once */
	p->reader_done = true;
	pthread_cond_broadcast(&p->data);
	pthread_mutex_unlock(&p->mu);
	pipeline_free(p);
	return r;
}

void pipeline_stop(struct pipeline *p)
{
	pthread_mutex_lock(&p->mu);
	request_stop(p);
	pthread_mutex_unlock(&p->mu);
}

void pipeline_reopen(struct pipeline *p)
{
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->n_sinks; i++)
		p->sinks[i].reopen = true;
	pthread_cond_broadcast(&p->data);
	pthread_mutex_unlock(&p->mu);
}

void pipeline_abandon(struct pipeline *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	p->abandon = true;
	pthread_cond_broadcast(&p->space);
	pthread_cond_broadcast(&p->data);
	pthread_mutex_unlock(&p->mu);
}

bool pipeline_wait(struct pipeline *p, int timeout_ms, enum pipeline_end *end)
{
	struct timespec deadline;
	bool done;

	deadline_after_ms(&deadline, timeout_ms);
	pthread_mutex_lock(&p->mu);
	while (p->running > 0)
		if (pthread_cond_timedwait(&p->state, &p->mu, &deadline) == ETIMEDOUT)
			break;
	done = p->running == 0;
	if (p->failed)
		*end = PIPELINE_FAILED;
	else if (p->end_of_stream)
		*end = PIPELINE_END_OF_STREAM;
	else if (p->stop)
		*end = PIPELINE_STOPPED;
	else
		*end = PIPELINE_RUNNING;
	pthread_mutex_unlock(&p->mu);
	return done;
}

struct pipeline_stats *pipeline_stats(struct pipeline *p)
{
	struct pipeline_stats *st = calloc(1, sizeof(*st) + p->n_sinks * sizeof(st->sinks[0]));

	if (!st)
		return NULL;
	pthread_mutex_lock(&p->mu);
	st->read = p->read;
	st->lost_kernel = p->lost_kernel;
	st->lost_queue = 0;
	st->lost_spool = p->lost_spool;
	st->skipped_input = p->skipped_input;
	st->gap_records = p->gap_records;
	st->backlog = p->spilled;
	st->backlog_peak = p->spilled_peak;
	st->n_sinks = p->n_sinks;
	for (size_t i = 0; i < p->n_sinks; i++) {
		st->sinks[i].label = p->sinks[i].stage.label;
		st->sinks[i].written = p->sinks[i].written;
		st->sinks[i].undelivered = p->write_pos - p->sinks[i].read_pos;
		st->sinks[i].failed = p->sinks[i].failed;
		st->sinks[i].errors = p->sinks[i].errors;
		st->sinks[i].retries = p->sinks[i].retries;
		st->sinks[i].unavailable = p->sinks[i].unavailable;
		st->sinks[i].left_in_spool = p->sinks[i].left_in_spool;
		st->sinks[i].sealed_to_the_end = p->sinks[i].chain_closed;
		st->sinks[i].seals = p->sinks[i].seals;
		st->sinks[i].seal_cpu_ns = p->sinks[i].seal_cpu_ns;
	}
	pthread_mutex_unlock(&p->mu);
	if (p->cfg.spool) {
		st->spool_bytes = spool_bytes(p->cfg.spool);
		st->lost_spool += spool_lost(p->cfg.spool);
	}
	return st;
}

void pipeline_free(struct pipeline *p)
{
	if (!p)
		return;
	/* Threads still inside a plugin call (abandoned) are left to exit(). */
	if (p->reader_started && p->reader_done)
		pthread_join(p->reader, NULL);
	for (size_t i = 0; i < p->n_sinks; i++)
		if (p->sinks[i].started)
			pthread_join(p->sinks[i].thread, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->data);
	pthread_cond_destroy(&p->space);
	pthread_cond_destroy(&p->state);
	for (size_t i = 0; i < p->n_sinks; i++) {
		free(p->sinks[i].buf);
		seal_chain_free(p->sinks[i].chain);
	}
	free(p->inbuf);
	free(p->ring);
	free(p);
}
