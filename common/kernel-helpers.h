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

/*
 * Parses the kinds option ("state,reset") into TA_KINDS_* bits (ta-filter.h).
 * Returns 0, or -EINVAL with a one-line reason in err, or -ENOMEM.
 */
int kinds_parse(const char *text, unsigned *kinds, char *err, size_t err_size);

/* The kinds option's entry, the same in every eventer. */
#define KINDS_OPTION_HELP                                                                  \
	"the kinds of record to capture: state (state changes), reset (resets sent and "     \
	"received); without reset, the reset tracepoints are not attached"

/* Kernel reset reasons (enum sk_rst_reason) to ours, by name; RESET_REASON_NONE: no name. */
#define RESET_REASON_NONE 0xff
struct reset_reason_map {
	uint8_t ours[256];
};
void reset_reason_map_init(struct reset_reason_map *m);
/* Maps the kernel's value of name (with or without "SK_RST_REASON_"); false if unknown. */
int reset_reason_map_add(struct reset_reason_map *m, long kernel_value, const char *name,
			 size_t len);

/* CLOCK_REALTIME - CLOCK_MONOTONIC now, in ns, read as tightly as we can. */
int64_t realtime_minus_monotonic_ns(void);

/* The clock's current value in ns. */
uint64_t clock_now_ns(int clock_id);

/*
 * Mounts tracefs at /sys/kernel/tracing unless it is there already (or at
 * /sys/kernel/debug/tracing): where nothing mounted it (a container, an
 * early boot), the syscall tracepoints cannot be attached without it.
 * Returns 1 if it mounted it, 0 if it was there, or a negative errno.
 */
int tracefs_mount_if_missing(void);

/*
 * An fd (O_RDONLY, close-on-exec) of the cgroup v2 hierarchy's root, where a
 * BPF program attached runs for the sockets of every process; or a negative
 * errno: -ENOENT where no cgroup2 file system is mounted with its root,
 * -EXDEV inside a cgroup namespace other than the initial one (a container:
 * its root is not the host's).
 */
int cgroup2_root_open(void);

/*
 * This thread's capability sets, as bit masks (1 << CAP_*): either pointer
 * may be NULL.  Returns 0 or a negative errno.
 */
int caps_read(uint64_t *effective, uint64_t *permitted);

#endif
