/* SPDX-License-Identifier: MIT */
/*
 * The durable spool (see spool.h).  One thread appends (the pipeline's
 * reader), one thread per sink reads and confirms; a small thread makes the
 * appended data durable once a second so the reader never waits for the disk.
 * One mutex guards the segment list, the end and the positions; file data is
 * written and read outside it (a record is read only once its append has
 * returned and the pipeline has published it).
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "event-text.h"
#include "log.h"

#define HEADER_MAGIC "tcp-audit spool\n"
/*
 * A segment's header says which of two record layouts it holds.  Format 1
 * (every segment of the versions before format 2) keeps the whole event.
 * Format 2 leaves out the event's host and machine, which are the spool's
 * own (its origin's, which tcp-audit stamps on what its eventer reads): 184
 * bytes instead of 272, a third less to write into the page cache and read
 * back.  An event of another host (replayed from elsewhere) goes into a
 * format-1 segment.
 */
#define FORMAT_FULL 1u
#define FORMAT_COMPACT 2u
#define RECORD_MAGIC 0x4c4f5053u /* "SPOL" */
#define SYNC_INTERVAL_MS 1000
#define MAX_UNSYNCED 8
/*
 * Removing a segment file is left to the syncer: freeing a full segment's
 * page cache took 27-40 ms here (64 MiB, written and synced), and trim()
 * runs under mu, in the reader's append or a sink's confirm.  The reader
 * held up that long leaves the kernel's buffers to take the burst (a busy
 * churn fills a bpf ring of 65,536 events a CPU in ~0.2 s).
 */
#define MAX_DOOMED 64
#define SEGMENT_MAX_BYTES (64ull << 20)

struct header {
	char magic[16];
	uint32_t version;
	uint32_t record_size;
	uint64_t first; /* position of the first record */
	uint32_t crc;   /* of the bytes above */
	uint8_t reserved[28];
};
_Static_assert(sizeof(struct header) == 64, "spool header size");

struct record {
	uint32_t magic;
	uint32_t crc; /* CRC-32C of seq and ev */
	uint64_t seq;
	struct tcp_audit_event ev;
};
_Static_assert(sizeof(struct record) == 272, "spool record size");

struct compact_record {
	uint32_t magic;
	uint32_t crc; /* CRC-32C of the bytes after it */
	uint64_t seq;
	uint8_t ev[offsetof(struct tcp_audit_event, host)]; /* the event up to its host */
	uint64_t gap_lost;
};
_Static_assert(sizeof(struct compact_record) == 184, "spool compact record size");
/* what a compact record leaves out is host and machine, nothing else */
_Static_assert(offsetof(struct tcp_audit_event, gap_lost) ==
			       offsetof(struct tcp_audit_event, host) + TCP_AUDIT_HOST_LEN &&
		       offsetof(struct tcp_audit_event, machine) ==
			       offsetof(struct tcp_audit_event, gap_lost) + 8 &&
		       sizeof(struct tcp_audit_event) == offsetof(struct tcp_audit_event, machine) + 8,
	       "the event's layout after host");

#define HDR ((uint64_t)sizeof(struct header))
#define REC ((uint64_t)sizeof(struct record))
#define CREC ((uint64_t)sizeof(struct compact_record))

struct segment {
	uint64_t first, count;
	uint32_t format; /* FORMAT_FULL or FORMAT_COMPACT */
};

struct sink_pos {
	char label[64];
	int pos_fd;         /* <label>.position */
	uint64_t confirmed; /* under mu */
	uint64_t delivered; /* under mu: the sink has (or wrote) what is below */
	uint64_t start;
	int read_fd; /* this sink's thread only: the segment it reads */
	uint64_t read_first;
	uint8_t *buf; /* records as read */
	size_t buf_cap; /* bytes */
};

struct spool {
	struct spool_config cfg;
	struct origin origin;
	int dir_fd, lock_fd;
	uint64_t seg_bytes; /* a segment file's size, at most */
	/* the host and machine of an event stamped with the origin, byte for byte */
	char own_host[TCP_AUDIT_HOST_LEN];
	uint64_t own_machine;

	pthread_mutex_t mu;
	struct segment *segs; /* oldest first; the last may be the one appended to */
	size_t n_segs, segs_cap;
	bool writing; /* the last segment is open for appending (wfd) */
	uint64_t end, bytes;
	uint64_t lost; /* dropped, or found damaged */

