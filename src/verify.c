/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit seal-init and tcp-audit verify (see seal.h for what a seal is).
 *
 * verify reads an archive once, in order.  Events accumulate until a seal;
 * the seal's MAC is checked under the key of its epoch, its place in its
 * run's chain (index, prev), and then the events before it against its
 * fingerprints, one by one, so that a deleted, altered or inserted event is
 * named by its line, and (format 4) each chunk of 64 against its tag, which
 * proves them.  At the end: events after the last seal, and runs
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
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#if TCP_AUDIT_VERIFY_SQLITE
#include <sqlite3.h>
#endif
#if TCP_AUDIT_VERIFY_PGSQL
#include <libpq-fe.h>
#endif
#if TCP_AUDIT_VERIFY_CLICKHOUSE
#include <curl/curl.h>

#include "byte-buffer.h"
#endif

#include "archive.h"
#include "event-json.h"
#include "event-text.h"
#include "event-uid.h"
#include "log.h"
#include "seal.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define EXIT_PROBLEMS 1
#define EXIT_USAGE 2
#define MAX_KEYS 256 /* --verify-key: a fleet's hosts */

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
	uint64_t line; /* where it is: its line (jsonl), row (sqlite), place in a scan */
	struct tcp_audit_event ev;
	char uid[EVENT_UID_LEN]; /* by_uid stores: its stored uid names it */
	/*
	 * PostgreSQL: text is UTF-8, and the sink wrote a byte that is not
	 * UTF-8 as U+0080..U+00FF, which valid UTF-8 may hold too: the event
	 * with those characters as bytes, tried when the one as read fails.
	 */
	bool has_alt;
	struct tcp_audit_event alt;
};

