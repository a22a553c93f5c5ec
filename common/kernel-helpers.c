// SPDX-License-Identifier: MIT
#include "kernel-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/types.h>

#include "event-text.h"
#include "ta-filter.h"

int port_list_parse(const char *text, uint16_t *out, size_t max, size_t *n, char *err,
		    size_t err_size)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	*n = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(tok, &end, 10);
		if (*n == max) {
			snprintf(err, err_size, "more than %zu ports", max);
			r = -EINVAL;
			break;
		}
		if (!*tok || *end || v < 1 || v > 65535) {
			snprintf(err, err_size, "\"%s\" is not a port (1 to 65535)", tok);
			r = -EINVAL;
			break;
		}
		out[(*n)++] = (uint16_t)v;
	}
	if (r == 0 && *n == 0) {
		snprintf(err, err_size, "no port given");
		r = -EINVAL;
	}
	free(copy);
	return r;
}

uint64_t clock_now_ns(int clock_id)
{
	struct timespec ts;

	clock_gettime(clock_id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t realtime_minus_monotonic_ns(void)
{
	uint64_t best = UINT64_MAX;
	int64_t offset = 0;

	/* the tightest of three brackets: the realtime read sits in the middle */
	for (int i = 0; i < 3; i++) {
		uint64_t m1 = clock_now_ns(CLOCK_MONOTONIC);
		uint64_t rt = clock_now_ns(CLOCK_REALTIME);
		uint64_t m2 = clock_now_ns(CLOCK_MONOTONIC);
		if (m2 - m1 < best) {
			best = m2 - m1;
			offset = (int64_t)(rt - (m1 + (m2 - m1) / 2));
		}
	}
	return offset;
}

int kinds_parse(const char *text, unsigned *kinds, char *err, size_t err_size)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	*kinds = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "state") == 0) {
			*kinds |= TA_KINDS_STATE;
		} else if (strcmp(tok, "reset") == 0) {
			*kinds |= TA_KINDS_RESET;
		} else {
			snprintf(err, err_size, "\"%s\" is not a kind of record (state, reset)", tok);
			r = -EINVAL;
			break;
		}
	}
	if (r == 0 && *kinds == 0) {
		snprintf(err, err_size, "no kind given (state, reset)");
		r = -EINVAL;
	}
	free(copy);
	return r;
}

void reset_reason_map_init(struct reset_reason_map *m)
{
	memset(m->ours, RESET_REASON_NONE, sizeof(m->ours));
}

int reset_reason_map_add(struct reset_reason_map *m, long kernel_value, const char *name,
			 size_t len)
{
	static const char prefix[] = "SK_RST_REASON_";

	if (len >= sizeof(prefix) - 1 && memcmp(name, prefix, sizeof(prefix) - 1) == 0) {
		name += sizeof(prefix) - 1;
		len -= sizeof(prefix) - 1;
	}
	int ours = reset_reason_from_name(name, len);
	if (ours < 0 || kernel_value < 0 || kernel_value > 255)
		return 0;
	m->ours[kernel_value] = (uint8_t)ours;
	return 1;
}

int tracefs_mount_if_missing(void)
{
	if (access("/sys/kernel/tracing/events", F_OK) == 0 ||
	    access("/sys/kernel/debug/tracing/events", F_OK) == 0)
		return 0;
	if (mount("nodev", "/sys/kernel/tracing", "tracefs", 0, NULL) != 0)
		return -errno;
	return 1;
}

/* A mountinfo path with its \ooo escapes (space, tab, newline, backslash) undone, in place. */
static void mountinfo_unescape(char *s)
{
	char *to = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*to++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*to++ = *s;
		}
	}
	*to = 0;
}

int cgroup2_root_open(void)
{
	/* the initial cgroup namespace's inode number (PROC_CGROUP_INIT_INO) */
	static const char initial[] = "cgroup:[4026531835]";
	char ns[64];
	ssize_t n = readlink("/proc/self/ns/cgroup", ns, sizeof(ns) - 1);

	if (n > 0) { /* a kernel without cgroup namespaces has only the one */
		ns[n] = 0;
		if (strcmp(ns, initial) != 0)
			return -EXDEV;
	}
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char *line = NULL;
	size_t cap = 0;
	int fd = -ENOENT;
	while (fd < 0 && getline(&line, &cap, f) > 0) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER */
		char root[8], point[4096];
		const char *sep = strstr(line, " - ");
		if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0 ||
		    sscanf(line, "%*s %*s %*s %7s %4095s", root, point) != 2 || strcmp(root, "/") != 0)
			continue;
		mountinfo_unescape(point);
		fd = open(point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	free(line);
	fclose(f);
	return fd;
}

int caps_read(uint64_t *effective, uint64_t *permitted)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	if (effective)
		*effective = d[0].effective | (uint64_t)d[1].effective << 32;
	if (permitted)
		*permitted = d[0].permitted | (uint64_t)d[1].permitted << 32;
	return 0;
}
