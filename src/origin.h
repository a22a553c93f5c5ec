/* SPDX-License-Identifier: MIT */
/*
 * Where events are captured: the host name and the machine id that tcp-audit
 * writes into the events that come without a host (and the gap records it
 * makes), so that a store fed by many hosts tells them apart.
 */
#ifndef TCP_AUDIT_ORIGIN_H
#define TCP_AUDIT_ORIGIN_H

#include <stdbool.h>
#include <stdint.h>

#include <tcp-audit/plugin.h>

struct origin {
	char host[TCP_AUDIT_HOST_LEN];
	uint64_t machine; /* the first 64 bits of /etc/machine-id */
	bool has_machine; /* false when there is no readable machine id */
};

/* host: --host's name, or NULL for gethostname()'s; the machine id from /etc/machine-id. */
void origin_init(struct origin *o, const char *host);

/* Marks an event as captured here: host and machine (the event had no host). */
void origin_stamp(const struct origin *o, struct tcp_audit_event *ev);

#endif
