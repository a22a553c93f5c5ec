/* SPDX-License-Identifier: MIT */
/*
 * The JSON-lines form of an event: written by the jsonl sink, read back by the
 * replay eventer.  One definition of the format, so that a file replayed into
 * the jsonl sink comes out byte for byte the same.
 *
 * Strings are always valid JSON and valid UTF-8: bytes of a command name that
 * are not valid UTF-8 are written as \u0080..\u00ff, and read back as those
 * raw bytes (valid UTF-8 is written as is, so this is unambiguous for lines
 * this code wrote).
 */
#ifndef TCP_AUDIT_EVENT_JSON_H
#define TCP_AUDIT_EVENT_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <tcp-audit/plugin.h>

/* Enough for any event: every key, every string escaped at 6 bytes a byte. */
#define EVENT_JSON_MAX 1536

/* Writes one line, '\n' included, no NUL; returns its length. */
size_t event_to_json(const struct tcp_audit_event *ev, char out[EVENT_JSON_MAX]);

/*
 * s (its first max bytes at most, up to a NUL) as a quoted JSON string the
 * way this format writes strings (bytes that are not UTF-8 as \u0080..\u00ff):
 * for other JSON of ours.  out needs 6 * max + 2 bytes; returns the length.
 */
size_t json_quote(const char *s, size_t max, char *out);

/*
 * Parses one line (without its '\n') into *ev.  Returns 0, or -EINVAL with a
 * one-line reason in err ("missing key \"dport\"", "dport: 70000 is out of
 * range", ...).
 */
int event_from_json(const char *line, size_t len, struct tcp_audit_event *ev, char *err,
		    size_t err_size);

/*
 * Whether a line is a seal record (tcp-audit --seal; what it holds is the
 * business of tcp-audit verify), which is not an event: readers skip it.
 */
bool event_json_is_seal(const char *line, size_t len);

#endif
