/* SPDX-License-Identifier: MIT */
/* SQL the database sinks share: names of numbers, the views (see sql-case.h). */
#include "sql-case.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "event-text.h"
#include "tcp-audit/plugin.h"

/* Numbers to try: every value ours has a name for (errno values too) is below 256. */
#define MAX_VALUE 256

static const char *name_of(enum sql_names names, unsigned v)
{
	switch (names) {
	case SQL_TCP_STATE:
		return tcp_state_name(v);
	case SQL_SOCK_STATE:
		return sock_state_name(v);
	case SQL_FAMILY:
		return family_name(v);
	case SQL_GAP_STAGE:
		return gap_stage_name(v);
	case SQL_RESET_DIRECTION:
		return reset_direction_name(v);
	case SQL_RESET_REASON:
		return reset_reason_name(v);
	case SQL_ERRNO:
		return errno_name(v);
	}
	return NULL;
}

__attribute__((format(printf, 4, 5))) static void put(char *out, size_t size, size_t *len,
						      const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(*len < size ? out + *len : NULL, *len < size ? size - *len : 0, fmt, ap);
	va_end(ap);
	*len += n > 0 ? (size_t)n : 0;
}

static int build(char *out, size_t size, enum sql_names names, const char *expr, bool to_name)
{
	size_t len = 0;

	/* NULL at once: a simple CASE compares NULL with every WHEN first */
	put(out, size, &len, "CASE WHEN %s IS NULL THEN NULL ELSE CASE %s", expr, expr);
	for (unsigned v = 0; v < MAX_VALUE; v++) {
		const char *name = name_of(names, v);
		if (!name)
			continue;
		if (to_name)
			put(out, size, &len, " WHEN %u THEN '%s'", v, name);
		else
			put(out, size, &len, " WHEN '%s' THEN %u", name, v);
	}
	if (to_name)
		put(out, size, &len, " ELSE CAST(%s AS TEXT) END END", expr);
	else
		put(out, size, &len, " END END");
	return len < size ? (int)len : -1;
}

int sql_case_name(char *out, size_t size, enum sql_names names, const char *expr)
{
	return build(out, size, names, expr, true);
}

int sql_case_number(char *out, size_t size, enum sql_names names, const char *expr)
{
	return build(out, size, names, expr, false);
}

const char *const sql_view_names[SQL_N_VIEWS] = {
	"tcp_events", "tcp_events_socket_info", "tcp_audit_gaps", "tcp_audit_snapshots",
	"tcp_audit_resets", "tcp_connections",
};

/*
 * A state change that begins a socket's life as an archive without cookies
 * (tracefs) shows it: from CLOSED (a listener), from SYN-SENT (a client: its
 * CLOSED -> SYN-SENT has no source port yet and is left out), LISTEN ->
 * SYN-RECEIVED (an accepted socket).
 */
static int start_flag(char *out, size_t size)
{
	int n = snprintf(out, size,
			 "CASE WHEN old_state IN (%d, %d) OR (old_state = %d AND new_state = %d)"
			 " THEN 1 ELSE 0 END",
			 TCP_AUDIT_TCP_CLOSE, TCP_AUDIT_TCP_SYN_SENT, TCP_AUDIT_TCP_LISTEN,
			 TCP_AUDIT_TCP_SYN_RECV);
	return n >= 0 && (size_t)n < size ? n : -1;
}

/*
 * The key of a socket without a cookie: its addresses and ports and how many
 * sockets began on them before it (a window over rows in `order`).
 */
static int cookieless_key(char *out, size_t size, const char *order)
{
	char start[256];

	if (start_flag(start, sizeof(start)) < 0)
		return -1;
	int n = snprintf(out, size,
			 "saddr || ' ' || sport || ' ' || daddr || ' ' || dport || ' ' ||"
			 " sum(%s) OVER (PARTITION BY host, family, saddr, sport, daddr, dport"
			 " ORDER BY %s ROWS UNBOUNDED PRECEDING)",
			 start, order);
	return n >= 0 && (size_t)n < size ? n : -1;
}

/* Which rows are a socket's records: with a cookie, or a state change that has its ports. */
#define RECORDS_WHERE                                                                      \
	"kind IN (0, 3) AND (sock_cookie IS NOT NULL OR (kind = 0 AND NOT (new_state = %d"    \
	" AND sport = 0)))"

