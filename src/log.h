/* SPDX-License-Identifier: MIT */
/* The core's logging, and the logger handed to each plugin instance. */
#ifndef TCP_AUDIT_LOG_H
#define TCP_AUDIT_LOG_H

#include <stdarg.h>

#include <tcp-audit/plugin.h>

/* Messages above this level are not printed (TCP_AUDIT_LOG_*). */
extern int log_max_level;

/* Reads $JOURNAL_STREAM: lines get syslog priority prefixes if stderr is the journal. */
void log_init(void);

void log_line(int level, const char *prefix, const char *fmt, va_list ap);

/* An informational line shown even with -q (the counters, the summary). */
__attribute__((format(printf, 1, 2))) void log_always(const char *fmt, ...);

__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_warning(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_info(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_debug(const char *fmt, ...);

/* A plugin instance's logger: host.host_data points back at it. */
struct plugin_logger {
	struct tcp_audit_host host;
	char prefix[96]; /* "[sink:pgsql] " */
	int errors;      /* error lines logged so far */
	uint64_t keep_caps; /* CAP_* bits the plugin asked to keep */
};

void plugin_logger_init(struct plugin_logger *l, const char *role, const char *name);

#endif
