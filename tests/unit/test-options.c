/* SPDX-License-Identifier: MIT */
/* Unit tests: option parsing against a declared table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "options.h"

struct cfg {
	const char *name;
	bool flag;
	int64_t count;
	uint64_t size;
	int mode;
};

static const struct tcp_audit_option table[] = {
	{"name", TCP_AUDIT_OPT_STRING, "def", false, "", offsetof(struct cfg, name), 0, 0, NULL},
	{"flag", TCP_AUDIT_OPT_BOOL, "false", false, "", offsetof(struct cfg, flag), 0, 0, NULL},
	{"count", TCP_AUDIT_OPT_INT, "5", false, "", offsetof(struct cfg, count), -10, 10, NULL},
	{"size", TCP_AUDIT_OPT_SIZE, "16M", false, "", offsetof(struct cfg, size), 4096,
	 INT64_MAX, NULL},
	{"mode", TCP_AUDIT_OPT_ENUM, "b", false, "", offsetof(struct cfg, mode), 0, 0, "a|b|cc"},
	{0},
};

static const struct tcp_audit_plugin plugin = {
	TCP_AUDIT_PLUGIN_HEADER,
	.name = "t",
	.options = table,
	.config_size = sizeof(struct cfg),
};

static int apply(struct cfg *c, const char *const *args, size_t n, char *err)
{
	struct option_arg a[8] = {{0}};

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(option_arg_split(args[i], &a[i]), 0);
	return options_apply(&plugin, a, n, false, c, err, 256);
}

static void test_defaults(void **state)
{
	(void)state;
	struct cfg c;
	char err[256];

	assert_int_equal(apply(&c, NULL, 0, err), 0);
	assert_string_equal(c.name, "def");
	assert_false(c.flag);
	assert_int_equal(c.count, 5);
	assert_true(c.size == 16u << 20);
	assert_int_equal(c.mode, 1);
}

static void test_values(void **state)
{
	(void)state;
	struct cfg c;
	char err[256];
	const char *args[] = {"name=x=y", "flag=YES", "count=-10", "size=2GiB", "mode=cc"};

	assert_int_equal(apply(&c, args, 5, err), 0);
	assert_string_equal(c.name, "x=y");
	assert_true(c.flag);
	assert_int_equal(c.count, -10);
	assert_true(c.size == 2ull << 30);
	assert_int_equal(c.mode, 2);
}

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *arg, *msg;
	} cases[] = {
		{"count=11", "option \"count\": 11 is out of range (-10 to 10)"},
		{"count=1x", "option \"count\": \"1x\" is not an integer"},
		{"count=99999999999999999999", "out of range"},
		{"size=1K", "out of range"},
		{"size=12Q", "is not a size"},
		{"size=-1", "is not a size"},
		{"flag=2", "is not a boolean"},
		{"mode=c", "\"c\" is not one of a|b|cc"},
		{"colour=red", "unknown option \"colour\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg c;
		char err[256] = "";
		const char *args[] = {cases[i].arg};
		assert_int_equal(apply(&c, args, 1, err), -EINVAL);
		if (!strstr(err, cases[i].msg))
			fail_msg("%s: got \"%s\"", cases[i].arg, err);
	}
	struct option_arg a;
	assert_int_equal(option_arg_split("novalue", &a), -EINVAL);
	assert_int_equal(option_arg_split("=v", &a), -EINVAL);
}

static void test_declarations(void **state)
{
	(void)state;
	char err[256];
	struct tcp_audit_option bad = {"x", TCP_AUDIT_OPT_INT, NULL, false, "", 60, 0, 0, NULL};

	assert_int_equal(option_check_declaration(&bad, 64, err, sizeof(err)), -EINVAL);
	bad.offset = 56;
	assert_int_equal(option_check_declaration(&bad, 64, err, sizeof(err)), 0);
	bad.type = 99;
	assert_int_equal(option_check_declaration(&bad, 64, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_declarations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
