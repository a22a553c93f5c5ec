/* SPDX-License-Identifier: MIT */
/*
 * bpf eventer: loads the CO-RE program of bpf-eventer.bpf.c (embedded as a
 * libbpf skeleton, so only this .so is needed at run time), and hands the
 * core whole batches of events from its rings (one per CPU, merged in time
 * order: rings.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>
#include <linux/capability.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <tcp-audit/plugin.h>

#include "bpf-eventer.h"
#include "bpf-eventer.skel.h"
#include "event-text.h"
#include "kernel-helpers.h"
#include "owners.h"
#include "rings.h"
#include "snapshot.h"

#define BTF_PATH "/sys/kernel/btf/vmlinux"
#define CLOCK_REFRESH_NS 1000000000ull
/* Sockets whose owner is kept at most (40 bytes each, in a table at most half full). */
#define OWNED_SOCKETS_MAX (1u << 20)
#define LISTENERS_MAX (1u << 16)
/* A socket seen only in quiet records is forgotten after this long. */
#define PENDING_NS (300 * 1000000000ull)
#define EXPIRE_EVERY_NS (60 * 1000000000ull)
/*
 * A child socket's events before accept() (SYN-RECEIVED, ESTABLISHED) wait
 * for it, so that they carry the process that accepts it rather than the
 * listener's; at most this long, and at most HOLD_MAX events.
 */
#define HOLD_NS 1000000000ull
#define HOLD_MAX 8192u
/* How often the rings' loss is looked at, to leave its hole in the seq numbers. */
#define LOST_CHECK_NS 100000000ull
/*
 * Owners of sockets that had their last event, by cookie (a slot each): a
 * reset sent by an abortive close comes just after the socket's CLOSED.
 */
#define RECENT_SLOTS 256u

enum { FAMILY_ALL, FAMILY_INET, FAMILY_INET6 };
enum { ACCEPT_AUTO, ACCEPT_SYSCALLS };

struct bpf_config {
	uint64_t ring_size;
	int family;
	const char *ports;
	const char *lports;
	const char *rports;
	const char *addrs;
	const char *states;
	int64_t netns;
	const char *cgroup;
	bool snapshot;
	const char *kinds;
	bool rescue;
	int accept;
};

struct bpf_eventer {
	const struct tcp_audit_host *host;
	struct tcp_audit_bpf *skel;
	struct ring_set *rings;
	uint32_t ring_slots; /* each CPU's ring's */
	int64_t clock_offset; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
	uint64_t clock_checked;
	/* the batch being filled from the rings */
	struct tcp_audit_event *out;
	size_t n, max;
	/* owners of sockets by cookie, of listeners by owner_listener_key() */
	struct owner_table *sockets, *listeners;
	uint64_t expired_at; /* monotonic ns */
	bool full_warned;
	/* events waiting for their socket's accept(), in arrival order (a ring) */
	struct held {
		struct tcp_audit_event ev;
		uint64_t due; /* monotonic ns */
	} *hold;
	size_t hold_head, hold_n;
	uint64_t seen_ktime; /* the newest record's */
	/*
	 * The last seq number handed out.  Numbered here, in the order the
	 * rings are merged (time order), not in the kernel: a counter shared by
	 * the CPUs cost every event ~25 ns of a contended atomic with two busy
	 * CPUs.  Events a full ring lost leave a hole of their number, where
	 * their loss is seen (within LOST_CHECK_NS).
	 */
	uint64_t seq;
	uint64_t lost_seen, lost_checked; /* the rings' loss counted so far; when */
	struct snapshot snap; /* the sockets open at start, handed out first */
	struct recent {
		uint64_t cookie;
		struct owner owner;
	} recent[RECENT_SLOTS];
	struct reset_reason_map reasons;
	/*
	 * The host is stopping (its first drain read): the programs are
	 * detached, so what is in the rings is all there will be, and what is
	 * still there (or held) when the host asks for the stats is never
	 * handed out: counted as lost.
	 */
	bool stopping;
	bool accept_by_peername; /* else at the syscalls' exit, if at all */
	bool unseen_warned;       /* an accept() the getpeername hooks did not see */
};

