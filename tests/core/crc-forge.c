/* SPDX-License-Identifier: MIT */
/*
 * crc-forge: what an attacker can do to a seal's unkeyed fingerprints (the
 * CRC-32C of an event's canonical bytes, format 4).  Reads one event as a
 * jsonl line, flips a bit of its destination address and picks the
 * pid_on_cpu that gives the altered event the same fingerprint (CRC-32C is
 * affine over GF(2) in any 32 bits of its input), and writes the forged line.
 * seal_crc() is used as it is, as a black box.  Exit status 1 when the line
 * is not an event.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "event-json.h"
#include "seal.h"

static uint32_t crc_with_pid(struct tcp_audit_event *ev, uint32_t pid)
{
	ev->pid_on_cpu = pid;
	return seal_crc(ev);
}

int main(void)
{
	static char line[1 << 16], err[256], out[EVENT_JSON_MAX];
	struct tcp_audit_event ev;

	if (!fgets(line, sizeof(line), stdin))
		return 1;
	size_t len = strcspn(line, "\n");
	memset(&ev, 0, sizeof(ev));
	if (event_from_json(line, len, &ev, err, sizeof(err)) != 0) {
		fprintf(stderr, "crc-forge: %s\n", err);
		return 1;
	}
	uint32_t want = seal_crc(&ev);
	ev.daddr[ev.family == AF_INET ? 3 : 15] ^= 1;
	/* f(x) = f(0) ^ L(x): L's columns, then x with L(x) = want ^ f(0) */
	uint32_t base = crc_with_pid(&ev, 0), rhs = want ^ base, x = 0;
	uint64_t rows[32] = {0}; /* row r: bit b when L(1 << b) has bit r; bit 32: rhs's bit r */
	for (int b = 0; b < 32; b++) {
		uint32_t col = crc_with_pid(&ev, 1u << b) ^ base;
		for (int r = 0; r < 32; r++)
			rows[r] |= (uint64_t)((col >> r) & 1u) << b;
	}
	for (int r = 0; r < 32; r++)
		rows[r] |= (uint64_t)((rhs >> r) & 1u) << 32;
	/* Gauss-Jordan over GF(2): afterwards row b reads x_b = its bit 32 */
	for (int b = 0; b < 32; b++) {
		int piv = b;
		while (piv < 32 && !(rows[piv] >> b & 1u))
			piv++;
		if (piv == 32) {
			fprintf(stderr, "crc-forge: no solution in pid_on_cpu\n");
			return 1;
		}
		uint64_t t = rows[piv];
		rows[piv] = rows[b];
		rows[b] = t;
		for (int r = 0; r < 32; r++)
			if (r != b && (rows[r] >> b & 1u))
				rows[r] ^= rows[b];
	}
	for (int b = 0; b < 32; b++)
		x |= (uint32_t)(rows[b] >> 32 & 1u) << b;
	if (crc_with_pid(&ev, x) != want) {
		fprintf(stderr, "crc-forge: the solution does not hold\n");
		return 1;
	}
	fwrite(out, 1, event_to_json(&ev, out), stdout);
	fputc('\n', stdout);
	return 0;
}
