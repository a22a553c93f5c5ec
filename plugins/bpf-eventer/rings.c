/* SPDX-License-Identifier: MIT */
/* One BPF ring buffer per CPU, merged in time order (see rings.h). */
#include "rings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

/*
 * How much older than the moment a ring was seen empty (or with its next
 * record still being written) a record of another ring must be to go: what
 * a record may lag between the clock read that stamps it and its being
 * visible (the program reserves first and reads the clock after, so only
 * clock skew between CPUs, the order of our own reads and an interrupt
 * between the clock read and the commit are left).  Far above those.
 */
#define SLACK_NS 1000000ull

enum head_state { HEAD_UNKNOWN, HEAD_RECORD, HEAD_EMPTY, HEAD_BUSY };

struct ring {
	int fd;
	uint64_t *consumer_pos; /* the page we write */
	const uint64_t *producer_pos;
	const uint8_t *data; /* mapped twice in a row: a record never wraps */
	uint64_t mask;
	uint64_t pos; /* our copy of *consumer_pos */
	/* this pass: what is at pos */
	enum head_state state;
	uint64_t time;
	const uint8_t *record;
	uint32_t len;
	uint32_t size; /* header and padding included */
};

struct ring_set {
	struct ring *rings;
	int n;
	int epfd;
	size_t page;
	uint32_t ring_bytes;
	uint64_t now;
	bool drain;
	int taken; /* the ring ring_set_peek() took from, -1 if none */
};

static void ring_unmap(struct ring_set *s, struct ring *r)
{
	if (r->consumer_pos)
		munmap(r->consumer_pos, s->page);
	if (r->producer_pos)
		munmap((void *)r->producer_pos, s->page + 2 * (size_t)s->ring_bytes);
	if (r->fd >= 0)
		close(r->fd);
}

static int ring_map(struct ring_set *s, struct ring *r)
{
	void *p = mmap(NULL, s->page, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	r->consumer_pos = p;
	p = mmap(NULL, s->page + 2 * (size_t)s->ring_bytes, PROT_READ, MAP_SHARED, r->fd,
		 (off_t)s->page);
	if (p == MAP_FAILED)
		return -errno;
	r->producer_pos = p;
	r->data = (const uint8_t *)p + s->page;
	r->mask = s->ring_bytes - 1;
	r->pos = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	return 0;
}

int ring_set_new(struct ring_set **out, int outer_fd, int ncpu, uint32_t ring_bytes)
{
	struct ring_set *s = calloc(1, sizeof(*s));
	int r = 0;

	if (!s)
		return -ENOMEM;
	s->page = (size_t)sysconf(_SC_PAGESIZE);
	s->ring_bytes = ring_bytes;
	s->taken = -1;
	s->rings = calloc((size_t)ncpu, sizeof(*s->rings));
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!s->rings || s->epfd < 0) {
		r = s->rings ? -errno : -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < ncpu; i++)
		s->rings[i].fd = -1;
	s->n = ncpu;
	for (int i = 0; i < ncpu; i++) {
		struct ring *ring = &s->rings[i];
		__u32 key = (__u32)i;
		/*
		 * edge-triggered: woken when a program says so, not whenever a
		 * ring holds something (records waiting for their time do)
		 */
		struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};

		ring->fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "ta_ring", 0, 0, ring_bytes, NULL);
		if (ring->fd < 0) {
			r = -errno;
			goto fail;
		}
		if ((r = ring_map(s, ring)))
			goto fail;
		if (bpf_map_update_elem(outer_fd, &key, &ring->fd, BPF_ANY) ||
		    epoll_ctl(s->epfd, EPOLL_CTL_ADD, ring->fd, &ev)) {
			r = -errno;
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	ring_set_free(s);
	return r;
}

void ring_set_free(struct ring_set *s)
{
	if (!s)
		return;
	for (int i = 0; s->rings && i < s->n; i++)
		ring_unmap(s, &s->rings[i]);
	if (s->epfd >= 0)
		close(s->epfd);
	free(s->rings);
	free(s);
}

/*
 * The record header at pos: its body's length and the bytes to the next
 * record in *body and *size; returns the header's length word, whose
 * BPF_RINGBUF_BUSY_BIT (still being written: *body and *size unset) and
 * BPF_RINGBUF_DISCARD_BIT the caller looks at.
 */
