// SPDX-License-Identifier: MIT
/*
 * The tracefs eventer: TCP state changes from the kernel's own trace buffers,
 * for hosts where BPF is not available or not allowed.
 *
 * It makes a tracing instance of its own (tcp_audit_<pid>_<n>), enables
 * sock:inet_sock_set_state there (tcp:tcp_set_state on kernels before 4.16)
 * with an in-kernel filter (TCP only, plus the port and family options), and
 * tcp:tcp_send_reset and tcp:tcp_receive_reset (filtered in user space: they
 * are rare), and reads the per-CPU binary buffers (trace_pipe_raw).  Records are decoded
 * through the event's format description (decoder.c); events of all CPUs are
 * merged in time order.  The buffers do not overwrite: what does not fit is
 * dropped by the kernel and counted in the per-CPU stats, which become the
 * kernel-side loss.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <linux/capability.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <unistd.h>

#include <tracefs/tracefs.h>
#include <traceevent/event-parse.h>

#include <tcp-audit/plugin.h>

#include "decoder.h"
#include "kernel-helpers.h"
#include "snapshot.h"
#include "ta-filter.h"

#define INSTANCE_PREFIX "tcp_audit_"
#define QUEUE_CAP 16384        /* decoded events held per CPU */
#define POLL_NS 10000000ull    /* how often an idle reader looks at the buffers */
/*
 * A pass over the buffers that handed out fewer than PACE_EVENTS events (and
 * fewer than asked for) makes the next one wait until PACE_NS after it: each
 * read() takes what a CPU's buffer holds, a partial page as readily as a
 * whole one, and a reader that comes back as soon as it has handed out a
 * batch reads a few events a system call (and hands the host small batches:
 * a spool write and sink writes each).
 */
#define PACE_EVENTS 512
#define PACE_NS 4000000ull
#define TID_SLOTS 4096         /* thread -> process cache */
#define TID_TTL_NS 2000000000ull
#define CLOCK_REFRESH_NS 10000000000ull

struct tracefs_config {
	uint64_t buffer_size;
	int family;
	const char *ports;
	const char *lports;
	const char *rports;
	bool snapshot;
	const char *kinds;
};

static const struct tcp_audit_option tracefs_options[] = {
	{.key = "buffer_size",
	 .type = TCP_AUDIT_OPT_SIZE,
	 .def = "8M",
	 .min = 64 << 10,
	 .max = 1ll << 30,
	 .help = "kernel trace buffer per CPU; ~80 bytes an event",
	 .offset = offsetof(struct tracefs_config, buffer_size)},
	{.key = "family",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "all",
	 .choices = "all|inet|inet6",
	 .help = "only IPv4 (inet) or IPv6 (inet6) sockets",
	 .offset = offsetof(struct tracefs_config, family)},
	{.key = "ports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these ports, local or remote (80,443; up to 16)",
	 .offset = offsetof(struct tracefs_config, ports)},
	{.key = "lports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these local ports (up to 16)",
	 .offset = offsetof(struct tracefs_config, lports)},
	{.key = "rports",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "only sockets with one of these remote ports (up to 16)",
	 .offset = offsetof(struct tracefs_config, rports)},
	{.key = "snapshot",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "true",
	 .help = "at start, a \"snapshot\" record for every TCP socket open then, in every "
		 "network namespace, with the process holding it",
	 .offset = offsetof(struct tracefs_config, snapshot)},
	{.key = "kinds",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "state,reset",
	 .help = KINDS_OPTION_HELP,
	 .offset = offsetof(struct tracefs_config, kinds)},
	{0},
};

struct cpu_reader {
	int cpu;
	struct tracefs_cpu *tcpu;
	struct tcp_audit_event *q; /* decoded, in time order */
	size_t head, tail;
	bool drained; /* the last read found the kernel buffer empty */
	/*
	 * The socket of the last reset received on this CPU: the kernel closes
	 * it next, on this CPU, with an error that follows from its state.
	 */
	uint64_t reset_sk;
	bool last_is_reset; /* q[tail - 1] is that reset's record */
};

struct tid_entry {
	uint32_t tid, pid;
	uint64_t stamp;
	char comm[TCP_AUDIT_COMM_LEN];
};

