/* SPDX-License-Identifier: MIT */
/*
 * A growable run of bytes: what a sink encodes a batch into (binary COPY,
 * RowBinary) and statements are built in.
 */
#ifndef TCP_AUDIT_BYTE_BUFFER_H
#define TCP_AUDIT_BYTE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct byte_buffer {
	char *p;
	size_t len, cap;
	bool failed; /* byte_buffer_printf() ran out of memory: the text is not whole */
};

/* Room for more bytes after len (grown by doubling); 0 or -ENOMEM. */
int byte_buffer_reserve(struct byte_buffer *b, size_t more);

/* Appends; the room must have been reserved. */
static inline void byte_buffer_put(struct byte_buffer *b, const void *p, size_t n)
{
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* Appends formatted text (kept NUL-terminated), growing as needed; sets failed if it cannot. */
void byte_buffer_printf(struct byte_buffer *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

void byte_buffer_free(struct byte_buffer *b);

#endif