static uint32_t header(const struct ring *r, uint64_t pos, uint32_t *body, uint32_t *size)
{
	const uint8_t *hdr = r->data + (pos & r->mask);
	uint32_t len = __atomic_load_n((const uint32_t *)hdr, __ATOMIC_ACQUIRE);

	if (!(len & BPF_RINGBUF_BUSY_BIT)) {
		*body = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
		*size = (*body + BPF_RINGBUF_HDR_SZ + 7) & ~7u;
	}
	return len;
}

/* Looks at what is at the ring's position, skipping discarded records. */
static void look(struct ring *r)
{
	uint64_t end = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);

	while (r->pos < end) {
		uint32_t body, size, len = header(r, r->pos, &body, &size);
		if (len & BPF_RINGBUF_BUSY_BIT) {
			r->state = HEAD_BUSY; /* reserved, being written */
			return;
		}
		if (len & BPF_RINGBUF_DISCARD_BIT || body < sizeof(uint64_t)) {
			r->pos += size;
			__atomic_store_n(r->consumer_pos, r->pos, __ATOMIC_RELEASE);
			continue;
		}
		r->record = r->data + (r->pos & r->mask) + BPF_RINGBUF_HDR_SZ;
		r->len = body;
		r->size = size;
		memcpy(&r->time, r->record, sizeof(r->time));
		r->state = HEAD_RECORD;
		return;
	}
	r->state = HEAD_EMPTY;
}

void ring_set_begin(struct ring_set *s, uint64_t now, bool drain)
{
	s->now = now;
	s->drain = drain;
	s->taken = -1;
	for (int i = 0; i < s->n; i++)
		s->rings[i].state = HEAD_UNKNOWN;
}

const void *ring_set_peek(struct ring_set *s, size_t *len, bool *pending)
{
	struct ring *best = NULL;
	bool unsure = false, busy = false;

	*pending = false;
	s->taken = -1;
	for (int i = 0; i < s->n; i++) {
		struct ring *r = &s->rings[i];
		/* an empty ring is looked at once a pass: it was empty as of s->now */
		if (r->state == HEAD_UNKNOWN || r->state == HEAD_BUSY)
			look(r);
		if (r->state == HEAD_RECORD) {
			if (!best || r->time < best->time)
				best = r;
			continue;
		}
		/*
		 * Empty, or its next record is being written (its time not
		 * there yet): either way what comes next from it is stamped
		 * after (give or take the slack) this pass began.
		 */
		unsure = true;
		busy |= r->state == HEAD_BUSY;
	}
	if (!best) {
		*pending = busy;
		return NULL;
	}
	if (unsure && !s->drain && best->time + SLACK_NS > s->now) {
		*pending = true; /* another ring may yet get an older one */
		return NULL;
	}
	s->taken = (int)(best - s->rings);
	*len = best->len;
	return best->record;
}

void ring_set_next(struct ring_set *s)
{
	if (s->taken < 0)
		return;
	struct ring *r = &s->rings[s->taken];
	r->pos += r->size;
	__atomic_store_n(r->consumer_pos, r->pos, __ATOMIC_RELEASE);
	r->state = HEAD_UNKNOWN;
	s->taken = -1;
}

uint64_t ring_set_count_left(struct ring_set *s, bool (*counts)(const void *rec, size_t len))
{
	uint64_t n = 0;

	for (int i = 0; i < s->n; i++) {
		const struct ring *r = &s->rings[i];
		uint64_t end = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
		for (uint64_t pos = r->pos; pos < end;) {
			uint32_t body, size, len = header(r, pos, &body, &size);
			if (len & BPF_RINGBUF_BUSY_BIT)
				break; /* never committed: nothing to count yet */
			const uint8_t *rec = r->data + (pos & r->mask) + BPF_RINGBUF_HDR_SZ;
			if (!(len & BPF_RINGBUF_DISCARD_BIT) && counts(rec, body))
				n++;
			pos += size;
		}
	}
	return n;
}

int ring_set_wait(struct ring_set *s, int timeout_ms)
{
	struct epoll_event evs[16];
	int n = epoll_wait(s->epfd, evs, 16, timeout_ms);

	return n < 0 ? -errno : n;
}
