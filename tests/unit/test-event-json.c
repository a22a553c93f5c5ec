/* SPDX-License-Identifier: MIT */
/* Unit tests: the JSON-lines writer and reader, the text helpers and CRC-32C. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "crc32c.h"
#include "event-json.h"
#include "event-text.h"

static struct tcp_audit_event full_event(void)
{
	struct tcp_audit_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.time_ns = 1764035587123456789ull;
	ev.family = AF_INET6;
	ev.saddr[15] = 1;
	ev.daddr[0] = 0xfe;
	ev.daddr[1] = 0x80;
	ev.daddr[15] = 2;
	ev.sport = 443;
	ev.dport = 65535;
	ev.old_state = TCP_AUDIT_TCP_SYN_SENT;
	ev.new_state = TCP_AUDIT_TCP_ESTABLISHED;
	ev.pid_on_cpu = 4242;
	ev.tid_on_cpu = 4243;
	strcpy(ev.comm_on_cpu, "curl");
	ev.owner_pid = 4242;
	ev.owner_uid = 1000;
	strcpy(ev.owner_comm, "curl");
	ev.sock_cookie = UINT64_MAX;
	ev.sock_inode = 123456;
	ev.sock_uid = 1000;
	ev.sock_gid = 100;
	ev.sock_state = TCP_AUDIT_SS_CONNECTED;
	ev.netns = 4026531840u;
	ev.cgroup_id = 77;
	ev.seq = 9;
	ev.ktime_ns = 5555;
	strcpy(ev.host, "box");
	ev.valid = TCP_AUDIT_HAS_OWNER | TCP_AUDIT_HAS_COOKIE | TCP_AUDIT_HAS_SOCK_INODE |
		   TCP_AUDIT_HAS_SOCK_STATE | TCP_AUDIT_HAS_NETNS | TCP_AUDIT_HAS_CGROUP |
		   TCP_AUDIT_HAS_SEQ | TCP_AUDIT_HAS_HOST | TCP_AUDIT_HAS_KTIME | TCP_AUDIT_HAS_TID;
	return ev;
}

static void roundtrip(const struct tcp_audit_event *ev, char *line, size_t *len)
{
	struct tcp_audit_event back;
	char err[256] = "";

	*len = event_to_json(ev, line);
	assert_true(*len < EVENT_JSON_MAX);
	assert_int_equal(line[*len - 1], '\n');
	int r = event_from_json(line, *len - 1, &back, err, sizeof(err));
	if (r)
		fail_msg("%s: %.*s", err, (int)*len, line);
	assert_memory_equal(ev, &back, sizeof(back));
}

static void test_full_event_text(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t len;

	roundtrip(&ev, line, &len);
	assert_string_equal(
		"{\"time\":\"2025-11-25T01:53:07.123456789Z\",\"host\":\"box\",\"family\":\"inet6\","
		"\"saddr\":\"::1\",\"sport\":443,\"daddr\":\"fe80::2\",\"dport\":65535,"
		"\"old_state\":\"SYN-SENT\",\"new_state\":\"ESTABLISHED\",\"pid_on_cpu\":4242,"
		"\"tid_on_cpu\":4243,\"comm_on_cpu\":\"curl\",\"owner_pid\":4242,\"owner_uid\":1000,"
		"\"owner_comm\":\"curl\",\"sock_cookie\":18446744073709551615,\"sock_inode\":123456,"
		"\"sock_uid\":1000,\"sock_gid\":100,\"sock_state\":\"CONNECTED\","
		"\"netns\":4026531840,\"cgroup_id\":77,\"seq\":9,\"ktime\":5555}\n",
		(line[len] = '\0', line));
}

/*
 * The longest line there can be (every string's byte escaped in 6, every
 * number at its widest, IPv6 addresses at theirs, the longest names), with
 * the 20 bytes past it that writing a number may use, fits EVENT_JSON_MAX.
 */
