/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit seal-init and tcp-audit verify (see seal.h for what a seal is).
 *
 * verify reads an archive once, in order.  Events accumulate until a seal;
 * the seal's MAC is checked under the key of its epoch, its place in its
 * run's chain (index, prev), and then the events before it against its
 * fingerprints, one by one, so that a deleted, altered or inserted event is
 * named by its line.  At the end: events after the last seal, and runs
 * without a closing seal (a crash, recorded by the run after it, is a note;
 * otherwise the end was cut off).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if TCP_AUDIT_VERIFY_SQLITE
#include <sqlite3.h>
#endif

#include "event-json.h"
#include "event-text.h"
#include "event-uid.h"
#include "log.h"
#include "seal.h"

#define EXIT_PROBLEMS 1
#define EXIT_USAGE 2
#define FP_HEX 16

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tcp-audit %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see tcp-audit %s --help)\n", cmd);
	return EXIT_USAGE;
}

int seal_init_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"interval", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t interval = SEAL_DEFAULT_INTERVAL;
	char *end, vkey[SEAL_VKEY_MAX], err[512];
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			errno = 0;
			interval = strtoull(optarg, &end, 10);
			if (!*optarg || *end || errno || interval < 1 || interval > 31536000)
				return usage_error("seal-init", "--interval: \"%s\" is not a number "
								"of seconds from 1 to 31536000",
						   optarg);
			break;
		case 'h':
			printf("Usage: tcp-audit seal-init KEYFILE [--interval SECONDS]\n"
			       "\n"
			       "Makes a new sealing key for tcp-audit --seal KEYFILE: KEYFILE is created\n"
			       "(mode 0600; an existing file is never overwritten) and the verification\n"
			       "key is printed, once, on stdout.  Keep the verification key off this\n"
			       "host: tcp-audit verify needs it, and anyone who has it could forge seals.\n"
			       "\n"
			       "  --interval SECONDS  how often the key moves on (default %d): whoever\n"
			       "                      reads KEYFILE can forge nothing sealed before the\n"
			       "                      interval they read it in\n",
			       SEAL_DEFAULT_INTERVAL);
			return 0;
		default:
			return usage_error("seal-init", "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return usage_error("seal-init", optind == argc ? "give the key file to create"
							       : "one key file only");
	if (seal_key_create(argv[optind], interval, vkey, err, sizeof(err)) < 0) {
		fprintf(stderr, "tcp-audit seal-init: %s\n", err);
		return 1;
	}
	printf("%s\n", vkey);
	fflush(stdout);
	fprintf(stderr,
		"tcp-audit seal-init: made %s (the key moves on every %" PRIu64 " s).\n"
		"The line above is the verification key: keep it off this host, for\n"
		"tcp-audit verify SOURCE --verify-key KEY.\n",
		argv[optind], interval);
	return 0;
}

/* ------------------------------------------------------------------------ */

struct pending {
	uint64_t line;
	struct tcp_audit_event ev;
};

struct run {
	char id[SEAL_RUN_HEX];
	uint64_t next_index;
	char prev[65];
	bool prev_known;
	bool closed;
	uint64_t last_line;
	char after[SEAL_RUN_HEX];
	bool after_closed;
	uint64_t seals, events, first_seal_ns, last_seal_ns;
};

struct sealed_uid {
	uint64_t uid;
	uint64_t line;
};

struct verify {
	const char *source;
	const char *unit, *seal_unit; /* how events and seals are found: "line", "row" */
	struct seal_keys keys;
	struct pending *pend;
	size_t n_pend, cap_pend;
	struct run *runs;
	size_t n_runs, cap_runs;
	struct sealed_uid *sealed;
	size_t n_sealed, cap_sealed;
	struct pending *extra; /* events no seal covers, judged at the end */
	size_t n_extra, cap_extra;
	uint64_t problems, events, seals, first_ns, last_ns;
};

