// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for tcp-audit verify on a jsonl archive: the input is the
 * archive, checked with the verification key in TCP_AUDIT_FUZZ_VKEY (the key
 * the seeds were sealed with, so that mutations reach past the MACs into
 * the chain and fingerprint checks).  An archive is what an attacker edits:
 * whatever it holds must be reported, never crash, hang or leak.  Seeds: real
 * sealed archives (see test_fuzz.py).  Each input is written to a file in the
 * working folder (the test's temporary one) for verify to read.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seal.h"

static const char path[] = "fuzz-verify-input.jsonl";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char vkey[SEAL_VKEY_MAX];

	if (!vkey[0]) {
		const char *k = getenv("TCP_AUDIT_FUZZ_VKEY");
		if (!k || !k[0] || strlen(k) >= sizeof(vkey))
			abort();
		strcpy(vkey, k);
		if (!freopen("/dev/null", "w", stdout)) /* the report; libFuzzer's is on stderr */
			abort();
	}
	FILE *f = fopen(path, "wb");
	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		abort();
	char *argv[] = {"verify", (char *)path, "--verify-key", vkey, NULL};
	optind = 0; /* getopt starts over */
	int r = verify_main(4, argv);
	if (r < 0 || r > 2)
		abort();
	return 0;
}
