/* SPDX-License-Identifier: MIT */
/* What an archive given on the command line is (verify, report). */
#ifndef TCP_AUDIT_ARCHIVE_H
#define TCP_AUDIT_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>

#if TCP_AUDIT_VERIFY_PGSQL
#include <libpq-fe.h>
#endif

/* A PostgreSQL URI or connection string (postgresql://..., dbname=...) rather than a file. */
bool archive_is_pgsql(const char *source);

/* An SQLite file, by its header. */
bool archive_is_sqlite(const char *path);

#if TCP_AUDIT_VERIFY_PGSQL
/*
 * A connected PostgreSQL archive as user@host:port/db: never by its conninfo,
 * which can hold a password.
 */
void archive_pgsql_name(PGconn *conn, char *out, size_t size);
#endif

#endif
