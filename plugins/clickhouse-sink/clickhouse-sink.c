/* SPDX-License-Identifier: MIT */
/*
 * clickhouse sink: events into a ClickHouse table over its HTTP interface
 * (libcurl), one row per event, inserted as RowBinary in large batches.
 *
 * Every insert makes a part on the server, and merging parts costs the
 * server CPU, so rows are gathered here until batch_rows= or batch_bytes=
 * is reached, or the host flushes (about once a second, and when it has
 * caught up); an insert of fewer than batch_rows / 16 rows after another
 * such waits until interval= has passed since that one.  What a flush has sent
 * is stored: the host confirms its spool position only after a flush.
 *
 * Exactly once: an insert that fails is kept as it was sent and sent again,
 * byte for byte, before anything else (a ReplicatedMergeTree drops a block
 * it has already stored); the table is a ReplacingMergeTree keyed by the
 * event's uid, so a file replayed twice is stored once after a merge (or
 * read with FINAL).  A server that cannot be reached, or answers with one
 * of the errors that pass (a read-only table while ZooKeeper is away, too
 * many parts, a timeout), is an outage: TCP_AUDIT_RETRY, the events wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include <tcp-audit/plugin.h>

#include "byte-buffer.h"
#include "event-text.h"
#include "event-uid.h"
#include "kernel-helpers.h"

#define REPLY_MAX (1u << 20) /* of a query's answer kept (a table's columns) */
#define RETRY_AFTER_NS 500000000ull
#define SMALL_BATCH_DIVISOR 16
#define ROW_MAX 1024 /* more than a row takes: strings of at most 2 * 80 bytes */

struct ch_config {
	const char *url;
	const char *database;
	const char *table;
	const char *user;
	const char *password_file;
	const char *cluster;
	const char *ca_file;
	const char *seals_table;
	int64_t batch_rows;
	uint64_t batch_bytes;
	int64_t interval_ms;
	int64_t timeout_s;
	int64_t inserts; /* sent at a time */
};

/* A table of ours: the events', or the seals'. */
struct table {
	const char *name; /* table= or seals_table= */
	const struct column *columns;
	size_t n;
	const char *order_by;
	const char *shard_key; /* cluster=: of the Distributed table */
	const char *what;      /* for messages */
};

struct sender;

struct ch_sink {
	const struct tcp_audit_host *host;
	const struct ch_config *cfg;
	CURL *curl;
	struct curl_slist *headers;
	char store[512];   /* user@url/database.table, for messages */
	char *password;    /* from password_file=, never logged */
	struct table events, seals;
	char *insert_url;  /* url?query=INSERT ... (columns) FORMAT RowBinary */
	char *insert_url_plain; /* the same without the column list */
	bool exact;        /* the events' table has our columns only, in our order */
	char *seal_insert_url;
	char *query_url;   /* url, for statements sent as the body */
	bool set_up;       /* the table is there and checked */
	bool seals_set_up; /* --seal: the seals' table too */
	bool down;         /* in an outage: logged once */
	uint64_t next_try; /* CLOCK_MONOTONIC ns of the next attempt while down */
	/* rows gathered for the next insert, or the insert that failed */
	struct byte_buffer out;
	size_t rows;
	/* --seal: the seals of the batches in out, or of a failed insert */
	struct byte_buffer seal_out;
	size_t seal_rows;
	bool pending;         /* out or seal_out hold an insert sent before that failed */
	uint64_t last_insert; /* CLOCK_MONOTONIC ns */
	bool last_small;      /* the last insert was of fewer than batch_rows / 16 rows */
	uint64_t inserts, inserted;
	/* the last request's answer */
	struct byte_buffer reply; /* NUL-terminated */
	long status;
	char error[512]; /* a one-line description of the last failure */
	/* inserts= above 1: the other connections, each sending from a thread of its own */
	struct sender *senders;
	size_t n_senders;
	int connection; /* 1: the sink's; 2...: its senders' (for messages) */
};

/*
 * A connection that sends inserts handed to it, one at a time, from a thread
 * of its own, while the sink gathers the next (the server takes them in
 * parallel: 1M rows in 2.3 s with two at a time here, 2.6-3.0 s one after
 * the other).  Its twin is a sink of its own (connection, answer, buffers)
 * whose tables the sink has set up.  The sink's thread hands a batch over
 * (swapping buffers) only while it is IDLE, and touches the twin only then;
 * an insert that failed stays in the twin (held) and is sent again, byte for
 * byte, by the sink's thread before anything new.
 */
enum sender_state { SENDER_IDLE, SENDER_BUSY, SENDER_DONE };

struct sender {
	struct ch_sink *twin;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum sender_state state; /* guarded by mu */
	bool quit;               /* guarded by mu */
	int result;              /* of the insert when DONE */
	bool held;               /* its insert failed: it is sent again first */
};

static const struct tcp_audit_option ch_options[] = {
	{.key = "url",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "http://127.0.0.1:8123",
	 .help = "ClickHouse's HTTP interface (https:// for TLS)",
	 .offset = offsetof(struct ch_config, url)},
	{.key = "database",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "default",
	 .help = "database of the table (created when missing)",
	 .offset = offsetof(struct ch_config, database)},
	{.key = "table",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "tcp_events",
	 .help = "table of the events (created when missing, checked when present)",
	 .offset = offsetof(struct ch_config, table)},
	{.key = "user",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "ClickHouse user (default: the server's default user)",
	 .offset = offsetof(struct ch_config, user)},
	{.key = "password_file",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "file holding the user's password (its first line)",
	 .offset = offsetof(struct ch_config, password_file)},
	{.key = "ca_file",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "https: the CA certificates (PEM) the server's certificate must chain to "
		 "(default: the system's)",
	 .offset = offsetof(struct ch_config, ca_file)},
	{.key = "cluster",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "",
	 .help = "a cluster of the servers' remote_servers: TABLE_local on every shard "
		 "(ReplicatedReplacingMergeTree) and TABLE over them (Distributed), ON CLUSTER",
	 .offset = offsetof(struct ch_config, cluster)},
	{.key = "seals_table",
	 .type = TCP_AUDIT_OPT_STRING,
	 .def = "tcp_audit_seals",
	 .help = "--seal: table of the seals, in database= (created at the first seal)",
	 .offset = offsetof(struct ch_config, seals_table)},
	{.key = "batch_rows",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "100000",
	 .min = 1,
	 .max = 10000000,
	 .help = "rows gathered into one insert at most",
	 .offset = offsetof(struct ch_config, batch_rows)},
	{.key = "batch_bytes",
	 .type = TCP_AUDIT_OPT_SIZE,
	 .def = "32M",
	 .min = 65536,
	 .max = 1073741824,
	 .help = "bytes of RowBinary gathered into one insert at most",
	 .offset = offsetof(struct ch_config, batch_bytes)},
	{.key = "interval",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "1000",
	 .min = 0,
	 .max = 60000,
	 .help = "ms between two inserts of fewer than batch_rows/16 rows",
	 .offset = offsetof(struct ch_config, interval_ms)},
	{.key = "timeout",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "60",
	 .min = 1,
	 .max = 3600,
	 .help = "seconds an insert or query may take",
	 .offset = offsetof(struct ch_config, timeout_s)},
	{.key = "inserts",
	 .type = TCP_AUDIT_OPT_INT,
	 .def = "2",
	 .min = 1,
	 .max = 8,
	 .help = "inserts sent at a time, each on a connection of its own (the server "
		 "takes them in parallel)",
	 .offset = offsetof(struct ch_config, inserts)},
	{0},
};

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */

enum col_type {
	C_UUID,
	C_U32,
	C_U64,
	C_DATE,
	C_STRING,
	C_ENUM,
	C_N_ENUM, /* Nullable(Enum8(...)) */
	C_N_U16,
	C_N_U32,
	C_N_U64,
	C_N_ADDR,
	C_N_STRING,
};

typedef const char *(*name_fn)(unsigned v);

static const char *kind_name(unsigned kind)
{
	static const char *const names[] = {
		[TCP_AUDIT_KIND_STATE_CHANGE] = "state_change",
		[TCP_AUDIT_KIND_GAP] = "gap",
		[TCP_AUDIT_KIND_SNAPSHOT] = "snapshot",
		[TCP_AUDIT_KIND_RESET] = "reset",
	};
	return kind < sizeof(names) / sizeof(names[0]) ? names[kind] : NULL;
}

/* The columns, named as the JSON form's keys, in the order of a row. */
static const struct column {
	const char *name;
	int type;
	name_fn names; /* C_ENUM, C_N_ENUM */
} columns[] = {
	{"uid", C_UUID, NULL},
	{"time_ns", C_U64, NULL},
	{"date", C_DATE, NULL},
	{"host", C_STRING, NULL},
	{"machine", C_N_STRING, NULL},
	{"kind", C_ENUM, kind_name},
	{"stage", C_N_ENUM, gap_stage_name},
	{"lost", C_N_U64, NULL},
	{"direction", C_N_ENUM, reset_direction_name},
	{"reason", C_N_ENUM, reset_reason_name},
	{"family", C_N_ENUM, family_name},
	{"saddr", C_N_ADDR, NULL},
	{"sport", C_N_U16, NULL},
	{"daddr", C_N_ADDR, NULL},
	{"dport", C_N_U16, NULL},
	{"old_state", C_N_ENUM, tcp_state_name},
	{"new_state", C_N_ENUM, tcp_state_name},
	{"state", C_N_ENUM, tcp_state_name},
	{"error", C_N_STRING, NULL},
	{"pid_on_cpu", C_N_U32, NULL},
	{"tid_on_cpu", C_N_U32, NULL},
	{"comm_on_cpu", C_N_STRING, NULL},
	{"owner_pid", C_N_U32, NULL},
	{"owner_uid", C_N_U32, NULL},
	{"owner_comm", C_N_STRING, NULL},
	{"sock_cookie", C_N_U64, NULL},
	{"sock_inode", C_N_U64, NULL},
	{"sock_uid", C_N_U32, NULL},
	{"sock_gid", C_N_U32, NULL},
	{"sock_state", C_N_ENUM, sock_state_name},
	{"netns", C_N_U32, NULL},
	{"cgroup_id", C_N_U64, NULL},
	{"seq", C_N_U64, NULL},
	{"ktime", C_N_U64, NULL},
};
#define N_COLUMNS (sizeof(columns) / sizeof(columns[0]))

/*
 * --seal: a row per seal in seals_table=, written after the rows of its
 * batch (ClickHouse has no transactions: a batch stored without its seal,
 * cut short by a crash, is sent again after the restart under the next
 * run's seals).  The seal's text as tcp-audit made it, and the uids of its
 * events in their order, 16 bytes each, for tcp-audit verify.
 */
static const struct column seal_columns[] = {
	{"run", C_STRING, NULL},
	{"idx", C_U64, NULL},
	{"time_ns", C_U64, NULL},
	{"date", C_DATE, NULL},
	{"count", C_U32, NULL},
	{"seal", C_STRING, NULL},
	{"uids", C_STRING, NULL},
};
#define N_SEAL_COLUMNS (sizeof(seal_columns) / sizeof(seal_columns[0]))

static const char *const type_names[] = {
	[C_UUID] = "UUID",
	[C_U32] = "UInt32",
	[C_U64] = "UInt64",
	[C_DATE] = "Date",
	[C_STRING] = "String",
	[C_ENUM] = "Enum8",
	[C_N_ENUM] = "Nullable(Enum8",
	[C_N_U16] = "Nullable(UInt16)",
	[C_N_U32] = "Nullable(UInt32)",
	[C_N_U64] = "Nullable(UInt64)",
	[C_N_ADDR] = "Nullable(FixedString(16))",
	[C_N_STRING] = "Nullable(String)",
};

/*
 * An enum's type: every byte value has a name, so no value an event can
 * carry is refused or lost: the kernel's name where there is one, else its
 * number ('13').  The stored byte is the value itself (Enum8 is signed: 255
 * is -1).
 */
static void enum_type(struct byte_buffer *t, name_fn names)
{
	byte_buffer_printf(t, "Enum8(");
	for (unsigned v = 0; v < 256; v++) {
		const char *name = names(v);
		if (name)
			byte_buffer_printf(t, "%s'%s' = %d", v ? ", " : "", name, (int8_t)v);
		else
			byte_buffer_printf(t, "%s'%u' = %d", v ? ", " : "", v, (int8_t)v);
	}
	byte_buffer_printf(t, ")");
}

static void column_type(struct byte_buffer *t, const struct column *c)
{
	if (c->type == C_ENUM) {
		enum_type(t, c->names);
	} else if (c->type == C_N_ENUM) {
		byte_buffer_printf(t, "Nullable(");
		enum_type(t, c->names);
		byte_buffer_printf(t, ")");
	} else {
		byte_buffer_printf(t, "%s", type_names[c->type]);
	}
}

/* ------------------------------------------------------------------------ */
/* HTTP                                                                      */

static size_t on_reply(char *data, size_t size, size_t n, void *user)
{
	struct ch_sink *s = user;
	size_t len = size * n, keep = len;

	if (s->reply.len + keep > REPLY_MAX)
		keep = REPLY_MAX - s->reply.len;
	if (keep) {
		if (byte_buffer_reserve(&s->reply, keep + 1))
			return 0; /* the transfer fails: reported as out of memory */
		byte_buffer_put(&s->reply, data, keep);
		s->reply.p[s->reply.len] = '\0';
	}
	return len;
}