struct run {
	char id[SEAL_RUN_HEX];
	uint64_t next_index;
	size_t key; /* which --verify-key its seals verify under */
	char prev[SEAL_MAC_HEX_MAX + 1];
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
	const char *source; /* as given; a PostgreSQL one as user@host:port/db once connected */
	char pg_name[512];
	const char *unit, *seal_unit; /* how events and seals are found: "line", "row" */
	bool by_uid;                  /* events are named by uid (PostgreSQL), not unit N */
	bool no_machine;              /* a store made before the machine column */
	struct seal_keys *keys; /* one per --verify-key (a fleet's hosts: one each) */
	char (*key_hosts)[TCP_AUDIT_HOST_LEN]; /* --verify-key HOST=KEY: its host, else "" */
	size_t n_keys;
	const char *seal_host; /* the host the seal being checked may hold events of, or NULL */
	struct pending *pend;
	size_t n_pend, cap_pend;
	struct run *runs;
	size_t n_runs, cap_runs;
	struct sealed_uid *sealed;
	size_t n_sealed, cap_sealed;
	uint8_t *named; /* databases: every uid a seal names (sorted once all are read) */
	size_t n_named, cap_named;
	struct seal_body *body; /* format 4's tags, checked */
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

/* The next slot of the events waiting for their seal, cleared (counted once filled). */
static struct pending *next_pending(struct verify *v)
{
	v->pend = grow(v->pend, &v->cap_pend, v->n_pend, sizeof(*v->pend));
	memset(&v->pend[v->n_pend], 0, sizeof(v->pend[0]));
	return &v->pend[v->n_pend];
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

/* A fingerprint's width lower-case hex digits; false for anything else. */
static bool hex_u64(const char *p, size_t width, uint64_t *out)
{
	uint64_t x = 0;

	for (size_t i = 0; i < width; i++) {
		if (p[i] >= '0' && p[i] <= '9')
			x = x << 4 | (uint64_t)(p[i] - '0');
		else if (p[i] >= 'a' && p[i] <= 'f')
			x = x << 4 | (uint64_t)(p[i] - 'a' + 10);
		else
			return false;
	}
	*out = x;
	return true;
}

/*
 * A seal's fingerprints: the groups of width digits from the quote at fp to
 * the one closing them right before ',"mac":' at mac_at (which the MAC does
 * not cover, so nothing else may stand there).  NULL when they are not that;
 * their number in *n.
 */
static uint64_t *read_fps(const char *fp, const char *mac_at, size_t width, size_t *n)
{
	if (!fp || *fp != '"' || mac_at - fp < 2 || mac_at[-1] != '"' ||
	    (size_t)(mac_at - fp - 2) % width)
		return NULL;
	*n = (size_t)(mac_at - fp - 2) / width;
	uint64_t *out = malloc((*n + 1) * sizeof(*out));
	for (size_t j = 0; out && j < *n; j++) {
		if (!hex_u64(fp + 1 + j * width, width, &out[j])) {
			free(out);
			return NULL;
		}
	}
	return out;
}

/* How an event is named: "line 20", "row 20", "event <uid>". */
static const char *where(const struct verify *v, const struct pending *e, char buf[64])
{
	if (v->by_uid)
		snprintf(buf, 64, "event %s", e->uid);
	else
		snprintf(buf, 64, "%s %" PRIu64, v->unit, e->line);
	return buf;
}

/* Events from .. to-1 (counted from 0) of a seal's batch are not there. */
static void missing(struct verify *v, uint64_t from, uint64_t to, const char *what,
		    const struct pending *before)
{
	char where_[80] = ", at the batch's end", buf[64];

	if (before)
		snprintf(where_, sizeof(where_), ", before %s", where(v, before, buf));
	if (to - from == 1)
		problem(v, "event %" PRIu64 " of %s is missing (deleted)%s", from + 1, what, where_);
	else
		problem(v, "events %" PRIu64 " to %" PRIu64 " of %s are missing (deleted)%s",
			from + 1, to, what, where_);
}

/*
 * --verify-key HOST=KEY: a key seals its host's events only (a host holding
 * its own key cannot pass events off as another's).
 */
static void sealed(struct verify *v, const struct pending *e)
{
	add_sealed(v, e);
	if (v->seal_host && (e->ev.valid & TCP_AUDIT_HAS_HOST) &&
	    strncmp(e->ev.host, v->seal_host, TCP_AUDIT_HOST_LEN) != 0) {
		char buf[64], host[2 * TCP_AUDIT_HOST_LEN];
		host[bytes_to_utf8(e->ev.host, strnlen(e->ev.host, TCP_AUDIT_HOST_LEN), host)] = '\0';
		problem(v, "%s: an event of host %s sealed under the key given for host %s",
			where(v, e, buf), host, v->seal_host);
	}
}

/* An event's fingerprint in a seal of format (the key: formats 2 and 3's). */
static uint64_t fingerprint(uint64_t format, const uint8_t fp_key[16],
			    const struct tcp_audit_event *ev)
{
	return format >= 4 ? seal_crc(ev) : seal_fp(fp_key, ev);
}

/*
 * Format 4: the chunks of a batch against their tags (body: 32 digits each).
 * A chunk whose every event was matched (at[j]: the pending event matched to
 * the batch's event j, plus 1; 0: none) is proven by its tag, or named as
 * altered behind unchanged fingerprints; one with an event missing or
 * altered cannot be proven, and its other events are noted as such (not
 * counted as verified; the problem is the event already named).
 */
static void check_chunks(struct verify *v, const size_t *at, uint64_t n, const char *body,
			 const char *what)
{
	char tag[SEAL_TAG_HEX];

	for (uint64_t k = 0; k * SEAL_CHUNK < n; k++) {
		uint64_t from = k * SEAL_CHUNK, to = from + SEAL_CHUNK < n ? from + SEAL_CHUNK : n;
		uint64_t there = 0;
		for (uint64_t j = from; j < to; j++)
			there += at[j] != 0;
		if (there < to - from) {
			if (there) /* the problem is the one named already */
				note("%" PRIu64 " other events of %s (of its events %" PRIu64
				     " to %" PRIu64 ", which its tag %" PRIu64 " covers) match their "
				     "fingerprints but are not proven without the missing or altered "
				     "one",
				     there, what, from + 1, to, k + 1);
			continue;
		}
		for (uint64_t j = from; j < to; j++)
			seal_body_add(v->body, &v->pend[at[j] - 1].ev);
		if (seal_body_tag(v->body, k, tag, NULL) != 0) {
			fprintf(stderr, "tcp-audit verify: libcrypto's AES-256-GCM failed\n");
			exit(EXIT_USAGE);
		}
		if (memcmp(tag, body + k * SEAL_TAG_HEX, SEAL_TAG_HEX) == 0) {
			for (uint64_t j = from; j < to; j++)
				sealed(v, &v->pend[at[j] - 1]);
			continue;
		}
		const struct pending *first = &v->pend[at[from] - 1], *end = &v->pend[at[to - 1] - 1];
		char span[160];
		if (v->by_uid)
			snprintf(span, sizeof(span), "event %s to event %s", first->uid, end->uid);
		else
			snprintf(span, sizeof(span), "%ss %" PRIu64 " to %" PRIu64, v->unit, first->line,
				 end->line);
		problem(v, "%s: events %" PRIu64 " to %" PRIu64 " of %s altered behind unchanged "
			   "fingerprints (its tag %" PRIu64 " is wrong): not verified",
			span, from + 1, to, what, k + 1);
	}
}

/*
 * The events before a seal against its fingerprints want (n of them), in
 * order: matched ones are sealed (format 4: by their chunk's tag in body);
 * an expected one not there is deleted; one there and not expected is
 * altered when it stands where an expected one is missing, else kept aside
 * (inserted, or a copy written again after a crash).
 */
static void check_batch(struct verify *v, uint64_t format, const uint64_t *want, uint64_t n,
			const uint8_t fp_key[16], const char *body, const char *what)
{
	uint64_t *got = calloc(v->n_pend ? v->n_pend : 1, sizeof(*got));
	size_t *at = calloc(n ? n : 1, sizeof(*at));
	if (!got || !at) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	for (size_t i = 0; i < v->n_pend; i++) {
		got[i] = fingerprint(format, fp_key, &v->pend[i].ev);
		if (!v->pend[i].has_alt)
			continue;
		uint64_t alt = fingerprint(format, fp_key, &v->pend[i].alt);
		for (uint64_t j = 0; j < n; j++)
			if (want[j] == alt) {
				got[i] = alt;
				v->pend[i].ev = v->pend[i].alt;
				break;
			}
	}
	size_t i = 0;
	uint64_t j = 0;
	while (i < v->n_pend || j < n) {
		if (i < v->n_pend && j < n && got[i] == want[j]) {
			if (format >= 4)
				at[j] = i + 1;
			else
				sealed(v, &v->pend[i]);
			i++, j++;
			continue;
		}
		/* is the event expected further on (events before it deleted)? */
		uint64_t k = j;
		while (i < v->n_pend && k < n && want[k] != got[i])
			k++;
		if (i < v->n_pend && k < n) {
			missing(v, j, k, what, &v->pend[i]);
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
			char buf[64];
			problem(v, "%s: event altered (it was event %" PRIu64 " of %s)",
				where(v, &v->pend[i], buf), j + 1, what);
			i++, j++;
		} else if (i < v->n_pend) {
			add_extra(v, &v->pend[i++]);
		} else {
			missing(v, j, n, what, NULL);
			j = n;
		}
	}
	if (format >= 4)
		check_chunks(v, at, n, body, what);
	v->n_pend = 0;
	free(got);
	free(at);
}

static void check_seal(struct verify *v, const char *text, size_t len, uint64_t line)
{
	char id[SEAL_RUN_HEX], prev[SEAL_MAC_HEX_MAX + 1], mac[SEAL_MAC_HEX_MAX + 1],
		want_mac[SEAL_MAC_HEX_MAX + 1], after[SEAL_RUN_HEX] = "", what[128];
	uint64_t format, index, epoch, time_ns, count;
	bool last, after_closed = false;
	const char *mac_at = NULL;

	for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), ",\"mac\":\"", 8));
	     p++)
		mac_at = p;
	if (!mac_at || !field_u64(text, len, "v", &format)) {
		problem(v, "%s %" PRIu64 ": a damaged seal (fields missing)", v->seal_unit, line);
		return;
	}
	if (format < SEAL_FORMAT_OLDEST || format > SEAL_FORMAT) {
		problem(v, "%s %" PRIu64 ": a seal of format %" PRIu64 ", which this tcp-audit does "
			   "not read (it reads formats %d to %d)",
			v->seal_unit, line, format, SEAL_FORMAT_OLDEST, SEAL_FORMAT);
		return;
	}
	size_t mac_hex = seal_mac_hex_len(format);
	if (!field_str(text, len, "run", id, sizeof(id), SEAL_RUN_HEX - 1) ||
	    !field_u64(text, len, "index", &index) || !field_u64(text, len, "epoch", &epoch) ||
	    !field_u64(text, len, "time_ns", &time_ns) || !field_u64(text, len, "count", &count) ||
	    !field_bool(text, len, "last", &last) ||
	    !field_str(text, len, "prev", prev, sizeof(prev), mac_hex) ||
	    !field_str(mac_at, len - (size_t)(mac_at - text), "mac", mac, sizeof(mac), mac_hex)) {
		problem(v, "%s %" PRIu64 ": a damaged seal (fields missing)", v->seal_unit, line);
		return;
	}
	/* the fingerprints: the MAC covers them as bytes */
	const char *fp = field(text, len, "fp");
	size_t n_fp = 0;
	uint64_t *want = read_fps(fp, mac_at, seal_fp_hex_len(format), &n_fp);
	if (!want) {
		problem(v, "%s %" PRIu64 ": a damaged seal (its fingerprints)", v->seal_unit, line);
		return;
	}
	/* format 4: the body's tags, 32 digits a chunk, right before the fingerprints */
	const char *body = format >= 4 ? field(text, len, "body") : NULL;
	size_t n_tags = 0;
	if (format >= 4) {
		const size_t sep = strlen(",\"fp\":");
		const char *end = (size_t)(fp - text) >= sep ? fp - sep : text;
		if (!body || body >= end || *body != '"' || end[-1] != '"' ||
		    (size_t)(end - body - 2) % SEAL_TAG_HEX) {
			problem(v, "%s %" PRIu64 ": a damaged seal (its body)", v->seal_unit, line);
			free(want);
			return;
		}
		n_tags = (size_t)(end - body - 2) / SEAL_TAG_HEX;
		body++;
	}
	if (v->by_uid) /* the seal's index is where it is */
		snprintf(what, sizeof(what), "seal %.8s #%" PRIu64, id, index);
	else
		snprintf(what, sizeof(what), "seal %.8s #%" PRIu64 " (%s %" PRIu64 ")", id, index,
			 v->seal_unit, line);
	/*
	 * The MAC under each key given, the run's own first; a key is derived by
	 * stepping from k(0): an epoch from after now is not walked to.
	 */
	struct run *known = find_run(v, id);
	const uint8_t *key = NULL;
	size_t k = 0, future = 0;
	for (size_t t = 0; t < v->n_keys && !key; t++) {
		k = ((known ? known->key : 0) + t) % v->n_keys;
		uint64_t now = (uint64_t)time(NULL), vstart = v->keys[k].vk->start;
		if (epoch > (now > vstart ? (now - vstart) / v->keys[k].vk->interval : 0) + 1) {
			future++;
			continue;
		}
		const uint8_t *at_epoch = seal_keys_at(&v->keys[k], epoch);
		seal_mac_hex(format, at_epoch, text, (size_t)(fp + 1 - text), want, n_fp,
			     want_mac);
		if (strcmp(mac, want_mac) == 0)
			key = at_epoch;
	}
	if (!key && future == v->n_keys) {
		problem(v, "%s: its epoch %" PRIu64 " lies in the future: forged", what, epoch);
		for (size_t i = 0; i < v->n_pend; i++)
			add_extra(v, &v->pend[i]);
		v->n_pend = 0;
		free(want);
		return;
	}
	if (!key) {
		problem(v, "%s: its MAC is wrong%s: the seal was forged or altered; the %zu events "
			   "before it are not verified",
			what, v->n_keys > 1 ? " under every key given" : "", v->n_pend);
		for (size_t i = 0; i < v->n_pend; i++)
			add_extra(v, &v->pend[i]);
		v->n_pend = 0;
		free(want);
		return;
	}
	v->seals++;
	if (n_fp != count || (format >= 4 && n_tags != (count + SEAL_CHUNK - 1) / SEAL_CHUNK)) {
		problem(v, "%s: its fingerprints or tags do not match its count", what);
		free(want);
		return;
	}
	uint64_t secs = time_ns / 1000000000u;
	const struct seal_vkey *vk = v->keys[k].vk;
	uint64_t at = secs > vk->start ? (secs - vk->start) / vk->interval : 0;
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
			r->key = k;
			field_str(text, len, "after", after, sizeof(after), 0);
			field_bool(text, len, "after_closed", &after_closed);
			memcpy(r->after, after, sizeof(r->after));
			r->after_closed = after_closed;
			r->prev_known = true;
			memset(r->prev, '0', mac_hex);
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
		r->key = k;
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
	memcpy(r->prev, mac, sizeof(r->prev));
	r->prev_known = true;
	r->next_index = index + 1;
	r->last_line = line;
	r->closed = r->closed || last;
	if (!r->seals++)
		r->first_seal_ns = time_ns;
	r->last_seal_ns = time_ns;
	r->events += count;

	uint8_t fp_key[16] = {0};
	if (format >= 4) {
		if (seal_body_key(v->body, key, text, (size_t)(body - text)) != 0) {
			fprintf(stderr, "tcp-audit verify: libcrypto's AES-256-GCM failed\n");
			exit(EXIT_USAGE);
		}
	} else {
		seal_fp_key(key, id, index, fp_key);
	}
	v->seal_host = v->key_hosts[k][0] ? v->key_hosts[k] : NULL;
	check_batch(v, format, want, count, fp_key, body, what);
	v->seal_host = NULL;
	if (format >= 4)
		seal_body_done(v->body);
	free(want);
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
	/* the events no seal covers, by runs of neighbours of the same verdict */
	size_t first = 0;
	int kind = -1; /* 0: uncovered, 1: copies of sealed events after a crash */
	for (size_t i = 0; i <= v->n_extra; i++) {
		int k = -1;
		if (i < v->n_extra) {
			struct sealed_uid key = {uid64(&v->extra[i].ev), 0};
			bool copy = crashed && v->n_sealed &&
				    bsearch(&key, v->sealed, v->n_sealed, sizeof(*v->sealed),
					    cmp_sealed);
			k = copy ? 1 : 0;
			if (k == kind && v->extra[i].line == v->extra[i - 1].line + 1)
				continue;
		}
		if (kind >= 0) {
			const struct pending *a = &v->extra[first], *b = &v->extra[i - 1];
			char what[192], buf[64], buf2[64];
			if (a == b)
				snprintf(what, sizeof(what), "%s: an event", where(v, a, buf));
			else if (v->by_uid)
				snprintf(what, sizeof(what), "%s to %s (%zu in time order): events",
					 where(v, a, buf), where(v, b, buf2), (size_t)(b - a + 1));
			else
				snprintf(what, sizeof(what), "%ss %" PRIu64 " to %" PRIu64 ": events",
					 v->unit, a->line, b->line);
			if (kind == 0)
				problem(v, "%s no seal covers (inserted, or written after the last "
					   "seal)",
					what);
			else
				note("%s not sealed, but copies of sealed ones (a write cut short by the "
				     "crash, written again after it)",
				     what);
		}
		kind = k;
		first = i;
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
		struct pending *e = next_pending(v);
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

/* ------------------------------------------------------------------------ */
/* Database archives: a row of tcp_audit_events back into its event           */

#define EVENT_COLUMNS                                                                      \
	"time_ns, kind, host, family, saddr, daddr, sport, dport, old_state, new_state, "   \
	"pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid, owner_comm, sock_cookie, " \
	"sock_inode, sock_uid, sock_gid, sock_state, netns, cgroup_id, seq, ktime, gap_stage, " \
	"gap_lost, reset_direction, reset_reason, error, "

/* The last column: machine, or NULL in a store made before it (no such column). */
#define MACHINE_COLUMN(v) ((v)->no_machine ? "NULL" : "machine")

/* The same from PostgreSQL: addresses as text without a mask. */
#define EVENT_COLUMNS_PG                                                                   \
	"time_ns, kind, host, family, host(saddr), host(daddr), sport, dport, old_state, "  \
	"new_state, pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid, owner_comm, " \
	"sock_cookie, sock_inode, sock_uid, sock_gid, sock_state, netns, cgroup_id, seq, "   \
	"ktime, gap_stage, gap_lost, reset_direction, reset_reason, error, "

/* A row's columns, numbered as in EVENT_COLUMNS, however the store hands them over. */
struct row {
	void *ctx;
	bool (*null)(void *ctx, int i);
	int64_t (*i64)(void *ctx, int i);
	const char *(*text)(void *ctx, int i, size_t *len);
};

static void row_text(const struct row *r, int i, char *out, size_t size)
{
	size_t n = 0;
	const char *t = r->null(r->ctx, i) ? NULL : r->text(r->ctx, i, &n);

	memset(out, 0, size);
	if (t)
		memcpy(out, t, n < size ? n : size - 1);
}

static bool row_addr(const struct row *r, int i, unsigned family, uint8_t out[16])
{
	size_t n = 0;
	const char *t = r->null(r->ctx, i) ? NULL : r->text(r->ctx, i, &n);

	return t && parse_addr(family, t, n, out) == 0;
}

/* An optional number: its validity bit set when the column is not NULL. */
static uint64_t row_opt(const struct row *r, int i, uint32_t bit, uint32_t *valid)
{
	if (r->null(r->ctx, i))
		return 0;
	*valid |= bit;
	return (uint64_t)r->i64(r->ctx, i);
}

/*
 * The event a row holds, as the sink got it: the inverse of the sinks'
 * columns (a NULL column is a field the event did not have).  Returns false
 * when the row cannot be an event of tcp-audit.
 */
static bool row_event(const struct row *r, struct tcp_audit_event *e)
{
	uint32_t ignored = 0;

	memset(e, 0, sizeof(*e));
	e->time_ns = (uint64_t)r->i64(r->ctx, 0);
	e->kind = (uint8_t)r->i64(r->ctx, 1);
	if (!r->null(r->ctx, 2)) {
		e->valid |= TCP_AUDIT_HAS_HOST;
		row_text(r, 2, e->host, sizeof(e->host));
	}
	if (e->kind == TCP_AUDIT_KIND_GAP) {
		e->gap_stage = (uint8_t)r->i64(r->ctx, 25);
		e->gap_lost = (uint64_t)r->i64(r->ctx, 26);
	} else {
		e->family = (uint16_t)r->i64(r->ctx, 3);
		if (!row_addr(r, 4, e->family, e->saddr) || !row_addr(r, 5, e->family, e->daddr))
			return false;
		e->sport = (uint16_t)r->i64(r->ctx, 6);
		e->dport = (uint16_t)r->i64(r->ctx, 7);
		e->old_state = (uint8_t)r->i64(r->ctx, 8);
		e->new_state = (uint8_t)r->i64(r->ctx, 9);
		e->pid_on_cpu = (uint32_t)r->i64(r->ctx, 10);
		e->tid_on_cpu = (uint32_t)row_opt(r, 11, TCP_AUDIT_HAS_TID, &e->valid);
		row_text(r, 12, e->comm_on_cpu, sizeof(e->comm_on_cpu));
		e->owner_pid = (uint32_t)row_opt(r, 13, TCP_AUDIT_HAS_OWNER, &e->valid);
		if (e->valid & TCP_AUDIT_HAS_OWNER) {
			e->owner_uid = (uint32_t)r->i64(r->ctx, 14);
			row_text(r, 15, e->owner_comm, sizeof(e->owner_comm));
		}
		e->sock_cookie = row_opt(r, 16, TCP_AUDIT_HAS_COOKIE, &e->valid);
		e->sock_inode = row_opt(r, 17, TCP_AUDIT_HAS_SOCK_INODE, &e->valid);
		if (e->valid & TCP_AUDIT_HAS_SOCK_INODE) {
			e->sock_uid = (uint32_t)r->i64(r->ctx, 18);
			e->sock_gid = (uint32_t)r->i64(r->ctx, 19);
		}
		e->sock_state = (uint8_t)row_opt(r, 20, TCP_AUDIT_HAS_SOCK_STATE, &e->valid);
		e->netns = (uint32_t)row_opt(r, 21, TCP_AUDIT_HAS_NETNS, &e->valid);
		e->cgroup_id = row_opt(r, 22, TCP_AUDIT_HAS_CGROUP, &e->valid);
		e->reset_direction = (uint8_t)row_opt(r, 27, 0, &ignored);
		e->reset_reason = (uint8_t)row_opt(r, 28, TCP_AUDIT_HAS_RESET_REASON, &e->valid);
		e->error = (uint16_t)row_opt(r, 29, TCP_AUDIT_HAS_ERROR, &e->valid);
	}
	e->seq = row_opt(r, 23, TCP_AUDIT_HAS_SEQ, &e->valid);
	e->ktime_ns = row_opt(r, 24, TCP_AUDIT_HAS_KTIME, &e->valid);
	if (!r->null(r->ctx, 30)) {
		size_t n = 0;
		const char *t = r->text(r->ctx, 30, &n);
		if (!t || parse_machine(t, n, &e->machine))
			return false;
		e->valid |= TCP_AUDIT_HAS_MACHINE;
	}
	return true;
}

/*
 * A text's U+0080..U+00FF back to the bytes they stand for, into a
 * NUL-padded field; true if there was any (the field is then different).
 * Stores whose text is UTF-8 (PostgreSQL, ClickHouse) have a byte that is
 * not UTF-8 that way, as the JSON form has it.
 */
static bool latin1_bytes(const char *text, size_t len, char *field, size_t size)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t o = 0;
	bool any = false;

	memset(field, 0, size);
	for (size_t i = 0; i < len && o + 1 < size; i++) {
		if ((p[i] == 0xc2 || p[i] == 0xc3) && i + 1 < len && (p[i + 1] & 0xc0) == 0x80) {
			field[o++] = (char)((p[i] & 0x03) << 6 | (p[i + 1] & 0x3f));
			i++;
			any = true;
		} else {
			field[o++] = (char)p[i];
		}
	}
	return any;
}

