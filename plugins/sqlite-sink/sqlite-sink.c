/* SPDX-License-Identifier: MIT */
/*
 * sqlite sink, the embedded default: events into an SQLite file, one
 * transaction per batch, one compact row per event in tcp_audit_events
 * (schema v2).  The original's tables (tcp_events, tcp_events_socket_info)
 * and ours (tcp_audit_gaps, tcp_audit_snapshots, tcp_audit_resets) are
 * views over it with the original's columns and value forms, so a query
 * written for the original runs here too.  WAL mode: a kill -9 at any moment
 * leaves a readable database holding every committed batch.  Files of
 * schema v1 (two tables of text rows) are migrated in place when first
 * opened; files of schema v2 made before its latest columns and views get
 * them when opened.
 *
 * Per row, SQLite maintains two B-trees: the table, in the order events
 * arrive (rowid), and the unique index of the event's uid, whose first 16
 * hex digits are its time, so it appends as events arrive in time order and
 * a time range is a range of uids (see the README).  Nothing else is
 * indexed per row: measured on this sink, each more index (time, cookie)
 * costs about 0.5 us per event even in time order, and one keyed at random
 * (addresses, pids) several microseconds once it outgrows the page cache.
 * A separate uid index rather than a table keyed by uid: as fast in time
 * order, and about twice as fast when events come out of order (only the
 * index is written at random then, not the rows).  Gap records, rare, have
 * an index of their own.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <tcp-audit/plugin.h>

#include "event-text.h"
#include "event-uid.h"
#include "sql-case.h"
#include "state-dir.h"

#define DEFAULT_FILE "tcp-audit.db"
#define SCHEMA_VERSION "2"
#define PAGE_SIZE "16384" /* new files: fewer, fuller pages per row appended */
#define CACHE_KIB "32768" /* page cache: out-of-order uids stay in it longer */
#define MIGRATE_SLICE 100000 /* v1 events copied per step of a migration */

enum { SYNC_OFF, SYNC_NORMAL, SYNC_FULL };

struct sqlite_config {
	const char *path;
	int synchronous;
};

struct sqlite_sink {
	const struct tcp_audit_host *host;
	const struct sqlite_config *cfg;
	char path[PATH_MAX];
	sqlite3 *db;
	sqlite3_stmt *insert, *insert_many, *begin, *commit, *rollback;
	sqlite3_stmt *insert_seal; /* --seal: made with the seals' table, at the first seal */
	uint8_t *uids;             /* --seal: the batch's uids, for the seal's row */
	size_t uids_cap;
	bool unavailable; /* in a retry episode: logged once */
};

/*
 * --seal: one row per seal, beside the events, written in the batch's
 * transaction.  uids: the 16-byte uids of the batch's events in its order
 * (an event already stored by an earlier batch is that row), so that
 * tcp-audit verify finds them.
 */
#define SEALS_TABLE                                                                        \
	"CREATE TABLE IF NOT EXISTS tcp_audit_seals (run TEXT NOT NULL, idx INTEGER NOT NULL," \
	" time_ns INTEGER NOT NULL, count INTEGER NOT NULL, seal TEXT NOT NULL, uids BLOB,"  \
	" PRIMARY KEY (run, idx))"