	int wfd; /* reader only, but swapped under mu for the syncer */
	uint8_t *wbuf;
	size_t wbuf_cap; /* bytes */

	pthread_t syncer;
	bool syncer_started, quit, dir_dirty;
	pthread_cond_t wake;
	int unsynced[MAX_UNSYNCED];
	size_t n_unsynced;
	/* segments no longer needed, for the syncer to remove (their first positions) */
	uint64_t doomed[MAX_DOOMED];
	size_t n_doomed;

	size_t n_sinks;
	struct sink_pos sinks[];
};

/* A record's CRC: of what follows magic and crc (the same 8 bytes in both layouts). */
static uint32_t record_crc(const void *rec, uint64_t size)
{
	return crc32c((const uint8_t *)rec + offsetof(struct record, seq),
		      size - offsetof(struct record, seq));
}

static uint32_t header_crc(const struct header *h)
{
	return crc32c(h, offsetof(struct header, crc));
}

/* ------------------------------------------------------------------------ */

static void segment_name(char *buf, size_t len, uint64_t first)
{
	snprintf(buf, len, "%020" PRIu64 ".spool", first);
}

static uint64_t record_size(uint32_t format)
{
	return format == FORMAT_COMPACT ? CREC : REC;
}

static uint64_t segment_bytes(const struct segment *g)
{
	return HDR + g->count * record_size(g->format);
}

/* How many records of format a segment file takes. */
static uint64_t segment_records(const struct spool *s, uint32_t format)
{
	uint64_t rec = record_size(format);

	return s->seg_bytes > HDR + rec ? (s->seg_bytes - HDR) / rec : 1;
}