struct tracefs_eventer {
	const struct tcp_audit_host *host;
	struct tracefs_instance *inst;
	char name[64];
	const char *system, *event;
	bool resets; /* the reset events are enabled */
	struct tep_handle *tep;
	struct ta_decoder dec;
	struct cpu_reader *cpus;
	int n_cpus;
	void *page;
	int family; /* user-space family filter (tcp_set_state has no family field) */
	int64_t clock_offset;
	uint64_t clock_checked;
	uint64_t malformed;
	/*
	 * The host is stopping (its first drain read): tracing is off, so what
	 * is in the buffers is all there will be, and what is still there when
	 * the host asks for the stats is never read: counted as lost.
	 */
	bool stopping;
	uint64_t next_pass; /* CLOCK_MONOTONIC: no pass over the buffers before (PACE_NS) */
	struct tid_entry *tids;
	struct cpu_reader *filling; /* decode callback's target */
	struct ta_filter filter;    /* the options' filters, for the snapshot */
	struct snapshot snap;       /* the sockets open at start, handed out first */
};

/* --- instance names and leftovers ------------------------------------------ */

/* true if pid is a running tcp-audit */
static bool tcp_audit_alive(long pid)
{
	char path[64], comm[32] = "";

	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	return strcmp(comm, "tcp-audit") == 0;
}

/*
 * The trace buffer's page header and the formats of the events the decoder
 * reads (one missing is for the decoder to judge): what
 * tracefs_local_events_system() gives, without the kernel's symbol table that
 * it loads too (/proc/kallsyms, megabytes never needed here; read with a
 * realloc per 8 KiB, it took minutes under AddressSanitizer).  NULL with
 * errno on failure.
 */
static struct tep_handle *load_formats(void)
{
	static const char *const events[][2] = {
		{"sock", "inet_sock_set_state"},
		{"tcp", "tcp_set_state"},
		{"tcp", "tcp_send_reset"},
		{"tcp", "tcp_receive_reset"},
	};
	struct tep_handle *tep = tep_alloc();
	int size = 0;

	if (!tep)
		return NULL;
	tep_set_page_size(tep, getpagesize());
	char *header = tracefs_instance_file_read(NULL, "events/header_page", &size);
	if (!header || tep_parse_header_page(tep, header, (unsigned long)size, sizeof(long)) != 0) {
		int e = header ? EINVAL : errno;
		free(header);
		tep_free(tep);
		errno = e;
		return NULL;
	}
	free(header);
	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		char *format = tracefs_event_file_read(NULL, events[i][0], events[i][1], "format",
						       &size);
		if (format)
			tep_parse_event(tep, format, (unsigned long)size, events[i][0]);
		free(format);
	}
	return tep;
}

/* The pid in an instance name of ours (tcp_audit_<pid>_<n>), or 0. */
static long our_instance_pid(const char *name)
{
	const char *p = name + strlen(INSTANCE_PREFIX);
	char *end;

	if (strncmp(name, INSTANCE_PREFIX, strlen(INSTANCE_PREFIX)) != 0 || !isdigit(*p))
		return 0;
	long pid = strtol(p, &end, 10);
	if (*end != '_' || !isdigit(end[1]))
		return 0;
	for (p = end + 1; isdigit(*p); p++)
		;
	return *p == '\0' ? pid : 0;
}

/* Removes instances that earlier runs left behind (killed with -9). */
static void remove_leftovers(const struct tcp_audit_host *host)
{
	char *dir = tracefs_get_tracing_file("instances");
	DIR *d = dir ? opendir(dir) : NULL;

	for (struct dirent *de = d ? readdir(d) : NULL; de; de = readdir(d)) {
		long pid = our_instance_pid(de->d_name);
		if (pid <= 0 || pid == (long)getpid() || tcp_audit_alive(pid))
			continue; /* not ours, or a running tcp-audit's own */
		struct tracefs_instance *old = tracefs_instance_alloc(NULL, de->d_name);
		if (old && tracefs_instance_destroy(old) == 0)
			tcp_audit_info(host, "removed tracing instance %s left by an earlier run",
				       de->d_name);
		else
			tcp_audit_warning(host, "cannot remove tracing instance %s left by an earlier "
						"run: %s",
					  de->d_name, strerror(errno));
		tracefs_instance_free(old);
	}
	if (d)
		closedir(d);
	tracefs_put_tracing_file(dir);
}

