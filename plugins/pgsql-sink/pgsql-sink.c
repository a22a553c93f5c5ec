/* SPDX-License-Identifier: MIT */
/*
 * pgsql sink: events into PostgreSQL, the original's tables (tcp_events,
 * tcp_events_socket_info) plus our columns.  A batch is one transaction of a
 * few COPYs, so a handful of round trips carry thousands of events.  A batch
 * that meets events already stored (retried after a lost connection, whether
 * its COMMIT made it or not; a replayed file) goes again through staging
 * tables and INSERT ... ON CONFLICT (uid) DO NOTHING: each event once.
 *
 * Connection: the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
 * PGPASSWORD, PGPASSFILE, PGSSLMODE, ...) as in the original, or conninfo=.
 * Messages name the store as user@host:port/dbname and never hold a password.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include <tcp-audit/plugin.h>

#include "event-text.h"
#include "event-uid.h"

#define SCHEMA_VERSION 1
#define RECONNECT_MIN_NS 500000000ull

enum { PARTITION_NONE, PARTITION_DAY };

struct pgsql_config {
	const char *conninfo;
	int partition;
	int64_t retention;
};

#define KNOWN_DAYS 8
#define DAY_NS 86400000000000ull
#define RETENTION_EVERY_NS 3600000000000ull

struct pgsql_sink {
	const struct tcp_audit_host *host;
	const struct pgsql_config *cfg;
	PGconn *conn;
	char store[256];    /* user@host:port/db, for messages */
	char *secret;       /* a password to keep out of messages */
	bool down;          /* in an outage: logged once */
	bool set_up;        /* tables checked/migrated on this store */
	uint64_t next_try;  /* CLOCK_MONOTONIC ns of the next reconnect */
	char *buf;          /* COPY data of a batch */
	size_t cap, len;
	char sqlstate[6];   /* of the last failed COPY */
	bool partitioned;   /* tcp_events is partitioned by day */
	int64_t days[KNOWN_DAYS]; /* days (since 1970) whose partitions exist */
	unsigned n_days;
	uint64_t next_retention; /* CLOCK_MONOTONIC ns of the next retention pass */
};

static const struct tcp_audit_option pgsql_options[] = {
	{.key = "conninfo",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "libpq connection string or URI (default: the PG* environment variables)",
	 .offset = offsetof(struct pgsql_config, conninfo)},
	{.key = "partition",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "none",
	 .choices = "none|day",
	 .help = "create tcp_events and tcp_events_socket_info partitioned by day (new "
		 "databases only; an existing partitioned store is kept partitioned)",
	 .offset = offsetof(struct pgsql_config, partition)},
	{.key = "retention",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "0",
	 .min = 0,
	 .max = 36500,
	 .help = "days of partitions to keep; older ones are dropped (0: keep all; needs "
		 "partition=day)",
	 .offset = offsetof(struct pgsql_config, retention)},
	{0},
};

