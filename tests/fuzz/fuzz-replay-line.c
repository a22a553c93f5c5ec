// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the replay eventer's line parser (event_from_json):
 * any input is one line.  What parses must print back to a line that parses
 * to the very same event (the jsonl sink and the replay eventer round-trip).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event-json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tcp_audit_event ev, again;
	char err[256], line[EVENT_JSON_MAX];

	memset(&ev, 0, sizeof(ev));
	if (event_from_json((const char *)data, size, &ev, err, sizeof(err)) != 0) {
		if (!memchr(err, '\0', sizeof(err)) || !err[0])
			abort(); /* an error always says why */
		return 0;
	}
	size_t len = event_to_json(&ev, line);
	if (len == 0 || len > EVENT_JSON_MAX || line[len - 1] != '\n')
		abort();
	memset(&again, 0, sizeof(again));
	if (event_from_json(line, len - 1, &again, err, sizeof(err)) != 0)
		abort(); /* what we print, we read */
	char line2[EVENT_JSON_MAX];
	size_t len2 = event_to_json(&again, line2);
	if (len2 != len || memcmp(line, line2, len) != 0)
		abort(); /* and it stays the same */
	return 0;
}
