/* SPDX-License-Identifier: MIT */
/*
 * Least privilege: once the eventer is attached, tcp-audit keeps only the
 * capabilities the eventer asked for (none for bpf) and, with --user, runs
 * as that user from then on (sinks included).
 */
#ifndef TCP_AUDIT_PRIVILEGES_H
#define TCP_AUDIT_PRIVILEGES_H

#include <stddef.h>
#include <stdint.h>

/*
 * Drops every capability not in keep (bits 1 << CAP_*), from the effective,
 * permitted, inheritable, ambient and bounding sets, and sets no_new_privs.
 * With user, first switches to that user's uid, gid and groups.  Call while
 * the process has one thread.  Returns 0 or a negative errno, with a
 * one-line reason in err.  *kept gets what was kept (keep & what we had).
 */
int privileges_drop(const char *user, uint64_t keep, uint64_t *kept, char *err, size_t errlen);

/* "none", or names like "cap_dac_override,cap_bpf" for messages. */
void capability_names(uint64_t caps, char *buf, size_t len);

#endif