/* Schema steps: steps[v] takes version v to v + 1, in one transaction. */
static const char *const steps[] = {
	/* 0 -> 1: the original's tables (kept if they exist), then ours */
	/* our uids compare as bytes ("C"): same results, faster than a locale */
	"CREATE TABLE IF NOT EXISTS tcp_events ("
	" uid TEXT COLLATE \"C\" PRIMARY KEY, timestamp TIMESTAMP, pid_on_cpu INTEGER, comm_on_cpu TEXT,"
	" src_ip INET, dst_ip INET, src_port INTEGER, dst_port INTEGER, old_state TEXT,"
	" new_state TEXT);"
	"CREATE TABLE IF NOT EXISTS tcp_events_socket_info ("
	" uid TEXT COLLATE \"C\" PRIMARY KEY, tcp_event_uid TEXT COLLATE \"C\", id TEXT, inode INTEGER, user_id INTEGER,"
	" group_id INTEGER, state TEXT,"
	" CONSTRAINT fk_tcp_events FOREIGN KEY(tcp_event_uid) REFERENCES tcp_events(uid)"
	" ON DELETE CASCADE);"
	/* inode numbers and ids can pass 2^31: widen (queries stay the same) */
	"ALTER TABLE tcp_events_socket_info ALTER COLUMN inode TYPE BIGINT,"
	" ALTER COLUMN user_id TYPE BIGINT, ALTER COLUMN group_id TYPE BIGINT;"
	"ALTER TABLE tcp_events ADD COLUMN IF NOT EXISTS time_ns BIGINT,"
	" ADD COLUMN IF NOT EXISTS family TEXT, ADD COLUMN IF NOT EXISTS tid_on_cpu INTEGER,"
	" ADD COLUMN IF NOT EXISTS owner_pid INTEGER, ADD COLUMN IF NOT EXISTS owner_uid BIGINT,"
	" ADD COLUMN IF NOT EXISTS owner_comm TEXT, ADD COLUMN IF NOT EXISTS sock_cookie BIGINT,"
	" ADD COLUMN IF NOT EXISTS netns BIGINT, ADD COLUMN IF NOT EXISTS cgroup_id BIGINT,"
	" ADD COLUMN IF NOT EXISTS host TEXT, ADD COLUMN IF NOT EXISTS seq BIGINT,"
	" ADD COLUMN IF NOT EXISTS ktime BIGINT;"
	"CREATE TABLE IF NOT EXISTS tcp_audit_gaps ("
	" uid TEXT COLLATE \"C\" PRIMARY KEY, timestamp TIMESTAMP, time_ns BIGINT, host TEXT,"
	" stage TEXT,"
	" lost BIGINT, seq BIGINT, ktime BIGINT);"
	"CREATE INDEX IF NOT EXISTS tcp_events_timestamp ON tcp_events(timestamp);"
	"CREATE INDEX IF NOT EXISTS tcp_events_dst ON tcp_events(dst_ip, dst_port);"
	"CREATE INDEX IF NOT EXISTS tcp_events_cookie ON tcp_events(sock_cookie);"
	"CREATE INDEX IF NOT EXISTS tcp_events_owner ON tcp_events(owner_pid);"
	"CREATE INDEX IF NOT EXISTS tcp_events_socket_info_event"
	" ON tcp_events_socket_info(tcp_event_uid);",
};

_Static_assert(sizeof(steps) / sizeof(steps[0]) == SCHEMA_VERSION, "one step per version");

/*
 * partition=day on a new database: the same two tables, partitioned by day
 * on timestamp.  A partitioned table's keys must hold the partition key, so
 * the keys are (uid, timestamp) and the socket info rows carry their event's
 * timestamp (the uid already encodes the time: nothing else changes).  Step
 * 0 then finds them and adds the rest.
 */
static const char *const partitioned_sql =
	"CREATE TABLE tcp_events ("
	" uid TEXT COLLATE \"C\", timestamp TIMESTAMP NOT NULL, pid_on_cpu INTEGER,"
	" comm_on_cpu TEXT, src_ip INET, dst_ip INET, src_port INTEGER, dst_port INTEGER,"
	" old_state TEXT, new_state TEXT, PRIMARY KEY (uid, timestamp))"
	" PARTITION BY RANGE (timestamp);"
	"CREATE TABLE tcp_events_socket_info ("
	" uid TEXT COLLATE \"C\", tcp_event_uid TEXT COLLATE \"C\", id TEXT, inode INTEGER,"
	" user_id INTEGER, group_id INTEGER, state TEXT, timestamp TIMESTAMP NOT NULL,"
	" PRIMARY KEY (uid, timestamp),"
	" CONSTRAINT fk_tcp_events FOREIGN KEY (tcp_event_uid, timestamp)"
	" REFERENCES tcp_events (uid, timestamp) ON DELETE CASCADE)"
	" PARTITION BY RANGE (timestamp);";

