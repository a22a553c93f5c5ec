/* SPDX-License-Identifier: MIT */
/* Stable event ids (see event-uid.h). */
#include "event-uid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

void event_uid_bytes(const struct tcp_audit_event *ev, uint8_t out[EVENT_UID_BYTES])
{
	uint64_t words[sizeof(*ev) / 8];
	uint64_t h = 0x9e3779b97f4a7c15ull;

	memcpy(words, ev, sizeof(words));
	for (size_t i = 0; i < sizeof(words) / 8; i++)
		h = mix(h ^ words[i]) + i;
	for (int i = 0; i < 8; i++) {
		out[i] = (uint8_t)(ev->time_ns >> (56 - 8 * i));
		out[8 + i] = (uint8_t)(h >> (56 - 8 * i));
	}
}

void event_uid_text(const uint8_t uid[EVENT_UID_BYTES], char out[EVENT_UID_LEN])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;

	for (int i = 0; i < EVENT_UID_BYTES; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uid[i] >> 4];
		*p++ = hex[uid[i] & 15];
	}
	*p = '\0';
}

void event_uid(const struct tcp_audit_event *ev, char out[EVENT_UID_LEN])
{
	uint8_t b[EVENT_UID_BYTES];

	event_uid_bytes(ev, b);
	event_uid_text(b, out);
}

int event_uid_list(const struct tcp_audit_event *ev, size_t n, uint8_t **buf, size_t *cap)
{
	if (n * EVENT_UID_BYTES > *cap) {
		uint8_t *b = realloc(*buf, n * EVENT_UID_BYTES);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = n * EVENT_UID_BYTES;
	}
	for (size_t i = 0; i < n; i++)
		event_uid_bytes(&ev[i], *buf + i * EVENT_UID_BYTES);
	return 0;
}
