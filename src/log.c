/* SPDX-License-Identifier: MIT */
/* Log lines go to stderr, one write per line so threads never interleave. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int log_max_level = TCP_AUDIT_LOG_INFO;

static const char *const level_words[] = {
	[TCP_AUDIT_LOG_ERROR] = "error: ",
	[TCP_AUDIT_LOG_WARNING] = "warning: ",
	[TCP_AUDIT_LOG_INFO] = "",
	[TCP_AUDIT_LOG_DEBUG] = "debug: ",
};

void log_line(int level, const char *prefix, const char *fmt, va_list ap)
{
	char line[2048];
	int n;

	if (level > log_max_level)
		return;
	if (level < TCP_AUDIT_LOG_ERROR || level > TCP_AUDIT_LOG_DEBUG)
		level = TCP_AUDIT_LOG_ERROR;
	n = snprintf(line, sizeof(line), "tcp-audit: %s%s", prefix, level_words[level]);
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
