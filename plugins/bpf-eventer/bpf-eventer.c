/* SPDX-License-Identifier: MIT */
/*
 * bpf eventer: loads the CO-RE program of bpf-eventer.bpf.c (embedded as a
 * libbpf skeleton, so only this .so is needed at run time), and hands the
 * core whole batches of events from its ring buffer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <tcp-audit/plugin.h>

#include "bpf-eventer.h"
#include "bpf-eventer.skel.h"
#include "event-text.h"
#include "kernel-helpers.h"

#define BTF_PATH "/sys/kernel/btf/vmlinux"
#define CLOCK_REFRESH_NS 1000000000ull

enum { FAMILY_ALL, FAMILY_INET, FAMILY_INET6 };

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
};

struct bpf_eventer {
	const struct tcp_audit_host *host;
	struct tcp_audit_bpf *skel;
	struct ring_buffer *rb;
	int64_t clock_offset; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
	uint64_t clock_checked;
	/* the batch being filled by the ring buffer callback */
	struct tcp_audit_event *out;
	size_t n, max;
};

static const struct tcp_audit_option bpf_options[] = {
	{.key = "ring_size",
	 .type = TCP_AUDIT_OPT_SIZE,
	 .def = "16M",
	 .min = 1 << 20,
	 .max = 1ll << 30,
	 .help = "kernel ring buffer for events (rounded up to a power of 2); ~150 bytes an event",
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
	struct tcp_audit_bpf__rodata *ro = b->skel->rodata;
	const struct tcp_audit_host *h = b->host;
	int r = 0;

	ro->filter_family = c->family == FAMILY_INET ? AF_INET : c->family == FAMILY_INET6 ? AF_INET6 : 0;
	if (c->ports && (r = parse_ports(h, "ports", c->ports, ro->ports, &ro->n_ports)))
		return r;
	if (c->lports && (r = parse_ports(h, "lports", c->lports, ro->lports, &ro->n_lports)))
		return r;
	if (c->rports && (r = parse_ports(h, "rports", c->rports, ro->rports, &ro->n_rports)))
		return r;
	if (c->addrs && (r = parse_prefixes(h, c->addrs, ro->prefixes, &ro->n_prefixes)))
		return r;
	if (c->states && (r = parse_states(h, c->states, &ro->state_mask)))
		return r;
	if (c->cgroup && (r = parse_cgroup(h, c->cgroup, &ro->filter_cgroup)))
		return r;
	ro->filter_netns = (__u32)c->netns;

	uint64_t ring = 1;
	while (ring < c->ring_size)
		ring <<= 1;
	ro->wakeup_bytes = ring / 16;
	return -bpf_map__set_max_entries(b->skel->maps.events, (__u32)ring) ? -EINVAL : 0;
}

static void convert(const struct bpf_eventer *b, const struct ta_record *k,
		    struct tcp_audit_event *e)
{
	memset(e, 0, sizeof(*e));
	e->ktime_ns = k->ktime;
	e->time_ns = (uint64_t)((int64_t)k->ktime + b->clock_offset);
	e->seq = k->seq;
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
	e->valid = TCP_AUDIT_HAS_KTIME | TCP_AUDIT_HAS_SEQ | TCP_AUDIT_HAS_TID | TCP_AUDIT_HAS_NETNS;
	if (k->flags & TA_REC_OWNER) {
		e->owner_pid = k->owner_pid;
		e->owner_uid = k->owner_uid;
		memcpy(e->owner_comm, k->owner_comm, TA_COMM_LEN);
		e->owner_comm[TCP_AUDIT_COMM_LEN - 1] = '\0';
		e->valid |= TCP_AUDIT_HAS_OWNER;
	}
	if (k->flags & TA_REC_COOKIE) {
		e->sock_cookie = k->cookie;
		e->valid |= TCP_AUDIT_HAS_COOKIE;
	}
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
}

static int on_record(void *ctx, void *data, size_t len)
{
	struct bpf_eventer *b = ctx;

	if (len < sizeof(struct ta_record))
		return 0;
	convert(b, data, &b->out[b->n++]);
	/* a full batch: stop here (libbpf has consumed this record already) */
	return b->n >= b->max ? -ENOSPC : 0;
}

/* How many arguments the kernel's inet_csk_accept() has, 0 if unknown. */
static int accept_arity(void)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	int n = 0;

	if (!vmlinux)
		return 0;
	int id = btf__find_by_name_kind(vmlinux, "inet_csk_accept", BTF_KIND_FUNC);
	if (id > 0) {
		const struct btf_type *fn = btf__type_by_id(vmlinux, (__u32)id);
		const struct btf_type *proto = btf__type_by_id(vmlinux, fn->type);
		if (proto && btf_is_func_proto(proto))
			n = btf_vlen(proto);
	}
	btf__free(vmlinux);
	return n;
}

