/* SPDX-License-Identifier: MIT */
/* The Prometheus endpoint (see metrics.h). */
#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include <tcp-audit/plugin.h>

#include "log.h"
#include "pipeline.h"

#define MAX_CLIENTS 16
#define CLIENT_TIMEOUT_S 10

#define TEXT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define OPENMETRICS_TYPE "application/openmetrics-text; version=1.0.0; charset=utf-8"

struct metrics {
	struct MHD_Daemon *daemon;
	struct pipeline *p;
	char eventer[64];
};

/* "[::1]:9464", "127.0.0.1:9464", "localhost:0", ":9464" -> host (NULL: any), port. */
static int split_spec(const char *spec, char *host, size_t host_size, const char **port,
		      char *err, size_t err_size)
{
	const char *colon;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':') {
			snprintf(err, err_size, "\"%s\": expected [IPV6]:PORT", spec);
			return -1;
		}
		snprintf(host, host_size, "%.*s", (int)(close - spec - 1), spec + 1);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon || memchr(spec, ':', (size_t)(colon - spec))) {
			snprintf(err, err_size,
				 "\"%s\": expected HOST:PORT (an IPv6 address in brackets: [::1]:PORT)",
				 spec);
			return -1;
		}
		snprintf(host, host_size, "%.*s", (int)(colon - spec), spec);
	}
	*port = colon + 1;
	size_t n = strlen(*port);
	char *end;
	errno = 0;
	unsigned long v = strtoul(*port, &end, 10);
	if (!n || n > 5 || *end || errno || v > 65535 || !(**port >= '0' && **port <= '9')) {
		snprintf(err, err_size, "\"%s\": the port must be a number from 0 to 65535", spec);
		return -1;
	}
	return 0;
}

static void name_address(const struct sockaddr *sa, char *where, size_t where_size)
{
	char addr[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
		port = ntohs(s6->sin6_port);
		snprintf(where, where_size, "[%s]:%u", addr, port);
	} else {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
		port = ntohs(s4->sin_port);
		snprintf(where, where_size, "%s:%u", addr, port);
	}
}

int metrics_listen(const char *spec, char *where, size_t where_size, char *err, size_t err_size)
{
	char host[256];
	const char *port;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG},
			*res = NULL;
	int r, fd = -1, saved = 0;

	if (split_spec(spec, host, sizeof(host), &port, err, err_size) < 0)
		return -1;
	if (!*host) /* every address: IPv6 and IPv4 on one socket, else IPv4 */
		hints.ai_family = AF_INET6;
	r = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (r && !*host) {
		hints.ai_family = AF_INET;
		r = getaddrinfo(NULL, port, &hints, &res);
	}
	if (r) {
		snprintf(err, err_size, "\"%s\": %s", spec,
			 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return -1;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int one = 1, off = 0;
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6 && !*host)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, err_size, "cannot listen on %s: %s", spec, strerror(saved));
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		name_address((struct sockaddr *)&ss, where, where_size);
	else
		snprintf(where, where_size, "%s", spec);
	return fd;
}

/* The exposition, written into a memory stream. */
struct out {
	FILE *f;
	bool om; /* OpenMetrics */
};

/* # HELP and # TYPE; a counter's family has no _total in OpenMetrics. */
static void family(struct out *o, const char *name, const char *type, const char *help)
{
	bool counter = strcmp(type, "counter") == 0;
	const char *suffix = counter && !o->om ? "_total" : "";

	fprintf(o->f, "# HELP %s%s %s\n# TYPE %s%s %s\n", name, suffix, help, name, suffix, type);
}