/* One text column of a row back to bytes (see latin1_bytes); false when NULL or unchanged. */
static bool row_latin1(const struct row *r, int i, char *field, size_t size)
{
	size_t n = 0;
	const char *t = r->null(r->ctx, i) ? NULL : r->text(r->ctx, i, &n);

	return t && latin1_bytes(t, n, field, size);
}

/* e->alt: e->ev with the row's host and command names read back to bytes, if any differ. */
static void row_alt(const struct row *r, struct pending *e)
{
	e->alt = e->ev;
	/* all three read back, whichever differ */
	bool host = row_latin1(r, 2, e->alt.host, sizeof(e->alt.host));
	bool comm = row_latin1(r, 12, e->alt.comm_on_cpu, sizeof(e->alt.comm_on_cpu));
	bool owner = row_latin1(r, 15, e->alt.owner_comm, sizeof(e->alt.owner_comm));
	e->has_alt = host || comm || owner;
}

static int cmp_uid(const void *a, const void *b)
{
	return memcmp(a, b, EVENT_UID_BYTES);
}

/* The uids a seal names, n of them, 16 bytes each. */
static void add_named(struct verify *v, const uint8_t *uids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		v->named = grow(v->named, &v->cap_named, v->n_named, EVENT_UID_BYTES);
		memcpy(v->named + v->n_named++ * EVENT_UID_BYTES, uids + i * EVENT_UID_BYTES,
		       EVENT_UID_BYTES);
	}
}