static void test_longest_line_fits(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t longest = 0;

	memset(ev.host, 1, sizeof(ev.host) - 1);
	memset(ev.comm_on_cpu, 1, sizeof(ev.comm_on_cpu) - 1);
	memset(ev.owner_comm, 1, sizeof(ev.owner_comm) - 1);
	uint8_t widest[16] = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8,
			      0xf7, 0xf6, 0xf5, 0xf4, 0xf3, 0xf2, 0xf1, 0xf0};
	memcpy(ev.saddr, widest, 16);
	memcpy(ev.daddr, widest, 16);
	ev.pid_on_cpu = ev.tid_on_cpu = ev.owner_pid = ev.owner_uid = UINT32_MAX;
	ev.sock_uid = ev.sock_gid = UINT32_MAX;
	ev.sock_cookie = ev.sock_inode = ev.cgroup_id = ev.seq = ev.ktime_ns = UINT64_MAX;
	ev.netns = UINT32_MAX;
	ev.machine = UINT64_MAX;
	ev.gap_lost = UINT64_MAX;
	ev.valid |= TCP_AUDIT_HAS_ERROR | TCP_AUDIT_HAS_MACHINE | TCP_AUDIT_HAS_RESET_REASON;
	/* each named field through every value: a name or, where none, the number */
	for (int kind = TCP_AUDIT_KIND_STATE_CHANGE; kind <= TCP_AUDIT_KIND_RESET; kind++) {
		ev.kind = (uint8_t)kind;
		for (unsigned v = 0; v < 256; v++) {
			struct tcp_audit_event e = ev;
			e.old_state = e.new_state = e.sock_state = (uint8_t)v;
			e.reset_direction = e.reset_reason = e.gap_stage = (uint8_t)v;
			e.error = v < 255 ? (uint16_t)v : UINT16_MAX;
			size_t len = event_to_json(&e, line);
			if (len > longest)
				longest = len;
		}
	}
	assert_true(longest > 1200);
	assert_true(longest + 20 <= EVENT_JSON_MAX);
}

/* Numbers that repeat are copied from the last line's: right whatever comes next. */
static void test_repeated_numbers(void **state)
{
	(void)state;
	static const uint32_t pids[] = {0, 0, 7, 7, 123456, 7, 4294967295u, 0, 10, 10};
	char line[EVENT_JSON_MAX], want[64];

	for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++) {
		struct tcp_audit_event ev = full_event();
		ev.pid_on_cpu = ev.owner_pid = pids[i];
		ev.netns = pids[(i + 3) % 10];
		size_t len = event_to_json(&ev, line);
		line[len] = '\0';
		snprintf(want, sizeof(want), "\"pid_on_cpu\":%u,", pids[i]);
		assert_non_null(strstr(line, want));
		snprintf(want, sizeof(want), "\"owner_pid\":%u,", pids[i]);
		assert_non_null(strstr(line, want));
		snprintf(want, sizeof(want), "\"netns\":%u,", pids[(i + 3) % 10]);
		assert_non_null(strstr(line, want));
	}
}

/*
 * A socket's addresses and ports, owner and cookie are copied from its
 * last line's when they are the same: right when only one of them changes,
 * for sockets whose ports share a slot, for IPv4 and IPv6 alike; and state
 * names, copied from a table, are right for every state and a number for
 * one the kernel may add.
 */
