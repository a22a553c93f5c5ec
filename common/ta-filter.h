/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The eventers' filters (family, ports, address prefixes, states, network
 * namespace, cgroup) as one function, compiled twice: into the BPF program,
 * which filters in the kernel, and into user space, which filters the
 * start-up snapshot the same way.  Needs the __u types (vmlinux.h in BPF,
 * <linux/types.h> in user space).
 */
#ifndef TCP_AUDIT_TA_FILTER_H
#define TCP_AUDIT_TA_FILTER_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define TA_MAX_PORTS 16
#define TA_MAX_PREFIXES 8
#define TA_AF_INET 2
#define TA_AF_INET6 10
#define TA_TCP_SYN_SENT 2
#define TA_TCP_CLOSE 7
#define TA_TCP_LISTEN 10

/* An address prefix; v4 in the first 4 bytes. */
struct ta_prefix {
	__u8 addr[16];
	__u16 family;
	__u16 bits;
	__u32 pad;
};

/* ta_filter.kinds: which kinds of record pass (0: all) */
#define TA_KINDS_STATE 0x1
#define TA_KINDS_RESET 0x2

/* The settings: 0 / empty is no filter.  Fixed before the BPF program loads. */
struct ta_filter {
	__u64 cgroup;
	__u32 netns;
	__u32 state_mask; /* bit n: a transition into state n passes */
	__u32 n_ports, n_lports, n_rports, n_prefixes;
	__u16 family;
	__u16 kinds; /* TA_KINDS_* */
	__u16 ports[TA_MAX_PORTS];  /* either side */
	__u16 lports[TA_MAX_PORTS]; /* local */
	__u16 rports[TA_MAX_PORTS]; /* remote */
	__u16 pad[3];
	struct ta_prefix prefixes[TA_MAX_PREFIXES]; /* either side */
};

/* What the filters look at of one event. */
struct ta_subject {
	__u64 cgroup;
	__u32 netns;
	__u16 family, sport, dport; /* ports in host byte order */
	__u8 oldstate, newstate;
	const __u8 *saddr, *daddr;
	__u8 reset; /* a reset, not a state change: states and state filters do not apply */
};

enum ta_verdict {
	TA_PASS,
	TA_DROP_SOCKET, /* none of this socket's events can pass */
	TA_DROP_EVENT,  /* this one does not pass; others of the socket may */
};

static __always_inline int ta_port_in(const volatile __u16 *list, __u32 n, __u16 port)
{
	for (__u32 i = 0; i < TA_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (list[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline int ta_in_prefix(const volatile struct ta_prefix *p, __u16 family,
					const __u8 *addr)
{
	__u32 bits = p->bits;

	if (p->family != family)
		return 0;
	for (__u32 i = 0; i < 16; i++) {
		if (bits == 0)
			return 1;
		__u8 mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
		if ((addr[i] & mask) != (p->addr[i] & mask))
			return 0;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return 1;
}

/*
 * A connecting socket has no local port yet in its CLOSED->SYN-SENT event
 * (it is chosen just after), so the local port does not decide that one:
 * TA_DROP_EVENT at most.
 */
static __always_inline enum ta_verdict ta_filter(const volatile struct ta_filter *f,
						 const struct ta_subject *s)
{
	int unbound = !s->reset && s->newstate == TA_TCP_SYN_SENT && s->sport == 0;
	enum ta_verdict port_drop = unbound ? TA_DROP_EVENT : TA_DROP_SOCKET;

	if (f->family && s->family != f->family)
		return TA_DROP_SOCKET;
	if (f->netns && s->netns != f->netns)
		return TA_DROP_SOCKET;
	if (f->cgroup && s->cgroup != f->cgroup)
		return TA_DROP_SOCKET;
	/* a listener has no remote side: its children are judged on their own */
	if (!s->reset && (s->newstate == TA_TCP_LISTEN ||
			  (s->oldstate == TA_TCP_LISTEN && s->newstate == TA_TCP_CLOSE)))
		port_drop = TA_DROP_EVENT;
	if (f->n_ports && !ta_port_in(f->ports, f->n_ports, s->sport) &&
	    !ta_port_in(f->ports, f->n_ports, s->dport))
		return port_drop;
	if (f->n_lports && !ta_port_in(f->lports, f->n_lports, s->sport))
		return port_drop;
	if (f->n_rports && !ta_port_in(f->rports, f->n_rports, s->dport))
		return port_drop;
	if (f->n_prefixes) {
		int hit = 0;
		for (__u32 i = 0; i < TA_MAX_PREFIXES; i++) {
			if (i >= f->n_prefixes)
				break;
			if (ta_in_prefix(&f->prefixes[i], s->family, s->saddr) ||
			    ta_in_prefix(&f->prefixes[i], s->family, s->daddr)) {
				hit = 1;
				break;
			}
		}
		if (!hit)
			return port_drop;
	}
	if (s->reset)
		return !f->kinds || (f->kinds & TA_KINDS_RESET) ? TA_PASS : TA_DROP_EVENT;
	if (f->kinds && !(f->kinds & TA_KINDS_STATE))
		return TA_DROP_EVENT; /* quiet: its socket's owner is still followed */
	if (f->state_mask && !(f->state_mask & (1u << (s->newstate & 31))))
		return TA_DROP_EVENT;
	return TA_PASS;
}

#endif
