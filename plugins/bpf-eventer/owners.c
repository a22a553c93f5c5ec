/* SPDX-License-Identifier: MIT */
#include "owners.h"

#include <errno.h>
#include <stdlib.h>

#define MIN_SLOTS 1024

struct slot {
	uint64_t key; /* 0: empty */
	struct owner_entry e;
};

struct owner_table {
	struct slot *slots;
	size_t mask; /* slots - 1, a power of 2 minus 1 */
	size_t count, max;
};

/* Fibonacci hashing: cookies are handed out in sequence; this spreads them. */
static size_t home(const struct owner_table *t, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & t->mask;
}

static struct slot *find(const struct owner_table *t, uint64_t key)
{
	for (size_t i = home(t, key);; i = (i + 1) & t->mask) {
		struct slot *s = &t->slots[i];
		if (s->key == key)
			return s;
		if (s->key == 0)
			return NULL;
	}
}

static size_t put(struct owner_table *t, const struct slot *in)
{
	size_t i = home(t, in->key);

	while (t->slots[i].key)
		i = (i + 1) & t->mask;
	t->slots[i] = *in;
	return i;
}

struct owner_table *owner_table_new(size_t max)
{
	struct owner_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->slots = calloc(MIN_SLOTS, sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return NULL;
	}
	t->mask = MIN_SLOTS - 1;
	t->max = max;
	return t;
}

void owner_table_free(struct owner_table *t)
{
	if (!t)
		return;
	free(t->slots);
	free(t);
}

/* Doubles the slots: at most half of them are ever in use. */
static int grow(struct owner_table *t)
{
	size_t n = (t->mask + 1) * 2;
	struct slot *old = t->slots, *slots = calloc(n, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	t->slots = slots;
	t->mask = n - 1;
	for (size_t i = 0; i < n / 2; i++)
		if (old[i].key)
			put(t, &old[i]);
	free(old);
	return 0;
}

struct owner_entry *owner_table_add(struct owner_table *t, uint64_t key, bool *full)
{
	struct slot *s = find(t, key);

	*full = false;
	if (s)
		return &s->e;
	if (t->count >= t->max) {
		*full = true;
		return NULL;
	}
	if ((t->count + 1) * 2 > t->mask + 1 && grow(t))
		return NULL;
	struct slot in = {.key = key};
	t->count++;
	return &t->slots[put(t, &in)].e;
}

struct owner_entry *owner_table_find(const struct owner_table *t, uint64_t key)
{
	struct slot *s = find(t, key);

	return s ? &s->e : NULL;
}

/* Empties slot i and moves back the entries after it that belong before it. */
static void remove_at(struct owner_table *t, size_t i)
{
	size_t j = i;

	for (;;) {
		j = (j + 1) & t->mask;
		if (!t->slots[j].key)
			break;
		size_t h = home(t, t->slots[j].key);
		/* j's entry may fill the hole at i unless its home lies in (i, j] */
		bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
		if (!stays) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i].key = 0;
	t->count--;
}

void owner_table_forget(struct owner_table *t, uint64_t key)
{
	struct slot *s = find(t, key);

	if (s)
		remove_at(t, (size_t)(s - t->slots));
}

size_t owner_table_expire(struct owner_table *t, uint64_t before)
{
	size_t dropped = 0;

	/* a removal may move a later entry into slot i: look at i again then */
	for (size_t i = 0; i <= t->mask;) {
		struct slot *s = &t->slots[i];
		if (s->key && s->e.pending_since && s->e.pending_since < before && !s->e.held) {
			remove_at(t, i);
			dropped++;
		} else {
			i++;
		}
	}
	return dropped;
}

size_t owner_table_count(const struct owner_table *t)
{
	return t->count;
}
