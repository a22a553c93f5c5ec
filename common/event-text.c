/* SPDX-License-Identifier: MIT */
/* Text forms of event fields: state names, RFC 3339 times, addresses. */
#include "event-text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

static const char *const tcp_states[] = {
	[TCP_AUDIT_TCP_ESTABLISHED] = "ESTABLISHED",
	[TCP_AUDIT_TCP_SYN_SENT] = "SYN-SENT",
	[TCP_AUDIT_TCP_SYN_RECV] = "SYN-RECEIVED",
	[TCP_AUDIT_TCP_FIN_WAIT1] = "FIN-WAIT-1",
	[TCP_AUDIT_TCP_FIN_WAIT2] = "FIN-WAIT-2",
	[TCP_AUDIT_TCP_TIME_WAIT] = "TIME-WAIT",
	[TCP_AUDIT_TCP_CLOSE] = "CLOSED",
	[TCP_AUDIT_TCP_CLOSE_WAIT] = "CLOSE-WAIT",
	[TCP_AUDIT_TCP_LAST_ACK] = "LAST-ACK",
	[TCP_AUDIT_TCP_LISTEN] = "LISTEN",
	[TCP_AUDIT_TCP_CLOSING] = "CLOSING",
	[TCP_AUDIT_TCP_NEW_SYN_RECV] = "NEW-SYN-RECV",
};

static const char *const sock_states[] = {
	[TCP_AUDIT_SS_FREE] = "FREE",
	[TCP_AUDIT_SS_UNCONNECTED] = "UNCONNECTED",
	[TCP_AUDIT_SS_CONNECTING] = "CONNECTING",
	[TCP_AUDIT_SS_CONNECTED] = "CONNECTED",
	[TCP_AUDIT_SS_DISCONNECTING] = "DISCONNECTING",
};

static const char *const gap_stages[] = {
	[TCP_AUDIT_STAGE_KERNEL] = "kernel",
	[TCP_AUDIT_STAGE_QUEUE] = "queue",
	[TCP_AUDIT_STAGE_SPOOL] = "spool",
	[TCP_AUDIT_STAGE_INPUT] = "input",
};

static const char *const reset_directions[] = {
	[TCP_AUDIT_RESET_SENT] = "sent",
	[TCP_AUDIT_RESET_RECEIVED] = "received",
};

static const char *const reset_reasons[] = {
	[TCP_AUDIT_RST_NOT_SPECIFIED] = "NOT_SPECIFIED",
	[TCP_AUDIT_RST_NO_SOCKET] = "NO_SOCKET",
	[TCP_AUDIT_RST_TCP_INVALID_ACK_SEQUENCE] = "TCP_INVALID_ACK_SEQUENCE",
	[TCP_AUDIT_RST_TCP_RFC7323_PAWS] = "TCP_RFC7323_PAWS",
	[TCP_AUDIT_RST_TCP_TOO_OLD_ACK] = "TCP_TOO_OLD_ACK",
	[TCP_AUDIT_RST_TCP_ACK_UNSENT_DATA] = "TCP_ACK_UNSENT_DATA",
	[TCP_AUDIT_RST_TCP_FLAGS] = "TCP_FLAGS",
	[TCP_AUDIT_RST_TCP_OLD_ACK] = "TCP_OLD_ACK",
	[TCP_AUDIT_RST_TCP_ABORT_ON_DATA] = "TCP_ABORT_ON_DATA",
	[TCP_AUDIT_RST_TCP_TIMEWAIT_SOCKET] = "TCP_TIMEWAIT_SOCKET",
	[TCP_AUDIT_RST_INVALID_SYN] = "INVALID_SYN",
	[TCP_AUDIT_RST_TCP_ABORT_ON_CLOSE] = "TCP_ABORT_ON_CLOSE",
	[TCP_AUDIT_RST_TCP_ABORT_ON_LINGER] = "TCP_ABORT_ON_LINGER",
	[TCP_AUDIT_RST_TCP_ABORT_ON_MEMORY] = "TCP_ABORT_ON_MEMORY",
	[TCP_AUDIT_RST_TCP_STATE] = "TCP_STATE",
	[TCP_AUDIT_RST_TCP_KEEPALIVE_TIMEOUT] = "TCP_KEEPALIVE_TIMEOUT",
	[TCP_AUDIT_RST_TCP_DISCONNECT_WITH_DATA] = "TCP_DISCONNECT_WITH_DATA",
	[TCP_AUDIT_RST_MPTCP_RST_EUNSPEC] = "MPTCP_RST_EUNSPEC",
	[TCP_AUDIT_RST_MPTCP_RST_EMPTCP] = "MPTCP_RST_EMPTCP",
	[TCP_AUDIT_RST_MPTCP_RST_ERESOURCE] = "MPTCP_RST_ERESOURCE",
	[TCP_AUDIT_RST_MPTCP_RST_EPROHIBIT] = "MPTCP_RST_EPROHIBIT",
	[TCP_AUDIT_RST_MPTCP_RST_EWQ2BIG] = "MPTCP_RST_EWQ2BIG",
	[TCP_AUDIT_RST_MPTCP_RST_EBADPERF] = "MPTCP_RST_EBADPERF",
	[TCP_AUDIT_RST_MPTCP_RST_EMIDDLEBOX] = "MPTCP_RST_EMIDDLEBOX",
	[TCP_AUDIT_RST_ERROR] = "ERROR",
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const char *const *names, size_t n, unsigned v)
{
	return v < n ? names[v] : NULL;
}

