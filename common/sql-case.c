/* SPDX-License-Identifier: MIT */
/* SQL CASE expressions between numbers and names (see sql-case.h). */
#include "sql-case.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "event-text.h"

/* Numbers to try: every kernel value ours has a name for is below 256. */
#define MAX_VALUE 256

static const char *name_of(enum sql_names names, unsigned v)
{
	switch (names) {
	case SQL_TCP_STATE:
		return tcp_state_name(v);
	case SQL_SOCK_STATE:
		return sock_state_name(v);
	case SQL_FAMILY:
		return family_name(v);
	case SQL_GAP_STAGE:
		return gap_stage_name(v);
	}
	return NULL;
}

__attribute__((format(printf, 4, 5))) static void put(char *out, size_t size, size_t *len,
						      const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(*len < size ? out + *len : NULL, *len < size ? size - *len : 0, fmt, ap);
	va_end(ap);
	*len += n > 0 ? (size_t)n : 0;
}

static int build(char *out, size_t size, enum sql_names names, const char *expr, bool to_name)
{
	size_t len = 0;

	put(out, size, &len, "CASE %s", expr);
	for (unsigned v = 0; v < MAX_VALUE; v++) {
		const char *name = name_of(names, v);
		if (!name)
			continue;
		if (to_name)
			put(out, size, &len, " WHEN %u THEN '%s'", v, name);
		else
			put(out, size, &len, " WHEN '%s' THEN %u", name, v);
	}
	if (to_name)
		put(out, size, &len, " ELSE CAST(%s AS TEXT) END", expr);
	else
		put(out, size, &len, " END");
	return len < size ? (int)len : -1;
}

int sql_case_name(char *out, size_t size, enum sql_names names, const char *expr)
{
	return build(out, size, names, expr, true);
}

int sql_case_number(char *out, size_t size, enum sql_names names, const char *expr)
{
	return build(out, size, names, expr, false);
}