static void problem(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct verify *v, const char *fmt, ...)
{
	va_list ap;

	printf("problem: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	v->problems++;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("note: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return p;
	size_t c = *cap ? *cap * 2 : 1024;
	void *q = realloc(p, c * size);
	if (!q) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	*cap = c;
	return q;
}

static uint64_t uid64(const struct tcp_audit_event *ev)
{
	uint8_t b[EVENT_UID_BYTES];
	uint64_t v = 0;

	event_uid_bytes(ev, b);
	for (int i = 8; i < 16; i++)
		v = v << 8 | b[i];
	return v;
}

static void add_extra(struct verify *v, const struct pending *e)
{
	v->extra = grow(v->extra, &v->cap_extra, v->n_extra, sizeof(*v->extra));
	v->extra[v->n_extra++] = *e;
}

static void add_sealed(struct verify *v, const struct pending *e)
{
	v->sealed = grow(v->sealed, &v->cap_sealed, v->n_sealed, sizeof(*v->sealed));
	v->sealed[v->n_sealed++] = (struct sealed_uid){uid64(&e->ev), e->line};
	if (!v->first_ns || e->ev.time_ns < v->first_ns)
		v->first_ns = e->ev.time_ns;
	if (e->ev.time_ns > v->last_ns)
		v->last_ns = e->ev.time_ns;
	v->events++;
}

/* The value of "key": in a seal's text: a pointer to it, or NULL. */
static const char *field(const char *text, size_t len, const char *key)
{
	char pat[32];
	int n = snprintf(pat, sizeof(pat), "\"%s\":", key);

	const char *p = memmem(text, len, pat, (size_t)n);
	return p ? p + n : NULL;
}

static bool field_u64(const char *text, size_t len, const char *key, uint64_t *out)
{
	const char *p = field(text, len, key);
	char *end;

	if (!p || *p < '0' || *p > '9')
		return false;
	*out = strtoull(p, &end, 10);
	return true;
}

/* A string field of exactly want characters (0: any) into out. */
static bool field_str(const char *text, size_t len, const char *key, char *out, size_t size,
		      size_t want)
{
	const char *p = field(text, len, key);

	if (!p || *p != '"')
		return false;
	const char *q = memchr(p + 1, '"', len - (size_t)(p + 1 - text));
	if (!q || (size_t)(q - p - 1) >= size || (want && (size_t)(q - p - 1) != want))
		return false;
	memcpy(out, p + 1, (size_t)(q - p - 1));
	out[q - p - 1] = '\0';
	return true;
}

static bool field_bool(const char *text, size_t len, const char *key, bool *out)
{
	const char *p = field(text, len, key);

	if (p && strncmp(p, "true", 4) == 0)
		*out = true;
	else if (p && strncmp(p, "false", 5) == 0)
		*out = false;
	else
		return false;
	return true;
}

static struct run *find_run(struct verify *v, const char *id)
{
	for (size_t i = 0; i < v->n_runs; i++)
		if (strcmp(v->runs[i].id, id) == 0)
			return &v->runs[i];
	return NULL;
}

static uint64_t hex_u64(const char *p)
{
	uint64_t x = 0;

	for (int i = 0; i < FP_HEX; i++)
		x = x << 4 | (uint64_t)(p[i] <= '9' ? p[i] - '0' : p[i] - 'a' + 10);
	return x;
}

/* Events from .. to-1 (counted from 0) of a seal's batch are not there. */
static void missing(struct verify *v, uint64_t from, uint64_t to, const char *what,
		    uint64_t before_line)
{
	char where[64] = ", at the batch's end";

	if (before_line)
		snprintf(where, sizeof(where), ", before %s %" PRIu64, v->unit, before_line);
	if (to - from == 1)
		problem(v, "event %" PRIu64 " of %s is missing (deleted)%s", from + 1, what, where);
	else
		problem(v, "events %" PRIu64 " to %" PRIu64 " of %s are missing (deleted)%s",
			from + 1, to, what, where);
}

/*
 * The events before a seal against its fingerprints fp (n of them), in
 * order: matched ones are sealed; an expected one not there is deleted; one
 * there and not expected is altered when it stands where an expected one is
 * missing, else kept aside (inserted, or a copy written again after a crash).
 */
static void check_batch(struct verify *v, const char *fp, uint64_t n, const uint8_t fp_key[16],
			const char *what)
{
	uint64_t *want = calloc(n ? n : 1, sizeof(*want));
	uint64_t *got = calloc(v->n_pend ? v->n_pend : 1, sizeof(*got));
	if (!want || !got) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	for (uint64_t j = 0; j < n; j++)
		want[j] = hex_u64(fp + j * FP_HEX);
	for (size_t i = 0; i < v->n_pend; i++)
		got[i] = seal_fp(fp_key, &v->pend[i].ev);
	size_t i = 0;
	uint64_t j = 0;
	while (i < v->n_pend || j < n) {
		if (i < v->n_pend && j < n && got[i] == want[j]) {
			add_sealed(v, &v->pend[i]);
			i++, j++;
			continue;
		}
		/* is the event expected further on (events before it deleted)? */
		uint64_t k = j;
		while (i < v->n_pend && k < n && want[k] != got[i])
			k++;
		if (i < v->n_pend && k < n) {
			missing(v, j, k, what, v->pend[i].line);
			j = k;
			continue;
		}
		/* is the expected event further on (events before it inserted)? */
		size_t m = i;
		while (j < n && m < v->n_pend && got[m] != want[j])
			m++;
		if (j < n && m < v->n_pend) {
			for (; i < m; i++)
				add_extra(v, &v->pend[i]);
			continue;
		}
		if (i < v->n_pend && j < n) {
			problem(v, "%s %" PRIu64 ": event altered (it was event %" PRIu64 " of %s)",
				v->unit, v->pend[i].line, j + 1, what);
			i++, j++;
		} else if (i < v->n_pend) {
			add_extra(v, &v->pend[i++]);
		} else {
			missing(v, j, n, what, 0);
			j = n;
		}
	}
	v->n_pend = 0;
	free(want);
	free(got);
}

static void check_seal(struct verify *v, const char *text, size_t len, uint64_t line)
{
	char id[SEAL_RUN_HEX], prev[65], mac[65], want_mac[65], after[SEAL_RUN_HEX] = "",
		what[128];
	uint64_t index, epoch, time_ns, count;
	bool last, after_closed = false;
	const char *mac_at = NULL;

	for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), ",\"mac\":\"", 8));
	     p++)
		mac_at = p;
	if (!mac_at || !field_str(text, len, "run", id, sizeof(id), SEAL_RUN_HEX - 1) ||
	    !field_u64(text, len, "index", &index) || !field_u64(text, len, "epoch", &epoch) ||
	    !field_u64(text, len, "time_ns", &time_ns) || !field_u64(text, len, "count", &count) ||
	    !field_bool(text, len, "last", &last) ||
	    !field_str(text, len, "prev", prev, sizeof(prev), 64) ||
	    !field_str(mac_at, len - (size_t)(mac_at - text), "mac", mac, sizeof(mac), 64)) {
		problem(v, "%s %" PRIu64 ": a damaged seal (fields missing)", v->seal_unit, line);
		return;
	}
	snprintf(what, sizeof(what), "seal %.8s #%" PRIu64 " (%s %" PRIu64 ")", id, index,
		 v->seal_unit, line);
	const uint8_t *key = seal_keys_at(&v->keys, epoch);
	seal_mac_hex(key, text, (size_t)(mac_at - text), want_mac);
	if (strcmp(mac, want_mac) != 0) {
		problem(v, "%s: its MAC is wrong: the seal was forged or altered; the %zu events "
			   "before it are not verified",
			what, v->n_pend);
		for (size_t i = 0; i < v->n_pend; i++)
			add_extra(v, &v->pend[i]);
		v->n_pend = 0;
		return;
	}
	v->seals++;
	const char *fp = field(text, len, "fp");
	if (!fp || *fp != '"' || (size_t)(mac_at - fp) != 2 + count * FP_HEX) {
		problem(v, "%s: its fingerprints do not match its count", what);
		return;
	}
	uint64_t secs = time_ns / 1000000000u;
	uint64_t at = secs > v->keys.vk->start ? (secs - v->keys.vk->start) / v->keys.vk->interval
					       : 0;
	if (at != epoch)
		problem(v, "%s: sealed in epoch %" PRIu64 " but dated in epoch %" PRIu64
			   " (a later key sealing an earlier time: forged, or the clock stepped)",
			what, epoch, at);

	struct run *r = find_run(v, id);
	if (index == 0) {
		if (r) {
			problem(v, "%s: run %.8s starts a second time", what, id);
		} else {
			v->runs = grow(v->runs, &v->cap_runs, v->n_runs, sizeof(*v->runs));
			r = &v->runs[v->n_runs++];
			*r = (struct run){0};
			memcpy(r->id, id, sizeof(r->id));
			field_str(text, len, "after", after, sizeof(after), 0);
			field_bool(text, len, "after_closed", &after_closed);
			memcpy(r->after, after, sizeof(r->after));
			r->after_closed = after_closed;
			r->prev_known = true;
			memset(r->prev, '0', 64);
		}
	} else if (!r) {
		problem(v, "seals #0 to #%" PRIu64 " of run %.8s are missing (before %s %" PRIu64
			   ")",
			index - 1, id, v->seal_unit, line);
		v->runs = grow(v->runs, &v->cap_runs, v->n_runs, sizeof(*v->runs));
		r = &v->runs[v->n_runs++];
		*r = (struct run){0};
		memcpy(r->id, id, sizeof(r->id));
		r->next_index = index;
	} else if (r->closed) {
		problem(v, "%s: a seal after run %.8s's closing seal", what, id);
	} else if (index > r->next_index) {
		if (index - r->next_index == 1)
			problem(v, "seal #%" PRIu64 " of run %.8s is missing (between %ss %" PRIu64
				   " and %" PRIu64 ")",
				r->next_index, id, v->seal_unit, r->last_line, line);
		else
			problem(v, "seals #%" PRIu64 " to #%" PRIu64 " of run %.8s are missing "
				   "(between %ss %" PRIu64 " and %" PRIu64 ")",
				r->next_index, index - 1, id, v->seal_unit, r->last_line, line);
		r->prev_known = false;
	} else if (index < r->next_index) {
		problem(v, "%s: seal #%" PRIu64 " of run %.8s again", what, index, id);
		r->prev_known = false;
	}
	if (r->prev_known && index == r->next_index && strcmp(prev, r->prev) != 0)
		problem(v, "%s: it does not follow the seal before it in run %.8s", what, id);
	seal_digest_hex(text, len, r->prev);
	r->prev_known = true;
	r->next_index = index + 1;
	r->last_line = line;
	r->closed = r->closed || last;
	if (!r->seals++)
		r->first_seal_ns = time_ns;
	r->last_seal_ns = time_ns;
	r->events += count;

	uint8_t fp_key[16];
	seal_fp_key(key, id, index, fp_key);
	check_batch(v, fp + 1, count, fp_key, what);
}

