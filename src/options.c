/* SPDX-License-Identifier: MIT */
/*
 * The host parses and validates every plugin option, so plugins never parse
 * text and --list-plugins can show them (the Fluent Bit config_map idea).
 */
#include "options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_size, const char *fmt,
						      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int option_arg_split(const char *arg, struct option_arg *out)
{
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg)
		return -EINVAL;
	out->key = arg;
	out->key_len = (size_t)(eq - arg);
	out->value = eq + 1;
	return 0;
}

const struct tcp_audit_option *option_find(const struct tcp_audit_option *table, const char *key,
					   size_t key_len)
{
	for (const struct tcp_audit_option *o = table; o && o->key; o++)
		if (strlen(o->key) == key_len && memcmp(o->key, key, key_len) == 0)
			return o;
	return NULL;
}

static size_t value_size(int type)
{
	switch (type) {
	case TCP_AUDIT_OPT_STRING:
		return sizeof(const char *);
	case TCP_AUDIT_OPT_BOOL:
		return sizeof(bool);
	case TCP_AUDIT_OPT_INT:
		return sizeof(int64_t);
	case TCP_AUDIT_OPT_SIZE:
		return sizeof(uint64_t);
	case TCP_AUDIT_OPT_ENUM:
		return sizeof(int);
	default:
		return 0;
	}
}

const char *option_type_name(const struct tcp_audit_option *opt)
{
	switch (opt->type) {
	case TCP_AUDIT_OPT_STRING:
		return "string";
	case TCP_AUDIT_OPT_BOOL:
		return "bool";
	case TCP_AUDIT_OPT_INT:
		return "integer";
	case TCP_AUDIT_OPT_SIZE:
		return "size";
	case TCP_AUDIT_OPT_ENUM:
		return opt->choices;
	default:
		return "?";
	}
}

int option_check_declaration(const struct tcp_audit_option *opt, size_t config_size, char *err,
			     size_t err_size)
{
	size_t size = value_size(opt->type);

	if (size == 0)
		return fail(err, err_size, "option \"%s\" has an unknown type %d", opt->key, opt->type);
	if (opt->offset > config_size || config_size - opt->offset < size)
		return fail(err, err_size, "option \"%s\" lies outside the config struct", opt->key);
	if (opt->type == TCP_AUDIT_OPT_ENUM && (!opt->choices || !opt->choices[0]))
		return fail(err, err_size, "option \"%s\" declares no choices", opt->key);
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_int(const char *v, int64_t *out)
{
	char *end;

	if (!*v)
		return -EINVAL;
	errno = 0;
	long long x = strtoll(v, &end, 0);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*out = x;
	return 0;
}

int option_parse_size(const char *v, uint64_t *out)
{
	char *end;
	uint64_t mult = 1;

	if (!*v || *v == '-')
		return -EINVAL;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == v)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		mult = 1ull << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1ull << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1ull << 30;
		end++;
		break;
	case 't':
	case 'T':
		mult = 1ull << 40;
		end++;
		break;
	default:
		break;
	}
	if (mult > 1 && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0))
		end += strlen(end);
	else if (mult == 1 && strcasecmp(end, "B") == 0)
		end++;
	if (*end)
		return -EINVAL;
	if (x > UINT64_MAX / mult)
		return -ERANGE;
	*out = x * mult;
	return 0;
}

static int parse_enum(const char *v, const char *choices, int *out)
{
	size_t vlen = strlen(v);
	int i = 0;

	for (const char *c = choices; *c; i++) {
		const char *bar = strchr(c, '|');
		size_t len = bar ? (size_t)(bar - c) : strlen(c);
		if (len == vlen && memcmp(c, v, len) == 0) {
			*out = i;
			return 0;
		}
		if (!bar)
			break;
		c = bar + 1;
	}
	return -EINVAL;
}

static bool bounded(const struct tcp_audit_option *opt)
{
	return opt->min != 0 || opt->max != 0;
}

