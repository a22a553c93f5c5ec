// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The kernel half of the bpf eventer: every TCP state change from the
 * sock:inet_sock_set_state tracepoint (BTF-typed, so the socket is read with
 * plain loads rather than a helper call per field) into per-CPU rings that
 * wake the reader only when enough is waiting, and a record per accept()ed
 * TCP socket from the accept syscalls' exit tracepoints and io_uring's
 * completions.
 *
 * A record per TCP reset sent or received (tcp:tcp_send_reset,
 * tcp:tcp_receive_reset): those run only when a reset happens, never on the
 * path of a connection that ends well.
 *
 * Owners are worked out in user space from these records (bpf-eventer.c):
 * per-socket state in the kernel (socket storage, hash maps) cost more per
 * event than everything else here together.  So that owners stay right under
 * filters, an event the filters drop still goes out, as a quiet record, when
 * it names an owner or ends a socket and the socket may yet pass.
 *
 * Records go through a ring per CPU (a shared ring cost 130-150 ns more an
 * event with two busy CPUs: its lock and cache lines bounce between them),
 * of slots in a memory-mapped array rather than the kernel's BPF ring buffer
 * (~100 ns an event less: see send()).
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
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12
#define ETH_P_IPV6 0x86DD
#define PF_KTHREAD 0x00200000
#define PF_IO_WORKER 0x00000010

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * The kernel's pointer cast for reading (verifier-inlined: no call): an
 * object reached through a void * (a file's private_data) read with typed
 * loads instead of a helper call per field.  libbpf 1.2+ names it
 * bpf_core_cast(); Debian 12's 1.1 has the kfunc, not the macro.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define TA_CAST(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

/* Settings, fixed before load. */
const volatile struct ta_filter filter_cfg = {};

/*
 * A ring per CPU, of fixed-size slots in a memory-mapped array (rings.h says
 * how user space reads them in time order).  Not the kernel's BPF ring
 * buffer: its reserve takes a spinlock with interrupts off and its commit
 * another atomic and a wake-up check, ~100 ns an event on this kind of VM;
 * a slot costs a compare-and-swap and an exchange.  Sized by user space
 * before load (max_entries: CPUs x ring_slots).
 */
const volatile __u32 ring_slots = 1; /* per CPU, a power of 2 */
const volatile __u32 wakeup_records = 1; /* a power of 2 */
const volatile bool rescue = false; /* on_state_rescue is attached: keep its stack */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ta_slot);
} ring_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ta_ring_pos);
} ring_pos SEC(".maps");

/*
 * Wakes the reader: a record (the CPU's number) each time a ring's waiting
 * records reach a multiple of wakeup_records; below that the reader polls on
 * its own timer.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} doorbell SEC(".maps");

/*
 * Records that found their ring full: [0] events, [1] records that only
 * keep owners right (an accept, a quiet record), which are not events.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/*
 * The kernel does not run a BPF program inside itself on one CPU: when a
 * softirq interrupts on_state (or the kernel's entry into it or exit from
 * it) and hits the tracepoint again, that run is skipped (and counted in the
 * program's recursion_misses: user space counts them as lost).  With
 * `rescue` (off by default: a second program run costs every event more than
 * the few in a million it saves), a second program on the same tracepoint,
 * which the kernel calls after the first for each event, rescues those: it
 * does the work for an event the first one did not start.  The first one
 * pushes each event it starts (its socket and states) on this CPU's stack;
 * the second one looks for its event there, and if it is there pops it with
 * whatever lies above it (events of interrupts whose second run the kernel
 * skipped because it came in the second program's own entry: their first
 * run did the work).  An interrupt between the two programs' runs for one
 * event pushes and pops its own.  Loss is then primary misses - rescued.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nest);
} nesting SEC(".maps");

/*
 * The network namespace's inode number, last looked up, per CPU: its
 * cookie's low 32 bits << 32 | the inode number, one 64-bit word, so that a
 * program interrupting another on the CPU never sees half an update.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} netns_memo SEC(".maps");

/*
 * The network namespace's inode number (as in /proc/PID/ns/net).  It sits
 * beside the namespace's reference count, which every socket's creation and
 * destruction changes: on a host busy making connections that cache line
 * moves between the CPUs, and reading it cost each event ~20 ns (bpf_stats,
 * busy shape, 2 threads: 182-188 ns a run against 158-167 reading the
 * namespace's cookie instead).  So it is read once per namespace and CPU,
 * found again by the namespace's cookie (never reused; another cache line,
 * written once).
 */