static int cmp_sealed(const void *a, const void *b)
{
	const struct sealed_uid *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

static void finish(struct verify *v)
{
	bool crashed = false;

	for (size_t i = 0; i < v->n_pend; i++)
		add_extra(v, &v->pend[i]);
	v->n_pend = 0;
	for (size_t i = 0; i < v->n_runs; i++) {
		struct run *r = &v->runs[i];
		if (r->closed)
			continue;
		const struct run *by = NULL;
		for (size_t k = 0; k < v->n_runs; k++)
			if (strcmp(v->runs[k].after, r->id) == 0 && !v->runs[k].after_closed)
				by = &v->runs[k];
		if (by) {
			crashed = true;
			note("run %.8s did not stop cleanly: its seals end at #%" PRIu64 " (%s %" PRIu64
			     "); run %.8s, the next, recorded it",
			     r->id, r->next_index - 1, v->seal_unit, r->last_line, by->id);
		} else {
			problem(v, "run %.8s has no closing seal after #%" PRIu64 " (%s %" PRIu64
				   "): the end was cut off, or tcp-audit is still running, or it was "
				   "killed and has not started since",
				r->id, r->next_index - 1, v->seal_unit, r->last_line);
		}
	}
	if (v->n_sealed)
		qsort(v->sealed, v->n_sealed, sizeof(*v->sealed), cmp_sealed);
	/* the events no seal covers, by runs of lines of the same verdict */
	uint64_t first = 0, last = 0;
	int kind = -1; /* 0: uncovered, 1: copies of sealed events after a crash */
	for (size_t i = 0; i <= v->n_extra; i++) {
		int k = -1;
		uint64_t line = 0;
		if (i < v->n_extra) {
			struct sealed_uid key = {uid64(&v->extra[i].ev), 0};
			bool copy = crashed && v->n_sealed &&
				    bsearch(&key, v->sealed, v->n_sealed, sizeof(*v->sealed),
					    cmp_sealed);
			k = copy ? 1 : 0;
			line = v->extra[i].line;
			if (k == kind && line == last + 1) {
				last = line;
				continue;
			}
		}
		char lines[64];
		if (first == last)
			snprintf(lines, sizeof(lines), "%s %" PRIu64 ": an event", v->unit, first);
		else
			snprintf(lines, sizeof(lines), "%ss %" PRIu64 " to %" PRIu64 ": events",
				 v->unit, first, last);
		if (kind == 0)
			problem(v, "%s no seal covers (inserted, or written after the last seal)",
				lines);
		else if (kind == 1)
			note("%s not sealed, but copies of sealed ones (a write cut short by the "
			     "crash, written again after it)",
			     lines);
		kind = k;
		first = last = line;
	}
}

static int verify_jsonl(struct verify *v)
{
	v->unit = v->seal_unit = "line";
	FILE *f = strcmp(v->source, "-") == 0 ? stdin : fopen(v->source, "r");
	char *buf = NULL, err[256];
	size_t cap = 0;
	ssize_t len;
	uint64_t line = 0;

	if (!f) {
		fprintf(stderr, "tcp-audit verify: cannot open %s: %s\n", v->source, strerror(errno));
		return EXIT_USAGE;
	}
	while ((len = getline(&buf, &cap, f)) >= 0) {
		line++;
		if (len > 0 && buf[len - 1] == '\n')
			buf[--len] = '\0';
		else
			problem(v, "line %" PRIu64 ": cut short (no newline)", line);
		if (event_json_is_seal(buf, (size_t)len)) {
			check_seal(v, buf, (size_t)len, line);
			continue;
		}
		v->pend = grow(v->pend, &v->cap_pend, v->n_pend, sizeof(*v->pend));
		struct pending *e = &v->pend[v->n_pend];
		if (event_from_json(buf, (size_t)len, &e->ev, err, sizeof(err)) < 0) {
			problem(v, "line %" PRIu64 ": not an event: %s", line, err);
			continue;
		}
		e->line = line;
		v->n_pend++;
	}
	if (ferror(f))
		problem(v, "reading %s: %s", v->source, strerror(errno));
	if (f != stdin)
		fclose(f);
	free(buf);
	finish(v);
	return 0;
}

#if TCP_AUDIT_VERIFY_SQLITE
/* ------------------------------------------------------------------------ */
/* SQLite archives (the sqlite sink): seals in tcp_audit_seals, each with the  */
/* uids of its batch's events in tcp_audit_events                             */

#define EVENT_COLUMNS                                                                      \
	"rowid, time_ns, kind, host, family, saddr, daddr, sport, dport, old_state, "       \
	"new_state, pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid, owner_comm, " \
	"sock_cookie, sock_inode, sock_uid, sock_gid, sock_state, netns, cgroup_id, seq, "   \
	"ktime, gap_stage, gap_lost, reset_direction, reset_reason, error"

static bool col_null(sqlite3_stmt *st, int i)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL;
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	size_t n = t ? (size_t)sqlite3_column_bytes(st, i) : 0;

	memset(out, 0, size);
	memcpy(out, t ? (const char *)t : "", n < size ? n : size - 1);
}

