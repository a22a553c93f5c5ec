/* SPDX-License-Identifier: MIT */
/* CRC-32C, with the SSE4.2 instruction where there is one, else a table. */
#include "crc32c.h"

#include <stdbool.h>
#include <string.h>

static uint32_t crc_table[256];
static bool crc_hw;

/* before main(): crc32c() is then a plain function of any thread */
__attribute__((constructor)) static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__)
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw_update(uint32_t c, const uint8_t *p,
								size_t n)
{
	uint64_t c64 = c;

	for (; n >= 8; n -= 8, p += 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
	}
	c = (uint32_t)c64;
	for (; n; n--, p++)
		c = __builtin_ia32_crc32qi(c, *p);
	return c;
}
#endif

uint32_t crc32c(const void *data, size_t n)
{
	const uint8_t *p = data;
	uint32_t c = 0xffffffffu;

#if defined(__x86_64__)
	if (crc_hw)
		return ~crc_hw_update(c, p, n);
#endif
	for (; n; n--, p++)
		c = crc_table[(c ^ *p) & 0xff] ^ (c >> 8);
	return ~c;
}