static void test_repeated_addresses(void **state)
{
	(void)state;
	uint64_t x = 88172645463325252ull;
	char line[EVENT_JSON_MAX], want[256], sa[ADDR_TEXT_LEN], da[ADDR_TEXT_LEN];

	for (int i = 0; i < 20000; i++) {
		struct tcp_audit_event ev = full_event();
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* few values of each, so that lines repeat and differ in one thing */
		ev.family = (x & 1) ? AF_INET : AF_INET6;
		ev.sport = (uint16_t)((x >> 1) & 3);
		ev.dport = (uint16_t)(65535 - ((x >> 3) & 1));
		memset(ev.saddr, 0, sizeof(ev.saddr));
		memset(ev.daddr, 0, sizeof(ev.daddr));
		ev.saddr[(x >> 4) & 15] = (uint8_t)((x >> 8) & 1);
		ev.daddr[3] = (uint8_t)((x >> 9) & 1);
		ev.daddr[15] = (uint8_t)((x >> 10) & 1);
		ev.owner_pid = (uint32_t)((x >> 11) & 1) * 4000000000u;
		ev.owner_uid = (uint32_t)((x >> 12) & 1);
		memset(ev.owner_comm, 0, sizeof(ev.owner_comm));
		strcpy(ev.owner_comm, (x >> 13) & 1 ? "a\"b" : "a");
		ev.owner_comm[(x >> 14) & 3] = (char)((x >> 16) & 1 ? 0xff : 'z');
		ev.sock_cookie = (x >> 17) & 1 ? UINT64_MAX : 9;
		ev.old_state = (uint8_t)((x >> 18) & 15);
		ev.new_state = (uint8_t)((x >> 22) % 14); /* 13: none yet */
		int af = ev.family == AF_INET ? AF_INET : AF_INET6;
		assert_non_null(inet_ntop(af, ev.saddr, sa, sizeof(sa)));
		assert_non_null(inet_ntop(af, ev.daddr, da, sizeof(da)));
		snprintf(want, sizeof(want),
			 ",\"family\":\"%s\",\"saddr\":\"%s\",\"sport\":%u,\"daddr\":\"%s\","
			 "\"dport\":%u,\"old_state\"",
			 af == AF_INET ? "inet" : "inet6", sa, ev.sport, da, ev.dport);
		size_t len = event_to_json(&ev, line);
		line[len] = '\0';
		if (!strstr(line, want))
			fail_msg("line %d: %s has not %s", i, line, want);
		char comm[6 * TCP_AUDIT_COMM_LEN + 2];
		comm[json_quote(ev.owner_comm, sizeof(ev.owner_comm), comm)] = '\0';
		snprintf(want, sizeof(want),
			 ",\"owner_pid\":%u,\"owner_uid\":%u,\"owner_comm\":%s,\"sock_cookie\":%llu,",
			 ev.owner_pid, ev.owner_uid, comm, (unsigned long long)ev.sock_cookie);
		if (!strstr(line, want))
			fail_msg("line %d: %s has not %s", i, line, want);
		const char *o = tcp_state_name(ev.old_state), *n = tcp_state_name(ev.new_state);
		char os[16], ns[16];
		snprintf(os, sizeof(os), "%u", ev.old_state);
		snprintf(ns, sizeof(ns), "%u", ev.new_state);
		snprintf(want, sizeof(want), ",\"old_state\":%s%s%s,\"new_state\":%s%s%s,",
			 o ? "\"" : "", o ? o : os, o ? "\"" : "", n ? "\"" : "", n ? n : ns,
			 n ? "\"" : "");
		if (!strstr(line, want))
			fail_msg("line %d: %s has not %s", i, line, want);
	}
}

/* Every byte value 1..255 in a command name: valid JSON, same bytes back. */
static void test_every_byte_survives(void **state)
{
	(void)state;
	for (unsigned b = 1; b < 256; b++) {
		struct tcp_audit_event ev = full_event();
		char line[EVENT_JSON_MAX];
		size_t len;
		memset(ev.comm_on_cpu, 0, sizeof(ev.comm_on_cpu));
		memset(ev.comm_on_cpu, (int)b, 15);
		roundtrip(&ev, line, &len);
		for (size_t i = 0; i < len - 1; i++) {
			unsigned char c = (unsigned char)line[i];
			assert_true(c >= 0x20 && c < 0x7f); /* ASCII-only for bytes not UTF-8 */
		}
	}
}

/* JSON's escaping of one byte as the writer does it, the slow way (not UTF-8). */
static size_t escape_ref(unsigned char c, char *out)
{
	if (c == '"' || c == '\\')
		return (size_t)sprintf(out, "\\%c", c);
	if (c == '\n')
		return (size_t)sprintf(out, "\\n");
	if (c == '\t')
		return (size_t)sprintf(out, "\\t");
	if (c == '\r')
		return (size_t)sprintf(out, "\\r");
	if (c < 0x20 || c >= 0x7f)
		return (size_t)sprintf(out, "\\u%04x", c);
	out[0] = (char)c;
	return 1;
}

/* The writer takes eight bytes at a time: any byte at any place, same text as byte by byte. */
static void test_each_byte_at_each_place(void **state)
{
	(void)state;
	for (size_t place = 0; place < 15; place++) {
		for (unsigned b = 1; b < 256; b++) {
			struct tcp_audit_event ev = full_event();
			char line[EVENT_JSON_MAX], want[128], *p = want;
			size_t len;
			memset(ev.comm_on_cpu, 0, sizeof(ev.comm_on_cpu));
			memcpy(ev.comm_on_cpu, "abcdefghijklmno", 15);
			ev.comm_on_cpu[place] = (char)b;
			roundtrip(&ev, line, &len);
			line[len] = '\0';
			p += sprintf(p, "\"comm_on_cpu\":\"");
			for (size_t i = 0; i < 15; i++)
				p += escape_ref((unsigned char)ev.comm_on_cpu[i], p);
			strcpy(p, "\",");
			if (!strstr(line, want))
				fail_msg("byte 0x%02x at %zu: %s", b, place, line);
		}
	}
}