static int add_segment(struct spool *s, uint64_t first, uint64_t count, uint32_t format)
{
	if (s->n_segs == s->segs_cap) {
		size_t cap = s->segs_cap ? s->segs_cap * 2 : 16;
		struct segment *g = realloc(s->segs, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		s->segs = g;
		s->segs_cap = cap;
	}
	s->segs[s->n_segs] = (struct segment){first, count, format};
	s->bytes += segment_bytes(&s->segs[s->n_segs]);
	s->n_segs++;
	return 0;
}

static void unlink_segment(struct spool *s, uint64_t first)
{
	char name[32];

	segment_name(name, sizeof(name), first);
	if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
		log_warning("spool: cannot remove %s/%s: %m", s->cfg.dir, name);
}

/*
 * Takes the oldest segment out of the spool; its file goes now if no syncer
 * runs (opening, closing) or too many wait, else the syncer removes it (see
 * MAX_DOOMED).  mu held once the syncer runs.
 */
static void remove_first_segment(struct spool *s)
{
	if (s->syncer_started && !s->quit && s->n_doomed < MAX_DOOMED) {
		s->doomed[s->n_doomed++] = s->segs[0].first;
		pthread_cond_signal(&s->wake);
	} else {
		unlink_segment(s, s->segs[0].first);
		s->dir_dirty = true;
	}
	s->bytes -= segment_bytes(&s->segs[0]);
	memmove(&s->segs[0], &s->segs[1], (s->n_segs - 1) * sizeof(s->segs[0]));
	s->n_segs--;
}

/* The lowest position a sink still needs to be handed. */
static uint64_t min_delivered(const struct spool *s)
{
	uint64_t min = s->end;

	for (size_t i = 0; i < s->n_sinks; i++) {
		const struct sink_pos *k = &s->sinks[i];
		uint64_t d = k->delivered > k->confirmed ? k->delivered : k->confirmed;
		if (d < min)
			min = d;
	}
	return min;
}

static uint64_t min_confirmed(const struct spool *s)
{
	uint64_t min = s->end;

	for (size_t i = 0; i < s->n_sinks; i++)
		if (s->sinks[i].confirmed < min)
			min = s->sinks[i].confirmed;
	return min;
}

/* Removes the segments every sink has confirmed; mu held. */
static void trim(struct spool *s)
{
	uint64_t min = min_confirmed(s);

	while (s->n_segs > (s->writing ? 1u : 0u) &&
	       s->segs[0].first + s->segs[0].count <= min)
		remove_first_segment(s);
}

static int write_position(struct sink_pos *k, uint64_t pos)
{
	char text[32];
	int len = snprintf(text, sizeof(text), "%020" PRIu64 "\n", pos);

	if (pwrite(k->pos_fd, text, (size_t)len, 0) != len)
		return -(errno ? errno : EIO);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The syncer: makes appended records durable, off the reader's path          */

static void *syncer_main(void *arg)
{
	struct spool *s = arg;

	pthread_mutex_lock(&s->mu);
	while (!s->quit) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += SYNC_INTERVAL_MS / 1000;
		pthread_cond_timedwait(&s->wake, &s->mu, &ts);

		int fds[MAX_UNSYNCED + 1];
		size_t n = s->n_unsynced;
		memcpy(fds, s->unsynced, n * sizeof(int));
		s->n_unsynced = 0;
		int cur = s->wfd >= 0 ? fcntl(s->wfd, F_DUPFD_CLOEXEC, 0) : -1;
		if (cur >= 0)
			fds[n++] = cur;
		uint64_t doomed[MAX_DOOMED];
		size_t n_doomed = s->n_doomed;
		memcpy(doomed, s->doomed, n_doomed * sizeof(doomed[0]));
		s->n_doomed = 0;
		bool dir = s->dir_dirty || n_doomed;
		s->dir_dirty = false;
		pthread_mutex_unlock(&s->mu);

		for (size_t i = 0; i < n_doomed; i++)
			unlink_segment(s, doomed[i]);
		for (size_t i = 0; i < n; i++) {
			if (fdatasync(fds[i]) < 0)
				log_error("spool: cannot sync a segment file in %s: %m", s->cfg.dir);
			close(fds[i]);
		}
		if (dir)
			fsync(s->dir_fd);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Opening and recovery                                                       */

static int compare_segments(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

static bool parse_segment_name(const char *name, uint64_t *first)
{
	if (strlen(name) != 26 || strcmp(name + 20, ".spool") != 0)
		return false;
	uint64_t v = 0;
	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*first = v;
	return true;
}

/* Lists the segment files (first and a provisional count from the size). */
static int list_segments(struct spool *s)
{
	int fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	int r = 0;

	if (!d) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return r;
	}
	while ((de = readdir(d))) {
		uint64_t first;
		if (!parse_segment_name(de->d_name, &first))
			continue;
		r = add_segment(s, first, 0, FORMAT_FULL); /* the header says later */
		if (r)
			break;
	}
	closedir(d);
	if (s->n_segs > 1)
		qsort(s->segs, s->n_segs, sizeof(s->segs[0]), compare_segments);
	s->bytes = 0;
	return r;
}

static void move_aside(struct spool *s, const char *name)
{
	char aside[64];

	snprintf(aside, sizeof(aside), "%s.damaged", name);
	if (renameat(s->dir_fd, name, s->dir_fd, aside) < 0)
		log_error("spool: cannot rename %s/%s: %m", s->cfg.dir, name);
}

/*
 * Checks segment g's header and size, and sets its format; returns false when
 * the file cannot be used (it has been moved aside).  A torn last record is
 * cut off.  *records: how many records the file held, or for a file that
 * cannot be used, the most it could have held (the smaller records).
 */
static bool check_segment(struct spool *s, struct segment *g, uint64_t *records, uint64_t *torn)
{
	char name[32];
	struct header h;
	struct stat st;
	bool ok = false;

	segment_name(name, sizeof(name), g->first);
	*torn = 0;
	int fd = openat(s->dir_fd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_error("spool: cannot open %s/%s: %m", s->cfg.dir, name);
		*records = 0;
		if (fd >= 0)
			close(fd);
		return false;
	}
	uint64_t size = (uint64_t)st.st_size;
	*records = size > HDR ? (size - HDR) / CREC : 0;
	if (size < HDR || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    memcmp(h.magic, HEADER_MAGIC, 16) != 0 || h.crc != header_crc(&h) ||
	    h.first != g->first) {
		if (size == 0) { /* created, nothing written yet: a crash right there */
			unlinkat(s->dir_fd, name, 0);
		} else {
			log_error("spool: %s/%s: damaged header: file moved aside as %s.damaged",
				  s->cfg.dir, name, name);
			move_aside(s, name);
		}
		goto out;
	}
	if ((h.version != FORMAT_FULL && h.version != FORMAT_COMPACT) ||
	    h.record_size != record_size(h.version)) {
		log_error("spool: %s/%s: written by another spool format (version %u, record "
			  "size %u): file moved aside as %s.damaged",
			  s->cfg.dir, name, h.version, h.record_size, name);
		move_aside(s, name);
		goto out;
	}
	uint64_t rec = h.record_size;
	*records = (size - HDR) / rec;
	uint64_t tail = (size - HDR) % rec;
	if (tail) {
		log_error("spool: %s/%s: ends in a partial record at offset %" PRIu64 " (%" PRIu64
			  " bytes, a write cut short): that record is lost",
			  s->cfg.dir, name, size - tail, tail);
		*torn = 1;
		if (ftruncate(fd, (off_t)(size - tail)) < 0)
			log_warning("spool: cannot cut %s/%s: %m", s->cfg.dir, name);
	}
	g->count = *records;
	g->format = h.version;
	ok = true;
out:
	close(fd);
	return ok;
}

/*
 * Reads sink k's saved position.  Returns 1 when there was one, 0 for a sink
 * new to this spool, -1 when the file is damaged.
 */
static int read_position(struct sink_pos *k, uint64_t *pos)
{
	char text[32] = "";
	ssize_t n = pread(k->pos_fd, text, sizeof(text) - 1, 0);

	if (n <= 0)
		return 0;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (end == text || *end != '\n' || errno)
		return -1;
	*pos = v;
	return 1;
}

static int lock_dir(struct spool *s, char *err, size_t errlen)
{
	char pid[32];

	s->lock_fd = openat(s->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0) {
		snprintf(err, errlen, "cannot create %s/lock: %s", s->cfg.dir, strerror(errno));
		return -errno;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		ssize_t n = pread(s->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			snprintf(err, errlen, "%s is in use by another tcp-audit (pid %s)", s->cfg.dir,
				 *pid ? pid : "?");
		else
			snprintf(err, errlen, "cannot lock %s/lock: %s", s->cfg.dir, strerror(e));
		return -e;
	}
	int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, pid, (size_t)len, 0) != len)
		log_warning("spool: cannot write the pid into %s/lock: %m", s->cfg.dir);
	return 0;
}

int spool_open(struct spool **out, const struct spool_config *cfg, const char *const *labels,
	       size_t n_sinks, char *err, size_t errlen)
{
	struct spool *s;
	int r;

	if (n_sinks > SPOOL_MAX_SINKS) {
		snprintf(err, errlen, "the spool takes at most %d sinks", SPOOL_MAX_SINKS);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s) + n_sinks * sizeof(s->sinks[0]));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	if (cfg->origin)
		s->origin = *cfg->origin;
	s->cfg.origin = &s->origin;
	s->dir_fd = s->lock_fd = s->wfd = -1;
	s->n_sinks = n_sinks;
	for (size_t i = 0; i < n_sinks; i++) {
		s->sinks[i].pos_fd = s->sinks[i].read_fd = -1;
		snprintf(s->sinks[i].label, sizeof(s->sinks[i].label), "%s", labels[i]);
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);

	s->seg_bytes = cfg->max_bytes / 4;
	if (s->seg_bytes > SEGMENT_MAX_BYTES)
		s->seg_bytes = SEGMENT_MAX_BYTES;
	struct tcp_audit_event stamped = {0};
	origin_stamp(&s->origin, &stamped);
	memcpy(s->own_host, stamped.host, sizeof(s->own_host));
	s->own_machine = stamped.machine;

	if (mkdir(cfg->dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create the spool directory %s: %s", cfg->dir,
			 strerror(errno));
		goto fail;
	}
	s->dir_fd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open the spool directory %s: %s", cfg->dir,
			 strerror(errno));
		goto fail;
	}
	if ((r = lock_dir(s, err, errlen)))
		goto fail;
	if ((r = list_segments(s))) {
		snprintf(err, errlen, "cannot read the spool directory %s: %s", cfg->dir,
			 strerror(-r));
		goto fail;
	}

	/* the saved positions first: they say which losses matter */
	uint64_t max_pos = 0, min_saved = UINT64_MAX;
	int saved[SPOOL_MAX_SINKS];
	for (size_t i = 0; i < n_sinks; i++) {
		struct sink_pos *k = &s->sinks[i];
		char name[96];
		snprintf(name, sizeof(name), "%s.position", k->label);
		k->pos_fd = openat(s->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (k->pos_fd < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot open %s/%s: %s", cfg->dir, name,
				 strerror(errno));
			goto fail;
		}
		saved[i] = read_position(k, &k->start);
		if (saved[i] < 0)
			log_warning("spool: %s/%s is damaged: %s starts at the oldest spooled "
				    "event (some may be delivered twice)",
				    cfg->dir, name, k->label);
		if (saved[i] > 0) {
			max_pos = k->start > max_pos ? k->start : max_pos;
			min_saved = k->start < min_saved ? k->start : min_saved;
		}
	}

	/* then the segments, keeping the good ones */
	size_t kept = 0;
	uint64_t data_end = 0; /* beyond the last record of any file, good or not */
	for (size_t i = 0; i < s->n_segs; i++) {
		struct segment g = s->segs[i];
		uint64_t records, torn;
		bool ok = check_segment(s, &g, &records, &torn);
		/* one that cannot be used held the positions up to the next file's */
		if (!ok && i + 1 < s->n_segs && s->segs[i + 1].first > g.first)
			records = s->segs[i + 1].first - g.first;
		uint64_t from = g.first > min_saved ? g.first : min_saved;
		if (g.first + records + torn > data_end)
			data_end = g.first + records + torn;
		if (!ok && g.first + records > from)
			s->lost += g.first + records - from;
		if (ok && torn && g.first + g.count >= min_saved)
			s->lost += torn;
		if (ok && kept && g.first < s->segs[kept - 1].first + s->segs[kept - 1].count) {
			log_error("spool: %s: segments overlap at position %" PRIu64
				  ": the later file is moved aside",
				  cfg->dir, g.first);
			char name[32];
			segment_name(name, sizeof(name), g.first);
			move_aside(s, name);
			ok = false;
		}
		if (!ok)
			continue;
		if (g.count == 0) { /* nothing in it: not worth keeping */
			char name[32];
			segment_name(name, sizeof(name), g.first);
			unlinkat(s->dir_fd, name, 0);
			continue;
		}
		s->segs[kept++] = g;
		s->bytes += segment_bytes(&g);
	}
	s->n_segs = kept;
	/*
	 * New records go after everything ever written here, so what was lost
	 * stays a hole that each sink reports as a gap, and positions stay
	 * meaningful after the files are gone.
	 */
	s->end = data_end > max_pos ? data_end : max_pos;

	uint64_t oldest = kept ? s->segs[0].first : s->end;
	for (size_t i = 0; i < n_sinks; i++) {
		struct sink_pos *k = &s->sinks[i];
		if (saved[i] == 0)
			k->start = s->end; /* new to this spool: from now on */
		else if (saved[i] < 0)
			k->start = oldest;
		k->confirmed = k->start;
		if (write_position(k, k->start) < 0 || fdatasync(k->pos_fd) < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot write %s/%s.position: %s", cfg->dir, k->label,
				 strerror(errno));
			goto fail;
		}
		if (k->start < s->end)
			log_info("spool: %" PRIu64 " events in %s not yet confirmed by %s: "
				 "delivering them first",
				 s->end - k->start, cfg->dir, k->label);
	}
	fsync(s->dir_fd);
	trim(s);

	r = -pthread_create(&s->syncer, NULL, syncer_main, s);
	if (r) {
		snprintf(err, errlen, "cannot start a thread: %s", strerror(-r));
		goto fail;
	}
	s->syncer_started = true;
	*out = s;
	return 0;
