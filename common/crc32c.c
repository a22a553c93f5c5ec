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
/* The last 0 to 7 bytes, in at most three steps. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw_tail(uint32_t c, const uint8_t *p,
							       size_t n)
{
	if (n & 4) {
		uint32_t v;
		memcpy(&v, p, 4);
		c = __builtin_ia32_crc32si(c, v);
		p += 4;
	}
	if (n & 2) {
		uint16_t v;
		memcpy(&v, p, 2);
		c = __builtin_ia32_crc32hi(c, v);
		p += 2;
	}
	if (n & 1)
		c = __builtin_ia32_crc32qi(c, *p);
	return c;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_update(uint32_t c, const uint8_t *p,
								size_t n)
{
	uint64_t c64 = c;

	for (; n >= 8; n -= 8, p += 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
	}
	return crc_hw_tail((uint32_t)c64, p, n);
}

/* Three CRCs at once: each instruction waits for its own chain only (3 cycles each). */
__attribute__((target("sse4.2"))) static void crc_hw_x3(const uint8_t *const p[3],
							const size_t n[3], uint32_t out[3])
{
	uint64_t a = 0xffffffffu, b = a, c = a;
	const uint8_t *pa = p[0], *pb = p[1], *pc = p[2];
	size_t common = n[0] < n[1] ? n[0] : n[1];

	common = (common < n[2] ? common : n[2]) & ~(size_t)7;
	for (size_t i = 0; i < common; i += 8) {
		uint64_t va, vb, vc;
		memcpy(&va, pa + i, 8);
		memcpy(&vb, pb + i, 8);
		memcpy(&vc, pc + i, 8);
		a = __builtin_ia32_crc32di(a, va);
		b = __builtin_ia32_crc32di(b, vb);
		c = __builtin_ia32_crc32di(c, vc);
	}
	out[0] = ~crc_hw_update((uint32_t)a, pa + common, n[0] - common);
	out[1] = ~crc_hw_update((uint32_t)b, pb + common, n[1] - common);
	out[2] = ~crc_hw_update((uint32_t)c, pc + common, n[2] - common);
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

void crc32c_x3(const void *const data[3], const size_t n[3], uint32_t out[3])
{
#if defined(__x86_64__)
	if (crc_hw) {
		crc_hw_x3((const uint8_t *const *)data, n, out);
		return;
	}
#endif
	for (int i = 0; i < 3; i++)
		out[i] = crc32c(data[i], n[i]);
}
