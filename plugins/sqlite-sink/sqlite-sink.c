/* SPDX-License-Identifier: MIT */
/*
 * sqlite sink, the embedded default: events into an SQLite file, one
 * transaction per batch.  Tables and columns are the original's PostgreSQL
 * ones (tcp_events, tcp_events_socket_info) plus ours, so a query written for
 * the original runs here too.  WAL mode: a kill -9 at any moment leaves a
 * readable database holding every committed batch.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <tcp-audit/plugin.h>

#include "event-text.h"
#include "event-uid.h"

#define DEFAULT_PATH "/var/lib/tcp-audit/tcp-audit.db"
#define SCHEMA_VERSION 1

enum { SYNC_OFF, SYNC_NORMAL, SYNC_FULL };

struct sqlite_config {
	const char *path;
	int synchronous;
};

struct sqlite_sink {
	const struct tcp_audit_host *host;
	const struct sqlite_config *cfg;
	sqlite3 *db;
	sqlite3_stmt *ins_event, *ins_info, *ins_gap, *begin, *commit, *rollback;
	bool unavailable; /* in a retry episode: logged once */
};

static const struct tcp_audit_option sqlite_options[] = {
	{.key = "path",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = DEFAULT_PATH,
	 .help = "database file, created if missing (with its directory, for the default)",
	 .offset = offsetof(struct sqlite_config, path)},
	{.key = "synchronous",
	 .type = TCP_AUDIT_OPT_ENUM,
	 .def = "normal",
	 .choices = "off|normal|full",
	 .help = "normal: a crash of tcp-audit loses no committed batch; full: nor does a power "
		 "cut (slower)",
	 .offset = offsetof(struct sqlite_config, synchronous)},
	{0},
};

/*
 * Schema steps: steps[v] takes the database from version v to v + 1, in one
 * transaction with the user_version update.
 */
static const char *const steps[] = {
	/* 0 -> 1 */
	"CREATE TABLE tcp_events ("
	" uid TEXT PRIMARY KEY,"
	" timestamp TEXT NOT NULL," /* 'YYYY-MM-DD HH:MM:SS.nnnnnnnnn', UTC */
	" pid_on_cpu INTEGER, comm_on_cpu TEXT,"
	" src_ip TEXT, dst_ip TEXT, src_port INTEGER, dst_port INTEGER,"
	" old_state TEXT, new_state TEXT,"
	" time_ns INTEGER NOT NULL, family TEXT, tid_on_cpu INTEGER,"
	" owner_pid INTEGER, owner_uid INTEGER, owner_comm TEXT,"
	" sock_cookie INTEGER, netns INTEGER, cgroup_id INTEGER,"
	" host TEXT, seq INTEGER, ktime INTEGER);"
	"CREATE TABLE tcp_events_socket_info ("
	" uid TEXT PRIMARY KEY, tcp_event_uid TEXT, id TEXT, inode INTEGER, user_id INTEGER,"
	" group_id INTEGER, state TEXT,"
	" CONSTRAINT fk_tcp_events FOREIGN KEY(tcp_event_uid) REFERENCES tcp_events(uid)"
	" ON DELETE CASCADE);"
	"CREATE TABLE tcp_audit_gaps ("
	" uid TEXT PRIMARY KEY, timestamp TEXT NOT NULL, time_ns INTEGER NOT NULL, host TEXT,"
	" stage TEXT, lost INTEGER, seq INTEGER, ktime INTEGER);"
	"CREATE INDEX tcp_events_timestamp ON tcp_events(timestamp);"
	"CREATE INDEX tcp_events_dst ON tcp_events(dst_ip, dst_port);"

	"CREATE INDEX tcp_events_cookie ON tcp_events(sock_cookie);"
	"CREATE INDEX tcp_events_owner ON tcp_events(owner_pid);"
	"CREATE INDEX tcp_events_socket_info_event ON tcp_events_socket_info(tcp_event_uid);",
};