fail:
	spool_close(s);
	return r;
}

void spool_close(struct spool *s)
{
	if (!s)
		return;
	if (s->syncer_started) {
		pthread_mutex_lock(&s->mu);
		s->quit = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->syncer, NULL);
	}
	/* what the syncer had no turn for (the directory is synced below) */
	for (size_t i = 0; i < s->n_doomed; i++)
		unlink_segment(s, s->doomed[i]);
	s->n_doomed = 0;
	for (size_t i = 0; i < s->n_unsynced; i++) {
		fdatasync(s->unsynced[i]);
		close(s->unsynced[i]);
	}
	if (s->wfd >= 0) {
		if (fdatasync(s->wfd) < 0)
			log_error("spool: cannot sync the last segment in %s: %m", s->cfg.dir);
		close(s->wfd);
	}
	s->wfd = -1;
	if (s->dir_fd >= 0) { /* what every sink has stored needs no file any more */
		pthread_mutex_lock(&s->mu);
		s->writing = false;
		trim(s);
		pthread_mutex_unlock(&s->mu);
	}
	for (size_t i = 0; i < s->n_sinks; i++) {
		if (s->sinks[i].pos_fd >= 0) {
			fdatasync(s->sinks[i].pos_fd);
			close(s->sinks[i].pos_fd);
		}
		if (s->sinks[i].read_fd >= 0)
			close(s->sinks[i].read_fd);
		free(s->sinks[i].buf);
	}
	if (s->dir_fd >= 0) {
		fsync(s->dir_fd);
		close(s->dir_fd);
	}
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->wake);
	free(s->segs);
	free(s->wbuf);
	free(s);
}