/* Columns of the staging tables, in COPY order. */
#define EVENT_COLUMNS                                                                      \
	"uid, timestamp, pid_on_cpu, comm_on_cpu, src_ip, dst_ip, src_port, dst_port, "    \
	"old_state, new_state, time_ns, family, tid_on_cpu, owner_pid, owner_uid, "        \
	"owner_comm, sock_cookie, netns, cgroup_id, host, seq, ktime"
#define INFO_COLUMNS "uid, tcp_event_uid, id, inode, user_id, group_id, state"
#define INFO_COLUMNS_PARTITIONED INFO_COLUMNS ", timestamp"
#define GAP_COLUMNS "uid, timestamp, time_ns, host, stage, lost, seq, ktime"

static const char *const staging_sql =
	"SET client_min_messages = warning;"
	"CREATE TEMP TABLE IF NOT EXISTS stage_events"
	" (LIKE tcp_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
	"CREATE TEMP TABLE IF NOT EXISTS stage_info"
	" (LIKE tcp_events_socket_info INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
	"CREATE TEMP TABLE IF NOT EXISTS stage_gaps"
	" (LIKE tcp_audit_gaps INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;";

/*
 * Staged rows into the tables, each event once: the same statements for both
 * layouts, but for the key (uid; partitioned: uid, timestamp) and the socket
 * info's columns.
 */
#define MERGE_SQL(key, info_columns)                                                      \
	"INSERT INTO tcp_events (" EVENT_COLUMNS ") SELECT " EVENT_COLUMNS " FROM stage_events" \
	" ON CONFLICT (" key ") DO NOTHING;"                                               \
	"INSERT INTO tcp_events_socket_info (" info_columns ") SELECT " info_columns       \
	" FROM stage_info ON CONFLICT (" key ") DO NOTHING;"                               \
	"INSERT INTO tcp_audit_gaps (" GAP_COLUMNS ") SELECT " GAP_COLUMNS " FROM stage_gaps" \
	" ON CONFLICT (uid) DO NOTHING;"                                                   \
	"COMMIT"

static const char *const merge_sql = MERGE_SQL("uid", INFO_COLUMNS);
static const char *const merge_partitioned_sql =
	MERGE_SQL("uid, timestamp", INFO_COLUMNS_PARTITIONED);

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

static bool exec_ok(struct pgsql_sink *s, const char *sql)
{
	PGresult *res = PQexec(s->conn, sql);
	ExecStatusType st = PQresultStatus(res);
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	PQclear(res);
	return ok;
}

/* tcp_events' relkind: 'r' a table, 'p' partitioned, 0 none; -1 on error */
static int table_kind(struct pgsql_sink *s)
{
	PGresult *res = PQexec(s->conn, "SELECT c.relkind FROM pg_class c"
					" WHERE c.oid = to_regclass('tcp_events')");
	int kind = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		kind = PQntuples(res) == 0 ? 0 : PQgetvalue(res, 0, 0)[0];
	PQclear(res);
	return kind;
}

static void day_name(int64_t day, char *out, size_t size, bool dashes)
{
	time_t t = (time_t)(day * 86400);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, dashes ? "%Y-%m-%d" : "%Y%m%d", &tm);
}

/* Makes the day's partitions of both tables unless known to exist. */
static bool ensure_day(struct pgsql_sink *s, int64_t day)
{
	for (unsigned i = 0; i < s->n_days && i < KNOWN_DAYS; i++)
		if (s->days[i] == day)
			return true;
	char from[16], to[16], tag[16], sql[1024];
	day_name(day, from, sizeof(from), true);
	day_name(day + 1, to, sizeof(to), true);
	day_name(day, tag, sizeof(tag), false);
	snprintf(sql, sizeof(sql),
		 "CREATE TABLE IF NOT EXISTS tcp_events_%s PARTITION OF tcp_events"
		 " FOR VALUES FROM ('%s') TO ('%s');"
		 "CREATE TABLE IF NOT EXISTS tcp_events_socket_info_%s PARTITION OF"
		 " tcp_events_socket_info FOR VALUES FROM ('%s') TO ('%s')",
		 tag, from, to, tag, from, to);
	if (!exec_ok(s, sql))
		return false;
	s->days[s->n_days++ % KNOWN_DAYS] = day;
	return true;
}

