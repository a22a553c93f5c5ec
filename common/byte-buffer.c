/* SPDX-License-Identifier: MIT */
#include "byte-buffer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define FIRST_CAP 4096u

int byte_buffer_reserve(struct byte_buffer *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : FIRST_CAP;
	while (cap < b->len + more)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

void byte_buffer_printf(struct byte_buffer *b, const char *fmt, ...)
{
	va_list ap;

	while (!b->failed) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
		} else if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		} else if (byte_buffer_reserve(b, (size_t)n + 1)) {
			b->failed = true;
		}
	}
}

void byte_buffer_free(struct byte_buffer *b)
{
	free(b->p);
	*b = (struct byte_buffer){0};
}
