/* SPDX-License-Identifier: MIT */
/* What an archive given on the command line is (see archive.h). */
#include "archive.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool archive_is_clickhouse(const char *source)
{
	return strncmp(source, "http://", 7) == 0 || strncmp(source, "https://", 8) == 0;
}

bool archive_is_pgsql(const char *source)
{
	return strncmp(source, "postgresql://", 13) == 0 || strncmp(source, "postgres://", 11) == 0 ||
	       (strchr(source, '=') && !archive_is_clickhouse(source) && access(source, F_OK) != 0);
}

bool archive_is_sqlite(const char *path)
{
	char head[16];
	FILE *f = strcmp(path, "-") == 0 ? NULL : fopen(path, "rb");
	bool yes = f && fread(head, 1, sizeof(head), f) == sizeof(head) &&
		   memcmp(head, "SQLite format 3", 16) == 0;

	if (f)
		fclose(f);
	return yes;
}

void archive_column_query(bool pgsql, const char *column, char *out, size_t size)
{
	if (pgsql)
		snprintf(out, size,
			 "SELECT count(*) FROM pg_attribute WHERE attrelid ="
			 " 'tcp_audit_events'::regclass AND attname = '%s' AND NOT attisdropped",
			 column);
	else
		snprintf(out, size,
			 "SELECT count(*) FROM pragma_table_info('tcp_audit_events') WHERE name = '%s'",
			 column);
}

#if TCP_AUDIT_VERIFY_PGSQL
void archive_pgsql_name(PGconn *conn, char *out, size_t size)
{
	snprintf(out, size, "%s@%s:%s/%s", PQuser(conn), PQhost(conn), PQport(conn), PQdb(conn));
}
#endif
