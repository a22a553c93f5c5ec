/* SPDX-License-Identifier: MIT */
/* Unit tests: the bpf eventer's owner table against a plain array. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "owners.h"

#define KEYS 20000

static void test_random_operations_match_a_reference(void **state)
{
	(void)state;
	struct owner_table *t = owner_table_new(KEYS);
	static uint32_t ref[KEYS + 1]; /* ref[k]: pid + 1 of key k, 0: absent */
	size_t present = 0;

	assert_non_null(t);
	srand(7);
	for (int step = 0; step < 400000; step++) {
		/* keys in runs, as cookies are: collisions and wrap-around included */
		uint64_t key = 1 + (uint64_t)rand() % KEYS;
		bool full;
		if (rand() % 3) {
			struct owner_entry *e = owner_table_add(t, key, &full);
			assert_non_null(e);
			present += ref[key] == 0;
			e->owner.pid = (uint32_t)step;
			ref[key] = (uint32_t)step + 1;
		} else {
			owner_table_forget(t, key);
			present -= ref[key] != 0;
			ref[key] = 0;
		}
		if (step % 50000 == 0 || step == 399999) {
			assert_int_equal(owner_table_count(t), present);
			for (uint64_t k = 1; k <= KEYS; k++) {
				struct owner_entry *e = owner_table_find(t, k);
				if (ref[k]) {
					assert_non_null(e);
					assert_int_equal(e->owner.pid, ref[k] - 1);
				} else {
					assert_null(e);
				}
			}
		}
	}
	owner_table_free(t);
}

static void test_limit_and_expiry(void **state)
{
	(void)state;
	struct owner_table *t = owner_table_new(3000);
	bool full;

	for (uint64_t k = 1; k <= 3000; k++) {
		struct owner_entry *e = owner_table_add(t, k << 20, &full);
		assert_non_null(e);
		/* even keys pending since k, odd ones confirmed; some hold events */
		e->pending_since = k % 2 ? 0 : k;
		e->held = k % 10 == 0;
	}
	assert_null(owner_table_add(t, 1, &full));
	assert_true(full);
	assert_non_null(owner_table_add(t, 5ull << 20, &full)); /* present: fine */
	/* pending before 2001, holding nothing: 1000 even keys, less 200 that hold */
	assert_int_equal(owner_table_expire(t, 2001), 800);
	assert_int_equal(owner_table_count(t), 2200);
	for (uint64_t k = 1; k <= 3000; k++) {
		bool gone = k % 2 == 0 && k < 2001 && k % 10 != 0;
		if (gone)
			assert_null(owner_table_find(t, k << 20));
		else
			assert_non_null(owner_table_find(t, k << 20));
	}
	owner_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_operations_match_a_reference),
		cmocka_unit_test(test_limit_and_expiry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
