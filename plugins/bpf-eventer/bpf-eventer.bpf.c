// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The kernel half of the bpf eventer: every TCP state change from the
 * sock:inet_sock_set_state tracepoint, with the socket's owner, into a ring
 * buffer that wakes the reader only when enough is waiting.
 *
 * Owners: many transitions run in softirq context, where the task on the CPU
 * is not the socket's owner.  The owner is recorded where it is known, in
 * process context: a connect() (CLOSED->SYN-SENT) and a listen()
 * (->LISTEN) run in the owner's syscall; a child socket first inherits its
 * listener's owner and then gets the process that accept()s it.  The map is
 * keyed by socket address and forgotten when the socket reaches CLOSED.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf-eventer.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Settings, fixed before load (0 / empty: no filter). */
const volatile __u64 wakeup_bytes = 1 << 20;
const volatile __u16 filter_family = 0;
const volatile __u32 n_ports = 0, n_lports = 0, n_rports = 0;
const volatile __u16 ports[TA_MAX_PORTS] = {};
const volatile __u16 lports[TA_MAX_PORTS] = {};
const volatile __u16 rports[TA_MAX_PORTS] = {};
const volatile __u32 n_prefixes = 0;
const volatile struct ta_prefix prefixes[TA_MAX_PREFIXES] = {};
const volatile __u32 state_mask = 0; /* bit n: new state n passes */
const volatile __u32 filter_netns = 0;
const volatile __u64 filter_cgroup = 0;

__u64 seq_counter = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* set by user space */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/*
 * The kernel does not run a BPF program inside itself on one CPU: when a
 * softirq interrupts on_state_btf and hits the tracepoint again, that run is
 * skipped (and counted in the program's recursion_misses).  A second program
 * on the same tracepoint rescues those: it does the work only while the first
 * is busy below it on this CPU.  Loss is then primary misses - rescued.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* [0]: primary busy depth, [1]: rescued events */
	__type(key, __u32);
	__type(value, __u64);
} nesting SEC(".maps");

struct owner {
	__u32 pid;
	__u32 uid;
	char comm[TA_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, __u64); /* struct sock address */
	__type(value, struct owner);
} owners SEC(".maps");

struct listener_key {
	__u32 netns;
	__u16 family;
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct listener_key);
	__type(value, struct owner);
} listeners SEC(".maps");