static int value_of(const char *const *names, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && len && names[i][0] == name[0] && strlen(names[i]) == len &&
		    memcmp(names[i], name, len) == 0)
			return (int)i;
	return -1;
}

const char *tcp_state_name(unsigned state)
{
	return name_of(tcp_states, N_ELEMS(tcp_states), state);
}

int tcp_state_from_name(const char *name, size_t len)
{
	return value_of(tcp_states, N_ELEMS(tcp_states), name, len);
}

const char *sock_state_name(unsigned state)
{
	return name_of(sock_states, N_ELEMS(sock_states), state);
}

int sock_state_from_name(const char *name, size_t len)
{
	return value_of(sock_states, N_ELEMS(sock_states), name, len);
}

const char *gap_stage_name(unsigned stage)
{
	return name_of(gap_stages, N_ELEMS(gap_stages), stage);
}

int gap_stage_from_name(const char *name, size_t len)
{
	return value_of(gap_stages, N_ELEMS(gap_stages), name, len);
}

const char *reset_direction_name(unsigned direction)
{
	return name_of(reset_directions, N_ELEMS(reset_directions), direction);
}

int reset_direction_from_name(const char *name, size_t len)
{
	return value_of(reset_directions, N_ELEMS(reset_directions), name, len);
}

const char *reset_reason_name(unsigned reason)
{
	return name_of(reset_reasons, N_ELEMS(reset_reasons), reason);
}

int reset_reason_from_name(const char *name, size_t len)
{
	return value_of(reset_reasons, N_ELEMS(reset_reasons), name, len);
}

/* glibc's names ("ECONNREFUSED"); errno values are small */
#define ERRNO_MAX 4095

const char *errno_name(unsigned err)
{
	return err && err <= ERRNO_MAX ? strerrorname_np((int)err) : NULL;
}

int errno_from_name(const char *name, size_t len)
{
	for (int e = 1; e < 256; e++) {
		const char *n = strerrorname_np(e);
		if (n && strlen(n) == len && memcmp(n, name, len) == 0)
			return e;
	}
	return -1;
}

const char *family_name(unsigned family)
{
	switch (family) {
	case AF_INET:
		return "inet";
	case AF_INET6:
		return "inet6";
	default:
		return NULL;
	}
}

int family_from_name(const char *name, size_t len)
{
	if (len == 4 && memcmp(name, "inet", 4) == 0)
		return AF_INET;
	if (len == 5 && memcmp(name, "inet6", 5) == 0)
		return AF_INET6;
	return -1;
}

/* Howard Hinnant's civil-calendar algorithms, proleptic Gregorian. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* "00" "01" ... "99": times are written two digits at a time */
static const char digit_pairs[200] = "00010203040506070809101112131415161718192021222324252627282930313233"
			     "34353637383940414243444546474849505152535455565758596061626364656667"
			     "6869707172737475767778798081828384858687888990919293949596979899";