uint64_t spool_end(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t end = s->end;
	pthread_mutex_unlock(&s->mu);
	return end;
}

uint64_t spool_start(struct spool *s, size_t sink)
{
	return s->sinks[sink].start;
}

uint64_t spool_bytes(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t b = s->bytes;
	pthread_mutex_unlock(&s->mu);
	return b;
}

uint64_t spool_lost(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t lost = s->lost;
	pthread_mutex_unlock(&s->mu);
	return lost;
}

uint64_t spool_cap(struct spool *s)
{
	return s->cfg.max_bytes;
}

/* ------------------------------------------------------------------------ */
/* Appending                                                                  */

/* Starts a segment file of format at s->end; mu held. */
static int new_segment(struct spool *s, uint32_t format)
{
	char name[32];
	struct header h = {
		.version = format, .record_size = (uint32_t)record_size(format), .first = s->end};
	int r;

	memcpy(h.magic, HEADER_MAGIC, 16);
	h.crc = header_crc(&h);
	segment_name(name, sizeof(name), s->end);
	int fd = openat(s->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, &h, sizeof(h)) != (ssize_t)sizeof(h)) {
		r = errno ? -errno : -ENOSPC;
		close(fd);
		unlinkat(s->dir_fd, name, 0);
		return r;
	}
	if ((r = add_segment(s, s->end, 0, format))) {
		close(fd);
		unlinkat(s->dir_fd, name, 0);
		return r;
	}
	if (s->wfd >= 0) { /* the finished one is made durable by the syncer */
		if (s->n_unsynced == MAX_UNSYNCED) {
			fdatasync(s->wfd);
			close(s->wfd);
		} else {
			s->unsynced[s->n_unsynced++] = s->wfd;
		}
	}
	s->wfd = fd;
	s->writing = true;
	s->dir_dirty = true;
	return 0;
}

