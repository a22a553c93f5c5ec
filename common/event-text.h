/* SPDX-License-Identifier: MIT */
/*
 * Text forms of event fields, shared by the core and the built-in plugins so
 * that every store spells states, times and addresses the same way.
 */
#ifndef TCP_AUDIT_EVENT_TEXT_H
#define TCP_AUDIT_EVENT_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tcp-audit/plugin.h>

/* "2026-11-25T01:53:07.123456789Z" plus NUL */
#define RFC3339_NS_LEN 31
/* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" plus NUL */
#define ADDR_TEXT_LEN 46

/* RFC 793 spelling ("SYN-SENT"), or NULL for a value outside the kernel's. */
const char *tcp_state_name(unsigned state);
/* Inverse of tcp_state_name(); -1 if the name is unknown. */
int tcp_state_from_name(const char *name, size_t len);

/* "CONNECTED" etc., or NULL. */
const char *sock_state_name(unsigned state);
int sock_state_from_name(const char *name, size_t len);

/* "inet" / "inet6", or NULL. */
const char *family_name(unsigned family);
int family_from_name(const char *name, size_t len);

const char *gap_stage_name(unsigned stage);
int gap_stage_from_name(const char *name, size_t len);

/* "sent" / "received", or NULL. */
const char *reset_direction_name(unsigned direction);
int reset_direction_from_name(const char *name, size_t len);

/* "NO_SOCKET" etc. (enum tcp_audit_reset_reason), or NULL. */
const char *reset_reason_name(unsigned reason);
int reset_reason_from_name(const char *name, size_t len);

/* "ECONNREFUSED" etc. (glibc's names), or NULL for 0 and unknown values. */
const char *errno_name(unsigned err);
int errno_from_name(const char *name, size_t len);

/* A byte's two lower-case hex digits, for every byte. */
extern const char hex_pairs[256][2];

/* v as 16 lower-case hex digits, no NUL (a machine, a seal's tag). */
static inline void format_hex64(uint64_t v, char out[16])
{
	for (int j = 14; j >= 0; j -= 2, v >>= 8)
		memcpy(out + j, hex_pairs[v & 255], 2);
}

/* v as 8 lower-case hex digits, no NUL (a seal's fingerprint). */
static inline void format_hex32(uint32_t v, char out[8])
{
	for (int j = 6; j >= 0; j -= 2, v >>= 8)
		memcpy(out + j, hex_pairs[v & 255], 2);
}

/* A machine (struct tcp_audit_event's) as 16 lower-case hex digits, no NUL; returns 16. */
#define MACHINE_TEXT_LEN 16
size_t format_machine(uint64_t machine, char out[MACHINE_TEXT_LEN]);
/* Parses those 16 digits (upper case too); 0 or -EINVAL. */
int parse_machine(const char *s, size_t len, uint64_t *machine);

/*
 * v in decimal, no NUL; returns the length (at most 20).  out needs 20 bytes
 * whatever v: the bytes after the digits may be overwritten (numbers are
 * written 8 digits at a time).
 */
size_t format_u64(uint64_t v, char out[20]);

/* Writes RFC 3339 UTC with nanoseconds; returns the length (30). */
size_t format_rfc3339_ns(uint64_t ns, char out[RFC3339_NS_LEN]);
/*
 * Parses what format_rfc3339_ns() writes, and also fewer fraction digits and
 * a numeric offset (+hh:mm).  Returns 0 or -EINVAL.
 */
int parse_rfc3339_ns(const char *s, size_t len, uint64_t *ns);

/*
 * inet_ntop()'s text of saddr/daddr for the event's family, "" if the family
 * is odd; returns the length (NUL not counted).
 */
size_t format_addr(unsigned family, const uint8_t addr[16], char out[ADDR_TEXT_LEN]);
/* Parses an address of the given family into 16 zero-padded bytes. */
int parse_addr(unsigned family, const char *s, size_t len, uint8_t addr[16]);

/* Length of the valid UTF-8 sequence at s (at most max bytes), 0 if invalid. */
size_t utf8_sequence_length(const unsigned char *s, size_t max);

/*
 * Bytes as valid UTF-8 text: valid sequences as they are, any other byte as
 * the character U+0080..U+00FF (the JSON form's convention).  out needs
 * 2 * len bytes; returns the length written.
 */
size_t bytes_to_utf8(const char *in, size_t len, char *out);

/* Copies a NUL-terminated string into a fixed field, NUL-padding the rest. */
void copy_fixed_string(char *dst, size_t dst_size, const char *src);

#endif
