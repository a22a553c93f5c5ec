/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit report: what happened to the connections of an archive (SQLite
 * file or PostgreSQL database) in a time range, as text, JSON or HTML.
 *
 * The store does the work: the connections of the range (sql_connections(),
 * the query of the tcp_connections view, restricted to the range) go into a
 * temporary table once (SQLite: aggregated by as many threads as there are
 * cores, sqlite_connections()), and every summary is one query over it (or
 * over the range's reset and gap records).  Rows come back as text; a
 * table's columns say how each is shown (text, number, time).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if TCP_AUDIT_VERIFY_SQLITE
#include <sqlite3.h>
#endif
#if TCP_AUDIT_VERIFY_PGSQL
#include <libpq-fe.h>
#endif

#include "archive.h"
#include "event-json.h"
#include "event-text.h"
#include "kernel-helpers.h"
#include "report.h"
#include "sql-case.h"

#define EXIT_USAGE 2
#define NS UINT64_C(1000000000)
#define TEXT_ROWS 50       /* rows of a table in text; JSON has them all */
#define TEXT_WIDTH 100     /* text lines are cut there */
#define STUCK_DEFAULT_S 60 /* --stuck */

/* ------------------------------------------------------------------------ */
/* The store: one connection, queries whose rows come back as text           */

struct store {
	const char *source;
	char name[512];     /* for messages and the report: never a password */
	enum sql_order order; /* SQL_ORDER_SCAN (SQLite) or SQL_ORDER_SORTED */
	int verbose;          /* -v: each query's time and rows on stderr; -vv: and its SQL */
	char label[32];       /* in -v's lines: which connection ran the query, or "" */
	int parts;            /* SQLite: the memdb databases of sqlite_connections() */
	/* the events as schema v2 has them: tcp_audit_events, or a SELECT of an older schema's */
	char events[6144];
#if TCP_AUDIT_VERIFY_SQLITE
	sqlite3 *lite;
#endif
#if TCP_AUDIT_VERIFY_PGSQL
	PGconn *pg;
#endif
};

/*
 * A table of results: columns of a type each, cells as text (NULL for NULL);
 * COL_SECONDS holds a duration in nanoseconds, shown in seconds.
 */
enum col_type { COL_TEXT, COL_INT, COL_SECONDS, COL_TIME };

struct column {
	const char *key;  /* the JSON member, and the text heading */
	enum col_type type;
	bool json_only;   /* not in the text's table */
};

struct table {
	const char *key;   /* the JSON member */
	const char *title; /* the text heading */
	const struct column *cols;
	int ncols;
	/* rows * ncols: 1 + where the cell's text begins in text, 0 for NULL */
	size_t *cells;
	size_t rows, cap;
	char *text; /* the cells' text, each NUL-terminated, one after the other */
	size_t text_len, text_cap;
#if TCP_AUDIT_VERIFY_PGSQL
	PGresult *res; /* or the cells as libpq has them (no copy of tens of MB) */
#endif
};

static void oom(void)
{
	fprintf(stderr, "tcp-audit report: out of memory\n");
	exit(EXIT_USAGE);
}

/* A new row, its cells to be set by set_cell(). */
static void add_row(struct table *t)
{
	if (t->rows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof(*t->cells));
		if (!t->cells)
			oom();
	}
	t->rows++;
}

/* Cell col of the last row: len bytes of v, or NULL. */
static void set_cell(struct table *t, int col, const char *v, size_t len)
{
	size_t *c = &t->cells[(t->rows - 1) * (size_t)t->ncols + col];

	if (!v) {
		*c = 0;
		return;
	}
	if (t->text_len + len + 1 > t->text_cap) {
		while (t->text_len + len + 1 > t->text_cap)
			t->text_cap = t->text_cap ? t->text_cap * 2 : 4096;
		if (!(t->text = realloc(t->text, t->text_cap)))
			oom();
	}
	memcpy(t->text + t->text_len, v, len);
	t->text[t->text_len + len] = '\0';
	*c = 1 + t->text_len;
	t->text_len += len + 1;
}

static void free_table(struct table *t)
{
	free(t->cells);
	free(t->text);
#if TCP_AUDIT_VERIFY_PGSQL
	PQclear(t->res);
	t->res = NULL;
#endif
	t->cells = NULL;
	t->text = NULL;
	t->rows = t->cap = t->text_len = t->text_cap = 0;
}

static const char *cell(const struct table *t, size_t row, int col)
{
#if TCP_AUDIT_VERIFY_PGSQL
	if (t->res)
		return PQgetisnull(t->res, (int)row, col) ? NULL : PQgetvalue(t->res, (int)row, col);
#endif
	size_t c = t->cells[row * (size_t)t->ncols + col];

	return c ? t->text + c - 1 : NULL;
}

static uint64_t cell_u64(const struct table *t, size_t row, int col)
{
	const char *v = cell(t, row, col);

	return v ? strtoull(v, NULL, 10) : 0;
}

static int run_query(struct store *st, const char *sql, struct table *t)
{
#if TCP_AUDIT_VERIFY_SQLITE
	if (st->lite) {
		sqlite3_stmt *stmt;
		int rc = sqlite3_prepare_v2(st->lite, sql, -1, &stmt, NULL);
		while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
			rc = SQLITE_OK;
			if (!t)
				continue;
			add_row(t);
			for (int i = 0; i < t->ncols; i++)
				set_cell(t, i, (const char *)sqlite3_column_text(stmt, i),
					 (size_t)sqlite3_column_bytes(stmt, i));
		}
		sqlite3_finalize(stmt);
		if (rc != SQLITE_DONE) {
			fprintf(stderr, "tcp-audit report: %s: %s\n", st->name,
				sqlite3_errmsg(st->lite));
			return -1;
		}
		return 0;
	}
#endif
#if TCP_AUDIT_VERIFY_PGSQL
	PGresult *res = PQexec(st->pg, sql);
	ExecStatusType status = PQresultStatus(res);
	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
		fprintf(stderr, "tcp-audit report: %s", PQerrorMessage(st->pg));
		PQclear(res);
		return -1;
	}
	if (t && t->ncols <= PQnfields(res)) {
		t->res = res;
		t->rows = (size_t)PQntuples(res);
	} else {
		PQclear(res);
	}
	return 0;
#else
	(void)sql;
	(void)t;
	return -1;
#endif
}

/*
 * Runs sql; with t, its rows (as many columns as t has) go into t.  Returns
 * 0, or -1 with the store's message on stderr.
 */
static int run(struct store *st, const char *sql, struct table *t)
{
	uint64_t t0 = st->verbose ? clock_now_ns(CLOCK_MONOTONIC) : 0;
	int r = run_query(st, sql, t);

	if (st->verbose)
		fprintf(stderr, "tcp-audit report: %s%.3f s, %zu rows: %.*s%s\n", st->label,
			(double)(clock_now_ns(CLOCK_MONOTONIC) - t0) / 1e9, t ? t->rows : 0,
			st->verbose > 1 ? (int)strlen(sql) : 60, sql,
			st->verbose < 2 && strlen(sql) > 60 ? "..." : "");
	return r;
}

/* The first cell of a one-row, one-column query; -1 if it failed or is NULL. */
static int64_t run_int(struct store *st, const char *sql)
{
	static const struct column one[] = {{"v", COL_INT, false}};
	struct table t = {.cols = one, .ncols = 1};
	int64_t v = -1;

	if (run(st, sql, &t) == 0 && t.rows == 1 && cell(&t, 0, 0))
		v = strtoll(cell(&t, 0, 0), NULL, 10);
	free_table(&t);
	return v;
}

#if TCP_AUDIT_VERIFY_SQLITE || TCP_AUDIT_VERIFY_PGSQL
/* Whether tcp_audit_events has a column (one added within schema v2): 1, 0, -1. */
static int has_column(struct store *st, const char *column)
{
	char sql[256];

	archive_column_query(st->order != SQL_ORDER_SCAN, column, sql, sizeof(sql));
	int64_t n = run_int(st, sql);
	return n < 0 ? -1 : n > 0;
}

/*
 * The archive's events as st->events, by its schema version; 0, or an exit
 * status.  Version 2: tcp_audit_events, with NULL for the columns added
 * within v2 that an older file lacks (it gets them when a sink next opens
 * it).  Version 1 (tcp-audit 0.1): its tables of text rows read as v2 rows,
 * state changes (tcp_events) and gap records (tcp_audit_gaps); it had no
 * reset records and no error column, so its connections are closed, reset
 * only by what their paths show, or open.  The sinks migrate v1 the same way
 * (migrate_v1() of each), every column there.
 */
