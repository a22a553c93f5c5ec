/* SPDX-License-Identifier: MIT */
/* JSON-lines writer and reader for events (see event-json.h). */
#include "event-json.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "event-text.h"

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

struct out {
	char *p;
};

static void put_raw(struct out *o, const char *s, size_t n)
{
	memcpy(o->p, s, n);
	o->p += n;
}

#define PUT_LIT(o, lit) put_raw((o), (lit), sizeof(lit) - 1)

static void put_u64(struct out *o, uint64_t v)
{
	o->p += format_u64(v, o->p);
}

static void put_escaped_byte(struct out *o, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";

	put_raw(o, "\\u00", 4);
	*o->p++ = hex[c >> 4];
	*o->p++ = hex[c & 15];
}

#define BYTES(b) (0x0101010101010101ull * (b))

/*
 * The bytes of w that are 0, a control, '"', '\\', DEL or not ASCII, as their
 * top bits; a flag above (in value) a true one may be false (borrows), so only
 * the first byte in memory is sure: enough to know how many are plain.
 */
static inline uint64_t needs_care(uint64_t w)
{
	uint64_t below_space = (w - BYTES(0x20)) & ~w;
	uint64_t quote = (w ^ BYTES('"')) - BYTES(1);
	uint64_t backslash = (w ^ BYTES('\\')) - BYTES(1);
	uint64_t del = (w ^ BYTES(0x7f)) - BYTES(1);

	/* a zero byte of x borrows into its top bit; w's own top bits are the non-ASCII ones */
	return (below_space | (quote & ~(w ^ BYTES('"'))) | (backslash & ~(w ^ BYTES('\\'))) |
		(del & ~(w ^ BYTES(0x7f))) | w) &
	       BYTES(0x80);
}

/* The place in memory of the first byte needs_care() flags. */
static inline size_t first_flagged_byte(uint64_t care)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (size_t)__builtin_ctzll(care) / 8;
#else
	return (size_t)__builtin_clzll(care) / 8;
#endif
}

/* A quoted JSON string of at most max bytes of s (stops at NUL). */
static void put_string(struct out *o, const char *str, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;

	*o->p++ = '"';
	for (size_t i = 0; i < max && s[i];) {
		/* eight bytes at a time, up to the first that needs care (often the NUL) */
		if (i + 8 <= max) {
			uint64_t w, care;
			memcpy(&w, s + i, 8);
			memcpy(o->p, &w, 8);
			care = needs_care(w);
			size_t plain = care ? first_flagged_byte(care) : 8;
			o->p += plain;
			i += plain;
			if (plain)
				continue;
		}
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			*o->p++ = (char)c;
			i++;
			continue;
		}
		switch (c) {
		case '"':
			PUT_LIT(o, "\\\"");
			i++;
			continue;
		case '\\':
			PUT_LIT(o, "\\\\");
			i++;
			continue;
		case '\n':
			PUT_LIT(o, "\\n");
			i++;
			continue;
		case '\t':
			PUT_LIT(o, "\\t");
			i++;
			continue;
		case '\r':
			PUT_LIT(o, "\\r");
			i++;
			continue;
		default:
			break;
		}
		size_t n = c >= 0x80 ? utf8_sequence_length(s + i, strnlen(str + i, max - i)) : 0;
		if (n > 1) {
			put_raw(o, (const char *)s + i, n);
			i += n;
		} else {
			put_escaped_byte(o, c);
			i++;
		}
	}
	*o->p++ = '"';
}

size_t json_quote(const char *s, size_t max, char *out)
{
	struct out o = {out};

	put_string(&o, s, max);
	return (size_t)(o.p - out);
}

/* An address: never anything to escape. */
static void put_addr(struct out *o, unsigned family, const uint8_t addr[16])
{
	*o->p++ = '"';
	o->p += format_addr(family, addr, o->p);
	*o->p++ = '"';
}

/* Keys are literals: their length is known at compile time (this is the hot path). */
#define PUT_KEY(o, key) PUT_LIT((o), ",\"" key "\":")
#define PUT_U64_FIELD(o, key, v) (PUT_KEY((o), key), put_u64((o), (v)))
#define PUT_NAME_FIELD(o, key, name, v) (PUT_KEY((o), key), put_name((o), (name), (v)))

/*
 * Numbers that mostly repeat from one event to the next (a process's, a
 * user's, a namespace's, a cgroup's): the digits of the last one, per
 * thread, copied instead of written again.
 */
struct kept_number {
	uint64_t v;
	uint32_t len; /* 0: none yet */
	char text[20];
};

enum kept { KEPT_PID, KEPT_TID, KEPT_SOCK_UID, KEPT_SOCK_GID,
	    KEPT_NETNS, KEPT_CGROUP, KEPT_COUNT };

