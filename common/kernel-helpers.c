// SPDX-License-Identifier: MIT
#include "kernel-helpers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int port_list_parse(const char *text, uint16_t *out, size_t max, size_t *n, char *err,
		    size_t err_size)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	*n = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(tok, &end, 10);
		if (*n == max) {
			snprintf(err, err_size, "more than %zu ports", max);
			r = -EINVAL;
			break;
		}
		if (!*tok || *end || v < 1 || v > 65535) {
			snprintf(err, err_size, "\"%s\" is not a port (1 to 65535)", tok);
			r = -EINVAL;
			break;
		}
		out[(*n)++] = (uint16_t)v;
	}
	if (r == 0 && *n == 0) {
		snprintf(err, err_size, "no port given");
		r = -EINVAL;
	}
	free(copy);
	return r;
}

uint64_t clock_now_ns(int clock_id)
{
	struct timespec ts;

	clock_gettime(clock_id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t realtime_minus_monotonic_ns(void)
{
	uint64_t best = UINT64_MAX;
	int64_t offset = 0;

	/* the tightest of three brackets: the realtime read sits in the middle */
	for (int i = 0; i < 3; i++) {
		uint64_t m1 = clock_now_ns(CLOCK_MONOTONIC);
		uint64_t rt = clock_now_ns(CLOCK_REALTIME);
		uint64_t m2 = clock_now_ns(CLOCK_MONOTONIC);
		if (m2 - m1 < best) {
			best = m2 - m1;
			offset = (int64_t)(rt - (m1 + (m2 - m1) / 2));
		}
	}
	return offset;
}