/* Whether a seal names the row of this uid (its text form); after sort_named(). */
static bool is_named(const struct verify *v, const char *uid_text)
{
	uint8_t uid[EVENT_UID_BYTES] = {0};

	sodium_hex2bin(uid, sizeof(uid), uid_text, strlen(uid_text), "-", NULL, NULL);
	return v->n_named && bsearch(uid, v->named, v->n_named, EVENT_UID_BYTES, cmp_uid);
}

static void sort_named(struct verify *v)
{
	if (v->n_named)
		qsort(v->named, v->n_named, EVENT_UID_BYTES, cmp_uid);
}

#if TCP_AUDIT_VERIFY_SQLITE
/* ------------------------------------------------------------------------ */
/* SQLite archives (the sqlite sink): seals in tcp_audit_seals, each with the  */
/* uids of its batch's events in tcp_audit_events                             */

static bool sq_null(void *ctx, int i)
{
	return sqlite3_column_type(ctx, i + 1) == SQLITE_NULL;
}

static int64_t sq_i64(void *ctx, int i)
{
	return sqlite3_column_int64(ctx, i + 1);
}

static const char *sq_text(void *ctx, int i, size_t *len)
{
	const char *t = (const char *)sqlite3_column_text(ctx, i + 1);

	*len = t ? (size_t)sqlite3_column_bytes(ctx, i + 1) : 0;
	return t;
}

