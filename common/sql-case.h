/* SPDX-License-Identifier: MIT */
/*
 * SQL CASE expressions between our numbers and their names (states, socket
 * states, families, gap stages), for the database sinks' views and
 * migrations, made from the one table of names in event-text.c so that a
 * store never spells a name differently.  The SQL is what SQLite and
 * PostgreSQL both accept.
 */
#ifndef TCP_AUDIT_SQL_CASE_H
#define TCP_AUDIT_SQL_CASE_H

#include <stddef.h>

enum sql_names {
	SQL_TCP_STATE,
	SQL_SOCK_STATE,
	SQL_FAMILY,
	SQL_GAP_STAGE,
};

/*
 * "CASE expr WHEN 1 THEN 'ESTABLISHED' ... ELSE CAST(expr AS TEXT) END":
 * number to name (a number without a name stays as its digits).  Returns the
 * length, or -1 if out is too small.
 */
int sql_case_name(char *out, size_t size, enum sql_names names, const char *expr);

/* "CASE expr WHEN 'ESTABLISHED' THEN 1 ... END": name to number (else NULL). */
int sql_case_number(char *out, size_t size, enum sql_names names, const char *expr);

#endif