/* --- the in-kernel filter --------------------------------------------------- */

static int append(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int append(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= size - len ? -ENOSPC : 0;
}

/* Appends the clause of a port list, whose ports go into out[] and *n too. */
static int port_clause(struct tracefs_eventer *t, char *buf, size_t size, const char *key,
		       const char *list, bool local, bool remote, __u16 *out, __u32 *n_out)
{
	uint16_t ports[TA_MAX_PORTS];
	size_t n = 0;
	char err[128];
	int r = port_list_parse(list, ports, TA_MAX_PORTS, &n, err, sizeof(err));

	if (r == -EINVAL)
		tcp_audit_error(t->host, "option %s: %s", key, err);
	if (r)
		return r;
	for (size_t i = 0; i < n; i++)
		out[i] = ports[i];
	*n_out = (__u32)n;
	if (buf[0] && (r = append(buf, size, " && ")))
		return r;
	if ((r = append(buf, size, "(")))
		return r;
	for (size_t i = 0; i < n; i++) {
		if (local && (r = append(buf, size, "%ssport == %u", i ? " || " : "", ports[i])))
			return r;
		if (remote && (r = append(buf, size, "%sdport == %u", i || local ? " || " : "",
					  ports[i])))
			return r;
	}
	return append(buf, size, ")");
}

static int build_filter(struct tracefs_eventer *t, const struct tracefs_config *c, char *buf,
			size_t size)
{
	int r = 0;

	buf[0] = '\0';
	t->filter.family = c->family == 1 ? AF_INET : c->family == 2 ? AF_INET6 : 0;
	if (t->dec.protocol.size)
		r = append(buf, size, "protocol == %d", IPPROTO_TCP);
	if (!r && c->family && t->dec.family.size)
		r = append(buf, size, "%sfamily == %d", buf[0] ? " && " : "",
			   c->family == 1 ? AF_INET : AF_INET6);
	if (!r && c->ports)
		r = port_clause(t, buf, size, "ports", c->ports, true, true, t->filter.ports,
				&t->filter.n_ports);
	if (!r && c->lports)
		r = port_clause(t, buf, size, "lports", c->lports, true, false, t->filter.lports,
				&t->filter.n_lports);
	if (!r && c->rports)
		r = port_clause(t, buf, size, "rports", c->rports, false, true, t->filter.rports,
				&t->filter.n_rports);
	if (r == -ENOSPC)
		tcp_audit_error(t->host, "the port filter is too long");
	return r;
}

/* --- thread -> process ------------------------------------------------------- */

/*
 * The trace records only the thread on the CPU; its process and command come
 * from /proc while it lives.  A thread gone before we looked keeps its thread
 * id as process id and gets no command.
 */
static const struct tid_entry *lookup_tid(struct tracefs_eventer *t, uint32_t tid, int cpu,
					  uint64_t now)
{
	struct tid_entry *e = &t->tids[(tid * 2654435761u) % TID_SLOTS];

	if (e->stamp && e->tid == tid && now - e->stamp < TID_TTL_NS)
		return e;
	memset(e, 0, sizeof(*e));
	e->tid = e->pid = tid;
	e->stamp = now;
	if (tid == 0) { /* the idle task, interrupted */
		snprintf(e->comm, sizeof(e->comm), "swapper/%d", cpu);
		return e;
	}
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%u/status", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return e;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Name:\t", 6) == 0) {
			size_t len = strcspn(line + 6, "\n");
			if (len >= sizeof(e->comm))
				len = sizeof(e->comm) - 1;
			memcpy(e->comm, line + 6, len);
			e->comm[len] = '\0';
		} else if (strncmp(line, "Tgid:\t", 6) == 0) {
			e->pid = (uint32_t)strtoul(line + 6, NULL, 10);
			break;
		}
	}
	fclose(f);
	return e;
}

/* --- reading ----------------------------------------------------------------- */