/*
 * The event a row of tcp_audit_events holds, as the sink got it: the
 * inverse of the sink's columns (a NULL column is a field the event did not
 * have).  Returns false when the row cannot be an event of tcp-audit.
 */
static bool row_event(sqlite3_stmt *st, struct tcp_audit_event *e, uint64_t *rowid)
{
	int64_t i64;

	memset(e, 0, sizeof(*e));
	*rowid = (uint64_t)sqlite3_column_int64(st, 0);
	e->time_ns = (uint64_t)sqlite3_column_int64(st, 1);
	e->kind = (uint8_t)sqlite3_column_int(st, 2);
	if (!col_null(st, 3)) {
		e->valid |= TCP_AUDIT_HAS_HOST;
		col_text(st, 3, e->host, sizeof(e->host));
	}
	if (e->kind == TCP_AUDIT_KIND_GAP) {
		e->gap_stage = (uint8_t)sqlite3_column_int(st, 26);
		e->gap_lost = (uint64_t)sqlite3_column_int64(st, 27);
	} else {
		e->family = (uint16_t)sqlite3_column_int(st, 4);
		const unsigned char *a = sqlite3_column_text(st, 5), *b = sqlite3_column_text(st, 6);
		if (!a || !b ||
		    parse_addr(e->family, (const char *)a, (size_t)sqlite3_column_bytes(st, 5),
			       e->saddr) < 0 ||
		    parse_addr(e->family, (const char *)b, (size_t)sqlite3_column_bytes(st, 6),
			       e->daddr) < 0)
			return false;
		e->sport = (uint16_t)sqlite3_column_int(st, 7);
		e->dport = (uint16_t)sqlite3_column_int(st, 8);
		e->old_state = (uint8_t)sqlite3_column_int(st, 9);
		e->new_state = (uint8_t)sqlite3_column_int(st, 10);
		e->pid_on_cpu = (uint32_t)sqlite3_column_int64(st, 11);
		if (!col_null(st, 12)) {
			e->valid |= TCP_AUDIT_HAS_TID;
			e->tid_on_cpu = (uint32_t)sqlite3_column_int64(st, 12);
		}
		col_text(st, 13, e->comm_on_cpu, sizeof(e->comm_on_cpu));
		if (!col_null(st, 14)) {
			e->valid |= TCP_AUDIT_HAS_OWNER;
			e->owner_pid = (uint32_t)sqlite3_column_int64(st, 14);
			e->owner_uid = (uint32_t)sqlite3_column_int64(st, 15);
			col_text(st, 16, e->owner_comm, sizeof(e->owner_comm));
		}
		if (!col_null(st, 17)) {
			e->valid |= TCP_AUDIT_HAS_COOKIE;
			e->sock_cookie = (uint64_t)sqlite3_column_int64(st, 17);
		}
		if (!col_null(st, 18)) {
			e->valid |= TCP_AUDIT_HAS_SOCK_INODE;
			e->sock_inode = (uint64_t)sqlite3_column_int64(st, 18);
			e->sock_uid = (uint32_t)sqlite3_column_int64(st, 19);
			e->sock_gid = (uint32_t)sqlite3_column_int64(st, 20);
		}
		if (!col_null(st, 21)) {
			e->valid |= TCP_AUDIT_HAS_SOCK_STATE;
			e->sock_state = (uint8_t)sqlite3_column_int(st, 21);
		}
		if (!col_null(st, 22)) {
			e->valid |= TCP_AUDIT_HAS_NETNS;
			e->netns = (uint32_t)sqlite3_column_int64(st, 22);
		}
		if (!col_null(st, 23)) {
			e->valid |= TCP_AUDIT_HAS_CGROUP;
			e->cgroup_id = (uint64_t)sqlite3_column_int64(st, 23);
		}
		if (!col_null(st, 28))
			e->reset_direction = (uint8_t)sqlite3_column_int(st, 28);
		if (!col_null(st, 29)) {
			e->valid |= TCP_AUDIT_HAS_RESET_REASON;
			e->reset_reason = (uint8_t)sqlite3_column_int(st, 29);
		}
		if (!col_null(st, 30)) {
			e->valid |= TCP_AUDIT_HAS_ERROR;
			e->error = (uint16_t)sqlite3_column_int(st, 30);
		}
	}
	if (!col_null(st, 24)) {
		e->valid |= TCP_AUDIT_HAS_SEQ;
		e->seq = (uint64_t)sqlite3_column_int64(st, 24);
	}
	if (!col_null(st, 25)) {
		i64 = sqlite3_column_int64(st, 25);
		e->valid |= TCP_AUDIT_HAS_KTIME;
		e->ktime_ns = (uint64_t)i64;
	}
	return true;
}

