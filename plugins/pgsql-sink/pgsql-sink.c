/* SPDX-License-Identifier: MIT */
/*
 * pgsql sink: events into PostgreSQL, one compact row per event in
 * tcp_audit_events (schema v2), with the original's tables (tcp_events,
 * tcp_events_socket_info) and ours (tcp_audit_gaps, tcp_audit_snapshots,
 * tcp_audit_resets) as views over it.
 *
 * Ingest is one transaction per batch of one binary COPY.  The table is
 * partitioned by time into chunks (an hour, or a day with partition=day):
 * per row the server maintains only the primary key (uid, time_ns), whose
 * uid starts with the time so it appends, and BRIN summaries (time, the
 * view's timestamp and uid, the socket cookie), which cost next to nothing
 * on rows that arrive in time order.  The B-trees that lookups by
 * destination, owner, cookie and uid want are built once per chunk, when it
 * closes (when events an hour past its end have been written), by sorting
 * it: a B-tree maintained per row at random keys costs more than the
 * insert itself.  A batch that meets events already stored (retried after a
 * lost connection, whether its COMMIT made it or not; a replayed file) goes
 * again through a staging table and INSERT ... ON CONFLICT DO NOTHING: each
 * event once.
 *
 * Connection: the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
 * PGPASSWORD, PGPASSFILE, PGSSLMODE, ...) as in the original, or conninfo=.
 * Messages name the store as user@host:port/dbname and never hold a password.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>

#include <tcp-audit/plugin.h>

#include "byte-buffer.h"
#include "event-text.h"
#include "event-uid.h"
#include "kernel-helpers.h"
#include "sql-case.h"

#define SCHEMA_VERSION 2
#define RECONNECT_MIN_NS 500000000ull
#define HOUR_NS 3600000000000ull
#define DAY_NS 86400000000000ull
#define RETENTION_EVERY_NS 3600000000000ull
/* a chunk closes once events this much past its end arrive; later ones still go in */
#define CLOSE_AFTER_NS 600000000000ull
#define MIGRATE_SLICE 100000
#define SUMMARIZE_EVERY_NS 60000000000ull /* the open chunk's BRIN summaries */
#define ANALYZE_AFTER_ROWS 10000          /* ... and its statistics, once */

enum { PARTITION_DEFAULT, PARTITION_HOUR, PARTITION_DAY, PARTITION_NONE };

struct pgsql_config {
	const char *conninfo;
	int partition;
	int64_t retention;
};

#define KNOWN_CHUNKS 16
#define MAX_OPEN_CHUNKS 64

struct pgsql_sink {
	const struct tcp_audit_host *host;
	const struct pgsql_config *cfg;
	PGconn *conn;
	char store[256];   /* user@host:port/db, for messages */
	char *secret;      /* a password to keep out of messages */
	bool down;         /* in an outage: logged once */
	bool refused;      /* batches refused for now (a full disk, ...): logged once */
	bool set_up;       /* tables checked/migrated on this store */
	uint64_t next_try; /* CLOCK_MONOTONIC ns of the next reconnect */
	struct byte_buffer out; /* COPY data of a batch */
	char sqlstate[6]; /* of the batch's first failed statement, "" for none */
	uint64_t chunk_ns; /* length of a chunk (partition) */
	int64_t known[KNOWN_CHUNKS]; /* chunks (time_ns / chunk_ns) whose partitions exist */
	unsigned n_known;
	int64_t open_chunks[MAX_OPEN_CHUNKS]; /* partitions without their lookup indexes */
	unsigned n_open;
	bool open_overflow; /* more than MAX_OPEN_CHUNKS: ask the catalog again */
	uint64_t newest;         /* the newest event time written */
	uint64_t next_retention; /* CLOCK_MONOTONIC ns of the next retention pass */
	uint64_t next_summary;   /* CLOCK_MONOTONIC ns of the next summary of the open chunk */
	int64_t head;            /* the chunk of the newest events */
	uint64_t head_rows, head_summarized; /* rows written to it, and when last summarized */
	bool head_analyzed;
	bool seals_table;  /* --seal: tcp_audit_seals exists */
	uint8_t *uids;     /* --seal: the batch's uids, for the seal's row */
	size_t uids_cap;
};

/*
 * --seal: one row per seal, beside the events, in the batch's transaction;
 * uids: the 16-byte uids of the batch's events in its order, so that
 * tcp-audit verify finds them (an event stored by an earlier batch is that
 * row).  A retried batch comes with the same seal: ON CONFLICT DO NOTHING.
 */
static const char *const seals_sql =
	"CREATE TABLE IF NOT EXISTS tcp_audit_seals (run text NOT NULL, idx bigint NOT NULL,"
	" time_ns bigint NOT NULL, count integer NOT NULL, seal text NOT NULL, uids bytea,"
	" PRIMARY KEY (run, idx))";

static const struct tcp_audit_option pgsql_options[] = {
	{.key = "conninfo",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "libpq connection string or URI (default: the PG* environment variables)",
	 .offset = offsetof(struct pgsql_config, conninfo)},
	{.key = "partition",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "default",
	 .choices = "default|hour|day|none",
	 .help = "length of the time chunks tcp_audit_events is partitioned into, for a new "
		 "database (default: hour; an existing database keeps its own; none: as "
		 "default, kept from v1)",
	 .offset = offsetof(struct pgsql_config, partition)},
	{.key = "retention",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "0",
	 .min = 0,
	 .max = 36500,
	 .help = "days of events to keep; older chunks are dropped, at start and hourly (0: "
		 "keep all)",
	 .offset = offsetof(struct pgsql_config, retention)},
	{0},
};

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */

/*
 * The table, its columns ordered for alignment (no padding between them),
 * but for those added within schema v2, at its end (see added_columns_sql).
 * The view's timestamp (schema v1: microseconds, UTC) is a function of
 * time_ns so that a BRIN index can summarize it too.
 */