static void check_number(uint64_t v)
{
	char got[24], want[24];

	memset(got, '#', sizeof(got));
	size_t n = format_u64(v, got);
	/* it may write past the digits, never past its 20 bytes */
	for (size_t i = 20; i < sizeof(got); i++)
		assert_int_equal(got[i], '#');
	got[n] = '\0';
	snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
	assert_string_equal(got, want);
}

/* Numbers are written by hand, two digits at a time: as printf writes them. */
static void test_numbers(void **state)
{
	(void)state;
	uint64_t x = 88172645463325252ull, ten = 1;

	for (int i = 0; i < 64; i++) {
		check_number(1ull << i);
		check_number((1ull << i) - 1);
	}
	for (int k = 0; k < 20; k++, ten *= 10) {
		check_number(ten - 1);
		check_number(ten);
		check_number(ten + 1);
	}
	check_number(UINT64_MAX);
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		check_number(x >> (x & 63)); /* every length */
	}
}

/* Addresses are written by hand: exactly what inet_ntop() writes. */
static void test_addresses_as_inet_ntop(void **state)
{
	(void)state;
	uint64_t x = 2463534242ull;
	uint8_t a[16];
	char got[ADDR_TEXT_LEN], want[ADDR_TEXT_LEN];

	for (int i = 0; i < 300000; i++) {
		for (int w = 0; w < 8; w++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			/* mostly zero groups, so that every run of them comes up; some ffff, 1 */
			unsigned pick = (unsigned)(x >> 60), v;
			v = pick < 9 ? 0 : pick < 11 ? 0xffff : pick < 12 ? 1 : (unsigned)(x >> 8) & 0xffff;
			if (pick == 15)
				v &= 0x0f0f >> (x & 7); /* short groups: no leading zeros */
			a[2 * w] = (uint8_t)(v >> 8);
			a[2 * w + 1] = (uint8_t)v;
		}
		size_t n = format_addr(AF_INET6, a, got);
		assert_int_equal(n, strlen(got));
		assert_non_null(inet_ntop(AF_INET6, a, want, sizeof(want)));
		if (strcmp(got, want))
			fail_msg("got %s, inet_ntop %s", got, want);
		n = format_addr(AF_INET, a + (i & 12), got);
		assert_int_equal(n, strlen(got));
		assert_non_null(inet_ntop(AF_INET, a + (i & 12), want, sizeof(want)));
		assert_string_equal(got, want);
	}
	assert_int_equal(format_addr(99, a, got), 0);
	assert_string_equal(got, "");
}

static void test_escapes(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t len;

	strcpy(ev.comm_on_cpu, "a\"b\\c\n\x01\x7f\xff");
	strcpy(ev.owner_comm, "caf\xc3\xa9 \xe2\x82\xac"); /* valid UTF-8 stays raw */
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"comm_on_cpu\":\"a\\\"b\\\\c\\n\\u0001\\u007f\\u00ff\""));
	assert_non_null(strstr(line, "\"owner_comm\":\"caf\xc3\xa9 \xe2\x82\xac\""));
}

static void test_invalid_utf8_sequences(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"\xc0\xaf",     /* overlong '/' */
		"\xe0\x80\xaf", /* overlong */
		"\xed\xa0\x80", /* surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xc3",         /* truncated */
		"\x80",         /* lone continuation */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tcp_audit_event ev = full_event();
		char line[EVENT_JSON_MAX];
		size_t len;
		copy_fixed_string(ev.comm_on_cpu, sizeof(ev.comm_on_cpu), bad[i]);
		roundtrip(&ev, line, &len);
		line[len] = '\0';
		char want[64] = "\"comm_on_cpu\":\"";
		for (const unsigned char *p = (const unsigned char *)bad[i]; *p; p++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "\\u00%02x", *p);
		assert_non_null(strstr(line, want));
	}
}

