/* SPDX-License-Identifier: MIT */
/*
 * systemd's service notifications (sd_notify(3)): READY=1 once the eventer is
 * attached and reading, STATUS= with the counters every few seconds,
 * WATCHDOG=1 when the unit has WatchdogSec=, STOPPING=1 at the stop.  All of
 * it does nothing when tcp-audit is not run by systemd ($NOTIFY_SOCKET).
 */
#ifndef TCP_AUDIT_NOTIFY_H
#define TCP_AUDIT_NOTIFY_H

#include <stdint.h>

struct pipeline;

/* Reads the watchdog's interval; returns how long the main loop may sleep, in ms. */
int notify_init(int max_sleep_ms);
void notify_ready(struct pipeline *p);
/* Called by the main loop at least every notify_init() ms: status and watchdog when due. */
void notify_tick(struct pipeline *p);
void notify_stopping(void);

#endif