static const struct tcp_audit_option bpf_options[] = {
	{.key = "ring_size",
	 .type = TCP_AUDIT_OPT_SIZE,
	 .def = "16M",
	 .min = 1 << 20,
	 .max = 1ll << 30,
	 .help = "kernel rings for events, all CPUs together: one per CPU, each an equal "
		 "share in 128-byte slots (an event each), their number rounded up to a power "
		 "of 2",
	 .offset = offsetof(struct bpf_config, ring_size)},
	{.key = "family",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "all",
	 .choices = "all|inet|inet6",
	 .help = "only IPv4 (inet) or IPv6 (inet6) sockets",
	 .offset = offsetof(struct bpf_config, family)},
	{.key = "ports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these ports, local or remote (80,443; up to 16)",
	 .offset = offsetof(struct bpf_config, ports)},
	{.key = "lports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these local ports (up to 16)",
	 .offset = offsetof(struct bpf_config, lports)},
	{.key = "rports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these remote ports (up to 16)",
	 .offset = offsetof(struct bpf_config, rports)},
	{.key = "addrs",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with an address in one of these prefixes, either side "
		 "(10.0.0.0/8,fd00::/8; up to 8)",
	 .offset = offsetof(struct bpf_config, addrs)},
	{.key = "states",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only transitions into these states (ESTABLISHED,CLOSED)",
	 .offset = offsetof(struct bpf_config, states)},
	{.key = "netns",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "0",
	 .min = 0,
	 .max = UINT32_MAX,
	 .help = "only this network namespace (its inode, as in /proc/PID/ns/net; 0: all)",
	 .offset = offsetof(struct bpf_config, netns)},
	{.key = "cgroup",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets of this cgroup v2 (an id, or a path under /sys/fs/cgroup)",
	 .offset = offsetof(struct bpf_config, cgroup)},
	{.key = "snapshot",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "true",
	 .help = "at start, a \"snapshot\" record for every TCP socket open then, in every "
		 "network namespace, with its owner (which its later events carry too)",
	 .offset = offsetof(struct bpf_config, snapshot)},
	{.key = "kinds",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "state,reset",
	 .help = KINDS_OPTION_HELP,
	 .offset = offsetof(struct bpf_config, kinds)},
	{.key = "accept",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "auto",
	 .choices = "auto|syscalls",
	 .help = "how an accepted socket's owner is seen: auto, by the root cgroup's "
		 "getpeername hooks where tcp-audit sees the host's root cgroup (an accept() that "
		 "asks for the peer's address, as most servers do; at no cost elsewhere), else as "
		 "syscalls; syscalls, at the exit of every accept() (every system call of every "
		 "process then takes the kernel's slower path)",
	 .offset = offsetof(struct bpf_config, accept)},
	{.key = "rescue",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "false",
	 .help = "a second program on the tracepoint records the state changes the kernel "
		 "skips when one interrupts the first program on its CPU (about one in a million "
		 "with every CPU busy; without it they are counted as lost, in gap records), at "
		 "the cost of a second program run per event",
	 .offset = offsetof(struct bpf_config, rescue)},
	{0},
};

static void refresh_clock(struct bpf_eventer *b)
{
	b->clock_offset = realtime_minus_monotonic_ns();
	b->clock_checked = clock_now_ns(CLOCK_MONOTONIC);
}

static const struct tcp_audit_host *libbpf_host;

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];

	/* libbpf explains every fallback attempt: useful when debugging only */
	if (!libbpf_host || (level == LIBBPF_DEBUG && !getenv("TCP_AUDIT_LIBBPF_DEBUG")))
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	tcp_audit_debug(libbpf_host, "libbpf: %s", line);
	return 0;
}

/* Parses "a,b,c" into at most max ports; -EINVAL after logging. */
static int parse_ports(const struct tcp_audit_host *host, const char *key, const char *text,
		       volatile __u16 *out, volatile __u32 *n)
{
	uint16_t ports[TA_MAX_PORTS];
	size_t count = 0;
	char err[128];
	int r = port_list_parse(text, ports, TA_MAX_PORTS, &count, err, sizeof(err));

	if (r == -EINVAL)
		tcp_audit_error(host, "option %s: %s", key, err);
	if (r)
		return r;
	for (size_t i = 0; i < count; i++)
		out[i] = ports[i];
	*n = (__u32)count;
	return 0;
}

static int parse_prefixes(const struct tcp_audit_host *host, const char *text,
			  volatile struct ta_prefix *out, volatile __u32 *n)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	*n = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct ta_prefix p;
		char *slash = strchr(tok, '/');
		memset(&p, 0, sizeof(p));
		if (*n == TA_MAX_PREFIXES) {
			tcp_audit_error(host, "option addrs: more than %d prefixes", TA_MAX_PREFIXES);
			r = -EINVAL;
			break;
		}
		if (slash)
			*slash = '\0';
		p.family = strchr(tok, ':') ? AF_INET6 : AF_INET;
		int max_bits = p.family == AF_INET ? 32 : 128;
		long bits = max_bits;
		if (slash) {
			char *end;
			bits = strtol(slash + 1, &end, 10);
			if (!slash[1] || *end || bits < 0 || bits > max_bits)
				bits = -1;
		}
		if (bits < 0 || inet_pton(p.family, tok, p.addr) != 1) {
			tcp_audit_error(host,
					"option addrs: \"%s%s%s\" is not an address prefix "
					"(10.0.0.0/8, fd00::/8)",
					tok, slash ? "/" : "", slash ? slash + 1 : "");
			r = -EINVAL;
			break;
		}
		p.bits = (__u16)bits;
		memcpy((void *)&out[(*n)++], &p, sizeof(p));
	}
	free(copy);
	return r;
}

static int parse_states(const struct tcp_audit_host *host, const char *text, volatile __u32 *mask)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	*mask = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int s = tcp_state_from_name(tok, strlen(tok));
		if (s < 0) {
			tcp_audit_error(host,
					"option states: \"%s\" is not a TCP state (LISTEN, SYN-SENT, "
					"SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, "
					"CLOSING, LAST-ACK, TIME-WAIT, CLOSED, NEW-SYN-RECV)",
					tok);
			r = -EINVAL;
			break;
		}
		*mask |= 1u << s;
	}
	free(copy);
	return r;
}

static int parse_cgroup(const struct tcp_audit_host *host, const char *text, volatile __u64 *id)
{
	char *end;
	struct stat st;

	unsigned long long v = strtoull(text, &end, 10);
	if (*text && !*end) {
		*id = v;
		return 0;
	}
	/* cgroup v2 ids are the inode numbers of the cgroup directories */
	if (stat(text, &st) != 0 || !S_ISDIR(st.st_mode)) {
		tcp_audit_error(host, "option cgroup: \"%s\" is neither a cgroup id nor a cgroup "
				      "directory (/sys/fs/cgroup/...)", text);
		return -EINVAL;
	}
	*id = st.st_ino;
	return 0;
}

