/* SPDX-License-Identifier: MIT */
/*
 * The durable spool (--spool DIR): every event read is appended to segment
 * files in DIR before any sink sees it, and each sink reads from there at
 * its own position, which is saved in DIR once the sink has flushed.  So a
 * sink that is down holds back nobody, and after kill -9 or a power cut the
 * next start hands each sink what it had not confirmed (at least once).
 *
 * Layout of DIR:
 *   lock                  flock()ed by the running tcp-audit
 *   <20-digit seq>.spool  a segment: a header, then fixed-size records, each
 *                         with its position (seq) and a CRC-32C: the whole
 *                         event (format 1), or without host and machine
 *                         where those are the origin's (format 2)
 *   <sink label>.position the next position that sink needs, as text
 * Positions count records from the first ever written to this DIR.
 */
#ifndef TCP_AUDIT_SPOOL_H
#define TCP_AUDIT_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#include <tcp-audit/plugin.h>

#include "origin.h"

enum spool_on_full {
	SPOOL_BLOCK = 0,       /* reading waits until a sink confirms */
	SPOOL_DROP_OLDEST = 1, /* the oldest segment goes, the loss is counted */
};

#define SPOOL_MAX_SINKS 64
#define SPOOL_MIN_BYTES (1ull << 20)

struct spool_config {
	const char *dir;
	const struct origin *origin; /* put into the gap records the spool makes (NULL: none) */
	uint64_t max_bytes; /* cap on the segment files together */
	int on_full;        /* enum spool_on_full */
};

struct spool;

/*
 * Opens (creating it if needed) and locks the spool, and recovers what is
 * there: each sink starts at its saved position; a sink without one starts
 * with new events.  Damaged segment files are reported and moved aside as
 * NAME.damaged; spool_lost() then counts the records lost that way.  Returns 0 or a
 * negative errno with a message in err.
 */
int spool_open(struct spool **out, const struct spool_config *cfg, const char *const *labels,
	       size_t n_sinks, char *err, size_t errlen);

/* Flushes, saves the positions and frees (NULL is fine). */
void spool_close(struct spool *s);

/* The position the next appended record gets. */
uint64_t spool_end(struct spool *s);

/* Where sink i starts (after spool_open). */
uint64_t spool_start(struct spool *s, size_t sink);

/*
 * Appends up to n events (reader thread only).  Returns how many went in:
 * fewer than n (maybe 0) when the cap is reached under SPOOL_BLOCK, unless
 * force (at a stop: better over the cap than lost); under
 * SPOOL_DROP_OLDEST, *dropped gets the records removed before a sink had
 * them.  A negative errno on a write error (the file is left as it was).
 */
ssize_t spool_append(struct spool *s, const struct tcp_audit_event *ev, size_t n, bool force,
		     uint64_t *dropped);

/*
 * Reads sink i's records from pos (below end) into out (up to max).  Records
 * the sink will never get (dropped at the cap, in a damaged file, damaged)
 * become one gap record each run in its stream; damage is logged with its
 * place.  *next: the position after what was consumed.
 * Returns how many events were put in out, or a negative errno.
 */
ssize_t spool_read(struct spool *s, size_t sink, uint64_t pos, uint64_t end,
		   struct tcp_audit_event *out, size_t max, uint64_t *next);

/*
 * Sink i has stored everything before pos durably: saves pos and removes the
 * segments no sink needs any more.  Returns 0 or a negative errno.
 */
int spool_confirm(struct spool *s, size_t sink, uint64_t pos);

/* Bytes in the segment files now, and the cap. */
uint64_t spool_bytes(struct spool *s);
uint64_t spool_cap(struct spool *s);

/* Records lost so far: dropped at the cap, damaged (found at open or read). */
uint64_t spool_lost(struct spool *s);

#endif