static int cmp_uid(const void *a, const void *b)
{
	return memcmp(a, b, EVENT_UID_BYTES);
}

static int verify_sqlite(struct verify *v)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *seals = NULL, *by_uid = NULL, *all = NULL;
	uint8_t *used = NULL; /* every uid a seal names, sorted at the end */
	size_t n_used = 0, cap_used = 0;
	int status = EXIT_USAGE;

	v->unit = "row";
	v->seal_unit = "seal row";
	if (sqlite3_open_v2(v->source, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		fprintf(stderr, "tcp-audit verify: cannot open %s: %s\n", v->source,
			sqlite3_errmsg(db));
		goto out;
	}
	if (sqlite3_prepare_v2(db, "SELECT rowid, seal, uids FROM tcp_audit_seals "
				   "ORDER BY time_ns, idx",
			       -1, &seals, NULL) != SQLITE_OK) {
		fprintf(stderr, "tcp-audit verify: %s has no seals (%s): it was not written with "
				"--seal\n",
			v->source, sqlite3_errmsg(db));
		goto out;
	}
	if (sqlite3_prepare_v2(db, "SELECT " EVENT_COLUMNS " FROM tcp_audit_events WHERE uid = ?",
			       -1, &by_uid, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "SELECT rowid, uid FROM tcp_audit_events ORDER BY rowid", -1,
			       &all, NULL) != SQLITE_OK) {
		fprintf(stderr, "tcp-audit verify: %s is not a tcp-audit archive: %s\n", v->source,
			sqlite3_errmsg(db));
		goto out;
	}
	int rc;
	while ((rc = sqlite3_step(seals)) == SQLITE_ROW) {
		uint64_t seal_row = (uint64_t)sqlite3_column_int64(seals, 0);
		const char *text = (const char *)sqlite3_column_text(seals, 1);
		size_t len = (size_t)sqlite3_column_bytes(seals, 1);
		const uint8_t *uids = sqlite3_column_blob(seals, 2);
		size_t n = (size_t)sqlite3_column_bytes(seals, 2) / EVENT_UID_BYTES;
		for (size_t i = 0; i < n; i++) {
			char uid[EVENT_UID_LEN];
			used = grow(used, &cap_used, n_used, EVENT_UID_BYTES);
			memcpy(used + n_used++ * EVENT_UID_BYTES, uids + i * EVENT_UID_BYTES,
			       EVENT_UID_BYTES);
			event_uid_text(uids + i * EVENT_UID_BYTES, uid);
			sqlite3_bind_text(by_uid, 1, uid, -1, SQLITE_TRANSIENT);
			if (sqlite3_step(by_uid) == SQLITE_ROW) {
				v->pend = grow(v->pend, &v->cap_pend, v->n_pend, sizeof(*v->pend));
				struct pending *e = &v->pend[v->n_pend];
				if (row_event(by_uid, &e->ev, &e->line))
					v->n_pend++;
				else
					problem(v, "row %" PRIu64 ": damaged (an address that is not one)",
						e->line);
			}
			sqlite3_reset(by_uid);
		}
		check_seal(v, text ? text : "", text ? len : 0, seal_row);
	}
	if (rc != SQLITE_DONE)
		problem(v, "reading the seals: %s", sqlite3_errmsg(db));
	/* rows no seal names */
	if (n_used)
		qsort(used, n_used, EVENT_UID_BYTES, cmp_uid);
	while ((rc = sqlite3_step(all)) == SQLITE_ROW) {
		struct pending e = {.line = (uint64_t)sqlite3_column_int64(all, 0)};
		uint8_t uid[EVENT_UID_BYTES] = {0};
		const char *t = (const char *)sqlite3_column_text(all, 1);
		/* the text form back to bytes: hex digits, dashes skipped */
		for (size_t k = 0, j = 0; t && t[k] && j < 2 * EVENT_UID_BYTES; k++) {
			int d = t[k] >= '0' && t[k] <= '9' ? t[k] - '0'
				: t[k] >= 'a' && t[k] <= 'f' ? t[k] - 'a' + 10
							       : -1;
			if (d < 0)
				continue;
			uid[j / 2] |= (uint8_t)(j % 2 ? d : d << 4);
			j++;
		}
		if (!n_used || !bsearch(uid, used, n_used, EVENT_UID_BYTES, cmp_uid))
			add_extra(v, &e);
	}
	if (rc != SQLITE_DONE)
		problem(v, "reading the events: %s", sqlite3_errmsg(db));
	finish(v);
	status = 0;
out:
	sqlite3_finalize(seals);
	sqlite3_finalize(by_uid);
	sqlite3_finalize(all);
	sqlite3_close(db);
	free(used);
	return status;
}

