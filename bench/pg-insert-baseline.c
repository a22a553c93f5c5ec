/* SPDX-License-Identifier: MIT */
/*
 * pg-insert-baseline: stores events the way the Go original's PostgreSQL sink
 * does, as the benchmark's point of comparison: its two tables (in their own
 * schema, "original"), prepared statements, one synchronous INSERT per event,
 * both tables in one transaction when socket info is present, a random UUID
 * per row.  Reads the JSON-lines format, so it stores the same events as our
 * sink does.  Connection from the libpq environment (PGHOST, ...).
 *
 *   pg-insert-baseline FILE.jsonl   ->  rows=N seconds=S rate=R
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "event-json.h"
#include "event-text.h"

static const char *const ddl =
	"DROP SCHEMA IF EXISTS original CASCADE; CREATE SCHEMA original;"
	"CREATE TABLE original.tcp_events (uid TEXT PRIMARY KEY, timestamp TIMESTAMP,"
	" pid_on_cpu INTEGER, comm_on_cpu TEXT, src_ip INET, dst_ip INET, src_port INTEGER,"
	" dst_port INTEGER, old_state TEXT, new_state TEXT);"
	"CREATE TABLE original.tcp_events_socket_info (uid TEXT PRIMARY KEY, tcp_event_uid TEXT,"
	" id TEXT, inode INTEGER, user_id INTEGER, group_id INTEGER, state TEXT,"
	" CONSTRAINT fk_tcp_events FOREIGN KEY(tcp_event_uid) REFERENCES"
	" original.tcp_events(uid) ON DELETE CASCADE);";

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: plenty for unique-looking ids */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void uuid(char out[37])
{
	uint64_t a = rng(), b = rng();
	snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012" PRIx64, (unsigned)(a >> 32),
		 (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
		 (unsigned)((b >> 48) & 0x3fff) | 0x8000, (uint64_t)(b & 0xffffffffffffu));
}

static int exec_ok(PGconn *c, PGresult *r, const char *what)
{
	ExecStatusType st = PQresultStatus(r);
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok)
		fprintf(stderr, "pg-insert-baseline: %s: %s", what, PQerrorMessage(c));
	PQclear(r);
	return ok;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "Usage: pg-insert-baseline FILE.jsonl\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		fprintf(stderr, "pg-insert-baseline: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	PGconn *c = PQconnectdb("");
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pg-insert-baseline: cannot connect: %s", PQerrorMessage(c));
		return 2;
	}
	rng_state = (uint64_t)time(NULL);
	if (!exec_ok(c, PQexec(c, "SET client_min_messages = warning"), "set") ||
	    !exec_ok(c, PQexec(c, ddl), "create tables") ||
	    !exec_ok(c,
		     PQprepare(c, "ev",
			       "INSERT INTO original.tcp_events VALUES ($1, $2, $3, $4, $5, $6, $7, "
			       "$8, $9, $10)",
			       10, NULL),
		     "prepare") ||
	    !exec_ok(c,
		     PQprepare(c, "si",
			       "INSERT INTO original.tcp_events_socket_info VALUES ($1, $2, $3, $4, "
			       "$5, $6, $7)",
			       7, NULL),
		     "prepare"))
		return 1;

	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long rows = 0;
	double start = now();
	while ((len = getline(&line, &cap, f)) > 0) {
		struct tcp_audit_event ev;
		char err[256];
		if (line[len - 1] == '\n')
			len--;
		if (event_from_json(line, (size_t)len, &ev, err, sizeof(err)) ||
		    ev.kind != TCP_AUDIT_KIND_STATE_CHANGE)
			continue;
		char id[37], time[RFC3339_NS_LEN], pid[16], src[ADDR_TEXT_LEN], dst[ADDR_TEXT_LEN],
			sport[8], dport[8];
		uuid(id);
		format_rfc3339_ns(ev.time_ns, time);
		snprintf(pid, sizeof(pid), "%u", ev.pid_on_cpu);
		format_addr(ev.family, ev.saddr, src);
		format_addr(ev.family, ev.daddr, dst);
		snprintf(sport, sizeof(sport), "%u", ev.sport);
		snprintf(dport, sizeof(dport), "%u", ev.dport);
		const char *p[10] = {id,    time,  pid,
				     ev.comm_on_cpu, src, dst,
				     sport, dport, tcp_state_name(ev.old_state),
				     tcp_state_name(ev.new_state)};
		bool info = ev.valid & TCP_AUDIT_HAS_SOCK_INODE;
		if (info && !exec_ok(c, PQexec(c, "BEGIN"), "begin"))
			return 1;
		if (!exec_ok(c, PQexecPrepared(c, "ev", 10, p, NULL, NULL, 0), "insert"))
			return 1;
		if (info) {
			char sid[37], sock[20], ino[24], su[12], sg[12];
			uuid(sid);
			snprintf(sock, sizeof(sock), "%" PRIx64, ev.sock_cookie);
			snprintf(ino, sizeof(ino), "%" PRIu64, ev.sock_inode & 0x7fffffff);
			snprintf(su, sizeof(su), "%u", ev.sock_uid);
			snprintf(sg, sizeof(sg), "%u", ev.sock_gid);
			const char *q[7] = {sid, id, sock, ino, su, sg, sock_state_name(ev.sock_state)};
			if (!exec_ok(c, PQexecPrepared(c, "si", 7, q, NULL, NULL, 0), "insert") ||
			    !exec_ok(c, PQexec(c, "COMMIT"), "commit"))
				return 1;
		}
		rows++;
	}
	double secs = now() - start;
	printf("rows=%ld seconds=%.3f rate=%.0f\n", rows, secs, (double)rows / secs);
	free(line);
	fclose(f);
	PQfinish(c);
	return 0;
}
