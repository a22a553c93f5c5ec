/* SPDX-License-Identifier: MIT */
/* What an archive given on the command line is (verify, report). */
#ifndef TCP_AUDIT_ARCHIVE_H
#define TCP_AUDIT_ARCHIVE_H

#include <stdbool.h>

/* A PostgreSQL URI or connection string (postgresql://..., dbname=...) rather than a file. */
bool archive_is_pgsql(const char *source);

/* An SQLite file, by its header. */
bool archive_is_sqlite(const char *path);

#endif