/*
 * Drops the day partitions older than the retention (socket info first: its
 * rows point at the events).  Runs at open and then hourly; a failure is
 * logged and retried at the next pass.
 */
static void apply_retention(struct pgsql_sink *s)
{
	struct timespec now;

	if (!s->cfg->retention || !s->partitioned)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t oldest_kept = now.tv_sec / 86400 - s->cfg->retention;
	char keep[16], sql[512];
	day_name(oldest_kept, keep, sizeof(keep), false);
	snprintf(sql, sizeof(sql),
		 "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
		 " WHERE i.inhparent IN (to_regclass('tcp_events'),"
		 " to_regclass('tcp_events_socket_info'))"
		 " AND right(c.relname, 8) ~ '^[0-9]{8}$' AND right(c.relname, 8) < '%s'"
		 " ORDER BY c.relname LIKE 'tcp_events_socket_info_%%' DESC",
		 keep);
	PGresult *res = PQexec(s->conn, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		log_pg(s, TCP_AUDIT_LOG_WARNING, "cannot list the old partitions in");
		return;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		char *name = PQescapeIdentifier(s->conn, PQgetvalue(res, i, 0),
						strlen(PQgetvalue(res, i, 0)));
		if (!name)
			continue;
		/* a partition the socket info's key points at leaves its parent first */
		if (strncmp(PQgetvalue(res, i, 0), "tcp_events_socket_info_", 23) == 0)
			snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", name);
		else
			snprintf(sql, sizeof(sql),
				 "BEGIN; ALTER TABLE tcp_events DETACH PARTITION %s;"
				 " DROP TABLE %s; COMMIT",
				 name, name);
		if (exec_ok(s, sql))
			tcp_audit_info(s->host, "%s: dropped %s (older than %" PRId64 " days)",
				       s->store, PQgetvalue(res, i, 0), s->cfg->retention);
		else {
			log_pg(s, TCP_AUDIT_LOG_WARNING, "cannot drop an old partition in");
			exec_ok(s, "ROLLBACK");
		}
		PQfreemem(name);
	}
	PQclear(res);
	s->n_days = 0; /* what was dropped must be made again if events come for it */
}