static int events_of_version(struct store *st, int64_t version)
{
	static const char *const v2_cols = "uid, time_ns, kind, host, family, saddr, sport, daddr,"
					   " dport, owner_pid, owner_comm, sock_cookie, seq,"
					   " old_state, new_state";

	if (version == 2) {
		int error = has_column(st, "error"), direction = has_column(st, "reset_direction");
		if (error < 0 || direction < 0)
			return EXIT_USAGE;
		if (error && direction)
			snprintf(st->events, sizeof(st->events), "tcp_audit_events");
		else
			snprintf(st->events, sizeof(st->events),
				 "(SELECT %s, %s AS error, %s AS reset_direction, gap_stage, gap_lost"
				 " FROM tcp_audit_events) events",
				 v2_cols, error ? "error" : "CAST(NULL AS INTEGER)",
				 direction ? "reset_direction" : "CAST(NULL AS INTEGER)");
		return 0;
	}
	if (version > 2) {
		fprintf(stderr, "tcp-audit report: %s has schema version %" PRId64 ", newer than this"
				" tcp-audit's 2: use a newer tcp-audit\n",
			st->name, version);
		return EXIT_USAGE;
	}
	if (version != 1) {
		fprintf(stderr, "tcp-audit report: %s is not a tcp-audit archive (no tables of"
				" schema version 1 or 2)\n",
			st->name);
		return EXIT_USAGE;
	}
	char family[256], old_state[1024], new_state[1024], stage[256];
	if (sql_case_number(family, sizeof(family), SQL_FAMILY, "family") < 0 ||
	    sql_case_number(old_state, sizeof(old_state), SQL_TCP_STATE, "old_state") < 0 ||
	    sql_case_number(new_state, sizeof(new_state), SQL_TCP_STATE, "new_state") < 0 ||
	    sql_case_number(stage, sizeof(stage), SQL_GAP_STAGE, "stage") < 0)
		return EXIT_USAGE;
	/* PostgreSQL: an original's row kept in v1 may have its timestamp only */
	const char *time_ns = st->order == SQL_ORDER_SCAN
				      ? "time_ns"
				      : "coalesce(time_ns, (extract(epoch FROM timestamp)"
					" * 1000000000)::bigint)";
	int n = snprintf(st->events, sizeof(st->events),
			 "(SELECT uid, %s AS time_ns, 0 AS kind, host, %s AS family, src_ip AS saddr,"
			 " src_port AS sport, dst_ip AS daddr, dst_port AS dport, owner_pid, owner_comm,"
			 " sock_cookie, seq, %s AS old_state, %s AS new_state, CAST(NULL AS INTEGER)"
			 " AS error, CAST(NULL AS INTEGER) AS reset_direction, NULL AS gap_stage,"
			 " NULL AS gap_lost FROM tcp_events UNION ALL SELECT uid, time_ns, 1, host,"
			 " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, seq, NULL, NULL, NULL, NULL,"
			 " %s, lost FROM tcp_audit_gaps) events",
			 time_ns, family, old_state, new_state, stage);
	return n > 0 && (size_t)n < sizeof(st->events) ? 0 : EXIT_USAGE;
}
#endif

/* Opens the archive and checks its schema; 0, or an exit status. */
static int open_store(struct store *st)
{
	if (archive_is_clickhouse(st->source)) {
		/* not named: a URL can hold a password */
		fprintf(stderr, "tcp-audit report: the source is a ClickHouse server's URL: report "
				"reads SQLite and PostgreSQL archives (ClickHouse's SQL answers the "
				"same; see the README's \"Fleet\")\n");
		return EXIT_USAGE;
	}
	if (archive_is_pgsql(st->source)) {
#if TCP_AUDIT_VERIFY_PGSQL
		st->pg = PQconnectdb(st->source);
		if (PQstatus(st->pg) != CONNECTION_OK) {
			/* libpq's message names the server, never a password */
			fprintf(stderr, "tcp-audit report: cannot connect: %s", PQerrorMessage(st->pg));
			return EXIT_USAGE;
		}
		archive_pgsql_name(st->pg, st->name, sizeof(st->name));
		st->order = SQL_ORDER_SORTED;
		/* a snapshot for every query; a temporary table needs a writable transaction */
		if (run(st, "BEGIN ISOLATION LEVEL REPEATABLE READ", NULL) < 0 ||
		    run(st, "SET LOCAL jit = off", NULL) < 0)
			return EXIT_USAGE;
		int64_t v = run_int(st, "SELECT CASE WHEN to_regclass('tcp_audit_schema') IS NULL"
					" THEN 0 ELSE 1 END");
		if (v == 1)
			v = run_int(st, "SELECT max(version) FROM tcp_audit_schema");
		return events_of_version(st, v);
#else
		fprintf(stderr, "tcp-audit report: %s is a PostgreSQL archive, and this tcp-audit "
				"was built without libpq\n",
			st->source);
		return EXIT_USAGE;
#endif
	}
	if (access(st->source, R_OK) != 0) {
		fprintf(stderr, "tcp-audit report: cannot read %s: %s\n", st->source,
			strerror(errno));
		return EXIT_USAGE;
	}
	if (!archive_is_sqlite(st->source)) {
		fprintf(stderr, "tcp-audit report: %s is neither an SQLite archive nor a "
				"PostgreSQL URI (postgresql://...)\n",
			st->source);
		return EXIT_USAGE;
	}
#if TCP_AUDIT_VERIFY_SQLITE
	if (sqlite3_open_v2(st->source, &st->lite, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "tcp-audit report: cannot open %s: %s\n", st->source,
			sqlite3_errmsg(st->lite));
		return EXIT_USAGE;
	}
	sqlite3_busy_timeout(st->lite, 10000);
	snprintf(st->name, sizeof(st->name), "%s", st->source);
	st->order = SQL_ORDER_SCAN;
	/*
	 * One read transaction: every query sees the same archive while a sink
	 * writes.  The temporary tables in memory (they hold the range's records).
	 */
	if (run(st, "PRAGMA temp_store = MEMORY", NULL) < 0 || run(st, "BEGIN", NULL) < 0)
		return EXIT_USAGE;
	return events_of_version(st, run_int(st, "PRAGMA user_version"));
#else
	fprintf(stderr, "tcp-audit report: %s is an SQLite file, and this tcp-audit was built "
			"without SQLite\n",
		st->source);
	return EXIT_USAGE;
#endif
}

