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
 *
 * A full file system (ENOSPC, EDQUOT) is an outage, as a full disk is for
 * the sqlite sink and a server away is for pgsql: the batch is cut back and
 * TCP_AUDIT_RETRY returned, so its events wait in the spool until there is
 * room again, however long that takes, instead of counting as failures
 * that stop the run after --max-errors of them.
 *
 * A regular file is written with O_DIRECT where its file system allows it
 * (-p direct, on by default): whole blocks go from our buffer to the disk,
 * and only the last, partial block of each batch through the page cache (it
 * is written again, whole, with the next batch).  A growing file written
 * through the page cache costs a new page, its buffer heads and its delayed
 * allocation every 4 KiB: 0.19-0.22 us of CPU a KiB on ext4 here, with the
 * hand-over and let-go below; 0.04 with O_DIRECT in writes of 1 MiB (bpf ->
 * jsonl, busy churn, 2 threads: tcp-audit 0.44-0.46 us an event against
 * 0.51-0.54, the generator's rate 8% higher).  A batch is written under an
 * exclusive flock() of the file, its size checked first: other tcp-audits
 * appending to the same file wait their turn (a writer that takes no lock
 * could have its bytes overwritten).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* O_DIRECT's unit: writes of whole blocks from a buffer aligned to one */
#define DIRECT_BLOCK 4096u

struct jsonl_config {
	const char *path;
	bool fsync;
	bool direct;
};

struct jsonl {
	const struct tcp_audit_host *host;
	const struct jsonl_config *cfg;
	int fd;
	bool own_fd;
	bool regular;
	char *buf;     /* CHUNK bytes, DIRECT_BLOCK-aligned */
	off_t handed;  /* regular files: bytes before it are on their way to disk */
	off_t dropped; /* ... and those before it were let go from the page cache */
	int dfd;       /* the file again, with O_DIRECT; -1: not written that way */
	off_t dbase;   /* with dfd: the file offset of buf[0], a block's (-1: not known) */
	size_t kept;   /* with dfd: buf's first kept bytes, the file's last partial block */
	bool full;     /* in an outage of a full file system: logged once */
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
	{.key = "direct",
	 .type = TCP_AUDIT_OPT_BOOL,
	 .def = "true",
	 .help = "write whole blocks of a regular file with O_DIRECT where its file system allows "
		 "it: less CPU, and the archive does not fill the page cache",
	 .offset = offsetof(struct jsonl_config, direct)},
	{0},
};

/* Where the file ends now: what it had is left to the page cache as it is. */
static void track_from_end(struct jsonl *j)
{
	off_t end = j->regular ? lseek(j->fd, 0, SEEK_END) : -1;

	j->handed = j->dropped = end > 0 ? end : 0;
	j->dbase = -1; /* the direct writes' place: found at the next batch */
	j->kept = 0;
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
 * fd (a regular file's, open for reading too) again with O_DIRECT, if its
 * file system takes writes of DIRECT_BLOCK-aligned blocks from memory so
 * aligned; else -1.
 */
static int open_direct(int fd)
{
	struct statx sx;
	char self[64];

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) != 0 ||
	    !(sx.stx_mask & STATX_DIOALIGN) || !sx.stx_dio_mem_align || !sx.stx_dio_offset_align ||
	    DIRECT_BLOCK % sx.stx_dio_mem_align || DIRECT_BLOCK % sx.stx_dio_offset_align)
		return -1;
	/* the same file, whatever its name points to now */
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	return open(self, O_WRONLY | O_DIRECT | O_CLOEXEC);
}

/*
 * Takes fd's exclusive flock(), waiting for whoever holds it (other
 * tcp-audits writing a batch to the same file); false where the file system
 * has no such locks.
 */
static bool lock_file(int fd)
{
	int r;

	while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
		;
	return r == 0;
}

/*
 * Opens the configured file for appending, cut back to its last whole line:
 * *fd, whether it is a regular file, and *dfd (open_direct(), if asked for).
 * Returns 0 or -errno (logged).
 */
static int open_file(struct jsonl *j, int *fd, bool *regular, int *dfd)
{
	const char *path = j->cfg->path;
	struct stat st;

	*dfd = -1;
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
	if (*regular && readable) {
		/* not while another tcp-audit is between the blocks and the end of a batch */
		bool locked = lock_file(*fd);
		int r = fstat(*fd, &st) ? -errno : 0;
		if (!r && st.st_size > 0)
			r = cut_torn_line(j, *fd, st.st_size);
		if (locked)
			flock(*fd, LOCK_UN);
		if (r) {
			tcp_audit_error(j->host, "cannot check the end of %s: %s", path, strerror(-r));
			close(*fd);
			return r;
		}
	}
	/* the last partial block is read back before it is written again: readable only */
	if (*regular && readable && j->cfg->direct)
		*dfd = open_direct(*fd);
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
	j->dfd = -1;
	if (posix_memalign((void **)&j->buf, DIRECT_BLOCK, CHUNK)) {
		free(j);
		return -ENOMEM;
	}
	if (strcmp(cfg->path, "-") == 0) {
		j->fd = STDOUT_FILENO;
		j->regular = fstat(j->fd, &st) == 0 && S_ISREG(st.st_mode);
	} else {
		int r = open_file(j, &j->fd, &j->regular, &j->dfd);
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
	int fd, dfd;

	if (!j->own_fd)
		return 0; /* stdout */
	int r = open_file(j, &fd, &regular, &dfd);
	if (r)
		return r; /* logged; writing goes on into the file we have */
	close(j->fd);
	if (j->dfd >= 0)
		close(j->dfd);
	j->fd = fd;
	j->regular = regular;
	j->dfd = dfd;
	track_from_end(j);
	tcp_audit_info(j->host, "reopened %s", j->cfg->path);
	return 0;
}

/* n bytes at p, all of them: at off, or where the file is (appending) if off < 0. */
static int write_all(int fd, const char *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t w = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		if (off >= 0)
			off += w;
	}
	return 0;
}

/*
 * Writes what buf's first *used bytes hold that may go now: all of them
 * (through the page cache); or, with O_DIRECT, its whole blocks (the rest
 * moves to buf's start) and, at the batch's end, the rest through the page
 * cache.  The first *in_file of them are in the file already.
 */
static int drain(struct jsonl *j, size_t *used, size_t *in_file, bool end)
{
	int r = 0;

	if (j->dfd < 0) {
		r = write_all(j->fd, j->buf + *in_file, *used - *in_file, -1);
		*used = *in_file = 0;
		return r;
	}
	size_t whole = *used & ~(size_t)(DIRECT_BLOCK - 1);
	if (whole) {
		r = write_all(j->dfd, j->buf, whole, j->dbase);
		if (r)
			return r;
		j->dbase += (off_t)whole;
		*used -= whole;
		memmove(j->buf, j->buf + whole, *used);
		*in_file = 0; /* fewer than a block were */
	}
	if (end && *used > *in_file) {
		r = write_all(j->fd, j->buf + *in_file, *used - *in_file, -1); /* at the end */
		*in_file = *used;
	}
	return r;
}

/* n bytes of s into buf after its *used, draining it as it fills. */
static int put_bytes(struct jsonl *j, const char *s, size_t n, size_t *used, size_t *in_file)
{
	while (n > 0) {
		if (*used == CHUNK) {
			int r = drain(j, used, in_file, false);
			if (r)
				return r;
		}
		size_t k = n < CHUNK - *used ? n : CHUNK - *used;
		memcpy(j->buf + *used, s, k);
		*used += k;
		s += k;
		n -= k;
	}
	return 0;
}

/*
 * With O_DIRECT, the file ending at size: buf starts with its last partial
 * block, read back (the file was written by someone else, or cut).
 */
static int find_end(struct jsonl *j, off_t size)
{
	off_t base = size & ~(off_t)(DIRECT_BLOCK - 1);
	size_t n = (size_t)(size - base);

	if (n) {
		ssize_t got = pread(j->fd, j->buf, n, base);
		if (got != (ssize_t)n)
			return got < 0 ? -errno : -EIO;
	}
	j->dbase = base;
	j->kept = n;
	return 0;
}

/*
 * The lines of n events, then the seal's line if there is one, in writes of
 * about CHUNK bytes: a failed write is cut back.  A regular file's lock is
 * held.
 */
static int write_locked(struct jsonl *j, const struct tcp_audit_event *ev, size_t n,
			const struct tcp_audit_seal *seal)
{
	struct stat st;
	off_t start = -1;
	size_t used = 0, in_file = 0;
	int r = 0;

	if (j->regular && fstat(j->fd, &st) == 0)
		start = st.st_size;
	if (j->dfd >= 0) {
		if (start < 0)
			r = -errno;
		else if (start != j->dbase + (off_t)j->kept)
			r = find_end(j, start);
		used = in_file = j->kept;
	}
	for (size_t i = 0; i < n && !r; i++) {
		used += event_to_json(&ev[i], j->buf + used);
		if (CHUNK - used < EVENT_JSON_MAX)
			r = drain(j, &used, &in_file, false);
	}
	if (!r && seal) {
		r = put_bytes(j, seal->text, seal->len, &used, &in_file);
		if (!r)
			r = put_bytes(j, "\n", 1, &used, &in_file);
	}
	if (!r)
		r = drain(j, &used, &in_file, true);
	if (!r && j->dfd >= 0)
		j->kept = used;
	else if (!r && j->regular)
		let_go(j, lseek(j->fd, 0, SEEK_CUR)); /* appending: where the file ends */
	if (!r) {
		if (j->full)
			tcp_audit_info(j->host, "%s is writable again", j->cfg->path);
		j->full = false;
		return 0;
	}
	j->dbase = -1; /* found again at the next batch */
	if (start >= 0 && ftruncate(j->fd, start) != 0) {
		tcp_audit_error(j->host, "writing %s: %s; cannot cut it back to %lld bytes: %s",
				j->cfg->path, strerror(-r), (long long)start, strerror(errno));
		return r;
	}
	/* a stdout opened without O_APPEND (`>`) writes where it is: back to the end, no hole */
	if (start >= 0)
		(void)lseek(j->fd, start, SEEK_SET);
	if (r == -EINVAL && j->dfd >= 0) {
		/* O_DIRECT refused after all: through the page cache, this batch too */
		tcp_audit_info(j->host, "%s: O_DIRECT refused (%s): writing through the page cache",
			       j->cfg->path, strerror(-r));
		close(j->dfd);
		j->dfd = -1;
		return write_locked(j, ev, n, seal);
	}
	if ((r == -ENOSPC || r == -EDQUOT) && start >= 0) {
		/* cut back to where it was: the same batch comes again */
		if (!j->full)
			tcp_audit_warning(j->host, "cannot write to %s: %s: holding events and retrying",
					  j->cfg->path, strerror(-r));
		j->full = true;
		return TCP_AUDIT_RETRY;
	}
	tcp_audit_error(j->host, "writing %s: %s", j->cfg->path, strerror(-r));
	return r;
}

/*
 * A batch under the lock of a regular file, so that tcp-audits appending to
 * the same file never write over each other's bytes (the O_DIRECT writes go
 * at an offset found before them).
 */
static int write_lines(struct jsonl *j, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	bool locked = j->regular && lock_file(j->fd);
	int r = write_locked(j, ev, n, seal);
	if (locked)
		flock(j->fd, LOCK_UN);
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
	if (j->dfd >= 0)
		close(j->dfd);
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
