/* SPDX-License-Identifier: MIT */
/* systemd's service notifications (see notify.h). */
#include "notify.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "kernel-helpers.h"
#include "pipeline.h"

#define STATUS_EVERY_NS (5 * 1000000000ull)

static uint64_t watchdog_ns; /* half the unit's WatchdogSec=, 0: none */
static uint64_t status_at, watchdog_at;
static bool stopping;

int notify_init(int max_sleep_ms)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		watchdog_ns = usec * 1000 / 2;
		/* wake often enough to ping at half the interval */
		uint64_t ms = watchdog_ns / 4000000;
		if (ms < (uint64_t)max_sleep_ms)
			max_sleep_ms = ms ? (int)ms : 1;
	}
	return max_sleep_ms;
}

/* "N events read, N lost; sink L: N written, N behind; ..." */
static void send_status(struct pipeline *p, const char *head)
{
	struct pipeline_stats *st = pipeline_stats(p);
	char text[1024];
	size_t len;

	if (!st)
		return;
	len = (size_t)snprintf(text, sizeof(text),
			       "%sSTATUS=%llu events read, %llu lost (kernel %llu, queue %llu, spool "
			       "%llu)",
			       head, (unsigned long long)st->read,
			       (unsigned long long)(st->lost_kernel + st->lost_queue + st->lost_spool),
			       (unsigned long long)st->lost_kernel, (unsigned long long)st->lost_queue,
			       (unsigned long long)st->lost_spool);
	for (size_t i = 0; i < st->n_sinks && len < sizeof(text); i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
					"; %s: %llu written, %llu behind%s", st->sinks[i].label,
					(unsigned long long)st->sinks[i].written,
					(unsigned long long)st->sinks[i].undelivered,
					st->sinks[i].failed ? " (failed)" : "");
	free(st);
	sd_notify(0, text);
}

void notify_ready(struct pipeline *p)
{
	uint64_t now = clock_now_ns(CLOCK_MONOTONIC);

	send_status(p, "READY=1\n");
	status_at = now + STATUS_EVERY_NS;
	watchdog_at = now;
	notify_tick(p);
}

void notify_tick(struct pipeline *p)
{
	uint64_t now = clock_now_ns(CLOCK_MONOTONIC);

	if (watchdog_ns && now >= watchdog_at) {
		sd_notify(0, "WATCHDOG=1");
		watchdog_at = now + watchdog_ns;
	}
	if (now >= status_at && !stopping) {
		send_status(p, "");
		status_at = now + STATUS_EVERY_NS;
	}
}

void notify_stopping(void)
{
	if (!stopping)
		sd_notify(0, "STOPPING=1\nSTATUS=stopping: delivering what was read");
	stopping = true;
}