static int migrate(struct pgsql_sink *s)
{
	PGresult *res;
	int version;

	if (!exec_ok(s, "BEGIN") ||
	    !exec_ok(s, "SELECT pg_advisory_xact_lock(hashtext('tcp-audit schema'))") ||
	    !exec_ok(s, "SET LOCAL client_min_messages = warning") ||
	    !exec_ok(s, "CREATE TABLE IF NOT EXISTS tcp_audit_schema (version INTEGER NOT NULL)"))
		goto fail;
	res = PQexec(s->conn, "SELECT max(version) FROM tcp_audit_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		goto fail;
	}
	version = PQgetisnull(res, 0, 0) ? 0 : atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	int kind = table_kind(s);
	if (kind < 0)
		goto fail;
	if (s->cfg->partition == PARTITION_DAY && kind == 'r') {
		exec_ok(s, "ROLLBACK");
		tcp_audit_error(s->host,
				"%s: tcp_events exists and is not partitioned; partition=day applies "
				"to a new database (move the data to one made with it)",
				s->store);
		return -EINVAL;
	}
	if (s->cfg->partition == PARTITION_DAY && kind == 0) {
		if (!exec_ok(s, partitioned_sql))
			goto fail;
		kind = 'p';
	}
	s->partitioned = kind == 'p';
	if (s->cfg->retention && !s->partitioned) {
		exec_ok(s, "ROLLBACK");
		tcp_audit_error(s->host, "%s: retention= needs tables partitioned by day "
					 "(partition=day, on a new database)",
				s->store);
		return -EINVAL;
	}
	if (version > SCHEMA_VERSION) {
		exec_ok(s, "ROLLBACK");
		tcp_audit_error(s->host,
				"%s has schema version %d, newer than this tcp-audit's %d: use a "
				"newer tcp-audit or another database",
				s->store, version, SCHEMA_VERSION);
		return -EINVAL;
	}
	for (; version < SCHEMA_VERSION; version++) {
		char bump[96];
		snprintf(bump, sizeof(bump),
			 "DELETE FROM tcp_audit_schema; INSERT INTO tcp_audit_schema VALUES (%d)",
			 version + 1);
		if (!exec_ok(s, steps[version]) || !exec_ok(s, bump))
			goto fail;
		tcp_audit_info(s->host, "%s: schema version %d", s->store, version + 1);
	}
	if (!exec_ok(s, "COMMIT"))
		goto fail;
	return 0;
fail:
	log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot set up the tables in");
	exec_ok(s, "ROLLBACK");
	return -EIO;
}

/*
 * After connecting: the tables (once per run: the server may have been
 * unreachable at start), the retention, the session's staging tables.
 */