/* Parses value for opt and stores it into config; what names the source. */
static int apply_one(const struct tcp_audit_option *opt, const char *value, void *config,
		     char *err, size_t err_size)
{
	unsigned char *dst = (unsigned char *)config + opt->offset;
	int r;

	switch (opt->type) {
	case TCP_AUDIT_OPT_STRING:
		memcpy(dst, &value, sizeof(value));
		return 0;
	case TCP_AUDIT_OPT_BOOL: {
		bool b;
		if (parse_bool(value, &b))
			return fail(err, err_size,
				    "option \"%s\": \"%s\" is not a boolean (use true or false)",
				    opt->key, value);
		memcpy(dst, &b, sizeof(b));
		return 0;
	}
	case TCP_AUDIT_OPT_INT: {
		int64_t x;
		r = parse_int(value, &x);
		if (r == -EINVAL)
			return fail(err, err_size, "option \"%s\": \"%s\" is not an integer",
				    opt->key, value);
		if (r || (bounded(opt) && (x < opt->min || x > opt->max)))
			return fail(err, err_size,
				    "option \"%s\": %s is out of range (%" PRId64 " to %" PRId64 ")",
				    opt->key, value, opt->min, opt->max);
		memcpy(dst, &x, sizeof(x));
		return 0;
	}
	case TCP_AUDIT_OPT_SIZE: {
		uint64_t x;
		r = option_parse_size(value, &x);
		if (r == -EINVAL)
			return fail(err, err_size,
				    "option \"%s\": \"%s\" is not a size (a number with an optional "
				    "K, M, G or T suffix)",
				    opt->key, value);
		if (r || (bounded(opt) && (x < (uint64_t)opt->min || x > (uint64_t)opt->max)))
			return fail(err, err_size,
				    "option \"%s\": %s is out of range (%" PRId64 " to %" PRId64
				    " bytes)",
				    opt->key, value, opt->min, opt->max);
		memcpy(dst, &x, sizeof(x));
		return 0;
	}
	case TCP_AUDIT_OPT_ENUM: {
		int x;
		if (parse_enum(value, opt->choices, &x))
			return fail(err, err_size, "option \"%s\": \"%s\" is not one of %s", opt->key,
				    value, opt->choices);
		memcpy(dst, &x, sizeof(x));
		return 0;
	}
	default:
		return fail(err, err_size, "option \"%s\" has an unknown type", opt->key);
	}
}

int options_apply(const struct tcp_audit_plugin *plugin, const struct option_arg *args,
		  size_t n_args, bool skip_unknown, void *config, char *err, size_t err_size)
{
	const struct tcp_audit_option *table = plugin->options;
	int r;

	for (size_t i = 0; i < n_args; i++) {
		const struct tcp_audit_option *opt = option_find(table, args[i].key, args[i].key_len);
		if (!opt) {
			if (skip_unknown)
				continue;
			return fail(err, err_size,
				    "unknown option \"%.*s\" (see tcp-audit --list-plugins)",
				    (int)args[i].key_len, args[i].key);
		}
		for (size_t j = 0; j < i; j++)
			if (args[j].key_len == args[i].key_len &&
			    memcmp(args[j].key, args[i].key, args[i].key_len) == 0)
				return fail(err, err_size, "option \"%s\" is given twice", opt->key);
	}

	for (const struct tcp_audit_option *opt = table; opt && opt->key; opt++) {
		const char *value = opt->def;
		bool given = false;

		for (size_t i = 0; i < n_args; i++)
			if (strlen(opt->key) == args[i].key_len &&
			    memcmp(opt->key, args[i].key, args[i].key_len) == 0) {
				value = args[i].value;
				given = true;
			}
		if (opt->required && !given)
			return fail(err, err_size, "missing required option \"%s\" (-p %s=...)",
				    opt->key, opt->key);
		if (!value)
			continue;
		r = apply_one(opt, value, config, err, err_size);
		if (r) {
			if (!given) /* the plugin's own default is broken */
				snprintf(err + strlen(err), err_size - strlen(err), " (its default)");
			return r;
		}
	}
	return 0;
}