static __always_inline void current_owner(struct owner *o)
{
	__u64 id = bpf_get_current_pid_tgid();

	o->pid = id >> 32;
	o->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

static __always_inline bool port_in(const volatile __u16 *list, __u32 n, __u16 port)
{
	for (__u32 i = 0; i < TA_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (list[i] == port)
			return true;
	}
	return false;
}

static __always_inline bool in_prefix(const volatile struct ta_prefix *p, __u16 family,
				      const __u8 *addr)
{
	__u32 bits = p->bits;

	if (p->family != family)
		return false;
	for (__u32 i = 0; i < 16; i++) {
		if (bits == 0)
			return true;
		__u8 mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
		if ((addr[i] & mask) != (p->addr[i] & mask))
			return false;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return true;
}

static __always_inline bool passes(const struct ta_record *r)
{
	if (filter_family && r->family != filter_family)
		return false;
	if (n_ports && !port_in(ports, n_ports, r->sport) && !port_in(ports, n_ports, r->dport))
		return false;
	if (n_lports && !port_in(lports, n_lports, r->sport))
		return false;
	if (n_rports && !port_in(rports, n_rports, r->dport))
		return false;
	if (state_mask && !(state_mask & (1u << (r->newstate & 31))))
		return false;
	if (filter_netns && r->netns != filter_netns)
		return false;
	if (filter_cgroup && r->cgroup_id != filter_cgroup)
		return false;
	if (n_prefixes) {
		bool hit = false;
		for (__u32 i = 0; i < TA_MAX_PREFIXES; i++) {
			if (i >= n_prefixes)
				break;
			if (in_prefix(&prefixes[i], r->family, r->saddr) ||
			    in_prefix(&prefixes[i], r->family, r->daddr)) {
				hit = true;
				break;
			}
		}
		if (!hit)
			return false;
	}
	return true;
}

/* Reads the socket's addresses, ports, namespace, cgroup and socket info. */
static __always_inline void read_sock(struct ta_record *r, struct sock *sk)
{
	struct inet_sock *inet = (struct inet_sock *)sk;

	/* what the tracepoint itself reports (skc_num is gone by the last CLOSE) */
	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->sport = __builtin_bswap16(BPF_CORE_READ(inet, inet_sport));
	r->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (r->family == AF_INET) {
		bpf_core_read(r->saddr, 4, &inet->inet_saddr);
		bpf_core_read(r->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(r->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(r->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	r->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
		if (cg) {
			r->cgroup_id = BPF_CORE_READ(cg, kn, id);
			r->flags |= TA_REC_CGROUP;
		}
	}
	struct socket *so = BPF_CORE_READ(sk, sk_socket);
	if (so) {
		/* the socket's inode: struct socket_alloc { socket; vfs_inode; } */
		struct socket_alloc *sa = (struct socket_alloc *)so;
		r->sock_state = (__u8)BPF_CORE_READ(so, state);
		r->sock_inode = BPF_CORE_READ(sa, vfs_inode.i_ino);
		r->sock_uid = BPF_CORE_READ(sa, vfs_inode.i_uid.val);
		r->sock_gid = BPF_CORE_READ(sa, vfs_inode.i_gid.val);
		r->flags |= TA_REC_SOCKET;
	}
}

/*
 * Keeps the owner map and fills r's owner.  Runs for every TCP event, filtered
 * or not, so that owners are known whatever the filters let through.
 */
static __always_inline void track_owner(struct ta_record *r, __u64 key)
{
	struct owner *o = bpf_map_lookup_elem(&owners, &key);
	struct owner cur;

	if (r->newstate == TCP_SYN_SENT || r->newstate == TCP_LISTEN) {
		/* connect() and listen() run in the owner's own syscall */
		current_owner(&cur);
		bpf_map_update_elem(&owners, &key, &cur, BPF_ANY);
		if (r->newstate == TCP_LISTEN) {
			struct listener_key lk = {r->netns, r->family, r->sport};
			bpf_map_update_elem(&listeners, &lk, &cur, BPF_ANY);
		}
		o = &cur;
	} else if (r->oldstate == TCP_LISTEN && r->newstate != TCP_CLOSE) {
		/* a child socket's first event, before accept(): its listener's owner */
		struct listener_key lk = {r->netns, r->family, r->sport};
		o = bpf_map_lookup_elem(&listeners, &lk);
		if (o) {
			cur = *o;
			bpf_map_update_elem(&owners, &key, &cur, BPF_ANY);
			o = &cur;
		} else {
			bpf_map_delete_elem(&owners, &key); /* whatever was there is stale */
		}
	}
	if (o) {
		r->owner_pid = o->pid;
		r->owner_uid = o->uid;
		__builtin_memcpy(r->owner_comm, o->comm, sizeof(r->owner_comm));
		r->flags |= TA_REC_OWNER;
	}
	if (r->newstate == TCP_CLOSE) {
		bpf_map_delete_elem(&owners, &key);
		if (r->oldstate == TCP_LISTEN) {
			struct listener_key lk = {r->netns, r->family, r->sport};
			bpf_map_delete_elem(&listeners, &lk);
		}
	}
}

static __always_inline int handle(void *ctx, struct sock *sk, int oldstate, int newstate,
				  bool btf)
{
	struct ta_record r = {};

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	r.oldstate = (__u8)oldstate;
	r.newstate = (__u8)newstate;
	read_sock(&r, sk);
	if (r.family != AF_INET && r.family != AF_INET6)
		return 0;
	track_owner(&r, (__u64)sk);
	if (!passes(&r))
		return 0;

	r.seq = __sync_fetch_and_add(&seq_counter, 1) + 1;
	struct ta_record *out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);
		if (n)
			(*n)++;
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	r.ktime = bpf_ktime_get_ns();
	r.pid = id >> 32;
	r.tid = (__u32)id;
	bpf_get_current_comm(r.comm, sizeof(r.comm));
	if (btf) {
		r.cookie = bpf_get_socket_cookie(sk);
		r.flags |= TA_REC_COOKIE;
	}
	__builtin_memcpy(out, &r, sizeof(r));

	/*
	 * Wake the reader only when this record makes the waiting data cross the
	 * threshold; below it (and above, while the reader is busy) it polls on
	 * its own timer.  A wake-up per event would cost the traced workload far
	 * more than the tracing itself.
	 */
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 flags = avail >= wakeup_bytes && avail < wakeup_bytes + 4 * sizeof(r) + 64
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(out, flags);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u64 *busy = bpf_map_lookup_elem(&nesting, &zero);

	if (busy)
		(*busy)++;
	handle(ctx, (struct sock *)sk, oldstate, newstate, true);
	if (busy)
		(*busy)--;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_rescue, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0, one = 1;
	__u64 *busy = bpf_map_lookup_elem(&nesting, &zero);

	if (!busy || *busy == 0)
		return 0; /* the primary program runs, or ran, for this one */
	__u64 *rescued = bpf_map_lookup_elem(&nesting, &one);
	if (rescued)
		(*rescued)++;
	return handle(ctx, (struct sock *)sk, oldstate, newstate, true);
}

/* For kernels whose tracepoint has no BTF: no socket cookie then. */
SEC("tracepoint/sock/inet_sock_set_state")
int on_state_tp(struct trace_event_raw_inet_sock_set_state *args)
{
	return handle(args, (struct sock *)BPF_CORE_READ(args, skaddr),
		      BPF_CORE_READ(args, oldstate), BPF_CORE_READ(args, newstate), false);
}

/*
 * accept() returns a child socket: its owner is the process that accepted it.
 * inet_csk_accept() lost two arguments in Linux 6.10; user space loads the
 * variant that matches the running kernel.
 */
static __always_inline int accepted(struct sock *newsk)
{
	struct owner cur;
	__u64 key = (__u64)newsk;

	/* a child already closed before accept() must not leave an entry behind */
	if (!newsk || BPF_CORE_READ(newsk, __sk_common.skc_state) == TCP_CLOSE)
		return 0;
	current_owner(&cur);
	bpf_map_update_elem(&owners, &key, &cur, BPF_ANY);
	return 0;
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(on_accept2, struct sock *sk, void *arg, struct sock *ret)
{
	return accepted(ret);
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(on_accept4, struct sock *sk, int flags, int *err, bool kern, struct sock *ret)
{
	return accepted(ret);
}