static void test_gap_record(void **state)
{
	(void)state;
	struct tcp_audit_event ev;
	char line[EVENT_JSON_MAX];
	size_t len;

	memset(&ev, 0, sizeof(ev));
	ev.kind = TCP_AUDIT_KIND_GAP;
	ev.gap_stage = TCP_AUDIT_STAGE_KERNEL;
	ev.gap_lost = 42;
	ev.time_ns = 0;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_string_equal(line, "{\"time\":\"1970-01-01T00:00:00.000000000Z\",\"kind\":\"gap\","
				  "\"stage\":\"kernel\",\"lost\":42}\n");
}

static void test_snapshot_record(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event(), back;
	char line[EVENT_JSON_MAX], err[256];
	size_t len;

	ev.kind = TCP_AUDIT_KIND_SNAPSHOT;
	ev.old_state = ev.new_state = TCP_AUDIT_TCP_LISTEN;
	ev.pid_on_cpu = ev.tid_on_cpu = 0; /* none: not written, not read */
	memset(ev.comm_on_cpu, 0, sizeof(ev.comm_on_cpu));
	ev.valid &= ~(uint32_t)TCP_AUDIT_HAS_TID;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, ",\"kind\":\"snapshot\",\"family\":"));
	assert_null(strstr(line, "on_cpu"));
	/* the process on the CPU does not belong in one */
	const char *bad = "{\"time\":\"2026-11-25T01:53:06Z\",\"kind\":\"snapshot\",\"family\":"
			  "\"inet\",\"saddr\":\"1.2.3.4\",\"sport\":1,\"daddr\":\"1.2.3.5\","
			  "\"dport\":2,\"old_state\":\"LISTEN\",\"new_state\":\"LISTEN\","
			  "\"pid_on_cpu\":3}";
	assert_int_equal(event_from_json(bad, strlen(bad), &back, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "does not belong in a snapshot record"));
}

/* One line that must be refused, with err containing why. */
static void refused(const char *line, const char *why)
{
	struct tcp_audit_event back;
	char err[256];

	assert_int_equal(event_from_json(line, strlen(line), &back, err, sizeof(err)), -EINVAL);
	if (!strstr(err, why))
		fail_msg("\"%s\": \"%s\" does not say \"%s\"", line, err, why);
}

static void test_reset_record(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t len;

	ev.kind = TCP_AUDIT_KIND_RESET;
	ev.reset_direction = TCP_AUDIT_RESET_SENT;
	ev.reset_reason = TCP_AUDIT_RST_TCP_ABORT_ON_LINGER;
	ev.valid |= TCP_AUDIT_HAS_RESET_REASON;
	ev.old_state = ev.new_state = TCP_AUDIT_TCP_ESTABLISHED;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, ",\"kind\":\"reset\",\"direction\":\"sent\",\"reason\":"
				     "\"TCP_ABORT_ON_LINGER\",\"family\":"));
	assert_non_null(strstr(line, ",\"state\":\"ESTABLISHED\",\"pid_on_cpu\":"));
	assert_null(strstr(line, "old_state"));

	/* no socket (a SYN to a closed port): no state, cookie or owner */
	ev.reset_reason = TCP_AUDIT_RST_NO_SOCKET;
	ev.old_state = ev.new_state = 0;
	ev.valid &= ~(uint32_t)(TCP_AUDIT_HAS_COOKIE | TCP_AUDIT_HAS_OWNER |
				TCP_AUDIT_HAS_SOCK_INODE | TCP_AUDIT_HAS_SOCK_STATE);
	ev.sock_cookie = ev.sock_inode = 0;
	ev.owner_pid = ev.owner_uid = ev.sock_uid = ev.sock_gid = 0;
	ev.sock_state = 0;
	memset(ev.owner_comm, 0, sizeof(ev.owner_comm));
	ev.reset_direction = TCP_AUDIT_RESET_RECEIVED;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_null(strstr(line, "state"));
	assert_non_null(strstr(line, "\"direction\":\"received\""));
	/* a kernel reason this tcp-audit has no name for stays a number */
	ev.reset_reason = 77;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"reason\":77"));

	const char *head = "{\"time\":\"2026-11-25T01:53:06Z\",\"kind\":\"reset\",";
	const char *tail = "\"family\":\"inet\",\"saddr\":\"1.2.3.4\",\"sport\":1,"
			   "\"daddr\":\"1.2.3.5\",\"dport\":2,\"pid_on_cpu\":3,\"comm_on_cpu\":\"x\"";
	char bad[512];
	snprintf(bad, sizeof(bad), "%s%s}", head, tail);
	refused(bad, "missing key \"direction\"");
	snprintf(bad, sizeof(bad), "%s\"direction\":\"sideways\",%s}", head, tail);
	refused(bad, "unknown value \"sideways\"");
	snprintf(bad, sizeof(bad), "%s\"direction\":0,%s}", head, tail);
	refused(bad, "not a reset direction");
	snprintf(bad, sizeof(bad), "%s\"direction\":\"sent\",%s,\"old_state\":\"LISTEN\"}", head,
		 tail);
	refused(bad, "\"old_state\" does not belong in a reset record");
	snprintf(bad, sizeof(bad), "%s\"direction\":\"sent\",%s,\"error\":\"EPIPE\"}", head, tail);
	refused(bad, "\"error\" does not belong in a reset record");
	/* and a state change has no direction */
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"direction\":\"sent\"}",
		"\"direction\" does not belong in a state change record");
}