/* The error the kernel gives a socket a reset closes (tcp_reset()), by its state then. */
static uint16_t reset_error(unsigned state)
{
	switch (state) {
	case TCP_AUDIT_TCP_SYN_SENT:
		return ECONNREFUSED;
	case TCP_AUDIT_TCP_CLOSE_WAIT:
		return EPIPE;
	default:
		return ECONNRESET;
	}
}

/*
 * A reset received is followed on its CPU by its socket's close: the close
 * gets the error, the reset the state (the tracepoint has none).  Returns
 * whether ev passes the filters.
 */
static bool follow_resets(struct tracefs_eventer *t, struct cpu_reader *c,
			  struct tcp_audit_event *ev, uint64_t skaddr)
{
	if (ev->kind == TCP_AUDIT_KIND_RESET) {
		struct ta_subject subject = {0,         0,           ev->family,
					     ev->sport, ev->dport,   ev->old_state,
					     ev->new_state, ev->saddr, ev->daddr, 1};
		if (ev->reset_direction == TCP_AUDIT_RESET_RECEIVED)
			c->reset_sk = skaddr;
		return ta_filter(&t->filter, &subject) == TA_PASS;
	}
	if (c->reset_sk && skaddr == c->reset_sk && ev->new_state == TCP_AUDIT_TCP_CLOSE) {
		ev->error = reset_error(ev->old_state);
		ev->valid |= TCP_AUDIT_HAS_ERROR;
		if (c->last_is_reset && c->tail > c->head && !c->q[c->tail - 1].new_state)
			c->q[c->tail - 1].old_state = c->q[c->tail - 1].new_state = ev->old_state;
	}
	c->reset_sk = 0;
	return !t->family || ev->family == (t->family == 1 ? AF_INET : AF_INET6);
}

static int on_record(void *ctx, struct tcp_audit_event *ev, uint64_t ts, uint64_t skaddr)
{
	struct tracefs_eventer *t = ctx;
	struct cpu_reader *c = t->filling;

	if (!follow_resets(t, c, ev, skaddr))
		return 0;
	if (c->tail == QUEUE_CAP)
		return -ENOSPC; /* cannot happen: drain() leaves room for a page */
	ev->ktime_ns = ts;
	ev->valid |= TCP_AUDIT_HAS_KTIME;
	c->last_is_reset = ev->kind == TCP_AUDIT_KIND_RESET;
	c->q[c->tail++] = *ev;
	return 0;
}

