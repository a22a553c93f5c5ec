/* SPDX-License-Identifier: MIT */
/*
 * jsonl sink: one JSON object per event per line (format: common/event-json.h)
 * appended to a file, or written to stdout.  A batch is written whole or not
 * at all: if a write to a regular file fails half-way, the file is cut back
 * to where the batch began, so a retried batch never leaves duplicates.  A
 * file that ends in a line cut short (tcp-audit killed in the middle of a
 * write) is cut back to its last whole line when opened, so that what is
 * appended next does not run into it; those events come again from the
 * spool.  After SIGHUP it reopens the file by its name (logrotate).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tcp-audit/plugin.h>

#include "event-json.h"

#define CHUNK (1u << 20) /* bytes formatted before each write() */
/*
 * An archive is written once and not read back soon: every WINDOW bytes the
 * file's new bytes are handed to the disk (sync_file_range, not waited for),
 * and those handed over the window before leave the page cache once written
 * (posix_fadvise(DONTNEED)).  So the file's pages are reused instead of the
 * page cache growing by all that was written: the host's cached data is not
 * pushed out by the archive, and on a VM whose unused memory the hypervisor
 * takes back, a new page costs ~10 us (a growing file 1.4-3.4 us a KiB, one
 * written over its own freed pages 0.19-0.25).
 */
#define WINDOW ((off_t)8 << 20)

struct jsonl_config {
	const char *path;
	bool fsync;
};

struct jsonl {
	const struct tcp_audit_host *host;
	const struct jsonl_config *cfg;
	int fd;
	bool own_fd;
	bool regular;
	char *buf;
	off_t handed;  /* regular files: bytes before it are on their way to disk */
	off_t dropped; /* ... and those before it were let go from the page cache */
};

static const struct tcp_audit_option jsonl_options[] = {
	{.key = "path",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "-",
	 .help = "file to append the lines to (created 0640 if missing); - for stdout",
	 .offset = offsetof(struct jsonl_config, path)},
	{.key = "fsync",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "false",
	 .help = "fsync the file at every flush (at least once a second): durable, slower",
	 .offset = offsetof(struct jsonl_config, fsync)},
	{0},
};

/* Where the file ends now: what it had is left to the page cache as it is. */
static void track_from_end(struct jsonl *j)
{
	off_t end = j->regular ? lseek(j->fd, 0, SEEK_END) : -1;

	j->handed = j->dropped = end > 0 ? end : 0;
}

/*
 * With the file ending at end: hands the bytes written since the last time
 * to the disk, and lets go of those handed over the time before, once
 * written (waited for, if the disk is behind: the spool holds the rest).
 */
static void let_go(struct jsonl *j, off_t end)
{
	if (end < 0)
		return; /* not known: nothing is let go of */
	if (end < j->handed) /* cut by someone else (logrotate's copytruncate): start again */
		j->handed = j->dropped = 0;
	if (end - j->handed < WINDOW)
		return;
	/* hints: a failure changes nothing that was written */
	(void)sync_file_range(j->fd, j->handed, end - j->handed, SYNC_FILE_RANGE_WRITE);
	if (j->handed > j->dropped) {
		(void)sync_file_range(j->fd, j->dropped, j->handed - j->dropped,
				      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
					      SYNC_FILE_RANGE_WAIT_AFTER);
		(void)posix_fadvise(j->fd, j->dropped, j->handed - j->dropped,
				    POSIX_FADV_DONTNEED);
		j->dropped = j->handed;
	}
	j->handed = end;
}

/*
 * If the file does not end with a newline, cuts it after its last one (or
 * to nothing) and says so.  Returns 0 or -errno.
 */
static int cut_torn_line(struct jsonl *j, int fd, off_t size)
{
	char buf[4096];
	off_t end = size;

	while (end > 0) {
		size_t n = end < (off_t)sizeof(buf) ? (size_t)end : sizeof(buf);
		ssize_t got = pread(fd, buf, n, end - (off_t)n);
		if (got != (ssize_t)n)
			return got < 0 ? -errno : -EIO;
		if (end == size && buf[n - 1] == '\n')
			return 0; /* whole */
		char *nl = memrchr(buf, '\n', n);
		if (nl) {
			end = end - (off_t)n + (nl - buf) + 1;
			break;
		}
		end -= (off_t)n;
	}
	if (ftruncate(fd, end) != 0)
		return -errno;
	tcp_audit_warning(j->host,
			  "%s ended in a line cut short (%lld bytes: tcp-audit stopped in the middle "
			  "of a write?): cut it off; its events come again from the spool",
			  j->cfg->path, (long long)(size - end));
	return 0;
}

/*
 * Opens the configured file for appending, cut back to its last whole line:
 * *fd, and whether it is a regular file.  Returns 0 or -errno (logged).
 */
