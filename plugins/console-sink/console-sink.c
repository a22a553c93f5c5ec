/* SPDX-License-Identifier: MIT */
/*
 * console sink: one human-readable line per event on stdout, for watching a
 * live run.  Not an archive format (use jsonl for that): command names are
 * made safe for a terminal, times are shortened.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tcp-audit/plugin.h>

#include "event-text.h"

#define LINE_MAX_LEN 512
#define BATCH_BUF (256u * LINE_MAX_LEN)

struct console_config {
	bool utc;
};

struct console {
	const struct tcp_audit_host *host;
	const struct console_config *cfg;
	char *buf;
};

static const struct tcp_audit_option console_options[] = {
	{.key = "utc",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "true",
	 .help = "show times in UTC (false: local time)",
	 .offset = offsetof(struct console_config, utc)},
	{0},
};

static int console_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	struct console *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->host = host;
	c->cfg = config;
	c->buf = malloc(BATCH_BUF);
	if (!c->buf) {
		free(c);
		return -ENOMEM;
	}
	*self = c;
	return 0;
}

/* A command name with anything a terminal could act on replaced by '?'. */
static void safe_comm(const char *in, char out[TCP_AUDIT_COMM_LEN])
{
	size_t n = strnlen(in, TCP_AUDIT_COMM_LEN - 1);

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];
		out[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
	}
	out[n] = '\0';
}

static void endpoint(const struct tcp_audit_event *ev, const uint8_t *addr, unsigned port,
		     char *out, size_t size)
{
	char a[ADDR_TEXT_LEN];

	format_addr(ev->family, addr, a);
	snprintf(out, size, ev->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, port);
}

static size_t format_line(const struct console *c, const struct tcp_audit_event *ev, char *out)
{
	char when[RFC3339_NS_LEN], src[64], dst[64], comm[TCP_AUDIT_COMM_LEN],
		owner[64] = "";
	uint64_t t = ev->time_ns;

	if (!c->cfg->utc) {
		struct tm tm;
		time_t secs = (time_t)(t / 1000000000u);
		localtime_r(&secs, &tm);
		t += (uint64_t)tm.tm_gmtoff * 1000000000u;
	}
	format_rfc3339_ns(t, when);
	when[26] = '\0'; /* microseconds are enough to read */
	when[10] = ' ';
	if (ev->kind == TCP_AUDIT_KIND_GAP) {
		const char *stage = gap_stage_name(ev->gap_stage);
		return (size_t)snprintf(out, LINE_MAX_LEN, "%s  GAP: %llu events lost (%s)\n", when,
					(unsigned long long)ev->gap_lost, stage ? stage : "?");
	}
	endpoint(ev, ev->saddr, ev->sport, src, sizeof(src));
	endpoint(ev, ev->daddr, ev->dport, dst, sizeof(dst));
	if (ev->valid & TCP_AUDIT_HAS_OWNER) {
		safe_comm(ev->owner_comm, comm);
		snprintf(owner, sizeof(owner), "  owner %u %s", ev->owner_pid, comm);
	}
	if (ev->kind == TCP_AUDIT_KIND_SNAPSHOT) {
		const char *st = tcp_state_name(ev->new_state);
		int n = snprintf(out, LINE_MAX_LEN, "%s  %-5s %s -> %s  open at start: %s%s\n",
				 when, ev->family == AF_INET6 ? "tcp6" : "tcp4", src, dst,
				 st ? st : "?", owner);
		return n < 0 ? 0 : (size_t)n >= LINE_MAX_LEN ? LINE_MAX_LEN - 1 : (size_t)n;
	}
	safe_comm(ev->comm_on_cpu, comm);
	if (ev->kind == TCP_AUDIT_KIND_RESET) {
		const char *st = tcp_state_name(ev->new_state);
		const char *why = ev->valid & TCP_AUDIT_HAS_RESET_REASON
					  ? reset_reason_name(ev->reset_reason)
					  : NULL;
		int n = snprintf(out, LINE_MAX_LEN,
				 "%s  %-5s %s -> %s  RESET %s%s%s%s%s%s%s  (on cpu %u %s)\n", when,
				 ev->family == AF_INET6 ? "tcp6" : "tcp4", src, dst,
				 ev->reset_direction == TCP_AUDIT_RESET_SENT ? "sent" : "received",
				 st ? " in " : "", st ? st : "", why ? " (" : "", why ? why : "",
				 why ? ")" : "", owner, ev->pid_on_cpu, comm);
		return n < 0 ? 0 : (size_t)n >= LINE_MAX_LEN ? LINE_MAX_LEN - 1 : (size_t)n;
	}
	const char *from = tcp_state_name(ev->old_state), *to = tcp_state_name(ev->new_state);
	const char *err = ev->valid & TCP_AUDIT_HAS_ERROR ? errno_name(ev->error) : NULL;
	int n = snprintf(out, LINE_MAX_LEN, "%s  %-5s %s -> %s  %s -> %s%s%s%s%s  (on cpu %u %s)\n",
			 when, ev->family == AF_INET6 ? "tcp6" : "tcp4", src, dst, from ? from : "?",
			 to ? to : "?", err ? " (" : "", err ? err : "", err ? ")" : "", owner,
			 ev->pid_on_cpu, comm);
	return n < 0 ? 0 : (size_t)n >= LINE_MAX_LEN ? LINE_MAX_LEN - 1 : (size_t)n;
}

static int console_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	struct console *c = self;
	size_t used = 0;

	for (size_t i = 0; i < n; i++) {
		used += format_line(c, &ev[i], c->buf + used);
		if (BATCH_BUF - used < LINE_MAX_LEN || i + 1 == n) {
			for (size_t off = 0; off < used;) {
				ssize_t w = write(STDOUT_FILENO, c->buf + off, used - off);
				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0)
					return -errno;
				off += (size_t)w;
			}
			used = 0;
		}
	}
	return 0;
}

/* --seal: a terminal is a view, not an archive; the events are shown, the seal is not. */
static int console_write_sealed(void *self, const struct tcp_audit_event *ev, size_t n,
				const struct tcp_audit_seal *seal)
{
	(void)seal;
	return console_write(self, ev, n);
}

static void console_close(void *self)
{
	struct console *c = self;

	if (!c)
		return;
	free(c->buf);
	free(c);
}

static const struct tcp_audit_plugin console_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "console",
	.kind = TCP_AUDIT_SINKER,
	.description = "a human-readable line per event on stdout (for watching, not archiving)",
	.options = console_options,
	.config_size = sizeof(struct console_config),
	.sinker_open = console_open,
	.sinker_write = console_write,
	.sinker_close = console_close,
	.sinker_write_sealed = console_write_sealed,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &console_plugin;
}
