// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the spool's recovery and record reader: an input is a
 * sink's position file (its first 24 bytes) and one segment file (the rest),
 * put in a spool folder that is then opened and read to the end.  Damage of
 * any kind must be reported and skipped, never crash, hang or leak.  Seeds:
 * real spool segments (see test_fuzz.py).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool.h"

#define POS_BYTES 24

static char dir[64];

static void put(const char *name, const uint8_t *data, size_t size)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
}

static void empty_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char path[512];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
}

/* At exit: the last input's folder goes too. */
static void remove_dir(void)
{
	empty_dir();
	rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tcp_audit_event out[64];
	const char *labels[] = {"s"};
	struct origin origin = {.host = "h"};
	struct spool_config cfg = {.dir = dir, .origin = &origin, .max_bytes = 1 << 20};
	struct spool *s;
	char err[512];

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/dev/shm/tcp-audit-fuzz-spool-%d", (int)getpid());
		log_max_level = -1; /* damage reports are the point, not the output */
		atexit(remove_dir);
	}
	empty_dir();
	rmdir(dir);
	if (size < POS_BYTES)
		return 0;
	if (mkdir(dir, 0700) < 0)
		abort();
	put("s.position", data, POS_BYTES);
	put("00000000000000000000.spool", data + POS_BYTES, size - POS_BYTES);
	if (spool_open(&s, &cfg, labels, 1, err, sizeof(err)) < 0)
		return 0;
	uint64_t pos = spool_start(s, 0), end = spool_end(s), next;
	for (int rounds = 0; pos < end; rounds++) {
		ssize_t n = spool_read(s, 0, pos, end, out, 64, &next);
		if (n < 0 || next <= pos || rounds > 100000)
			abort(); /* no progress: a reader would spin for ever */
		pos = next;
	}
	spool_confirm(s, 0, pos);
	spool_close(s);
	return 0;
}