static const char *const table_sql =
	"CREATE FUNCTION tcp_audit_timestamp(ns bigint) RETURNS timestamp LANGUAGE sql"
	" IMMUTABLE PARALLEL SAFE AS"
	" $$SELECT '1970-01-01 00:00:00'::timestamp + ((ns + 500) / 1000)"
	" * interval '1 microsecond'$$;"
	"CREATE TABLE tcp_audit_events ("
	" uid uuid NOT NULL, time_ns bigint NOT NULL, sock_cookie bigint, sock_inode bigint,"
	" cgroup_id bigint, seq bigint, ktime bigint, gap_lost bigint, owner_uid bigint,"
	" sock_uid bigint, sock_gid bigint, netns bigint,"
	" pid_on_cpu integer, tid_on_cpu integer, owner_pid integer, sport integer,"
	" dport integer, kind smallint NOT NULL, family smallint, old_state smallint,"
	" new_state smallint, sock_state smallint, gap_stage smallint,"
	" saddr inet, daddr inet, host text, comm_on_cpu text, owner_comm text,"
	" reset_direction smallint, reset_reason smallint, error integer,"
	" PRIMARY KEY (uid, time_ns)) PARTITION BY RANGE (time_ns);"
	/* two: summarizing the text uid beside the rest took six times as long */
	"CREATE INDEX tcp_audit_events_brin ON tcp_audit_events USING brin"
	" (time_ns, tcp_audit_timestamp(time_ns), sock_cookie) WITH (autosummarize = on);"
	"CREATE INDEX tcp_audit_events_brin_uid ON tcp_audit_events USING brin"
	" ((uid::text COLLATE \"C\")) WITH (autosummarize = on);"
	"CREATE INDEX tcp_audit_events_gaps ON tcp_audit_events (time_ns) WHERE kind = 1;";
#define N_COLUMNS 32 /* with machine, added by added_columns_sql to every database */

/*
 * The columns the table gained within schema v2: a store made before them
 * gets them when opened (added to the partitioned table, so to every chunk;
 * its rows have NULL there).  error: a u16, more than a smallint holds.
 * machine: not in table_sql, so that a new database gets it here too, as
 * the last column in every database (binary COPY goes by the table's order).
 */
static const char *const added_columns_sql =
	"ALTER TABLE tcp_audit_events ADD COLUMN IF NOT EXISTS reset_direction smallint,"
	" ADD COLUMN IF NOT EXISTS reset_reason smallint, ADD COLUMN IF NOT EXISTS error integer,"
	" ADD COLUMN IF NOT EXISTS machine text";
#define ADDED_COLUMNS_IN "('reset_direction', 'reset_reason', 'error', 'machine')"
#define N_ADDED 4

/* What a closed chunk gets, built by sorting it once (%s: the partition). */
static const char *const chunk_indexes_sql =
	"CREATE INDEX IF NOT EXISTS %s_dst ON %s (daddr, dport);"
	"CREATE INDEX IF NOT EXISTS %s_owner ON %s (owner_pid);"
	"CREATE INDEX IF NOT EXISTS %s_cookie ON %s (sock_cookie);"
	"CREATE INDEX IF NOT EXISTS %s_uid ON %s ((uid::text COLLATE \"C\"));"
	"ANALYZE %s";

/* The views in PostgreSQL: the text uid and the timestamp as the BRIN summarizes them. */
static const struct sql_view_forms view_forms = {
	.uid = "(uid::text COLLATE \"C\")",
	.timestamp = "tcp_audit_timestamp(time_ns)",
	.cookie_hex = "to_hex(sock_cookie)",
	.info_extra = ", tcp_audit_timestamp(time_ns) AS timestamp", /* as v1 partitioned had */
	.order = SQL_ORDER_SORTED,
};

/*
 * Schema v1 came from the original's tables (kept and extended): a database
 * of the original's is first given v1's columns, then migrated like any v1.
 */
static const char *const original_to_v1_sql =
	"ALTER TABLE tcp_events ADD COLUMN IF NOT EXISTS time_ns BIGINT,"
	" ADD COLUMN IF NOT EXISTS family TEXT, ADD COLUMN IF NOT EXISTS tid_on_cpu INTEGER,"
	" ADD COLUMN IF NOT EXISTS owner_pid INTEGER, ADD COLUMN IF NOT EXISTS owner_uid BIGINT,"
	" ADD COLUMN IF NOT EXISTS owner_comm TEXT, ADD COLUMN IF NOT EXISTS sock_cookie BIGINT,"
	" ADD COLUMN IF NOT EXISTS netns BIGINT, ADD COLUMN IF NOT EXISTS cgroup_id BIGINT,"
	" ADD COLUMN IF NOT EXISTS host TEXT, ADD COLUMN IF NOT EXISTS seq BIGINT,"
	" ADD COLUMN IF NOT EXISTS ktime BIGINT;"
	"CREATE TABLE IF NOT EXISTS tcp_events_socket_info (uid TEXT PRIMARY KEY,"
	" tcp_event_uid TEXT, id TEXT, inode BIGINT, user_id BIGINT, group_id BIGINT, state TEXT);"
	"CREATE TABLE IF NOT EXISTS tcp_audit_gaps (uid TEXT PRIMARY KEY, timestamp TIMESTAMP,"
	" time_ns BIGINT, host TEXT, stage TEXT, lost BIGINT, seq BIGINT, ktime BIGINT)";

/* A v1 event's time: time_ns, or (rows of the original's) its timestamp. */
#define V1_TIME_NS "coalesce(e.time_ns, (extract(epoch FROM e.timestamp) * 1000000000)::bigint)"

/* A libpq message, one line, with any password blotted out. */
static void clean_message(const struct pgsql_sink *s, const char *msg, char *out, size_t size)
{
	snprintf(out, size, "%s", msg ? msg : "");
	if (s->secret && *s->secret)
		for (char *p = strstr(out, s->secret); p; p = strstr(p, s->secret))
			memset(p, '*', strlen(s->secret));
	size_t n = strlen(out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

__attribute__((format(printf, 3, 4))) static void log_pg(const struct pgsql_sink *s, int level,
							  const char *fmt, ...)
{
	char what[512], msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	clean_message(s, s->conn ? PQerrorMessage(s->conn) : "", msg, sizeof(msg));
	tcp_audit_log(s->host, level, "%s %s: %s", what, s->store, msg);
}

/* Notes the password in use (conninfo or environment), to keep it out of logs. */
static void find_secret(struct pgsql_sink *s)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(s->cfg->conninfo, &err);

	PQfreemem(err);
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
			s->secret = strdup(o->val);
	PQconninfoFree(opts);
	if (s->secret)
		tcp_audit_warning(s->host, "conninfo= holds a password, which every local user can "
					   "read in /proc/PID/cmdline: put it in a password file "
					   "(PGPASSFILE, or passfile= in conninfo) instead");
	if (!s->secret && getenv("PGPASSWORD") && *getenv("PGPASSWORD"))
		s->secret = strdup(getenv("PGPASSWORD"));
}

static void describe_store(struct pgsql_sink *s)
{
	const char *host = PQhost(s->conn), *port = PQport(s->conn), *db = PQdb(s->conn),
		   *user = PQuser(s->conn);

	snprintf(s->store, sizeof(s->store), "%s@%s:%s/%s", user ? user : "?",
		 host && *host ? host : "localhost", port && *port ? port : "5432", db ? db : "?");
}

/* A statement's result: true if it succeeded, else its SQLSTATE noted (the batch's first). */
static bool result_ok(struct pgsql_sink *s, const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return true;
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (!s->sqlstate[0])
		snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state ? state : "");
	return false;
}