static int set_up_session(struct pgsql_sink *s)
{
	int r;

	if (!s->set_up) {
		if ((r = migrate(s)))
			return r;
		apply_retention(s);
		s->next_retention = now_ns() + RETENTION_EVERY_NS;
		s->set_up = true;
	}
	if (!exec_ok(s, staging_sql)) {
		log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot create staging tables in");
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
		/* capture from the start; the events wait (memory or spool) */
		log_pg(s, TCP_AUDIT_LOG_WARNING,
		       "capturing anyway; holding the events and retrying to connect to");
		s->down = true;
		s->next_try = now_ns() + RECONNECT_MIN_NS;
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
/* COPY text format                                                          */

static int reserve(struct pgsql_sink *s, size_t more)
{
	if (s->len + more <= s->cap)
		return 0;
	size_t cap = s->cap ? s->cap : 1 << 20;
	while (cap < s->len + more)
		cap *= 2;
	char *b = realloc(s->buf, cap);
	if (!b)
		return -ENOMEM;
	s->buf = b;
	s->cap = cap;
	return 0;
}

static void put(struct pgsql_sink *s, const char *p, size_t n)
{
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

static void put_sep(struct pgsql_sink *s, char c)
{
	s->buf[s->len++] = c;
}

static void put_null(struct pgsql_sink *s)
{
	put(s, "\\N", 2);
}

static void put_u64(struct pgsql_sink *s, uint64_t v)
{
	char tmp[24];
	put(s, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%" PRIu64, v));
}

static void put_i64(struct pgsql_sink *s, int64_t v)
{
	char tmp[24];
	put(s, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%" PRId64, v));
}

static void put_opt(struct pgsql_sink *s, bool valid, int64_t v)
{
	if (valid)
		put_i64(s, v);
	else
		put_null(s);
}

/* Text as valid UTF-8 with COPY's escapes; NULL writes \N. */
static void put_text(struct pgsql_sink *s, const char *v, size_t max)
{
	char utf8[2 * TCP_AUDIT_HOST_LEN];

	if (!v) {
		put_null(s);
		return;
	}
	size_t n = bytes_to_utf8(v, strnlen(v, max), utf8);
	for (size_t i = 0; i < n; i++) {
		char c = utf8[i];
		if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
			s->buf[s->len++] = '\\';
			c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
		}
		s->buf[s->len++] = c;
	}
}

static void put_timestamp(struct pgsql_sink *s, uint64_t ns)
{
	char ts[RFC3339_NS_LEN];

	format_rfc3339_ns(ns, ts);
	ts[10] = ' ';
	put(s, ts, 29); /* PostgreSQL rounds to microseconds; time_ns keeps the rest */
}

#define ROW_MAX 1024

static void event_row(struct pgsql_sink *s, const struct tcp_audit_event *e, const char *uid)
{
	char addr[ADDR_TEXT_LEN];
	uint32_t v = e->valid;

	put(s, uid, EVENT_UID_LEN - 1);
	put_sep(s, '\t');
	put_timestamp(s, e->time_ns);
	put_sep(s, '\t');
	put_u64(s, e->pid_on_cpu);
	put_sep(s, '\t');
	put_text(s, e->comm_on_cpu, TCP_AUDIT_COMM_LEN);
	put_sep(s, '\t');
	put_text(s, format_addr(e->family, e->saddr, addr), ADDR_TEXT_LEN);
	put_sep(s, '\t');
	put_text(s, format_addr(e->family, e->daddr, addr), ADDR_TEXT_LEN);
	put_sep(s, '\t');
	put_u64(s, e->sport);
	put_sep(s, '\t');
	put_u64(s, e->dport);
	put_sep(s, '\t');
	put_text(s, tcp_state_name(e->old_state), 32);
	put_sep(s, '\t');
	put_text(s, tcp_state_name(e->new_state), 32);
	put_sep(s, '\t');
	put_u64(s, e->time_ns);
	put_sep(s, '\t');
	put_text(s, family_name(e->family), 8);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_TID, e->tid_on_cpu);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_OWNER, e->owner_pid);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_OWNER, e->owner_uid);
	put_sep(s, '\t');
	put_text(s, v & TCP_AUDIT_HAS_OWNER ? e->owner_comm : NULL, TCP_AUDIT_COMM_LEN);
	put_sep(s, '\t');
	/* u64 values are stored as BIGINT, PostgreSQL's signed 64 bits */
	put_opt(s, v & TCP_AUDIT_HAS_COOKIE, (int64_t)e->sock_cookie);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_NETNS, e->netns);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_CGROUP, (int64_t)e->cgroup_id);
	put_sep(s, '\t');
	put_text(s, v & TCP_AUDIT_HAS_HOST ? e->host : NULL, TCP_AUDIT_HOST_LEN);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_SEQ, (int64_t)e->seq);
	put_sep(s, '\t');
	put_opt(s, v & TCP_AUDIT_HAS_KTIME, (int64_t)e->ktime_ns);
	put_sep(s, '\n');
}

static void info_row(struct pgsql_sink *s, const struct tcp_audit_event *e, const char *uid)
{
	char info_uid[EVENT_UID_LEN], id[24];

	event_uid(e, 1, info_uid);
	put(s, info_uid, EVENT_UID_LEN - 1);
	put_sep(s, '\t');
	put(s, uid, EVENT_UID_LEN - 1);
	put_sep(s, '\t');
	if (e->valid & TCP_AUDIT_HAS_COOKIE) /* the id: the socket cookie, never an address */
		put(s, id, (size_t)snprintf(id, sizeof(id), "%" PRIx64, e->sock_cookie));
	else
		put_null(s);
	put_sep(s, '\t');
	put_u64(s, e->sock_inode);
	put_sep(s, '\t');
	put_u64(s, e->sock_uid);
	put_sep(s, '\t');
	put_u64(s, e->sock_gid);
	put_sep(s, '\t');
	put_text(s, e->valid & TCP_AUDIT_HAS_SOCK_STATE ? sock_state_name(e->sock_state) : NULL, 32);
	if (s->partitioned) {
		put_sep(s, '\t');
		put_timestamp(s, e->time_ns);
	}
	put_sep(s, '\n');
}