static int configure(struct bpf_eventer *b, const struct bpf_config *c)
{
	volatile struct ta_filter *f = &b->skel->rodata->filter_cfg;
	const struct tcp_audit_host *h = b->host;
	int r = 0;

	f->family = c->family == FAMILY_INET ? AF_INET : c->family == FAMILY_INET6 ? AF_INET6 : 0;
	if (c->ports && (r = parse_ports(h, "ports", c->ports, f->ports, &f->n_ports)))
		return r;
	if (c->lports && (r = parse_ports(h, "lports", c->lports, f->lports, &f->n_lports)))
		return r;
	if (c->rports && (r = parse_ports(h, "rports", c->rports, f->rports, &f->n_rports)))
		return r;
	if (c->addrs && (r = parse_prefixes(h, c->addrs, f->prefixes, &f->n_prefixes)))
		return r;
	if (c->states && (r = parse_states(h, c->states, &f->state_mask)))
		return r;
	if (c->cgroup && (r = parse_cgroup(h, c->cgroup, &f->cgroup)))
		return r;
	f->netns = (__u32)c->netns;
	char err[128];
	unsigned kinds;
	if ((r = kinds_parse(c->kinds, &kinds, err, sizeof(err)))) {
		if (r == -EINVAL)
			tcp_audit_error(h, "option kinds: %s", err);
		return r;
	}
	f->kinds = (__u16)kinds;

	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	uint64_t slots = 1024;
	while (slots * sizeof(struct ta_slot) < c->ring_size / (uint64_t)ncpu)
		slots <<= 1;
	b->ring_slots = (uint32_t)slots;
	b->skel->rodata->ring_slots = b->ring_slots;
	b->skel->rodata->wakeup_records = b->ring_slots / 16;
	b->skel->rodata->rescue = c->rescue;
	bpf_program__set_autoload(b->skel->progs.on_state_rescue, c->rescue);
	return bpf_map__set_max_entries(b->skel->maps.ring_slot, (__u32)(slots * (uint64_t)ncpu)) ||
			       bpf_map__set_max_entries(b->skel->maps.ring_pos, (__u32)ncpu)
		       ? -EINVAL
		       : 0;
}

static void fill_owner(struct tcp_audit_event *e, const struct owner *o)
{
	e->owner_pid = o->pid;
	e->owner_uid = o->uid;
	memcpy(e->owner_comm, o->comm, TA_COMM_LEN);
	e->owner_comm[TCP_AUDIT_COMM_LEN - 1] = '\0';
	e->valid |= TCP_AUDIT_HAS_OWNER;
}

/* The event of record k (an event's: ta_record_is_event()), numbered next. */
static void convert(struct bpf_eventer *b, const struct ta_record *k, const struct owner *owner,
		    struct tcp_audit_event *e)
{
	memset(e, 0, sizeof(*e));
	e->ktime_ns = k->ktime;
	e->time_ns = (uint64_t)((int64_t)k->ktime + b->clock_offset);
	e->seq = ++b->seq;
	e->family = k->family;
	e->sport = k->sport;
	e->dport = k->dport;
	e->old_state = k->oldstate;
	e->new_state = k->newstate;
	memcpy(e->saddr, k->saddr, sizeof(e->saddr));
	memcpy(e->daddr, k->daddr, sizeof(e->daddr));
	e->pid_on_cpu = k->pid;
	e->tid_on_cpu = k->tid;
	memcpy(e->comm_on_cpu, k->comm, TA_COMM_LEN);
	e->comm_on_cpu[TCP_AUDIT_COMM_LEN - 1] = '\0';
	e->netns = k->netns;
	e->sock_cookie = k->cookie;
	e->valid = TCP_AUDIT_HAS_KTIME | TCP_AUDIT_HAS_SEQ | TCP_AUDIT_HAS_TID |
		   TCP_AUDIT_HAS_NETNS | TCP_AUDIT_HAS_COOKIE;
	if (owner)
		fill_owner(e, owner);
	if (k->flags & TA_REC_SOCKET) {
		e->sock_inode = k->sock_inode;
		e->sock_uid = k->sock_uid;
		e->sock_gid = k->sock_gid;
		e->sock_state = k->sock_state;
		e->valid |= TCP_AUDIT_HAS_SOCK_INODE | TCP_AUDIT_HAS_SOCK_STATE;
	}
	if (k->flags & TA_REC_CGROUP) {
		e->cgroup_id = k->cgroup_id;
		e->valid |= TCP_AUDIT_HAS_CGROUP;
	}
	if (k->kind == TA_KIND_STATE) {
		if (k->error) {
			e->error = k->error;
			e->valid |= TCP_AUDIT_HAS_ERROR;
		}
		return;
	}
	e->kind = TCP_AUDIT_KIND_RESET;
	e->reset_direction =
		k->kind == TA_KIND_RESET_SENT ? TCP_AUDIT_RESET_SENT : TCP_AUDIT_RESET_RECEIVED;
	if (!k->cookie)
		e->valid &= ~(uint32_t)TCP_AUDIT_HAS_COOKIE; /* no socket */
	if (!k->netns)
		e->valid &= ~(uint32_t)TCP_AUDIT_HAS_NETNS;
	if ((k->flags & TA_REC_REASON) && b->reasons.ours[k->reason] != RESET_REASON_NONE) {
		e->reset_reason = b->reasons.ours[k->reason];
		e->valid |= TCP_AUDIT_HAS_RESET_REASON;
	}
}