static int open_file(struct jsonl *j, int *fd, bool *regular)
{
	const char *path = j->cfg->path;
	struct stat st;

	/* read too, to look at its end; a file we may only write is taken as it is */
	*fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	bool readable = *fd >= 0;
	if (*fd < 0 && errno == EACCES)
		*fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (*fd < 0) {
		int r = -errno;
		tcp_audit_error(j->host, "cannot open %s for appending: %s", path, strerror(errno));
		return r;
	}
	*regular = fstat(*fd, &st) == 0 && S_ISREG(st.st_mode);
	if (*regular && readable && st.st_size > 0) {
		int r = cut_torn_line(j, *fd, st.st_size);
		if (r) {
			tcp_audit_error(j->host, "cannot check the end of %s: %s", path, strerror(-r));
			close(*fd);
			return r;
		}
	}
	return 0;
}

static int jsonl_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	const struct jsonl_config *cfg = config;
	struct jsonl *j = calloc(1, sizeof(*j));
	struct stat st;

	if (!j)
		return -ENOMEM;
	j->host = host;
	j->cfg = cfg;
	j->buf = malloc(CHUNK);
	if (!j->buf) {
		free(j);
		return -ENOMEM;
	}
	if (strcmp(cfg->path, "-") == 0) {
		j->fd = STDOUT_FILENO;
		j->regular = fstat(j->fd, &st) == 0 && S_ISREG(st.st_mode);
	} else {
		int r = open_file(j, &j->fd, &j->regular);
		if (r) {
			free(j->buf);
			free(j);
			return r;
		}
		j->own_fd = true;
	}
	track_from_end(j);
	*self = j;
	return 0;
}

/*
 * After a flush: the file by its name again (a new one if it was moved
 * away); the old one is closed once the new one is open, else kept.
 */
static int jsonl_reopen(void *self)
{
	struct jsonl *j = self;
	bool regular;
	int fd;

	if (!j->own_fd)
		return 0; /* stdout */
	int r = open_file(j, &fd, &regular);
	if (r)
		return r; /* logged; writing goes on into the file we have */
	close(j->fd);
	j->fd = fd;
	j->regular = regular;
	track_from_end(j);
	tcp_audit_info(j->host, "reopened %s", j->cfg->path);
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * The lines of n events, then the seal's line if there is one, in writes of
 * about CHUNK bytes (the seal in the last one): a failed write is cut back.
 */
static int write_lines(struct jsonl *j, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	struct stat st;
	off_t start = -1;
	size_t used = 0;
	int r = 0;

	if (j->regular && fstat(j->fd, &st) == 0)
		start = st.st_size;
	for (size_t i = 0; i < n && !r; i++) {
		used += event_to_json(&ev[i], j->buf + used);
		if (CHUNK - used < EVENT_JSON_MAX) {
			r = write_all(j->fd, j->buf, used);
			used = 0;
		}
	}
	if (!r && seal) {
		if (CHUNK - used < seal->len + 1) {
			r = write_all(j->fd, j->buf, used);
			used = 0;
		}
		if (!r && seal->len + 1 > CHUNK) { /* a batch of more than 64K events */
			r = write_all(j->fd, seal->text, seal->len);
			if (!r)
				r = write_all(j->fd, "\n", 1);
		} else if (!r) {
			memcpy(j->buf + used, seal->text, seal->len);
			used += seal->len;
			j->buf[used++] = '\n';
		}
	}
	if (!r && used)
		r = write_all(j->fd, j->buf, used);
	if (!r && j->regular)
		let_go(j, lseek(j->fd, 0, SEEK_CUR)); /* appending: where the file ends */
	if (r) {
		tcp_audit_error(j->host, "writing %s: %s", j->cfg->path, strerror(-r));
		if (start >= 0 && ftruncate(j->fd, start) != 0)
			tcp_audit_error(j->host, "cannot cut %s back to %lld bytes: %s",
					j->cfg->path, (long long)start, strerror(errno));
	}
	return r;
}

static int jsonl_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	return write_lines(self, ev, n, NULL);
}

static int jsonl_write_sealed(void *self, const struct tcp_audit_event *ev, size_t n,
			      const struct tcp_audit_seal *seal)
{
	return write_lines(self, ev, n, seal);
}

static int jsonl_flush(void *self)
{
	struct jsonl *j = self;

	if (j->cfg->fsync && j->regular && fdatasync(j->fd) != 0) {
		int r = -errno;
		tcp_audit_error(j->host, "fsync %s: %s", j->cfg->path, strerror(errno));
		return r;
	}
	return 0;
}

static void jsonl_close(void *self)
{
	struct jsonl *j = self;

	if (!j)
		return;
	if (j->own_fd)
		close(j->fd);
	free(j->buf);
	free(j);
}

static const struct tcp_audit_plugin jsonl_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "jsonl",
	.kind = TCP_AUDIT_SINKER,
	.description = "JSON lines, one event per line, to a file or stdout",
	.options = jsonl_options,
	.config_size = sizeof(struct jsonl_config),
	.sinker_open = jsonl_open,
	.sinker_write = jsonl_write,
	.sinker_flush = jsonl_flush,
	.sinker_close = jsonl_close,
	.sinker_reopen = jsonl_reopen,
	.sinker_write_sealed = jsonl_write_sealed,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &jsonl_plugin;
}