static void gap_row(struct pgsql_sink *s, const struct tcp_audit_event *e)
{
	char uid[EVENT_UID_LEN];

	event_uid(e, 0, uid);
	put(s, uid, EVENT_UID_LEN - 1);
	put_sep(s, '\t');
	put_timestamp(s, e->time_ns);
	put_sep(s, '\t');
	put_u64(s, e->time_ns);
	put_sep(s, '\t');
	put_text(s, e->valid & TCP_AUDIT_HAS_HOST ? e->host : NULL, TCP_AUDIT_HOST_LEN);
	put_sep(s, '\t');
	put_text(s, gap_stage_name(e->gap_stage), 16);
	put_sep(s, '\t');
	put_u64(s, e->gap_lost);
	put_sep(s, '\t');
	put_opt(s, e->valid & TCP_AUDIT_HAS_SEQ, (int64_t)e->seq);
	put_sep(s, '\t');
	put_opt(s, e->valid & TCP_AUDIT_HAS_KTIME, (int64_t)e->ktime_ns);
	put_sep(s, '\n');
}

#define COPY_CHUNK (256 * 1024)

static bool copy_begin(struct pgsql_sink *s, const char *table, const char *columns)
{
	char sql[512];

	snprintf(sql, sizeof(sql), "COPY %s (%s) FROM STDIN", table, columns);
	PGresult *res = PQexec(s->conn, sql);
	bool ok = PQresultStatus(res) == PGRES_COPY_IN;
	PQclear(res);
	s->len = 0;
	return ok;
}

/* Sends what is formatted once there is a chunk of it, so the server parses
 * while we format. */
static bool copy_send(struct pgsql_sink *s, bool force)
{
	if (s->len == 0 || (!force && s->len < COPY_CHUNK))
		return true;
	bool ok = PQputCopyData(s->conn, s->buf, (int)s->len) == 1;
	s->len = 0;
	return ok;
}

static bool copy_end(struct pgsql_sink *s, bool ok)
{
	PGresult *res;

	ok = copy_send(s, true) && ok;
	ok = PQputCopyEnd(s->conn, ok ? NULL : "tcp-audit: sending failed") == 1 && ok;
	res = PQgetResult(s->conn);
	ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state ? state : "");
	PQclear(res);
	while ((res = PQgetResult(s->conn)))
		PQclear(res);
	return ok;
}

/*
 * One batch in one transaction.  direct: COPY into the tables themselves, the
 * fast way; fails with unique_violation if any event is already stored.
 * Otherwise: COPY into the staging tables and merge with ON CONFLICT DO
 * NOTHING, which stores each event once whatever was stored before.
 */
