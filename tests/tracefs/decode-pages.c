// SPDX-License-Identifier: MIT
/*
 * decode-pages HEADER_PAGE SYSTEM FORMAT PAGE...: decodes raw trace buffer
 * pages (as read from trace_pipe_raw) with the tracefs eventer's decoder and
 * the given formats, one JSON line per TCP event on stdout.  A malformed page
 * is reported on stderr ("PAGE: malformed") and the tool exits 1 after the
 * rest; the decoder tests run it on recorded and on damaged pages.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <traceevent/event-parse.h>

#include "decoder.h"
#include "event-json.h"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0;

	*len = 0;
	if (!f)
		return NULL;
	for (;;) {
		if (*len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb)
				break;
			buf = nb;
		}
		size_t n = fread(buf + *len, 1, 4096, f);
		*len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	if (buf)
		buf[*len] = '\0';
	return buf;
}

static int print_event(void *ctx, struct tcp_audit_event *ev, uint64_t ts, uint64_t skaddr)
{
	char line[EVENT_JSON_MAX];

	(void)ctx;
	(void)skaddr;
	ev->ktime_ns = ev->time_ns = ts;
	ev->valid |= TCP_AUDIT_HAS_KTIME;
	fwrite(line, 1, event_to_json(ev, line), stdout);
	return 0;
}

int main(int argc, char **argv)
{
	char err[256];
	size_t len;
	int status = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: decode-pages HEADER_PAGE SYSTEM FORMAT [SYSTEM:FORMAT...] "
				"[PAGE...]\n");
		return 2;
	}
	struct tep_handle *tep = tep_alloc();
	tep_set_page_size(tep, getpagesize());
	char *header = slurp(argv[1], &len);
	if (!header || tep_parse_header_page(tep, header, len, sizeof(long)) != 0) {
		fprintf(stderr, "%s: cannot parse\n", argv[1]);
		return 2;
	}
	char *format = slurp(argv[3], &len);
	if (!format || tep_parse_event(tep, format, len, argv[2]) != 0) {
		fprintf(stderr, "%s: cannot parse\n", argv[3]);
		return 2;
	}
	/* more events (the resets): SYSTEM:FORMAT */
	int first_page = 4;
	for (; first_page < argc && strchr(argv[first_page], ':') &&
	       strstr(argv[first_page], ".format");
	     first_page++) {
		char *colon = strchr(argv[first_page], ':');
		*colon = '\0';
		char *more = slurp(colon + 1, &len);
		if (!more || tep_parse_event(tep, more, len, argv[first_page]) != 0) {
			fprintf(stderr, "%s: cannot parse\n", colon + 1);
			return 2;
		}
		free(more);
	}
	struct ta_decoder d;
	if (ta_decoder_init(&d, tep, err, sizeof(err)) != 0) {
		fprintf(stderr, "decoder: %s\n", err);
		return 2;
	}
	for (int i = first_page; i < argc; i++) {
		char *page = slurp(argv[i], &len);
		if (!page) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 2;
		}
		int r = ta_decoder_page(&d, page, len, print_event, NULL);
		if (r < 0) {
			fprintf(stderr, "%s: malformed\n", argv[i]);
			status = 1;
		}
		free(page);
	}
	ta_decoder_fini(&d);
	tep_free(tep);
	free(header);
	free(format);
	return status;
}
