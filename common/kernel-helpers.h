/* SPDX-License-Identifier: MIT */
/* Small helpers the eventers share: port lists and the kernel clock. */
#ifndef TCP_AUDIT_KERNEL_HELPERS_H
#define TCP_AUDIT_KERNEL_HELPERS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses "80,443" into out (at most max ports, each 1..65535).  Returns 0, or
 * -EINVAL with a one-line reason in err, or -ENOMEM.
 */
int port_list_parse(const char *text, uint16_t *out, size_t max, size_t *n, char *err,
		    size_t err_size);

/* CLOCK_REALTIME - CLOCK_MONOTONIC now, in ns, read as tightly as we can. */
int64_t realtime_minus_monotonic_ns(void);

/* The clock's current value in ns. */
uint64_t clock_now_ns(int clock_id);

#endif
