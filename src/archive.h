/* SPDX-License-Identifier: MIT */
/* What an archive given on the command line is (verify, report). */
#ifndef TCP_AUDIT_ARCHIVE_H
#define TCP_AUDIT_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>

#if TCP_AUDIT_VERIFY_PGSQL
#include <libpq-fe.h>
#endif

/* A ClickHouse archive: the URL of its HTTP interface (http://, https://). */
bool archive_is_clickhouse(const char *source);

/* A PostgreSQL URI or connection string (postgresql://..., dbname=...) rather than a file. */
bool archive_is_pgsql(const char *source);

/* An SQLite file, by its header. */
bool archive_is_sqlite(const char *path);

/*
 * A query whose one cell is the number of columns named column (a column
 * added within schema v2) that tcp_audit_events has: 1 or 0.  pgsql: the
 * query of a PostgreSQL archive, else of an SQLite one.
 */
void archive_column_query(bool pgsql, const char *column, char *out, size_t size);

#if TCP_AUDIT_VERIFY_PGSQL
/*
 * A connected PostgreSQL archive as user@host:port/db: never by its conninfo,
 * which can hold a password.
 */
void archive_pgsql_name(PGconn *conn, char *out, size_t size);
#endif

#endif