int sql_connections(char *out, size_t size, enum sql_order order, const char *from,
		    const char *where)
{
	char family[256], first_name[1024], error[8192], step[1024], path[1536], first[512],
		records[20480], key[1024], side[512];
	size_t len = 0;

	if (sql_case_name(family, sizeof(family), SQL_FAMILY, "family") < 0 ||
	    sql_case_name(error, sizeof(error), SQL_ERRNO, "error") < 0 ||
	    sql_case_name(step, sizeof(step), SQL_TCP_STATE, "new_state") < 0 ||
	    cookieless_key(key, sizeof(key), "time_ns, seq") < 0)
		return -1;
	/*
	 * A socket's records in order: its state changes by time, then its reset
	 * records (kind 3 sorts after 0), so that the first record is its first
	 * transition (SQL_ORDER_SCAN: all by time, the first transition found by
	 * its kind); the path holds transitions only.  A socket is its host and
	 * cookie, or without a cookie its host and key (cookieless_key()).
	 */
	const char *columns = "host, sock_cookie, kind, time_ns, seq, family, saddr, sport, daddr,"
			      " dport, owner_pid, owner_comm, old_state, new_state, error";
	char both[16384];
	if (snprintf(both, sizeof(both),
		     "SELECT %s, CAST(NULL AS TEXT) AS conn FROM %s WHERE kind IN (0, 3) AND"
		     " sock_cookie IS NOT NULL%s UNION ALL SELECT %s, %s AS conn FROM %s"
		     " WHERE kind = 0 AND sock_cookie IS NULL AND NOT (new_state = %d AND sport = 0)%s",
		     columns, from, where, columns, key, from, TCP_AUDIT_TCP_SYN_SENT,
		     where) >= (int)sizeof(both))
		return -1;
	switch (order) {
	case SQL_ORDER_SORTED:
		snprintf(path, sizeof(path), "string_agg(CASE WHEN kind = 0 THEN %s END, ' ')", step);
		/* the least (time, seq, old state), whatever the order */
		snprintf(first, sizeof(first),
			 "(min(CASE WHEN kind = 0 THEN ARRAY[time_ns, coalesce(seq, 0), old_state]"
			 " END))[3]");
		snprintf(records, sizeof(records),
			 "(%s ORDER BY sock_cookie, host, conn, kind, time_ns, seq) records", both);
		break;
	case SQL_ORDER_SCAN:
		snprintf(path, sizeof(path), "group_concat(CASE WHEN kind = 0 THEN %s END, ' ')", step);
		/*
		 * the old state of its first state change (the least rowid): a state
		 * (a byte in the ABI) rides below the rowid, no lookup outside
		 */
		snprintf(first, sizeof(first),
			 "min(CASE WHEN kind = 0 THEN rowid * 256 + old_state END) %% 256");
		snprintf(records, sizeof(records), "%s WHERE 1 = 1%s", from, where);
		break;
	case SQL_ORDER_WINDOW:
		snprintf(path, sizeof(path), "max(path)");
		snprintf(first, sizeof(first), "max(first_state)");
		if (snprintf(records, sizeof(records),
			     "(SELECT *, first_value(old_state) OVER w AS first_state,"
			     " group_concat(CASE WHEN kind = 0 THEN %s END, ' ') OVER w AS path"
			     " FROM (%s) socket_records WINDOW w AS (PARTITION BY host, sock_cookie, conn"
			     " ORDER BY kind, time_ns, seq"
			     " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) records",
			     step, both) >= (int)sizeof(records))
			return -1;
		break;
	}
	if (sql_case_name(first_name, sizeof(first_name), SQL_TCP_STATE, "sockets.first") < 0)
		return -1;
	/*
	 * The side by its first sign: SYN-SENT (client), SYN-RECEIVED (server),
	 * LISTEN, as the new state or (a cookie-less client's first kept
	 * transition) the old one.
	 */
	snprintf(side, sizeof(side),
		 "min(CASE WHEN kind = 0 THEN CASE WHEN %d IN (new_state, old_state) THEN 1"
		 " WHEN %d IN (new_state, old_state) THEN 2 WHEN %d IN (new_state, old_state)"
		 " THEN 3 END END)",
		 TCP_AUDIT_TCP_SYN_SENT, TCP_AUDIT_TCP_SYN_RECV, TCP_AUDIT_TCP_LISTEN);
	/*
	 * One row per socket, its addresses and owner from its state changes (a
	 * reset record has the peer of the segment it answered: a listener's
	 * resets are to many).  A reset record makes the outcome "reset", but not
	 * a listener's (it answered a segment, and the listener is none the
	 * worse).  A socket with only reset records is not a connection.
	 */
	put(out, size, &len,
	    "SELECT host, sock_cookie, CASE side WHEN 1 THEN 'client' WHEN 2 THEN 'server'"
	    " WHEN 3 THEN 'listener' END AS side, %s AS family, saddr, sport, daddr, dport,"
	    " owner_pid, owner_comm, opened_ns, closed_ns, last_ns, %s || ' ' || path AS states,"
	    " CASE WHEN closed_ns IS NULL THEN 'open' WHEN error = %d THEN 'refused'"
	    " WHEN error = %d THEN 'timed-out' WHEN error IN (%d, %d, %d, %d) THEN 'unreachable'"
	    " WHEN error IN (%d, %d) OR reset_records > 0 THEN 'reset' ELSE 'closed' END"
	    " AS outcome, %s AS error, resets, conn",
	    family, first_name, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN,
	    ENETDOWN, ECONNRESET, EPIPE, error);
	put(out, size, &len,
	    " FROM (SELECT host, sock_cookie, conn, %s AS side,"
	    " max(family) AS family, max(CASE WHEN kind = 0 THEN saddr END) AS saddr,"
	    " max(CASE WHEN kind = 0 THEN sport END) AS sport,"
	    " max(CASE WHEN kind = 0 THEN daddr END) AS daddr,"
	    " max(CASE WHEN kind = 0 THEN dport END) AS dport,"
	    " max(CASE WHEN kind = 0 THEN owner_pid END) AS owner_pid,"
	    " max(CASE WHEN kind = 0 THEN owner_comm END) AS owner_comm,"
	    " min(CASE WHEN kind = 0 THEN time_ns END) AS opened_ns,"
	    " max(CASE WHEN kind = 0 AND new_state = %d THEN time_ns END) AS closed_ns,"
	    " max(CASE WHEN kind = 0 THEN time_ns END) AS last_ns,"
	    " %s AS first, %s AS path, max(error) AS error,"
	    " sum(CASE WHEN kind = 3 THEN 1 ELSE 0 END) AS resets,"
	    " sum(CASE WHEN kind = 3 AND new_state <> %d THEN 1 ELSE 0 END) AS reset_records"
	    " FROM %s GROUP BY sock_cookie, host, conn HAVING min(kind) = 0) sockets",
	    side, TCP_AUDIT_TCP_CLOSE, first, path, TCP_AUDIT_TCP_LISTEN, records);
	return len < size ? (int)len : -1;
}