static void close_store(struct store *st)
{
#if TCP_AUDIT_VERIFY_SQLITE
	if (st->lite) {
		sqlite3_exec(st->lite, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(st->lite);
	}
#endif
#if TCP_AUDIT_VERIFY_PGSQL
	if (st->pg)
		PQfinish(st->pg);
#endif
}

/* ------------------------------------------------------------------------ */
/* Times on the command line                                                  */

/*
 * RFC 3339 (2026-12-01T10:00:00Z, an offset, a fraction), the same with a
 * space, "YYYY-MM-DD" or "YYYY-MM-DD HH:MM" (UTC), "now", or "-N" with s, m,
 * h or d (that long before now).  0, or -1.
 */
static int parse_when(const char *s, uint64_t now, uint64_t *out)
{
	char buf[64];
	size_t len = strlen(s);

	if (strcmp(s, "now") == 0) {
		*out = now;
		return 0;
	}
	if (s[0] == '-') {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(s + 1, &end, 10);
		uint64_t unit = strcmp(end, "s") == 0   ? 1
				: strcmp(end, "m") == 0 ? 60
				: strcmp(end, "h") == 0 ? 3600
				: strcmp(end, "d") == 0 ? 86400
							: 0;
		if (errno || end == s + 1 || !unit || n > now / NS / unit)
			return -1;
		*out = now - n * unit * NS;
		return 0;
	}
	/* the forms without seconds or a zone: completed as UTC */
	if (len == 10)
		snprintf(buf, sizeof(buf), "%sT00:00:00Z", s);
	else if (len == 16)
		snprintf(buf, sizeof(buf), "%s:00Z", s);
	else if (len == 19)
		snprintf(buf, sizeof(buf), "%sZ", s);
	else
		snprintf(buf, sizeof(buf), "%s", s);
	return len < 48 && parse_rfc3339_ns(buf, strlen(buf), out) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                     */

/* ns as RFC 3339 text, NUL-terminated. */
static void time_text(uint64_t ns, char out[RFC3339_NS_LEN + 1])
{
	out[format_rfc3339_ns(ns, out)] = '\0';
}

/* A JSON string as the jsonl format writes them (event_json.h). */
static void json_string(FILE *f, const char *s)
{
	static char *buf;
	static size_t cap;
	size_t len = strlen(s);

	if (6 * len + 2 > cap) {
		free(buf);
		cap = 6 * len + 2;
		if (!(buf = malloc(cap)))
			oom();
	}
	fwrite(buf, 1, json_quote(s, len, buf), f);
}

static void json_value(FILE *f, const struct column *c, const char *v)
{
	char t[RFC3339_NS_LEN + 1];

	if (!v) {
		fputs("null", f);
	} else if (c->type == COL_TIME) {
		time_text(strtoull(v, NULL, 10), t);
		json_string(f, t);
	} else if (c->type == COL_INT) {
		fputs(v, f);
	} else if (c->type == COL_SECONDS) {
		int64_t ns = strtoll(v, NULL, 10);
		uint64_t abs = ns < 0 ? 0 - (uint64_t)ns : (uint64_t)ns;
		fprintf(f, "%s%" PRIu64 ".%09" PRIu64, ns < 0 ? "-" : "", abs / NS, abs % NS);
	} else {
		json_string(f, v);
	}
}

static void json_table(FILE *f, const struct table *t)
{
	fprintf(f, ",\n\"%s\":[", t->key);
	for (size_t r = 0; r < t->rows; r++) {
		fputs(r ? ",\n {" : "\n {", f);
		for (int i = 0; i < t->ncols; i++) {
			fprintf(f, "%s\"%s\":", i ? "," : "", t->cols[i].key);
			json_value(f, &t->cols[i], cell(t, r, i));
		}
		fputc('}', f);
	}
	fputs(t->rows ? "\n]" : "]", f);
}

/*
 * A cell as text shows it: times as MM-DD HH:MM:SS.mmm (UTC; the heading has
 * the year), seconds to the millisecond.
 */
static void show(const struct column *c, const char *v, char *out, size_t size)
{
	char t[RFC3339_NS_LEN + 1];

	if (!v) {
		snprintf(out, size, "-");
	} else if (c->type == COL_TIME) {
		time_text(strtoull(v, NULL, 10), t);
		snprintf(out, size, "%.5s %.12s", t + 5, t + 11);
	} else if (c->type == COL_SECONDS) {
		snprintf(out, size, "%.3f", (double)strtoll(v, NULL, 10) / 1e9);
	} else {
		snprintf(out, size, "%s", v);
	}
}

/* Writes text from its start column on, wrapped at spaces before TEXT_WIDTH. */
static void wrapped(FILE *f, const char *text, size_t column)
{
	size_t room = TEXT_WIDTH - column, len = strlen(text);

	while (len > room) {
		size_t cut = room;
		while (cut > 0 && text[cut] != ' ')
			cut--;
		if (cut == 0)
			break; /* one word longer than the room: as it is */
		fprintf(f, "%.*s\n%*s", (int)cut, text, (int)column, "");
		text += cut + 1;
		len -= cut + 1;
	}
	fprintf(f, "%s\n", text);
}

/*
 * A table as aligned columns under its title (numbers to the right), at most
 * TEXT_ROWS rows, without the columns that are for JSON only.  A last column
 * of text wraps under itself when a row is wider than TEXT_WIDTH; any other
 * row is cut there.
 */
static void text_table(FILE *f, const struct table *t, const char *empty)
{
	size_t width[32] = {0}, rows = t->rows < TEXT_ROWS ? t->rows : TEXT_ROWS;
	int last = t->ncols - 1;
	char buf[512];

	fprintf(f, "\n%s\n", t->title);
	if (!t->rows) {
		fprintf(f, "  %s\n", empty);
		return;
	}
	while (last > 0 && t->cols[last].json_only)
		last--;
	for (int i = 0; i <= last; i++)
		width[i] = strlen(t->cols[i].key);
	for (size_t r = 0; r < rows; r++)
		for (int i = 0; i <= last; i++) {
			show(&t->cols[i], cell(t, r, i), buf, sizeof(buf));
			if (strlen(buf) > width[i])
				width[i] = strlen(buf);
		}
	for (size_t r = 0; r <= rows; r++) {
		char line[4096];
		size_t len = 1, start = 0;
		line[0] = ' ';
		for (int i = 0; i <= last; i++) {
			if (t->cols[i].json_only)
				continue;
			if (r == 0)
				snprintf(buf, sizeof(buf), "%s", t->cols[i].key);
			else
				show(&t->cols[i], cell(t, r - 1, i), buf, sizeof(buf));
			bool right = t->cols[i].type == COL_INT || t->cols[i].type == COL_SECONDS;
			if (i == last && !right) {
				start = len + 1;
				if (start + 12 <= TEXT_WIDTH) { /* room for SYN-RECEIVED */
					fprintf(f, "%.*s ", (int)len, line);
					wrapped(f, buf, start);
					len = 0;
					break;
				}
			}
			int n = snprintf(line + len, sizeof(line) - len, right ? " %*s" : " %-*s",
					 i == last && !right ? 0 : (int)width[i], buf);
			len += n > 0 ? (size_t)n : 0;
			if (len >= sizeof(line))
				len = sizeof(line) - 1;
		}
		if (!len)
			continue;
		if (len > TEXT_WIDTH) {
			memcpy(line + TEXT_WIDTH - 3, "...", 3);
			len = TEXT_WIDTH;
		}
		fprintf(f, "%.*s\n", (int)len, line);
	}
	if (t->rows > rows)
		fprintf(f, "  ... %zu more (--format json has them all)\n", t->rows - rows);
}

/* ------------------------------------------------------------------------ */
/* The report                                                                 */

#define TXT(k) {k, COL_TEXT, false}
#define INT(k) {k, COL_INT, false}
#define SECONDS(k) {k, COL_SECONDS, false}
#define TIME(k) {k, COL_TIME, false}
#define JSON_INT(k) {k, COL_INT, true} /* not in the text's table */

static const struct column connection_cols[] = {
	TXT("host"), INT("sock_cookie"), TXT("side"), TXT("saddr"), INT("sport"), TXT("daddr"),
	INT("dport"), INT("owner_pid"), TXT("owner_comm"), TIME("opened"), TIME("closed"),
	SECONDS("duration_s"), TXT("outcome"), TXT("error"), TXT("states"),
};
/* the text's list of connections: those that did not end well, fewer columns */
static const struct column trouble_cols[] = {
	TIME("opened"), TXT("outcome"), TXT("side"), TXT("owner_comm"), TXT("saddr"), INT("sport"),
	TXT("daddr"), INT("dport"), TXT("states"),
};
static const struct column outcome_cols[] = {
	TXT("side"), TXT("outcome"), INT("connections"),
};
static const struct column failed_dest_cols[] = {
	TXT("daddr"), INT("dport"), TXT("outcome"), INT("connections"), TIME("first"),
	TIME("last"),
};
static const struct column failed_proc_cols[] = {
	TXT("owner_comm"), INT("owner_pid"), TXT("outcome"), INT("connections"),
	INT("destinations"),
};
static const struct column resets_cols[] = {
	TXT("peer"), INT("sent"), INT("received"), TIME("first"), TIME("last"),
};
static const struct column stuck_cols[] = {
	TXT("state"), TIME("since"), SECONDS("seconds"), INT("owner_pid"), TXT("owner_comm"),
	TXT("saddr"), INT("sport"), TXT("daddr"), INT("dport"), JSON_INT("sock_cookie"),
};
static const struct column time_wait_cols[] = {
	TXT("daddr"), INT("dport"), INT("time_waits"), INT("peak_per_minute"),
};
static const struct column talker_cols[] = {
	TXT("owner_comm"), TXT("daddr"), INT("dport"), INT("connections"), INT("failed"),
};
static const struct column rate_cols[] = {
	TIME("time"), INT("opened"), INT("failed"), INT("reset"),
};
static const struct column duration_cols[] = {
	TXT("duration"), INT("connections"),
};
static const struct column lane_cols[] = {
	TXT("owner_comm"), INT("connections"),
};
static const struct column gap_cols[] = {
	TIME("time"), TXT("host"), TXT("stage"), INT("lost"),
};

enum { T_CONNECTIONS, T_OUTCOMES, T_FAILED_DEST, T_FAILED_PROC, T_RESETS, T_STUCK,
       T_TIME_WAIT, T_TALKERS, T_RATE, T_DURATIONS, T_GAPS, T_TROUBLE, T_LANES, T_N };

enum format { FORMAT_TEXT, FORMAT_JSON, FORMAT_HTML };

#define TABLE(k, t, c) {.key = k, .title = t, .cols = c, .ncols = (int)(sizeof(c) / sizeof(c[0]))}

struct report {
	const char *source;
	const char *host;   /* --host, or NULL */
	uint64_t since, until; /* [since, until) */
	bool has_since, has_until;
	enum format format;
	uint64_t stuck_ns;
	uint64_t bucket_ns;    /* the connection rate's interval */
	struct table t[T_N];
};

/* "'text'" as an SQL literal (quotes doubled), for --host. */
static void sql_literal(const char *s, char *out, size_t size)
{
	size_t n = 0;

	out[n++] = '\'';
	for (; *s && n + 3 < size; s++) {
		if (*s == '\'')
			out[n++] = '\'';
		out[n++] = *s;
	}
	out[n++] = '\'';
	out[n] = '\0';
}

/* The queries of the range's raw records: resets by peer, gap records. */
struct raw_queries {
	struct report *rp;
	const char *where;
};

static int raw_queries(struct store *st, const struct raw_queries *q)
{
	char stage[512], sql[8192];

	snprintf(sql, sizeof(sql),
		 "SELECT daddr, sum(CASE WHEN reset_direction = 1 THEN 1 ELSE 0 END),"
		 " sum(CASE WHEN reset_direction = 2 THEN 1 ELSE 0 END), min(time_ns), max(time_ns)"
		 " FROM %s WHERE kind = 3%s GROUP BY daddr ORDER BY count(*) DESC, daddr",
		 st->events, q->where);
	if (run(st, sql, &q->rp->t[T_RESETS]) < 0 ||
	    sql_case_name(stage, sizeof(stage), SQL_GAP_STAGE, "gap_stage") < 0)
		return -1;
	snprintf(sql, sizeof(sql),
		 "SELECT time_ns, host, %s, gap_lost FROM %s WHERE kind = 1%s ORDER BY time_ns",
		 stage, st->events, q->where);
	return run(st, sql, &q->rp->t[T_GAPS]);
}

#if TCP_AUDIT_VERIFY_SQLITE
/*
 * SQLite aggregates on one core: the sockets of the range are split by
 * cookie among up to PARTS_MAX threads, each with a connection of its own
 * (its records and their connections in memory: a memdb database of its
 * own, the archive attached read-only), and the main connection copies
 * their connections into report_connections.  Sockets without a cookie
 * (tracefs) all go to the first part: their keys count along the records
 * of an address (sql_connection_keys()).
 */
#define PARTS_MAX 4

struct part {
	struct store st;
	int index, count;
	const char *where; /* the range */
	int rc;
	pthread_t thread;
};

/* The memdb database of part i, as a URI. */
static void part_uri(int i, char *out, size_t size)
{
	snprintf(out, size, "file:/tcp-audit-report-%ld-%d?vfs=memdb", (long)getpid(), i);
}

/*
 * Attaches the memdbs of st->parts parts to st, as part0, part1...; then
 * runs create followed by a SELECT of all their connections.  0 or -1.
 */
static int attach_parts(struct store *st, const char *create)
{
	char uri[128], sql[256], all[4096];
	size_t n = (size_t)snprintf(all, sizeof(all), "%s", create);

	for (int i = 0; i < st->parts; i++) {
		part_uri(i, uri, sizeof(uri));
		snprintf(sql, sizeof(sql), "ATTACH '%s' AS part%d", uri, i);
		if (run(st, sql, NULL) < 0)
			return -1;
		n += (size_t)snprintf(all + n, sizeof(all) - n, "%sSELECT * FROM part%d.part",
				      i ? " UNION ALL " : " ", i);
	}
	return run(st, all, NULL);
}

/* st: a connection beside main's (to be opened), its -v lines labelled. */
static void store_beside(struct store *st, const struct store *main_st, const char *label)
{
	st->source = main_st->source;
	st->verbose = main_st->verbose;
	st->order = SQL_ORDER_SCAN;
	snprintf(st->label, sizeof(st->label), "%s", label);
	snprintf(st->name, sizeof(st->name), "%s", main_st->name);
	snprintf(st->events, sizeof(st->events), "%s", main_st->events);
}

/* "file:" URI of path: every byte but [A-Za-z0-9/._-] escaped. */
static void file_uri(const char *path, const char *query, char *out, size_t size)
{
	size_t n = (size_t)snprintf(out, size, "file:");

	for (const unsigned char *c = (const unsigned char *)path; *c && n + 4 < size; c++)
		n += (size_t)(isalnum(*c) || strchr("/._-", *c)
				      ? snprintf(out + n, size - n, "%c", *c)
				      : snprintf(out + n, size - n, "%%%02X", *c));
	snprintf(out + n, size - n, "%s", query);
}

/*
 * Opens part p: its memdb, the archive attached, a read transaction begun
 * (parts opened one after another see the archive as it was within
 * microseconds of each other; a sink's commit can fall between them).
 */
static int part_open(struct part *p, const struct store *main_st)
{
	char uri[8192], lit[8200], sql[8300], label[32];

	part_uri(p->index, uri, sizeof(uri));
	snprintf(label, sizeof(label), "part %d of %d: ", p->index + 1, p->count);
	store_beside(&p->st, main_st, label);
	if (sqlite3_open_v2(uri, &p->st.lite,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
			    NULL) != SQLITE_OK) {
		fprintf(stderr, "tcp-audit report: cannot open a database in memory: %s\n",
			sqlite3_errmsg(p->st.lite));
		return -1;
	}
	/* as large as the range's connections are (a memdb stops at 1 GiB) */
	sqlite3_int64 limit = (sqlite3_int64)1 << 60;
	sqlite3_file_control(p->st.lite, "main", SQLITE_FCNTL_SIZE_LIMIT, &limit);
	sqlite3_busy_timeout(p->st.lite, 10000);
	/* the archive by the default VFS (an attached file has its connection's: memdb) */
	char query[128];
	snprintf(query, sizeof(query), "?mode=ro&vfs=%s", sqlite3_vfs_find(NULL)->zName);
	file_uri(main_st->source, query, uri, sizeof(uri));
	sql_literal(uri, lit, sizeof(lit));
	snprintf(sql, sizeof(sql), "ATTACH %s AS archive", lit);
	if (run(&p->st, sql, NULL) < 0 || run(&p->st, "PRAGMA temp_store = MEMORY", NULL) < 0 ||
	    run(&p->st, "BEGIN", NULL) < 0 ||
	    run(&p->st, "SELECT count(*) FROM archive.sqlite_master", NULL) < 0)
		return -1;
	return 0;
}

/* Thread of part p: its sockets' records, then their connections as table part. */
static void *part_main(void *arg)
{
	struct part *p = arg;
	char where[1024], records[8192], sql[40000], conn[32768];

	p->rc = -1;
	/* a cookie's part; sockets without one in the first */
	snprintf(where, sizeof(where), "%s AND (%s(sock_cookie %% %d + %d) %% %d = %d)", p->where,
		 p->index == 0 ? "sock_cookie IS NULL OR " : "", p->count, p->count, p->count,
		 p->index);
	if (sql_connection_records(records, sizeof(records), p->st.events, where) < 0)
		return NULL;
	snprintf(sql, sizeof(sql), "CREATE TEMP TABLE report_records AS %s", records);
	if (run(&p->st, sql, NULL) < 0 ||
	    sql_connection_keys(sql, sizeof(sql), "report_records") < 0 ||
	    run(&p->st, sql, NULL) < 0 ||
	    run(&p->st, "CREATE INDEX temp.report_sockets ON report_records (sock_cookie, host,"
			" conn)",
		NULL) < 0 ||
	    sql_connections(conn, sizeof(conn), SQL_ORDER_SCAN, "report_records", "") < 0)
		return NULL;
	snprintf(sql, sizeof(sql), "CREATE TABLE main.part AS %s", conn);
	if (run(&p->st, sql, NULL) < 0 || run(&p->st, "COMMIT", NULL) < 0)
		return NULL;
	p->rc = 0;
	return NULL;
}

/*
 * report_connections of the range (where) in SQLite, aggregated in parts;
 * meanwhile the main connection runs the queries of raw records (raw).
 * 0 or -1.
 */
static int sqlite_connections(struct store *st, const char *where,
			      const struct raw_queries *raw)
{
	struct part parts[PARTS_MAX] = {0};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int count = cpus < 1 ? 1 : cpus > PARTS_MAX ? PARTS_MAX : (int)cpus, started = 0, rc = 0;

	for (int i = 0; i < count && rc == 0; i++) {
		parts[i].index = i;
		parts[i].count = count;
		parts[i].where = where;
		rc = part_open(&parts[i], st);
	}
	/* the main connection's raw queries in a read transaction begun just after theirs */
	if (rc == 0 && (run(st, "COMMIT", NULL) < 0 || run(st, "BEGIN", NULL) < 0 ||
			run(st, "SELECT count(*) FROM sqlite_master", NULL) < 0))
		rc = -1;
	for (; rc == 0 && started < count; started++)
		if ((errno = pthread_create(&parts[started].thread, NULL, part_main,
					    &parts[started])) != 0) {
			fprintf(stderr, "tcp-audit report: cannot start a thread: %s\n",
				strerror(errno));
			rc = -1;
			break;
		}
	if (rc == 0 && raw_queries(st, raw) < 0)
		rc = -1;
	for (int i = 0; i < started; i++) {
		pthread_join(parts[i].thread, NULL);
		if (parts[i].rc < 0)
			rc = -1;
	}
	/* (no ATTACH within a transaction; what follows reads temporary tables only) */
	st->parts = count;
	if (rc == 0 && (run(st, "COMMIT", NULL) < 0 ||
			attach_parts(st, "CREATE TEMP TABLE report_connections AS") < 0))
		rc = -1;
	if (rc < 0)
		st->parts = 0;
	/* the main connection's attachments keep the memdbs (for list_start()) */
	for (int i = 0; i < count; i++)
		close_store(&parts[i].st);
	return rc;
}

/*
 * A query of report_connections on a connection of its own, in a thread,
 * while the main connection runs the others: the list of every connection
 * (JSON) takes as long as all the summaries.  Its connections are the
 * parts' (a view of the memdbs the main connection copied).
 */
struct list_query {
	struct store st;
	const char *sql;
	struct table *t;
	int rc;
	pthread_t thread;
};

static void *list_main(void *arg)
{
	struct list_query *q = arg;

	q->rc = run(&q->st, q->sql, q->t);
	return NULL;
}

/* Starts q (sql into t) beside main; 0, or -1 (then run it on main). */
static int list_start(struct list_query *q, const struct store *main_st, const char *sql,
		      struct table *t)
{
	if (main_st->parts < 1)
		return -1;
	*q = (struct list_query){.sql = sql, .t = t, .rc = -1};
	store_beside(&q->st, main_st, "list: ");
	q->st.parts = main_st->parts;
	if (sqlite3_open_v2(":memory:", &q->st.lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI,
			    NULL) != SQLITE_OK)
		goto fail;
	if (attach_parts(&q->st, "CREATE TEMP VIEW report_connections AS") < 0 ||
	    pthread_create(&q->thread, NULL, list_main, q) != 0)
		goto fail;
	return 0;
fail:
	close_store(&q->st);
	q->st.lite = NULL;
	return -1;
}

/* Waits for q; its result. */
static int list_end(struct list_query *q)
{
	pthread_join(q->thread, NULL);
	close_store(&q->st);
	return q->rc;
}
#endif

#define FAILED "('refused', 'timed-out', 'unreachable')"
#define TIME_WAIT_PATH                                                                          \
	"(states LIKE '%FIN-WAIT-2 CLOSED' OR states LIKE '%CLOSING CLOSED'"                   \
	" OR states LIKE '%TIME-WAIT CLOSED')"

static int fill(struct store *st, struct report *rp)
{
	char where[768], host[300] = "", sql[40000];
	struct table *t = rp->t;

	if (rp->host) {
		char lit[280];
		sql_literal(rp->host, lit, sizeof(lit));
		snprintf(host, sizeof(host), " AND host = %s", lit);
	}
	/*
	 * SQLite: the range as a range of uids as well (a uid begins with the
	 * time, and uids are what the table has an index of).
	 */
	int n = snprintf(where, sizeof(where),
			 " AND time_ns >= %" PRIu64 " AND time_ns < %" PRIu64 "%s", rp->since,
			 rp->until, host);
	if (st->order == SQL_ORDER_SCAN)
		snprintf(where + n, sizeof(where) - (size_t)n,
			 " AND uid >= '%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "' AND uid < '%08" PRIx64
			 "-%04" PRIx64 "-%04" PRIx64 "'",
			 rp->since >> 32, (rp->since >> 16) & 0xffff, rp->since & 0xffff,
			 rp->until >> 32, (rp->until >> 16) & 0xffff, rp->until & 0xffff);
	struct raw_queries raw = {.rp = rp, .where = where};
	if (st->order == SQL_ORDER_SCAN) {
#if TCP_AUDIT_VERIFY_SQLITE
		if (sqlite_connections(st, where, &raw) < 0)
			return -1;
#endif
	} else {
		char conn[32768];
		if (sql_connections(conn, sizeof(conn), st->order, st->events, where) < 0)
			return -1;
		snprintf(sql, sizeof(sql), "CREATE TEMP TABLE report_connections AS %s", conn);
		if (run(st, sql, NULL) < 0 || raw_queries(st, &raw) < 0)
			return -1;
	}
	/* the rate's interval: about 60 of them over what the range holds */
	static const struct column two[] = {INT("first"), INT("last")};
	struct table opened = {.cols = two, .ncols = 2};
	if (run(st, "SELECT min(opened_ns), max(opened_ns) FROM report_connections", &opened) < 0)
		return -1;
	bool any = opened.rows == 1 && cell(&opened, 0, 0);
	uint64_t first = any ? cell_u64(&opened, 0, 0) : 0, last = any ? cell_u64(&opened, 0, 1) : 0;
	free_table(&opened);
	static const uint64_t steps[] = {1, 10, 60, 300, 900, 3600, 6 * 3600, 86400};
	uint64_t span = last - first;
	uint64_t start = rp->has_since ? rp->since : any ? first : rp->until;
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		rp->bucket_ns = steps[i] * NS;
		if (span / rp->bucket_ns < 60)
			break;
	}
	start -= start % rp->bucket_ns;

	const char *const queries[T_N] = {
		[T_CONNECTIONS] = "SELECT host, sock_cookie, side, saddr, sport, daddr, dport,"
				  " owner_pid, owner_comm, opened_ns, closed_ns, closed_ns - opened_ns,"
				  " outcome, error, states FROM report_connections"
				  " ORDER BY opened_ns, host, sock_cookie, conn",
		[T_TROUBLE] = "SELECT opened_ns, outcome, side, owner_comm, saddr, sport, daddr,"
			      " dport, states FROM report_connections WHERE outcome <> 'closed'"
			      " ORDER BY opened_ns, host, sock_cookie, conn",
		[T_OUTCOMES] = "SELECT coalesce(side, 'unknown'), outcome, count(*)"
			       " FROM report_connections GROUP BY side, outcome ORDER BY 1, 2",
		[T_FAILED_DEST] = "SELECT daddr, dport, outcome, count(*) AS n, min(opened_ns),"
				  " max(opened_ns) FROM report_connections WHERE side = 'client'"
				  " AND outcome IN " FAILED " GROUP BY daddr, dport, outcome"
				  " ORDER BY n DESC, daddr, dport, outcome",
		[T_FAILED_PROC] = "SELECT owner_comm, owner_pid, outcome, count(*) AS n,"
				  " count(DISTINCT daddr) FROM report_connections"
				  " WHERE side = 'client' AND outcome IN " FAILED
				  " GROUP BY owner_comm, owner_pid, outcome"
				  " ORDER BY n DESC, owner_comm, owner_pid, outcome",
		[T_TIME_WAIT] = "SELECT daddr, dport, sum(n) AS total, max(n) FROM"
				" (SELECT daddr, dport, closed_ns / 60000000000 AS minute,"
				" count(*) AS n FROM report_connections WHERE " TIME_WAIT_PATH
				" GROUP BY daddr, dport, minute) per_minute"
				" GROUP BY daddr, dport ORDER BY total DESC, daddr, dport",
		/* the open ones (no duration) last */
		[T_DURATIONS] = "SELECT CASE WHEN d IS NULL THEN 'open' WHEN d < 1000000 THEN '< 1 ms'"
				" WHEN d < 10000000 THEN '1-10 ms' WHEN d < 100000000 THEN '10-100 ms'"
				" WHEN d < 1000000000 THEN '0.1-1 s' WHEN d < 10000000000 THEN '1-10 s'"
				" WHEN d < 100000000000 THEN '10-100 s' ELSE '100 s or more' END AS label,"
				" count(*) FROM (SELECT closed_ns - opened_ns AS d FROM report_connections"
				" WHERE side IS NULL OR side <> 'listener') c"
				" GROUP BY label ORDER BY min(coalesce(d, 9223372036854775807))",
		[T_TALKERS] = "SELECT owner_comm, daddr, dport, count(*) AS n,"
			      " sum(CASE WHEN outcome IN " FAILED " THEN 1 ELSE 0 END)"
			      " FROM report_connections WHERE side = 'client'"
			      " GROUP BY owner_comm, daddr, dport ORDER BY n DESC, owner_comm,"
			      " daddr, dport",
		/* the HTML timeline's lanes: processes by their connections */
		[T_LANES] = "SELECT coalesce(owner_comm, '(no owner)') AS comm, count(*) AS n"
			    " FROM report_connections GROUP BY comm ORDER BY n DESC, comm",
	};
	bool listing = false; /* SQLite: every connection listed beside the rest */
#if TCP_AUDIT_VERIFY_SQLITE
	struct list_query list;
	if (rp->format != FORMAT_TEXT &&
	    list_start(&list, st, queries[T_CONNECTIONS], &t[T_CONNECTIONS]) == 0)
		listing = true;
#endif
	int rc = 0;
	for (int i = 0; i < T_N && rc == 0; i++) {
		/*
		 * Every connection is for JSON and HTML (its timeline); text and HTML
		 * list those that did not close well.
		 */
		if (!queries[i] || (i == T_CONNECTIONS && (rp->format == FORMAT_TEXT || listing)) ||
		    (i == T_TROUBLE && rp->format == FORMAT_JSON) ||
		    (i == T_LANES && rp->format != FORMAT_HTML))
			continue;
		rc = run(st, queries[i], &t[i]);
	}
	snprintf(sql, sizeof(sql),
		 "SELECT CASE WHEN states LIKE '%% CLOSE-WAIT' THEN 'CLOSE-WAIT' ELSE 'SYN-RECEIVED'"
		 " END, last_ns, %" PRIu64 " - last_ns,"
		 " owner_pid, owner_comm, saddr, sport, daddr, dport, sock_cookie"
		 " FROM report_connections WHERE (states LIKE '%% CLOSE-WAIT'"
		 " OR states LIKE '%% SYN-RECEIVED') AND last_ns < %" PRIu64
		 " ORDER BY last_ns, host, sock_cookie, conn",
		 rp->until, rp->until - (rp->until > rp->stuck_ns ? rp->stuck_ns : rp->until));
	if (rc == 0)
		rc = run(st, sql, &t[T_STUCK]);
	snprintf(sql, sizeof(sql),
		 "SELECT %" PRIu64 " + (opened_ns - %" PRIu64 ") / %" PRIu64 " * %" PRIu64 " AS b,"
		 " count(*), sum(CASE WHEN outcome IN " FAILED " THEN 1 ELSE 0 END),"
		 " sum(CASE WHEN outcome = 'reset' THEN 1 ELSE 0 END) FROM report_connections"
		 " WHERE side IS NULL OR side <> 'listener' GROUP BY b ORDER BY b",
		 start, start, rp->bucket_ns, rp->bucket_ns);
	if (rc == 0)
		rc = run(st, sql, &t[T_RATE]);
#if TCP_AUDIT_VERIFY_SQLITE
	if (listing && list_end(&list) < 0)
		rc = -1;
#endif
	return rc;
}

static uint64_t count_outcome(const struct report *rp, const char *outcome)
{
	const struct table *t = &rp->t[T_OUTCOMES];
	uint64_t n = 0;

	for (size_t r = 0; r < t->rows; r++)
		if (!outcome || strcmp(cell(t, r, 1), outcome) == 0)
			n += strtoull(cell(t, r, 2), NULL, 10);
	return n;
}

static const char *const outcomes[] = {"closed", "reset",   "refused", "timed-out",
				       "unreachable", "open"};

static void header_times(const struct report *rp, char since[RFC3339_NS_LEN + 1],
			 char until[RFC3339_NS_LEN + 1])
{
	time_text(rp->since, since);
	time_text(rp->until, until);
}

static void write_json(FILE *f, const struct report *rp)
{
	char since[RFC3339_NS_LEN + 1], until[RFC3339_NS_LEN + 1];
	uint64_t lost = 0;

	header_times(rp, since, until);
	for (size_t r = 0; r < rp->t[T_GAPS].rows; r++)
		lost += strtoull(cell(&rp->t[T_GAPS], r, 3) ? cell(&rp->t[T_GAPS], r, 3) : "0",
				 NULL, 10);
	fputs("{\"report\":1,\"source\":", f);
	json_string(f, rp->source);
	fputs(",\"since\":", f);
	if (rp->has_since)
		json_string(f, since);
	else
		fputs("null", f);
	fputs(",\"until\":", f);
	json_string(f, until);
	fputs(",\"host\":", f);
	if (rp->host)
		json_string(f, rp->host);
	else
		fputs("null", f);
	fprintf(f, ",\"stuck_s\":%.9g,\"rate_interval_s\":%" PRIu64, (double)rp->stuck_ns / NS,
		rp->bucket_ns / NS);
	fprintf(f, ",\n\"totals\":{\"connections\":%" PRIu64, count_outcome(rp, NULL));
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		fprintf(f, ",\"%s\":%" PRIu64, outcomes[i], count_outcome(rp, outcomes[i]));
	fprintf(f, ",\"gaps\":%zu,\"lost\":%" PRIu64 "}", rp->t[T_GAPS].rows, lost);
	for (int i = 0; i < T_N; i++)
		if (i != T_TROUBLE && i != T_LANES)
			json_table(f, &rp->t[i]);
	fputs("\n}\n", f);
}

static void write_text(FILE *f, const struct report *rp)
{
	char since[RFC3339_NS_LEN + 1], until[RFC3339_NS_LEN + 1];
	uint64_t total = count_outcome(rp, NULL);

	header_times(rp, since, until);
	fprintf(f, "tcp-audit report of %s\n%s%s to %s%s%s\n", rp->source,
		rp->has_since ? "from " : "from the start", rp->has_since ? since : "", until,
		rp->host ? ", host " : "", rp->host ? rp->host : "");
	fprintf(f, "\n%" PRIu64 " connection%s:", total, total == 1 ? "" : "s");
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		fprintf(f, "%s %" PRIu64 " %s", i ? "," : "", count_outcome(rp, outcomes[i]),
			outcomes[i]);
	fputc('\n', f);
	if (rp->t[T_GAPS].rows)
		fprintf(f, "WARNING: the archive records loss in this range (%zu gap record%s "
			   "below): what it lost is not in this report\n",
			rp->t[T_GAPS].rows, rp->t[T_GAPS].rows == 1 ? "" : "s");
	else
		fputs("No loss recorded in this range: the archive holds every event of it.\n", f);
	text_table(f, &rp->t[T_OUTCOMES], "none");
	text_table(f, &rp->t[T_TROUBLE], "none: every connection closed normally");
	text_table(f, &rp->t[T_FAILED_DEST], "none");
	text_table(f, &rp->t[T_FAILED_PROC], "none");
	text_table(f, &rp->t[T_RESETS], "none");
	text_table(f, &rp->t[T_STUCK], "none");
	text_table(f, &rp->t[T_TIME_WAIT], "none");
	text_table(f, &rp->t[T_TALKERS], "none");
	text_table(f, &rp->t[T_RATE], "none");
	text_table(f, &rp->t[T_DURATIONS], "none");
	text_table(f, &rp->t[T_GAPS], "none");
}

/* ------------------------------------------------------------------------ */
/* HTML: one page, nothing fetched from anywhere, charts as inline SVG       */

#define SVG_W 960       /* chart width, px */
#define LANES 12        /* processes in the timeline */
#define LANE_BARS 400   /* connections drawn per lane at most */
#define LANE_ROWS 20    /* rows of bars in a lane */
#define HTML_ROWS 1000  /* rows of a table in HTML; JSON has them all */

static const char *const outcome_colors[] = {"#43a047", "#fb8c00", "#e53935",
					     "#8e24aa", "#6d4c41", "#1e88e5"};

static const char *outcome_color(const char *outcome)
{
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		if (outcome && strcmp(outcome, outcomes[i]) == 0)
			return outcome_colors[i];
	return "#9e9e9e";
}

static void html_text(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

static void html_table(FILE *f, const struct table *t, const char *empty)
{
	char buf[512];

	fputs("<h2>", f);
	html_text(f, t->title);
	fputs("</h2>\n", f);
	if (!t->rows) {
		fprintf(f, "<p class=\"none\">%s</p>\n", empty);
		return;
	}
	fputs("<table><tr>", f);
	for (int i = 0; i < t->ncols; i++)
		fprintf(f, "<th>%s</th>", t->cols[i].key);
	fputs("</tr>\n", f);
	for (size_t r = 0; r < t->rows && r < HTML_ROWS; r++) {
		fputs("<tr>", f);
		for (int i = 0; i < t->ncols; i++) {
			bool num = t->cols[i].type == COL_INT || t->cols[i].type == COL_SECONDS;
			show(&t->cols[i], cell(t, r, i), buf, sizeof(buf));
			fputs(num ? "<td class=\"n\">" : "<td>", f);
			if (strcmp(t->cols[i].key, "outcome") == 0)
				fprintf(f, "<span style=\"color:%s\">&#9632;</span> ",
					outcome_color(cell(t, r, i)));
			html_text(f, buf);
			fputs("</td>", f);
		}
		fputs("</tr>\n", f);
	}
	fputs("</table>\n", f);
	if (t->rows > HTML_ROWS)
		fprintf(f, "<p class=\"none\">... %zu more (--format json has them all)</p>\n",
			t->rows - HTML_ROWS);
}

static void svg_time_label(FILE *f, double x, double y, const char *anchor, uint64_t ns)
{
	char t[RFC3339_NS_LEN + 1];

	time_text(ns, t);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">%.19sZ</text>\n", x, y, anchor,
		t);
}

/* Connections opened per interval, stacked: failed, reset, the rest. */
static void html_rate(FILE *f, const struct report *rp)
{
	const struct table *t = &rp->t[T_RATE];
	const int h = 180, top = 10, bottom = 30, left = 50;
	uint64_t max = 1;

	fputs("<h2>Connections opened over time</h2>\n", f);
	if (!t->rows) {
		fputs("<p class=\"none\">none</p>\n", f);
		return;
	}
	uint64_t first = cell_u64(t, 0, 0), last = cell_u64(t, t->rows - 1, 0);
	size_t n = (size_t)((last - first) / rp->bucket_ns) + 1;
	for (size_t r = 0; r < t->rows; r++)
		if (cell_u64(t, r, 1) > max)
			max = cell_u64(t, r, 1);
	double w = (double)(SVG_W - left) / (double)n, scale = (double)(h - top - bottom) / max;
	fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" role=\"img\""
		   " aria-label=\"connections opened over time\">\n", SVG_W, h);
	fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", left,
		h - bottom, SVG_W, h - bottom);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%" PRIu64 "</text>\n", left - 4,
		top + 10, max);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n", left - 4, h - bottom);
	for (size_t r = 0; r < t->rows; r++) {
		uint64_t at = cell_u64(t, r, 0), opened = cell_u64(t, r, 1);
		uint64_t failed = cell_u64(t, r, 2), reset = cell_u64(t, r, 3);
		/* in the colours of closed, reset and refused */
		uint64_t parts[3] = {opened - failed - reset, reset, failed};
		double x = left + (double)((at - first) / rp->bucket_ns) * w, y = h - bottom;
		char when[RFC3339_NS_LEN + 1];
		time_text(at, when);
		fprintf(f, "<g><title>%.19sZ: %" PRIu64 " opened, %" PRIu64 " failed, %" PRIu64
			   " reset</title>",
			when, opened, failed, reset);
		for (int k = 0; k < 3; k++) {
			double bh = (double)parts[k] * scale;
			if (parts[k] == 0)
				continue;
			y -= bh;
			fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\""
				   " fill=\"%s\"/>",
				x, y, w > 2 ? w - 1 : w, bh, outcome_colors[k]);
		}
		fputs("</g>\n", f);
	}
	svg_time_label(f, left, h - 10, "start", first);
	svg_time_label(f, SVG_W, h - 10, "end", last + rp->bucket_ns);
	fputs("</svg>\n", f);
	fprintf(f, "<p class=\"legend\">Per %" PRIu64 " s: <span style=\"color:%s\">&#9632;</span>"
		   " closed or open, <span style=\"color:%s\">&#9632;</span> reset,"
		   " <span style=\"color:%s\">&#9632;</span> failed (refused, timed out,"
		   " unreachable)</p>\n",
		rp->bucket_ns / NS, outcome_colors[0], outcome_colors[1], outcome_colors[2]);
}

