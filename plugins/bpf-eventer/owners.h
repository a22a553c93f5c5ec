/* SPDX-License-Identifier: MIT */
/*
 * Who owns which socket, kept in user space from the bpf eventer's records:
 * sockets by cookie, listeners by (network namespace, family, port).  An
 * open-addressing table (linear probing, backward-shift deletion) that grows
 * up to a fixed bound.
 */
#ifndef TCP_AUDIT_OWNERS_H
#define TCP_AUDIT_OWNERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OWNER_COMM_LEN 16

struct owner {
	uint32_t pid;
	uint32_t uid;
	char comm[OWNER_COMM_LEN];
};

/* What is known of one socket (or listener). */
struct owner_entry {
	struct owner owner;
	/* nonzero: seen only in quiet records since this monotonic time; dropped by
	 * owner_table_expire() unless confirmed (set to 0) before */
	uint64_t pending_since;
	uint32_t held;      /* its events waiting in the eventer's hold queue */
	bool from_listener; /* owner is its listener's: accept() not seen yet */
	bool closed;        /* CLOSED seen: forget once nothing is held */
};

struct owner_table;

/* A table for at most max entries (keys are nonzero); NULL without memory. */
struct owner_table *owner_table_new(size_t max);
void owner_table_free(struct owner_table *t);

/*
 * key's entry, added (zeroed) if missing; NULL when the table holds max
 * entries already (*full set) or cannot grow.  Pointers into the table are
 * valid until the next add or forget.
 */
struct owner_entry *owner_table_add(struct owner_table *t, uint64_t key, bool *full);
/* key's entry or NULL. */
struct owner_entry *owner_table_find(const struct owner_table *t, uint64_t key);
void owner_table_forget(struct owner_table *t, uint64_t key);
/* Drops pending entries set before `before` that hold nothing; returns how many. */
size_t owner_table_expire(struct owner_table *t, uint64_t before);
size_t owner_table_count(const struct owner_table *t);

/* A listener's key. */
static inline uint64_t owner_listener_key(uint32_t netns, uint16_t family, uint16_t port)
{
	return (uint64_t)netns << 32 | (uint64_t)family << 16 | port;
}

#endif