static __always_inline __u32 netns_inum(const struct net *net)
{
	if (!bpf_core_field_exists(net->net_cookie))
		return net->ns.inum;
	__u32 zero = 0, cookie = (__u32)net->net_cookie;
	__u64 *memo = bpf_map_lookup_elem(&netns_memo, &zero);
	if (!memo || !cookie)
		return net->ns.inum;
	__u64 seen = *(volatile __u64 *)memo; /* one load: an interrupt may rewrite it */
	if ((__u32)(seen >> 32) == cookie)
		return (__u32)seen;
	__u32 inum = net->ns.inum;
	*(volatile __u64 *)memo = (__u64)cookie << 32 | inum;
	return inum;
}

/* Reads the socket's addresses, ports, namespace, cgroup and socket info. */
static __always_inline void read_sock(struct ta_record *r, const struct sock *sk,
				      const struct tcp_sock *tp)
{
	const struct inet_sock *inet = &tp->inet_conn.icsk_inet;

	/* what the tracepoint itself reports (skc_num is gone by the last CLOSE) */
	r->family = sk->__sk_common.skc_family;
	r->sport = __builtin_bswap16(inet->inet_sport);
	r->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (r->family == AF_INET) {
		__builtin_memcpy(r->saddr, &inet->inet_saddr, 4);
		__builtin_memcpy(r->daddr, &sk->__sk_common.skc_daddr, 4);
	} else {
		__builtin_memcpy(r->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(r->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	r->netns = netns_inum(sk->__sk_common.skc_net.net);
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		struct cgroup *cg = sk->sk_cgrp_data.cgroup;
		if (cg) {
			r->cgroup_id = cg->kn->id;
			r->flags |= TA_REC_CGROUP;
		}
	}
	struct socket *so = sk->sk_socket;
	if (so) {
		/*
		 * The socket's inode, through its file: typed loads all the way
		 * (the inode beside it in struct socket_alloc would take a
		 * helper call per field).  A socket with no file (a kernel's)
		 * is in no process's file table: no owner to find by inode.
		 */
		struct file *f = so->file;
		r->sock_state = (__u8)so->state;
		if (f) {
			struct inode *ino = f->f_inode;
			r->sock_inode = ino->i_ino;
			r->sock_uid = ino->i_uid.val;
			r->sock_gid = ino->i_gid.val;
			r->flags |= TA_REC_SOCKET;
		}
	}
}

/*
 * The socket's cookie: given by the helper on its first use (the socket's
 * first event), a plain load from then on.
 */
static __always_inline __u64 sock_cookie(const struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;

	return cookie ? cookie : bpf_get_socket_cookie((struct sock *)sk);
}

/* Counts a record that found the ring full. */
static __always_inline void count_lost(const struct ta_record *r)
{
	__u32 key = ta_record_is_event(r) ? 0 : 1;
	__u64 *n = bpf_map_lookup_elem(&lost, &key);

	if (n)
		(*n)++;
}

/*
 * Marks a slot committed for position pos, after its record's stores (user
 * space reads the record once it sees the mark, rings.h).  x86 makes stores
 * visible in program order, so a plain store after a compiler barrier is
 * enough there.  An exchange orders them on every architecture, but a
 * locked instruction waits for the stores before it to reach the cache, and
 * the slot's lines were last read by the reader's CPU: the exchange was 27%
 * of on_state's time (perf of the busy churn on this VM).
 */
static __always_inline void commit(struct ta_slot *slot, __u64 pos)
{
#ifdef __TARGET_ARCH_x86
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&slot->committed = pos + 1;
#else
	__sync_lock_test_and_set(&slot->committed, pos + 1);
#endif
}

/*
 * Sends r through this CPU's ring, stamped with the time (read after the
 * slot is reserved, so that user space can tell when no older record can
 * come: see rings.h), an accept record with 0.  Programs interrupt one
 * another on a CPU (a softirq's state change inside a process's accept()
 * record, a rescue), so a slot is reserved by compare-and-swap, then
 * committed (commit()).  A wake-up per
 * event would cost the traced workload far more than the tracing itself:
 * the reader is woken only when this record makes the ring's waiting
 * records a multiple of wakeup_records.  Every multiple, not only the first:
 * the reader may go to sleep with more than wakeup_records already waiting
 * (records younger than the merge's slack, rings.h), and a ring that never
 * again came down to exactly wakeup_records would then wait for the reader's
 * timer, long enough to fill up at a busy CPU's rate.
 */
static __always_inline void send(struct ta_record *r)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct ta_ring_pos *rp = bpf_map_lookup_elem(&ring_pos, &cpu);
	__u64 pos = 0, tail = 0;
	bool reserved = false;

	if (!rp) {
		count_lost(r); /* cannot be: an entry per possible CPU */
		return;
	}
	/* an interrupt's record can take the slot between the read and the swap: try again */
	for (int i = 0; i < 4 && !reserved; i++) {
		pos = *(volatile __u64 *)&rp->head;
		tail = *(volatile __u64 *)&rp->tail;
		if (pos - tail >= ring_slots)
			break; /* full */
		reserved = __sync_val_compare_and_swap(&rp->head, pos, pos + 1) == pos;
	}
	if (!reserved) {
		count_lost(r);
		return;
	}
	__u32 index = cpu * ring_slots + (__u32)(pos & (ring_slots - 1));
	struct ta_slot *slot = bpf_map_lookup_elem(&ring_slot, &index);
	if (!slot)
		return; /* cannot be: CPU < the possible CPUs */
	/*
	 * An accept record names an owner and is no event: it carries no time
	 * (0: it goes as soon as its ring's records before it have), and user
	 * space takes it before or after its socket's first events alike.  On
	 * the development VM (kvm-clock under PVM) a clock read was a third of
	 * the getpeername hook's cost, ~18 ns an event of a busy churn.
	 */
	r->ktime = r->kind == TA_KIND_ACCEPT ? 0 : bpf_ktime_get_ns();
	__builtin_memcpy(&slot->rec, r, sizeof(*r));
	commit(slot, pos);
	if (((pos + 1 - tail) & (wakeup_records - 1)) == 0)
		bpf_ringbuf_output(&doorbell, &cpu, sizeof(cpu), BPF_RB_FORCE_WAKEUP);
}

/*
 * The process on the CPU (task: bpf_get_current_task_btf()), and its uid
 * where it names a socket's owner.  Typed loads, not the helpers for pid and
 * uid: a call each (the uid's also maps it through the initial user
 * namespace, which is the kernel's own value).
 */
static __always_inline void current_task(struct ta_record *r, const struct task_struct *task,
					 bool uid)
{
	r->pid = (__u32)task->tgid;
	r->tid = (__u32)task->pid;
	if (uid)
		r->uid = task->cred->uid.val;
	/* four loads (the record's comm is 4-aligned), not a helper's copy */
	const __u32 *comm = (const __u32 *)task->comm;
	__u32 *to = (__u32 *)r->comm;
	to[0] = comm[0];
	to[1] = comm[1];
	to[2] = comm[2];
	to[3] = comm[3];
}

static __always_inline int handle(const struct sock *sk, int oldstate, int newstate)
{
	struct ta_record r = {};

	/* TCP's (the tracepoint is DCCP's and SCTP's too), a full socket here */
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* typed as tcp_sock, its inet_sock part is readable */
	const struct tcp_sock *tp = TA_CAST(sk, struct tcp_sock);
	r.kind = TA_KIND_STATE;
	r.oldstate = (__u8)oldstate;
	r.newstate = (__u8)newstate;
	read_sock(&r, sk, tp);
	if (r.family != AF_INET && r.family != AF_INET6)
		return 0;
	/* connect() and listen() run in the owner's own syscall */
	bool names_owner = newstate == TCP_SYN_SENT || newstate == TCP_LISTEN;
	/*
	 * close() or shutdown() by whoever holds the socket now (a child it was
	 * handed to, a process that got it over SCM_RIGHTS): only ever run in
	 * that process's own system call, or a kernel thread's
	 */
	struct task_struct *task = bpf_get_current_task_btf();
	if ((oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) ||
	    (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)) {
		if (!(task->flags & PF_KTHREAD)) {
			names_owner = true;
			r.flags |= TA_REC_CLOSER;
		}
	}
	struct ta_subject subject = {r.cgroup_id, r.netns,   r.family, r.sport,
				     r.dport,     r.oldstate, r.newstate, r.saddr, r.daddr, 0};
	enum ta_verdict v = ta_filter(&filter_cfg, &subject);
	if (v == TA_DROP_SOCKET)
		return 0;
	if (v == TA_DROP_EVENT) {
		/* what user space needs to keep owners right: who, and when it ends */
		if (!names_owner && newstate != TCP_CLOSE &&
		    !(oldstate == TCP_LISTEN && newstate != TCP_CLOSE))
			return 0;
		r.flags |= TA_REC_QUIET;
	}
	current_task(&r, task, names_owner);
	r.cookie = sock_cookie(sk);
	/*
	 * An error ends it (refused, reset, timed out, unreachable): set before
	 * the state.  A connect given up by its process may have had a soft
	 * one (an ICMP error that came while the process held the socket).
	 */
	if (newstate == TCP_CLOSE) {
		r.error = (__u16)sk->sk_err;
		if (!r.error && oldstate == TCP_SYN_SENT)
			r.error = (__u16)sk->sk_err_soft;
	}
	send(&r);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (rescue) {
		__u32 zero = 0;
		struct nest *n = bpf_map_lookup_elem(&nesting, &zero);

		if (n && n->top < TA_NEST_DEPTH) {
			struct ta_event_id *id = &n->started[n->top & (TA_NEST_DEPTH - 1)];
			id->sk = (__u64)sk;
			id->states = oldstate << 8 | newstate;
			n->top++;
		}
	}
	return handle(sk, oldstate, newstate);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_rescue, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct nest *n = bpf_map_lookup_elem(&nesting, &zero);
	__u32 states = oldstate << 8 | newstate;

	if (!n)
		return 0;
	for (int k = 0; k < TA_NEST_DEPTH; k++) {
		int i = (int)n->top - 1 - k; /* from the top: its own is there */
		if (i < 0)
			break;
		const struct ta_event_id *id = &n->started[i & (TA_NEST_DEPTH - 1)];
		if (id->sk == (__u64)sk && id->states == states) {
			n->top = i; /* the primary program ran for this one */
			return 0;
		}
	}
	n->rescued++;
	return handle(sk, oldstate, newstate);
}

/*
 * Resets.  A reset has its socket's addresses and ports, namespace and
 * owner, or, when it answers a segment, that segment's own (reversed for a
 * reply: the local side is the destination it was sent to): a listener's
 * or a closed port's reset is then still told apart by its peer.
 */

/* The addresses and ports of a socket that is not a full one (TIME-WAIT, a request). */
static __always_inline void read_sock_common(struct ta_record *r, const struct sock *sk)
{
	r->family = sk->__sk_common.skc_family;
	r->sport = sk->__sk_common.skc_num;
	r->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (r->family == AF_INET) {
		__builtin_memcpy(r->saddr, &sk->__sk_common.skc_rcv_saddr, 4);
		__builtin_memcpy(r->daddr, &sk->__sk_common.skc_daddr, 4);
	} else {
		__builtin_memcpy(r->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(r->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	r->netns = netns_inum(sk->__sk_common.skc_net.net);
}

/*
 * The segment's addresses and ports, as the side it was sent to sees them,
 * into r; r is left as it was if the segment cannot be read.
 */
static __always_inline void read_segment(struct ta_record *r, const struct sk_buff *skb)
{
	unsigned char *head = skb->head;
	struct tcphdr th;
	__u8 saddr[16] = {}, daddr[16] = {};
	__u16 family;

	if (skb->protocol == __builtin_bswap16(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + skb->network_header))
			return;
		family = AF_INET6;
		__builtin_memcpy(saddr, &ip6.daddr, 16);
		__builtin_memcpy(daddr, &ip6.saddr, 16);
	} else {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + skb->network_header))
			return;
		family = AF_INET;
		__builtin_memcpy(saddr, &ip.daddr, 4);
		__builtin_memcpy(daddr, &ip.saddr, 4);
	}
	if (bpf_probe_read_kernel(&th, sizeof(th), head + skb->transport_header))
		return;
	r->family = family;
	__builtin_memcpy(r->saddr, saddr, 16);
	__builtin_memcpy(r->daddr, daddr, 16);
	r->sport = __builtin_bswap16(th.dest);
	r->dport = __builtin_bswap16(th.source);
	if (skb->dev)
		r->netns = skb->dev->nd_net.net->ns.inum;
}

/*
 * Sends a reset's record r (its kind set) if the filters pass it: the
 * socket's facts where there is one, then the addresses of the segment it
 * answers where there is one.
 */
static __always_inline int send_reset(struct ta_record *r, const struct sock *sk,
				      const struct sk_buff *skb)
{
	if (sk) {
		/* a full socket also has an inode and a cgroup */
		const struct tcp_sock *tp = bpf_skc_to_tcp_sock((struct sock *)sk);
		if (tp)
			read_sock(r, sk, tp);
		else
			read_sock_common(r, sk);
		r->oldstate = r->newstate = sk->__sk_common.skc_state;
		r->cookie = sock_cookie(sk);
	}
	if (skb)
		read_segment(r, skb);
	if (r->family != AF_INET && r->family != AF_INET6)
		return 0;
	struct ta_subject subject = {r->cgroup_id, r->netns,   r->family, r->sport, r->dport,
				     r->oldstate,  r->newstate, r->saddr,  r->daddr, 1};
	if (ta_filter(&filter_cfg, &subject) != TA_PASS)
		return 0;
	current_task(r, bpf_get_current_task_btf(), false);
	send(r);
	return 0;
}

/* Sent: in reply to a segment (skb; sk NULL when no socket matched) or to abort sk. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	struct ta_record r = {};

	r.kind = TA_KIND_RESET_SENT;
	if (bpf_core_type_exists(enum sk_rst_reason)) {
		/* the third argument, on kernels that give a reason (6.10+) */
		r.reason = (__u8)ctx[2];
		r.flags |= TA_REC_REASON;
	}
	return send_reset(&r, sk, skb);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_receive_reset, const struct sock *sk)
{
	struct ta_record r = {};

	if (!sk)
		return 0;
	r.kind = TA_KIND_RESET_RECEIVED;
	return send_reset(&r, sk, NULL);
}