/* key's entry in t, added if missing; NULL (warned once) when t cannot take it. */
static struct owner_entry *entry(struct bpf_eventer *b, struct owner_table *t, uint64_t key)
{
	bool full;
	struct owner_entry *en = owner_table_add(t, key, &full);

	if (!en && !b->full_warned) {
		tcp_audit_warning(b->host, "cannot keep more socket owners (%s, %zu sockets): "
					   "events of new sockets may have no owner",
				  full ? "at the limit" : "out of memory", owner_table_count(t));
		b->full_warned = true;
	}
	return en;
}

/* Sets key's owner (confirmed unless pending_since); returns its entry or NULL. */
static struct owner_entry *set_owner(struct bpf_eventer *b, struct owner_table *t, uint64_t key,
				     const struct owner *o, uint64_t pending_since,
				     bool from_listener)
{
	struct owner_entry *en = entry(b, t, key);

	if (en) {
		en->owner = *o;
		en->pending_since = pending_since;
		en->from_listener = from_listener;
		en->closed = false;
	}
	return en;
}

/*
 * The syscall-exit tracepoints of accept() and accept4(): every accept() is
 * seen, at the price of every system call of every process taking the
 * kernel's slower exit path.  Optional: without them an accepted socket's
 * owner is the process that created its listener.
 */
static void attach_accept_syscalls(struct bpf_eventer *b, int tracefs)
{
	struct tcp_audit_bpf *k = b->skel;

	k->links.on_accept4_exit = bpf_program__attach(k->progs.on_accept4_exit);
	k->links.on_accept_exit = bpf_program__attach(k->progs.on_accept_exit);
	if (!k->links.on_accept4_exit || !k->links.on_accept_exit)
		tcp_audit_info(b->host, "no syscalls:sys_exit_accept tracepoints%s%s%s: an accepted "
					"socket's owner is the process that created its listener",
			       tracefs < 0 ? " (tracefs is not mounted and cannot be: " : " on this kernel",
			       tracefs < 0 ? strerror(-tracefs) : "", tracefs < 0 ? ")" : "");
}

/*
 * A socket accepted from a listener is in a process's hands (who: its
 * close(), or NULL: its events waited for its accept() long enough), and no
 * accept record came: that process called accept() without asking for the
 * peer's address, which the getpeername hooks do not see.  Said once.
 */
static void accept_unseen(struct bpf_eventer *b, const struct owner *who)
{
	static const char hint[] =
		"such a socket is owned by its listener's creator until its close(), unless "
		"that comes within a second; -p accept=syscalls sees every accept(), at a cost to "
		"every system call of every process";

	if (!b->accept_by_peername || b->unseen_warned || b->stopping)
		return;
	b->unseen_warned = true;
	if (who)
		tcp_audit_warning(b->host, "pid %u (%.*s) closed a socket whose accept() was not seen "
					   "(one that asks for no peer address): %s",
				  who->pid, OWNER_COMM_LEN, who->comm, hint);
	else
		tcp_audit_warning(b->host, "an accepted socket's accept() was not seen within %llu ms "
					   "(one that asks for no peer address, or a late one): %s",
				  (unsigned long long)(HOLD_NS / 1000000), hint);
}

/*
 * Owners, from what the kernel saw in the owner's own system calls:
 * connect() (CLOSED->SYN-SENT) and listen() (->LISTEN) run in the owner's
 * process; a child socket first gets its listener's owner (its first event,
 * from LISTEN), then the process that accept()ed it; the process whose
 * close() or shutdown() ends a connection holds it then (it may have been
 * handed on).  Returns the entry of the record's socket, or NULL.
 */
static struct owner_entry *track_owner(struct bpf_eventer *b, const struct ta_record *k,
				       const struct owner *cpu)
{
	bool quiet = k->flags & TA_REC_QUIET;
	uint64_t pending = quiet ? (k->ktime ? k->ktime : 1) : 0;
	uint64_t lkey = owner_listener_key(k->netns, k->family, k->sport);

	if (k->flags & TA_REC_CLOSER) {
		/* the last holder closes it: a socket handed on gets its new holder */
		const struct owner_entry *en = owner_table_find(b->sockets, k->cookie);
		if (en && en->from_listener && !en->closed)
			accept_unseen(b, cpu);
		uint64_t since = en && !en->pending_since ? 0 : pending;
		return set_owner(b, b->sockets, k->cookie, cpu, since, false);
	}
	if (k->newstate == TCP_AUDIT_TCP_SYN_SENT || k->newstate == TCP_AUDIT_TCP_LISTEN) {
		if (k->newstate == TCP_AUDIT_TCP_LISTEN)
			set_owner(b, b->listeners, lkey, cpu, 0, false);
		return set_owner(b, b->sockets, k->cookie, cpu, pending, false);
	}
	if (k->oldstate == TCP_AUDIT_TCP_LISTEN && k->newstate != TCP_AUDIT_TCP_CLOSE) {
		/*
		 * A socket's first event: an entry already there is its accept's,
		 * whose record has no time and can come first (send() in
		 * bpf-eventer.bpf.c): the acceptor stays its owner.
		 */
		struct owner_entry *en = owner_table_find(b->sockets, k->cookie);
		if (en && !en->from_listener) {
			if (!quiet)
				en->pending_since = 0;
			return en;
		}
		const struct owner_entry *l = owner_table_find(b->listeners, lkey);
		if (l) {
			struct owner copy = l->owner; /* the tables may move as they grow */
			return set_owner(b, b->sockets, k->cookie, &copy, pending, true);
		}
	}
	struct owner_entry *en = owner_table_find(b->sockets, k->cookie);
	if (en && !quiet)
		en->pending_since = 0;
	return en;
}