static bool exec_ok(struct pgsql_sink *s, const char *sql)
{
	PGresult *res = PQexec(s->conn, sql);
	bool ok = result_ok(s, res);

	PQclear(res);
	return ok;
}

/* The first column of the first row as a number; -1 for none or an error. */
static int64_t query_int(struct pgsql_sink *s, const char *sql)
{
	PGresult *res = PQexec(s->conn, sql);
	int64_t v = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

/* ------------------------------------------------------------------------ */
/* Chunks                                                                    */

/* tcp_audit_events_YYYYMMDD (day chunks) or tcp_audit_events_YYYYMMDDHH. */
static void chunk_name(const struct pgsql_sink *s, int64_t chunk, char *out, size_t size)
{
	time_t t = (time_t)(chunk * (int64_t)(s->chunk_ns / 1000000000u));
	struct tm tm;
	char stamp[16];

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), s->chunk_ns == DAY_NS ? "%Y%m%d" : "%Y%m%d%H", &tm);
	snprintf(out, size, "tcp_audit_events_%s", stamp);
}

/* The chunk a partition name stands for; -1 if it is not one of ours. */
static int64_t chunk_of_name(const struct pgsql_sink *s, const char *name)
{
	const char *p = name + strlen("tcp_audit_events_");
	size_t digits = s->chunk_ns == DAY_NS ? 8 : 10;
	struct tm tm = {0};

	if (strncmp(name, "tcp_audit_events_", strlen("tcp_audit_events_")) != 0 ||
	    strlen(p) != digits || strspn(p, "0123456789") != digits)
		return -1;
	if (sscanf(p, "%4d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
		return -1;
	if (digits == 10 && sscanf(p + 8, "%2d", &tm.tm_hour) != 1)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) / (int64_t)(s->chunk_ns / 1000000000u);
}

static void note_open_chunk(struct pgsql_sink *s, int64_t chunk)
{
	for (unsigned i = 0; i < s->n_open; i++)
		if (s->open_chunks[i] == chunk)
			return;
	if (s->n_open < MAX_OPEN_CHUNKS)
		s->open_chunks[s->n_open++] = chunk;
	else
		s->open_overflow = true;
}

/* Makes the chunk's partition unless known to exist; a new one is open. */
static bool ensure_chunk(struct pgsql_sink *s, int64_t chunk)
{
	for (unsigned i = 0; i < s->n_known && i < KNOWN_CHUNKS; i++)
		if (s->known[i] == chunk)
			return true;
	char name[64], sql[512];
	chunk_name(s, chunk, name, sizeof(name));
	snprintf(sql, sizeof(sql), "SELECT (to_regclass('%s') IS NOT NULL)::int", name);
	int64_t exists = query_int(s, sql);
	snprintf(sql, sizeof(sql),
		 "CREATE TABLE IF NOT EXISTS %s PARTITION OF tcp_audit_events"
		 " FOR VALUES FROM (%" PRId64 ") TO (%" PRId64 ")",
		 name, chunk * (int64_t)s->chunk_ns, (chunk + 1) * (int64_t)s->chunk_ns);
	if (exists < 0 || (exists == 0 && !exec_ok(s, sql)))
		return false;
	s->known[s->n_known++ % KNOWN_CHUNKS] = chunk;
	if (exists == 0) /* an existing one that is open was found at set-up */
		note_open_chunk(s, chunk);
	return true;
}

/* Partitions of ours that lack the lookup indexes of a closed chunk. */
static bool find_open_chunks(struct pgsql_sink *s)
{
	s->open_overflow = false;
	PGresult *res = PQexec(s->conn,
			       "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON"
			       " c.oid = i.inhrelid WHERE i.inhparent = 'tcp_audit_events'::regclass"
			       " AND to_regclass(quote_ident(c.relname || '_uid')) IS NULL");

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		return false;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t chunk = chunk_of_name(s, PQgetvalue(res, i, 0));
		if (chunk >= 0)
			note_open_chunk(s, chunk);
	}
	PQclear(res);
	return true;
}

/*
 * Builds the lookup indexes of one chunk that has closed, if any; one per
 * call, so a batch waits for at most one.  Another tcp-audit writing to the
 * same database may be building them: then it is left to that one.
 */
static void close_a_chunk(struct pgsql_sink *s, uint64_t newest)
{
	for (unsigned i = 0; i < s->n_open; i++) {
		int64_t chunk = s->open_chunks[i];
		if ((uint64_t)(chunk + 1) * s->chunk_ns + CLOSE_AFTER_NS > newest)
			continue;
		char name[64], sql[1024], lock[160];
		chunk_name(s, chunk, name, sizeof(name));
		snprintf(sql, sizeof(sql), chunk_indexes_sql, name, name, name, name, name, name,
			 name, name, name);
		snprintf(lock, sizeof(lock),
			 "SELECT 1 WHERE pg_try_advisory_xact_lock(hashtext('tcp-audit %s'))", name);
		uint64_t start = clock_now_ns(CLOCK_MONOTONIC);
		bool ok = exec_ok(s, "BEGIN");
		bool mine = ok && query_int(s, lock) == 1;
		ok = ok && (!mine || exec_ok(s, sql)) && exec_ok(s, "COMMIT");
		if (!ok) {
			log_pg(s, TCP_AUDIT_LOG_WARNING, "cannot index the closed chunk %s in", name);
			exec_ok(s, "ROLLBACK");
			return; /* tried again after the next batch */
		}
		if (mine)
			tcp_audit_info(s->host, "%s: indexed the closed chunk %s in %.1f s", s->store,
				       name, (double)(clock_now_ns(CLOCK_MONOTONIC) - start) / 1e9);
		s->open_chunks[i] = s->open_chunks[--s->n_open];
		if (s->open_overflow)
			find_open_chunks(s);
		return;
	}
}

/*
 * Brings a chunk's BRIN summaries up to date (the ranges filled since),
 * and with analyze its statistics: without both the planner reads the
 * whole chunk.  Autovacuum does either only late for a table that just
 * grows.
 */