_Static_assert(sizeof(steps) / sizeof(steps[0]) == SCHEMA_VERSION, "one step per version");

static int exec(struct sqlite_sink *s, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		tcp_audit_error(s->host, "%s: %s", s->cfg->path, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return rc;
}

static int migrate(struct sqlite_sink *s)
{
	sqlite3_stmt *st;
	int version, rc;

	rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	else
		version = -1;
	if (rc == SQLITE_OK)
		rc = sqlite3_finalize(st);
	if (rc == SQLITE_NOTADB || sqlite3_errcode(s->db) == SQLITE_NOTADB) {
		tcp_audit_error(s->host, "%s is not an SQLite database", s->cfg->path);
		return -EINVAL;
	}
	if (version < 0) {
		tcp_audit_error(s->host, "cannot read %s: %s", s->cfg->path, sqlite3_errmsg(s->db));
		return -EIO;
	}
	if (version > SCHEMA_VERSION) {
		tcp_audit_error(s->host,
				"%s has schema version %d, newer than this tcp-audit's %d: use a "
				"newer tcp-audit or another file",
				s->cfg->path, version, SCHEMA_VERSION);
		return -EINVAL;
	}
	for (; version < SCHEMA_VERSION; version++) {
		char bump[64];
		snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", version + 1);
		if (exec(s, "BEGIN IMMEDIATE") || exec(s, steps[version]) || exec(s, bump) ||
		    exec(s, "COMMIT")) {
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return -EIO;
		}
		tcp_audit_info(s->host, "%s: schema version %d", s->cfg->path, version + 1);
	}
	return 0;
}

static int prepare(struct sqlite_sink *s, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
		tcp_audit_error(s->host, "%s: %s", s->cfg->path, sqlite3_errmsg(s->db));
		return -EIO;
	}
	return 0;
}

/* The default's directory is ours to create; any other must exist. */
static int check_directory(struct sqlite_sink *s)
{
	char *copy = strdup(s->cfg->path);
	int r = 0;

	if (!copy)
		return -ENOMEM;
	const char *dir = dirname(copy);
	if (strcmp(s->cfg->path, DEFAULT_PATH) == 0 && mkdir(dir, 0750) != 0 && errno != EEXIST) {
		r = -errno;
		tcp_audit_error(s->host, "cannot create %s for %s: %s", dir, s->cfg->path,
				strerror(errno));
	} else if (access(dir, W_OK | X_OK) != 0) {
		r = -errno;
		tcp_audit_error(s->host, "cannot create or write %s: directory %s: %s", s->cfg->path,
				dir, strerror(errno));
	}
	free(copy);
	return r;
}

static void sqlite_close(void *self);

static int sqlite_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	struct sqlite_sink *s = calloc(1, sizeof(*s));
	static const char *const sync_sql[] = {"PRAGMA synchronous = OFF",
					       "PRAGMA synchronous = NORMAL",
					       "PRAGMA synchronous = FULL"};
	int r;

	if (!s)
		return -ENOMEM;
	s->host = host;
	s->cfg = config;
	r = check_directory(s);
	if (r)
		goto fail;
	if (sqlite3_open_v2(s->cfg->path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		tcp_audit_error(host, "cannot open %s: %s", s->cfg->path,
				s->db ? sqlite3_errmsg(s->db) : "out of memory");
		r = -EIO;
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 2000);
	r = migrate(s);
	if (r)
		goto fail;
	if (exec(s, "PRAGMA journal_mode = WAL") || exec(s, sync_sql[s->cfg->synchronous])) {
		r = -EIO;
		goto fail;
	}
	if ((r = prepare(s,
			 "INSERT INTO tcp_events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
			 " ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
			 " ON CONFLICT(uid) DO NOTHING",
			 &s->ins_event)) ||
	    (r = prepare(s,
			 "INSERT INTO tcp_events_socket_info VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
			 " ON CONFLICT(uid) DO NOTHING",
			 &s->ins_info)) ||
	    (r = prepare(s,
			 "INSERT INTO tcp_audit_gaps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
			 " ON CONFLICT(uid) DO NOTHING",
			 &s->ins_gap)) ||
	    (r = prepare(s, "BEGIN IMMEDIATE", &s->begin)) ||
	    (r = prepare(s, "COMMIT", &s->commit)) || (r = prepare(s, "ROLLBACK", &s->rollback)))
		goto fail;
	*self = s;
	return 0;
fail:
	sqlite_close(s);
	return r;
}