/*
 * The reader matches keys and names where they are in the line; keys in any
 * order, or written with escapes, and names with escapes read the same.
 */
static void test_keys_any_order_and_escaped(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event(), back, again;
	char line[EVENT_JSON_MAX], err[256];
	size_t len;

	roundtrip(&ev, line, &len);
	line[--len] = '\0'; /* the newline */
	assert_int_equal(event_from_json(line, len, &back, err, sizeof(err)), 0);

	/* the same keys, last first: every key found by the scan from the start */
	const char *keys[64];
	size_t starts[64], ends[64], n = 0;
	for (size_t i = 1; i < len - 1; n++) {
		assert_true(n < 64);
		starts[n] = i;
		keys[n] = line + i;
		/* a value holds no '"' unescaped before its ',': the next key starts after ",\"" */
		const char *next = strstr(line + i, ",\"");
		while (next && next[-1] == '\\')
			next = strstr(next + 1, ",\"");
		ends[n] = next ? (size_t)(next - line) : len - 1;
		i = ends[n] + 1;
	}
	char reversed[EVENT_JSON_MAX + 8] = "{";
	for (size_t k = n; k-- > 0;) {
		strncat(reversed, keys[k], ends[k] - starts[k]);
		if (k)
			strcat(reversed, ",");
	}
	strcat(reversed, "}");
	assert_true(n > 20);
	assert_int_equal(strncmp(reversed, "{\"ktime\":5555,\"seq\":9,", 22), 0);
	assert_int_equal(event_from_json(reversed, strlen(reversed), &again, err, sizeof(err)), 0);
	assert_memory_equal(&back, &again, sizeof(back));

	/* "time" and "new_state" as escapes, and a state name with an escape */
	const char *plain = "{\"time\":\"2026-11-25T01:53:06Z\",\"family\":\"inet\","
			    "\"saddr\":\"1.2.3.4\",\"sport\":1,\"daddr\":\"1.2.3.5\",\"dport\":2,"
			    "\"old_state\":\"LISTEN\",\"new_state\":\"ESTABLISHED\","
			    "\"pid_on_cpu\":3,\"comm_on_cpu\":\"x\"}";
	const char *escaped = "{\"\\u0074ime\":\"2026-11-25T01:53:06Z\",\"family\":\"inet\","
			      "\"saddr\":\"1.2.3.4\",\"sport\":1,\"daddr\":\"1.2.3.5\","
			      "\"dport\":2,\"old_state\":\"LIST\\u0045N\",\"new\\u005fstate\":"
			      "\"ESTABLISHED\",\"pid_on_cpu\":3,\"comm_on_cpu\":\"x\"}";
	assert_int_equal(event_from_json(plain, strlen(plain), &back, err, sizeof(err)), 0);
	assert_int_equal(event_from_json(escaped, strlen(escaped), &again, err, sizeof(err)), 0);
	assert_memory_equal(&back, &again, sizeof(back));
	assert_int_equal(back.old_state, TCP_AUDIT_TCP_LISTEN);
	assert_int_equal(back.new_state, TCP_AUDIT_TCP_ESTABLISHED);

	/* a key given twice, once escaped; keys that are prefixes of others */
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"\\u0074ime\":\"2026-11-25T01:53:06Z\"}",
		"duplicate key \"time\"");
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"sock\":1}", "unknown key \"sock\"");
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"states\":1}", "unknown key \"states\"");
	refused("{\"tim\":1}", "unknown key \"tim\"");
	/* a name that is not one, plain or escaped; a prefix of one */
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"family\":\"inet\",\"old_state\":\"LISTE\"}",
		"unknown value \"LISTE\"");
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"family\":\"in\\u0065t6x\"}",
		"unknown value \"inet6x\"");
	/* keys that go together, one of them missing, in any order */
	char bad[1024];
	snprintf(bad, sizeof(bad), "%.*s,\"owner_uid\":0,\"owner_pid\":1}", (int)strlen(plain) - 1,
		 plain);
	refused(bad, "\"owner_pid\", \"owner_uid\" and \"owner_comm\" go together");
	snprintf(bad, sizeof(bad), "%.*s,\"sock_gid\":0}", (int)strlen(plain) - 1, plain);
	refused(bad, "\"sock_inode\", \"sock_uid\" and \"sock_gid\" go together");
	snprintf(bad, sizeof(bad), "%.*s,\"owner_comm\":\"y\",\"owner_uid\":0,\"owner_pid\":1}",
		 (int)strlen(plain) - 1, plain);
	assert_int_equal(event_from_json(bad, strlen(bad), &back, err, sizeof(err)), 0);
	assert_true(back.valid & TCP_AUDIT_HAS_OWNER);
	assert_string_equal(back.owner_comm, "y");
	/* of a missing key and one that does not belong, the first in the writer's order is named */
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"kind\":\"gap\",\"lost\":1,\"sport\":1}",
		"missing key \"stage\"");
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"kind\":\"gap\",\"stage\":\"kernel\","
		"\"sport\":1}",
		"missing key \"lost\"");
	refused("{\"time\":\"2026-11-25T01:53:06Z\",\"kind\":\"gap\",\"stage\":\"kernel\","
		"\"lost\":1,\"sport\":1}",
		"\"sport\" does not belong in a gap record");
}