static int verify_sqlite(struct verify *v)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *seals = NULL, *by_uid = NULL, *all = NULL;
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
	char by_uid_sql[1024];
	sqlite3_stmt *probe = NULL;
	archive_column_query(false, "machine", by_uid_sql, sizeof(by_uid_sql));
	v->no_machine = sqlite3_prepare_v2(db, by_uid_sql, -1, &probe, NULL) != SQLITE_OK ||
			sqlite3_step(probe) != SQLITE_ROW || sqlite3_column_int(probe, 0) != 1;
	sqlite3_finalize(probe);
	snprintf(by_uid_sql, sizeof(by_uid_sql),
		 "SELECT rowid, " EVENT_COLUMNS "%s FROM tcp_audit_events WHERE uid = ?",
		 MACHINE_COLUMN(v));
	if (sqlite3_prepare_v2(db, by_uid_sql, -1, &by_uid, NULL) != SQLITE_OK ||
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
		add_named(v, uids, n);
		for (size_t i = 0; i < n; i++) {
			char uid[EVENT_UID_LEN];
			event_uid_text(uids + i * EVENT_UID_BYTES, uid);
			sqlite3_bind_text(by_uid, 1, uid, -1, SQLITE_TRANSIENT);
			if (sqlite3_step(by_uid) == SQLITE_ROW) {
				struct pending *e = next_pending(v);
				struct row r = {by_uid, sq_null, sq_i64, sq_text};
				e->line = (uint64_t)sqlite3_column_int64(by_uid, 0);
				if (row_event(&r, &e->ev))
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
	sort_named(v);
	while ((rc = sqlite3_step(all)) == SQLITE_ROW) {
		struct pending e = {.line = (uint64_t)sqlite3_column_int64(all, 0)};
		const char *uid = (const char *)sqlite3_column_text(all, 1);
		if (!is_named(v, uid ? uid : ""))
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

#if TCP_AUDIT_VERIFY_PGSQL
/* ------------------------------------------------------------------------ */
/* PostgreSQL archives (the pgsql sink): as SQLite's, events named by uid     */

#define SEAL_FETCH 64       /* seals per round trip */
#define ROWS_FETCH 10000    /* uids per round trip of the scan for rows no seal names */

struct pg_row {
	PGresult *res;
	int row;
};

static bool pg_null(void *ctx, int i)
{
	struct pg_row *p = ctx;

	return PQgetisnull(p->res, p->row, i + 1);
}

static int64_t pg_i64(void *ctx, int i)
{
	struct pg_row *p = ctx;

	return strtoll(PQgetvalue(p->res, p->row, i + 1), NULL, 10);
}

static const char *pg_text(void *ctx, int i, size_t *len)
{
	struct pg_row *p = ctx;

	*len = (size_t)PQgetlength(p->res, p->row, i + 1);
	return PQgetvalue(p->res, p->row, i + 1);
}

static bool pg_ok(PGconn *c, PGresult *res, ExecStatusType want, const char *what,
		  struct verify *v)
{
	if (PQresultStatus(res) == want)
		return true;
	fprintf(stderr, "tcp-audit verify: %s: %s: %s", v->source, what, PQerrorMessage(c));
	return false;
}

/* A seal's events, in its order, by their uids (the time in a uid finds the partition). */
static bool pg_batch(PGconn *c, struct verify *v, const uint8_t *uids, size_t n)
{
	if (n == 0)
		return true; /* a closing seal */
	size_t cap = 2 + n * (EVENT_UID_LEN + 21);
	char *u = malloc(cap), *t = malloc(cap);
	if (!u || !t) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	char *pu = u, *pt = t;
	*pu++ = '{';
	*pt++ = '{';
	for (size_t i = 0; i < n; i++) {
		const uint8_t *b = uids + i * EVENT_UID_BYTES;
		event_uid_text(b, pu);
		pu += EVENT_UID_LEN - 1;
		pt += sprintf(pt, "%" PRId64, (int64_t)event_uid_time(b));
		*pu++ = *pt++ = i + 1 < n ? ',' : '}';
	}
	*pu = *pt = '\0';
	const char *params[2] = {u, t};
	char sql[1024];
	snprintf(sql, sizeof(sql),
		 "SELECT e.uid::text, " EVENT_COLUMNS_PG "%s FROM unnest($1::uuid[], $2::bigint[])"
		 " WITH ORDINALITY AS w(uid, t, pos) JOIN tcp_audit_events e"
		 " ON e.uid = w.uid AND e.time_ns = w.t ORDER BY w.pos",
		 MACHINE_COLUMN(v));
	PGresult *res = PQexecParams(c, sql, 2, NULL, params, NULL, NULL, 0);
	free(u);
	free(t);
	if (!pg_ok(c, res, PGRES_TUPLES_OK, "reading events", v)) {
		PQclear(res);
		return false;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		struct pending *e = next_pending(v);
		struct pg_row ctx = {res, i};
		struct row r = {&ctx, pg_null, pg_i64, pg_text};
		snprintf(e->uid, sizeof(e->uid), "%s", PQgetvalue(res, i, 0));
		e->line = (uint64_t)i;
		if (row_event(&r, &e->ev)) {
			row_alt(&r, e);
			v->n_pend++;
		}
		else
			problem(v, "event %s: damaged (an address that is not one)", e->uid);
	}
	PQclear(res);
	return true;
}

static int verify_pgsql(struct verify *v)
{
	PGconn *c = PQconnectdb(v->source);
	PGresult *res = NULL;
	uint8_t *uids = NULL;
	size_t cap_uids = 0;
	uint64_t scanned = 0;
	int status = EXIT_USAGE;

	v->unit = "event";
	v->seal_unit = "seal";
	v->by_uid = true;
	if (PQstatus(c) != CONNECTION_OK) {
		/* libpq's message names the server; a conninfo can hold a password */
		fprintf(stderr, "tcp-audit verify: cannot connect: %s", PQerrorMessage(c));
		goto out;
	}
	archive_pgsql_name(c, v->pg_name, sizeof(v->pg_name));
	v->source = v->pg_name;
	char column_sql[256];
	archive_column_query(true, "machine", column_sql, sizeof(column_sql));
	res = PQexec(c, column_sql);
	v->no_machine = PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
			strcmp(PQgetvalue(res, 0, 0), "1") != 0;
	PQclear(res);
	res = PQexec(c, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ");
	if (!pg_ok(c, res, PGRES_COMMAND_OK, "BEGIN", v))
		goto out;
	PQclear(res);
	res = PQexec(c, "DECLARE seals NO SCROLL CURSOR FOR SELECT idx, seal, encode(uids, 'hex')"
			" FROM tcp_audit_seals ORDER BY time_ns, idx");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "tcp-audit verify: %s has no seals: it was not written with --seal "
				"(%s)",
			v->source, PQerrorMessage(c));
		goto out;
	}
	for (;;) {
		PQclear(res);
		res = PQexec(c, "FETCH " STRINGIFY(SEAL_FETCH) " FROM seals");
		if (!pg_ok(c, res, PGRES_TUPLES_OK, "reading the seals", v))
			goto out;
		if (PQntuples(res) == 0)
			break;
		for (int i = 0; i < PQntuples(res); i++) {
			const char *hex = PQgetvalue(res, i, 2);
			size_t len = (size_t)PQgetlength(res, i, 2), n = len / 2 / EVENT_UID_BYTES;
			if (len / 2 > cap_uids) {
				cap_uids = len / 2;
				uids = realloc(uids, cap_uids);
				if (!uids) {
					fprintf(stderr, "tcp-audit verify: out of memory\n");
					exit(EXIT_USAGE);
				}
			}
			if (sodium_hex2bin(uids, cap_uids, hex, len, NULL, NULL, NULL) != 0)
				n = 0; /* a damaged list: its events are reported missing */
			add_named(v, uids, n);
			if (!pg_batch(c, v, uids, n))
				goto out;
			check_seal(v, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1),
				   (uint64_t)strtoull(PQgetvalue(res, i, 0), NULL, 10));
		}
	}
	PQclear(res);
	res = PQexec(c, "DECLARE events NO SCROLL CURSOR FOR SELECT uid::text"
			" FROM tcp_audit_events ORDER BY time_ns, uid");
	if (!pg_ok(c, res, PGRES_COMMAND_OK, "reading the events", v))
		goto out;
	sort_named(v);
	for (;;) {
		PQclear(res);
		res = PQexec(c, "FETCH " STRINGIFY(ROWS_FETCH) " FROM events");
		if (!pg_ok(c, res, PGRES_TUPLES_OK, "reading the events", v))
			goto out;
		if (PQntuples(res) == 0)
			break;
		for (int i = 0; i < PQntuples(res); i++, scanned++) {
			if (is_named(v, PQgetvalue(res, i, 0)))
				continue;
			struct pending e = {.line = scanned};
			snprintf(e.uid, sizeof(e.uid), "%s", PQgetvalue(res, i, 0));
			add_extra(v, &e);
		}
	}
	finish(v);
	status = 0;
out:
	PQclear(res);
	PQfinish(c);
	free(uids);
	return status;
}
#else
static int verify_pgsql(struct verify *v)
{
	fprintf(stderr, "tcp-audit verify: %s is a PostgreSQL archive, and this tcp-audit was "
			"built without libpq\n",
		v->source);
	return EXIT_USAGE;
}
#endif

#if TCP_AUDIT_VERIFY_CLICKHOUSE
/* ------------------------------------------------------------------------ */
/* ClickHouse archives (the clickhouse sink): as PostgreSQL's, over HTTP;     */
/* the source is the sink's url= with ?table= and ?seals_table= when they are */
/* not the defaults (other parameters, such as database= or user=, are the   */
/* server's own)                                                              */

/*
 * Seals' events are read by the time their uids hold, in at most this many
 * ranges of time_ns (the table's order is host, time_ns, uid: a range reads
 * only its own granules), split where the times lie furthest apart (a held
 * event, a pause).  More ranges cost the server more than the rows they
 * leave out (300,000 events, a query a seal: 3.6-4.1 s with 4 or 8, 5.3 with
 * 16, 6.0 with 64).  A list of (uid, time) pairs instead made the server
 * read the whole table for every query (30 s).
 */
#define CH_RANGES 8
/*
 * Seals whose events one query reads (the ranges then cover them all): the
 * server took ~55 ms per 4,096 rows read a seal at a time, ~20 ms eight at a
 * time.
 */
#define CH_SEALS 8
#define CH_MAX_FIELDS 40

/* EVENT_COLUMNS from the clickhouse sink's columns: numbers for enums, addresses as text */
#define CH_ADDR(c)                                                                          \
	"if(toInt8(family) = 2, replaceOne(IPv6NumToString(" c "), '::ffff:', ''), "        \
	"IPv6NumToString(" c "))"
#define CH_EVENT_COLUMNS                                                                   \
	"time_ns, toInt8(kind), nullIf(host, ''), toInt8(family), " CH_ADDR("saddr") ", "   \
	CH_ADDR("daddr") ", sport, dport, ifNull(toInt8(old_state), toInt8(state)), "      \
	"ifNull(toInt8(new_state), toInt8(state)), pid_on_cpu, tid_on_cpu, comm_on_cpu, "   \
	"owner_pid, owner_uid, owner_comm, sock_cookie, sock_inode, sock_uid, sock_gid, "   \
	"toInt8(sock_state), netns, cgroup_id, seq, ktime, toInt8(stage), lost, "           \
	"toInt8(direction), toInt8(reason), error, machine"
#define CH_ERROR_COLUMN 29

struct ch {
	struct verify *v;
	CURL *curl;
	struct curl_slist *headers;
	char *url;   /* the server's URL with its parameters, ours taken out */
	char table[256], seals[256], user[128];
	/* the answer being read: lines handed to on_line as they come */
	struct byte_buffer line;
	bool (*on_line)(struct ch *c, char *line, size_t len);
	bool stopped; /* on_line said stop */
	struct byte_buffer error; /* the first bytes of an answer that is not 200 */
	uint64_t scanned, dups;
	/* the group's events: (uid, place) sorted by uid (first, for cmp_uid), what was found */
	struct ch_slot {
		uint8_t uid[EVENT_UID_BYTES];
		size_t pos;
	} *slots;
	struct pending *found;
	bool *have;
	size_t n_slots;
	uint64_t *times; /* the group's event times (sorted to make the ranges) */
	uint64_t *gaps;  /* between those times, widest first */
	/* the seals whose events the next query reads, in the order they are checked */
	struct ch_seal {
		uint64_t idx;
		char *text;
		size_t len;
		uint8_t *uids;
		size_t n;
	} group[CH_SEALS];
	size_t n_group;
};

/* The fields of a TabSeparated line, unescaped in place (NULL for \N). */
static size_t tsv_fields(char *line, size_t len, char **f, size_t *flen, size_t max)
{
	size_t n = 0;
	char *p = line, *end = line + len;

	while (n < max) {
		char *o = p, *start = p;
		while (p < end && *p != '\t') {
			if (*p == '\\' && p + 1 < end) {
				static const char from[] = "btnfr0'\\", to[] = "\b\t\n\f\r\0'\\";
				const char *k = memchr(from, p[1], sizeof(from) - 1);
				*o++ = k ? to[k - from] : p[1];
				p += 2;
			} else {
				*o++ = *p++;
			}
		}
		bool null = o - start == 1 && start[0] == 'N' && p - start == 2;
		f[n] = null ? NULL : start;
		flen[n++] = (size_t)(o - start);
		if (p >= end)
			break;
		p++;
	}
	return n;
}

/* b += p[0..n); false on out of memory */
static bool append(struct byte_buffer *b, const void *p, size_t n)
{
	if (byte_buffer_reserve(b, n))
		return false;
	byte_buffer_put(b, p, n);
	return true;
}

static void *grow_exact(void *p, size_t n, size_t size)
{
	void *q = realloc(p, (n ? n : 1) * size);

	if (!q) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	return q;
}

struct ch_row {
	char *f[CH_MAX_FIELDS];
	size_t len[CH_MAX_FIELDS];
	size_t n;
};

static bool ch_null(void *ctx, int i)
{
	struct ch_row *r = ctx;

	return (size_t)i + 1 >= r->n || !r->f[i + 1];
}

static int64_t ch_i64(void *ctx, int i)
{
	struct ch_row *r = ctx;

	if (ch_null(ctx, i))
		return 0;
	const char *t = r->f[i + 1];
	if (i == CH_ERROR_COLUMN && !(*t >= '0' && *t <= '9')) /* stored by its name */
		return errno_from_name(t, r->len[i + 1]);
	return strtoll(t, NULL, 10);
}

static const char *ch_text(void *ctx, int i, size_t *len)
{
	struct ch_row *r = ctx;

	*len = ch_null(ctx, i) ? 0 : r->len[i + 1];
	return ch_null(ctx, i) ? NULL : r->f[i + 1];
}

static size_t ch_answer(char *data, size_t size, size_t nmemb, void *user)
{
	struct ch *c = user;
	size_t len = size * nmemb;
	long status = 0;

	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		if (c->error.len < 1024 && !append(&c->error, data, len < 1024 ? len : 1024))
			return 0;
		return len;
	}
	if (c->stopped)
		return 0;
	if (!append(&c->line, data, len))
		return 0;
	char *p = c->line.p, *end = c->line.p + c->line.len, *nl;
	while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
		if (!c->on_line(c, p, (size_t)(nl - p))) {
			c->stopped = true;
			return 0;
		}
		p = nl + 1;
	}
	memmove(c->line.p, p, (size_t)(end - p));
	c->line.len = (size_t)(end - p);
	return len;
}