/* ClickHouse's error code in an answer ("Code: 242, e.displayText() = ..."), or -1. */
static int error_code(const char *reply)
{
	const char *p = reply ? strstr(reply, "Code: ") : NULL;

	return p ? atoi(p + 6) : -1;
}

/*
 * Errors that pass: the server is busy, restarting, out of disk space, or
 * cannot reach ZooKeeper or another shard for now.  TIMEOUT_EXCEEDED,
 * TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR, NO_ZOOKEEPER,
 * MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, NOT_ENOUGH_SPACE, TOO_MANY_PARTS,
 * ALL_CONNECTION_TRIES_FAILED, UNKNOWN_STATUS_OF_INSERT, KEEPER_EXCEPTION.
 */
static bool transient_code(int code)
{
	static const int codes[] = {159, 202, 209, 210, 225, 241, 242, 243, 252, 279, 319, 999};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (codes[i] == code)
			return true;
	return false;
}

/*
 * A full disk under the server: a write that failed with ENOSPC or EDQUOT
 * (18.16 says "Cannot write to file ..., errno: 28, strerror: No space left
 * on device", CANNOT_WRITE_TO_FILE_DESCRIPTOR, whatever the file).  It
 * passes once there is room; any other errno does not.
 */
static bool disk_full(const char *reply)
{
	char full[32], quota[32];

	snprintf(full, sizeof(full), "errno: %d,", ENOSPC);
	snprintf(quota, sizeof(quota), "errno: %d,", EDQUOT);
	return reply && (strstr(reply, full) || strstr(reply, quota));
}

/* The reply's first line, with the password (if the server ever echoed it) blotted out. */
static void describe_reply(struct ch_sink *s)
{
	const char *msg = s->reply.p ? s->reply.p : "";
	size_t n = strcspn(msg, "\n");

	snprintf(s->error, sizeof(s->error), "HTTP %ld: %.*s", s->status, (int)n, msg);
	if (s->password && *s->password)
		for (char *p = strstr(s->error, s->password); p; p = strstr(p, s->password))
			memset(p, '*', strlen(s->password));
	n = strlen(s->error);
	while (n && (s->error[n - 1] == ' ' || s->error[n - 1] == '\r'))
		s->error[--n] = '\0';
}

/*
 * One request: body POSTed to url.  0 when the server answered 200 (its
 * answer in s->reply), TCP_AUDIT_RETRY when it could not be reached or
 * answered with an error that passes, -EIO for any other error, -ENOMEM.
 * s->error says what went wrong.
 */
static int request(struct ch_sink *s, const char *url, const char *body, size_t len)
{
	s->reply.len = 0;
	if (s->reply.p)
		s->reply.p[0] = '\0';
	s->status = 0;
	curl_easy_setopt(s->curl, CURLOPT_URL, url);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	CURLcode rc = curl_easy_perform(s->curl);
	if (rc == CURLE_WRITE_ERROR)
		return -ENOMEM;
	if (rc != CURLE_OK) {
		snprintf(s->error, sizeof(s->error), "%s%s", curl_easy_strerror(rc),
			 rc == CURLE_PEER_FAILED_VERIFICATION
				 ? " (ca_file= names the CA of the server's certificate)"
				 : "");
		/* a URL or TLS set-up that cannot work is a mistake, not an outage */
		return rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
				       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM ||
				       rc == CURLE_PEER_FAILED_VERIFICATION
			       ? -EIO
			       : TCP_AUDIT_RETRY;
	}
	curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status == 200)
		return 0;
	describe_reply(s);
	return s->status == 503 || transient_code(error_code(s->reply.p)) || disk_full(s->reply.p)
		       ? TCP_AUDIT_RETRY
		       : -EIO;
}