/* The socket has had its last event, and its held ones are out: forget it. */
static void forget_if_done(struct bpf_eventer *b, uint64_t cookie)
{
	struct owner_entry *en = owner_table_find(b->sockets, cookie);

	if (en && en->closed && !en->held) {
		struct recent *r = &b->recent[cookie % RECENT_SLOTS];
		r->cookie = cookie;
		r->owner = en->owner;
		owner_table_forget(b->sockets, cookie);
	}
}

/* The owner of a socket that had its last event a moment ago, or NULL. */
static const struct owner *recent_owner(const struct bpf_eventer *b, uint64_t cookie)
{
	const struct recent *r = &b->recent[cookie % RECENT_SLOTS];

	return cookie && r->cookie == cookie ? &r->owner : NULL;
}

/*
 * Moves held events to the batch from the oldest, while the oldest's socket
 * has been accept()ed or closed or it has waited long enough (all, with
 * force), at most limit of them.
 */
static void release_held(struct bpf_eventer *b, uint64_t now, bool force, size_t limit)
{
	while (b->hold_n && b->n < b->max && limit--) {
		struct held *h = &b->hold[b->hold_head];
		uint64_t cookie = h->ev.sock_cookie;
		struct owner_entry *en = owner_table_find(b->sockets, cookie);
		bool unaccepted = en && en->from_listener && !en->closed;
		if (unaccepted && now < h->due && !force)
			break;
		if (unaccepted && !force)
			accept_unseen(b, NULL);
		if (en) {
			fill_owner(&h->ev, &en->owner);
			en->held--;
		}
		b->out[b->n++] = h->ev;
		b->hold_head = (b->hold_head + 1) % HOLD_MAX;
		b->hold_n--;
		forget_if_done(b, cookie);
	}
}

/* One record from the rings; the batch has room for at least one event. */
static void on_record(struct bpf_eventer *b, const void *data, size_t len)
{
	const struct ta_record *k = data;
	struct owner cpu = {.pid = k->pid, .uid = k->uid};

	if (len < sizeof(struct ta_record))
		return;
	if (k->ktime > b->seen_ktime)
		b->seen_ktime = k->ktime;
	memcpy(cpu.comm, k->comm, sizeof(cpu.comm));
	if (k->kind == TA_KIND_ACCEPT) {
		struct owner_entry *en = NULL;
		if (k->flags & TA_REC_PEERNAME) {
			/* a getpeername() of a socket whose accept() was seen names no new owner */
			en = owner_table_find(b->sockets, k->cookie);
			if (en && !en->from_listener)
				return;
		}
		/* not set_owner(): a socket closed while its events are held stays closed */
		if (!en)
			en = entry(b, b->sockets, k->cookie);
		if (en) {
			en->owner = cpu;
			en->from_listener = false;
			en->pending_since = 0;
		}
		return;
	}
	bool reset = k->kind == TA_KIND_RESET_SENT || k->kind == TA_KIND_RESET_RECEIVED;
	if (k->kind != TA_KIND_STATE && !reset)
		return;
	/* a reset names no owner: it has its socket's, if it has a socket */
	struct owner_entry *en = reset ? (k->cookie ? owner_table_find(b->sockets, k->cookie) : NULL)
				       : track_owner(b, k, &cpu);
	if (reset && !en) {
		convert(b, k, recent_owner(b, k->cookie), &b->out[b->n++]);
		return;
	}
	if (!(k->flags & TA_REC_QUIET)) {
		if (en && (en->from_listener || en->held)) {
			/* before accept(), or behind events that are: wait, in order */
			if (b->hold_n == HOLD_MAX) {
				release_held(b, 0, true, 1); /* the batch has room for one */
				en = owner_table_find(b->sockets, k->cookie);
			}
			struct held *h = &b->hold[(b->hold_head + b->hold_n++) % HOLD_MAX];
			convert(b, k, NULL, &h->ev);
			h->due = k->ktime + HOLD_NS;
			if (en)
				en->held++;
		} else {
			convert(b, k, en ? &en->owner : NULL, &b->out[b->n++]);
		}
	}
	if (!reset && k->newstate == TCP_AUDIT_TCP_CLOSE) {
		if (en) {
			en->closed = true;
			forget_if_done(b, k->cookie);
		}
		if (k->oldstate == TCP_AUDIT_TCP_LISTEN)
			owner_table_forget(b->listeners,
					   owner_listener_key(k->netns, k->family, k->sport));
	}
}

/*
 * Hands the records that may go now, oldest first, to on_record() while the
 * batch has room.  *pending: some wait (for their time, or for a record
 * being written).
 */
static void take_records(struct bpf_eventer *b, uint64_t now, bool drain, bool *pending)
{
	const void *rec;
	size_t len;

	ring_set_begin(b->rings, now, drain);
	*pending = false;
	while (b->n < b->max && (rec = ring_set_peek(b->rings, &len, pending))) {
		on_record(b, rec, len);
		ring_set_next(b->rings);
	}
}

/* The snapshot keeps what the filters could pass; it lists what they pass. */
static bool snapshot_keep(struct snapshot_socket *sk, void *arg)
{
	const struct bpf_eventer *b = arg;
	enum ta_verdict v = snapshot_filter(&b->skel->rodata->filter_cfg, sk);

	sk->quiet = v != TA_PASS;
	return v != TA_DROP_SOCKET;
}