/*
 * One query, its answer's lines handed to on_line as they come.  0, or -1
 * with the reason printed (what: what was being read); code: ClickHouse's
 * error code when the server answered with one.
 */
static int ch_query(struct ch *c, const char *sql, size_t len,
		    bool (*on_line)(struct ch *c, char *line, size_t len), const char *what,
		    int *code)
{
	CURL *curl = curl_easy_duphandle(c->curl);
	CURL *outer = c->curl;
	struct byte_buffer line = c->line, error = c->error;
	bool (*outer_line)(struct ch *, char *, size_t) = c->on_line;
	bool stopped = c->stopped;
	int r = 0;

	if (!curl) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	/* a query made while another's answer is read (a seal's events) has its own state */
	c->curl = curl;
	c->line = (struct byte_buffer){0};
	c->error = (struct byte_buffer){0};
	c->on_line = on_line;
	c->stopped = false;
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, sql);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	CURLcode rc = curl_easy_perform(curl);
	long status = 0;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (code)
		*code = -1;
	if (c->stopped) {
		r = -1; /* on_line printed why */
	} else if (rc == CURLE_OK && status == 200 && c->line.len) {
		fprintf(stderr, "tcp-audit verify: %s: %s: the answer was cut short\n",
			c->v->source, what);
		r = -1;
	} else if (rc != CURLE_OK && status != 200 && c->error.len == 0) {
		fprintf(stderr, "tcp-audit verify: %s: %s: %s\n", c->v->source, what,
			curl_easy_strerror(rc));
		r = -1;
	} else if (status != 200) {
		const char *msg = c->error.p ? c->error.p : "";
		size_t n = c->error.p ? strcspn(msg, "\n") : 0;
		if (code && c->error.p && strncmp(msg, "Code: ", 6) == 0)
			*code = atoi(msg + 6);
		fprintf(stderr, "tcp-audit verify: %s: %s: HTTP %ld: %.*s\n", c->v->source, what,
			status, (int)(n > 300 ? 300 : n), msg);
		r = -1;
	} else if (rc != CURLE_OK) {
		fprintf(stderr, "tcp-audit verify: %s: %s: %s\n", c->v->source, what,
			curl_easy_strerror(rc));
		r = -1;
	}
	curl_easy_cleanup(curl);
	byte_buffer_free(&c->line);
	byte_buffer_free(&c->error);
	c->curl = outer;
	c->line = line;
	c->error = error;
	c->on_line = outer_line;
	c->stopped = stopped;
	return r;
}