static const struct tcp_audit_option sqlite_options[] = {
	{.key = "path",
	 .type = TCP_AUDIT_OPT_STRING,
	 .help = "database file, created if missing (default: tcp-audit.db in $STATE_DIRECTORY, "
		 "else in " DEFAULT_STATE_DIRECTORY ", created with its directory)",
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

/* Columns of tcp_audit_events, in the order of the insert's parameters. */
#define EVENT_TABLE                                                                        \
	"CREATE TABLE tcp_audit_events ("                                                 \
	" uid TEXT NOT NULL UNIQUE," /* event_uid(): time first, so keys append */    \
	" time_ns INTEGER NOT NULL, kind INTEGER NOT NULL, host TEXT,"                     \
	" family INTEGER, saddr TEXT, daddr TEXT, sport INTEGER, dport INTEGER,"           \
	" old_state INTEGER, new_state INTEGER,"                                           \
	" pid_on_cpu INTEGER, tid_on_cpu INTEGER, comm_on_cpu TEXT,"                       \
	" owner_pid INTEGER, owner_uid INTEGER, owner_comm TEXT,"                          \
	" sock_cookie INTEGER, sock_inode INTEGER, sock_uid INTEGER, sock_gid INTEGER,"    \
	" sock_state INTEGER, netns INTEGER, cgroup_id INTEGER, seq INTEGER, ktime INTEGER," \
	" gap_stage INTEGER, gap_lost INTEGER,"                                           \
	" reset_direction INTEGER, reset_reason INTEGER, error INTEGER);"                  \
	"CREATE INDEX tcp_audit_events_gaps ON tcp_audit_events(time_ns) WHERE kind = 1;"
#define N_COLUMNS 32 /* with machine, added by complete_v2() to every file */
/* Rows per INSERT for full runs of a batch: one statement's run (cursors opened, the program
 * started and halted) per row cost as much as the row itself; 32 rows share it. */
#define ROWS_PER_INSERT 32

/* 'YYYY-MM-DD HH:MM:SS.nnnnnnnnn' (UTC) from time_ns, as schema v1 stored it */
#define TIMESTAMP_SQL                                                                      \
	"strftime('%Y-%m-%d %H:%M:%S', time_ns / 1000000000, 'unixepoch')"                 \
	" || printf('.%09d', time_ns % 1000000000)"

/*
 * The columns tcp_audit_events gained within schema v2, at its end: a file
 * made before them gets them when opened, its rows with NULL there (a new
 * file too gets machine this way, after EVENT_TABLE's, so that its columns
 * come in the same order in every file).
 */
static const struct {
	const char *name, *type;
} added_columns[] = {{"reset_direction", "INTEGER"},
		     {"reset_reason", "INTEGER"},
		     {"error", "INTEGER"},
		     {"machine", "TEXT"}};
#define N_ADDED (sizeof(added_columns) / sizeof(added_columns[0]))

/* The views in SQLite's SQL: only built-in functions, so any SQLite client reads them. */
static const struct sql_view_forms view_forms = {
	.uid = "uid",
	.timestamp = TIMESTAMP_SQL,
	.cookie_hex = "CASE WHEN sock_cookie IS NOT NULL THEN printf('%x', sock_cookie) END",
	.info_extra = "",
	.order = SQL_ORDER_WINDOW,
};

static int exec(struct sqlite_sink *s, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		tcp_audit_error(s->host, "%s: %s", s->path, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return rc;
}

static int prepare(struct sqlite_sink *s, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
		tcp_audit_error(s->host, "%s: %s", s->path, sqlite3_errmsg(s->db));
		return -EIO;
	}
	return 0;
}

/* INSERT of `rows` rows, their parameters numbered row after row. */
static int prepare_insert(struct sqlite_sink *s, int rows, sqlite3_stmt **st)
{
	static const char row[] = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
	static const char head[] = "INSERT INTO tcp_audit_events VALUES ",
			  tail[] = " ON CONFLICT(uid) DO NOTHING";
	_Static_assert(sizeof(row) == 2 * N_COLUMNS + 2, "one ? per column");
	char sql[sizeof(head) + ROWS_PER_INSERT * sizeof(row) + sizeof(tail)];
	size_t n = sizeof(head) - 1;

	memcpy(sql, head, n);
	for (int i = 0; i < rows; i++) {
		if (i)
			sql[n++] = ',';
		memcpy(sql + n, row, sizeof(row) - 1);
		n += sizeof(row) - 1;
	}
	memcpy(sql + n, tail, sizeof(tail));
	return prepare(s, sql, st);
}

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int64_t query_int(struct sqlite_sink *s, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/*
 * Schema v1 -> v2, inside the caller's transaction: the rows of tcp_events
 * (with their socket info) and tcp_audit_gaps move into tcp_audit_events, in
 * slices so that a long migration shows its progress, then the old tables
 * give way to the views.
 */
static int migrate_v1(struct sqlite_sink *s)
{
	char family[256], old_state[1024], new_state[1024], sock_state[512], stage[256];
	char sql[8192];
	sqlite3_stmt *bound = NULL, *copy = NULL;
	int64_t total = query_int(s, "SELECT count(*) FROM tcp_events"), done = 0;
	int rc;

	if (total < 0)
		return SQLITE_ERROR;
	tcp_audit_info(s->host, "%s: migrating %" PRId64 " events from schema v1 to v2", s->path,
		       total);
	sql_case_number(family, sizeof(family), SQL_FAMILY, "e.family");
	sql_case_number(old_state, sizeof(old_state), SQL_TCP_STATE, "e.old_state");
	sql_case_number(new_state, sizeof(new_state), SQL_TCP_STATE, "e.new_state");
	sql_case_number(sock_state, sizeof(sock_state), SQL_SOCK_STATE, "i.state");
	sql_case_number(stage, sizeof(stage), SQL_GAP_STAGE, "stage");
	if ((rc = exec(s, EVENT_TABLE)))
		return rc;
	/* a slice: the events after ?1 up to ?2 (NULL: to the end), by uid */
	snprintf(sql, sizeof(sql),
		 "INSERT OR IGNORE INTO tcp_audit_events SELECT e.uid, e.time_ns, 0, e.host, %s,"
		 " e.src_ip, e.dst_ip, e.src_port, e.dst_port, %s, %s, e.pid_on_cpu, e.tid_on_cpu,"
		 " e.comm_on_cpu, e.owner_pid, e.owner_uid, e.owner_comm, e.sock_cookie, i.inode,"
		 " i.user_id, i.group_id, %s, e.netns, e.cgroup_id, e.seq, e.ktime, NULL, NULL,"
		 " NULL, NULL, NULL"
		 " FROM tcp_events e LEFT JOIN tcp_events_socket_info i ON i.tcp_event_uid = e.uid"
		 " WHERE e.uid > ?1 AND (?2 IS NULL OR e.uid <= ?2)",
		 family, old_state, new_state, sock_state);
	if (sqlite3_prepare_v2(s->db, sql, -1, &copy, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db,
			       "SELECT uid FROM tcp_events WHERE uid > ?1 ORDER BY uid LIMIT 1"
			       " OFFSET ?2",
			       -1, &bound, NULL) != SQLITE_OK) {
		tcp_audit_error(s->host, "%s: %s", s->path, sqlite3_errmsg(s->db));
		rc = SQLITE_ERROR;
		goto out;
	}
	char last[256] = "", upto[256];
	for (bool more = true; more;) {
		sqlite3_bind_text(bound, 1, last, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(bound, 2, MIGRATE_SLICE - 1);
		more = sqlite3_step(bound) == SQLITE_ROW;
		if (more)
			snprintf(upto, sizeof(upto), "%s", (const char *)sqlite3_column_text(bound, 0));
		sqlite3_reset(bound);
		sqlite3_bind_text(copy, 1, last, -1, SQLITE_TRANSIENT);
		if (more)
			sqlite3_bind_text(copy, 2, upto, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(copy, 2);
		if ((rc = step(copy)) != SQLITE_OK) {
			tcp_audit_error(s->host, "%s: migrating: %s", s->path, sqlite3_errmsg(s->db));
			goto out;
		}
		done += sqlite3_changes(s->db);
		if (more)
			snprintf(last, sizeof(last), "%s", upto);
		tcp_audit_info(s->host, "%s: migrated %" PRId64 " of %" PRId64 " events (%d%%)",
			       s->path, done, total, total ? (int)(done * 100 / total) : 100);
	}
	snprintf(sql, sizeof(sql),
		 "INSERT OR IGNORE INTO tcp_audit_events (uid, time_ns, kind, host, seq, ktime,"
		 " gap_stage, gap_lost) SELECT uid, time_ns, 1, host, seq, ktime, %s, lost"
		 " FROM tcp_audit_gaps;"
		 "DROP TABLE tcp_events_socket_info; DROP TABLE tcp_events; DROP TABLE tcp_audit_gaps;",
		 stage);
	rc = exec(s, sql);
out:
	sqlite3_finalize(bound);
	sqlite3_finalize(copy);
	return rc;
}

/* Whether a table or view has a column: 1, 0, or -1 if it cannot be read. */
static int has_column(struct sqlite_sink *s, const char *table, const char *column)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'",
		 table, column);
	int64_t n = query_int(s, sql);
	return n < 0 ? -1 : n > 0;
}

/* How many of the added columns tcp_audit_events lacks; -1 if it cannot be read. */
static int missing_columns(struct sqlite_sink *s)
{
	int missing = 0;

	for (size_t i = 0; i < N_ADDED; i++) {
		int has = has_column(s, "tcp_audit_events", added_columns[i].name);
		if (has < 0)
			return -1;
		missing += !has;
	}
	return missing;
}

/*
 * Whether the file has this tcp-audit's views: every one of them, and
 * tcp_events with its latest column (error).  0 also when one cannot be read.
 */
static bool views_current(struct sqlite_sink *s)
{
	char sql[160];

	for (int i = 0; i < SQL_N_VIEWS; i++) {
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = '%s'",
			 sql_view_names[i]);
		if (query_int(s, sql) != 1)
			return false;
	}
	return has_column(s, "tcp_events", "error") == 1;
}

/*
 * Brings a file of schema v2 up to date, inside the caller's transaction: the
 * columns tcp_audit_events lacks are added, and the views, when one is
 * missing or older than this tcp-audit's, are dropped and made again (SQLite
 * has no CREATE OR REPLACE VIEW).  A new or just migrated file gets its
 * views here.  *added: the columns added; *remade: whether the views were.
 */
static int complete_v2(struct sqlite_sink *s, const char *views, int *added, bool *remade)
{
	char sql[160];
	int rc;

	for (size_t i = 0; i < N_ADDED; i++) {
		int has = has_column(s, "tcp_audit_events", added_columns[i].name);
		if (has < 0) {
			tcp_audit_error(s->host, "%s: cannot read tcp_audit_events: %s", s->path,
					sqlite3_errmsg(s->db));
			return SQLITE_ERROR;
		}
		if (has)
			continue;
		snprintf(sql, sizeof(sql), "ALTER TABLE tcp_audit_events ADD COLUMN %s %s",
			 added_columns[i].name, added_columns[i].type);
		if ((rc = exec(s, sql)))
			return rc;
		++*added;
	}
	if (views_current(s))
		return SQLITE_OK;
	for (int i = 0; i < SQL_N_VIEWS; i++) {
		snprintf(sql, sizeof(sql), "DROP VIEW IF EXISTS %s", sql_view_names[i]);
		if ((rc = exec(s, sql)))
			return rc;
	}
	*remade = true;
	return exec(s, views);
}

static int migrate(struct sqlite_sink *s)
{
	char views[65536];
	int version, rc, added = 0;
	bool remade = false;

	version = (int)query_int(s, "PRAGMA user_version");
	if (sqlite3_errcode(s->db) == SQLITE_NOTADB) {
		tcp_audit_error(s->host, "%s is not an SQLite database", s->path);
		return -EINVAL;
	}
	if (version < 0) {
		tcp_audit_error(s->host, "cannot read %s: %s", s->path, sqlite3_errmsg(s->db));
		return -EIO;
	}
	if (version > atoi(SCHEMA_VERSION)) {
		tcp_audit_error(s->host,
				"%s has schema version %d, newer than this tcp-audit's %s: use a "
				"newer tcp-audit or another file",
				s->path, version, SCHEMA_VERSION);
		return -EINVAL;
	}
	/* the usual case, a file of the current schema: nothing to write */
	if (version == atoi(SCHEMA_VERSION) && missing_columns(s) == 0 && views_current(s))
		return 0;
	if (sql_views(views, sizeof(views), &view_forms, "CREATE VIEW") < 0)
		return -ENOMEM;
	/* a new file: bigger pages, set before anything is written */
	if (version == 0 && exec(s, "PRAGMA page_size = " PAGE_SIZE))
		return -EIO;
	if (exec(s, "BEGIN IMMEDIATE"))
		return -EIO;
	rc = version == 0 ? exec(s, EVENT_TABLE) : version == 1 ? migrate_v1(s) : SQLITE_OK;
	if (rc == SQLITE_OK)
		rc = complete_v2(s, views, &added, &remade);
	if (rc == SQLITE_OK)
		rc = exec(s, "PRAGMA user_version = " SCHEMA_VERSION);
	if (rc == SQLITE_OK)
		rc = exec(s, "COMMIT");
	if (rc != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	if (version < atoi(SCHEMA_VERSION))
		tcp_audit_info(s->host, "%s: schema version %s", s->path, SCHEMA_VERSION);
	else if (added || remade)
		tcp_audit_info(s->host, "%s: schema version %s brought up to date: %d column%s added%s",
			       s->path, SCHEMA_VERSION, added, added == 1 ? "" : "s",
			       remade ? ", views made again" : "");
	return 0;
}

/* The path; the default's directory (the state directory) is ours to create. */
static int choose_path(struct sqlite_sink *s)
{
	int r;

	if (s->cfg->path) {
		snprintf(s->path, sizeof(s->path), "%s", s->cfg->path);
	} else {
		if ((r = state_path(DEFAULT_FILE, s->path, sizeof(s->path))) < 0) {
			tcp_audit_error(s->host, "$STATE_DIRECTORY is too long");
			return r;
		}
		if ((r = make_state_directory()) < 0) {
			tcp_audit_error(s->host, "cannot create the directory of %s: %s", s->path,
					strerror(-r));
			return r;
		}
	}
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", s->path);
	const char *dir = dirname(copy);
	if (access(dir, W_OK | X_OK) != 0) {
		r = -errno;
		tcp_audit_error(s->host, "cannot create or write %s: directory %s: %s", s->path,
				dir, strerror(errno));
		return r;
	}
	/*
	 * An archive is readable by its owner and group only, whatever the
	 * umask: a new file is made here 0640 (SQLite would make it 0644), and
	 * SQLite gives its -wal and -shm files the database file's mode.  An
	 * existing file keeps the mode it has.
	 */
	int fd = strcmp(s->path, ":memory:") == 0
			 ? -1
			 : open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd >= 0) {
		if (fchmod(fd, 0640) != 0)
			tcp_audit_warning(s->host, "cannot make %s 0640: %s", s->path, strerror(errno));
		close(fd);
	}
	return 0;
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
	/* no lock per allocation for SQLite's memory counters (before it initializes) */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if ((r = choose_path(s)))
		goto fail;
	if (sqlite3_open_v2(s->path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		tcp_audit_error(host, "cannot open %s: %s", s->path,
				s->db ? sqlite3_errmsg(s->db) : "out of memory");
		r = -EIO;
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 2000);
	r = migrate(s);
	if (r)
		goto fail;
	if (exec(s, "PRAGMA journal_mode = WAL") || exec(s, sync_sql[s->cfg->synchronous]) ||
	    exec(s, "PRAGMA cache_size = -" CACHE_KIB)) {
		r = -EIO;
		goto fail;
	}
	if ((r = prepare_insert(s, 1, &s->insert)) ||
	    (r = prepare_insert(s, ROWS_PER_INSERT, &s->insert_many)) ||
	    (r = prepare(s, "BEGIN IMMEDIATE", &s->begin)) ||
	    (r = prepare(s, "COMMIT", &s->commit)) || (r = prepare(s, "ROLLBACK", &s->rollback)))
		goto fail;
	*self = s;
	return 0;
fail:
	sqlite_close(s);
	return r;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v, size_t max)
{
	if (v)
		sqlite3_bind_text(st, i, v, (int)strnlen(v, max), SQLITE_STATIC);
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

/* Text a row's parameters point to until the statement has run (SQLITE_STATIC). */
struct row_text {
	char uid[EVENT_UID_LEN], src[ADDR_TEXT_LEN], dst[ADDR_TEXT_LEN], machine[MACHINE_TEXT_LEN];
};

/* Binds one row at parameter base + 1...; u64 values are stored as SQLite's signed 64-bit
 * integers. */
static void bind_row(sqlite3_stmt *st, int base, const struct tcp_audit_event *e,
		     struct row_text *t)
{
	uint32_t v = e->valid;
	bool gap = e->kind == TCP_AUDIT_KIND_GAP, owner = !gap && (v & TCP_AUDIT_HAS_OWNER),
	     inode = !gap && (v & TCP_AUDIT_HAS_SOCK_INODE), reset = e->kind == TCP_AUDIT_KIND_RESET;

	event_uid(e, t->uid);
	sqlite3_bind_text(st, base + 1, t->uid, EVENT_UID_LEN - 1, SQLITE_STATIC);
	sqlite3_bind_int64(st, base + 2, (sqlite3_int64)e->time_ns);
	sqlite3_bind_int(st, base + 3, e->kind);
	bind_text(st, base + 4, v & TCP_AUDIT_HAS_HOST ? e->host : NULL, TCP_AUDIT_HOST_LEN);
	if (gap) {
		for (int i = 5; i <= 24; i++)
			sqlite3_bind_null(st, base + i);
		sqlite3_bind_int(st, base + 27, e->gap_stage);
		sqlite3_bind_int64(st, base + 28, (sqlite3_int64)e->gap_lost);
		for (int i = 29; i <= 31; i++)
			sqlite3_bind_null(st, base + i);
	} else {
		sqlite3_bind_int(st, base + 5, e->family);
		sqlite3_bind_text(st, base + 6, t->src, (int)format_addr(e->family, e->saddr, t->src),
				  SQLITE_STATIC);
		sqlite3_bind_text(st, base + 7, t->dst, (int)format_addr(e->family, e->daddr, t->dst),
				  SQLITE_STATIC);
		sqlite3_bind_int(st, base + 8, e->sport);
		sqlite3_bind_int(st, base + 9, e->dport);
		sqlite3_bind_int(st, base + 10, e->old_state);
		sqlite3_bind_int(st, base + 11, e->new_state);
		sqlite3_bind_int64(st, base + 12, e->pid_on_cpu);
		bind_opt(st, base + 13, v & TCP_AUDIT_HAS_TID, e->tid_on_cpu);
		bind_text(st, base + 14, e->comm_on_cpu, TCP_AUDIT_COMM_LEN);
		bind_opt(st, base + 15, owner, e->owner_pid);
		bind_opt(st, base + 16, owner, e->owner_uid);
		bind_text(st, base + 17, owner ? e->owner_comm : NULL, TCP_AUDIT_COMM_LEN);
		bind_opt(st, base + 18, v & TCP_AUDIT_HAS_COOKIE, (int64_t)e->sock_cookie);
		bind_opt(st, base + 19, inode, (int64_t)e->sock_inode);
		bind_opt(st, base + 20, inode, e->sock_uid);
		bind_opt(st, base + 21, inode, e->sock_gid);
		bind_opt(st, base + 22, v & TCP_AUDIT_HAS_SOCK_STATE, e->sock_state);
		bind_opt(st, base + 23, v & TCP_AUDIT_HAS_NETNS, e->netns);
		bind_opt(st, base + 24, v & TCP_AUDIT_HAS_CGROUP, (int64_t)e->cgroup_id);
		sqlite3_bind_null(st, base + 27);
		sqlite3_bind_null(st, base + 28);
		bind_opt(st, base + 29, reset, e->reset_direction);
		bind_opt(st, base + 30, reset && (v & TCP_AUDIT_HAS_RESET_REASON), e->reset_reason);
		bind_opt(st, base + 31, v & TCP_AUDIT_HAS_ERROR, e->error);
	}
	bind_opt(st, base + 25, v & TCP_AUDIT_HAS_SEQ, (int64_t)e->seq);
	bind_opt(st, base + 26, v & TCP_AUDIT_HAS_KTIME, (int64_t)e->ktime_ns);
	if (v & TCP_AUDIT_HAS_MACHINE)
		sqlite3_bind_text(st, base + 32, t->machine, (int)format_machine(e->machine, t->machine),
				  SQLITE_STATIC);
	else
		sqlite3_bind_null(st, base + 32);
}

/* The batch's rows, ROWS_PER_INSERT at a time, then the rest one by one. */
static int insert_all(struct sqlite_sink *s, const struct tcp_audit_event *ev, size_t n)
{
	struct row_text text[ROWS_PER_INSERT];
	size_t i = 0;
	int rc = SQLITE_OK;

	for (; rc == SQLITE_OK && n - i >= ROWS_PER_INSERT; i += ROWS_PER_INSERT) {
		for (int r = 0; r < ROWS_PER_INSERT; r++)
			bind_row(s->insert_many, r * N_COLUMNS, &ev[i + (size_t)r], &text[r]);
		rc = step(s->insert_many);
	}
	for (; rc == SQLITE_OK && i < n; i++) {
		bind_row(s->insert, 0, &ev[i], &text[0]);
		rc = step(s->insert);
	}
	return rc;
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

/* The seal's row, in the batch's transaction. */
static int insert_seal(struct sqlite_sink *s, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	if (event_uid_list(ev, n, &s->uids, &s->uids_cap) < 0)
		return SQLITE_NOMEM;
	sqlite3_stmt *st = s->insert_seal;
	sqlite3_bind_text(st, 1, seal->run, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seal->index);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)seal->time_ns); /* orders the seals of a file */
	sqlite3_bind_int64(st, 4, (sqlite3_int64)n);
	sqlite3_bind_text(st, 5, seal->text, (int)seal->len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, s->uids, (int)(n * EVENT_UID_BYTES), SQLITE_STATIC);
	return step(st);
}

static int write_batch(struct sqlite_sink *s, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	int rc = SQLITE_OK;

	/* the seals' table, made when the first seal comes (outside the batch's transaction) */
	if (seal && !s->insert_seal &&
	    (rc = sqlite3_exec(s->db, SEALS_TABLE, NULL, NULL, NULL)) == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db, "INSERT INTO tcp_audit_seals VALUES (?,?,?,?,?,?)", -1,
					&s->insert_seal, NULL);
	if (rc == SQLITE_OK)
		rc = step(s->begin);
	if (rc == SQLITE_OK)
		rc = insert_all(s, ev, n);
	if (rc == SQLITE_OK && seal)
		rc = insert_seal(s, ev, n, seal);
	if (rc == SQLITE_OK)
		rc = step(s->commit);
	if (rc == SQLITE_OK) {
		if (s->unavailable)
			tcp_audit_info(s->host, "%s is writable again", s->path);
		s->unavailable = false;
		return 0;
	}
	const char *msg = sqlite3_errmsg(s->db);
	if (!sqlite3_get_autocommit(s->db))
		step(s->rollback);
	if (transient(rc)) {
		if (!s->unavailable)
			tcp_audit_warning(s->host, "cannot write to %s: %s: holding events and retrying",
					  s->path, msg);
		s->unavailable = true;
		return TCP_AUDIT_RETRY;
	}
	tcp_audit_error(s->host, "writing to %s: %s", s->path, msg);
	return -EIO;
}

static int sqlite_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	return write_batch(self, ev, n, NULL);
}

static int sqlite_write_sealed(void *self, const struct tcp_audit_event *ev, size_t n,
			       const struct tcp_audit_seal *seal)
{
	return write_batch(self, ev, n, seal);
}

static void sqlite_close(void *self)
{
	struct sqlite_sink *s = self;

	if (!s)
		return;
	sqlite3_finalize(s->insert_seal);
	free(s->uids);
	sqlite3_finalize(s->insert);
	sqlite3_finalize(s->insert_many);
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
	.description = "an SQLite database: one row per event in tcp_audit_events, the "
		       "original's tables (tcp_events, tcp_events_socket_info) as views",
	.options = sqlite_options,
	.config_size = sizeof(struct sqlite_config),
	.sinker_open = sqlite_open,
	.sinker_write = sqlite_write,
	.sinker_close = sqlite_close,
	.sinker_write_sealed = sqlite_write_sealed,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &sqlite_plugin;
}