/*
 * Loads and attaches with the BTF tracepoint or the classic one, with or
 * without the accept() hook (arity: inet_csk_accept()'s, 0 for none).
 */
static int load(struct bpf_eventer *b, const struct bpf_config *c, bool btf, int arity)
{
	int r;

	b->skel = tcp_audit_bpf__open();
	if (!b->skel)
		return -errno;
	bpf_program__set_autoload(btf ? b->skel->progs.on_state_tp : b->skel->progs.on_state_btf,
				  false);
	bpf_program__set_autoload(b->skel->progs.on_state_rescue, btf);
	bpf_program__set_autoload(b->skel->progs.on_accept2, arity == 2);
	bpf_program__set_autoload(b->skel->progs.on_accept4, arity == 4);
	r = configure(b, c);
	if (r)
		return r;
	r = tcp_audit_bpf__load(b->skel);
	if (r)
		return r;
	struct bpf_link *link =
		bpf_program__attach(btf ? b->skel->progs.on_state_btf : b->skel->progs.on_state_tp);
	if (!link)
		return -errno;
	b->skel->links.on_state_btf = btf ? link : NULL;
	b->skel->links.on_state_tp = btf ? NULL : link;
	if (btf) {
		b->skel->links.on_state_rescue = bpf_program__attach(b->skel->progs.on_state_rescue);
		if (!b->skel->links.on_state_rescue)
			return -errno;
	}
	struct bpf_program *acc = arity == 2 ? b->skel->progs.on_accept2
			       : arity == 4 ? b->skel->progs.on_accept4 : NULL;
	link = acc ? bpf_program__attach(acc) : NULL;
	if (acc && !link)
		return -errno;
	if (arity == 2)
		b->skel->links.on_accept2 = link;
	else if (arity == 4)
		b->skel->links.on_accept4 = link;
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
	/*
	 * Most capable first: the BTF tracepoint with the accept() hook (which
	 * needs BPF trampolines), then without the hook, then the classic
	 * tracepoint.
	 */
	static const struct {
		bool btf, accept;
	} tries[] = {{true, true}, {true, false}, {false, false}};
	int arity = accept_arity(), first = 0;

	/* check the options once, before trying anything */
	b->skel = tcp_audit_bpf__open();
	if (!b->skel) {
		r = -errno;
		tcp_audit_error(host, "cannot open the BPF object: %s", strerror(errno));
		goto fail;
	}
	r = configure(b, c);
	if (r)
		goto fail; /* logged */
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		if (tries[i].accept && !arity)
			continue;
		if (b->skel) {
			tcp_audit_bpf__destroy(b->skel);
			b->skel = NULL;
		}
		r = load(b, c, tries[i].btf, tries[i].accept ? arity : 0);
		if (r == 0)
			break;
		tcp_audit_debug(host, "loading with%s BTF tracepoint, with%s accept() hook: %s",
				tries[i].btf ? "" : "out", tries[i].accept ? "" : "out", strerror(-r));
		if (!first)
			first = r;
	}
	if (r == 0 && !b->skel->links.on_accept2 && !b->skel->links.on_accept4)
		tcp_audit_info(host, "this kernel does not let BPF hook accept(): an accepted "
				     "socket's owner is the process that created its listener");
	if (r) {
		if (r == -EPERM || r == -EACCES || first == -EPERM || first == -EACCES) {
			tcp_audit_error(host, "not allowed to load BPF programs (%s): run tcp-audit as "
					      "root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
					strerror(-r));
			r = -EPERM;
			goto fail;
		}
	}
	if (r) {
		tcp_audit_error(host, "cannot load or attach the BPF program: %s", strerror(-r));
		goto fail;
	}
	b->rb = ring_buffer__new(bpf_map__fd(b->skel->maps.events), on_record, b, NULL);
	if (!b->rb) {
		r = -errno;
		tcp_audit_error(host, "cannot map the ring buffer: %s", strerror(errno));
		goto fail;
	}
	refresh_clock(b);
	tcp_audit_debug(host, "attached to %s, ring buffer %u bytes",
			b->skel->links.on_state_btf ? "tp_btf/inet_sock_set_state"
						    : "tracepoint sock:inet_sock_set_state",
			bpf_map__max_entries(b->skel->maps.events));
	*self = b;
	return 0;
