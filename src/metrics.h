/* SPDX-License-Identifier: MIT */
/*
 * --metrics HOST:PORT: the counters for Prometheus, served by libmicrohttpd
 * from a thread of its own.  GET (or HEAD) /metrics answers in the Prometheus
 * text format, or in OpenMetrics when the client asks for it (Accept:); any
 * other path is 404, another method on /metrics 405.  A scrape takes a
 * snapshot of the pipeline's counters (one lock per scrape, none per event).
 */
#ifndef TCP_AUDIT_METRICS_H
#define TCP_AUDIT_METRICS_H

#include <stddef.h>

struct pipeline;
struct metrics;

/*
 * Binds and listens on spec ("HOST:PORT", "[IPV6]:PORT", ":PORT" for every
 * address; PORT 0 picks a free one), before anything else is opened, while
 * tcp-audit still may bind any port.  Returns the listening socket or -1
 * with a one-line reason in err.  The address bound is put into where.
 */
int metrics_listen(const char *spec, char *where, size_t where_size, char *err, size_t err_size);

/*
 * Starts serving on fd (it is the server's from here on).  eventer: its
 * name for tcp_audit_build_info.  Returns NULL with a reason in err.
 */
struct metrics *metrics_start(int fd, struct pipeline *p, const char *eventer, char *err,
			      size_t err_size);

/* Stops serving (waits for a scrape under way); NULL is fine. */
void metrics_stop(struct metrics *m);

#endif