/* v, from its kept digits when it is the last one: 20 bytes written (the line has room) */
static void put_kept_u64(struct out *o, uint64_t v, struct kept_number *k)
{
	if (v != k->v || !k->len) {
		k->len = (uint32_t)format_u64(v, k->text);
		k->v = v;
	}
	memcpy(o->p, k->text, sizeof(k->text));
	o->p += k->len;
}

#define PUT_KEPT_FIELD(o, key, v, k) (PUT_KEY((o), key), put_kept_u64((o), (v), (k)))

static void put_name(struct out *o, const char *name, unsigned v)
{
	if (name) {
		*o->p++ = '"';
		while (*name) /* a few bytes: a call to strlen() costs more */
			*o->p++ = *name++;
		*o->p++ = '"';
	} else {
		/* not a value the kernel defines: keep the number */
		put_u64(o, v);
	}
}

/*
 * What stays the same through a socket's transitions: its addresses and
 * ports, its owner, its cookie.  Their text (",family:...,dport:N", the
 * owner's three keys, the cookie's digits) is kept, per thread, with what
 * it was written from, in a small table indexed by the ports: a line of
 * the same socket copies it instead of writing it again.  A socket's
 * transitions come close together (its handshake, then its close), so a
 * small table serves most of them (4 of 5 lines of a short connection).
 * Each part is checked against all that it was written from, so a slot
 * that another socket took only costs writing the part again.
 */
struct addr_facts {
	uint8_t addrs[32]; /* saddr, daddr */
	uint64_t ports;    /* family, sport, dport */
};

/* longer than the part can be: two addresses of ADDR_TEXT_LEN, keys, ports */
#define ADDR_PART_MAX 192
#define KEPT_ADDRS 64 /* a power of two */
/* ,"owner_pid":N,"owner_uid":N,"owner_comm":"..." with a command name escaped at 6 bytes a byte */
#define OWNER_PART_MAX (48 + 2 * 10 + 2 + 6 * TCP_AUDIT_COMM_LEN)

struct kept_addr {
	struct addr_facts facts;
	size_t len; /* 0: none kept */
	char text[ADDR_PART_MAX];
	struct kept_number cookie; /* the socket's, mostly */
	struct {
		uint64_t ids; /* pid, uid */
		char comm[TCP_AUDIT_COMM_LEN];
		size_t len; /* 0: none kept */
		char text[OWNER_PART_MAX];
	} owner;
};

/* A name, quoted, and its length (0: not made yet; UINT8_MAX: none, a number). */
struct kept_name {
	uint8_t len;
	char text[16];
};

#define KEPT_STATES 16 /* enum tcp_audit_tcp_state, with room */

struct kept_text {
	struct kept_number numbers[KEPT_COUNT];
	struct kept_number machine; /* its hex digits */
	struct kept_name states[KEPT_STATES];
	struct kept_addr addrs[KEPT_ADDRS];
};

/* Writes the part; returns the socket's slot (its cookie's kept digits). */
static struct kept_addr *put_addr_part(struct out *o, const struct tcp_audit_event *ev,
				       struct kept_text *kept)
{
	/* compared where they are (a copy made here would be read back before its stores land) */
	uint64_t ports = ev->family | (uint64_t)ev->sport << 16 | (uint64_t)ev->dport << 32;
	uint32_t h = ((uint32_t)ev->sport * 0x9e3779b1u) ^ ((uint32_t)ev->dport * 0x85ebca6bu);
	struct kept_addr *k = &kept->addrs[(h >> 16) & (KEPT_ADDRS - 1)];

	_Static_assert(offsetof(struct tcp_audit_event, daddr) ==
			       offsetof(struct tcp_audit_event, saddr) + 16,
		       "saddr and daddr are one after the other");
	if (k->len && k->facts.ports == ports &&
	    memcmp(k->facts.addrs, ev->saddr, sizeof(k->facts.addrs)) == 0) {
		put_raw(o, k->text, k->len);
		return k;
	}
	char *start = o->p;
	PUT_NAME_FIELD(o, "family", family_name(ev->family), ev->family);
	PUT_KEY(o, "saddr");
	put_addr(o, ev->family, ev->saddr);
	PUT_U64_FIELD(o, "sport", ev->sport);
	PUT_KEY(o, "daddr");
	put_addr(o, ev->family, ev->daddr);
	PUT_U64_FIELD(o, "dport", ev->dport);
	k->len = (size_t)(o->p - start);
	_Static_assert(ADDR_PART_MAX >= 2 * ADDR_TEXT_LEN + 90, "room for the address part");
	memcpy(k->text, start, k->len);
	memcpy(k->facts.addrs, ev->saddr, sizeof(k->facts.addrs));
	k->facts.ports = ports;
	return k;
}

