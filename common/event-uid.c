/* SPDX-License-Identifier: MIT */
/* Stable event ids (see event-uid.h). */
#include "event-uid.h"

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

void event_uid(const struct tcp_audit_event *ev, uint64_t salt, char out[EVENT_UID_LEN])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t words[sizeof(*ev) / 8];
	uint64_t h = 0x9e3779b97f4a7c15ull ^ salt;
	unsigned char b[16];

	memcpy(words, ev, sizeof(words));
	for (size_t i = 0; i < sizeof(words) / 8; i++)
		h = mix(h ^ words[i]) + i;
	for (int i = 0; i < 8; i++) {
		b[i] = (unsigned char)(ev->time_ns >> (56 - 8 * i));
		b[8 + i] = (unsigned char)(h >> (56 - 8 * i));
	}
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[b[i] >> 4];
		*p++ = hex[b[i] & 15];
	}
	*p = '\0';
}