/* Whether the segment being written is missing, full, or of another format; mu held. */
static bool need_segment(const struct spool *s, uint32_t format)
{
	if (!s->writing)
		return true;
	const struct segment *g = &s->segs[s->n_segs - 1];
	return g->format != format || g->count >= segment_records(s, g->format);
}

/*
 * How many of n records of format may go in now, making room by policy;
 * starts a new segment when needed.  mu held.
 */
static ssize_t reserve(struct spool *s, size_t n, uint32_t format, bool force, uint64_t *dropped)
{
	uint64_t rec = record_size(format);
	int r;

	trim(s);
	for (;;) {
		uint64_t need = (need_segment(s, format) ? HDR : 0) + rec;
		if (s->bytes + need <= s->cfg.max_bytes || force)
			break;
		if (s->cfg.on_full == SPOOL_BLOCK || s->n_segs <= 1)
			return 0;
		/* drop the oldest segment: what a sink had not confirmed is lost */
		struct segment *g = &s->segs[0];
		uint64_t min = min_delivered(s);
		uint64_t from = g->first > min ? g->first : min;
		if (g->first + g->count > from) {
			*dropped += g->first + g->count - from;
			s->lost += g->first + g->count - from;
		}
		remove_first_segment(s);
	}
	if (need_segment(s, format) && (r = new_segment(s, format)))
		return r;
	uint64_t in_seg = segment_records(s, format) - s->segs[s->n_segs - 1].count;
	uint64_t by_cap = s->bytes < s->cfg.max_bytes ? (s->cfg.max_bytes - s->bytes) / rec : 0;
	uint64_t k = n;
	if (k > in_seg)
		k = in_seg;
	if (k > by_cap && !force)
		k = by_cap;
	return (ssize_t)k;
}