/*
 * The sockets open now (the programs are attached: whatever changes from
 * here on is in the ring too): their owners go into the tables, so that
 * their later events carry them, and their records are handed out first.
 */
static void take_snapshot(struct bpf_eventer *b)
{
	struct snapshot *s = &b->snap;

	if (snapshot_take(s, OWNED_SOCKETS_MAX, snapshot_keep, b, b->host))
		return; /* logged; recording goes on without */
	for (size_t i = 0; i < s->n; i++) {
		const struct snapshot_socket *sk = &s->sockets[i];
		struct owner o = {.pid = sk->owner_pid, .uid = sk->owner_uid};
		if (!sk->owner_pid)
			continue;
		memcpy(o.comm, sk->owner_comm, sizeof(o.comm));
		if (sk->cookie)
			set_owner(b, b->sockets, sk->cookie, &o, 0, false);
		if (sk->state == TCP_AUDIT_TCP_LISTEN)
			set_owner(b, b->listeners,
				  owner_listener_key(sk->netns, sk->family, sk->sport), &o, 0,
				  false);
	}
}

/*
 * Whether the kernel has both reset tracepoints, and the names of its reset
 * reasons (enum sk_rst_reason, Linux 6.10+) from its BTF.
 */
static bool reset_tracepoints(struct bpf_eventer *b)
{
	struct btf *btf = btf__load_vmlinux_btf();
	bool have = false;

	reset_reason_map_init(&b->reasons);
	if (!btf)
		return false;
	have = btf__find_by_name_kind(btf, "btf_trace_tcp_send_reset", BTF_KIND_TYPEDEF) > 0 &&
	       btf__find_by_name_kind(btf, "btf_trace_tcp_receive_reset", BTF_KIND_TYPEDEF) > 0;
	int id = btf__find_by_name_kind(btf, "sk_rst_reason", BTF_KIND_ENUM);
	const struct btf_type *t = id > 0 ? btf__type_by_id(btf, (__u32)id) : NULL;
	for (int i = 0; t && i < btf_vlen(t); i++) {
		const struct btf_enum *e = btf_enum(t) + i;
		const char *name = btf__name_by_offset(btf, e->name_off);
		if (name)
			reset_reason_map_add(&b->reasons, e->val, name, strlen(name));
	}
	btf__free(btf);
	if (!have)
		tcp_audit_info(b->host, "this kernel has no tcp:tcp_send_reset or "
					"tcp:tcp_receive_reset tracepoint: no reset records");
	return have;
}

/*
 * How accept() is seen: with accept=auto, by the root cgroup's getpeername
 * hooks where tcp-audit sees the host's root cgroup and may attach there
 * (every accept() that asks for the peer's address, in every process); else
 * at the syscalls' exit.  Returns the root's fd for attach_accept(), or -1.
 */
static int choose_accept(struct bpf_eventer *b, int mode)
{
	struct tcp_audit_bpf *k = b->skel;
	const char *why = NULL;
	uint64_t caps = 0;
	int cgroup = -1;

	caps_read(&caps, NULL);
	if (mode == ACCEPT_SYSCALLS)
		; /* as asked: said by nothing */
	else if (!(caps & (1ull << CAP_NET_ADMIN | 1ull << CAP_SYS_ADMIN)))
		why = "without CAP_NET_ADMIN or CAP_SYS_ADMIN no cgroup program can be loaded";
	else if ((cgroup = cgroup2_root_open()) == -EXDEV)
		why = "in a cgroup namespace of its own (a container), the root cgroup is not the "
		      "host's";
	else if (cgroup == -ENOENT)
		why = "no cgroup v2 file system is mounted from its root";
	else if (cgroup < 0)
		why = strerror(-cgroup); /* opening the root's directory */
	if (cgroup < 0) {
		if (why)
			tcp_audit_info(b->host, "%s: accept() is seen at its system call's exit", why);
		bpf_program__set_autoload(k->progs.on_peername4, false);
		bpf_program__set_autoload(k->progs.on_peername6, false);
	}
	return cgroup;
}

static void attach_accept(struct bpf_eventer *b, int cgroup, int tracefs)
{
	struct tcp_audit_bpf *k = b->skel;

	if (cgroup >= 0) {
		k->links.on_peername4 = bpf_program__attach_cgroup(k->progs.on_peername4, cgroup);
		k->links.on_peername6 = bpf_program__attach_cgroup(k->progs.on_peername6, cgroup);
		b->accept_by_peername = k->links.on_peername4 && k->links.on_peername6;
		if (b->accept_by_peername)
			return;
		tcp_audit_info(b->host, "cannot attach to the root cgroup's getpeername hooks (%s): "
					"accept() is seen at its system call's exit", strerror(errno));
	}
	attach_accept_syscalls(b, tracefs);
}