int sql_connection_records(char *out, size_t size, const char *from, const char *where)
{
	int n = snprintf(out, size,
			 "SELECT host, sock_cookie, CAST(NULL AS TEXT) AS conn, kind, time_ns, seq,"
			 " family, saddr, sport, daddr, dport, owner_pid, owner_comm, old_state,"
			 " new_state, error FROM %s WHERE " RECORDS_WHERE "%s ORDER BY uid",
			 from, TCP_AUDIT_TCP_SYN_SENT, where);
	return n >= 0 && (size_t)n < size ? n : -1;
}

int sql_connection_keys(char *out, size_t size, const char *table)
{
	char key[1024];

	if (cookieless_key(key, sizeof(key), "rowid") < 0)
		return -1;
	int n = snprintf(out, size,
			 "UPDATE %s SET conn = keys.conn FROM (SELECT rowid AS r, %s AS conn FROM %s"
			 " WHERE sock_cookie IS NULL) keys WHERE %s.rowid = keys.r",
			 table, key, table, table);
	return n >= 0 && (size_t)n < size ? n : -1;
}

/* expr with each time_ns in it replaced by column. */
static int with_column(char *out, size_t size, const char *expr, const char *column)
{
	size_t len = 0;
	const char *p;

	while ((p = strstr(expr, "time_ns"))) {
		put(out, size, &len, "%.*s%s", (int)(p - expr), expr, column);
		expr = p + strlen("time_ns");
	}
	put(out, size, &len, "%s", expr);
	return len < size ? (int)len : -1;
}