static bool refresh_chunk(struct pgsql_sink *s, int64_t chunk, bool analyze)
{
	char name[64], sql[512];

	chunk_name(s, chunk, name, sizeof(name));
	/* autovacuum may be at it: then it does the work, and the sink does not wait */
	snprintf(sql, sizeof(sql),
		 "BEGIN; SET LOCAL lock_timeout = '50ms';"
		 " SELECT brin_summarize_new_values(i.indexrelid) FROM pg_index i JOIN pg_class c"
		 " ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'brin'"
		 " AND i.indrelid = to_regclass('%s')%s%s; COMMIT",
		 name, analyze ? "; ANALYZE " : "", analyze ? name : "");
	uint64_t start = clock_now_ns(CLOCK_MONOTONIC);
	if (!exec_ok(s, sql)) {
		exec_ok(s, "ROLLBACK");
		tcp_audit_debug(s->host, "%s: did not summarize %s now (busy)", s->store, name);
		return false;
	}
	tcp_audit_debug(s->host, "%s: summarized%s %s in %.3f s", s->store,
			analyze ? " and analyzed" : "", name, (double)(clock_now_ns(CLOCK_MONOTONIC) - start) / 1e9);
	return true;
}

/*
 * The open chunk (of the newest events) is analyzed once it has 10,000
 * rows (then the planner scales its estimates with its size; a chunk is
 * analyzed again when it closes) and summarized once a minute while it
 * grows; the one before it once more when the newest events move on.
 * Measured: an ANALYZE of a chunk of half a million rows takes 0.3-0.6 s,
 * too much to repeat as it grows.
 */
static void refresh_open_chunk(struct pgsql_sink *s, const struct tcp_audit_event *ev, size_t n)
{
	int64_t head = (int64_t)(s->newest / s->chunk_ns);

	if (head != s->head) {
		if (s->head_rows > s->head_summarized)
			refresh_chunk(s, s->head, false);
		s->head = head;
		s->head_rows = s->head_summarized = 0;
		s->head_analyzed = false;
	}
	for (size_t i = 0; i < n; i++)
		s->head_rows += (int64_t)(ev[i].time_ns / s->chunk_ns) == head;
	bool analyze = !s->head_analyzed && s->head_rows >= ANALYZE_AFTER_ROWS;
	if (!analyze && (clock_now_ns(CLOCK_MONOTONIC) < s->next_summary ||
			 s->head_rows == s->head_summarized))
		return;
	s->next_summary = clock_now_ns(CLOCK_MONOTONIC) + SUMMARIZE_EVERY_NS;
	if (refresh_chunk(s, head, analyze)) {
		s->head_analyzed |= analyze;
		s->head_summarized = s->head_rows;
	}
}

/*
 * Drops the chunks wholly older than the retention.  Runs at open and then
 * hourly; a failure is logged and retried at the next pass.
 */
static void apply_retention(struct pgsql_sink *s)
{
	struct timespec now;

	if (!s->cfg->retention)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t keep_from = (now.tv_sec / 86400 - s->cfg->retention) * 86400; /* s, UTC day */
	PGresult *res = PQexec(s->conn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON"
					" c.oid = i.inhrelid WHERE i.inhparent ="
					" 'tcp_audit_events'::regclass ORDER BY 1");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		log_pg(s, TCP_AUDIT_LOG_WARNING, "cannot list the chunks in");
		return;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		const char *rel = PQgetvalue(res, i, 0);
		int64_t chunk = chunk_of_name(s, rel);
		if (chunk < 0 || (chunk + 1) * (int64_t)(s->chunk_ns / 1000000000u) > keep_from)
			continue;
		char *name = PQescapeIdentifier(s->conn, rel, strlen(rel)), sql[512];
		if (!name)
			continue;
		snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", name);
		if (exec_ok(s, sql))
			tcp_audit_info(s->host, "%s: dropped %s (older than %" PRId64 " days)",
				       s->store, rel, s->cfg->retention);
		else
			log_pg(s, TCP_AUDIT_LOG_WARNING, "cannot drop an old chunk in");
		PQfreemem(name);
		for (unsigned j = 0; j < s->n_open; j++)
			if (s->open_chunks[j] == chunk)
				s->open_chunks[j--] = s->open_chunks[--s->n_open];
	}
	PQclear(res);
	s->n_known = 0; /* what was dropped must be made again if events come for it */
}

/* ------------------------------------------------------------------------ */
/* Migrations                                                                */

/*
 * Schema v1 -> v2, in the caller's transaction: every event of tcp_events
 * (with its socket info) and tcp_audit_gaps goes into tcp_audit_events, in
 * slices so that a long migration shows its progress; then the old tables
 * give way to the views and the chunks before now are indexed.
 */