/* Loads and attaches. */
static int load(struct bpf_eventer *b, int accept_mode)
{
	struct tcp_audit_bpf *k = b->skel;
	bool resets = !k->rodata->filter_cfg.kinds || (k->rodata->filter_cfg.kinds & TA_KINDS_RESET);

	/* a kernel without the reset tracepoints (before 4.15/5.5) loads the rest */
	if (!resets || !reset_tracepoints(b)) {
		bpf_program__set_autoload(k->progs.on_send_reset, false);
		bpf_program__set_autoload(k->progs.on_receive_reset, false);
	}
	int cgroup = choose_accept(b, accept_mode);
	int r = tcp_audit_bpf__load(k);
	if (!r)
		r = ring_set_new(&b->rings, bpf_map__fd(k->maps.ring_slot),
				 bpf_map__fd(k->maps.ring_pos), bpf_map__fd(k->maps.doorbell),
				 libbpf_num_possible_cpus(), b->ring_slots);
	if (!r && (!(k->links.on_state = bpf_program__attach(k->progs.on_state)) ||
		   (bpf_program__autoload(k->progs.on_state_rescue) &&
		    !(k->links.on_state_rescue = bpf_program__attach(k->progs.on_state_rescue)))))
		r = -errno;
	if (!r) {
		/* libbpf finds the classic tracepoints (io_uring's, the syscalls') through tracefs */
		int tracefs = tracefs_mount_if_missing();
		if (tracefs > 0)
			tcp_audit_info(b->host, "mounted tracefs at /sys/kernel/tracing (for the "
						"io_uring and syscall tracepoints)");
		attach_accept(b, cgroup, tracefs);
	}
	if (cgroup >= 0)
		close(cgroup);
	if (r)
		return r;
	if (bpf_program__autoload(k->progs.on_send_reset) &&
	    (!(k->links.on_send_reset = bpf_program__attach(k->progs.on_send_reset)) ||
	     !(k->links.on_receive_reset = bpf_program__attach(k->progs.on_receive_reset))))
		return -errno;
	k->links.on_uring_complete = bpf_program__attach(k->progs.on_uring_complete);
	if (!k->links.on_uring_complete)
		tcp_audit_debug(b->host, "no io_uring:io_uring_complete tracepoint: a socket accepted "
					 "through io_uring is owned by its listener's creator");
	return 0;
}

static void bpf_close(void *self);

static int bpf_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	const struct bpf_config *c = config;
	struct bpf_eventer *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	b->host = host;
	b->sockets = owner_table_new(OWNED_SOCKETS_MAX);
	b->listeners = owner_table_new(LISTENERS_MAX);
	b->hold = calloc(HOLD_MAX, sizeof(*b->hold));
	if (!b->sockets || !b->listeners || !b->hold) {
		r = -ENOMEM;
		goto fail;
	}
	libbpf_host = host;
	libbpf_set_print(libbpf_log);

	if (access(BTF_PATH, R_OK) != 0) {
		tcp_audit_error(host,
				"this kernel has no BTF (%s: %s): the bpf eventer needs a kernel "
				"built with CONFIG_DEBUG_INFO_BTF; use --event tracefs",
				BTF_PATH, strerror(errno));
		r = -ENOTSUP;
		goto fail;
	}
	b->skel = tcp_audit_bpf__open();
	if (!b->skel) {
		r = -errno;
		tcp_audit_error(host, "cannot open the BPF object: %s", strerror(errno));
		goto fail;
	}
	r = configure(b, c);
	if (r)
		goto fail; /* logged */
	r = load(b, c->accept);
	if (r == -EPERM || r == -EACCES) {
		tcp_audit_error(host, "not allowed to load BPF programs (%s): run tcp-audit as "
				      "root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
				strerror(-r));
		goto fail;
	}
	if (r) {
		tcp_audit_error(host, "cannot load or attach the BPF program: %s (it needs Linux "
				      "5.12 or later with BTF; else use --event tracefs)",
				strerror(-r));
		goto fail;
	}
	refresh_clock(b);
	tcp_audit_debug(host, "attached to tp_btf/inet_sock_set_state, %d rings of %u slots",
			libbpf_num_possible_cpus(), b->ring_slots);
	if (c->snapshot)
		take_snapshot(b);
	*self = b;
	return 0;
fail:
	bpf_close(b);
	return r;
}

/*
 * Sums a u64 at offset in a per-CPU array map's slot over the CPUs (the
 * kernel hands each CPU's value at a stride of its size rounded up to 8).
 */
static int percpu_sum(struct bpf_map *map, __u32 key, size_t offset, uint64_t *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	size_t stride = (bpf_map__value_size(map) + 7) & ~(size_t)7;

	if (ncpu <= 0)
		return -EINVAL;
	uint8_t *values = calloc((size_t)ncpu, stride);
	if (!values)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(map), &key, values) != 0) {
		free(values);
		return -errno;
	}
	*sum = 0;
	for (int i = 0; i < ncpu; i++) {
		uint64_t v;
		memcpy(&v, values + (size_t)i * stride + offset, sizeof(v));
		*sum += v;
	}
	free(values);
	return 0;
}

/*
 * A hole in the seq numbers for the events full rings lost since the last
 * look (at most every LOST_CHECK_NS: a system call).
 */
static void skip_lost(struct bpf_eventer *b, uint64_t now)
{
	uint64_t lost;

	if (now - b->lost_checked < LOST_CHECK_NS)
		return;
	b->lost_checked = now;
	if (percpu_sum(b->skel->maps.lost, 0, 0, &lost) == 0 && lost > b->lost_seen) {
		b->seq += lost - b->lost_seen;
		b->lost_seen = lost;
	}
}

/*
 * The clock held events are due by: the kernel's, as far as records have been
 * read, so that a reader running behind does not give up on an accept() that
 * waits in the ring; the wall clock one HOLD_NS later when none come.
 */
static uint64_t hold_clock(const struct bpf_eventer *b, uint64_t now)
{
	uint64_t idle = now > HOLD_NS ? now - HOLD_NS : 0;

	return b->seen_ktime > idle ? b->seen_ktime : idle;
}