static int query(struct ch_sink *s, const char *sql)
{
	return request(s, s->query_url, sql, strlen(sql));
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                    */

/* A name that needs no quoting: letters, digits, '_', not starting with a digit. */
static bool plain_name(const char *name)
{
	if (!*name || (*name >= '0' && *name <= '9'))
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return true;
}

/*
 * A table of ours; with cluster=, the shard-local one (TABLE_local on every
 * shard, its replicas kept in step through ZooKeeper, where a block inserted
 * twice is dropped the second time).  Merges keep one row per key: rows
 * stored twice anyway are there once after them.
 */
static void create_table_sql(const struct ch_sink *s, const struct table *tb,
			     struct byte_buffer *t)
{
	const struct ch_config *cfg = s->cfg;
	bool cluster = *cfg->cluster;

	byte_buffer_printf(t, "CREATE TABLE IF NOT EXISTS %s.%s%s", cfg->database, tb->name,
			   cluster ? "_local" : "");
	if (cluster)
		byte_buffer_printf(t, " ON CLUSTER %s", cfg->cluster);
	byte_buffer_printf(t, " (");
	for (size_t i = 0; i < tb->n; i++) {
		byte_buffer_printf(t, "%s%s ", i ? ", " : "", tb->columns[i].name);
		column_type(t, &tb->columns[i]);
	}
	if (cluster)
		byte_buffer_printf(t, ") ENGINE = ReplicatedReplacingMergeTree("
				      "'/clickhouse/tables/{shard}/%s.%s', '{replica}')",
				   cfg->database, tb->name);
	else
		byte_buffer_printf(t, ") ENGINE = ReplacingMergeTree()");
	byte_buffer_printf(t, " PARTITION BY toYYYYMM(date) ORDER BY (%s)", tb->order_by);
}

/*
 * cluster=: the table inserts go to and queries read, over the shard-local
 * ones.  Its sharding key is deterministic (a hash of the uid, of the run
 * for seals), so an insert sent again is split into the same blocks for the
 * same shards, which drop what they already have; and even, whatever the
 * hosts' volumes.
 */
static void distributed_sql(const struct ch_sink *s, const struct table *tb, char *out,
			    size_t size)
{
	const struct ch_config *cfg = s->cfg;

	snprintf(out, size,
		 "CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s AS %s.%s_local ENGINE ="
		 " Distributed(%s, %s, %s_local, %s)",
		 cfg->database, tb->name, cfg->cluster, cfg->database, tb->name, cfg->cluster,
		 cfg->database, tb->name, tb->shard_key);
}

/*
 * Checks an existing table: every column of ours there with our type (an
 * enum by its kind: a newer tcp-audit may name more values).  The answer is
 * system.columns as TabSeparatedRaw: name TAB type per line.
 */
static int check_columns(struct ch_sink *s, const struct table *tb, size_t *found)
{
	*found = 0;
	for (size_t i = 0; i < tb->n; i++) {
		const struct column *c = &tb->columns[i];
		size_t nlen = strlen(c->name);
		const char *line = s->reply.p, *type = NULL;
		while (line && *line) {
			if (strncmp(line, c->name, nlen) == 0 && line[nlen] == '\t') {
				type = line + nlen + 1;
				break;
			}
			line = strchr(line, '\n');
			line = line ? line + 1 : NULL;
		}
		if (!type)
			continue;
		/* type_names[] is the whole type but for an enum's, which ends with its values */
		size_t tlen = strcspn(type, "\n"), wlen = strlen(type_names[c->type]);
		bool enumerated = c->type == C_ENUM || c->type == C_N_ENUM;
		if ((enumerated ? tlen < wlen : tlen != wlen) ||
		    strncmp(type, type_names[c->type], wlen) != 0) {
			tcp_audit_error(s->host,
					"%s: %s.%s exists with column %s of type %.*s, not %s: "
					"not a table of tcp-audit's (%s= names another)",
					s->store, s->cfg->database, tb->name, c->name,
					(int)(tlen > 80 ? 80 : tlen), type, type_names[c->type],
					tb->what);
			return -EINVAL;
		}
		(*found)++;
	}
	return 0;
}

/*
 * Whether the table's columns (the answer to set_up_table's question, in
 * their order) are tb's, no more, in the same order.
 */
static bool same_columns(const struct ch_sink *s, const struct table *tb)
{
	const char *line = s->reply.p;
	size_t i = 0;

	for (; line && *line; i++) {
		size_t nlen = strcspn(line, "\t\n");
		if (i >= tb->n || strlen(tb->columns[i].name) != nlen ||
		    strncmp(line, tb->columns[i].name, nlen) != 0)
			return false;
		line = strchr(line, '\n');
		line = line ? line + 1 : NULL;
	}
	return i == tb->n;
}

/* Creates the database and a table when missing, checks them when present. */
static int set_up_table(struct ch_sink *s, const struct table *tb)
{
	char sql[1024];
	int r;

	/* asked first: the statements ON CLUSTER wait for every shard, so only when needed */
	snprintf(sql, sizeof(sql),
		 "SELECT name, type FROM system.columns WHERE database = '%s' AND table = '%s'"
		 " FORMAT TabSeparatedRaw",
		 s->cfg->database, tb->name);
	if ((r = query(s, sql)) != 0)
		return r;
	if (s->reply.len == 0) {
		bool cluster = *s->cfg->cluster;
		snprintf(sql, sizeof(sql), "CREATE DATABASE IF NOT EXISTS %s%s%s", s->cfg->database,
			 cluster ? " ON CLUSTER " : "", s->cfg->cluster);
		if ((r = query(s, sql)) != 0)
			return r;
		struct byte_buffer t = {0};
		create_table_sql(s, tb, &t);
		r = t.failed ? -ENOMEM : request(s, s->query_url, t.p, t.len);
		byte_buffer_free(&t);
		if (r == 0 && cluster) {
			distributed_sql(s, tb, sql, sizeof(sql));
			r = query(s, sql);
		}
		if (r == 0)
			tcp_audit_info(s->host, "%s: created %s.%s%s", s->store, s->cfg->database,
				       tb->name, cluster ? " on every shard" : "");
		if (r == 0 && tb == &s->events)
			s->exact = true;
		return r;
	}
	size_t found;
	if ((r = check_columns(s, tb, &found)) != 0)
		return r;
	if (found != tb->n) {
		tcp_audit_error(s->host,
				"%s: %s.%s exists without %zu of tcp-audit's columns: not a table "
				"of tcp-audit's (%s= names another)",
				s->store, s->cfg->database, tb->name, tb->n - found, tb->what);
		return -EINVAL;
	}
	if (tb == &s->events) {
		s->exact = same_columns(s, tb);
		if (!s->exact)
			tcp_audit_info(s->host, "%s: the table has columns this tcp-audit does not "
						"write, or ours in another order: inserts name theirs",
				       s->store);
	}
	return 0;
}

/* The password_file='s first line. */
static int read_password(struct ch_sink *s)
{
	const char *path = s->cfg->password_file;
	char line[1024];
	FILE *f;

	if (!*path)
		return 0;
	f = fopen(path, "re");
	if (!f) {
		int err = errno;
		tcp_audit_error(s->host, "cannot read password_file=%s: %s", path, strerror(err));
		return -err;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	s->password = strdup(line);
	memset(line, 0, sizeof(line));
	return s->password ? 0 : -ENOMEM;
}

/* A header "Name: value"; NULL on out of memory. */
static struct curl_slist *add_header(struct curl_slist *list, const char *name,
				     const char *value)
{
	size_t n = strlen(name) + strlen(value) + 3;
	char *h = malloc(n);

	if (!h)
		return NULL;
	snprintf(h, n, "%s: %s", name, value);
	struct curl_slist *l = curl_slist_append(list, h);
	memset(h, 0, n);
	free(h);
	return l;
}

/*
 * The URL of an insert into a table of ours; NULL on out of memory.  With
 * the column list, a table with more columns (a newer tcp-audit's) takes it;
 * without, the server has less to do (~10% of its CPU for these rows), for
 * a table that has our columns only.
 */
static char *insert_url(struct ch_sink *s, const struct table *tb, bool column_list)
{
	const struct ch_config *cfg = s->cfg;
	char insert[4096];
	size_t n = 0;

	n += (size_t)snprintf(insert, sizeof(insert), "INSERT INTO %s.%s ", cfg->database,
			      tb->name);
	for (size_t i = 0; column_list && i < tb->n && n < sizeof(insert); i++)
		n += (size_t)snprintf(insert + n, sizeof(insert) - n, "%s%s", i ? ", " : "(",
				      tb->columns[i].name);
	if (n < sizeof(insert))
		snprintf(insert + n, sizeof(insert) - n, "%sFORMAT RowBinary",
			 column_list ? ") " : "");
	char *escaped = curl_easy_escape(s->curl, insert, 0), *url;
	if (!escaped)
		return NULL;
	/*
	 * Through a Distributed table, an insert returns once every shard has its
	 * rows, or fails (an outage, sent again) instead of being queued on disk
	 * where a failure would not be seen.
	 */
	if (asprintf(&url, "%s?query=%s%s", s->query_url, escaped,
		     *cfg->cluster ? "&insert_distributed_sync=1" : "") < 0)
		url = NULL;
	curl_free(escaped);
	return url;
}

static int set_up_transfer(struct ch_sink *s)
{
	const struct ch_config *cfg = s->cfg;
	size_t len = strlen(cfg->url);
	bool slash = len && cfg->url[len - 1] == '/';

	if (asprintf(&s->query_url, "%s%s", cfg->url, slash ? "" : "/") < 0)
		s->query_url = NULL;
	if (s->query_url)
		s->insert_url = insert_url(s, &s->events, true);
	if (s->insert_url)
		s->insert_url_plain = insert_url(s, &s->events, false);
	if (s->insert_url_plain)
		s->seal_insert_url = insert_url(s, &s->seals, true);
	if (!s->seal_insert_url)
		return -ENOMEM;

	/* an empty Expect: no waiting for "100 Continue" before a large body */
	struct curl_slist *h = curl_slist_append(NULL, "Expect:");
	if (h && *cfg->user)
		h = add_header(h, "X-ClickHouse-User", cfg->user);
	if (h && s->password)
		h = add_header(h, "X-ClickHouse-Key", s->password);
	if (!h)
		return -ENOMEM;
	s->headers = h;
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, s->headers);
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(s->curl, CURLOPT_TIMEOUT, (long)cfg->timeout_s);
	curl_easy_setopt(s->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	if (*cfg->ca_file)
		curl_easy_setopt(s->curl, CURLOPT_CAINFO, cfg->ca_file);
	return 0;
}

static void describe_store(struct ch_sink *s)
{
	const char *url = s->cfg->url, *host = strstr(url, "://");

	host = host ? host + 3 : url;
	snprintf(s->store, sizeof(s->store), "%s@%.*s/%s.%s",
		 *s->cfg->user ? s->cfg->user : "default", (int)strcspn(host, "/?"), host,
		 s->cfg->database, s->cfg->table);
}

static void ch_close(void *self);
static int start_senders(struct ch_sink *s);

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int ch_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const struct ch_config *cfg = config;
	struct ch_sink *s;
	int r;

	if (!plain_name(cfg->database) || !plain_name(cfg->table) ||
	    !plain_name(cfg->seals_table) || (*cfg->cluster && !plain_name(cfg->cluster))) {
		tcp_audit_error(host, "database=, table=, seals_table= and cluster= take letters, "
				      "digits and '_' only: '%s.%s', '%s'%s%s",
				cfg->database, cfg->table, cfg->seals_table,
				*cfg->cluster ? " on " : "", cfg->cluster);
		return -EINVAL;
	}
	if (strcmp(cfg->table, cfg->seals_table) == 0) {
		tcp_audit_error(host, "table= and seals_table= name the same table: '%s'",
				cfg->table);
		return -EINVAL;
	}
	if (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0) {
		tcp_audit_error(host, "url= must start with http:// or https://: '%s'", cfg->url);
		return -EINVAL;
	}
	pthread_once(&once, global_init);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->host = host;
	s->cfg = cfg;
	s->connection = 1;
	s->events = (struct table){cfg->table, columns, N_COLUMNS, "host, time_ns, uid",
				   "cityHash64(reinterpretAsString(uid))", "table"};
	s->seals = (struct table){cfg->seals_table, seal_columns, N_SEAL_COLUMNS, "run, idx",
				  "cityHash64(run)", "seals_table"};
	describe_store(s);
	s->curl = curl_easy_init();
	r = s->curl ? read_password(s) : -ENOMEM;
	if (r == 0)
		r = set_up_transfer(s);
	if (r == 0)
		r = set_up_table(s, &s->events);
	if (r == TCP_AUDIT_RETRY) {
		/* capture from the start; the events wait (spool or memory) */
		tcp_audit_warning(s->host,
				  "%s: %s; capturing anyway, holding the events and retrying",
				  s->store, s->error);
		s->down = true;
		s->next_try = clock_now_ns(CLOCK_MONOTONIC) + RETRY_AFTER_NS;
		r = 0;
	} else if (r == 0) {
		s->set_up = true;
	} else if (r == -EIO) {
		tcp_audit_error(s->host, "%s: cannot set up the table: %s", s->store, s->error);
	}
	if (r == 0 && (r = start_senders(s)) != 0)
		tcp_audit_error(s->host, "%s: cannot start the connections of inserts=%" PRId64 ": %s",
				s->store, cfg->inserts, strerror(-r));
	if (r) {
		ch_close(s);
		return r;
	}
	*self = s;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* RowBinary                                                                 */

static void put(struct byte_buffer *b, const void *p, size_t n)
{
	byte_buffer_put(b, p, n);
}

static void put_u8(struct byte_buffer *b, uint8_t v)
{
	b->p[b->len++] = (char)v;
}

/* Numbers are little-endian, as on the hosts tcp-audit runs on. */
static void put_u16(struct byte_buffer *b, uint16_t v)
{
	put(b, &v, 2);
}

static void put_u32(struct byte_buffer *b, uint32_t v)
{
	put(b, &v, 4);
}

static void put_u64(struct byte_buffer *b, uint64_t v)
{
	put(b, &v, 8);
}

/* Nullable: a byte, 1 for NULL, then the value when there is one. */
static bool put_null_flag(struct byte_buffer *b, bool valid)
{
	put_u8(b, valid ? 0 : 1);
	return valid;
}

static void put_n_u16(struct byte_buffer *b, bool valid, uint16_t v)
{
	if (put_null_flag(b, valid))
		put_u16(b, v);
}

static void put_n_u32(struct byte_buffer *b, bool valid, uint32_t v)
{
	if (put_null_flag(b, valid))
		put_u32(b, v);
}

static void put_n_u64(struct byte_buffer *b, bool valid, uint64_t v)
{
	if (put_null_flag(b, valid))
		put_u64(b, v);
}

static void put_n_enum(struct byte_buffer *b, bool valid, uint8_t v)
{
	if (put_null_flag(b, valid))
		put_u8(b, v);
}

/* A string's length, as LEB128. */
static void put_length(struct byte_buffer *b, size_t n)
{
	do {
		put_u8(b, (uint8_t)((n & 0x7f) | (n > 0x7f ? 0x80 : 0)));
		n >>= 7;
	} while (n);
}

/* A string: its length, then its bytes. */
static void put_bytes(struct byte_buffer *b, const char *p, size_t n)
{
	put_length(b, n);
	put(b, p, n);
}

/* Text as valid UTF-8 (the JSON form's convention for other bytes). */
static void put_text(struct byte_buffer *b, const char *v, size_t max)
{
	char utf8[2 * TCP_AUDIT_HOST_LEN];

	put_bytes(b, utf8, bytes_to_utf8(v, strnlen(v, max), utf8));
}

static void put_n_text(struct byte_buffer *b, bool valid, const char *v, size_t max)
{
	if (put_null_flag(b, valid))
		put_text(b, v, max);
}

/* 16 bytes: an IPv6 address, or an IPv4 one mapped (::ffff:a.b.c.d) */
static void put_n_addr(struct byte_buffer *b, bool valid, unsigned family, const uint8_t addr[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (!put_null_flag(b, valid))
		return;
	if (family == AF_INET) {
		put(b, mapped, sizeof(mapped));
		put(b, addr, 4);
	} else {
		put(b, addr, 16);
	}
}

/* The error's name (ECONNREFUSED), or its number. */
static void put_n_error(struct byte_buffer *b, bool valid, unsigned err)
{
	char num[24];
	const char *name = errno_name(err);

	if (!put_null_flag(b, valid))
		return;
	if (!name) {
		snprintf(num, sizeof(num), "%u", err);
		name = num;
	}
	put_bytes(b, name, strlen(name));
}

/* One row: the fields the JSON form has for this kind of event, NULL for the others. */
static void event_row(struct byte_buffer *b, const struct tcp_audit_event *e)
{
	uint8_t uid[EVENT_UID_BYTES];
	uint32_t v = e->valid;
	bool gap = e->kind == TCP_AUDIT_KIND_GAP, sock = !gap,
	     reset = e->kind == TCP_AUDIT_KIND_RESET, snapshot = e->kind == TCP_AUDIT_KIND_SNAPSHOT,
	     on_cpu = sock && !snapshot, owner = sock && (v & TCP_AUDIT_HAS_OWNER),
	     inode = sock && (v & TCP_AUDIT_HAS_SOCK_INODE);

	/* UUID: its two 64-bit halves, each little-endian, the first half first */
	event_uid_bytes(e, uid);
	for (int half = 0; half < 2; half++)
		for (int i = 7; i >= 0; i--)
			put_u8(b, uid[half * 8 + i]);
	put_u64(b, e->time_ns);
	put_u16(b, (uint16_t)(e->time_ns / 86400000000000ull));
	if (v & TCP_AUDIT_HAS_HOST)
		put_text(b, e->host, TCP_AUDIT_HOST_LEN);
	else
		put_bytes(b, "", 0);
	if (put_null_flag(b, v & TCP_AUDIT_HAS_MACHINE)) {
		char machine[MACHINE_TEXT_LEN];
		put_bytes(b, machine, format_machine(e->machine, machine));
	}
	put_u8(b, e->kind);
	put_n_enum(b, gap, e->gap_stage);
	put_n_u64(b, gap, e->gap_lost);
	put_n_enum(b, reset, e->reset_direction);
	put_n_enum(b, reset && (v & TCP_AUDIT_HAS_RESET_REASON), e->reset_reason);
	put_n_enum(b, sock, (uint8_t)e->family);
	put_n_addr(b, sock, e->family, e->saddr);
	put_n_u16(b, sock, e->sport);
	put_n_addr(b, sock, e->family, e->daddr);
	put_n_u16(b, sock, e->dport);
	put_n_enum(b, sock && !reset, e->old_state);
	put_n_enum(b, sock && !reset, e->new_state);
	put_n_enum(b, reset && e->new_state, e->new_state);
	put_n_error(b, e->kind == TCP_AUDIT_KIND_STATE_CHANGE && (v & TCP_AUDIT_HAS_ERROR),
		    e->error);
	put_n_u32(b, on_cpu, e->pid_on_cpu);
	put_n_u32(b, on_cpu && (v & TCP_AUDIT_HAS_TID), e->tid_on_cpu);
	put_n_text(b, on_cpu, e->comm_on_cpu, TCP_AUDIT_COMM_LEN);
	put_n_u32(b, owner, e->owner_pid);
	put_n_u32(b, owner, e->owner_uid);
	put_n_text(b, owner, e->owner_comm, TCP_AUDIT_COMM_LEN);
	put_n_u64(b, sock && (v & TCP_AUDIT_HAS_COOKIE), e->sock_cookie);
	put_n_u64(b, inode, e->sock_inode);
	put_n_u32(b, inode, e->sock_uid);
	put_n_u32(b, inode, e->sock_gid);
	put_n_enum(b, sock && (v & TCP_AUDIT_HAS_SOCK_STATE), e->sock_state);
	put_n_u32(b, sock && (v & TCP_AUDIT_HAS_NETNS), e->netns);
	put_n_u64(b, sock && (v & TCP_AUDIT_HAS_CGROUP), e->cgroup_id);
	put_n_u64(b, v & TCP_AUDIT_HAS_SEQ, e->seq);
	put_n_u64(b, v & TCP_AUDIT_HAS_KTIME, e->ktime_ns);
}

/* ------------------------------------------------------------------------ */
/* Inserts                                                                   */

static void note_outage(struct ch_sink *s)
{
	if (!s->down)
		tcp_audit_warning(s->host, "%s is unavailable (%s): holding the events and retrying",
				  s->store, s->error);
	s->down = true;
	s->next_try = clock_now_ns(CLOCK_MONOTONIC) + RETRY_AFTER_NS;
}

/* While down: whether it is time to try again (the host's backoff aside). */
static bool may_try(struct ch_sink *s)
{
	return !s->down || clock_now_ns(CLOCK_MONOTONIC) >= s->next_try;
}

static bool small_batch(const struct ch_sink *s);

/* The table (made and checked once) before its first insert. */
static int ensure_table(struct ch_sink *s, const struct table *tb, bool *done)
{
	if (*done)
		return 0;
	int r = set_up_table(s, tb);
	if (r == -EIO)
		tcp_audit_error(s->host, "%s: cannot set up %s.%s: %s", s->store, s->cfg->database,
				tb->name, s->error);
	if (r == 0)
		*done = true;
	return r;
}

/* One insert of rows in b into tb; on success b is emptied. */
static int insert(struct ch_sink *s, const struct table *tb, const char *url,
		  struct byte_buffer *b, size_t *rows)
{
	uint64_t start = clock_now_ns(CLOCK_MONOTONIC);
	int r = request(s, url, b->p, b->len);

	s->last_insert = clock_now_ns(CLOCK_MONOTONIC);
	if (r == -EIO)
		tcp_audit_error(s->host, "%s: cannot insert %zu rows into %s: %s", s->store, *rows,
				tb->name, s->error);
	if (r)
		return r;
	tcp_audit_debug(s->host, "%s: inserted %zu rows (%zu bytes) into %s in %.0f ms (connection %d)",
			s->store, *rows, b->len, tb->name, (double)(s->last_insert - start) / 1e6,
			s->connection);
	b->len = 0;
	*rows = 0;
	return 0;
}

/*
 * Sends the rows s holds as one insert, then the seals of their batches
 * (--seal).  On failure what was not stored stays as it is, to be sent again
 * byte for byte.  (A sender's thread runs this on its twin.)
 */
static int send_batch(struct ch_sink *s)
{
	size_t rows = s->rows;
	int r = 0;

	if (s->rows)
		r = insert(s, &s->events, s->exact ? s->insert_url_plain : s->insert_url, &s->out,
			   &s->rows);
	if (r == 0 && rows) {
		s->inserts++;
		s->inserted += rows;
		s->last_small = rows < (size_t)s->cfg->batch_rows / SMALL_BATCH_DIVISOR;
	}
	if (r == 0 && s->seal_rows)
		r = insert(s, &s->seals, s->seal_insert_url, &s->seal_out, &s->seal_rows);
	return r;
}

/* After an insert: an outage noted (logged once), or its end. */
static void note_result(struct ch_sink *s, int r, const char *error)
{
	if (r == TCP_AUDIT_RETRY) {
		if (error != s->error)
			snprintf(s->error, sizeof(s->error), "%s", error);
		note_outage(s);
	} else if (r == 0) {
		if (s->down)
			tcp_audit_info(s->host, "%s is back", s->store);
		s->down = false;
	}
}

/* The tables of what s holds, before an insert into them. */
static int ensure_tables(struct ch_sink *s)
{
	int r = 0;

	if (s->rows)
		r = ensure_table(s, &s->events, &s->set_up);
	if (r == 0 && s->seal_rows)
		r = ensure_table(s, &s->seals, &s->seals_set_up);
	return r;
}

/* Sends the gathered rows on the sink's own connection (see send_batch). */
static int send_rows(struct ch_sink *s)
{
	if (s->rows == 0 && s->seal_rows == 0)
		return 0;
	if (!may_try(s))
		return TCP_AUDIT_RETRY;
	int r = ensure_tables(s);
	if (r == 0) {
		s->pending = true;
		r = send_batch(s);
	}
	note_result(s, r, s->error);
	if (r == 0)
		s->pending = false;
	return r;
}

/* ------------------------------------------------------------------------ */
/* Senders (inserts= above 1)                                                */

static void *sender_main(void *arg)
{
	struct sender *sd = arg;

	pthread_mutex_lock(&sd->mu);
	for (;;) {
		while (sd->state != SENDER_BUSY && !sd->quit)
			pthread_cond_wait(&sd->cv, &sd->mu);
		if (sd->state != SENDER_BUSY)
			break; /* quit, idle */
		pthread_mutex_unlock(&sd->mu);
		int r = send_batch(sd->twin);
		pthread_mutex_lock(&sd->mu);
		sd->result = r;
		sd->state = SENDER_DONE;
		pthread_cond_broadcast(&sd->cv);
	}
	pthread_mutex_unlock(&sd->mu);
	return NULL;
}

/*
 * Takes the results of the senders' inserts that have ended (waiting for
 * those still being sent when wait): a failed one is held, to be sent again.
 */
static void reap(struct ch_sink *s, bool wait)
{
	for (size_t i = 0; i < s->n_senders; i++) {
		struct sender *sd = &s->senders[i];
		pthread_mutex_lock(&sd->mu);
		while (wait && sd->state == SENDER_BUSY)
			pthread_cond_wait(&sd->cv, &sd->mu);
		bool done = sd->state == SENDER_DONE;
		int r = sd->result;
		if (done)
			sd->state = SENDER_IDLE;
		pthread_mutex_unlock(&sd->mu);
		if (!done)
			continue;
		sd->held = r != 0;
		note_result(s, r, sd->twin->error);
	}
}

/*
 * Sends the held inserts again, byte for byte, from this thread (their
 * senders are idle); TCP_AUDIT_RETRY or -EIO while one still fails.
 */
static int send_held(struct ch_sink *s)
{
	for (size_t i = 0; i < s->n_senders; i++) {
		struct sender *sd = &s->senders[i];
		if (!sd->held)
			continue;
		if (!may_try(s))
			return TCP_AUDIT_RETRY;
		int r = send_batch(sd->twin);
		note_result(s, r, sd->twin->error);
		if (r)
			return r;
		sd->held = false;
	}
	return 0;
}

/*
 * Hands the gathered rows to an idle sender (its empty buffers become the
 * sink's); false when none is idle (or while down: one connection probes
 * the server; or before the tables are set up), the rows are then sent from
 * this thread.
 */
static bool hand_over(struct ch_sink *s)
{
	/* the tables are set up by the sink's thread (send_rows) first */
	if (s->down || !s->set_up || (s->seal_rows && !s->seals_set_up))
		return false;
	for (size_t i = 0; i < s->n_senders; i++) {
		struct sender *sd = &s->senders[i];
		pthread_mutex_lock(&sd->mu);
		bool idle = sd->state == SENDER_IDLE;
		pthread_mutex_unlock(&sd->mu);
		if (!idle || sd->held)
			continue;
		struct ch_sink *t = sd->twin;
		struct byte_buffer out = t->out, seal_out = t->seal_out;
		t->out = s->out;
		t->seal_out = s->seal_out;
		t->rows = s->rows;
		t->seal_rows = s->seal_rows;
		t->exact = s->exact;
		s->out = out;
		s->seal_out = seal_out;
		s->rows = s->seal_rows = 0;
		pthread_mutex_lock(&sd->mu);
		sd->state = SENDER_BUSY;
		pthread_cond_signal(&sd->cv);
		pthread_mutex_unlock(&sd->mu);
		return true;
	}
	return false;
}

static bool small_batch(const struct ch_sink *s)
{
	return s->rows < (size_t)s->cfg->batch_rows / SMALL_BATCH_DIVISOR;
}

static bool batch_full(const struct ch_sink *s)
{
	return s->rows >= (size_t)s->cfg->batch_rows || s->out.len >= s->cfg->batch_bytes;
}

/* --seal: the seal's row (see seal_columns), the uids of the batch's events with it. */
static int seal_row(struct ch_sink *s, const struct tcp_audit_event *ev, size_t n,
		    const struct tcp_audit_seal *seal)
{
	struct byte_buffer *b = &s->seal_out;

	/* the fixed fields (and the two lengths) take at most 80 bytes */
	if (byte_buffer_reserve(b, 80 + strlen(seal->run) + seal->len + n * EVENT_UID_BYTES))
		return -ENOMEM;
	put_bytes(b, seal->run, strlen(seal->run));
	put_u64(b, seal->index);
	put_u64(b, seal->time_ns);
	put_u16(b, (uint16_t)(seal->time_ns / 86400000000000ull));
	put_u32(b, seal->count);
	put_bytes(b, seal->text, seal->len);
	put_length(b, n * EVENT_UID_BYTES);
	for (size_t i = 0; i < n; i++) {
		event_uid_bytes(&ev[i], (uint8_t *)b->p + b->len);
		b->len += EVENT_UID_BYTES;
	}
	s->seal_rows++;
	return 0;
}

/*
 * The events join the gathered rows (and their seal the gathered seals); a
 * full batch is sent.  An insert that failed before is sent first, and until
 * it goes through nothing is added (RETRY: the host hands these events
 * again).  An insert of these events that fails returns 0: they are held
 * here and the next write or flush sends them again; the host's spool keeps
 * them until a flush succeeds.
 */
static int write_batch(struct ch_sink *s, const struct tcp_audit_event *ev, size_t n,
		       const struct tcp_audit_seal *seal)
{
	int r;

	reap(s, false);
	r = send_held(s);
	if (r)
		return r;
	if (s->pending) {
		r = send_rows(s);
		if (r)
			return r;
	}
	size_t len = s->out.len, rows = s->rows;
	for (size_t i = 0; i < n; i++) {
		if (byte_buffer_reserve(&s->out, ROW_MAX)) {
			s->out.len = len; /* nothing of this batch is kept: the host retries it */
			s->rows = rows;
			return -ENOMEM;
		}
		event_row(&s->out, &ev[i]);
		s->rows++;
	}
	if (seal && seal_row(s, ev, n, seal)) {
		s->out.len = len;
		s->rows = rows;
		return -ENOMEM;
	}
	if (batch_full(s)) {
		if (hand_over(s))
			return 0;
		r = send_rows(s);
		if (r == TCP_AUDIT_RETRY || r == -EIO)
			return 0; /* held here, pending (see above) */
		return r;
	}
	return 0;
}

static int ch_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	return write_batch(self, ev, n, NULL);
}

static int ch_write_sealed(void *self, const struct tcp_audit_event *ev, size_t n,
			   const struct tcp_audit_seal *seal)
{
	return write_batch(self, ev, n, seal);
}

static void sleep_until(uint64_t t)
{
	uint64_t now = clock_now_ns(CLOCK_MONOTONIC);

	if (t <= now)
		return;
	struct timespec ts = {.tv_sec = (time_t)((t - now) / 1000000000u),
			      .tv_nsec = (long)((t - now) % 1000000000u)};
	nanosleep(&ts, NULL);
}

/*
 * Everything gathered goes to the server now.  A small insert after a small
 * one waits first for interval= since that one: the host flushes every time
 * it has caught up, and a trickle of events would otherwise make an insert,
 * and a part, of a few rows each time.  (The end of a large run is sent at
 * once.)
 */
static int ch_flush(void *self)
{
	struct ch_sink *s = self;

	reap(s, true);
	int r = send_held(s);
	if (r)
		return r;
	if (s->rows == 0 && s->seal_rows == 0)
		return 0;
	if (!s->pending && s->rows && s->last_small && small_batch(s))
		sleep_until(s->last_insert + (uint64_t)s->cfg->interval_ms * 1000000u);
	return send_rows(s);
}

static void free_sink(struct ch_sink *s);

static void ch_close(void *self)
{
	struct ch_sink *s = self;

	if (!s)
		return;
	size_t rows = s->rows, seal_rows = s->seal_rows;
	for (size_t i = 0; i < s->n_senders; i++) {
		struct sender *sd = &s->senders[i];
		if (sd->started) {
			pthread_mutex_lock(&sd->mu);
			sd->quit = true; /* after the insert it is sending, if any */
			pthread_cond_signal(&sd->cv);
			pthread_mutex_unlock(&sd->mu);
			pthread_join(sd->thread, NULL);
		}
	}
	reap(s, false);
	for (size_t i = 0; i < s->n_senders; i++) {
		struct ch_sink *t = s->senders[i].twin;
		if (!t)
			continue;
		s->inserts += t->inserts;
		s->inserted += t->inserted;
		rows += t->rows;
		seal_rows += t->seal_rows;
	}
	if (s->inserts)
		tcp_audit_info(s->host, "%s: %" PRIu64 " rows in %" PRIu64 " inserts", s->store,
			       s->inserted, s->inserts);
	if (rows || seal_rows)
		tcp_audit_warning(s->host, "%s: %zu rows and %zu seals not stored at close", s->store,
				  rows, seal_rows);
	for (size_t i = 0; i < s->n_senders; i++) {
		struct sender *sd = &s->senders[i];
		if (sd->twin)
			free_sink(sd->twin);
		pthread_mutex_destroy(&sd->mu);
		pthread_cond_destroy(&sd->cv);
	}
	free(s->senders);
	free_sink(s);
}

/* A sink's connection, names and buffers. */
static void free_sink(struct ch_sink *s)
{
	if (s->curl)
		curl_easy_cleanup(s->curl);
	curl_slist_free_all(s->headers);
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s->insert_url);
	free(s->insert_url_plain);
	free(s->seal_insert_url);
	free(s->query_url);
	byte_buffer_free(&s->out);
	byte_buffer_free(&s->seal_out);
	byte_buffer_free(&s->reply);
	free(s);
}

/*
 * inserts= above 1: the senders, each with a twin of s (its own connection,
 * set up like s's) and a thread.  Called once s's table is set up (or it is
 * down: a twin's inserts come only after the sink has set the tables up).
 */
static int start_senders(struct ch_sink *s)
{
	size_t n = (size_t)s->cfg->inserts - 1;

	if (n == 0)
		return 0;
	s->senders = calloc(n, sizeof(*s->senders));
	if (!s->senders)
		return -ENOMEM;
	s->n_senders = n;
	for (size_t i = 0; i < n; i++) {
		struct sender *sd = &s->senders[i];
		pthread_mutex_init(&sd->mu, NULL);
		pthread_cond_init(&sd->cv, NULL);
		struct ch_sink *t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		sd->twin = t;
		t->host = s->host;
		t->cfg = s->cfg;
		t->events = s->events;
		t->seals = s->seals;
		memcpy(t->store, s->store, sizeof(t->store));
		t->set_up = t->seals_set_up = true;
		t->connection = (int)i + 2;
		t->curl = curl_easy_init();
		if (!t->curl || (s->password && !(t->password = strdup(s->password))))
			return -ENOMEM;
		int r = set_up_transfer(t);
		if (r)
			return r;
		r = pthread_create(&sd->thread, NULL, sender_main, sd);
		if (r)
			return -r;
		sd->started = true;
	}
	return 0;
}

static const struct tcp_audit_plugin ch_plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "clickhouse",
	.kind = TCP_AUDIT_SINKER,
	.description = "ClickHouse over HTTP: one row per event in a ReplacingMergeTree, "
		       "RowBinary inserts of up to 100,000 rows, retries sent byte for byte",
	.options = ch_options,
	.config_size = sizeof(struct ch_config),
	.sinker_open = ch_open,
	.sinker_write = ch_write,
	.sinker_write_sealed = ch_write_sealed,
	.sinker_flush = ch_flush,
	.sinker_close = ch_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi)
{
	(void)host_abi;
	return &ch_plugin;
}
