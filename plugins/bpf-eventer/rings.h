/* SPDX-License-Identifier: MIT */
/*
 * One ring per CPU, read as one stream in time order.
 *
 * A single ring shared by all CPUs costs every event a lock and cache lines
 * that bounce between the CPUs writing it (measured: 130-150 ns an event more
 * with two busy CPUs than with one).  With a ring per CPU nothing is shared,
 * but each ring is only in order within itself; the events of one socket
 * happen on several CPUs (a connect() here, the handshake's softirq there),
 * and user space needs them in order (owners come from a socket's first
 * events).  So the rings are merged by the time each record carries in its
 * first 8 bytes (CLOCK_MONOTONIC ns, taken after the record was reserved):
 * the oldest head goes first, and a record waits while a ring that is empty
 * (or whose next record is still being written) might still get an older
 * one, that is, until it is SLACK older than the moment that ring was seen.
 * (An accept record, which is no event, carries 0: it goes as soon as its
 * ring's records before it have.)
 *
 * The rings are arrays of fixed-size slots that the programs fill and user
 * space reads in place (memory-mapped BPF array maps: struct ta_slot and
 * struct ta_ring_pos in bpf-eventer.h), so a record is never copied before
 * it is used, and a ring is consumed only as far as records were handed
 * out.  A program reserves a position (head) by compare-and-swap, fills the
 * slot, then marks it committed; user space takes committed slots in order
 * and moves tail on.  A reserved slot not yet committed holds its ring back
 * (its record's time is not known yet), as in the kernel's BPF ring buffer,
 * which these replace because its reserve and commit cost ~100 ns more an
 * event.  The programs ring a doorbell (a small BPF ring buffer) when a ring
 * gets enough waiting; below that the reader polls on its own timer.
 */
#ifndef TCP_AUDIT_BPF_RINGS_H
#define TCP_AUDIT_BPF_RINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring_set;

/*
 * Maps the rings of ncpu CPUs of nslots slots each (a power of 2): slot_fd,
 * the array of ncpu * nslots struct ta_slot; pos_fd, the array of ncpu
 * struct ta_ring_pos; doorbell_fd, the BPF ring buffer the programs wake the
 * reader through.  Returns 0 or -errno.
 */
int ring_set_new(struct ring_set **out, int slot_fd, int pos_fd, int doorbell_fd, int ncpu,
		 uint32_t nslots);
void ring_set_free(struct ring_set *s);

/*
 * Starts a pass over the rings: now is CLOCK_MONOTONIC, read before this
 * call.  drain: the producers are gone or going; hand out everything there.
 */
void ring_set_begin(struct ring_set *s, uint64_t now, bool drain);

/*
 * The oldest record that may go now (its length in *len), or NULL: none is
 * waiting, or (*pending) those waiting may not go yet, or one is still being
 * written.  Valid until ring_set_next().
 */
const void *ring_set_peek(struct ring_set *s, size_t *len, bool *pending);

/* Consumes the record ring_set_peek() returned. */
void ring_set_next(struct ring_set *s);

/*
 * How many of the records not yet consumed (committed, not discarded) count
 * for counts(record, len): what a stop leaves unread.  Reads, consumes
 * nothing.
 */
uint64_t ring_set_count_left(struct ring_set *s, bool (*counts)(const void *rec, size_t len));

/*
 * Waits until a ring has data enough to wake us, or timeout_ms.  Returns
 * 1 when woken, 0, or -errno (-EINTR included).
 */
int ring_set_wait(struct ring_set *s, int timeout_ms);

#endif
