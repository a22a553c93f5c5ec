/* SPDX-License-Identifier: MIT */
/*
 * SQL the database sinks share: CASE expressions between our numbers and
 * their names (states, socket states, families, gap stages, reset directions
 * and reasons, errno values), made from the one table of names in
 * event-text.c so that a store never spells a name differently, and the
 * views that serve the original's tables, whose columns are a contract with
 * their users.  The SQL is what SQLite and PostgreSQL both accept; what
 * differs between them comes in as expressions.
 */
#ifndef TCP_AUDIT_SQL_CASE_H
#define TCP_AUDIT_SQL_CASE_H

#include <stddef.h>

enum sql_names {
	SQL_TCP_STATE,
	SQL_SOCK_STATE,
	SQL_FAMILY,
	SQL_GAP_STAGE,
	SQL_RESET_DIRECTION,
	SQL_RESET_REASON,
	SQL_ERRNO,
};

/*
 * "CASE expr WHEN 1 THEN 'ESTABLISHED' ... ELSE CAST(expr AS TEXT) END":
 * number to name (a number without a name stays as its digits).  Returns the
 * length, or -1 if out is too small.
 */
int sql_case_name(char *out, size_t size, enum sql_names names, const char *expr);

/* "CASE expr WHEN 'ESTABLISHED' THEN 1 ... END": name to number (else NULL). */
int sql_case_number(char *out, size_t size, enum sql_names names, const char *expr);

/* How sql_connections() puts a socket's records in order. */
enum sql_order {
	/*
	 * The records from a subquery sorted by socket and time (PostgreSQL,
	 * whose aggregates take rows in the order a subquery with ORDER BY gives
	 * them: one sort, where an ORDER BY inside the aggregate sorts each
	 * socket's rows on its own, 0.2 s more per 400,000 records in 15).
	 */
	SQL_ORDER_SORTED,
	SQL_ORDER_WINDOW,    /* window functions (SQLite 3.40's group_concat has no ORDER BY) */
	/*
	 * from is a table of sql_connection_records() in their order, with an
	 * index on (sock_cookie, host, conn) (SQLite): the GROUP BY scans that index,
	 * and so each socket's rows in rowid order, which is their time order.
	 */
	SQL_ORDER_SCAN,
};

/* A store's expressions, over tcp_audit_events' columns, for the views. */
struct sql_view_forms {
	const char *uid;        /* the uid as the original's text */
	const char *timestamp;  /* the original's timestamp from time_ns */
	const char *cookie_hex; /* the socket info's id: sock_cookie in hex, NULL if NULL */
	const char *info_extra; /* more columns of tcp_events_socket_info ("" or ", ...") */
	enum sql_order order;   /* how tcp_connections orders a socket's records */
};

/* The views sql_views() makes, by name. */
#define SQL_N_VIEWS 6
extern const char *const sql_view_names[SQL_N_VIEWS];

/*
 * The CREATE statements of the views, each begun with `create` ("CREATE
 * VIEW", or "CREATE OR REPLACE VIEW" in PostgreSQL): tcp_events,
 * tcp_events_socket_info (the socket info is part of its event: its uid is
 * the event's), tcp_audit_gaps, tcp_audit_snapshots (the sockets open when a
 * run began), tcp_audit_resets (each of those shows one kind of record only)
 * and tcp_connections (sql_connections() over every event).  Returns 0, or
 * -1 if out is too small.
 */
int sql_views(char *out, size_t size, const struct sql_view_forms *forms, const char *create);

/*
 * A SELECT of one row per socket (by host and cookie; without a cookie, as
 * tracefs records, by host, addresses, ports and the sockets that began on
 * them before) from its state changes and reset records in from
 * (tcp_audit_events, or with SQL_ORDER_SCAN a table of
 * sql_connection_records()) that `where` admits ("" for all, else a
 * condition on their columns begun with " AND "): host, sock_cookie, side
 * (client, server, listener; NULL when no transition shows it), family,
 * saddr, sport, daddr, dport, owner_pid, owner_comm, opened_ns (its first
 * transition), closed_ns (its transition to CLOSED; NULL when there is none),
 * last_ns (its latest transition), states (the path: the first transition's
 * old state, then each new state, by time), outcome (closed, reset, refused,
 * timed-out, unreachable, open), error (the errno name of the close), resets
 * (reset records) and conn (the key of a socket without a cookie, else
 * NULL).  The tcp_connections view and tcp-audit report
 * share it.  Returns the length, or -1 if out is too small.
 */
int sql_connections(char *out, size_t size, enum sql_order order, const char *from,
		    const char *where);

/*
 * The SELECT of the records sql_connections() reads from `from` (its
 * tcp_audit_events), in uid order, which is time order (a uid begins with
 * the time) and free (SQLite has an index of uids): for SQL_ORDER_SCAN.
 * Its conn column is NULL: sql_connection_keys() gives the sockets without
 * a cookie theirs.
 */
int sql_connection_records(char *out, size_t size, const char *from, const char *where);

/* The UPDATE of a table of sql_connection_records() that keys its cookie-less rows. */
int sql_connection_keys(char *out, size_t size, const char *table);

#endif