/* 'YYYY-MM-DD HH:MM:SS.nnnnnnnnn': sorts as text, reads as a timestamp. */
static void timestamp_text(uint64_t ns, char out[RFC3339_NS_LEN])
{
	format_rfc3339_ns(ns, out);
	out[10] = ' ';
	out[29] = '\0';
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static void bind_opt(sqlite3_stmt *st, int i, bool valid, int64_t v)
{
	if (valid)
		sqlite3_bind_int64(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int insert_event(struct sqlite_sink *s, const struct tcp_audit_event *e)
{
	char uid[EVENT_UID_LEN], ts[RFC3339_NS_LEN], src[ADDR_TEXT_LEN], dst[ADDR_TEXT_LEN];
	sqlite3_stmt *st = s->ins_event;
	uint32_t v = e->valid;
	int rc;

	event_uid(e, 0, uid);
	timestamp_text(e->time_ns, ts);
	bind_text(st, 1, uid);
	bind_text(st, 2, ts);
	sqlite3_bind_int64(st, 3, e->pid_on_cpu);
	sqlite3_bind_text(st, 4, e->comm_on_cpu, (int)strnlen(e->comm_on_cpu, TCP_AUDIT_COMM_LEN),
			  SQLITE_STATIC);
	bind_text(st, 5, format_addr(e->family, e->saddr, src));
	bind_text(st, 6, format_addr(e->family, e->daddr, dst));
	sqlite3_bind_int(st, 7, e->sport);
	sqlite3_bind_int(st, 8, e->dport);
	bind_text(st, 9, tcp_state_name(e->old_state));
	bind_text(st, 10, tcp_state_name(e->new_state));
	sqlite3_bind_int64(st, 11, (sqlite3_int64)e->time_ns);
	bind_text(st, 12, family_name(e->family));
	bind_opt(st, 13, v & TCP_AUDIT_HAS_TID, e->tid_on_cpu);
	bind_opt(st, 14, v & TCP_AUDIT_HAS_OWNER, e->owner_pid);
	bind_opt(st, 15, v & TCP_AUDIT_HAS_OWNER, e->owner_uid);
	if (v & TCP_AUDIT_HAS_OWNER)
		sqlite3_bind_text(st, 16, e->owner_comm,
				  (int)strnlen(e->owner_comm, TCP_AUDIT_COMM_LEN), SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 16);
	/* u64 values are stored as SQLite's signed 64-bit integers */
	bind_opt(st, 17, v & TCP_AUDIT_HAS_COOKIE, (int64_t)e->sock_cookie);
	bind_opt(st, 18, v & TCP_AUDIT_HAS_NETNS, e->netns);
	bind_opt(st, 19, v & TCP_AUDIT_HAS_CGROUP, (int64_t)e->cgroup_id);
	bind_text(st, 20, v & TCP_AUDIT_HAS_HOST ? e->host : NULL);
	bind_opt(st, 21, v & TCP_AUDIT_HAS_SEQ, (int64_t)e->seq);
	bind_opt(st, 22, v & TCP_AUDIT_HAS_KTIME, (int64_t)e->ktime_ns);
	rc = step(st);
	if (rc != SQLITE_OK || !(v & TCP_AUDIT_HAS_SOCK_INODE))
		return rc;

	/* the original's socket info row; id: the socket cookie, never a kernel address */
	char info_uid[EVENT_UID_LEN], id[17];
	st = s->ins_info;
	event_uid(e, 1, info_uid);
	bind_text(st, 1, info_uid);
	bind_text(st, 2, uid);
	if (v & TCP_AUDIT_HAS_COOKIE) {
		snprintf(id, sizeof(id), "%" PRIx64, e->sock_cookie);
		bind_text(st, 3, id);
	} else {
		sqlite3_bind_null(st, 3);
	}
	sqlite3_bind_int64(st, 4, (sqlite3_int64)e->sock_inode);
	sqlite3_bind_int64(st, 5, e->sock_uid);
	sqlite3_bind_int64(st, 6, e->sock_gid);
	bind_text(st, 7, v & TCP_AUDIT_HAS_SOCK_STATE ? sock_state_name(e->sock_state) : NULL);
	return step(st);
}

static int insert_gap(struct sqlite_sink *s, const struct tcp_audit_event *e)
{
	char uid[EVENT_UID_LEN], ts[RFC3339_NS_LEN];
	sqlite3_stmt *st = s->ins_gap;

	event_uid(e, 0, uid);
	timestamp_text(e->time_ns, ts);
	bind_text(st, 1, uid);
	bind_text(st, 2, ts);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)e->time_ns);
	bind_text(st, 4, e->valid & TCP_AUDIT_HAS_HOST ? e->host : NULL);
	bind_text(st, 5, gap_stage_name(e->gap_stage));
	sqlite3_bind_int64(st, 6, (sqlite3_int64)e->gap_lost);
	bind_opt(st, 7, e->valid & TCP_AUDIT_HAS_SEQ, (int64_t)e->seq);
	bind_opt(st, 8, e->valid & TCP_AUDIT_HAS_KTIME, (int64_t)e->ktime_ns);
	return step(st);
}

/* Errors a store recovers from by itself: the batch is worth retrying. */
static bool transient(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
		return true;
	default:
		return false;
	}
}