/* The socket's owner: kept in its slot, as its addresses are. */
static void put_owner_part(struct out *o, const struct tcp_audit_event *ev, struct kept_addr *slot)
{
	uint64_t ids = ev->owner_pid | (uint64_t)ev->owner_uid << 32;

	if (slot->owner.len && slot->owner.ids == ids &&
	    memcmp(slot->owner.comm, ev->owner_comm, sizeof(slot->owner.comm)) == 0) {
		put_raw(o, slot->owner.text, slot->owner.len);
		return;
	}
	char *start = o->p;
	PUT_U64_FIELD(o, "owner_pid", ev->owner_pid);
	PUT_U64_FIELD(o, "owner_uid", ev->owner_uid);
	PUT_KEY(o, "owner_comm");
	put_string(o, ev->owner_comm, sizeof(ev->owner_comm));
	slot->owner.len = (size_t)(o->p - start);
	memcpy(slot->owner.text, start, slot->owner.len);
	memcpy(slot->owner.comm, ev->owner_comm, sizeof(slot->owner.comm));
	slot->owner.ids = ids;
}

/*
 * A TCP state's name: its quoted text made once per thread, then copied 16
 * bytes at once (the line has room), not written byte by byte.
 */
static void put_state(struct out *o, unsigned v, struct kept_text *kept)
{
	struct kept_name *k = v < KEPT_STATES ? &kept->states[v] : NULL;

	if (k && !k->len) {
		const char *name = tcp_state_name(v);
		size_t n = name ? strlen(name) : 0;
		if (name && n + 2 <= sizeof(k->text)) {
			k->text[0] = '"';
			memcpy(k->text + 1, name, n);
			k->text[n + 1] = '"';
			k->len = (uint8_t)(n + 2);
		} else {
			k->len = UINT8_MAX;
		}
	}
	if (k && k->len != UINT8_MAX) {
		memcpy(o->p, k->text, sizeof(k->text));
		o->p += k->len;
	} else {
		put_name(o, tcp_state_name(v), v);
	}
}