/* Reads what the kernel holds for one CPU while the queue has room for a page. */
static int drain(struct tracefs_eventer *t, struct cpu_reader *c)
{
	size_t page_max = (size_t)t->dec.page_size / 8; /* no record is smaller */

	if (c->head == c->tail) {
		c->head = c->tail = 0;
	} else if (c->head > 0 && QUEUE_CAP - c->tail < page_max) {
		memmove(c->q, c->q + c->head, (c->tail - c->head) * sizeof(*c->q));
		c->tail -= c->head;
		c->head = 0;
	}
	c->drained = false;
	while (QUEUE_CAP - c->tail >= page_max) {
		int len = tracefs_cpu_read(c->tcpu, t->page, true);
		if (len < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (len <= 0) {
			c->drained = true;
			return 0;
		}
		t->filling = c;
		int r = ta_decoder_page(&t->dec, t->page, (size_t)len, on_record, t);
		if (r == -EINVAL) {
			if (t->malformed++ == 0)
				tcp_audit_warning(t->host, "cpu %d: a trace buffer page is malformed; "
							   "skipped the rest of it",
						  c->cpu);
		} else if (r < 0) {
			return r;
		}
	}
	return 0;
}

/* The snapshot lists what the options' filters pass. */
static bool snapshot_keep(struct snapshot_socket *sk, void *arg)
{
	return snapshot_filter(arg, sk) == TA_PASS;
}

/* Sleeps from now (CLOCK_MONOTONIC ns) until until, if that is later. */
static void sleep_until(uint64_t now, uint64_t until)
{
	if (until <= now)
		return;
	struct timespec ts = {.tv_sec = (time_t)((until - now) / 1000000000u),
			      .tv_nsec = (long)((until - now) % 1000000000u)};
	nanosleep(&ts, NULL);
}

static int tracefs_read(void *self, struct tcp_audit_event *events, size_t max, int timeout_ms)
{
	struct tracefs_eventer *t = self;

	if (t->snap.next < t->snap.n) {
		size_t n = snapshot_next_events(&t->snap, events, max);
		if (n)
			return (int)n;
	}
	uint64_t deadline = clock_now_ns(CLOCK_MONOTONIC) +
			    (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
	if (timeout_ms == TCP_AUDIT_READ_DRAIN && !t->stopping) {
		t->stopping = true;
		tracefs_trace_off(t->inst); /* nothing new: the drain has an end */
	}

	for (;;) {
		uint64_t now = clock_now_ns(CLOCK_MONOTONIC);
		if (now < t->next_pass && !t->stopping) {
			/* the last pass found little: let the buffers fill a while */
			sleep_until(now, t->next_pass < deadline ? t->next_pass : deadline);
			now = clock_now_ns(CLOCK_MONOTONIC);
		}
		if (now - t->clock_checked > CLOCK_REFRESH_NS) {
			t->clock_offset = realtime_minus_monotonic_ns();
			t->clock_checked = now;
		}
		/*
		 * Events stamped before now are all in the buffers by now (give or
		 * take a commit in flight); a CPU whose queue filled before its
		 * buffer emptied only vouches for what it has read.
		 */
		uint64_t cutoff = now;
		for (int i = 0; i < t->n_cpus; i++) {
			struct cpu_reader *c = &t->cpus[i];
			int r = drain(t, c);
			if (r < 0)
				return r;
			if (!c->drained && c->tail > c->head && c->q[c->tail - 1].ktime_ns < cutoff)
				cutoff = c->q[c->tail - 1].ktime_ns;
		}
		size_t n = 0;
		while (n < max) {
			struct cpu_reader *best = NULL;
			for (int i = 0; i < t->n_cpus; i++) {
				struct cpu_reader *c = &t->cpus[i];
				if (c->head < c->tail && c->q[c->head].ktime_ns <= cutoff &&
				    (!best || c->q[c->head].ktime_ns < best->q[best->head].ktime_ns))
					best = c;
			}
			if (!best)
				break;
			struct tcp_audit_event *e = &events[n++];
			*e = best->q[best->head++];
			const struct tid_entry *te = lookup_tid(t, e->tid_on_cpu, best->cpu, now);
			e->pid_on_cpu = te->pid;
			memcpy(e->comm_on_cpu, te->comm, sizeof(e->comm_on_cpu));
			e->time_ns = (uint64_t)((int64_t)e->ktime_ns + t->clock_offset);
		}
		/* not after a full batch (--batch-size may be below PACE_EVENTS): more may wait */
		t->next_pass = n < PACE_EVENTS && n < max ? now + PACE_NS : 0;
		if (n > 0)
			return (int)n;
		now = clock_now_ns(CLOCK_MONOTONIC);
		if (now >= deadline || timeout_ms == TCP_AUDIT_READ_DRAIN)
			return 0;
		sleep_until(now, deadline - now < POLL_NS ? deadline : now + POLL_NS);
	}
}

/*
 * The kernel's loss: the per-CPU stats' "dropped events" (what did not fit,
 * the buffers do not overwrite) and "overrun", summed over the CPUs.  One
 * read of each CPU's stats file.  Stopping, also what is left unread: the
 * stats' "entries" (still in the buffer) and what was decoded but not handed
 * out (the host's drain ran out of time: under valgrind, or a huge backlog).
 */
static uint64_t kernel_loss(struct tracefs_eventer *t)
{
	static const char *const counters[] = {"dropped events:", "overrun:", "entries:"};
	size_t n_counters = t->stopping ? 3 : 2;
	uint64_t sum = 0;

	for (int i = 0; i < t->n_cpus; i++) {
		if (t->stopping)
			sum += t->cpus[i].tail - t->cpus[i].head;
		char file[64];
		snprintf(file, sizeof(file), "per_cpu/cpu%d/stats", t->cpus[i].cpu);
		char *text = tracefs_instance_file_read(t->inst, file, NULL);
		for (char *line = text; line && *line;) {
			for (size_t k = 0; k < n_counters; k++) {
				size_t len = strlen(counters[k]);
				if (strncmp(line, counters[k], len) == 0)
					sum += strtoull(line + len, NULL, 10);
			}
			char *end = strchr(line, '\n');
			line = end ? end + 1 : NULL;
		}
		free(text);
	}
	return sum;
}

static int tracefs_stats(void *self, struct tcp_audit_eventer_stats *st)
{
	struct tracefs_eventer *t = self;

	st->lost = kernel_loss(t);
	st->skipped = t->malformed;
	return 0;
}

/* --- open and close ---------------------------------------------------------- */

static void tracefs_close(void *self)
{
	struct tracefs_eventer *t = self;

	if (!t)
		return;
	if (t->inst && t->system)
		tracefs_event_disable(t->inst, t->system, t->event);
	if (t->inst && t->resets)
		tracefs_event_disable(t->inst, "tcp", NULL);
	for (int i = 0; t->cpus && i < t->n_cpus; i++) {
		if (t->cpus[i].tcpu)
			tracefs_cpu_close(t->cpus[i].tcpu);
		free(t->cpus[i].q);
	}
	free(t->cpus);
	if (t->inst) {
		if (tracefs_instance_destroy(t->inst) != 0)
			tcp_audit_warning(t->host, "cannot remove tracing instance %s: %s", t->name,
					  strerror(errno));
		tracefs_instance_free(t->inst);
	}
	ta_decoder_fini(&t->dec);
	if (t->tep)
		tep_free(t->tep);
	free(t->page);
	free(t->tids);
	snapshot_free(&t->snap);
	free(t);
}

static int fail(struct tracefs_eventer *t, int r)
{
	tracefs_close(t);
	return r;
}

static int tracefs_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	const struct tracefs_config *c = config;
	static unsigned serial;
	const char *dir = NULL;
	char err[256], filter[1024];
	int r;

	if (tracefs_tracing_dir_is_mounted(true, &dir) < 0 || !dir) {
		tcp_audit_error(host, "cannot find or mount tracefs (tried /sys/kernel/tracing and "
				      "/sys/kernel/debug/tracing): %s",
				strerror(errno ? errno : ENOENT));
		return errno == EPERM || errno == EACCES ? -EPERM : -ENOENT;
	}
	if (access(dir, W_OK) != 0) {
		int e = errno;
		tcp_audit_error(host, "cannot write to %s (%s): run tcp-audit as root", dir,
				strerror(e));
		return -EPERM;
	}
	/* after open: the per-CPU stats files and removing the instance at close */
	if (TCP_AUDIT_HOST_HAS(host, keep_capability))
		host->keep_capability(host, CAP_DAC_OVERRIDE);
	struct tracefs_eventer *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->host = host;
	tcp_audit_debug(host, "tracefs at %s", dir);
	remove_leftovers(host);

	t->tep = load_formats();
	if (!t->tep) {
		tcp_audit_error(host, "cannot read the trace event formats under %s: %s", dir,
				strerror(errno));
		return fail(t, -EIO);
	}
	r = ta_decoder_init(&t->dec, t->tep, err, sizeof(err));
	if (r) {
		tcp_audit_error(host, "%s", err);
		return fail(t, r);
	}
	t->system = t->dec.legacy ? "tcp" : "sock";
	t->event = t->dec.legacy ? "tcp_set_state" : "inet_sock_set_state";
	if (t->dec.legacy)
		tcp_audit_info(host, "this kernel has no sock:inet_sock_set_state: using "
				     "tcp:tcp_set_state (it has no family: IPv4-mapped addresses "
				     "count as IPv4)");
	if (!t->dec.family.size)
		t->family = c->family;
	r = build_filter(t, c, filter, sizeof(filter));
	if (r)
		return fail(t, r);
	unsigned kinds;
	if ((r = kinds_parse(c->kinds, &kinds, err, sizeof(err)))) {
		if (r == -EINVAL)
			tcp_audit_error(host, "option kinds: %s", err);
		return fail(t, r);
	}
	t->filter.kinds = (__u16)kinds;
	bool states = kinds & TA_KINDS_STATE;
	t->resets = (kinds & TA_KINDS_RESET) && t->dec.sent.id && t->dec.received.id;
	if ((kinds & TA_KINDS_RESET) && !t->resets)
		tcp_audit_info(host, "this kernel has no tcp:tcp_send_reset or tcp:tcp_receive_reset "
				     "event: no reset records");

	snprintf(t->name, sizeof(t->name), INSTANCE_PREFIX "%ld_%u", (long)getpid(), serial++);
	t->inst = tracefs_instance_create(t->name);
	if (!t->inst) {
		tcp_audit_error(host, "cannot create tracing instance %s: %s", t->name,
				strerror(errno));
		return fail(t, -errno ? -errno : -EIO);
	}
	if (tracefs_instance_file_write(t->inst, "trace_clock", "mono") < 0) {
		tcp_audit_error(host, "this kernel's tracing has no \"mono\" clock: %s",
				strerror(errno));
		return fail(t, -ENOTSUP);
	}
	if (tracefs_instance_file_write(t->inst, "options/overwrite", "0") < 0 ||
	    tracefs_instance_set_buffer_size(t->inst, c->buffer_size >> 10, -1) < 0) {
		tcp_audit_error(host, "cannot set up tracing instance %s: %s", t->name,
				strerror(errno));
		return fail(t, -EIO);
	}
	if (states && filter[0] &&
	    tracefs_event_file_write(t->inst, t->system, t->event, "filter", filter) < 0) {
		tcp_audit_error(host, "the kernel refused the event filter \"%s\": %s", filter,
				strerror(errno));
		return fail(t, -EINVAL);
	}
	tcp_audit_debug(host, "instance %s, event %s:%s, filter \"%s\"", t->name, t->system,
			t->event, filter);

	long n = sysconf(_SC_NPROCESSORS_CONF);
	t->cpus = calloc(n > 0 ? (size_t)n : 1, sizeof(*t->cpus));
	t->page = malloc((size_t)t->dec.page_size);
	t->tids = calloc(TID_SLOTS, sizeof(*t->tids));
	if (!t->cpus || !t->page || !t->tids)
		return fail(t, -ENOMEM);
	for (int cpu = 0; cpu < n; cpu++) {
		struct tracefs_cpu *tc = tracefs_cpu_open(t->inst, cpu, true);
		if (!tc)
			continue; /* offline */
		struct cpu_reader *rd = &t->cpus[t->n_cpus++];
		rd->cpu = cpu;
		rd->tcpu = tc;
		rd->q = malloc(QUEUE_CAP * sizeof(*rd->q));
		if (!rd->q)
			return fail(t, -ENOMEM);
	}
	if (t->n_cpus == 0) {
		tcp_audit_error(host, "cannot open any per-CPU trace buffer of %s: %s", t->name,
				strerror(errno));
		return fail(t, -EIO);
	}
	if (states && tracefs_event_enable(t->inst, t->system, t->event) < 0) {
		tcp_audit_error(host, "cannot enable %s:%s: %s", t->system, t->event,
				strerror(errno));
		return fail(t, -EIO);
	}
	if (t->resets && (tracefs_event_enable(t->inst, "tcp", "tcp_send_reset") < 0 ||
			  tracefs_event_enable(t->inst, "tcp", "tcp_receive_reset") < 0)) {
		tcp_audit_error(host, "cannot enable tcp:tcp_send_reset and tcp:tcp_receive_reset: %s",
				strerror(errno));
		return fail(t, -EIO);
	}
	t->clock_offset = realtime_minus_monotonic_ns();
	t->clock_checked = clock_now_ns(CLOCK_MONOTONIC);
	if (c->snapshot) /* a failure is logged; recording goes on without */
		snapshot_take(&t->snap, SNAPSHOT_MAX_DEFAULT, snapshot_keep, &t->filter, t->host);
	*self = t;
	return 0;
}

static const struct tcp_audit_plugin tracefs_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "tracefs",
	.kind = TCP_AUDIT_EVENTER,
	.description = "TCP state changes from the kernel's trace buffers (tracefs), without BPF",
	.options = tracefs_options,
	.config_size = sizeof(struct tracefs_config),
	.eventer_open = tracefs_open,
	.eventer_read = tracefs_read,
	.eventer_stats = tracefs_stats,
	.eventer_close = tracefs_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &tracefs_plugin;
}
