/* SPDX-License-Identifier: MIT */
/*
 * A stable unique id per event, shaped like a UUID, so that a store can make
 * writing the same event twice (a retried batch, a replayed file) a no-op.
 * The first 64 bits are the event's time, so ids sort (and index) in time
 * order; the last 64 bits hash every byte of the event.
 */
#ifndef TCP_AUDIT_EVENT_UID_H
#define TCP_AUDIT_EVENT_UID_H

#include <stdint.h>

#include <tcp-audit/plugin.h>

#define EVENT_UID_LEN 37 /* 36 characters and a NUL */

/* salt tells apart ids derived from one event (0: the event's own). */
void event_uid(const struct tcp_audit_event *ev, uint64_t salt, char out[EVENT_UID_LEN]);

#endif