/* v (< 10^n, n <= 9) as exactly n digits, two at a time, in 32-bit arithmetic. */
static void put_digits(char *p, uint32_t v, int n)
{
	for (; n >= 2; n -= 2) {
		memcpy(p + n - 2, digit_pairs + 2 * (v % 100), 2);
		v /= 100;
	}
	if (n)
		p[0] = (char)('0' + v);
}

/*
 * v (< 10^8) as its 8 decimal digits, leading zeros included, a byte lane of
 * a word each, the first in the lowest (not yet ASCII): the halves, their
 * pairs and their digits are split lane by lane, at once (multiplications by
 * the reciprocals of 100 and 10, exact in these ranges), not one by one.
 */
static inline uint64_t digits8(uint32_t v)
{
	uint64_t z = (v / 10000) | (uint64_t)(v % 10000) << 32; /* two lanes < 10^4 */
	uint64_t q = ((z * 10486) >> 20) & 0x0000007f0000007full; /* each / 100 */

	z = q | (z - q * 100) << 16; /* four lanes < 100 */
	q = ((z * 103) >> 10) & 0x000f000f000f000full; /* each / 10 */
	return q | (z - q * 10) << 8;
}

#define ASCII_ZEROS 0x3030303030303030ull

/* Stores word w as bytes in the order its lanes have on a little-endian CPU. */
static inline void put_word(char *out, uint64_t w)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	w = __builtin_bswap64(w);
#endif
	memcpy(out, &w, 8);
}

/* 8 bytes: v's digits without its leading zeros, then what is left of the word; the count. */
static inline size_t put_up_to_8(char *out, uint32_t v)
{
	uint64_t z = digits8(v);
	int lead = z ? __builtin_ctzll(z) / 8 : 7; /* the first lanes; 0 is one digit */

	put_word(out, (z | ASCII_ZEROS) >> (8 * lead));
	return (size_t)(8 - lead);
}

static inline void put_8(char *out, uint32_t v)
{
	put_word(out, digits8(v) | ASCII_ZEROS);
}

size_t format_u64(uint64_t v, char out[20])
{
	if (v < 100000000u)
		return put_up_to_8(out, (uint32_t)v);
	if (v < 10000000000000000ull) {
		uint64_t hi = v / 100000000u;
		size_t n = put_up_to_8(out, (uint32_t)hi);
		put_8(out + n, (uint32_t)(v - hi * 100000000u));
		return n + 8;
	}
	uint64_t top = v / 10000000000000000ull, rest = v - top * 10000000000000000ull;
	uint64_t mid = rest / 100000000u;
	size_t n = put_up_to_8(out, (uint32_t)top);
	put_8(out + n, (uint32_t)mid);
	put_8(out + n + 8, (uint32_t)(rest - mid * 100000000u));
	return n + 16;
}

size_t format_rfc3339_ns(uint64_t ns, char out[RFC3339_NS_LEN])
{
	/* events come in bursts within one second: its date and time are kept */
	static _Thread_local struct {
		uint64_t secs;
		char text[20];
	} kept_second = {.secs = UINT64_MAX};
	typeof(kept_second) *k = &kept_second;
	__asm__("" : "+r"(k)); /* one thread-local look-up, as in event_to_json() */
	char *cached = k->text;
	uint64_t secs = ns / 1000000000u;

	if (secs != k->secs) {
		int64_t days = (int64_t)(secs / 86400);
		uint64_t sod = secs % 86400;
		int64_t y;
		unsigned m, d;

		civil_from_days(days, &y, &m, &d);
		put_digits(cached, (uint32_t)((uint64_t)y % 10000), 4);
		cached[4] = '-';
		put_digits(cached + 5, m, 2);
		cached[7] = '-';
		put_digits(cached + 8, d, 2);
		cached[10] = 'T';
		put_digits(cached + 11, (uint32_t)(sod / 3600), 2);
		cached[13] = ':';
		put_digits(cached + 14, (uint32_t)(sod / 60 % 60), 2);
		cached[16] = ':';
		put_digits(cached + 17, (uint32_t)(sod % 60), 2);
		cached[19] = '.';
		k->secs = secs;
	}
	memcpy(out, cached, 20);
	uint32_t frac = (uint32_t)(ns % 1000000000u);
	out[20] = (char)('0' + frac / 100000000u);
	put_8(out + 21, frac % 100000000u);
	out[29] = 'Z';
	out[30] = '\0';
	return 30;
}

