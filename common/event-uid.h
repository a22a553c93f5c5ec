/* SPDX-License-Identifier: MIT */
/*
 * A stable unique id per event, shaped like a UUID, so that a store can make
 * writing the same event twice (a retried batch, a replayed file) a no-op.
 * The first 64 bits are the event's time, so ids sort (and index) in time
 * order; the last 64 bits hash every byte of the event.
 */
#ifndef TCP_AUDIT_EVENT_UID_H
#define TCP_AUDIT_EVENT_UID_H

#include <stddef.h>
#include <stdint.h>

#include <tcp-audit/plugin.h>

#define EVENT_UID_LEN 37 /* 36 characters and a NUL */
#define EVENT_UID_BYTES 16

/* The 16 bytes (big-endian time, then the hash): a PostgreSQL uuid as is. */
void event_uid_bytes(const struct tcp_audit_event *ev, uint8_t out[EVENT_UID_BYTES]);

/* The event time a uid holds (its first 64 bits, big-endian). */
static inline uint64_t event_uid_time(const uint8_t uid[EVENT_UID_BYTES])
{
	uint64_t ns = 0;

	for (int i = 0; i < 8; i++)
		ns = ns << 8 | uid[i];
	return ns;
}

/* The same as text: "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", lower case. */
void event_uid_text(const uint8_t uid[EVENT_UID_BYTES], char out[EVENT_UID_LEN]);

/*
 * The uids (bytes) of n events, one after the other, into *buf (grown as
 * needed; *cap its size): what a seal's row lists.  0 or -ENOMEM.
 */
int event_uid_list(const struct tcp_audit_event *ev, size_t n, uint8_t **buf, size_t *cap);

/* Both in one. */
void event_uid(const struct tcp_audit_event *ev, char out[EVENT_UID_LEN]);

#endif