struct lane {
	const char *comm;
	size_t total, drawn;
};

/*
 * The timeline: a lane for each of the LANES busiest processes, a bar per
 * connection from its first transition to its close (to the end of the range
 * when it is still open), coloured by outcome; the ones that did not close
 * well are drawn first, then the rest in order while there is room.
 */
static void html_timeline(FILE *f, const struct report *rp)
{
	const struct table *t = &rp->t[T_CONNECTIONS];
	const int lane_h = LANE_ROWS * 3 + 8, left = 130, top = 10, bottom = 30;
	struct lane lanes[LANES];
	size_t nl = 0;

	fputs("<h2>Timeline of connections per process</h2>\n", f);
	if (!t->rows) {
		fputs("<p class=\"none\">none</p>\n", f);
		return;
	}
	/* the busiest processes (by owner_comm; unknown owners as one), from the store */
	const struct table *by_comm = &rp->t[T_LANES];
	for (; nl < LANES && nl < by_comm->rows; nl++)
		lanes[nl] = (struct lane){.comm = cell(by_comm, nl, 0),
					  .total = cell_u64(by_comm, nl, 1)};
	/* the range, or without --since / --until what the connections span */
	uint64_t t0 = rp->has_since ? rp->since : UINT64_MAX, t1 = rp->has_until ? rp->until : 0;
	for (size_t r = 0; r < t->rows; r++) {
		uint64_t a = cell_u64(t, r, 9), b = cell_u64(t, r, 10);
		t0 = !rp->has_since && a < t0 ? a : t0;
		t1 = !rp->has_until && (a > t1 || b > t1) ? (a > b ? a : b) : t1;
	}
	double scale = (double)(SVG_W - left) / (double)(t1 > t0 ? t1 - t0 : 1);
	int h = top + (int)nl * lane_h + bottom;
	fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" role=\"img\""
		   " aria-label=\"timeline of connections per process\">\n", SVG_W, h);
	for (size_t l = 0; l < nl; l++) {
		int y = top + (int)l * lane_h;
		fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"lane\"/>\n",
			left, y, SVG_W - left, lane_h - 4);
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 6,
			y + lane_h / 2);
		html_text(f, lanes[l].comm);
		fprintf(f, " (%zu)</text>\n", lanes[l].total);
	}
	/* two passes: connections that did not close well, then the others */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t r = 0; r < t->rows; r++) {
			const char *comm = cell(t, r, 8) ? cell(t, r, 8) : "(no owner)";
			const char *outcome = cell(t, r, 12);
			bool trouble = !outcome || strcmp(outcome, "closed") != 0;
			if (trouble != (pass == 0))
				continue;
			size_t l = 0;
			while (l < nl && strcmp(lanes[l].comm, comm) != 0)
				l++;
			if (l == nl || lanes[l].drawn >= LANE_BARS)
				continue;
			uint64_t a = cell_u64(t, r, 9), b = cell(t, r, 10) ? cell_u64(t, r, 10) : t1;
			double x = left + (double)(a > t0 ? a - t0 : 0) * scale;
			double w = (double)(b > a ? b - a : 0) * scale;
			int y = top + (int)l * lane_h + 3 + (int)(lanes[l].drawn % LANE_ROWS) * 3;
			fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"2\" fill=\"%s\">"
				   "<title>",
				x, y, w < 1 ? 1 : w, outcome_color(outcome));
			html_text(f, cell(t, r, 3));
			fprintf(f, ":%s &#8594; ", cell(t, r, 4) ? cell(t, r, 4) : "-");
			html_text(f, cell(t, r, 5));
			fprintf(f, ":%s, %s: ", cell(t, r, 6) ? cell(t, r, 6) : "-",
				outcome ? outcome : "-");
			html_text(f, cell(t, r, 14));
			fputs("</title></rect>\n", f);
			lanes[l].drawn++;
		}
	}
	svg_time_label(f, left, h - 10, "start", t0);
	svg_time_label(f, SVG_W, h - 10, "end", t1);
	fputs("</svg>\n<p class=\"legend\">", f);
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		fprintf(f, "<span style=\"color:%s\">&#9632;</span> %s ", outcome_colors[i],
			outcomes[i]);
	size_t drawn = 0;
	for (size_t l = 0; l < nl; l++)
		drawn += lanes[l].drawn;
	fprintf(f, "&#8212; %zu of %zu connections drawn (at most %d a process, those that"
		   " did not close normally first)%s</p>\n",
		drawn, t->rows, LANE_BARS, by_comm->rows > nl ? "; the busiest processes only" : "");
}