static int sqlite_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	struct sqlite_sink *s = self;
	int rc = step(s->begin);

	for (size_t i = 0; rc == SQLITE_OK && i < n; i++)
		rc = ev[i].kind == TCP_AUDIT_KIND_GAP ? insert_gap(s, &ev[i]) : insert_event(s, &ev[i]);
	if (rc == SQLITE_OK)
		rc = step(s->commit);
	if (rc == SQLITE_OK) {
		if (s->unavailable)
			tcp_audit_info(s->host, "%s is writable again", s->cfg->path);
		s->unavailable = false;
		return 0;
	}
	const char *msg = sqlite3_errmsg(s->db);
	if (!sqlite3_get_autocommit(s->db))
		step(s->rollback);
	if (transient(rc)) {
		if (!s->unavailable)
			tcp_audit_warning(s->host, "cannot write to %s: %s: holding events and retrying",
					  s->cfg->path, msg);
		s->unavailable = true;
		return TCP_AUDIT_RETRY;
	}
	tcp_audit_error(s->host, "writing to %s: %s", s->cfg->path, msg);
	return -EIO;
}

static void sqlite_close(void *self)
{
	struct sqlite_sink *s = self;

	if (!s)
		return;
	sqlite3_finalize(s->ins_event);
	sqlite3_finalize(s->ins_info);
	sqlite3_finalize(s->ins_gap);
	sqlite3_finalize(s->begin);
	sqlite3_finalize(s->commit);
	sqlite3_finalize(s->rollback);
	if (s->db)
		sqlite3_close(s->db);
	free(s);
}

static const struct tcp_audit_plugin sqlite_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "sqlite",
	.kind = TCP_AUDIT_SINKER,
	.description = "an SQLite database with the original's tables (tcp_events, "
		       "tcp_events_socket_info) and ours",
	.options = sqlite_options,
	.config_size = sizeof(struct sqlite_config),
	.sinker_open = sqlite_open,
	.sinker_write = sqlite_write,
	.sinker_close = sqlite_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &sqlite_plugin;
}
