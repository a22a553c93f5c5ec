/* SPDX-License-Identifier: MIT */
/*
 * The pipeline: one reader thread drains the eventer into a bounded ring of
 * events; one thread per sink writes from the ring in batches.  Each sink has
 * its own read position, so a slow sink holds the others back only once it
 * is a whole ring behind.  Then the reader keeps reading into a backlog in
 * memory, blocks allocated as it grows and freed as it drains, up to a
 * limit; past it the reader waits (backpressure) and the eventer's own buffer
 * absorbs the burst.  Nothing is dropped in here.
 */
#ifndef TCP_AUDIT_PIPELINE_H
#define TCP_AUDIT_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcp-audit/plugin.h>

#include "log.h"
#include "origin.h"

struct sealer;

struct pipeline;

struct pipeline_stage {
	const struct tcp_audit_plugin *desc;
	void *self;
	struct plugin_logger *logger;
	const char *label; /* "jsonl", or "jsonl#2" when a name repeats */
};

struct pipeline_config {
	size_t queue_size; /* events in the ring */
	size_t batch_size; /* most events per eventer read / sink write */
	uint64_t max_backlog; /* events held beyond the ring while sinks catch up */
	int max_errors;    /* consecutive failures of one plugin that stop the run */
	const struct origin *origin; /* put into events that carry no host */
	/*
	 * With a spool (see spool.h; opened by the caller, who closes it after
	 * pipeline_free()), events go through it instead of the ring and the
	 * backlog: the reader never waits for a sink, each sink reads at its own
	 * pace, and a sink still unavailable stop_grace_ms after a stop leaves
	 * the rest in the spool for the next start.
	 */
	struct spool *spool;
	int stop_grace_ms;
	/* --seal: every batch goes with its seal (seal.h), a chain per sink */
	struct sealer *sealer;
	/*
	 * Called (by the reading thread, no lock held) once reading has ended,
	 * whatever ended it, so that a caller waiting for something else (a
	 * signal) can look at pipeline_wait() at once.  NULL: not called.
	 */
	void (*reading_ended)(void *arg);
	void *reading_ended_arg;
};

enum pipeline_end {
	PIPELINE_RUNNING = 0,
	PIPELINE_END_OF_STREAM, /* the eventer said so: exit 0 */
	PIPELINE_STOPPED,       /* pipeline_stop() was called */
	PIPELINE_FAILED,        /* a plugin failed for good: exit 1 */
};

struct pipeline_sink_stats {
	const char *label;
	uint64_t written;     /* records handed to write() successfully */
	uint64_t undelivered; /* records read but not (yet) written to it */
	uint64_t errors;      /* write()/flush() calls that failed */
	uint64_t retries;     /* calls answered TCP_AUDIT_RETRY (the store unavailable) */
	bool unavailable;     /* its last call was answered with an error or RETRY */
	bool failed;
	bool left_in_spool; /* gave up at the stop: undelivered stays spooled */
	bool sealed_to_the_end; /* --seal: its closing seal is stored */
	uint64_t seals;         /* --seal: seals made for it */
	uint64_t seal_cpu_ns;   /* --seal: CPU time its thread spent making them */
};

struct pipeline_stats {
	uint64_t read;          /* records from the eventer */
	uint64_t lost_kernel;   /* the eventer's count of loss we could not prevent */
	uint64_t lost_queue;    /* always 0: the queue applies backpressure */
	uint64_t lost_spool;    /* dropped to make room (on_full=drop_oldest), or damaged */
	uint64_t spool_bytes;   /* in the spool's files now (0 without one) */
	uint64_t skipped_input; /* records the eventer skipped (malformed input) */
	uint64_t gap_records;   /* gap records the core added for lost_kernel */
	uint64_t backlog;       /* events held in the backlog now */
	uint64_t backlog_peak;  /* most events held in the backlog at once */
	size_t n_sinks;
	struct pipeline_sink_stats sinks[];
};

/*
 * Starts the threads.  The pipeline owns the eventer from here on (it closes
 * it when reading ends); the sinks stay the caller's to close after
 * pipeline_free().  Returns 0 or a negative errno.
 */
int pipeline_start(struct pipeline **out, const struct pipeline_config *cfg,
		   const struct pipeline_stage *eventer, const struct pipeline_stage *sinks,
		   size_t n_sinks);

/* Stop reading; what was read is still delivered.  Async-signal-unsafe. */
void pipeline_stop(struct pipeline *p);

/*
 * Every sink reopens its files (sinker_reopen) before its next write, after
 * flushing what it wrote: SIGHUP, for logrotate.
 */
void pipeline_reopen(struct pipeline *p);

/* Give up on delivering what is left (a second signal). */
void pipeline_abandon(struct pipeline *p);

/*
 * Waits up to timeout_ms for every thread to finish.  Returns true when
 * they have; *end says why the run ended.
 */
bool pipeline_wait(struct pipeline *p, int timeout_ms, enum pipeline_end *end);

/* A snapshot of the counters; free() it. */
struct pipeline_stats *pipeline_stats(struct pipeline *p);

/* Joins the threads that finished and frees everything. */
void pipeline_free(struct pipeline *p);

#endif