fail:
	bpf_close(b);
	return r;
}

static int bpf_read(void *self, struct tcp_audit_event *events, size_t max, int timeout_ms)
{
	struct bpf_eventer *b = self;
	int r;

	if (clock_now_ns(CLOCK_MONOTONIC) - b->clock_checked > CLOCK_REFRESH_NS)
		refresh_clock(b);
	b->out = events;
	b->max = max;
	b->n = 0;
	r = ring_buffer__consume(b->rb);
	if (r < 0 && r != -ENOSPC)
		return r;
	if (b->n == 0 && timeout_ms != TCP_AUDIT_READ_DRAIN) {
		/*
		 * Sleep until the program wakes us (enough data waiting) or the
		 * timer runs out, then take whatever has come meanwhile.
		 */
		r = ring_buffer__poll(b->rb, timeout_ms);
		if (r < 0 && r != -ENOSPC && r != -EINTR)
			return r;
		if (b->n < b->max) {
			r = ring_buffer__consume(b->rb);
			if (r < 0 && r != -ENOSPC)
				return r;
		}
	}
	return (int)b->n;
}

/* Sums a per-CPU array map's slot over the CPUs. */
static int percpu_sum(struct bpf_map *map, __u32 key, uint64_t *sum)
{
	int ncpu = libbpf_num_possible_cpus();

	if (ncpu <= 0)
		return -EINVAL;
	__u64 *values = calloc((size_t)ncpu, sizeof(*values));
	if (!values)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(map), &key, values) != 0) {
		free(values);
		return -errno;
	}
	*sum = 0;
	for (int i = 0; i < ncpu; i++)
		*sum += values[i];
	free(values);
	return 0;
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

static int bpf_stats(void *self, struct tcp_audit_eventer_stats *st)
{
	struct bpf_eventer *b = self;
	uint64_t full = 0, rescued = 0, missed;
	int r;

	/* the ring was full ... */
	if ((r = percpu_sum(b->skel->maps.lost, 0, &full)) ||
	    (r = percpu_sum(b->skel->maps.nesting, 1, &rescued)))
		return r;
	/* ... or the kernel skipped a nested run that the rescue program missed too */
	if (b->skel->links.on_state_btf)
		missed = recursion_misses(b->skel->progs.on_state_btf);
	else
		missed = recursion_misses(b->skel->progs.on_state_tp);
	st->lost = full + (missed > rescued ? missed - rescued : 0);
	st->skipped = 0;
	return 0;
}

static void bpf_close(void *self)
{
	struct bpf_eventer *b = self;

	if (!b)
		return;
	ring_buffer__free(b->rb);
	tcp_audit_bpf__destroy(b->skel);
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