static int take_digits(const char **p, const char *end, int n, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (*p >= end || **p < '0' || **p > '9')
			return -EINVAL;
		*v = *v * 10 + (unsigned)(**p - '0');
	}
	return 0;
}

static int expect(const char **p, const char *end, char c)
{
	if (*p >= end || **p != c)
		return -EINVAL;
	(*p)++;
	return 0;
}

int parse_rfc3339_ns(const char *s, size_t len, uint64_t *ns)
{
	const char *p = s, *end = s + len;
	unsigned y, mo, d, h, mi, sec, frac = 0;
	int64_t offset = 0;

	if (take_digits(&p, end, 4, &y) || expect(&p, end, '-') || take_digits(&p, end, 2, &mo) ||
	    expect(&p, end, '-') || take_digits(&p, end, 2, &d))
		return -EINVAL;
	if (p >= end || (*p != 'T' && *p != 't' && *p != ' '))
		return -EINVAL;
	p++;
	if (take_digits(&p, end, 2, &h) || expect(&p, end, ':') || take_digits(&p, end, 2, &mi) ||
	    expect(&p, end, ':') || take_digits(&p, end, 2, &sec))
		return -EINVAL;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -EINVAL;
	if (p < end && *p == '.') {
		int n = 0;
		p++;
		while (p < end && *p >= '0' && *p <= '9') {
			if (n < 9)
				frac = frac * 10 + (unsigned)(*p - '0');
			n++;
			p++;
		}
		if (n == 0)
			return -EINVAL;
		for (; n < 9; n++)
			frac *= 10;
	}
	if (p < end && (*p == 'Z' || *p == 'z')) {
		p++;
	} else if (p < end && (*p == '+' || *p == '-')) {
		int sign = *p == '-' ? -1 : 1;
		unsigned oh, om;
		p++;
		if (take_digits(&p, end, 2, &oh) || expect(&p, end, ':') ||
		    take_digits(&p, end, 2, &om) || oh > 23 || om > 59)
			return -EINVAL;
		offset = sign * (int64_t)(oh * 3600 + om * 60);
	} else {
		return -EINVAL;
	}
	if (p != end)
		return -EINVAL;

	int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
	if (secs < 0 || (uint64_t)secs > UINT64_MAX / 1000000000u - 1)
		return -EINVAL;
	*ns = (uint64_t)secs * 1000000000u + frac;
	return 0;
}

static char *put_ipv4(char *p, const uint8_t a[4])
{
	for (int i = 0; i < 4; i++) {
		unsigned v = a[i];
		if (i)
			*p++ = '.';
		if (v >= 100)
			*p++ = (char)('0' + v / 100);
		if (v >= 10)
			*p++ = (char)('0' + v / 10 % 10);
		*p++ = (char)('0' + v % 10);
	}
	return p;
}

/*
 * What glibc's inet_ntop() writes, character for character (archives written
 * before keep their spelling): the longest run of two or more zero groups
 * (the first of equal runs) as "::", groups in lower-case hex without leading
 * zeros, and the last 32 bits as IPv4 after ::ffff: and after :: (but ::1).
 */
static char *put_ipv6(char *p, const uint8_t a[16])
{
	static const char hex[] = "0123456789abcdef";
	unsigned w[8];
	int best = -1, best_len = 0, cur = -1, cur_len = 0;

	for (int i = 0; i < 8; i++) {
		w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
		if (w[i] == 0) {
			if (cur < 0)
				cur = i, cur_len = 0;
			if (++cur_len > best_len)
				best = cur, best_len = cur_len;
		} else {
			cur = -1;
		}
	}
	if (best_len < 2)
		best = -1;
	for (int i = 0; i < 8; i++) {
		if (best >= 0 && i >= best && i < best + best_len) {
			if (i == best)
				*p++ = ':';
			continue;
		}
		if (i)
			*p++ = ':';
		if (i == 6 && best == 0 &&
		    (best_len == 6 || (best_len == 7 && w[7] != 1) ||
		     (best_len == 5 && w[5] == 0xffff)))
			return put_ipv4(p, a + 12);
		bool lead = true;
		for (int shift = 12; shift >= 0; shift -= 4) {
			unsigned nib = w[i] >> shift & 15;
			if (lead && nib == 0 && shift)
				continue;
			lead = false;
			*p++ = hex[nib];
		}
	}
	if (best >= 0 && best + best_len == 8)
		*p++ = ':';
	return p;
}

