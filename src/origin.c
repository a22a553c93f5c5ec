/* SPDX-License-Identifier: MIT */
#include "origin.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "event-text.h"

#define MACHINE_ID_FILE "/etc/machine-id"

/* The first 64 bits of a machine id's 32 hex digits; false if text is not one. */
static bool parse_machine_id(const char *text, uint64_t *machine)
{
	size_t n = strspn(text, "0123456789abcdef");

	/* systemd's format: 32 lower-case hex digits, a newline at most */
	if (n != 32 || (text[n] && text[n] != '\n'))
		return false;
	return parse_machine(text, MACHINE_TEXT_LEN, machine) == 0;
}

void origin_init(struct origin *o, const char *host)
{
	char line[64] = "";
	FILE *f;

	memset(o, 0, sizeof(*o));
	if (host)
		snprintf(o->host, sizeof(o->host), "%s", host);
	else
		gethostname(o->host, sizeof(o->host) - 1);
	f = fopen(MACHINE_ID_FILE, "re");
	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		fclose(f);
	}
	o->has_machine = parse_machine_id(line, &o->machine);
}

void origin_stamp(const struct origin *o, struct tcp_audit_event *ev)
{
	copy_fixed_string(ev->host, sizeof(ev->host), o->host);
	ev->valid |= TCP_AUDIT_HAS_HOST;
	if (o->has_machine) {
		ev->machine = o->machine;
		ev->valid |= TCP_AUDIT_HAS_MACHINE;
	}
}