/* Whether ev's host and machine are the spool's own: a compact record keeps it whole. */
static bool fits_compact(const struct spool *s, const struct tcp_audit_event *ev)
{
	return ev->machine == s->own_machine && memcmp(ev->host, s->own_host, sizeof(ev->host)) == 0;
}

/* Writes ev as a record of format, at position seq, to to. */
static void pack(uint8_t *to, uint32_t format, uint64_t seq, const struct tcp_audit_event *ev)
{
	if (format == FORMAT_COMPACT) {
		struct compact_record *c = (struct compact_record *)to;
		c->magic = RECORD_MAGIC;
		c->seq = seq;
		memcpy(c->ev, ev, sizeof(c->ev));
		c->gap_lost = ev->gap_lost;
		c->crc = record_crc(c, CREC);
	} else {
		struct record *r = (struct record *)to;
		r->magic = RECORD_MAGIC;
		r->seq = seq;
		r->ev = *ev;
		r->crc = record_crc(r, REC);
	}
}

/* Whether the record of format at p is whole and the one of position seq. */
static bool record_ok(const uint8_t *p, uint32_t format, uint64_t seq)
{
	const struct record *r = (const struct record *)p; /* magic, crc and seq: the same */

	return r->magic == RECORD_MAGIC && r->seq == seq &&
	       r->crc == record_crc(p, record_size(format));
}

/* The event of the record of format at p. */
static void unpack(const struct spool *s, const uint8_t *p, uint32_t format,
		   struct tcp_audit_event *ev)
{
	if (format == FORMAT_COMPACT) {
		const struct compact_record *c = (const struct compact_record *)p;
		memcpy(ev, c->ev, sizeof(c->ev));
		memcpy(ev->host, s->own_host, sizeof(ev->host));
		ev->gap_lost = c->gap_lost;
		ev->machine = s->own_machine;
	} else {
		*ev = ((const struct record *)p)->ev;
	}
}

ssize_t spool_append(struct spool *s, const struct tcp_audit_event *ev, size_t n, bool force,
		     uint64_t *dropped)
{
	*dropped = 0;
	if (n == 0)
		return 0;
	size_t fit = 0; /* how many from the first are the spool's own host's */
	while (fit < n && fits_compact(s, &ev[fit]))
		fit++;
	pthread_mutex_lock(&s->mu);
	uint32_t format = FORMAT_FULL;
	/* a format-1 segment being written takes everything until it is full */
	if (fit && need_segment(s, FORMAT_FULL)) {
		format = FORMAT_COMPACT;
		n = fit;
	}
	ssize_t k = reserve(s, n, format, force, dropped);
	uint64_t first = s->end;
	pthread_mutex_unlock(&s->mu);
	if (k <= 0)
		return k;

	uint64_t rec = record_size(format);
	size_t len = (size_t)k * rec, done = 0;
	if (len > s->wbuf_cap) {
		uint8_t *b = realloc(s->wbuf, len);
		if (!b)
			return -ENOMEM;
		s->wbuf = b;
		s->wbuf_cap = len;
	}
	for (ssize_t i = 0; i < k; i++)
		pack(s->wbuf + (size_t)i * rec, format, first + (uint64_t)i, &ev[i]);
	off_t at = lseek(s->wfd, 0, SEEK_END);
	while (done < len) {
		ssize_t w = write(s->wfd, s->wbuf + done, len - done);
		if (w <= 0) {
			int e = w < 0 ? errno : ENOSPC;
			if (at >= 0 && ftruncate(s->wfd, at) < 0) /* no torn record left */
				log_error("spool: cannot cut back a failed write in %s: %m",
					  s->cfg.dir);
			return -e;
		}
		done += (size_t)w;
	}
	pthread_mutex_lock(&s->mu);
	s->segs[s->n_segs - 1].count += (uint64_t)k;
	s->bytes += len;
	s->end += (uint64_t)k;
	pthread_mutex_unlock(&s->mu);
	return k;
}