/* A row of a seal's events: its uid, then the columns of CH_EVENT_COLUMNS. */
static bool ch_event_line(struct ch *c, char *line, size_t len)
{
	struct ch_row row;
	struct row r = {&row, ch_null, ch_i64, ch_text};
	uint8_t uid[EVENT_UID_BYTES];

	row.n = tsv_fields(line, len, row.f, row.len, CH_MAX_FIELDS);
	if (row.n != 32 || !row.f[0] ||
	    sodium_hex2bin(uid, sizeof(uid), row.f[0], row.len[0], "-", NULL, NULL) != 0) {
		/* an error the server sent after its answer had begun, say */
		problem(c->v, "reading events: a line that is not a row: %.80s", line);
		return true;
	}
	struct ch_slot *s = bsearch(uid, c->slots, c->n_slots, sizeof(*s), cmp_uid);
	if (!s)
		return true; /* a later seal's, in the same time range */
	/* a row is a seal's event only at the time its uid holds (else the scan names it) */
	if (!row.f[1] || strtoull(row.f[1], NULL, 10) != event_uid_time(uid))
		return true;
	struct pending e = {0};
	snprintf(e.uid, sizeof(e.uid), "%.*s", (int)row.len[0], row.f[0]);
	if (!row_event(&r, &e.ev)) {
		problem(c->v, "event %s: damaged (an address that is not one)", e.uid);
		return true;
	}
	row_alt(&r, &e);
	/* every seal of the group that names it (the spool after a crash: two may) */
	while (s > c->slots && cmp_uid(s[-1].uid, uid) == 0)
		s--;
	bool second = false;
	for (; s < c->slots + c->n_slots && cmp_uid(s->uid, uid) == 0; s++) {
		if (c->have[s->pos]) {
			second = true;
		} else {
			c->found[s->pos] = e;
			c->have[s->pos] = true;
		}
	}
	if (second) {
		e.line = c->dups++; /* apart from the scan's numbers */
		add_extra(c->v, &e); /* a second row of one uid */
	}
	return true;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_u64_desc(const void *a, const void *b)
{
	return cmp_u64(b, a);
}

/* Reads the rows at the n times in c->times (unsorted) into the slots that name them. */
static bool ch_read_ranges(struct ch *c, size_t n)
{
	qsort(c->times, n, sizeof(*c->times), cmp_u64);
	/*
	 * The ranges: split at every gap wider than the CH_RANGES - 1 widest's
	 * (split), and at as many gaps of exactly that width as are left (ties).
	 */
	uint64_t split = 0;
	size_t ties = 0;
	if (n > CH_RANGES) {
		for (size_t i = 1; i < n; i++)
			c->gaps[i - 1] = c->times[i] - c->times[i - 1];
		qsort(c->gaps, n - 1, sizeof(*c->gaps), cmp_u64_desc);
		split = c->gaps[CH_RANGES - 2];
		ties = CH_RANGES - 1;
		for (size_t i = 0; i < n - 1 && c->gaps[i] > split; i++)
			ties--;
	}
	/*
	 * PREWHERE: FINAL then collapses only the rows in range (time_ns is in
	 * the key: all of a key's rows are in or out), 4x faster than WHERE here.
	 */
	struct byte_buffer sql = {0};
	byte_buffer_printf(&sql, "SELECT toString(uid), " CH_EVENT_COLUMNS " FROM %s FINAL PREWHERE ",
			   c->table);
	for (size_t i = 0, ranges = 0; i < n; ranges++) {
		uint64_t from = c->times[i], to = from;
		for (i++; i < n; i++) {
			uint64_t gap = c->times[i] - to;
			if (gap > split)
				break;
			if (gap == split && ties) {
				ties--;
				break;
			}
			to = c->times[i];
		}
		byte_buffer_printf(&sql, "%stime_ns BETWEEN %" PRIu64 " AND %" PRIu64,
				   ranges ? " OR " : "", from, to);
	}
	byte_buffer_printf(&sql, " FORMAT TabSeparated");
	if (sql.failed) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	int r = ch_query(c, sql.p, sql.len, ch_event_line, "reading events", NULL);
	byte_buffer_free(&sql);
	return r == 0;
}

/*
 * The events of the seals in the group, found by the times their uids hold
 * in one query; then each seal, in order, with its events in its order.
 */
static bool ch_flush(struct ch *c)
{
	struct verify *v = c->v;
	size_t n = 0;
	bool ok = true;

	for (size_t k = 0; k < c->n_group; k++)
		n += c->group[k].n;
	if (n) {
		c->slots = grow_exact(c->slots, n, sizeof(*c->slots));
		c->found = grow_exact(c->found, n, sizeof(*c->found));
		c->have = grow_exact(c->have, n, sizeof(*c->have));
		c->times = grow_exact(c->times, n, sizeof(*c->times));
		c->gaps = grow_exact(c->gaps, n, sizeof(*c->gaps));
		for (size_t k = 0, at = 0; k < c->n_group; k++) {
			for (size_t i = 0; i < c->group[k].n; i++, at++) {
				const uint8_t *uid = c->group[k].uids + i * EVENT_UID_BYTES;
				memcpy(c->slots[at].uid, uid, EVENT_UID_BYTES);
				c->slots[at].pos = at;
				c->have[at] = false;
				c->times[at] = event_uid_time(uid);
			}
		}
		c->n_slots = n;
		qsort(c->slots, n, sizeof(*c->slots), cmp_uid);
		ok = ch_read_ranges(c, n);
	}
	for (size_t k = 0, at = 0; k < c->n_group; k++) {
		struct ch_seal *g = &c->group[k];
		for (size_t i = 0; ok && i < g->n; i++) {
			if (!c->have[at + i])
				continue;
			struct pending *e = next_pending(v);
			*e = c->found[at + i];
			e->line = i;
			v->n_pend++;
		}
		if (ok)
			check_seal(v, g->text, g->len, g->idx);
		at += g->n;
		free(g->text);
		free(g->uids);
	}
	c->n_group = 0;
	return ok;
}

/* A seal: idx, its text, its events' uids (hex); its events are read and checked. */
static bool ch_seal_line(struct ch *c, char *line, size_t len)
{
	char *f[3];
	size_t flen[3];
	struct verify *v = c->v;

	if (tsv_fields(line, len, f, flen, 3) != 3 || !f[0] || !f[1]) {
		problem(v, "a seal row that is not one: %.60s", line);
		return true;
	}
	size_t n = f[2] ? flen[2] / 2 / EVENT_UID_BYTES : 0;
	uint8_t *uids = malloc(n ? n * EVENT_UID_BYTES : 1);
	if (!uids) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	if (n && sodium_hex2bin(uids, n * EVENT_UID_BYTES, f[2], flen[2], NULL, NULL, NULL) != 0)
		n = 0; /* a damaged list: its events are reported missing */
	add_named(v, uids, n);
	/* kept for its turn, NUL-ended: its numbers are read with strtoull, which must stop in it */
	struct ch_seal *g = &c->group[c->n_group++];
	*g = (struct ch_seal){strtoull(f[0], NULL, 10), malloc(flen[1] + 1), flen[1], uids, n};
	if (!g->text) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	memcpy(g->text, f[1], flen[1]);
	g->text[flen[1]] = '\0';
	return c->n_group < CH_SEALS || ch_flush(c);
}

/* The scan: every row, those no seal names (or not at the time its uid holds) kept aside. */
static bool ch_scan_line(struct ch *c, char *line, size_t len)
{
	char *f[2];
	size_t flen[2];
	uint8_t uid[EVENT_UID_BYTES];

	if (tsv_fields(line, len, f, flen, 2) != 2 || !f[0] || !f[1] ||
	    sodium_hex2bin(uid, sizeof(uid), f[0], flen[0], "-", NULL, NULL) != 0) {
		problem(c->v, "reading the events: a line that is not a row: %.80s", line);
		return true;
	}
	struct pending e = {.line = c->scanned++};
	snprintf(e.uid, sizeof(e.uid), "%.*s", (int)flen[0], f[0]);
	if (!is_named(c->v, e.uid) || strtoull(f[1], NULL, 10) != event_uid_time(uid))
		add_extra(c->v, &e);
	return true;
}

/* A table's name: [database.]name, letters, digits and '_'. */
static bool ch_name_ok(const char *key, const char *name)
{
	for (const char *t = name; *t; t++)
		if (!(*t == '_' || *t == '.' || (*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'z') ||
		      (*t >= 'A' && *t <= 'Z'))) {
			fprintf(stderr, "tcp-audit verify: %s=%s: letters, digits, '_' and '.' only\n",
				key, name);
			return false;
		}
	return true;
}

/*
 * The source's URL without table= and seals_table=, which name our tables,
 * and user=, sent as a header (ClickHouse takes the password in one, and not
 * a user as a parameter with it).
 */
static int ch_parse_source(struct ch *c, const char *source)
{
	const char *q = strchr(source, '?');
	char database[128] = "default";
	struct byte_buffer url = {0};

	snprintf(c->table, sizeof(c->table), "tcp_events");
	snprintf(c->seals, sizeof(c->seals), "tcp_audit_seals");
	if (!append(&url, source, q ? (size_t)(q - source) : strlen(source)))
		url.failed = true;
	char sep = '?';
	for (const char *p = q ? q + 1 : NULL; p && *p;) {
		size_t n = strcspn(p, "&");
		const char *eq = memchr(p, '=', n);
		size_t klen = eq ? (size_t)(eq - p) : n, vlen = eq ? n - klen - 1 : 0;
		char *out = NULL;
		size_t size = 0;
		if (klen == 5 && strncmp(p, "table", 5) == 0)
			out = c->table, size = sizeof(c->table);
		else if (klen == 11 && strncmp(p, "seals_table", 11) == 0)
			out = c->seals, size = sizeof(c->seals);
		else if (klen == 4 && strncmp(p, "user", 4) == 0) /* a header, with the password's */
			out = c->user, size = sizeof(c->user);
		else if (klen == 8 && strncmp(p, "database", 8) == 0 && vlen < sizeof(database))
			snprintf(database, sizeof(database), "%.*s", (int)vlen, eq + 1);
		if (out) {
			if (vlen == 0 || vlen >= size - 1) {
				fprintf(stderr, "tcp-audit verify: %.*s: too short or too long\n", (int)n,
					p);
				byte_buffer_free(&url);
				return -1;
			}
			snprintf(out, size, "%.*s", (int)vlen, eq + 1);
		} else {
			byte_buffer_printf(&url, "%c%.*s", sep, (int)n, p);
			sep = '&';
		}
		p += n;
		if (*p == '&')
			p++;
	}
	if (!ch_name_ok("table", c->table) || !ch_name_ok("seals_table", c->seals)) {
		byte_buffer_free(&url);
		return -1;
	}
	if (!append(&url, "", 1) || url.failed) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		exit(EXIT_USAGE);
	}
	c->url = url.p;
	/* named as host:port/database.table: the URL may hold a password */
	const char *host = strstr(source, "://") + 3, *at = strchr(host, '@');
	size_t hlen = strcspn(host, "/?");
	if (at && (size_t)(at - host) < hlen) {
		hlen -= (size_t)(at + 1 - host);
		host = at + 1;
	}
	if (snprintf(c->v->pg_name, sizeof(c->v->pg_name), "%s@%.*s/%s.%s",
		     *c->user ? c->user : "default", (int)(hlen > 200 ? 200 : hlen), host, database,
		     c->table) >= (int)sizeof(c->v->pg_name))
		c->v->pg_name[sizeof(c->v->pg_name) - 2] = '~'; /* cut short */
	c->v->source = c->v->pg_name;
	return 0;
}

/* password_file: its first line; NULL on error (said). */
static char *ch_password(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "re");

	if (!f) {
		fprintf(stderr, "tcp-audit verify: cannot read --password-file %s: %s\n", path,
			strerror(errno));
		return NULL;
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	char *h = NULL;
	if (asprintf(&h, "X-ClickHouse-Key: %s", line) < 0)
		h = NULL;
	sodium_memzero(line, sizeof(line));
	return h;
}

