/* SPDX-License-Identifier: MIT */
/*
 * replay eventer: reads events back from the JSON-lines format the jsonl sink
 * writes (common/event-json.h), from a file or stdin, then reports the end of
 * the stream.  A malformed line stops the run naming the line and what is
 * wrong; with on_error=skip it is skipped and counted instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tcp-audit/plugin.h>

#include "event-json.h"

#define BUF_SIZE (1u << 20) /* also the longest line accepted */
#define MAX_SKIP_LOGS 10

enum { ON_ERROR_STOP, ON_ERROR_SKIP };

struct replay_config {
	const char *path;
	int on_error;
};

struct replay {
	const struct tcp_audit_host *host;
	const struct replay_config *cfg;
	const char *name; /* for messages */
	int fd;
	bool own_fd;
	bool eof;
	int pending; /* TCP_AUDIT_END / TCP_AUDIT_FATAL / -errno, for the next read */
	char *buf;
	size_t start, end;
	uint64_t line;
	uint64_t skipped;
};

static const struct tcp_audit_option replay_options[] = {
	{.key = "path",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "-",
	 .help = "JSON-lines file written by the jsonl sink; - for stdin",
	 .offset = offsetof(struct replay_config, path)},
	{.key = "on_error",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "stop",
	 .choices = "stop|skip",
	 .help = "a malformed line stops the run, or is skipped and counted",
	 .offset = offsetof(struct replay_config, on_error)},
	{0},
};

static int replay_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	const struct replay_config *cfg = config;
	struct replay *rp = calloc(1, sizeof(*rp));

	if (!rp)
		return -ENOMEM;
	rp->host = host;
	rp->cfg = cfg;
	rp->buf = malloc(BUF_SIZE);
	if (!rp->buf) {
		free(rp);
		return -ENOMEM;
	}
	if (strcmp(cfg->path, "-") == 0) {
		rp->fd = STDIN_FILENO;
		rp->name = "stdin";
	} else {
		rp->fd = open(cfg->path, O_RDONLY | O_CLOEXEC);
		if (rp->fd < 0) {
			int r = -errno;
			tcp_audit_error(host, "cannot open %s: %s", cfg->path, strerror(errno));
			free(rp->buf);
			free(rp);
			return r;
		}
		rp->own_fd = true;
		rp->name = cfg->path;
	}
	*self = rp;
	return 0;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

/* Parses one line into *ev: 1 if it is an event, 0 if skipped, <0 to stop. */
static int take_line(struct replay *rp, const char *s, size_t n, struct tcp_audit_event *ev)
{
	char err[256];

	rp->line++;
	if (blank(s, n) || event_json_is_seal(s, n))
		return 0; /* a seal covers events of the file, it is not one */
	if (event_from_json(s, n, ev, err, sizeof(err)) == 0)
		return 1;
	if (rp->cfg->on_error == ON_ERROR_STOP) {
		tcp_audit_error(rp->host, "%s:%" PRIu64 ": %s (-p on_error=skip skips such lines)",
				rp->name, rp->line, err);
		return TCP_AUDIT_FATAL;
	}
	rp->skipped++;
	if (rp->skipped <= MAX_SKIP_LOGS)
		tcp_audit_warning(rp->host, "%s:%" PRIu64 ": skipped: %s%s", rp->name, rp->line, err,
				  rp->skipped == MAX_SKIP_LOGS ? " (further skips are only counted)"
							       : "");
	return 0;
}

/* Reads more input, waiting up to timeout_ms: bytes read (0 at EOF or on timeout), or -errno. */
static int fill(struct replay *rp, int timeout_ms)
{
	if (rp->start > 0) {
		memmove(rp->buf, rp->buf + rp->start, rp->end - rp->start);
		rp->end -= rp->start;
		rp->start = 0;
	}
	struct pollfd pfd = {.fd = rp->fd, .events = POLLIN};
	int pr = poll(&pfd, 1, timeout_ms);
	if (pr < 0)
		return errno == EINTR ? 0 : -errno;
	if (pr == 0)
		return 0;
	ssize_t r = read(rp->fd, rp->buf + rp->end, BUF_SIZE - rp->end);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (r == 0)
		rp->eof = true;
	rp->end += (size_t)r;
	return (int)r;
}

static int replay_read(void *self, struct tcp_audit_event *events, size_t max, int timeout_ms)
{
	if (timeout_ms == TCP_AUDIT_READ_DRAIN)
		return 0; /* stopping: what is left of the file is not read */
	struct replay *rp = self;
	size_t n = 0;

	if (rp->pending)
		return rp->pending == TCP_AUDIT_END ? TCP_AUDIT_END : rp->pending;
	while (n < max) {
		char *s = rp->buf + rp->start;
		char *nl = memchr(s, '\n', rp->end - rp->start);
		int r;

		if (nl) {
			r = take_line(rp, s, (size_t)(nl - s), &events[n]);
			rp->start += (size_t)(nl - s) + 1;
		} else if (rp->eof) {
			if (rp->start < rp->end) { /* a last line without its newline */
				r = take_line(rp, s, rp->end - rp->start, &events[n]);
				rp->start = rp->end;
			} else {
				rp->pending = TCP_AUDIT_END;
				break;
			}
		} else if (rp->end - rp->start == BUF_SIZE) {
			tcp_audit_error(rp->host, "%s:%" PRIu64 ": line longer than %u bytes",
					rp->name, rp->line + 1, BUF_SIZE);
			r = TCP_AUDIT_FATAL;
		} else {
			/* wait only when there is nothing to hand over yet */
			r = fill(rp, n ? 0 : timeout_ms);
			if (r < 0) {
				tcp_audit_error(rp->host, "reading %s: %s", rp->name, strerror(-r));
				rp->pending = r;
				break;
			}
			if (r == 0 && !rp->eof)
				break; /* nothing came in time */
			continue;
		}
		if (r < 0) {
			rp->pending = r;
			break;
		}
		n += (size_t)r;
	}
	if (n)
		return (int)n;
	if (rp->pending && rp->pending != TCP_AUDIT_END && rp->pending != TCP_AUDIT_FATAL) {
		/* an I/O error is reported once and retried */
		int r = rp->pending;
		rp->pending = 0;
		return r;
	}
	return rp->pending;
}

static int replay_stats(void *self, struct tcp_audit_eventer_stats *st)
{
	struct replay *rp = self;

	st->lost = 0;
	st->skipped = rp->skipped;
	return 0;
}

static void replay_close(void *self)
{
	struct replay *rp = self;

	if (!rp)
		return;
	if (rp->own_fd)
		close(rp->fd);
	free(rp->buf);
	free(rp);
}

static const struct tcp_audit_plugin replay_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "replay",
	.kind = TCP_AUDIT_EVENTER,
	.description = "replays events from JSON lines written by the jsonl sink",
	.options = replay_options,
	.config_size = sizeof(struct replay_config),
	.eventer_open = replay_open,
	.eventer_read = replay_read,
	.eventer_stats = replay_stats,
	.eventer_close = replay_close,
	.flags = TCP_AUDIT_PLUGIN_REREADABLE_INPUT,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &replay_plugin;
}
