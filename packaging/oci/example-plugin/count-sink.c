/* SPDX-License-Identifier: MIT */
/*
 * An example third-party sink, built against the tcp-audit-dev package alone:
 * counts the state changes and resets it is given and writes the counts to
 * path= when it is closed.
 *   cc -shared -fPIC -O2 $(pkg-config --cflags tcp-audit) -o tcp-audit-count-sink.so count-sink.c
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <tcp-audit/plugin.h>

struct count_config {
	const char *path;
};

struct count {
	const struct count_config *cfg;
	const struct tcp_audit_host *host;
	unsigned long long states, resets, other;
};

static const struct tcp_audit_option count_options[] = {
	{"path", TCP_AUDIT_OPT_STRING, "/dev/stdout", false, "where the counts go at the end",
	 offsetof(struct count_config, path), 0, 0, NULL},
	{0},
};

static int count_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	struct count *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->cfg = config;
	c->host = host;
	*self = c;
	return 0;
}

static int count_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	struct count *c = self;

	for (size_t i = 0; i < n; i++) {
		if (ev[i].kind == TCP_AUDIT_KIND_STATE_CHANGE)
			c->states++;
		else if (ev[i].kind == TCP_AUDIT_KIND_RESET)
			c->resets++;
		else
			c->other++;
	}
	return 0;
}

static void count_close(void *self)
{
	struct count *c = self;
	FILE *f = fopen(c->cfg->path, "w");

	if (f) {
		fprintf(f, "state changes %llu, resets %llu, other records %llu\n", c->states,
			c->resets, c->other);
		fclose(f);
	} else {
		tcp_audit_error(c->host, "cannot write %s", c->cfg->path);
	}
	free(c);
}

static const struct tcp_audit_plugin count_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "count",
	.kind = TCP_AUDIT_SINKER,
	.description = "example third-party sink: counts what it is given",
	.options = count_options,
	.config_size = sizeof(struct count_config),
	.sinker_open = count_open,
	.sinker_write = count_write,
	.sinker_close = count_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &count_plugin;
}
