/* SPDX-License-Identifier: MIT */
/* Parsing "-p KEY=VALUE" against a plugin's declared option table. */
#ifndef TCP_AUDIT_OPTIONS_H
#define TCP_AUDIT_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include <tcp-audit/plugin.h>

/* One -p argument, split at the first '='. */
struct option_arg {
	const char *key; /* not NUL-terminated at key_len */
	size_t key_len;
	const char *value; /* NUL-terminated (points into argv) */
};

/* Splits "KEY=VALUE"; -EINVAL if there is no '=' or the key is empty. */
int option_arg_split(const char *arg, struct option_arg *out);

/* The option named key in the table, or NULL. */
const struct tcp_audit_option *option_find(const struct tcp_audit_option *table, const char *key,
					   size_t key_len);

/*
 * Fills config (config_size bytes, zeroed by the caller) with the defaults,
 * then the given arguments.  Strings point into the arguments or the table.
 * On error returns -EINVAL with a one-line reason in err.  If skip_unknown,
 * keys the table does not know are ignored (used by the auto eventer).
 */
int options_apply(const struct tcp_audit_plugin *plugin, const struct option_arg *args,
		  size_t n_args, bool skip_unknown, void *config, char *err, size_t err_size);

/* Validates one option table entry; -EINVAL with a reason if it is unusable. */
int option_check_declaration(const struct tcp_audit_option *opt, size_t config_size, char *err,
			     size_t err_size);

/* A size: digits with an optional K/M/G/T suffix (1024-based).  0 or -errno. */
int option_parse_size(const char *v, uint64_t *out);

/* "string", "bool", "integer", "size", "one of a|b" for --list-plugins. */
const char *option_type_name(const struct tcp_audit_option *opt);

#endif