/* ------------------------------------------------------------------------ */
/* Reading and confirming                                                     */

static void gap_record(struct spool *s, struct tcp_audit_event *ev, uint64_t lost)
{
	struct timespec ts;

	memset(ev, 0, sizeof(*ev));
	clock_gettime(CLOCK_REALTIME, &ts);
	ev->time_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	ev->kind = TCP_AUDIT_KIND_GAP;
	ev->gap_stage = TCP_AUDIT_STAGE_SPOOL;
	ev->gap_lost = lost;
	origin_stamp(&s->origin, ev);
}

ssize_t spool_read(struct spool *s, size_t sink, uint64_t pos, uint64_t end,
		   struct tcp_audit_event *out, size_t max, uint64_t *next)
{
	struct sink_pos *k = &s->sinks[sink];
	uint64_t first = 0, n = 0;
	uint32_t format = FORMAT_FULL;

	*next = pos;
	if (pos >= end || max == 0)
		return 0;
	pthread_mutex_lock(&s->mu);
	k->delivered = pos;
	for (size_t i = 0; i < s->n_segs; i++) {
		const struct segment *g = &s->segs[i];
		if (pos < g->first) { /* dropped (drop_oldest), or lost to damage */
			*next = g->first < end ? g->first : end;
			break;
		}
		if (pos < g->first + g->count) {
			first = g->first;
			n = g->first + g->count - pos;
			format = g->format;
			break;
		}
	}
	if (!n && *next == pos)
		*next = end; /* lost at the end (a torn last record) */
	pthread_mutex_unlock(&s->mu);
	if (!n) { /* this sink will never get those: say so in its stream */
		gap_record(s, &out[0], *next - pos);
		return 1;
	}
	if (n > end - pos)
		n = end - pos;
	if (n > max)
		n = max;

	char name[32];
	segment_name(name, sizeof(name), first);
	if (k->read_fd < 0 || k->read_first != first) {
		if (k->read_fd >= 0)
			close(k->read_fd);
		k->read_fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC);
		if (k->read_fd < 0) {
			if (errno == ENOENT)
				return 0; /* removed meanwhile: the next call looks again */
			return -errno;
		}
		k->read_first = first;
	}
	uint64_t rec = record_size(format);
	if (n * rec > k->buf_cap) {
		uint8_t *b = realloc(k->buf, n * rec);
		if (!b)
			return -ENOMEM;
		k->buf = b;
		k->buf_cap = n * rec;
	}
	off_t at = (off_t)(HDR + (pos - first) * rec);
	ssize_t got = pread(k->read_fd, k->buf, n * rec, at);
	if (got < 0)
		return -errno;
	uint64_t whole = (uint64_t)got / rec;

	size_t m = 0;
	uint64_t bad = 0;
	for (uint64_t j = 0; j <= n; j++) {
		bool good = j < whole && record_ok(k->buf + j * rec, format, pos + j);
		if (j < n && !good) {
			bad++;
			continue;
		}
		if (bad) { /* a run of damaged records ends here */
			uint64_t from = pos + j - bad;
			log_error("spool: %s/%s: %" PRIu64 " damaged record%s at offset %" PRIu64
				  " (position %" PRIu64 "): skipped; a gap record goes to %s",
				  s->cfg.dir, name, bad, bad > 1 ? "s" : "",
				  HDR + (from - first) * rec, from, k->label);
			pthread_mutex_lock(&s->mu);
			s->lost += bad;
			pthread_mutex_unlock(&s->mu);
			gap_record(s, &out[m++], bad);
			bad = 0;
		}
		if (j < n)
			unpack(s, k->buf + j * rec, format, &out[m++]);
	}
	*next = pos + n;
	pthread_mutex_lock(&s->mu);
	k->delivered = *next; /* in the sink's hands now: dropping them loses nothing */
	pthread_mutex_unlock(&s->mu);
	return (ssize_t)m;
}

int spool_confirm(struct spool *s, size_t sink, uint64_t pos)
{
	struct sink_pos *k = &s->sinks[sink];

	if (pos <= k->confirmed)
		return 0;
	int r = write_position(k, pos);
	pthread_mutex_lock(&s->mu);
	k->confirmed = pos;
	trim(s);
	pthread_mutex_unlock(&s->mu);
	return r;
}