#else
static int verify_sqlite(struct verify *v)
{
	fprintf(stderr, "tcp-audit verify: %s is an SQLite file, and this tcp-audit was built without SQLite\n",
		v->source);
	return EXIT_USAGE;
}
#endif

/* What SOURCE is: an SQLite file by its header, else JSON lines. */
static bool is_sqlite(const char *path)
{
	char head[16];
	FILE *f = strcmp(path, "-") == 0 ? NULL : fopen(path, "rb");
	bool yes = f && fread(head, 1, sizeof(head), f) == sizeof(head) &&
		   memcmp(head, "SQLite format 3", 16) == 0;

	if (f)
		fclose(f);
	return yes;
}

int verify_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"verify-key", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *vkey_text = NULL;
	struct seal_vkey vk;
	struct verify v = {0};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			vkey_text = optarg;
			break;
		case 'h':
			printf("Usage: tcp-audit verify SOURCE --verify-key KEY\n"
			       "\n"
			       "Checks an archive written with tcp-audit --seal: every seal (its MAC under\n"
			       "the key of its time, its place in its run's chain) and every event against\n"
			       "its seal.  Names each event deleted, altered or inserted (by line), each\n"
			       "seal missing, an end cut off; a run that did not stop cleanly is a note\n"
			       "when the run after it recorded the crash.\n"
			       "\n"
			       "  SOURCE            a JSON-lines file of the jsonl sink (- for stdin), or\n"
			       "                    an SQLite file of the sqlite sink\n"
			       "  --verify-key KEY  the key tcp-audit seal-init printed\n"
			       "\n"
			       "Exit status: 0 when everything checks, 1 when a problem was found, 2 when\n"
			       "the archive cannot be read or the arguments are wrong.\n");
			return 0;
		default:
			return usage_error("verify", "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return usage_error("verify", optind == argc ? "give the archive to check"
							    : "one archive at a time");
	if (!vkey_text)
		return usage_error("verify", "give --verify-key (printed by tcp-audit seal-init)");
	if (seal_vkey_parse(vkey_text, &vk) < 0)
		return usage_error("verify", "--verify-key: not a verification key of tcp-audit "
					     "seal-init (tav1-...)");
	v.source = argv[optind];
	seal_keys_init(&v.keys, &vk);
	int r = is_sqlite(v.source) ? verify_sqlite(&v) : verify_jsonl(&v);
	if (r)
		return r;
	for (size_t i = 0; i < v.n_runs; i++) {
		const struct run *run = &v.runs[i];
		char t0[RFC3339_NS_LEN + 1] = "", t1[RFC3339_NS_LEN + 1] = "";
		t0[format_rfc3339_ns(run->first_seal_ns, t0)] = '\0';
		t1[format_rfc3339_ns(run->last_seal_ns, t1)] = '\0';
		printf("run %s: %" PRIu64 " seals of %" PRIu64 " events, sealed from %s to %s%s\n",
		       run->id, run->seals, run->events, t0, t1,
		       run->closed ? ", closed" : "");
	}
	char from[RFC3339_NS_LEN + 1] = "-", to[RFC3339_NS_LEN + 1] = "-";
	if (v.events) {
		from[format_rfc3339_ns(v.first_ns, from)] = '\0';
		to[format_rfc3339_ns(v.last_ns, to)] = '\0';
	}
	printf("%s: %" PRIu64 " events verified in %" PRIu64 " seals of %zu run%s, from %s to %s\n",
	       v.source, v.events, v.seals, v.n_runs, v.n_runs == 1 ? "" : "s", from, to);
	if (v.problems)
		printf("FAILED: %" PRIu64 " problem%s\n", v.problems, v.problems == 1 ? "" : "s");
	else
		printf("OK\n");
	free(v.pend);
	free(v.runs);
	free(v.sealed);
	free(v.extra);
	return v.problems ? EXIT_PROBLEMS : 0;
}