/* The durations as a bar chart (the same buckets as the table). */
static void html_durations(FILE *f, const struct report *rp)
{
	const struct table *t = &rp->t[T_DURATIONS];
	const int h = 160, top = 10, bottom = 30, left = 50, bar = 90;
	uint64_t max = 1;

	fputs("<h2>Connection durations</h2>\n", f);
	if (!t->rows) {
		fputs("<p class=\"none\">none</p>\n", f);
		return;
	}
	for (size_t r = 0; r < t->rows; r++)
		if (cell_u64(t, r, 1) > max)
			max = cell_u64(t, r, 1);
	double scale = (double)(h - top - bottom) / max;
	fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" role=\"img\""
		   " aria-label=\"connection durations\">\n", left + (int)t->rows * bar, h);
	for (size_t r = 0; r < t->rows; r++) {
		uint64_t n = cell_u64(t, r, 1);
		double bh = (double)n * scale;
		int x = left + (int)r * bar;
		bool open = strcmp(cell(t, r, 0), "open") == 0;
		fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\">"
			   "<title>%" PRIu64 "</title></rect>",
			x, h - bottom - bh, bar - 10, bh, open ? outcome_colors[5] : "#546e7a", n);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\">%" PRIu64 "</text>",
			x + (bar - 10) / 2, h - bottom - bh - 3 < 10 ? 10 : h - bottom - bh - 3, n);
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", x + (bar - 10) / 2,
			h - 10);
		html_text(f, cell(t, r, 0));
		fputs("</text>\n", f);
	}
	fputs("</svg>\n", f);
}