static int verify_clickhouse(struct verify *v, const char *password_file, const char *ca_file)
{
	struct ch c = {.v = v, .dups = UINT64_C(1) << 62};
	char sql[1024], *key = NULL;
	int status = EXIT_USAGE, code;

	v->unit = "event";
	v->seal_unit = "seal";
	v->by_uid = true;
	if (ch_parse_source(&c, v->source))
		return EXIT_USAGE;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	c.curl = curl_easy_init();
	c.headers = curl_slist_append(NULL, "Expect:");
	if (*c.user && c.headers) {
		char h[160];
		snprintf(h, sizeof(h), "X-ClickHouse-User: %s", c.user);
		c.headers = curl_slist_append(c.headers, h);
	}
	if (password_file && c.headers) {
		if (!(key = ch_password(password_file)))
			goto out;
		c.headers = curl_slist_append(c.headers, key);
		sodium_memzero(key, strlen(key));
	}
	if (!c.curl || !c.headers) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		goto out;
	}
	curl_easy_setopt(c.curl, CURLOPT_URL, c.url);
	curl_easy_setopt(c.curl, CURLOPT_HTTPHEADER, c.headers);
	curl_easy_setopt(c.curl, CURLOPT_WRITEFUNCTION, ch_answer);
	curl_easy_setopt(c.curl, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(c.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c.curl, CURLOPT_CONNECTTIMEOUT, 10L);
	/* a server that stops answering: given up after 5 minutes without a byte */
	curl_easy_setopt(c.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c.curl, CURLOPT_LOW_SPEED_TIME, 300L);
	curl_easy_setopt(c.curl, CURLOPT_PROTOCOLS_STR, "http,https");
	if (ca_file)
		curl_easy_setopt(c.curl, CURLOPT_CAINFO, ca_file);
	snprintf(sql, sizeof(sql),
		 "SELECT idx, seal, hex(uids) FROM %s FINAL ORDER BY time_ns, idx"
		 " FORMAT TabSeparated",
		 c.seals);
	if (ch_query(&c, sql, strlen(sql), ch_seal_line, "reading the seals", &code) != 0) {
		if (code == 60) /* UNKNOWN_TABLE */
			fprintf(stderr, "tcp-audit verify: %s has no seals (no table %s): it was not "
					"written with --seal, or seals_table= names another\n",
				v->source, c.seals);
		goto out;
	}
	if (!ch_flush(&c)) /* the last seals */
		goto out;
	sort_named(v);
	c.scanned = 0;
	snprintf(sql, sizeof(sql),
		 "SELECT toString(uid), time_ns FROM %s FINAL ORDER BY time_ns, uid"
		 " FORMAT TabSeparated",
		 c.table);
	if (ch_query(&c, sql, strlen(sql), ch_scan_line, "reading the events", NULL) != 0)
		goto out;
	finish(v);
	status = 0;
out:
	if (c.curl)
		curl_easy_cleanup(c.curl);
	curl_slist_free_all(c.headers);
	free(key);
	free(c.url);
	free(c.slots);
	free(c.found);
	free(c.have);
	free(c.times);
	free(c.gaps);
	for (size_t k = 0; k < c.n_group; k++) {
		free(c.group[k].text);
		free(c.group[k].uids);
	}
	curl_global_cleanup();
	return status;
}
#else
static int verify_clickhouse(struct verify *v, const char *password_file, const char *ca_file)
{
	(void)password_file;
	(void)ca_file;
	fprintf(stderr, "tcp-audit verify: %s is a ClickHouse archive, and this tcp-audit was "
			"built without libcurl\n",
		v->source);
	return EXIT_USAGE;
}
#endif

int verify_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"verify-key", required_argument, NULL, 'k'},
		{"password-file", required_argument, NULL, 'p'},
		{"ca-file", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *password_file = NULL, *ca_file = NULL;
	static struct seal_vkey vks[MAX_KEYS];
	static struct seal_keys keys[MAX_KEYS];
	static char key_hosts[MAX_KEYS][TCP_AUDIT_HOST_LEN];
	size_t n_keys = 0;
	struct verify v = {0};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (n_keys == MAX_KEYS)
				return usage_error("verify", "at most %d --verify-key", MAX_KEYS);
			{
				const char *vk = strstr(optarg, "=tav1-");
				size_t hlen = vk ? (size_t)(vk - optarg) : 0;
				if (vk && (hlen == 0 || hlen >= TCP_AUDIT_HOST_LEN))
					return usage_error("verify", "--verify-key HOST=KEY: a host name "
								     "of 1 to %d bytes",
							   TCP_AUDIT_HOST_LEN - 1);
				memcpy(key_hosts[n_keys], optarg, hlen);
				key_hosts[n_keys][hlen] = '\0';
				if (seal_vkey_parse(vk ? vk + 1 : optarg, &vks[n_keys]) < 0)
					return usage_error("verify", "--verify-key: not a verification key "
								     "of tcp-audit seal-init (tav1-...)");
				n_keys++;
			}
			break;
		case 'p':
			password_file = optarg;
			break;
		case 'c':
			ca_file = optarg;
			break;
		case 'h':
			printf("Usage: tcp-audit verify SOURCE --verify-key KEY... [--password-file F]\n"
			       "                        [--ca-file F]\n"
			       "\n"
			       "Checks an archive written with tcp-audit --seal: every seal (its MAC under\n"
			       "the key of its time, its place in its run's chain) and every event against\n"
			       "its seal.  Names each event deleted, altered or inserted (by line), each\n"
			       "seal missing, an end cut off; a run that did not stop cleanly is a note\n"
			       "when the run after it recorded the crash.\n"
			       "\n"
			       "  SOURCE            a JSON-lines file of the jsonl sink (- for stdin), or\n"
			       "                    an SQLite file of the sqlite sink, or a PostgreSQL\n"
			       "                    URI or connection string (postgresql://...,\n"
			       "                    dbname=...) of the pgsql sink's database, or the\n"
			       "                    clickhouse sink's url= (http[s]://HOST:PORT/, with\n"
			       "                    ?database=D&table=T&seals_table=S where not the\n"
			       "                    defaults; user=NAME for another user)\n"
			       "  --verify-key KEY  the key tcp-audit seal-init printed; again for each\n"
			       "                    host whose seals the archive holds (a fleet's store);\n"
			       "                    as HOST=KEY, it seals the events of host HOST only\n"
			       "  --password-file F ClickHouse: the user's password, the file's first line\n"
			       "  --ca-file F       ClickHouse over https: the CA certificates (PEM)\n"
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
	if (!n_keys)
		return usage_error("verify", "give --verify-key (printed by tcp-audit seal-init)");
	v.source = argv[optind];
	bool clickhouse = archive_is_clickhouse(v.source);
	if ((password_file || ca_file) && !clickhouse)
		return usage_error("verify", "--%s is for a ClickHouse source (http[s]://...)",
				   password_file ? "password-file" : "ca-file");
	for (size_t i = 0; i < n_keys; i++)
		seal_keys_init(&keys[i], &vks[i]);
	v.keys = keys;
	v.key_hosts = key_hosts;
	v.n_keys = n_keys;
	v.body = seal_body_new();
	if (!v.body) {
		fprintf(stderr, "tcp-audit verify: out of memory\n");
		return EXIT_USAGE;
	}
	int r = clickhouse		      ? verify_clickhouse(&v, password_file, ca_file)
		: archive_is_pgsql(v.source)  ? verify_pgsql(&v)
		: archive_is_sqlite(v.source) ? verify_sqlite(&v)
					      : verify_jsonl(&v);
	if (r) {
		seal_body_free(v.body);
		return r;
	}
	for (size_t i = 0; i < v.n_runs; i++) {
		const struct run *run = &v.runs[i];
		char t0[RFC3339_NS_LEN + 1] = "", t1[RFC3339_NS_LEN + 1] = "";
		t0[format_rfc3339_ns(run->first_seal_ns, t0)] = '\0';
		t1[format_rfc3339_ns(run->last_seal_ns, t1)] = '\0';
		char key[40 + TCP_AUDIT_HOST_LEN] = "";
		if (key_hosts[run->key][0])
			snprintf(key, sizeof(key), " (the key of host %s)", key_hosts[run->key]);
		else if (n_keys > 1)
			snprintf(key, sizeof(key), " (--verify-key #%zu)", run->key + 1);
		printf("run %s%s: %" PRIu64 " seals of %" PRIu64 " events, sealed from %s to %s%s\n",
		       run->id, key, run->seals, run->events, t0, t1,
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
	seal_body_free(v.body);
	free(v.pend);
	free(v.runs);
	free(v.sealed);
	free(v.extra);
	free(v.named);
	return v.problems ? EXIT_PROBLEMS : 0;
}