size_t format_addr(unsigned family, const uint8_t addr[16], char out[ADDR_TEXT_LEN])
{
	char *end = out;

	/* by hand: inet_ntop's printf is most of a sink's cost */
	if (family == AF_INET)
		end = put_ipv4(out, addr);
	else if (family == AF_INET6)
		end = put_ipv6(out, addr);
	*end = '\0';
	return (size_t)(end - out);
}

int parse_addr(unsigned family, const char *s, size_t len, uint8_t addr[16])
{
	char buf[ADDR_TEXT_LEN];

	if (len == 0 || len >= sizeof(buf) || (family != AF_INET && family != AF_INET6))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(addr, 0, 16);
	return inet_pton((int)family, buf, addr) == 1 ? 0 : -EINVAL;
}

void copy_fixed_string(char *dst, size_t dst_size, const char *src)
{
	size_t n = strnlen(src, dst_size - 1);
	memcpy(dst, src, n);
	memset(dst + n, 0, dst_size - n);
}

size_t utf8_sequence_length(const unsigned char *s, size_t max)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n > max)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

size_t bytes_to_utf8(const char *in, size_t len, char *out)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		/* a run of ASCII, copied at once (most names are nothing else) */
		size_t run = i;
		while (run < len && s[run] < 0x80)
			run++;
		if (run > i) {
			memcpy(out + o, s + i, run - i);
			o += run - i;
			i = run;
			continue;
		}
		size_t n = utf8_sequence_length(s + i, len - i);
		if (n) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		} else { /* the byte as U+0080..U+00FF, as the JSON form does */
			out[o++] = (char)(0xc0 | s[i] >> 6);
			out[o++] = (char)(0x80 | (s[i] & 0x3f));
			i++;
		}
	}
	return o;
}

#define HEX_DIGIT(x) ((x) < 10 ? '0' + (x) : 'a' + (x) - 10)
#define HEX_PAIR(b) {HEX_DIGIT((b) >> 4), HEX_DIGIT((b) & 15)}
#define HEX_ROW(h)                                                                          \
	HEX_PAIR(h * 16 + 0), HEX_PAIR(h * 16 + 1), HEX_PAIR(h * 16 + 2),                   \
		HEX_PAIR(h * 16 + 3), HEX_PAIR(h * 16 + 4), HEX_PAIR(h * 16 + 5),           \
		HEX_PAIR(h * 16 + 6), HEX_PAIR(h * 16 + 7), HEX_PAIR(h * 16 + 8),           \
		HEX_PAIR(h * 16 + 9), HEX_PAIR(h * 16 + 10), HEX_PAIR(h * 16 + 11),         \
		HEX_PAIR(h * 16 + 12), HEX_PAIR(h * 16 + 13), HEX_PAIR(h * 16 + 14),        \
		HEX_PAIR(h * 16 + 15)
const char hex_pairs[256][2] = {
	HEX_ROW(0),  HEX_ROW(1),  HEX_ROW(2),  HEX_ROW(3), HEX_ROW(4),  HEX_ROW(5),
	HEX_ROW(6),  HEX_ROW(7),  HEX_ROW(8),  HEX_ROW(9), HEX_ROW(10), HEX_ROW(11),
	HEX_ROW(12), HEX_ROW(13), HEX_ROW(14), HEX_ROW(15),
};

size_t format_machine(uint64_t machine, char out[MACHINE_TEXT_LEN])
{
	format_hex64(machine, out);
	return MACHINE_TEXT_LEN;
}

int parse_machine(const char *s, size_t len, uint64_t *machine)
{
	uint64_t v = 0;

	if (len != MACHINE_TEXT_LEN)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
			     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
						    : 16;
		if (d == 16)
			return -EINVAL;
		v = v << 4 | d;
	}
	*machine = v;
	return 0;
}