static bool migrate_v1(struct pgsql_sink *s)
{
	char family[256], old_state[1024], new_state[1024], sock_state[512], stage[256];
	char sql[8192];
	int64_t total = query_int(s, "SELECT count(*) FROM tcp_events"), done = 0;

	if (total < 0)
		return false;
	tcp_audit_info(s->host, "%s: migrating %" PRId64 " events from schema v1 to v2", s->store,
		       total);
	sql_case_number(family, sizeof(family), SQL_FAMILY, "e.family");
	sql_case_number(old_state, sizeof(old_state), SQL_TCP_STATE, "e.old_state");
	sql_case_number(new_state, sizeof(new_state), SQL_TCP_STATE, "e.new_state");
	sql_case_number(sock_state, sizeof(sock_state), SQL_SOCK_STATE, "i.state");
	sql_case_number(stage, sizeof(stage), SQL_GAP_STAGE, "stage");

	/* the partitions the old events need */
	snprintf(sql, sizeof(sql),
		 "SELECT DISTINCT (t / %" PRIu64 ") FROM (SELECT " V1_TIME_NS " AS t FROM"
		 " tcp_events e UNION ALL SELECT time_ns FROM tcp_audit_gaps) x WHERE t IS NOT NULL",
		 s->chunk_ns);
	PGresult *res = PQexec(s->conn, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		return false;
	}
	for (int i = 0; i < PQntuples(res); i++)
		if (!ensure_chunk(s, strtoll(PQgetvalue(res, i, 0), NULL, 10))) {
			PQclear(res);
			return false;
		}
	PQclear(res);

	/* a slice: the events after $1 up to $2 (NULL: to the end), by uid */
	snprintf(sql, sizeof(sql),
		 "INSERT INTO tcp_audit_events (uid, time_ns, kind, host, family, saddr, daddr,"
		 " sport, dport, old_state, new_state, pid_on_cpu, tid_on_cpu, comm_on_cpu,"
		 " owner_pid, owner_uid, owner_comm, sock_cookie, sock_inode, sock_uid, sock_gid,"
		 " sock_state, netns, cgroup_id, seq, ktime) SELECT e.uid::uuid, " V1_TIME_NS ","
		 " 0, e.host, %s, e.src_ip, e.dst_ip, e.src_port, e.dst_port, %s, %s, e.pid_on_cpu,"
		 " e.tid_on_cpu, e.comm_on_cpu, e.owner_pid, e.owner_uid, e.owner_comm,"
		 " coalesce(e.sock_cookie, ('x' || lpad(i.id, 16, '0'))::bit(64)::bigint),"
		 " i.inode, i.user_id, i.group_id, %s, e.netns, e.cgroup_id, e.seq, e.ktime"
		 " FROM tcp_events e LEFT JOIN tcp_events_socket_info i ON i.tcp_event_uid = e.uid"
		 " WHERE e.uid > $1 AND ($2::text IS NULL OR e.uid <= $2)"
		 " ON CONFLICT DO NOTHING",
		 family, old_state, new_state, sock_state);
	char last[256] = "", upto[256], bound[128];
	snprintf(bound, sizeof(bound),
		 "SELECT uid FROM tcp_events WHERE uid > $1 ORDER BY uid LIMIT 1 OFFSET %d",
		 MIGRATE_SLICE - 1);
	for (bool more = true; more;) {
		const char *params[2] = {last, NULL};
		res = PQexecParams(s->conn, bound, 1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			PQclear(res);
			return false;
		}
		more = PQntuples(res) == 1;
		if (more)
			snprintf(upto, sizeof(upto), "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
		params[1] = more ? upto : NULL;
		res = PQexecParams(s->conn, sql, 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			PQclear(res);
			return false;
		}
		done += strtoll(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		if (more)
			snprintf(last, sizeof(last), "%s", upto);
		tcp_audit_info(s->host, "%s: migrated %" PRId64 " of %" PRId64 " events (%d%%)",
			       s->store, done, total, total ? (int)(done * 100 / total) : 100);
	}
	snprintf(sql, sizeof(sql),
		 "INSERT INTO tcp_audit_events (uid, time_ns, kind, host, seq, ktime, gap_stage,"
		 " gap_lost) SELECT uid::uuid, time_ns, 1, host, seq, ktime, %s, lost"
		 " FROM tcp_audit_gaps ON CONFLICT DO NOTHING;"
		 "DROP TABLE tcp_events_socket_info CASCADE; DROP TABLE tcp_events CASCADE;"
		 " DROP TABLE tcp_audit_gaps CASCADE",
		 stage);
	return exec_ok(s, sql);
}

/* The chunk length of an existing v2 store, from tcp_audit_schema. */
static uint64_t store_chunk_ns(struct pgsql_sink *s)
{
	PGresult *res = PQexec(s->conn, "SELECT chunk FROM tcp_audit_schema");
	uint64_t ns = 0;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		ns = strcmp(PQgetvalue(res, 0, 0), "day") == 0 ? DAY_NS : HOUR_NS;
	PQclear(res);
	return ns;
}

/*
 * Whether the store has this tcp-audit's views: every one of them, and
 * tcp_events with its latest column (error).  -1 on an error.
 */
static int views_current(struct pgsql_sink *s)
{
	char sql[256];

	for (int i = 0; i < SQL_N_VIEWS; i++) {
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM pg_class WHERE oid = to_regclass('%s') AND relkind = 'v'",
			 sql_view_names[i]);
		int64_t n = query_int(s, sql);
		if (n != 1)
			return n < 0 ? -1 : 0;
	}
	int64_t n = query_int(s, "SELECT count(*) FROM pg_attribute WHERE attrelid ="
				 " to_regclass('tcp_events') AND attname = 'error' AND NOT attisdropped");
	return n < 0 ? -1 : n == 1;
}

/*
 * Brings a store of schema v2 up to date, in the caller's transaction: the
 * columns tcp_audit_events lacks, and the views when one is missing or older
 * than this tcp-audit's (CREATE OR REPLACE VIEW appends tcp_events' new
 * column).  Only then: both lock what they change.  *added: the columns
 * added; *remade: whether the views were made again.
 */
static bool complete_v2(struct pgsql_sink *s, const char *views, int *added, bool *remade)
{
	int64_t has = query_int(s, "SELECT count(*) FROM pg_attribute WHERE attrelid ="
				   " 'tcp_audit_events'::regclass AND NOT attisdropped"
				   " AND attname IN " ADDED_COLUMNS_IN);
	if (has < 0 || (has < N_ADDED && !exec_ok(s, added_columns_sql)))
		return false;
	*added = N_ADDED - (int)has;
	int current = views_current(s);
	if (current < 0 || (!current && !exec_ok(s, views)))
		return false;
	*remade = !current;
	return true;
}

static int migrate(struct pgsql_sink *s)
{
	char views[65536];
	int version;

	if (sql_views(views, sizeof(views), &view_forms, "CREATE OR REPLACE VIEW") < 0)
		return -ENOMEM;
	if (!exec_ok(s, "BEGIN") ||
	    !exec_ok(s, "SELECT pg_advisory_xact_lock(hashtext('tcp-audit schema'))") ||
	    !exec_ok(s, "SET LOCAL client_min_messages = warning") ||
	    !exec_ok(s, "CREATE TABLE IF NOT EXISTS tcp_audit_schema (version INTEGER NOT NULL)") ||
	    !exec_ok(s, "ALTER TABLE tcp_audit_schema ADD COLUMN IF NOT EXISTS chunk TEXT"))
		goto fail;
	int64_t v = query_int(s, "SELECT coalesce(max(version), 0) FROM tcp_audit_schema");
	int64_t v1_tables = query_int(s, "SELECT count(*) FROM pg_class WHERE oid ="
					 " to_regclass('tcp_events') AND relkind IN ('r', 'p')");
	int64_t v1_partitioned = query_int(s, "SELECT count(*) FROM pg_class WHERE oid ="
					      " to_regclass('tcp_events') AND relkind = 'p'");
	if (v < 0 || v1_tables < 0 || v1_partitioned < 0)
		goto fail;
	version = (int)v;
	if (version > SCHEMA_VERSION) {
		exec_ok(s, "ROLLBACK");
		tcp_audit_error(s->host,
				"%s has schema version %d, newer than this tcp-audit's %d: use a "
				"newer tcp-audit or another database",
				s->store, version, SCHEMA_VERSION);
		return -EINVAL;
	}
	uint64_t wanted = s->cfg->partition == PARTITION_DAY    ? DAY_NS
			  : s->cfg->partition == PARTITION_HOUR ? HOUR_NS
								: 0;
	if (version == SCHEMA_VERSION) {
		s->chunk_ns = store_chunk_ns(s);
		if (!s->chunk_ns)
			goto fail;
		if (wanted && wanted != s->chunk_ns) {
			exec_ok(s, "ROLLBACK");
			tcp_audit_error(s->host,
					"%s: tcp_audit_events is in chunks of a%s; partition=%s "
					"applies to a new database",
					s->store, s->chunk_ns == DAY_NS ? " day" : "n hour",
					wanted == DAY_NS ? "day" : "hour");
			return -EINVAL;
		}
		int added = 0;
		bool remade = false;
		if (!complete_v2(s, views, &added, &remade) || !exec_ok(s, "COMMIT"))
			goto fail;
		if (added || remade)
			tcp_audit_info(s->host,
				       "%s: schema version %d brought up to date: %d column%s added%s",
				       s->store, SCHEMA_VERSION, added, added == 1 ? "" : "s",
				       remade ? ", views made again" : "");
		return 0;
	}

	/* a new store, or v1 (ours or the original's tables) to migrate */
	s->chunk_ns = wanted ? wanted : v1_partitioned ? DAY_NS : HOUR_NS;
	if (!exec_ok(s, table_sql))
		goto fail;
	if (v1_tables && ((version == 0 && !exec_ok(s, original_to_v1_sql)) || !migrate_v1(s)))
		goto fail;
	if (!exec_ok(s, added_columns_sql)) /* machine: last in every database */
		goto fail;
	char bump[160];
	snprintf(bump, sizeof(bump),
		 "DELETE FROM tcp_audit_schema; INSERT INTO tcp_audit_schema VALUES (%d, '%s')",
		 SCHEMA_VERSION, s->chunk_ns == DAY_NS ? "day" : "hour");
	if (!exec_ok(s, views) || !exec_ok(s, bump) || !exec_ok(s, "COMMIT"))
		goto fail;
	tcp_audit_info(s->host, "%s: schema version %d (chunks of a%s)", s->store, SCHEMA_VERSION,
		       s->chunk_ns == DAY_NS ? " day" : "n hour");
	/*
	 * A query over many chunks is estimated costly enough for JIT, whose
	 * compiling then takes longer than the query (measured: 200-300 ms for a
	 * one-minute range over a day's chunks, against 15 ms without).
	 */
	if (exec_ok(s, "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET jit = off',"
		       " current_database()); END$$"))
		tcp_audit_info(s->host, "%s: jit = off for this database (queries over many "
					"chunks are faster without)",
			       s->store);
	else
		log_pg(s, TCP_AUDIT_LOG_WARNING,
		       "could not set jit = off (queries over many chunks are faster without;"
		       " the database's owner can: ALTER DATABASE ... SET jit = off) in");
	return 0;
fail:
	log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot set up the tables in");
	exec_ok(s, "ROLLBACK");
	return -EIO;
}

/*
 * After connecting: the tables (once per run: the server may have been
 * unreachable at start), the retention, the chunks still open, the
 * session's staging table.
 */
static int set_up_session(struct pgsql_sink *s)
{
	int r;

	if (!s->set_up) {
		if ((r = migrate(s)))
			return r;
		apply_retention(s);
		s->next_retention = clock_now_ns(CLOCK_MONOTONIC) + RETENTION_EVERY_NS;
		s->set_up = true;
	}
	s->n_known = 0;
	if (!find_open_chunks(s) ||
	    !exec_ok(s, "SET client_min_messages = warning;"
			"CREATE TEMP TABLE IF NOT EXISTS tcp_audit_stage"
			" (LIKE tcp_audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")) {
		log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot set up the session in");
		return -EIO;
	}
	return 0;
}

/* Connects (or reconnects) and sets the session up. */
static int connect_store(struct pgsql_sink *s)
{
	if (s->conn)
		PQfinish(s->conn);
	s->conn = PQconnectdb(s->cfg->conninfo);
	if (!s->conn)
		return -ENOMEM;
	describe_store(s);
	if (PQstatus(s->conn) != CONNECTION_OK)
		return -ECONNREFUSED;
	return set_up_session(s);
}

/*
 * A failed first connection that is worth waiting for: no server there (yet),
 * or one that is starting, stopping or recovering.  A malformed conninfo, or
 * a server that answers "no" (password, database, role), is a mistake to
 * report at once.
 */
static bool worth_waiting(struct pgsql_sink *s)
{
	const char *msg = PQerrorMessage(s->conn);
	char *err = NULL;
	PQconninfoOption *parsed = PQconninfoParse(s->cfg->conninfo, &err);

	PQconninfoFree(parsed);
	PQfreemem(err);
	if (!parsed)
		return false;
	return !strstr(msg, "FATAL") || strstr(msg, "starting up") ||
	       strstr(msg, "shutting down") || strstr(msg, "recovery") ||
	       strstr(msg, "not yet accepting connections");
}

static void pgsql_close(void *self);

static int pgsql_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	struct pgsql_sink *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->host = host;
	s->cfg = config;
	find_secret(s);
	r = connect_store(s);
	if (r == -ECONNREFUSED && worth_waiting(s)) {
		/* capture from the start; the events wait (spool or memory) */
		log_pg(s, TCP_AUDIT_LOG_WARNING,
		       "capturing anyway; holding the events and retrying to connect to");
		s->down = true;
		s->next_try = clock_now_ns(CLOCK_MONOTONIC) + RECONNECT_MIN_NS;
	} else if (r == -ECONNREFUSED) {
		log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot connect to PostgreSQL at");
		goto fail;
	} else if (r) {
		goto fail;
	}
	*self = s;
	return 0;
fail:
	pgsql_close(s);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Binary COPY                                                               */

#define ROW_MAX 1024 /* more than a row takes: 32 fields, strings of at most 2 * 80 bytes */
#define COPY_CHUNK (256 * 1024)

static void put(struct pgsql_sink *s, const void *p, size_t n)
{
	byte_buffer_put(&s->out, p, n);
}

static void put_be16(struct pgsql_sink *s, uint16_t v)
{
	v = htons(v);
	put(s, &v, 2);
}

static void put_be32(struct pgsql_sink *s, uint32_t v)
{
	v = htonl(v);
	put(s, &v, 4);
}

static void put_null(struct pgsql_sink *s)
{
	put_be32(s, UINT32_MAX); /* length -1 */
}

static void put_i16(struct pgsql_sink *s, bool valid, int v)
{
	if (!valid) {
		put_null(s);
		return;
	}
	put_be32(s, 2);
	put_be16(s, (uint16_t)v);
}

static void put_i32(struct pgsql_sink *s, bool valid, uint32_t v)
{
	if (!valid) {
		put_null(s);
		return;
	}
	put_be32(s, 4);
	put_be32(s, v);
}

/* u64 values go into BIGINT, PostgreSQL's signed 64 bits, bit for bit */
static void put_i64(struct pgsql_sink *s, bool valid, uint64_t v)
{
	if (!valid) {
		put_null(s);
		return;
	}
	put_be32(s, 8);
	put_be32(s, (uint32_t)(v >> 32));
	put_be32(s, (uint32_t)v);
}

/* Text as valid UTF-8 (the JSON form's convention for other bytes). */
static void put_text(struct pgsql_sink *s, bool valid, const char *v, size_t max)
{
	char utf8[2 * TCP_AUDIT_HOST_LEN];

	if (!valid) {
		put_null(s);
		return;
	}
	size_t n = bytes_to_utf8(v, strnlen(v, max), utf8);
	put_be32(s, (uint32_t)n);
	put(s, utf8, n);
}

/* inet's binary form: family, bits, is_cidr, length, address */
static void put_inet(struct pgsql_sink *s, unsigned family, const uint8_t addr[16])
{
	bool v6 = family == AF_INET6;

	if (family != AF_INET && !v6) {
		put_null(s);
		return;
	}
	uint8_t head[4] = {v6 ? 3 : 2, v6 ? 128 : 32, 0, v6 ? 16 : 4};
	put_be32(s, 4 + head[3]);
	put(s, head, 4);
	put(s, addr, head[3]);
}

static void event_row(struct pgsql_sink *s, const struct tcp_audit_event *e)
{
	uint8_t uid[EVENT_UID_BYTES];
	uint32_t v = e->valid;
	bool gap = e->kind == TCP_AUDIT_KIND_GAP, st = !gap,
	     owner = st && (v & TCP_AUDIT_HAS_OWNER), inode = st && (v & TCP_AUDIT_HAS_SOCK_INODE),
	     reset = e->kind == TCP_AUDIT_KIND_RESET;

	event_uid_bytes(e, uid);
	put_be16(s, N_COLUMNS);
	put_be32(s, EVENT_UID_BYTES);
	put(s, uid, EVENT_UID_BYTES);
	put_i64(s, true, e->time_ns);
	put_i64(s, st && (v & TCP_AUDIT_HAS_COOKIE), e->sock_cookie);
	put_i64(s, inode, e->sock_inode);
	put_i64(s, st && (v & TCP_AUDIT_HAS_CGROUP), e->cgroup_id);
	put_i64(s, v & TCP_AUDIT_HAS_SEQ, e->seq);
	put_i64(s, v & TCP_AUDIT_HAS_KTIME, e->ktime_ns);
	put_i64(s, gap, e->gap_lost);
	put_i64(s, owner, e->owner_uid);
	put_i64(s, inode, e->sock_uid);
	put_i64(s, inode, e->sock_gid);
	put_i64(s, st && (v & TCP_AUDIT_HAS_NETNS), e->netns);
	put_i32(s, st, e->pid_on_cpu);
	put_i32(s, st && (v & TCP_AUDIT_HAS_TID), e->tid_on_cpu);
	put_i32(s, owner, e->owner_pid);
	put_i32(s, st, e->sport);
	put_i32(s, st, e->dport);
	put_i16(s, true, e->kind);
	put_i16(s, st, e->family);
	put_i16(s, st, e->old_state);
	put_i16(s, st, e->new_state);
	put_i16(s, st && (v & TCP_AUDIT_HAS_SOCK_STATE), e->sock_state);
	put_i16(s, gap, e->gap_stage);
	if (st) {
		put_inet(s, e->family, e->saddr);
		put_inet(s, e->family, e->daddr);
	} else {
		put_null(s);
		put_null(s);
	}
	put_text(s, v & TCP_AUDIT_HAS_HOST, e->host, TCP_AUDIT_HOST_LEN);
	put_text(s, st, e->comm_on_cpu, TCP_AUDIT_COMM_LEN);
	put_text(s, owner, e->owner_comm, TCP_AUDIT_COMM_LEN);
	put_i16(s, reset, e->reset_direction);
	put_i16(s, reset && (v & TCP_AUDIT_HAS_RESET_REASON), e->reset_reason);
	put_i32(s, st && (v & TCP_AUDIT_HAS_ERROR), e->error);
	if (v & TCP_AUDIT_HAS_MACHINE) {
		char machine[MACHINE_TEXT_LEN];
		put_be32(s, (uint32_t)format_machine(e->machine, machine));
		put(s, machine, sizeof(machine));
	} else {
		put_null(s);
	}
}

static bool copy_begin(struct pgsql_sink *s, const char *table)
{
	static const char header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
	char sql[128];

	snprintf(sql, sizeof(sql), "COPY %s FROM STDIN (FORMAT binary)", table);
	PGresult *res = PQexec(s->conn, sql);
	bool ok = PQresultStatus(res) == PGRES_COPY_IN;
	if (!ok)
		result_ok(s, res); /* notes its SQLSTATE */
	PQclear(res);
	s->out.len = 0;
	put(s, header, sizeof(header));
	return ok;
}

/* Sends what is encoded once there is a chunk of it, so the server parses
 * while we encode. */
static bool copy_send(struct pgsql_sink *s, bool force)
{
	if (s->out.len == 0 || (!force && s->out.len < COPY_CHUNK))
		return true;
	bool ok = PQputCopyData(s->conn, s->out.p, (int)s->out.len) == 1;
	s->out.len = 0;
	return ok;
}

static bool copy_end(struct pgsql_sink *s, bool ok)
{
	PGresult *res;

	put_be16(s, UINT16_MAX); /* the trailer: a field count of -1 */
	ok = copy_send(s, true) && ok;
	ok = PQputCopyEnd(s->conn, ok ? NULL : "tcp-audit: sending failed") == 1 && ok;
	res = PQgetResult(s->conn);
	ok = result_ok(s, res) && ok;
	PQclear(res);
	while ((res = PQgetResult(s->conn)))
		PQclear(res);
	return ok;
}

/*
 * One batch in one transaction.  direct: COPY into the table itself, the
 * fast way; fails with unique_violation if any event is already stored.
 * Otherwise: COPY into the staging table and merge with ON CONFLICT DO
 * NOTHING, which stores each event once whatever was stored before.
 */
/* The seal's row, inside the batch's transaction. */
static bool store_seal(struct pgsql_sink *s, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	char idx[24], time_ns[24], count[24];

	if (event_uid_list(ev, n, &s->uids, &s->uids_cap) < 0)
		return false;
	snprintf(idx, sizeof(idx), "%" PRIu64, seal->index);
	snprintf(time_ns, sizeof(time_ns), "%" PRIu64, seal->time_ns);
	snprintf(count, sizeof(count), "%zu", n);
	/* the text with its length: the seal is not NUL-terminated for us */
	char *text = strndup(seal->text, seal->len);
	if (!text)
		return false;
	const char *values[6] = {seal->run, idx, time_ns, count, text, (const char *)s->uids};
	int lengths[6] = {0, 0, 0, 0, 0, (int)(n * EVENT_UID_BYTES)};
	int formats[6] = {0, 0, 0, 0, 0, 1};
	PGresult *res = PQexecParams(s->conn,
				     "INSERT INTO tcp_audit_seals VALUES ($1, $2, $3, $4, $5, $6)"
				     " ON CONFLICT DO NOTHING",
				     6, NULL, values, lengths, formats, 0);
	bool ok = result_ok(s, res);
	PQclear(res);
	free(text);
	return ok;
}

static int store_batch(struct pgsql_sink *s, const struct tcp_audit_event *ev, size_t n,
		       bool direct, const struct tcp_audit_seal *seal)
{
	bool ok = true;

	s->sqlstate[0] = '\0';
	if (byte_buffer_reserve(&s->out, COPY_CHUNK + ROW_MAX))
		return -ENOMEM;
	/* partitions first, on their own: a batch rolled back must not take them along */
	int64_t last = -1;
	for (size_t i = 0; i < n; i++) {
		int64_t chunk = (int64_t)(ev[i].time_ns / s->chunk_ns);
		if (chunk != last && !ensure_chunk(s, chunk))
			return -EIO;
		last = chunk;
	}
	if (seal && !s->seals_table) {
		if (!exec_ok(s, seals_sql))
			return -EIO;
		s->seals_table = true;
	}
	if (!exec_ok(s, "BEGIN") || !copy_begin(s, direct ? "tcp_audit_events" : "tcp_audit_stage"))
		return -EIO;
	for (size_t i = 0; ok && i < n; i++) {
		event_row(s, &ev[i]);
		ok = copy_send(s, false);
	}
	if (!copy_end(s, ok))
		return -EIO;
	if (seal && !store_seal(s, ev, n, seal))
		return -EIO;
	return exec_ok(s, direct ? "COMMIT"
				 : "INSERT INTO tcp_audit_events SELECT * FROM tcp_audit_stage"
				   " ON CONFLICT DO NOTHING; COMMIT")
		       ? 0
		       : -EIO;
}

#define UNIQUE_VIOLATION "23505"

/*
 * A server that cannot take a batch now but may later: out of disk space or
 * memory (class 53 but for a configured limit), read-only (a standby, while
 * a failover goes on), a serialization failure or a deadlock, a lock or
 * statement timeout, shutting down or starting.  Such a batch is retried,
 * as after a lost connection, however long it takes: not a failure that
 * counts towards --max-errors.
 */
static bool transient_state(const char *state)
{
	static const char *const states[] = {"53000", "53100", "53200", "53300", "25006",
					     "40001", "40P01", "55P03", "57014", "57P01",
					     "57P02", "57P03"};

	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (strcmp(state, states[i]) == 0)
			return true;
	return false;
}

static int write_batch(struct pgsql_sink *s, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	int r;

	if (PQstatus(s->conn) != CONNECTION_OK) {
		/* lost while idle, or by a chunk's upkeep after the last batch */
		if (!s->down)
			log_pg(s, TCP_AUDIT_LOG_WARNING, "connection lost to");
		s->down = true;
		if (clock_now_ns(CLOCK_MONOTONIC) < s->next_try)
			return TCP_AUDIT_RETRY;
		s->next_try = clock_now_ns(CLOCK_MONOTONIC) + RECONNECT_MIN_NS;
		if (connect_store(s) != 0)
			return TCP_AUDIT_RETRY; /* the outage is logged once, above */
	}
	if (clock_now_ns(CLOCK_MONOTONIC) >= s->next_retention) {
		apply_retention(s);
		s->next_retention = clock_now_ns(CLOCK_MONOTONIC) + RETENTION_EVERY_NS;
	}
	r = store_batch(s, ev, n, true, seal);
	if (r == -EIO && strcmp(s->sqlstate, UNIQUE_VIOLATION) == 0 &&
	    PQstatus(s->conn) == CONNECTION_OK) {
		/* some of it is stored already (a retry, a replay): merge instead */
		exec_ok(s, "ROLLBACK");
		r = store_batch(s, ev, n, false, seal);
	}
	if (r == 0) {
		if (s->down)
			tcp_audit_info(s->host, "connection to %s is back", s->store);
		if (s->refused)
			tcp_audit_info(s->host, "%s takes batches again", s->store);
		s->down = s->refused = false;
		for (size_t i = 0; i < n; i++)
			if (ev[i].time_ns > s->newest)
				s->newest = ev[i].time_ns;
		close_a_chunk(s, s->newest);
		refresh_open_chunk(s, ev, n);
		return 0;
	}
	if (PQstatus(s->conn) != CONNECTION_OK) {
		/*
		 * Lost in the middle: whether the COMMIT made it or not, the retry is
		 * safe, ON CONFLICT DO NOTHING stores each event once.
		 */
		if (!s->down)
			log_pg(s, TCP_AUDIT_LOG_WARNING, "connection lost to");
		s->down = true;
		return TCP_AUDIT_RETRY;
	}
	if (r == -EIO && transient_state(s->sqlstate)) {
		if (!s->refused) {
			char msg[1024];
			clean_message(s, PQerrorMessage(s->conn), msg, sizeof(msg));
			tcp_audit_warning(s->host, "%s cannot take a batch now: %s: holding events "
						   "and retrying", s->store, msg);
		}
		s->refused = true;
		exec_ok(s, "ROLLBACK");
		return TCP_AUDIT_RETRY;
	}
	log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot store a batch in");
	exec_ok(s, "ROLLBACK");
	return r == -ENOMEM ? r : -EIO;
}

static int pgsql_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	return write_batch(self, ev, n, NULL);
}