static int bpf_read(void *self, struct tcp_audit_event *events, size_t max, int timeout_ms)
{
	struct bpf_eventer *b = self;
	int r;

	uint64_t now = clock_now_ns(CLOCK_MONOTONIC);
	if (now - b->clock_checked > CLOCK_REFRESH_NS)
		refresh_clock(b);
	if (now - b->expired_at > EXPIRE_EVERY_NS && now > PENDING_NS) {
		owner_table_expire(b->sockets, now - PENDING_NS);
		b->expired_at = now;
	}
	if (b->snap.next < b->snap.n) {
		size_t n = snapshot_next_events(&b->snap, events, max);
		if (n)
			return (int)n;
	}
	b->out = events;
	b->max = max;
	b->n = 0;
	skip_lost(b, now);
	release_held(b, hold_clock(b, now), false, SIZE_MAX);
	/* on_record() needs room for one event */
	if (b->n == b->max)
		return (int)b->n;
	bool drain = timeout_ms == TCP_AUDIT_READ_DRAIN, pending;
	if (drain && !b->stopping) {
		b->stopping = true;
		/*
		 * Nothing new: the drain has an end.  The rescue program first:
		 * without it a missed run is counted lost; without the primary,
		 * its runs would count as rescues of misses that were lost.
		 */
		bpf_link__destroy(b->skel->links.on_state_rescue);
		b->skel->links.on_state_rescue = NULL;
		tcp_audit_bpf__detach(b->skel);
	}
	take_records(b, now, drain, &pending);
	/* stopping: a record being written is there within microseconds */
	for (int spins = 0; drain && pending && b->n < b->max && spins < 1000; spins++) {
		sched_yield();
		take_records(b, clock_now_ns(CLOCK_MONOTONIC), true, &pending);
	}
	if (drain)
		release_held(b, now, true, SIZE_MAX); /* no accept() to wait for */
	if (b->n == 0 && !drain) {
		/*
		 * Sleep until a program wakes us (another wakeup_records waiting
		 * in a ring) or the timer runs out (records waiting for their
		 * time go then), then take whatever may go.  Not a shorter sleep
		 * while records wait for their time: with two busy CPUs that
		 * made smaller batches and cost 0.03-0.05 us of system time an
		 * event.
		 */
		r = ring_set_wait(b->rings, timeout_ms);
		if (r < 0 && r != -EINTR)
			return r;
		take_records(b, clock_now_ns(CLOCK_MONOTONIC), false, &pending);
	}
	release_held(b, hold_clock(b, clock_now_ns(CLOCK_MONOTONIC)), false, SIZE_MAX);
	return (int)b->n;
}

/* Runs of prog the kernel skipped because it was already running on that CPU. */
static uint64_t recursion_misses(struct bpf_program *prog)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) != 0)
		return 0;
	return info.recursion_misses;
}

/* A record in a ring that would have become an event. */
static bool is_event_record(const void *rec, size_t len)
{
	return len >= sizeof(struct ta_record) && ta_record_is_event(rec);
}

static int bpf_stats(void *self, struct tcp_audit_eventer_stats *st)
{
	struct bpf_eventer *b = self;
	uint64_t full = 0, rescued = 0, missed;
	int r;

	/* the ring was full ... */
	if ((r = percpu_sum(b->skel->maps.lost, 0, 0, &full)) ||
	    (r = percpu_sum(b->skel->maps.nesting, 0, offsetof(struct nest, rescued), &rescued)))
		return r;
	/* ... or the kernel skipped a nested run (that the rescue program, if any, missed too) */
	missed = recursion_misses(b->skel->progs.on_state);
	st->lost = full + (missed > rescued ? missed - rescued : 0);
	/* ... or a reset's (no rescue: rare, and nesting in them rarer still) */
	st->lost += recursion_misses(b->skel->progs.on_send_reset) +
		    recursion_misses(b->skel->progs.on_receive_reset);
	/* ... or, stopping, the stop's drain ran out of time before them */
	if (b->stopping)
		st->lost += ring_set_count_left(b->rings, is_event_record) + b->hold_n;
	st->skipped = 0;
	return 0;
}

static void bpf_close(void *self)
{
	struct bpf_eventer *b = self;

	if (!b)
		return;
	uint64_t owner_lost = 0;
	if (b->skel && b->rings && percpu_sum(b->skel->maps.lost, 1, 0, &owner_lost) == 0 &&
	    owner_lost)
		tcp_audit_warning(b->host,
				  "%llu accept() or owner records found the ring full (not events: "
				  "those sockets' events may name their listener's owner)",
				  (unsigned long long)owner_lost);
	ring_set_free(b->rings);
	tcp_audit_bpf__destroy(b->skel);
	owner_table_free(b->sockets);
	owner_table_free(b->listeners);
	free(b->hold);
	snapshot_free(&b->snap);
	libbpf_set_print(NULL);
	libbpf_host = NULL;
	free(b);
}

static const struct tcp_audit_plugin bpf_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "bpf",
	.kind = TCP_AUDIT_EVENTER,
	.description = "every TCP state change from the kernel, IPv4 and IPv6, with the socket's "
		       "owner (eBPF, CO-RE; needs root and BTF)",
	.options = bpf_options,
	.config_size = sizeof(struct bpf_config),
	.eventer_open = bpf_open,
	.eventer_read = bpf_read,
	.eventer_stats = bpf_stats,
	.eventer_close = bpf_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &bpf_plugin;
}
