/* SPDX-License-Identifier: MIT */
/*
 * Decodes the kernel's binary trace buffer pages (trace_pipe_raw) into
 * tcp-audit events, through the event's own format description: field
 * offsets and sizes come from the kernel's `format` file, never from text
 * the kernel printed.  Knows sock:inet_sock_set_state and, for kernels
 * before 4.16, tcp:tcp_set_state (which has no family or protocol fields).
 *
 * Kept apart from the tracefs plumbing so that tests and the fuzz target can
 * feed it recorded pages.
 */
#ifndef TCP_AUDIT_TRACEFS_DECODER_H
#define TCP_AUDIT_TRACEFS_DECODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcp-audit/plugin.h>

#include "kernel-helpers.h"

struct tep_handle;

struct ta_field {
	int offset, size; /* size 0: the event has no such field */
};

/* A reset event's fields; id 0: the kernel has no such event. */
struct ta_reset_fields {
	int id;
	size_t record_min;
	bool sockaddrs; /* saddr/daddr are struct sockaddr_in / sockaddr_in6 */
	struct ta_field skaddr, state, reason, sport, dport, family, saddr, daddr, saddr_v6,
		daddr_v6, cookie;
};

struct ta_decoder {
	struct tep_handle *tep;
	int event_id;
	bool legacy; /* tcp:tcp_set_state */
	int page_size;
	uint8_t *page; /* page_size + slack: a private copy of the page being read */
	size_t record_min; /* bytes a record needs to hold every field we read */
	struct ta_field pid, oldstate, newstate, sport, dport, family, protocol, saddr, daddr,
		saddr_v6, daddr_v6, skaddr;
	struct ta_reset_fields sent, received;
	struct reset_reason_map reasons; /* the kernel's reset reasons, from sent's print format */
};

/*
 * Finds the event in tep (sock:inet_sock_set_state, else tcp:tcp_set_state)
 * and its fields, and those of the reset events if tep has them.  Returns 0,
 * or -ENOENT / -EINVAL with a reason in err.
 */
int ta_decoder_init(struct ta_decoder *d, struct tep_handle *tep, char *err, size_t err_size);
void ta_decoder_fini(struct ta_decoder *d);

/*
 * Called for each TCP state change or reset on a page; ts is the raw trace
 * timestamp, skaddr the socket's kernel address (0: none or not known).
 */
typedef int (*ta_record_fn)(void *ctx, struct tcp_audit_event *ev, uint64_t ts, uint64_t skaddr);

/*
 * Decodes one page of len bytes (len <= d->page_size; the bytes after len
 * count as zero).  Events of other protocols and other event types are
 * skipped.  Returns how many events went to fn, -EINVAL for a malformed page
 * (the events before the damage went to fn, nothing after it is used), or
 * fn's negative return.  Loss is not read from pages: the eventer takes it
 * from the kernel's per-CPU stats, which count every drop.
 */
int ta_decoder_page(struct ta_decoder *d, const void *page, size_t len, ta_record_fn fn,
		    void *ctx);

#endif