static int pgsql_write_sealed(void *self, const struct tcp_audit_event *ev, size_t n,
			      const struct tcp_audit_seal *seal)
{
	return write_batch(self, ev, n, seal);
}

static void pgsql_close(void *self)
{
	struct pgsql_sink *s = self;

	if (!s)
		return;
	free(s->uids);
	/* what the open chunk got since its last refresh is summarized too */
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK && s->head_rows > s->head_summarized)
		refresh_chunk(s, s->head, !s->head_analyzed);
	if (s->conn)
		PQfinish(s->conn);
	if (s->secret) {
		memset(s->secret, 0, strlen(s->secret));
		free(s->secret);
	}
	byte_buffer_free(&s->out);
	free(s);
}

static const struct tcp_audit_plugin pgsql_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "pgsql",
	.kind = TCP_AUDIT_SINKER,
	.description = "PostgreSQL: one row per event in tcp_audit_events (partitioned by time), "
		       "the original's tables as views, binary COPY, exactly once across reconnects",
	.options = pgsql_options,
	.config_size = sizeof(struct pgsql_config),
	.sinker_open = pgsql_open,
	.sinker_write = pgsql_write,
	.sinker_close = pgsql_close,
	.sinker_write_sealed = pgsql_write_sealed,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &pgsql_plugin;
}