static void test_error(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t len;

	ev.old_state = TCP_AUDIT_TCP_SYN_SENT;
	ev.new_state = TCP_AUDIT_TCP_CLOSE;
	ev.error = ECONNREFUSED;
	ev.valid |= TCP_AUDIT_HAS_ERROR;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"new_state\":\"CLOSED\",\"error\":\"ECONNREFUSED\","));
	ev.error = ETIMEDOUT;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"error\":\"ETIMEDOUT\""));
	ev.error = 3000; /* no name: the number */
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"error\":3000"));

	const char *head = "{\"time\":\"2026-11-25T01:53:06Z\",\"family\":\"inet\",\"saddr\":"
			   "\"1.2.3.4\",\"sport\":1,\"daddr\":\"1.2.3.5\",\"dport\":2,\"old_state\":"
			   "\"SYN-SENT\",\"new_state\":\"CLOSED\",\"pid_on_cpu\":3,\"comm_on_cpu\":\"x\"";
	char bad[512];
	snprintf(bad, sizeof(bad), "%s,\"error\":\"ENOTANERROR\"}", head);
	refused(bad, "unknown value \"ENOTANERROR\"");
	snprintf(bad, sizeof(bad), "%s,\"error\":0}", head);
	refused(bad, "0 is no error");
	snprintf(bad, sizeof(bad), "%s,\"error\":70000}", head);
	refused(bad, "out of range");
}

static void test_unknown_numbers_are_kept(void **state)
{
	(void)state;
	struct tcp_audit_event ev = full_event();
	char line[EVENT_JSON_MAX];
	size_t len;

	ev.new_state = 200; /* not a state the kernel defines today */
	ev.sock_state = 9;
	roundtrip(&ev, line, &len);
	line[len] = '\0';
	assert_non_null(strstr(line, "\"new_state\":200"));
	assert_non_null(strstr(line, "\"sock_state\":9"));
}