static void write_html(FILE *f, const struct report *rp)
{
	char since[RFC3339_NS_LEN + 1], until[RFC3339_NS_LEN + 1];
	uint64_t total = count_outcome(rp, NULL);

	header_times(rp, since, until);
	fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
	      "<meta name=\"viewport\" content=\"width=device-width\">\n<title>tcp-audit report: ",
	      f);
	html_text(f, rp->source);
	fputs("</title>\n<style>\n"
	      "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#212121;max-width:1000px}\n"
	      "h1{font-size:22px}h2{font-size:17px;margin:28px 0 6px}\n"
	      "table{border-collapse:collapse;font-size:13px}\n"
	      "th,td{padding:2px 10px;border-bottom:1px solid #e0e0e0;text-align:left;"
	      "white-space:nowrap}\n"
	      "td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
	      ".warn{background:#ffebee;border:1px solid #c62828;padding:8px}\n"
	      ".ok{color:#2e7d32}.none,.legend{color:#616161;font-size:13px}\n"
	      "svg.chart{font-size:11px;fill:#424242;overflow:visible}\n"
	      ".axis{stroke:#9e9e9e}.lane{fill:#f5f5f5}\n"
	      "</style>\n</head>\n<body>\n<h1>tcp-audit report</h1>\n<p>", f);
	html_text(f, rp->source);
	fprintf(f, "<br>%s%s to %s", rp->has_since ? "from " : "from the start",
		rp->has_since ? since : "", until);
	if (rp->host) {
		fputs(", host ", f);
		html_text(f, rp->host);
	}
	fprintf(f, "</p>\n<p><b>%" PRIu64 " connection%s</b>:", total, total == 1 ? "" : "s");
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
		fprintf(f, "%s <span style=\"color:%s\">&#9632;</span> %" PRIu64 " %s",
			i ? "," : "", outcome_colors[i], count_outcome(rp, outcomes[i]),
			outcomes[i]);
	fputs("</p>\n", f);
	if (rp->t[T_GAPS].rows)
		fprintf(f, "<p class=\"warn\">The archive records loss in this range (%zu gap "
			   "record%s below): what it lost is not in this report.</p>\n",
			rp->t[T_GAPS].rows, rp->t[T_GAPS].rows == 1 ? "" : "s");
	else
		fputs("<p class=\"ok\">No loss recorded in this range: the archive holds every "
		      "event of it.</p>\n", f);
	html_rate(f, rp);
	html_timeline(f, rp);
	html_durations(f, rp);
	html_table(f, &rp->t[T_OUTCOMES], "none");
	html_table(f, &rp->t[T_TROUBLE], "none: every connection closed normally");
	html_table(f, &rp->t[T_FAILED_DEST], "none");
	html_table(f, &rp->t[T_FAILED_PROC], "none");
	html_table(f, &rp->t[T_RESETS], "none");
	html_table(f, &rp->t[T_STUCK], "none");
	html_table(f, &rp->t[T_TIME_WAIT], "none");
	html_table(f, &rp->t[T_TALKERS], "none");
	html_table(f, &rp->t[T_GAPS], "none");
	fputs("<p class=\"none\">Made by tcp-audit " TCP_AUDIT_VERSION ".</p>\n</body>\n</html>\n",
	      f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tcp-audit report: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see tcp-audit report --help)\n");
	return EXIT_USAGE;
}