static void label_value(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

/* name{key="value"} value; key NULL: no label. */
static void sample(struct out *o, const char *name, const char *key, const char *value,
		   uint64_t v)
{
	fputs(name, o->f);
	if (key) {
		fprintf(o->f, "{%s=\"", key);
		label_value(o->f, value);
		fputs("\"}", o->f);
	}
	fprintf(o->f, " %llu\n", (unsigned long long)v);
}

static void counter(struct out *o, const char *name, const char *help, uint64_t v)
{
	char total[128];

	family(o, name, "counter", help);
	snprintf(total, sizeof(total), "%s_total", name);
	sample(o, total, NULL, NULL, v);
}

static void gauge(struct out *o, const char *name, const char *help, uint64_t v)
{
	family(o, name, "gauge", help);
	sample(o, name, NULL, NULL, v);
}

/* The process_* metrics every Prometheus client library exports, from /proc. */
static void process_metrics(struct out *o)
{
	char buf[2048];
	FILE *f = fopen("/proc/self/stat", "re");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

	if (f)
		fclose(f);
	buf[n] = 0;
	/* after "(comm)": state is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24 */
	const char *rest = strrchr(buf, ')');
	unsigned long long utime, stime, start, vsize, rss;
	if (rest && tick > 0 &&
	    sscanf(rest + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
			     "%*d %*d %llu %llu %llu",
		   &utime, &stime, &start, &vsize, &rss) == 5) {
		double boot = 0;
		FILE *st = fopen("/proc/stat", "re");
		char line[256];
		while (st && fgets(line, sizeof(line), st))
			if (sscanf(line, "btime %lf", &boot) == 1)
				break;
		if (st)
			fclose(st);
		family(o, "process_cpu_seconds", "counter",
		       "User and system CPU time spent, in seconds.");
		fprintf(o->f, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / tick);
		gauge(o, "process_resident_memory_bytes", "Resident memory size, in bytes.",
		      rss * (unsigned long long)page);
		gauge(o, "process_virtual_memory_bytes", "Virtual memory size, in bytes.", vsize);
		if (boot > 0) {
			family(o, "process_start_time_seconds", "gauge",
			       "Start time of the process since the Unix epoch, in seconds.");
			fprintf(o->f, "process_start_time_seconds %.2f\n", boot + (double)start / tick);
		}
	}
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		uint64_t fds = 0;
		struct dirent *de;
		while ((de = readdir(d)))
			fds += de->d_name[0] != '.';
		closedir(d);
		gauge(o, "process_open_fds", "Open file descriptors.", fds - 1 /* this one */);
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		gauge(o, "process_max_fds", "The most file descriptors the process may open.",
		      rl.rlim_cur);
}

/* Which number of a sink's stats a family shows. */
enum sink_field {
	SINK_WRITTEN,
	SINK_ERRORS,
	SINK_RETRIES,
	SINK_LAG,
	SINK_UNAVAILABLE,
	SINK_FAILED,
	SINK_SEALS,
};

static void sink_family(struct out *o, const struct pipeline_stats *st, const char *name,
			const char *type, const char *help, enum sink_field field)
{
	char sname[128];

	family(o, name, type, help);
	snprintf(sname, sizeof(sname), "%s%s", name, strcmp(type, "counter") ? "" : "_total");
	for (size_t i = 0; i < st->n_sinks; i++) {
		const struct pipeline_sink_stats *s = &st->sinks[i];
		uint64_t v = 0;
		switch (field) {
		case SINK_WRITTEN: v = s->written; break;
		case SINK_ERRORS: v = s->errors; break;
		case SINK_RETRIES: v = s->retries; break;
		case SINK_LAG: v = s->undelivered; break;
		case SINK_UNAVAILABLE: v = s->unavailable; break;
		case SINK_FAILED: v = s->failed; break;
		case SINK_SEALS: v = s->seals; break;
		}
		sample(o, sname, "sink", s->label, v);
	}
}

static void exposition(struct out *o, const struct metrics *m, const struct pipeline_stats *st)
{
	family(o, o->om ? "tcp_audit_build" : "tcp_audit_build_info", o->om ? "info" : "gauge",
	       "tcp-audit's version, plugin ABI and eventer.");
	fprintf(o->f, "tcp_audit_build_info{version=\"%s\",abi=\"%u\",eventer=\"", TCP_AUDIT_VERSION,
		TCP_AUDIT_ABI_VERSION);
	label_value(o->f, m->eventer);
	fputs("\"} 1\n", o->f);

	counter(o, "tcp_audit_events_read", "Events read from the eventer.", st->read);
	family(o, "tcp_audit_events_lost", "counter",
	       "Events lost, by where: in the kernel (its buffers were full), the queue (always 0: "
	       "it waits), the spool (dropped at its cap with --spool-on-full drop_oldest, or "
	       "damaged), input (malformed records the eventer skipped).");
	sample(o, "tcp_audit_events_lost_total", "stage", "kernel", st->lost_kernel);
	sample(o, "tcp_audit_events_lost_total", "stage", "queue", st->lost_queue);
	sample(o, "tcp_audit_events_lost_total", "stage", "spool", st->lost_spool);
	sample(o, "tcp_audit_events_lost_total", "stage", "input", st->skipped_input);
	counter(o, "tcp_audit_gap_records", "Gap records written to the sinks for the kernel's loss.",
		st->gap_records);
	gauge(o, "tcp_audit_backlog_events",
	      "Events held in memory beyond the queue while a sink catches up (--spool none).",
	      st->backlog);
	gauge(o, "tcp_audit_backlog_peak_events", "The most events the backlog held at once.",
	      st->backlog_peak);
	gauge(o, "tcp_audit_spool_bytes", "Bytes in the spool's files (0 without a spool).",
	      st->spool_bytes);

	sink_family(o, st, "tcp_audit_sink_events_written", "counter",
		    "Events the sink stored (write() succeeded).", SINK_WRITTEN);
	sink_family(o, st, "tcp_audit_sink_errors", "counter",
		    "The sink's write() and flush() calls that failed.", SINK_ERRORS);
	sink_family(o, st, "tcp_audit_sink_retries", "counter",
		    "The sink's calls answered 'unavailable, retry later' (e.g. its database is "
		    "down); the events wait.",
		    SINK_RETRIES);
	sink_family(o, st, "tcp_audit_sink_lag_events", "gauge",
		    "Events read that the sink has not stored yet.", SINK_LAG);
	sink_family(o, st, "tcp_audit_sink_unavailable", "gauge",
		    "1 while the sink's last write or flush failed or was answered 'retry'.",
		    SINK_UNAVAILABLE);
	sink_family(o, st, "tcp_audit_sink_failed", "gauge",
		    "1 once the sink gave up (--max-errors failures in a row): the run stops.", SINK_FAILED);
	sink_family(o, st, "tcp_audit_sink_seals", "counter",
		    "Seals made for the sink's batches (--seal; 0 without).", SINK_SEALS);
	process_metrics(o);
	if (o->om)
		fputs("# EOF\n", o->f);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     char *body, size_t len, bool must_free)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r) {
		if (must_free)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static bool wants_openmetrics(struct MHD_Connection *c)
{
	const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");

	return accept && strstr(accept, "application/openmetrics-text");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_size, void **state)
{
	static char not_found[] = "404 not found: tcp-audit serves /metrics\n";
	static char not_allowed[] = "405 method not allowed: GET or HEAD\n";
	static int first_call;
	struct metrics *m = cls;
	(void)version;
	(void)upload_data;

	if (!*state) { /* headers only so far; a body, if any, comes in later calls */
		*state = &first_call;
		return MHD_YES;
	}
	if (*upload_size) { /* a body: read and ignored; the answer comes after it */
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(url, "/metrics"))
		return reply(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", not_found,
			     sizeof(not_found) - 1, false);
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
			     not_allowed, sizeof(not_allowed) - 1, false);

	struct pipeline_stats *st = pipeline_stats(m->p);
	char *body = NULL;
	size_t len = 0;
	struct out o = {.f = st ? open_memstream(&body, &len) : NULL, .om = wants_openmetrics(c)};
	if (!o.f) {
		free(st);
		return MHD_NO; /* out of memory: the connection is closed */
	}
	exposition(&o, m, st);
	free(st);
	if (fclose(o.f)) {
		free(body);
		return MHD_NO;
	}
	return reply(c, MHD_HTTP_OK, o.om ? OPENMETRICS_TYPE : TEXT_TYPE, body, len, true);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char text[512];
	(void)cls;

	vsnprintf(text, sizeof(text), fmt, ap);
	text[strcspn(text, "\n")] = 0;
	log_warning("metrics: %s", text);
}

struct metrics *metrics_start(int fd, struct pipeline *p, const char *eventer, char *err,
			      size_t err_size)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m) {
		snprintf(err, err_size, "out of memory");
		close(fd);
		return NULL;
	}
	m->p = p;
	snprintf(m->eventer, sizeof(m->eventer), "%s", eventer);
	m->daemon = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
		handle, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET,
		(MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CLIENTS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CLIENT_TIMEOUT_S, MHD_OPTION_END);
	if (!m->daemon) {
		snprintf(err, err_size, "the HTTP server did not start");
		close(fd);
		free(m);
		return NULL;
	}
	return m;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->daemon); /* closes the listening socket it was given */
	free(m);
}
