/* SPDX-License-Identifier: MIT */
/*
 * The record the BPF program writes into the ring buffer, shared by kernel
 * and user space.  Compact on purpose (the public event is 256 bytes): the
 * ring holds more events, and user space fills in the rest.
 */
#ifndef TCP_AUDIT_BPF_EVENTER_H
#define TCP_AUDIT_BPF_EVENTER_H

#include "ta-filter.h"

#define TA_COMM_LEN 16

/* record kinds */
#define TA_KIND_STATE 0  /* a state change */
#define TA_KIND_ACCEPT 1 /* accept() returned the socket of cookie to pid */
#define TA_KIND_RESET_SENT 2     /* a RST sent: state, reason; cookie unless no socket */
#define TA_KIND_RESET_RECEIVED 3 /* a RST received by the socket of cookie */

/* record flags */
#define TA_REC_SOCKET 0x02 /* the socket has a struct socket: inode, uid, gid, state */
#define TA_REC_CGROUP 0x04 /* cgroup_id is the socket's cgroup */
#define TA_REC_QUIET 0x08  /* dropped by the filters: for keeping owners only */
#define TA_REC_CLOSER 0x10 /* close()/shutdown() by the process on the CPU: it holds it */
#define TA_REC_REASON 0x20 /* a reset's reason is the kernel's */
/* an accept record from the getpeername hooks: accept() asked for the peer's
 * address, or a process asked a socket it holds with getpeername() */
#define TA_REC_PEERNAME 0x40

struct ta_record {
	__u64 ktime; /* CLOCK_MONOTONIC ns; 0 in an accept record (no event: see send()) */
	__u64 cookie;
	__u64 cgroup_id;
	__u64 sock_inode;
	__u32 pid; /* on CPU: tgid */
	__u32 tid;
	__u32 uid; /* the on-CPU process's where it names an owner (SYN-SENT, LISTEN, accept) */
	__u32 sock_uid;
	__u32 sock_gid;
	__u32 netns;
	__u16 family;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 kind;
	__u8 oldstate; /* a reset's: the socket's state (0: none) */
	__u8 newstate;
	__u8 sock_state;
	__u8 flags;
	__u8 reason; /* a reset's: the kernel's enum sk_rst_reason */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TA_COMM_LEN];
	__u16 error; /* a transition to CLOSED: the socket's error (errno) */
	__u16 pad;
};

/*
 * Whether r becomes an event (a state change or a reset), as opposed to a
 * record that only keeps owners right (an accept, a quiet record): what a
 * full ring or a stop loses counts as lost events only for these.
 */
static inline __attribute__((always_inline)) int ta_record_is_event(const struct ta_record *r)
{
	return r->kind != TA_KIND_ACCEPT && !(r->flags & TA_REC_QUIET);
}

/*
 * The per-CPU rings (rings.h): each CPU's records go into slots of struct
 * ta_slot, in a ring of ring_slots (a power of 2, set before load) from
 * slot CPU * ring_slots of one array map; its positions are in its struct
 * ta_ring_pos.  A slot is committed for position pos when its `committed`
 * is pos + 1 (no clearing: the previous lap's value is pos + 1 - ring_slots).
 */
struct ta_slot {
	__u64 committed;
	struct ta_record rec;
};

/* a slot per pair of cache lines, never three (the array's data is page-aligned) */
_Static_assert(sizeof(struct ta_slot) == 128, "ring slot size");

struct ta_ring_pos {
	__u64 head; /* positions reserved by the programs */
	__u64 pad0[7];
	__u64 tail; /* positions consumed by user space (the only writer) */
	__u64 pad1[7];
};

/* An event, as the rescue program tells it from others: its socket and states. */
struct ta_event_id {
	__u64 sk; /* the kernel address of the socket */
	__u32 states; /* old << 8 | new */
	__u32 pad;
};

#define TA_NEST_DEPTH 16 /* a power of 2 */

/*
 * Per CPU: the events whose state-change program run has started and whose
 * rescue program run has not yet looked for them, a stack (interrupts nest),
 * and what the rescue program did.
 */
struct nest {
	struct ta_event_id started[TA_NEST_DEPTH];
	__u32 top;     /* entries in started */
	__u32 pad;
	__u64 rescued; /* events on_state_rescue handled */
};

#endif
