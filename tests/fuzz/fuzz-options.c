// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the "-p KEY=VALUE" parser: each input line is one -p
 * argument, applied to a table with one option of every type.  A success
 * must leave every value within its declared bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

struct cfg {
	const char *s;
	bool b;
	int64_t i;
	uint64_t z;
	int e;
	int64_t unbounded;
};

static const struct tcp_audit_option table[] = {
	{"s", TCP_AUDIT_OPT_STRING, "x", false, "a string", offsetof(struct cfg, s), 0, 0, NULL},
	{"b", TCP_AUDIT_OPT_BOOL, "no", false, "a bool", offsetof(struct cfg, b), 0, 0, NULL},
	{"i", TCP_AUDIT_OPT_INT, "5", false, "an int", offsetof(struct cfg, i), -3, 1000, NULL},
	{"z", TCP_AUDIT_OPT_SIZE, "1M", false, "a size", offsetof(struct cfg, z), 1024, 1 << 30,
	 NULL},
	{"e", TCP_AUDIT_OPT_ENUM, "b", false, "an enum", offsetof(struct cfg, e), 0, 0,
	 "a|b|cc"},
	{"u", TCP_AUDIT_OPT_INT, NULL, false, "unbounded", offsetof(struct cfg, unbounded), 0, 0,
	 NULL},
	{0},
};

static const struct tcp_audit_plugin plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "fuzz",
	.kind = TCP_AUDIT_SINKER,
	.options = table,
	.config_size = sizeof(struct cfg),
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct option_arg args[16];
	size_t n = 0;
	char err[256];
	struct cfg c;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (char *line = text, *next; line && n < 16; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (option_arg_split(line, &args[n]) == 0)
			n++;
	}
	for (int skip = 0; skip < 2; skip++) {
		memset(&c, 0, sizeof(c));
		if (options_apply(&plugin, args, n, skip, &c, err, sizeof(err)) == 0) {
			if (c.i < -3 || c.i > 1000 || c.z < 1024 || c.z > (1u << 30) || c.e < 0 ||
			    c.e > 2 || !c.s)
				abort();
		} else if (!memchr(err, '\0', sizeof(err)) || !err[0]) {
			abort(); /* an error always says why */
		}
	}
	uint64_t v;
	option_parse_size(text, &v);
	free(text);
	return 0;
}
