// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the tracefs record decoder: every input is one trace
 * buffer page, decoded with the recorded inet_sock_set_state format and the
 * reset events' (or, for inputs starting with 'L', the old tcp_set_state one).  Built with clang
 * -fsanitize=fuzzer,address,undefined; TCP_AUDIT_PAGES points at the folder
 * of recorded pages and formats.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <traceevent/event-parse.h>

#include "decoder.h"

static struct ta_decoder decoders[2];

static char *slurp(const char *dir, const char *name, size_t *len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz-decoder: cannot open %s\n", path);
		abort();
	}
	char *buf = calloc(1, 1 << 16);
	*len = fread(buf, 1, (1 << 16) - 1, f);
	fclose(f);
	return buf;
}

static void setup(struct ta_decoder *d, const char *dir, const char *system, const char *format,
		  bool resets)
{
	size_t len;
	char err[256];
	struct tep_handle *tep = tep_alloc();

	tep_set_page_size(tep, 4096);
	char *header = slurp(dir, "header_page", &len);
	char *fmt = slurp(dir, format, &len);
	if (tep_parse_header_page(tep, header, strlen(header), sizeof(long)) != 0 ||
	    tep_parse_event(tep, fmt, len, system) != 0) {
		fprintf(stderr, "fuzz-decoder: cannot set up %s\n", format);
		abort();
	}
	for (int i = 0; resets && i < 2; i++) {
		char *more = slurp(dir, i ? "tcp_receive_reset.format" : "tcp_send_reset.format", &len);
		if (tep_parse_event(tep, more, len, "tcp") != 0) {
			fprintf(stderr, "fuzz-decoder: cannot set up the reset events\n");
			abort();
		}
		free(more);
	}
	if (ta_decoder_init(d, tep, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz-decoder: cannot set up %s\n", format);
		abort();
	}
	free(header);
	free(fmt);
}

static int count(void *ctx, struct tcp_audit_event *ev, uint64_t ts, uint64_t skaddr)
{
	(void)ts;
	(void)skaddr;
	*(unsigned *)ctx += ev->family + ev->sport;
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("TCP_AUDIT_PAGES");

	(void)argc;
	(void)argv;
	if (!dir) {
		fprintf(stderr, "fuzz-decoder: set TCP_AUDIT_PAGES\n");
		abort();
	}
	setup(&decoders[0], dir, "sock", "inet_sock_set_state.format", true);
	setup(&decoders[1], dir, "tcp", "tcp_set_state.format", false);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ta_decoder *d = &decoders[size > 0 && data[0] == 'L'];
	unsigned sum = 0;

	ta_decoder_page(d, data, size, count, &sum);
	return 0;
}