static void help(void)
{
	printf("Usage: tcp-audit report SOURCE [--since T] [--until T] [--host H] [--stuck S]\n"
	       "                        [--format text|json|html] [-o FILE] [-v]\n"
	       "\n"
	       "What happened to the connections of an archive in a time range: one entry per\n"
	       "socket (its path of states and its outcome: closed, reset, refused, timed-out,\n"
	       "unreachable, open), failed connects by destination and by process, resets by\n"
	       "peer, sockets stuck in CLOSE-WAIT or SYN-RECEIVED, TIME-WAIT per destination,\n"
	       "top talkers, the connection rate, and the archive's gap records (loss).\n"
	       "\n"
	       "  SOURCE            an SQLite file of the sqlite sink, or a PostgreSQL URI or\n"
	       "                    connection string (postgresql://..., dbname=...)\n"
	       "  --since T         from T (default: the archive's start)\n"
	       "  --until T         to T, not included (default: now)\n"
	       "                    T: 2026-12-01T10:00:00Z (RFC 3339, any offset),\n"
	       "                    \"2026-12-01 10:00\" or 2026-12-01 (UTC), now, or -N with\n"
	       "                    s, m, h or d for that long before now (-1h)\n"
	       "  --host H          the events of host H only (default: every host)\n"
	       "  --stuck SECONDS   a socket in CLOSE-WAIT or SYN-RECEIVED longer than this at\n"
	       "                    the end of the range is stuck (default %d)\n"
	       "  --format F        text (default: tables within 100 columns, at most %d rows\n"
	       "                    each), json (everything; the README documents it) or html\n"
	       "                    (one page, no network needed: charts and the tables)\n"
	       "  -o FILE           write there (mode 0640) instead of stdout\n"
	       "  -v, --verbose     each query's time on stderr; twice: with its whole SQL\n"
	       "\n"
	       "Exit status: 0 with a report, 2 when the archive cannot be read or the\n"
	       "arguments are wrong.\n",
	       STUCK_DEFAULT_S, TEXT_ROWS);
}

