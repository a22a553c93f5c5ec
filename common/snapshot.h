/* SPDX-License-Identifier: MIT */
/*
 * The start-up snapshot: the TCP sockets that exist when recording begins,
 * in every network namespace (NETLINK_SOCK_DIAG's inet_diag dump, which gives
 * each socket's cookie and inode), with their owners (the process holding
 * the socket, from /proc/PID/fd).  Needs root: it enters the namespaces and
 * reads every process's file table.
 */
#ifndef TCP_AUDIT_SNAPSHOT_H
#define TCP_AUDIT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>

#include <tcp-audit/plugin.h>

#include "ta-filter.h"

/* Sockets listed at most by default (the rest are counted, not listed). */
#define SNAPSHOT_MAX_DEFAULT 1000000

struct snapshot_socket {
	uint64_t cookie; /* 0: none */
	uint64_t inode;  /* 0: no socket file (orphaned, TIME-WAIT) */
	uint64_t cgroup; /* 0: not known */
	uint32_t netns;
	uint32_t owner_pid; /* 0: no holder found */
	uint32_t owner_uid;
	uint32_t sock_uid, sock_gid; /* with owner_pid: the socket file's */
	uint16_t family, sport, dport;
	uint8_t state;
	bool quiet; /* kept for its owner only: no snapshot record */
	uint8_t saddr[16], daddr[16];
	char owner_comm[TCP_AUDIT_COMM_LEN];
};

struct snapshot {
	struct snapshot_socket *sockets;
	size_t n, cap;
	size_t next;          /* the first not handed out yet */
	uint64_t time_ns;     /* when it was taken: wall clock ... */
	uint64_t ktime_ns;    /* ... and CLOCK_MONOTONIC */
	size_t namespaces;    /* network namespaces read */
	size_t not_listed;    /* sockets over the limit, or filtered out */
	size_t unreadable;    /* namespaces that could not be read */
	uint64_t duration_ns; /* how long taking it took */
};

/* The filters' verdict on a socket, as if it had just entered its state. */
static inline enum ta_verdict snapshot_filter(const volatile struct ta_filter *f,
					      const struct snapshot_socket *sk)
{
	struct ta_subject subject = {sk->cgroup, sk->netns, sk->family, sk->sport, sk->dport,
				     sk->state,  sk->state, sk->saddr,  sk->daddr, 0};

	return ta_filter(f, &subject);
}

/* Decides whether a socket is kept; may set its quiet flag. */
typedef bool (*snapshot_keep_fn)(struct snapshot_socket *sk, void *arg);

/*
 * Takes the snapshot into *s (zeroed first) and logs what it found: at most
 * max sockets that keep (NULL: all) accepts.  Namespaces it cannot enter are
 * skipped and counted.
 * Returns 0, or a negative errno when it could not run at all (logged).
 */
int snapshot_take(struct snapshot *s, size_t max, snapshot_keep_fn keep, void *arg,
		  const struct tcp_audit_host *host);

/* The socket's TCP_AUDIT_KIND_SNAPSHOT event. */
void snapshot_event(const struct snapshot *s, const struct snapshot_socket *sk,
		    struct tcp_audit_event *ev);

/* Moves up to max of the sockets not handed out yet (but the quiet ones) into
 * events; returns how many. */
size_t snapshot_next_events(struct snapshot *s, struct tcp_audit_event *events, size_t max);

void snapshot_free(struct snapshot *s);

#endif