int sql_views(char *out, size_t size, const struct sql_view_forms *f, const char *create)
{
	char old_state[1024], new_state[1024], state[1024], sock_state[512], family[256],
		stage[256], dir[256], reason[2048], error[8192];
	size_t len = 0;

	if (sql_case_name(old_state, sizeof(old_state), SQL_TCP_STATE, "old_state") < 0 ||
	    sql_case_name(new_state, sizeof(new_state), SQL_TCP_STATE, "new_state") < 0 ||
	    /* a reset's socket state: NULL when there was no socket (0) */
	    sql_case_name(state, sizeof(state), SQL_TCP_STATE, "NULLIF(new_state, 0)") < 0 ||
	    sql_case_name(sock_state, sizeof(sock_state), SQL_SOCK_STATE, "sock_state") < 0 ||
	    sql_case_name(family, sizeof(family), SQL_FAMILY, "family") < 0 ||
	    sql_case_name(stage, sizeof(stage), SQL_GAP_STAGE, "gap_stage") < 0 ||
	    sql_case_name(dir, sizeof(dir), SQL_RESET_DIRECTION, "reset_direction") < 0 ||
	    sql_case_name(reason, sizeof(reason), SQL_RESET_REASON, "reset_reason") < 0 ||
	    sql_case_name(error, sizeof(error), SQL_ERRNO, "error") < 0)
		return -1;
	/* the original's columns first, in its order; ours after them, new ones at the end */
	put(out, size, &len,
	    "%s tcp_events AS SELECT %s AS uid, %s AS timestamp, pid_on_cpu, comm_on_cpu,"
	    " saddr AS src_ip, daddr AS dst_ip, sport AS src_port, dport AS dst_port,"
	    " %s AS old_state, %s AS new_state, time_ns, %s AS family, tid_on_cpu, owner_pid,"
	    " owner_uid, owner_comm, sock_cookie, netns, cgroup_id, host, seq, ktime,"
	    " %s AS error FROM tcp_audit_events WHERE kind = 0;",
	    create, f->uid, f->timestamp, old_state, new_state, family, error);
	put(out, size, &len,
	    "%s tcp_events_socket_info AS SELECT %s AS uid, %s AS tcp_event_uid, %s AS id,"
	    " sock_inode AS inode, sock_uid AS user_id, sock_gid AS group_id, %s AS state%s"
	    " FROM tcp_audit_events WHERE kind = 0 AND sock_inode IS NOT NULL;",
	    create, f->uid, f->uid, f->cookie_hex, sock_state, f->info_extra);
	put(out, size, &len,
	    "%s tcp_audit_gaps AS SELECT %s AS uid, %s AS timestamp, time_ns, host, %s AS stage,"
	    " gap_lost AS lost, seq, ktime FROM tcp_audit_events WHERE kind = 1;",
	    create, f->uid, f->timestamp, stage);
	put(out, size, &len,
	    "%s tcp_audit_snapshots AS SELECT %s AS uid, %s AS timestamp, time_ns, host,"
	    " %s AS family, saddr, sport, daddr, dport, %s AS state, owner_pid, owner_uid,"
	    " owner_comm, sock_cookie, sock_inode, sock_uid, sock_gid, netns, cgroup_id"
	    " FROM tcp_audit_events WHERE kind = 2;",
	    create, f->uid, f->timestamp, family, new_state);
	put(out, size, &len,
	    "%s tcp_audit_resets AS SELECT %s AS uid, %s AS timestamp, time_ns, host,"
	    " %s AS direction, %s AS reason, %s AS family, saddr, sport, daddr, dport,"
	    " %s AS state, pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid, owner_comm,"
	    " sock_cookie, sock_inode, netns, cgroup_id, seq, ktime FROM tcp_audit_events"
	    " WHERE kind = 3;",
	    create, f->uid, f->timestamp, dir, reason, family, state);
	char opened[512], closed[512], connections[16384];
	if (with_column(opened, sizeof(opened), f->timestamp, "opened_ns") < 0 ||
	    with_column(closed, sizeof(closed), f->timestamp, "closed_ns") < 0 ||
	    sql_connections(connections, sizeof(connections), f->order, "tcp_audit_events", "") < 0)
		return -1;
	put(out, size, &len,
	    "%s tcp_connections AS SELECT host, sock_cookie, side, family, saddr, sport, daddr,"
	    " dport, owner_pid, owner_comm, %s AS opened, %s AS closed,"
	    " CAST(closed_ns - opened_ns AS DOUBLE PRECISION) / 1000000000.0 AS duration_s,"
	    " states, outcome, error, resets, opened_ns, closed_ns, last_ns"
	    " FROM (%s) connections;",
	    create, opened, closed, connections);
	return len < size ? 0 : -1;
}