int report_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"since", required_argument, NULL, 's'}, {"until", required_argument, NULL, 'u'},
		{"host", required_argument, NULL, 'H'},  {"stuck", required_argument, NULL, 'k'},
		{"format", required_argument, NULL, 'f'}, {"output", required_argument, NULL, 'o'},
		{"verbose", no_argument, NULL, 'v'},     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct report rp = {
		.t = {
			[T_CONNECTIONS] = TABLE("connections", "Connections", connection_cols),
			[T_TROUBLE] = TABLE("trouble", "Connections that did not close normally",
					    trouble_cols),
			[T_OUTCOMES] = TABLE("outcomes", "Connections by side and outcome",
					     outcome_cols),
			[T_FAILED_DEST] = TABLE("failed_by_destination",
						"Failed connects by destination", failed_dest_cols),
			[T_FAILED_PROC] = TABLE("failed_by_process", "Failed connects by process",
						failed_proc_cols),
			[T_RESETS] = TABLE("resets_by_peer", "Resets by peer", resets_cols),
			[T_STUCK] = TABLE("stuck", "Sockets stuck in CLOSE-WAIT or SYN-RECEIVED",
					  stuck_cols),
			[T_TIME_WAIT] = TABLE("time_wait_by_destination",
					      "TIME-WAIT by destination (this host closed first)",
					      time_wait_cols),
			[T_TALKERS] = TABLE("top_talkers", "Top talkers (process -> destination)",
					    talker_cols),
			[T_RATE] = TABLE("rate", "Connections opened over time", rate_cols),
			[T_DURATIONS] = TABLE("durations", "Connection durations (listeners left out)",
					      duration_cols),
			[T_GAPS] = TABLE("gaps", "Gap records (events the archive lost)", gap_cols),
			[T_LANES] = TABLE("lanes", "Connections by process", lane_cols),
		},
	};
	const char *output = NULL, *since = NULL, *until = NULL;
	double stuck_s = STUCK_DEFAULT_S;
	int verbose = 0;
	uint64_t now = clock_now_ns(CLOCK_REALTIME);
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "ho:v", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			since = optarg;
			break;
		case 'u':
			until = optarg;
			break;
		case 'H':
			if (!*optarg || strlen(optarg) > 255)
				return usage_error("--host: give a host name");
			rp.host = optarg;
			break;
		case 'k': {
			char *end;
			stuck_s = strtod(optarg, &end);
			if (end == optarg || *end || !(stuck_s >= 0) || stuck_s > 1e9)
				return usage_error("--stuck: %s is not a number of seconds", optarg);
			break;
		}
		case 'f':
			if (strcmp(optarg, "text") == 0)
				rp.format = FORMAT_TEXT;
			else if (strcmp(optarg, "json") == 0)
				rp.format = FORMAT_JSON;
			else if (strcmp(optarg, "html") == 0)
				rp.format = FORMAT_HTML;
			else
				return usage_error("--format: %s is not text, json or html", optarg);
			break;
		case 'o':
			output = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			help();
			return 0;
		case '?':
			if (optopt)
				return usage_error("-%c needs an argument", optopt);
			/* fall through */
		default:
			return usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return usage_error(optind == argc ? "give the archive to report on"
						  : "one archive at a time");
	rp.source = argv[optind];
	rp.until = now;
	if (since && parse_when(since, now, &rp.since) < 0)
		return usage_error("--since: %s is not a time", since);
	if (until && parse_when(until, now, &rp.until) < 0)
		return usage_error("--until: %s is not a time", until);
	if (rp.since >= rp.until)
		return usage_error("--since must come before --until");
	rp.has_since = since != NULL;
	rp.has_until = until != NULL;
	rp.stuck_ns = (uint64_t)(stuck_s * NS);

	/*
	 * -o: a temporary file beside FILE first (a directory that cannot take
	 * it fails before any query), renamed over FILE once the report is whole,
	 * so that a failure never leaves FILE cut short.
	 */
	char tmp[4096] = "";
	FILE *f = stdout;
	if (output) {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", output) >= (int)sizeof(tmp))
			return usage_error("-o: %s is too long", output);
		int fd = mkostemp(tmp, O_CLOEXEC);
		if (fd < 0 || fchmod(fd, 0640) < 0 || !(f = fdopen(fd, "w"))) {
			fprintf(stderr, "tcp-audit report: cannot write %s: %s\n", output,
				strerror(errno));
			if (fd >= 0) {
				close(fd);
				unlink(tmp);
			}
			return EXIT_USAGE;
		}
	}
	/*
	 * A report can be tens of MB: written in 1 MiB pieces, through a pipe
	 * that holds as much where it may (as 4 KiB writes into a 64 KiB pipe,
	 * the reader's wake-ups cost a JSON report 0.3 s)
	 */
	static char out_buf[1 << 20];
	setvbuf(f, out_buf, _IOFBF, sizeof(out_buf));
	struct stat out_st;
	if (!output && fstat(STDOUT_FILENO, &out_st) == 0 && S_ISFIFO(out_st.st_mode))
		(void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, (int)sizeof(out_buf));
#if TCP_AUDIT_VERIFY_SQLITE
	/*
	 * No count of the memory SQLite holds: it takes a lock all threads
	 * share for every allocation, and made the threads of
	 * sqlite_connections() slower than one.  Before SQLite's first use.
	 */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
#endif
	struct store st = {.source = rp.source, .verbose = verbose};
	int status = open_store(&st);
	rp.source = st.name;
	if (status == 0 && fill(&st, &rp) < 0)
		status = EXIT_USAGE;
	close_store(&st);
	if (status == 0) {
		if (rp.format == FORMAT_JSON)
			write_json(f, &rp);
		else if (rp.format == FORMAT_HTML)
			write_html(f, &rp);
		else
			write_text(f, &rp);
		if (fflush(f) != 0 || ferror(f)) {
			fprintf(stderr, "tcp-audit report: cannot write %s: %s\n",
				output ? output : "the report", strerror(errno));
			status = EXIT_USAGE;
		}
	}
	if (output) {
		if (fclose(f) != 0 && status == 0) {
			fprintf(stderr, "tcp-audit report: cannot write %s: %s\n", output,
				strerror(errno));
			status = EXIT_USAGE;
		}
		if (status == 0 && rename(tmp, output) < 0) {
			fprintf(stderr, "tcp-audit report: cannot write %s: %s\n", output,
				strerror(errno));
			status = EXIT_USAGE;
		}
		if (status != 0)
			unlink(tmp);
	}
	for (int i = 0; i < T_N; i++)
		free_table(&rp.t[i]);
	return status;
}
