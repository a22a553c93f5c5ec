/* SPDX-License-Identifier: MIT */
/* One ring of slots per CPU, merged in time order (see rings.h). */
#include "rings.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/types.h> /* the __u64 of bpf-eventer.h */

#include "bpf-eventer.h"

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
	const struct ta_slot *slots; /* this CPU's, in the mapping of all */
	struct ta_ring_pos *rp;
	uint64_t pos;       /* the next record to take */
	uint64_t published; /* pos as last told the programs (rp->tail) */
	/* this pass: what is at pos */
	enum head_state state;
	uint64_t time;
};

struct ring_set {
	struct ring *rings;
	int n;
	uint32_t nslots;
	uint32_t publish_every; /* records taken from a ring before tail is moved on */
	void *slot_map, *pos_map;
	size_t slot_len, pos_len;
	/* the doorbell: its consumer page (ours) and producer page */
	uint64_t *bell_consumer;
	const uint64_t *bell_producer;
	int epfd;
	size_t page;
	uint64_t now;
	bool drain;
	int taken; /* the ring ring_set_peek() took from, -1 if none */
};

static size_t page_round(size_t n, size_t page)
{
	return (n + page - 1) / page * page;
}

int ring_set_new(struct ring_set **out, int slot_fd, int pos_fd, int doorbell_fd, int ncpu,
		 uint32_t nslots)
{
	struct ring_set *s = calloc(1, sizeof(*s));
	int r = 0;

	if (!s)
		return -ENOMEM;
	s->page = (size_t)sysconf(_SC_PAGESIZE);
	s->nslots = nslots;
	s->publish_every = nslots / 16 < 512 ? nslots / 16 : 512;
	s->taken = -1;
	s->slot_map = s->pos_map = MAP_FAILED;
	s->rings = calloc((size_t)ncpu, sizeof(*s->rings));
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!s->rings || s->epfd < 0) {
		r = s->rings ? -errno : -ENOMEM;
		goto fail;
	}
	s->n = ncpu;
	/* an array map's values lie at their size rounded up to 8 (both are multiples of 8) */
	s->slot_len = page_round((size_t)ncpu * nslots * sizeof(struct ta_slot), s->page);
	s->pos_len = page_round((size_t)ncpu * sizeof(struct ta_ring_pos), s->page);
	s->slot_map = mmap(NULL, s->slot_len, PROT_READ, MAP_SHARED, slot_fd, 0);
	s->pos_map = mmap(NULL, s->pos_len, PROT_READ | PROT_WRITE, MAP_SHARED, pos_fd, 0);
	if (s->slot_map == MAP_FAILED || s->pos_map == MAP_FAILED) {
		r = -errno;
		goto fail;
	}
	void *p = mmap(NULL, s->page, PROT_READ | PROT_WRITE, MAP_SHARED, doorbell_fd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto fail;
	}
	s->bell_consumer = p;
	p = mmap(NULL, s->page, PROT_READ, MAP_SHARED, doorbell_fd, (off_t)s->page);
	if (p == MAP_FAILED) {
		r = -errno;
		goto fail;
	}
	s->bell_producer = p;
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, doorbell_fd, &ev)) {
		r = -errno;
		goto fail;
	}
	for (int i = 0; i < ncpu; i++) {
		struct ring *ring = &s->rings[i];
		ring->slots = (const struct ta_slot *)s->slot_map + (size_t)i * nslots;
		ring->rp = (struct ta_ring_pos *)s->pos_map + i;
		ring->pos = ring->published = __atomic_load_n(&ring->rp->tail, __ATOMIC_ACQUIRE);
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
	if (s->slot_map != MAP_FAILED)
		munmap(s->slot_map, s->slot_len);
	if (s->pos_map != MAP_FAILED)
		munmap(s->pos_map, s->pos_len);
	if (s->bell_consumer)
		munmap(s->bell_consumer, s->page);
	if (s->bell_producer)
		munmap((void *)s->bell_producer, s->page);
	if (s->epfd >= 0)
		close(s->epfd);
	free(s->rings);
	free(s);
}

/* The slot of position pos if a program has committed it, else NULL. */
static const struct ta_slot *committed(const struct ring_set *s, const struct ring *r,
				       uint64_t pos)
{
	const struct ta_slot *slot = &r->slots[pos & (s->nslots - 1)];

	return __atomic_load_n(&slot->committed, __ATOMIC_ACQUIRE) == pos + 1 ? slot : NULL;
}

/* Looks at what is at the ring's position. */
static void look(const struct ring_set *s, struct ring *r)
{
	const struct ta_slot *slot = committed(s, r, r->pos);

	if (slot) {
		r->time = slot->rec.ktime;
		r->state = HEAD_RECORD;
	} else {
		/* reserved and being written, or nothing there */
		uint64_t head = __atomic_load_n(&r->rp->head, __ATOMIC_ACQUIRE);
		r->state = head > r->pos ? HEAD_BUSY : HEAD_EMPTY;
	}
}

/*
 * Gives the slots taken back to the programs.  Not after every record: the
 * program of every event reads tail, and each store to it moves its cache
 * line to our CPU and back.
 */
static void publish(struct ring *r)
{
	if (r->published != r->pos) {
		r->published = r->pos;
		__atomic_store_n(&r->rp->tail, r->pos, __ATOMIC_RELEASE);
	}
}

void ring_set_begin(struct ring_set *s, uint64_t now, bool drain)
{
	for (int i = 0; i < s->n; i++)
		publish(&s->rings[i]);
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
			look(s, r);
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
	*len = sizeof(struct ta_record);
	return &best->slots[best->pos & (s->nslots - 1)].rec;
}

void ring_set_next(struct ring_set *s)
{
	if (s->taken < 0)
		return;
	struct ring *r = &s->rings[s->taken];
	if (++r->pos - r->published >= s->publish_every)
		publish(r);
	r->state = HEAD_UNKNOWN;
	s->taken = -1;
}

uint64_t ring_set_count_left(struct ring_set *s, bool (*counts)(const void *rec, size_t len))
{
	uint64_t n = 0;

	for (int i = 0; i < s->n; i++) {
		const struct ring *r = &s->rings[i];
		uint64_t head = __atomic_load_n(&r->rp->head, __ATOMIC_ACQUIRE);
		for (uint64_t pos = r->pos; pos < head; pos++) {
			const struct ta_slot *slot = committed(s, r, pos);
			if (!slot)
				break; /* never committed: nothing to count yet */
			if (counts(&slot->rec, sizeof(slot->rec)))
				n++;
		}
	}
	return n;
}

int ring_set_wait(struct ring_set *s, int timeout_ms)
{
	struct epoll_event ev;

	for (int i = 0; i < s->n; i++)
		publish(&s->rings[i]);
	int n = epoll_wait(s->epfd, &ev, 1, timeout_ms);

	if (n < 0)
		return -errno;
	/* the doorbell's records say nothing more: all of them read at once */
	__atomic_store_n(s->bell_consumer, __atomic_load_n(s->bell_producer, __ATOMIC_ACQUIRE),
			 __ATOMIC_RELEASE);
	return n;
}
