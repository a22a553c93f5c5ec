/* SPDX-License-Identifier: MIT */
/*
 * Log lines go to stderr, one write per line so threads never interleave.
 * When stderr is the journal (systemd says so in $JOURNAL_STREAM: the device
 * and inode of the stream it connected), each line starts with its syslog
 * priority, "<3>" for an error, which journald takes and strips.
 */
#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int log_max_level = TCP_AUDIT_LOG_INFO;

/* syslog priorities (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG) */
static const char *const level_priorities[] = {
	[TCP_AUDIT_LOG_ERROR] = "<3>",
	[TCP_AUDIT_LOG_WARNING] = "<4>",
	[TCP_AUDIT_LOG_INFO] = "<6>",
	[TCP_AUDIT_LOG_DEBUG] = "<7>",
};

static bool to_journal;

void log_init(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	to_journal = stream && sscanf(stream, "%llu:%llu", &dev, &ino) == 2 &&
		     fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static const char *const level_words[] = {
	[TCP_AUDIT_LOG_ERROR] = "error: ",
	[TCP_AUDIT_LOG_WARNING] = "warning: ",
	[TCP_AUDIT_LOG_INFO] = "",
	[TCP_AUDIT_LOG_DEBUG] = "debug: ",
};

/* One line at level, shown whatever log_max_level says. */
static void put_line(int level, const char *prefix, const char *fmt, va_list ap)
{
	char line[2048];
	int n;

	if (level < TCP_AUDIT_LOG_ERROR || level > TCP_AUDIT_LOG_DEBUG)
		level = TCP_AUDIT_LOG_ERROR;
	n = snprintf(line, sizeof(line), "%stcp-audit: %s%s",
		     to_journal ? level_priorities[level] : "", prefix, level_words[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* a message is one line: fold any newline a plugin or library put in */
	for (int i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	while (n > 0 && line[n - 1] == ' ')
		n--;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void log_line(int level, const char *prefix, const char *fmt, va_list ap)
{
	if (level <= log_max_level)
		put_line(level, prefix, fmt, ap);
}

void log_always(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	put_line(TCP_AUDIT_LOG_INFO, "", fmt, ap);
	va_end(ap);
}

#define DEFINE_LOG(fn, level)                       \
	void fn(const char *fmt, ...)               \
	{                                           \
		va_list ap;                         \
		va_start(ap, fmt);                  \
		log_line((level), "", fmt, ap);     \
		va_end(ap);                         \
	}

DEFINE_LOG(log_error, TCP_AUDIT_LOG_ERROR)
DEFINE_LOG(log_warning, TCP_AUDIT_LOG_WARNING)
DEFINE_LOG(log_info, TCP_AUDIT_LOG_INFO)
DEFINE_LOG(log_debug, TCP_AUDIT_LOG_DEBUG)

__attribute__((format(printf, 3, 4))) static void plugin_log(const struct tcp_audit_host *host,
							      int level, const char *fmt, ...)
{
	struct plugin_logger *l = host->host_data;
	va_list ap;

	if (level <= TCP_AUDIT_LOG_ERROR)
		__atomic_add_fetch(&l->errors, 1, __ATOMIC_RELAXED);
	va_start(ap, fmt);
	log_line(level, l->prefix, fmt, ap);
	va_end(ap);
}

static void plugin_keep_capability(const struct tcp_audit_host *host, int cap)
{
	struct plugin_logger *l = host->host_data;

	if (cap >= 0 && cap < 64)
		l->keep_caps |= 1ull << cap;
}

void plugin_logger_init(struct plugin_logger *l, const char *role, const char *name)
{
	memset(l, 0, sizeof(*l));
	l->host.abi_version = TCP_AUDIT_ABI_VERSION;
	l->host.struct_size = sizeof(l->host);
	l->host.log = plugin_log;
	l->host.host_data = l;
	l->host.keep_capability = plugin_keep_capability;
	snprintf(l->prefix, sizeof(l->prefix), "[%s:%s] ", role, name);
}
