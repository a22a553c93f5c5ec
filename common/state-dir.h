/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit's own folder for what it keeps between runs (the default SQLite
 * archive, the default spool): $STATE_DIRECTORY when set (systemd's
 * StateDirectory=; its first entry), else /var/lib/tcp-audit.
 */
#ifndef TCP_AUDIT_STATE_DIR_H
#define TCP_AUDIT_STATE_DIR_H

#include <stddef.h>

#define DEFAULT_STATE_DIRECTORY "/var/lib/tcp-audit"

/* dir/name (name NULL: the folder itself) into out; 0 or -ENAMETOOLONG. */
int state_path(const char *name, char *out, size_t size);

/* Creates the folder if it is missing (mode 0750; its parent must exist). 0 or -errno. */
int make_state_directory(void);

#endif