size_t event_to_json(const struct tcp_audit_event *ev, char out[EVENT_JSON_MAX])
{
	static _Thread_local struct kept_text kept_state;
	struct kept_text *kept = &kept_state;
	/*
	 * Looked up once: in a plugin (-fPIC) each use of a thread-local
	 * variable may be a call to __tls_get_addr(), and the compiler would
	 * rather make that call again than keep the address (21 calls in this
	 * function, 3% of tcp-audit's CPU with the bpf eventer's lines).  The
	 * empty asm hides where the pointer came from.
	 */
	__asm__("" : "+r"(kept));
	struct kept_number *numbers = kept->numbers;
	struct out o = {out};

	PUT_LIT(&o, "{\"time\":\"");
	o.p += format_rfc3339_ns(ev->time_ns, o.p);
	*o.p++ = '"';
	if (ev->valid & TCP_AUDIT_HAS_HOST) {
		PUT_KEY(&o, "host");
		put_string(&o, ev->host, sizeof(ev->host));
	}
	if (ev->valid & TCP_AUDIT_HAS_MACHINE) {
		PUT_KEY(&o, "machine");
		*o.p++ = '"';
		struct kept_number *m = &kept->machine;
		_Static_assert(sizeof(m->text) >= MACHINE_TEXT_LEN, "room for the machine's digits");
		if (ev->machine != m->v || !m->len) {
			m->len = (uint32_t)format_machine(ev->machine, m->text);
			m->v = ev->machine;
		}
		memcpy(o.p, m->text, MACHINE_TEXT_LEN);
		o.p += MACHINE_TEXT_LEN;
		*o.p++ = '"';
	}
	if (ev->kind == TCP_AUDIT_KIND_GAP) {
		PUT_LIT(&o, ",\"kind\":\"gap\"");
		PUT_NAME_FIELD(&o, "stage", gap_stage_name(ev->gap_stage), ev->gap_stage);
		PUT_U64_FIELD(&o, "lost", ev->gap_lost);
	} else {
		bool snapshot = ev->kind == TCP_AUDIT_KIND_SNAPSHOT,
		     reset = ev->kind == TCP_AUDIT_KIND_RESET;
		if (snapshot)
			PUT_LIT(&o, ",\"kind\":\"snapshot\"");
		if (reset) {
			PUT_LIT(&o, ",\"kind\":\"reset\"");
			PUT_NAME_FIELD(&o, "direction", reset_direction_name(ev->reset_direction),
				       ev->reset_direction);
			if (ev->valid & TCP_AUDIT_HAS_RESET_REASON)
				PUT_NAME_FIELD(&o, "reason", reset_reason_name(ev->reset_reason),
					       ev->reset_reason);
		}
		struct kept_addr *slot = put_addr_part(&o, ev, kept);
		if (!reset) {
			PUT_KEY(&o, "old_state");
			put_state(&o, ev->old_state, kept);
			PUT_KEY(&o, "new_state");
			put_state(&o, ev->new_state, kept);
		} else if (ev->new_state) { /* the socket's, when there is one */
			PUT_NAME_FIELD(&o, "state", tcp_state_name(ev->new_state), ev->new_state);
		}
		if ((ev->valid & TCP_AUDIT_HAS_ERROR) && ev->kind == TCP_AUDIT_KIND_STATE_CHANGE)
			PUT_NAME_FIELD(&o, "error", errno_name(ev->error), ev->error);
		if (!snapshot) { /* a snapshot has no process on the CPU */
			PUT_KEPT_FIELD(&o, "pid_on_cpu", ev->pid_on_cpu, &numbers[KEPT_PID]);
			if (ev->valid & TCP_AUDIT_HAS_TID)
				PUT_KEPT_FIELD(&o, "tid_on_cpu", ev->tid_on_cpu, &numbers[KEPT_TID]);
			PUT_KEY(&o, "comm_on_cpu");
			put_string(&o, ev->comm_on_cpu, sizeof(ev->comm_on_cpu));
		}
		if (ev->valid & TCP_AUDIT_HAS_OWNER)
			put_owner_part(&o, ev, slot);
		if (ev->valid & TCP_AUDIT_HAS_COOKIE)
			PUT_KEPT_FIELD(&o, "sock_cookie", ev->sock_cookie, &slot->cookie);
		if (ev->valid & TCP_AUDIT_HAS_SOCK_INODE) {
			PUT_U64_FIELD(&o, "sock_inode", ev->sock_inode);
			PUT_KEPT_FIELD(&o, "sock_uid", ev->sock_uid, &numbers[KEPT_SOCK_UID]);
			PUT_KEPT_FIELD(&o, "sock_gid", ev->sock_gid, &numbers[KEPT_SOCK_GID]);
		}
		if (ev->valid & TCP_AUDIT_HAS_SOCK_STATE)
			PUT_NAME_FIELD(&o, "sock_state", sock_state_name(ev->sock_state),
				       ev->sock_state);
		if (ev->valid & TCP_AUDIT_HAS_NETNS)
			PUT_KEPT_FIELD(&o, "netns", ev->netns, &numbers[KEPT_NETNS]);
		if (ev->valid & TCP_AUDIT_HAS_CGROUP)
			PUT_KEPT_FIELD(&o, "cgroup_id", ev->cgroup_id, &numbers[KEPT_CGROUP]);
	}
	if (ev->valid & TCP_AUDIT_HAS_SEQ)
		PUT_U64_FIELD(&o, "seq", ev->seq);
	if (ev->valid & TCP_AUDIT_HAS_KTIME)
		PUT_U64_FIELD(&o, "ktime", ev->ktime_ns);
	*o.p++ = '}';
	*o.p++ = '\n';
	return (size_t)(o.p - out);
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

enum field_type {
	F_TIME,
	F_HOST,
	F_MACHINE,
	F_KIND,
	F_STAGE,
	F_DIRECTION,
	F_REASON,
	F_FAMILY,
	F_SADDR,
	F_DADDR,
	F_U16,
	F_U32,
	F_U64,
	F_TCP_STATE,
	F_BOTH_STATES,
	F_ERROR,
	F_SOCK_STATE,
	F_COMM,
};

/* kinds as bits, for which records a key belongs in */
#define K_STATE (1u << TCP_AUDIT_KIND_STATE_CHANGE)
#define K_GAP (1u << TCP_AUDIT_KIND_GAP)
#define K_SNAPSHOT (1u << TCP_AUDIT_KIND_SNAPSHOT)
#define K_RESET (1u << TCP_AUDIT_KIND_RESET)
#define K_ALL (K_STATE | K_GAP | K_SNAPSHOT | K_RESET)
#define K_SOCKET (K_STATE | K_SNAPSHOT | K_RESET) /* records of a socket */
#define K_ON_CPU (K_STATE | K_RESET)               /* records with a process on the CPU */

struct field {
	const char *key;
	size_t key_len;
	enum field_type type;
	size_t offset;
	uint32_t valid;   /* bit set when present */
	uint8_t allowed;  /* the kinds (K_*) of record the key belongs in */
	uint8_t required; /* the kinds it must be in */
};

#define OFF(m) offsetof(struct tcp_audit_event, m)

/* In the writer's order. */
static const struct field fields[] = {
	{"time", 4, F_TIME, OFF(time_ns), 0, K_ALL, K_ALL},
	{"host", 4, F_HOST, OFF(host), TCP_AUDIT_HAS_HOST, K_ALL, 0},
	{"machine", 7, F_MACHINE, OFF(machine), TCP_AUDIT_HAS_MACHINE, K_ALL, 0},
	{"kind", 4, F_KIND, OFF(kind), 0, K_ALL, 0},
	{"stage", 5, F_STAGE, OFF(gap_stage), 0, K_GAP, K_GAP},
	{"lost", 4, F_U64, OFF(gap_lost), 0, K_GAP, K_GAP},
	{"direction", 9, F_DIRECTION, OFF(reset_direction), 0, K_RESET, K_RESET},
	{"reason", 6, F_REASON, OFF(reset_reason), TCP_AUDIT_HAS_RESET_REASON, K_RESET, 0},
	{"family", 6, F_FAMILY, OFF(family), 0, K_SOCKET, K_SOCKET},
	{"saddr", 5, F_SADDR, OFF(saddr), 0, K_SOCKET, K_SOCKET},
	{"sport", 5, F_U16, OFF(sport), 0, K_SOCKET, K_SOCKET},
	{"daddr", 5, F_DADDR, OFF(daddr), 0, K_SOCKET, K_SOCKET},
	{"dport", 5, F_U16, OFF(dport), 0, K_SOCKET, K_SOCKET},
	{"old_state", 9, F_TCP_STATE, OFF(old_state), 0, K_STATE | K_SNAPSHOT,
	 K_STATE | K_SNAPSHOT},
	{"new_state", 9, F_TCP_STATE, OFF(new_state), 0, K_STATE | K_SNAPSHOT,
	 K_STATE | K_SNAPSHOT},
	{"state", 5, F_BOTH_STATES, OFF(new_state), 0, K_RESET, 0},
	{"error", 5, F_ERROR, OFF(error), TCP_AUDIT_HAS_ERROR, K_STATE, 0},
	{"pid_on_cpu", 10, F_U32, OFF(pid_on_cpu), 0, K_ON_CPU, K_ON_CPU},
	{"tid_on_cpu", 10, F_U32, OFF(tid_on_cpu), TCP_AUDIT_HAS_TID, K_ON_CPU, 0},
	{"comm_on_cpu", 11, F_COMM, OFF(comm_on_cpu), 0, K_ON_CPU, K_ON_CPU},
	{"owner_pid", 9, F_U32, OFF(owner_pid), TCP_AUDIT_HAS_OWNER, K_SOCKET, 0},
	{"owner_uid", 9, F_U32, OFF(owner_uid), TCP_AUDIT_HAS_OWNER, K_SOCKET, 0},
	{"owner_comm", 10, F_COMM, OFF(owner_comm), TCP_AUDIT_HAS_OWNER, K_SOCKET, 0},
	{"sock_cookie", 11, F_U64, OFF(sock_cookie), TCP_AUDIT_HAS_COOKIE, K_SOCKET, 0},
	{"sock_inode", 10, F_U64, OFF(sock_inode), TCP_AUDIT_HAS_SOCK_INODE, K_SOCKET, 0},
	{"sock_uid", 8, F_U32, OFF(sock_uid), TCP_AUDIT_HAS_SOCK_INODE, K_SOCKET, 0},
	{"sock_gid", 8, F_U32, OFF(sock_gid), TCP_AUDIT_HAS_SOCK_INODE, K_SOCKET, 0},
	{"sock_state", 10, F_SOCK_STATE, OFF(sock_state), TCP_AUDIT_HAS_SOCK_STATE, K_SOCKET, 0},
	{"netns", 5, F_U32, OFF(netns), TCP_AUDIT_HAS_NETNS, K_SOCKET, 0},
	{"cgroup_id", 9, F_U64, OFF(cgroup_id), TCP_AUDIT_HAS_CGROUP, K_SOCKET, 0},
	{"seq", 3, F_U64, OFF(seq), TCP_AUDIT_HAS_SEQ, K_ALL, 0},
	{"ktime", 5, F_U64, OFF(ktime_ns), TCP_AUDIT_HAS_KTIME, K_ALL, 0},
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

_Static_assert(N_FIELDS <= 64, "the fields seen are bits of a uint64_t");

/* The fields as bit masks (bit i: fields[i]), made once. */
enum { VALID_OWNER, VALID_INODE };
static struct {
	uint64_t allowed[4], required[4]; /* by kind */
	uint64_t with_valid[2];           /* the keys of TCP_AUDIT_HAS_OWNER, _SOCK_INODE */
} masks;
static pthread_once_t masks_once = PTHREAD_ONCE_INIT;

static void make_masks(void)
{
	for (size_t i = 0; i < N_FIELDS; i++) {
		for (unsigned k = 0; k < 4; k++) {
			if (fields[i].allowed & (1u << k))
				masks.allowed[k] |= 1ull << i;
			if (fields[i].required & (1u << k))
				masks.required[k] |= 1ull << i;
		}
		if (fields[i].valid == TCP_AUDIT_HAS_OWNER)
			masks.with_valid[VALID_OWNER] |= 1ull << i;
		if (fields[i].valid == TCP_AUDIT_HAS_SOCK_INODE)
			masks.with_valid[VALID_INODE] |= 1ull << i;
	}
}

struct parser {
	const char *p, *end;
	char *err;
	size_t err_size;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *ps, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ps->err, ps->err_size, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Whether the text at ps->p is f's key in quotes, exactly (no escapes). */
static inline bool key_at(const struct parser *ps, const struct field *f)
{
	size_t n = f->key_len;

	if ((size_t)(ps->end - ps->p) < n + 2 || ps->p[0] != '"' || ps->p[n + 1] != '"')
		return false;
	for (size_t i = 0; i < n; i++)
		if (ps->p[1 + i] != f->key[i])
			return false;
	return true;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n'))
		ps->p++;
}

static int hex4(const char *s, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		*v = *v << 4 | d;
	}
	return 0;
}

static size_t put_utf8(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * Decodes a JSON string at ps->p (on the opening quote) into out (at most
 * cap - 1 bytes, NUL-terminated).  what names it in errors.
 */
static int parse_string(struct parser *ps, char *out, size_t cap, size_t *out_len, const char *what)
{
	size_t n = 0;

	if (ps->p >= ps->end || *ps->p != '"')
		return fail(ps, "%s: expected a string", what);
	ps->p++;
	for (;;) {
		char tmp[4];
		size_t tn;

		if (ps->p >= ps->end)
			return fail(ps, "%s: unterminated string", what);
		/* a run of plain ASCII, copied at once (most strings are nothing else) */
		const char *run = ps->p;
		while (run < ps->end && (unsigned char)*run >= 0x20 && (unsigned char)*run < 0x80 &&
		       *run != '"' && *run != '\\')
			run++;
		if (run > ps->p) {
			size_t k = (size_t)(run - ps->p);
			if (n + k > cap - 1)
				return fail(ps, "%s: longer than %zu bytes", what, cap - 1);
			memcpy(out + n, ps->p, k);
			n += k;
			ps->p = run;
			continue;
		}
		unsigned char c = (unsigned char)*ps->p;
		if (c == '"') {
			ps->p++;
			break;
		}
		if (c < 0x20)
			return fail(ps, "%s: raw control character in string", what);
		if (c == '\\') {
			if (ps->end - ps->p < 2)
				return fail(ps, "%s: unterminated string", what);
			char e = ps->p[1];
			ps->p += 2;
			tn = 1;
			switch (e) {
			case '"':
			case '\\':
			case '/':
				tmp[0] = e;
				break;
			case 'b':
				tmp[0] = '\b';
				break;
			case 'f':
				tmp[0] = '\f';
				break;
			case 'n':
				tmp[0] = '\n';
				break;
			case 'r':
				tmp[0] = '\r';
				break;
			case 't':
				tmp[0] = '\t';
				break;
			case 'u': {
				unsigned cp;
				if (ps->end - ps->p < 4 || hex4(ps->p, &cp))
					return fail(ps, "%s: bad \\u escape", what);
				ps->p += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;
					if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
					    hex4(ps->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
						return fail(ps, "%s: unpaired surrogate", what);
					ps->p += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					return fail(ps, "%s: unpaired surrogate", what);
				}
				if (cp == 0)
					return fail(ps, "%s: NUL character in string", what);
				if (cp >= 0x80 && cp <= 0xff)
					tmp[0] = (char)cp; /* a raw byte, see event-json.h */
				else
					tn = put_utf8(tmp, cp);
				break;
			}
			default:
				return fail(ps, "%s: bad escape \\%c", what, e);
			}
		} else if (c < 0x80) {
			tmp[0] = (char)c;
			tn = 1;
			ps->p++;
		} else {
			tn = utf8_sequence_length((const unsigned char *)ps->p, (size_t)(ps->end - ps->p));
			if (tn == 0)
				return fail(ps, "%s: invalid UTF-8", what);
			memcpy(tmp, ps->p, tn);
			ps->p += tn;
		}
		if (n + tn > cap - 1)
			return fail(ps, "%s: longer than %zu bytes", what, cap - 1);
		memcpy(out + n, tmp, tn);
		n += tn;
	}
	out[n] = '\0';
	if (out_len)
		*out_len = n;
	return 0;
}

static int parse_uint(struct parser *ps, uint64_t max, uint64_t *v, const char *what)
{
	const char *start = ps->p;
	uint64_t x = 0;

	if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
		return fail(ps, "%s: expected a non-negative integer", what);
	if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' && ps->p[1] <= '9')
		return fail(ps, "%s: leading zero", what);
	while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
		unsigned d = (unsigned)(*ps->p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return fail(ps, "%s: number out of range", what);
		x = x * 10 + d;
		ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
		return fail(ps, "%s: expected an integer", what);
	if (x > max)
		return fail(ps, "%s: %.*s is out of range (max %llu)", what, (int)(ps->p - start),
			    start, (unsigned long long)max);
	*v = x;
	return 0;
}

/* A string naming a value (state, family...), or an integer kept as is. */
static int parse_named(struct parser *ps, int (*from_name)(const char *, size_t), uint64_t max,
		       uint64_t *v, const char *what)
{
	char buf[32];
	size_t len;

	if (ps->p < ps->end && *ps->p == '"') {
		/* a plain name (no escapes) is looked up where it is */
		const char *q = ps->p + 1, *stop = ps->end - q > 32 ? q + 32 : ps->end;
		while (q < stop && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 &&
		       (unsigned char)*q < 0x80)
			q++;
		if (q < stop && *q == '"') {
			int x = from_name(ps->p + 1, (size_t)(q - ps->p - 1));
			if (x >= 0) {
				ps->p = q + 1;
				*v = (uint64_t)x;
				return 0;
			}
		}
		int r = parse_string(ps, buf, sizeof(buf), &len, what);
		if (r)
			return r;
		int x = from_name(buf, len);
		if (x < 0)
			return fail(ps, "%s: unknown value \"%s\"", what, buf);
		*v = (uint64_t)x;
		return 0;
	}
	return parse_uint(ps, max, v, what);
}

static int kind_from_name(const char *name, size_t len)
{
	if (len == 3 && memcmp(name, "gap", 3) == 0)
		return TCP_AUDIT_KIND_GAP;
	if (len == 8 && memcmp(name, "snapshot", 8) == 0)
		return TCP_AUDIT_KIND_SNAPSHOT;
	if (len == 5 && memcmp(name, "reset", 5) == 0)
		return TCP_AUDIT_KIND_RESET;
	return -1;
}

int event_from_json(const char *line, size_t len, struct tcp_audit_event *ev, char *err,
		    size_t err_size)
{
	struct parser ps = {line, line + len, err, err_size};
	uint64_t seen = 0; /* bit i: fields[i] */
	char addr_text[2][ADDR_TEXT_LEN] = {"", ""};
	size_t next = 0;
	size_t addr_len[2] = {0, 0};
	int r;

	memset(ev, 0, sizeof(*ev));
	skip_ws(&ps);
	if (ps.p >= ps.end || *ps.p != '{')
		return fail(&ps, "expected a JSON object");
	ps.p++;
	skip_ws(&ps);
	if (ps.p < ps.end && *ps.p == '}')
		return fail(&ps, "empty object");
	for (;;) {
		char key_buf[32];
		const char *key;
		size_t i;

		skip_ws(&ps);
		/*
		 * Keys usually come in the writer's order: the ones from the next
		 * expected on are matched where they are, then the others; a key
		 * written with escapes is decoded first.
		 */
		for (i = next; i < N_FIELDS && !key_at(&ps, &fields[i]); i++)
			;
		for (size_t j = 0; i == N_FIELDS && j < next; j++)
			if (key_at(&ps, &fields[j]))
				i = j;
		if (i < N_FIELDS) {
			ps.p += fields[i].key_len + 2;
			key = fields[i].key;
		} else {
			size_t key_len;
			r = parse_string(&ps, key_buf, sizeof(key_buf), &key_len, "key");
			if (r)
				return r;
			for (size_t j = 0; i == N_FIELDS && j < N_FIELDS; j++)
				if (fields[j].key_len == key_len &&
				    memcmp(fields[j].key, key_buf, key_len) == 0)
					i = j;
			key = key_buf;
			if (i == N_FIELDS)
				return fail(&ps, "unknown key \"%s\"", key);
		}
		next = i + 1;
		if (seen & (1ull << i))
			return fail(&ps, "duplicate key \"%s\"", key);
		seen |= 1ull << i;
		skip_ws(&ps);
		if (ps.p >= ps.end || *ps.p != ':')
			return fail(&ps, "%s: expected ':'", key);
		ps.p++;
		skip_ws(&ps);

		const struct field *f = &fields[i];
		unsigned char *dst = (unsigned char *)ev + f->offset;
		uint64_t v = 0;
		switch (f->type) {
		case F_TIME: {
			char buf[48];
			size_t n;
			r = parse_string(&ps, buf, sizeof(buf), &n, key);
			if (!r && parse_rfc3339_ns(buf, n, &ev->time_ns))
				r = fail(&ps, "time: \"%s\" is not an RFC 3339 time", buf);
			break;
		}
		case F_HOST:
			r = parse_string(&ps, (char *)dst, TCP_AUDIT_HOST_LEN, NULL, key);
			break;
		case F_MACHINE: {
			char buf[24];
			size_t n;
			r = parse_string(&ps, buf, sizeof(buf), &n, key);
			if (!r && parse_machine(buf, n, &ev->machine))
				r = fail(&ps, "machine: \"%s\" is not 16 hex digits", buf);
			break;
		}
		case F_COMM:
			r = parse_string(&ps, (char *)dst, TCP_AUDIT_COMM_LEN, NULL, key);
			break;
		case F_SADDR:
		case F_DADDR: {
			/* parsed once the family is known */
			int k = f->type == F_DADDR;
			r = parse_string(&ps, addr_text[k], ADDR_TEXT_LEN, &addr_len[k], key);
			break;
		}
		case F_KIND:
			r = parse_named(&ps, kind_from_name, 0, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_STAGE:
			r = parse_named(&ps, gap_stage_from_name, 255, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_FAMILY:
			r = parse_named(&ps, family_from_name, 65535, &v, key);
			if (!r)
				ev->family = (uint16_t)v;
			break;
		case F_TCP_STATE:
			r = parse_named(&ps, tcp_state_from_name, 255, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_BOTH_STATES:
			r = parse_named(&ps, tcp_state_from_name, 255, &v, key);
			if (!r)
				ev->old_state = ev->new_state = (uint8_t)v;
			break;
		case F_DIRECTION:
			r = parse_named(&ps, reset_direction_from_name, 255, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_REASON:
			r = parse_named(&ps, reset_reason_from_name, 255, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_ERROR:
			r = parse_named(&ps, errno_from_name, UINT16_MAX, &v, key);
			if (!r)
				memcpy(dst, &(uint16_t){(uint16_t)v}, 2);
			break;
		case F_SOCK_STATE:
			r = parse_named(&ps, sock_state_from_name, 255, &v, key);
			if (!r)
				*dst = (uint8_t)v;
			break;
		case F_U16:
			r = parse_uint(&ps, UINT16_MAX, &v, key);
			if (!r)
				memcpy(dst, &(uint16_t){(uint16_t)v}, 2);
			break;
		case F_U32:
			r = parse_uint(&ps, UINT32_MAX, &v, key);
			if (!r)
				memcpy(dst, &(uint32_t){(uint32_t)v}, 4);
			break;
		case F_U64:
			r = parse_uint(&ps, UINT64_MAX, &v, key);
			if (!r)
				memcpy(dst, &v, 8);
			break;
		}
		if (r)
			return r;
		ev->valid |= f->valid;
		skip_ws(&ps);
		if (ps.p < ps.end && *ps.p == ',') {
			ps.p++;
			continue;
		}
		if (ps.p < ps.end && *ps.p == '}') {
			ps.p++;
			break;
		}
		return fail(&ps, "expected ',' or '}' after \"%s\"", key);
	}
	skip_ws(&ps);
	if (ps.p != ps.end)
		return fail(&ps, "trailing characters after the object");

	/* keys sharing a validity bit (owner_*, sock_inode/uid/gid) come together */
	pthread_once(&masks_once, make_masks);
	uint64_t owner = masks.with_valid[VALID_OWNER], inode = masks.with_valid[VALID_INODE];
	if ((seen & owner) && (seen & owner) != owner)
		return fail(&ps, "\"owner_pid\", \"owner_uid\" and \"owner_comm\" go together");
	if ((seen & inode) && (seen & inode) != inode)
		return fail(&ps, "\"sock_inode\", \"sock_uid\" and \"sock_gid\" go together");

	static const char *const kind_names[] = {"state change", "gap", "snapshot", "reset"};
	bool gap = ev->kind == TCP_AUDIT_KIND_GAP;
	/* the first key in the writer's order that is there and does not belong, or missing */
	uint64_t bad = (seen & ~masks.allowed[ev->kind]) | (masks.required[ev->kind] & ~seen);
	if (bad) {
		const struct field *f = &fields[__builtin_ctzll(bad)];
		if (seen & (1ull << (f - fields)))
			return fail(&ps, "\"%s\" does not belong in a %s record", f->key,
				    kind_names[ev->kind]);
		return fail(&ps, "missing key \"%s\"", f->key);
	}
	if (ev->kind == TCP_AUDIT_KIND_RESET && !reset_direction_name(ev->reset_direction))
		return fail(&ps, "direction: %u is not a reset direction", ev->reset_direction);
	if ((ev->valid & TCP_AUDIT_HAS_ERROR) && ev->error == 0)
		return fail(&ps, "error: 0 is no error (leave the key out)");
	if (!gap) {
		for (int k = 0; k < 2; k++) {
			if (parse_addr(ev->family, addr_text[k], addr_len[k], k ? ev->daddr : ev->saddr))
				return fail(&ps, "%s: \"%s\" is not an %s address", k ? "daddr" : "saddr",
					    addr_text[k], ev->family == AF_INET6 ? "IPv6" : "IPv4");
		}
	}
	return 0;
}

bool event_json_is_seal(const char *line, size_t len)
{
	static const char start[] = "{\"kind\":\"seal\",";

	return len >= sizeof(start) - 1 && memcmp(line, start, sizeof(start) - 1) == 0;
}