static void test_rfc3339(void **state)
{
	(void)state;
	char buf[RFC3339_NS_LEN];
	uint64_t ns;
	static const struct {
		uint64_t ns;
		const char *text;
	} cases[] = {
		{0, "1970-01-01T00:00:00.000000000Z"},
		{951782400000000001ull, "2000-02-29T00:00:00.000000001Z"},
		{4107542399999999999ull, "2100-02-28T23:59:59.999999999Z"},
		{1764035587123456789ull, "2025-11-25T01:53:07.123456789Z"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(format_rfc3339_ns(cases[i].ns, buf), 30);
		assert_string_equal(buf, cases[i].text);
		assert_int_equal(parse_rfc3339_ns(buf, 30, &ns), 0);
		assert_true(ns == cases[i].ns);
	}
	assert_int_equal(parse_rfc3339_ns("2025-11-25T02:53:07.5+01:00", 27, &ns), 0);
	assert_true(ns == 1764035587500000000ull);
	assert_int_equal(parse_rfc3339_ns("2025-11-25T01:53:07", 19, &ns), -EINVAL);
	assert_int_equal(parse_rfc3339_ns("2025-13-25T01:53:07Z", 20, &ns), -EINVAL);
	assert_int_equal(parse_rfc3339_ns("2025-11-25T01:53:07.Z", 21, &ns), -EINVAL);
	assert_int_equal(parse_rfc3339_ns("1969-12-31T23:59:59Z", 20, &ns), -EINVAL);
}

static void test_names(void **state)
{
	(void)state;
	for (unsigned s = 1; s <= 12; s++) {
		const char *name = tcp_state_name(s);
		assert_non_null(name);
		assert_int_equal(tcp_state_from_name(name, strlen(name)), (int)s);
	}
	assert_null(tcp_state_name(0));
	assert_null(tcp_state_name(13));
	assert_string_equal(tcp_state_name(TCP_AUDIT_TCP_SYN_RECV), "SYN-RECEIVED");
	assert_string_equal(tcp_state_name(TCP_AUDIT_TCP_CLOSE), "CLOSED");
	assert_string_equal(sock_state_name(TCP_AUDIT_SS_DISCONNECTING), "DISCONNECTING");
	assert_int_equal(tcp_state_from_name("CLOSE", 5), -1);
}

/* The spool's checks and the seals' fingerprints (kept in archives) are CRC-32C exactly. */
static void test_crc32c(void **state)
{
	(void)state;
	uint8_t buf[301];

	/* RFC 3720 B.4's vectors, and the usual check value */
	memset(buf, 0, 32);
	assert_int_equal(crc32c(buf, 32), 0x8a9136aa);
	memset(buf, 0xff, 32);
	assert_int_equal(crc32c(buf, 32), 0x62a8ab43);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(crc32c(buf, 32), 0x46dd794e);
	assert_int_equal(crc32c("123456789", 9), 0xe3069283);
	assert_int_equal(crc32c(buf, 0), 0);
	/* every length and alignment against the bitwise definition */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; off + len <= sizeof(buf); len += 7) {
			uint32_t c = 0xffffffffu;
			for (size_t i = off; i < off + len; i++) {
				c ^= buf[i];
				for (int k = 0; k < 8; k++)
					c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
			}
			assert_int_equal(crc32c(buf + off, len), ~c);
		}
	/* three at once, of lengths alike and not, as one at a time */
	for (size_t a = 0; a < 40; a += 3)
		for (size_t b = 0; b < 40; b += 5)
			for (size_t c = 0; c < 40; c += 7) {
				const void *p[3] = {buf + 1, buf + 50, buf + 103};
				size_t n[3] = {a + 100, b + 100, c + 100};
				uint32_t out[3];
				crc32c_x3(p, n, out);
				for (int i = 0; i < 3; i++)
					assert_int_equal(out[i], crc32c(p[i], n[i]));
			}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_event_text),
		cmocka_unit_test(test_every_byte_survives),
		cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_each_byte_at_each_place),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_longest_line_fits),
		cmocka_unit_test(test_repeated_numbers),
		cmocka_unit_test(test_repeated_addresses),
		cmocka_unit_test(test_addresses_as_inet_ntop),
		cmocka_unit_test(test_invalid_utf8_sequences),
		cmocka_unit_test(test_gap_record),
		cmocka_unit_test(test_snapshot_record),
		cmocka_unit_test(test_reset_record),
		cmocka_unit_test(test_keys_any_order_and_escaped),
		cmocka_unit_test(test_error),
		cmocka_unit_test(test_unknown_numbers_are_kept),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_crc32c),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