static int store_batch(struct pgsql_sink *s, const struct tcp_audit_event *ev, size_t n,
		       bool direct)
{
	char uid[EVENT_UID_LEN];
	size_t infos = 0, gaps = 0;
	bool ok = true;

	if (reserve(s, COPY_CHUNK + ROW_MAX))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		gaps += ev[i].kind == TCP_AUDIT_KIND_GAP;
		infos += ev[i].kind != TCP_AUDIT_KIND_GAP && (ev[i].valid & TCP_AUDIT_HAS_SOCK_INODE);
	}
	/* partitions first, on their own: a batch rolled back must not take them along */
	for (size_t i = 0; s->partitioned && i < n; i++) {
		if (ev[i].kind == TCP_AUDIT_KIND_GAP)
			continue;
		int64_t day = (int64_t)(ev[i].time_ns / DAY_NS);
		if (!ensure_day(s, day))
			return -EIO;
		/* PostgreSQL rounds to microseconds: the last one of a day may round over */
		if (ev[i].time_ns % DAY_NS >= DAY_NS - 1000 && !ensure_day(s, day + 1))
			return -EIO;
	}
	if (!exec_ok(s, "BEGIN"))
		return -EIO;
	if (n > gaps) {
		if (!copy_begin(s, direct ? "tcp_events" : "stage_events", EVENT_COLUMNS))
			return -EIO;
		for (size_t i = 0; ok && i < n; i++) {
			if (ev[i].kind == TCP_AUDIT_KIND_GAP)
				continue;
			event_uid(&ev[i], 0, uid);
			event_row(s, &ev[i], uid);
			ok = copy_send(s, false);
		}
		if (!copy_end(s, ok))
			return -EIO;
	}
	if (infos) {
		if (!copy_begin(s, direct ? "tcp_events_socket_info" : "stage_info",
				s->partitioned ? INFO_COLUMNS_PARTITIONED : INFO_COLUMNS))
			return -EIO;
		for (size_t i = 0; ok && i < n; i++) {
			if (ev[i].kind == TCP_AUDIT_KIND_GAP || !(ev[i].valid & TCP_AUDIT_HAS_SOCK_INODE))
				continue;
			event_uid(&ev[i], 0, uid);
			info_row(s, &ev[i], uid);
			ok = copy_send(s, false);
		}
		if (!copy_end(s, ok))
			return -EIO;
	}
	if (gaps) {
		if (!copy_begin(s, direct ? "tcp_audit_gaps" : "stage_gaps", GAP_COLUMNS))
			return -EIO;
		for (size_t i = 0; ok && i < n; i++)
			if (ev[i].kind == TCP_AUDIT_KIND_GAP) {
				gap_row(s, &ev[i]);
				ok = copy_send(s, false);
			}
		if (!copy_end(s, ok))
			return -EIO;
	}
	return exec_ok(s, direct ? "COMMIT" : s->partitioned ? merge_partitioned_sql : merge_sql)
		       ? 0
		       : -EIO;
}

#define UNIQUE_VIOLATION "23505"

static int pgsql_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	struct pgsql_sink *s = self;
	int r;

	if (PQstatus(s->conn) != CONNECTION_OK) {
		if (now_ns() < s->next_try)
			return TCP_AUDIT_RETRY;
		s->next_try = now_ns() + RECONNECT_MIN_NS;
		if (connect_store(s) != 0)
			return TCP_AUDIT_RETRY; /* the outage was logged when it began */
	}
	if (now_ns() >= s->next_retention) {
		apply_retention(s);
		s->next_retention = now_ns() + RETENTION_EVERY_NS;
	}
	r = store_batch(s, ev, n, true);
	if (r == -EIO && strcmp(s->sqlstate, UNIQUE_VIOLATION) == 0 &&
	    PQstatus(s->conn) == CONNECTION_OK) {
		/* some of it is stored already (a retry, a replay): merge instead */
		exec_ok(s, "ROLLBACK");
		r = store_batch(s, ev, n, false);
	}
	if (r == 0) {
		if (s->down)
			tcp_audit_info(s->host, "connection to %s is back", s->store);
		s->down = false;
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
	log_pg(s, TCP_AUDIT_LOG_ERROR, "cannot store a batch in");
	exec_ok(s, "ROLLBACK");
	return r == -ENOMEM ? r : -EIO;
}

static void pgsql_close(void *self)
{
	struct pgsql_sink *s = self;

	if (!s)
		return;
	if (s->conn)
		PQfinish(s->conn);
	if (s->secret) {
		memset(s->secret, 0, strlen(s->secret));
		free(s->secret);
	}
	free(s->buf);
	free(s);
}

static const struct tcp_audit_plugin pgsql_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "pgsql",
	.kind = TCP_AUDIT_SINKER,
	.description = "PostgreSQL: the original's tables (tcp_events, tcp_events_socket_info) "
		       "and ours, batched with COPY, exactly once across reconnects",
	.options = pgsql_options,
	.config_size = sizeof(struct pgsql_config),
	.sinker_open = pgsql_open,
	.sinker_write = pgsql_write,
	.sinker_close = pgsql_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &pgsql_plugin;
}