/*
 * accept() and accept4() returned fd: the socket behind it now belongs to
 * this process.  From the task's file table: fd -> file -> socket -> sock.
 * The socket's cookie was given by its first state change (its SYN-RECEIVED,
 * before accept() could return it); 0 if that was before tcp-audit started.
 */
static __always_inline int accepted_fd(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct ta_record r = {};
	struct file **fds, *file;

	if (fd < 0 || !task->files)
		return 0;
	/* typed loads down to the array; its slot takes a read (a variable index) */
	struct fdtable *fdt = task->files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return 0;
	fds = fdt->fd;
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	/* typed loads from here: the file, the socket (its private_data) and its sock */
	struct file *f = TA_CAST(file, struct file);
	struct socket *so = TA_CAST(f->private_data, struct socket);
	if (!so || so->file != file) /* not a socket (any more) */
		return 0;
	struct sock *sk = so->sk;
	/* one closed (reset) in the accept queue has had its last event: nothing to own */
	if (!sk || sk->sk_protocol != IPPROTO_TCP || sk->__sk_common.skc_state == TCP_CLOSE)
		return 0;
	r.cookie = sk->__sk_common.skc_cookie.counter;
	if (!r.cookie)
		return 0;
	r.kind = TA_KIND_ACCEPT;
	current_task(&r, task, true);
	/* an io_uring worker thread is named iou-wrk-PID: the process's name is what tells */
	if (task->flags & PF_IO_WORKER)
		bpf_probe_read_kernel_str(r.comm, sizeof(r.comm), task->group_leader->comm);
	send(&r);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_accept4_exit(struct trace_event_raw_sys_exit *args)
{
	return accepted_fd(args->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int on_accept_exit(struct trace_event_raw_sys_exit *args)
{
	return accepted_fd(args->ret);
}

/*
 * accept() and accept4() that ask for the peer's address (nginx, Apache,
 * PostgreSQL, sshd, Go, Python, Rust, Java: almost every server) get it from
 * the new socket after the kernel has accepted it, through the cgroup
 * getpeername hook, in the accepting process.  Attached to the root cgroup,
 * these run for every process, and only then (and for getpeername() calls):
 * unlike a syscall-exit tracepoint, which sends every system call of every
 * process through the kernel's slower exit path.  User space takes such a
 * record as the accept only of a socket whose accept() it has not seen: a
 * later getpeername() names no new owner.  The address is left as it is (a
 * sock_addr program that returns 0 would fail the call).
 */
static __always_inline int peer_asked(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct ta_record r = {};

	if (!sk || sk->protocol != IPPROTO_TCP || sk->state == BPF_TCP_CLOSE)
		return 1;
	r.cookie = bpf_get_socket_cookie(ctx);
	r.kind = TA_KIND_ACCEPT;
	r.flags = TA_REC_PEERNAME;
	__u64 id = bpf_get_current_pid_tgid();
	r.pid = (__u32)(id >> 32);
	r.tid = (__u32)id;
	r.uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(r.comm, sizeof(r.comm));
	send(&r);
	return 1;
}

SEC("cgroup/getpeername4")
int on_peername4(struct bpf_sock_addr *ctx)
{
	return peer_asked(ctx);
}

SEC("cgroup/getpeername6")
int on_peername6(struct bpf_sock_addr *ctx)
{
	return peer_asked(ctx);
}

/*
 * io_uring's accept (IORING_OP_ACCEPT) makes no accept() system call.  Its
 * completion runs in the process that submitted it (in its task work, or in
 * one of its io_uring threads, which share its file table), with the new fd
 * as the result.  Every io_uring completion runs this, so it looks at the
 * request's opcode first.  (An accept into io_uring's own file table, a
 * "direct descriptor", has no fd: its result is a slot, and the fd of that
 * number, if any, is one the process holds anyway.)
 */
SEC("tracepoint/io_uring/io_uring_complete")
int on_uring_complete(struct trace_event_raw_io_uring_complete *args)
{
	/* a kernel without io_uring: no code below is loaded (CO-RE guards) */
	if (!bpf_core_type_exists(struct trace_event_raw_io_uring_complete) ||
	    !bpf_core_type_exists(struct io_kiocb) || args->res < 0)
		return 0;
	struct io_kiocb *req = args->req;
	if (BPF_CORE_READ(req, opcode) != IORING_OP_ACCEPT)
		return 0;
	return accepted_fd(args->res);
}
