/* SPDX-License-Identifier: MIT */
/* Forward-secure seals (see seal.h), on libsodium's primitives. */
#include "seal.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "crc32c.h"
#include "event-text.h"
#include "log.h"

#define KEYFILE_MAGIC "tcp-audit sealing key v1"
#define STEP_CONTEXT "tcp-audit seal key step"
#define FP_CONTEXT "tcp-audit seal fp"
#define MAC_CONTEXT "tcp-audit seal mac"
#define BODY_CONTEXT "tcp-audit seal body"
#define SEAL_FIXED_MAX 512 /* the seal's text but for the fingerprints and the tags */

struct sealer {
	pthread_mutex_t mu;
	char *path;
	uint64_t start, interval, epoch;
	uint8_t key[SEAL_KEY_BYTES];
	char run[SEAL_RUN_HEX];
	char after[SEAL_RUN_HEX]; /* the previous run, "" for none */
	bool after_closed;
};

struct seal_chain {
	struct sealer *s;
	uint64_t index;
	char prev[SEAL_MAC_HEX_MAX + 1]; /* the MAC of the seal before, the next one's "prev" */
	char mac[SEAL_MAC_HEX_MAX + 1];  /* the MAC of the seal made last */
	char *text;
	size_t cap;
	uint64_t *fp; /* the fingerprints of the batch sealed last */
	size_t fp_cap;
	struct seal_body *body;
};

struct seal_body {
	EVP_CIPHER_CTX *ctx;
	size_t used; /* bytes in buf: the canonical bytes of the chunk's events so far */
	size_t n;    /* the chunk's events so far, */
	uint16_t at[SEAL_CHUNK], len[SEAL_CHUNK]; /* where each one's bytes are in buf */
	uint8_t buf[SEAL_CHUNK * sizeof(struct tcp_audit_event)];
};

static int fail(char *err, size_t size, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t size, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
	return r;
}

static void step(const uint8_t in[SEAL_KEY_BYTES], uint8_t out[SEAL_KEY_BYTES])
{
	uint8_t buf[sizeof(STEP_CONTEXT) - 1 + SEAL_KEY_BYTES];

	memcpy(buf, STEP_CONTEXT, sizeof(STEP_CONTEXT) - 1);
	memcpy(buf + sizeof(STEP_CONTEXT) - 1, in, SEAL_KEY_BYTES);
	crypto_generichash(out, SEAL_KEY_BYTES, buf, sizeof(buf), NULL, 0);
	sodium_memzero(buf, sizeof(buf));
}

static uint64_t wall_s(void)
{
	return (uint64_t)time(NULL);
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Writes the key file through a temporary file renamed over it (fsynced,
 * then the folder), so that the file always holds one whole key and the old
 * one is gone from it.
 */
static int save(const char *path, uint64_t start, uint64_t interval, uint64_t epoch,
		const uint8_t key[SEAL_KEY_BYTES], const char *run, bool closed, bool exclusive)
{
	char tmp[4096], hex[2 * SEAL_KEY_BYTES + 1], text[512];
	int r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.new", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	sodium_bin2hex(hex, sizeof(hex), key, SEAL_KEY_BYTES);
	int len = snprintf(text, sizeof(text),
			   KEYFILE_MAGIC "\n# secret: readable by root only; it changes every "
					 "interval seconds\nstart %" PRIu64 "\ninterval %" PRIu64
					 "\nepoch %" PRIu64 "\nkey %s\nrun %s %s\n",
			   start, interval, epoch, hex, run[0] ? run : "-", closed ? "closed" : "open");
	sodium_memzero(hex, sizeof(hex));
	const char *target = exclusive ? path : tmp;
	int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (fchmod(fd, 0600) != 0 || write(fd, text, (size_t)len) != len || fsync(fd) != 0)
		r = errno ? -errno : -EIO;
	if (close(fd) != 0 && !r)
		r = -errno;
	if (r) {
		unlink(target);
		goto out;
	}
	if (!exclusive && rename(tmp, path) != 0) {
		r = -errno;
		unlink(tmp);
		goto out;
	}
	/* the folder, so that the rename is durable */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	sodium_memzero(text, sizeof(text));
	return r;
}

int seal_key_create(const char *path, uint64_t interval, char vkey[SEAL_VKEY_MAX], char *err,
		    size_t err_size)
{
	uint8_t k0[SEAL_KEY_BYTES];
	char hex[2 * SEAL_KEY_BYTES + 1];

	if (sodium_init() < 0)
		return fail(err, err_size, -EIO, "cannot initialize libsodium");
	if (interval < 1)
		return fail(err, err_size, -EINVAL, "the interval must be at least 1 second");
	randombytes_buf(k0, sizeof(k0));
	uint64_t start = wall_s();
	int r = save(path, start, interval, 0, k0, "", true, true);
	if (r == -EEXIST)
		return fail(err, err_size, r, "%s exists: it is not overwritten (remove it first)",
			    path);
	if (r) {
		sodium_memzero(k0, sizeof(k0));
		return fail(err, err_size, r, "cannot create %s: %s", path, strerror(-r));
	}
	sodium_bin2hex(hex, sizeof(hex), k0, sizeof(k0));
	snprintf(vkey, SEAL_VKEY_MAX, "tav1-%s-%" PRIu64 "-%" PRIu64, hex, start, interval);
	sodium_memzero(k0, sizeof(k0));
	sodium_memzero(hex, sizeof(hex));
	return 0;
}

/* Parses the key file's text; 0 or -EINVAL with the reason. */
static int parse_keyfile(char *text, struct sealer *s, char *err, size_t err_size)
{
	bool have_start = false, have_interval = false, have_epoch = false, have_key = false;
	char *save_ptr = NULL;
	char *line = strtok_r(text, "\n", &save_ptr);

	if (!line || strcmp(line, KEYFILE_MAGIC) != 0)
		return fail(err, err_size, -EINVAL, "not a tcp-audit sealing key (made by "
						    "tcp-audit seal-init)");
	while ((line = strtok_r(NULL, "\n", &save_ptr))) {
		char word[16], val[80], state[16];
		if (line[0] == '#')
			continue;
		int n = sscanf(line, "%15s %79s %15s", word, val, state);
		if (n >= 2 && strcmp(word, "start") == 0)
			have_start = sscanf(val, "%" SCNu64, &s->start) == 1;
		else if (n >= 2 && strcmp(word, "interval") == 0)
			have_interval = sscanf(val, "%" SCNu64, &s->interval) == 1 && s->interval > 0;
		else if (n >= 2 && strcmp(word, "epoch") == 0)
			have_epoch = sscanf(val, "%" SCNu64, &s->epoch) == 1;
		else if (n >= 2 && strcmp(word, "key") == 0)
			have_key = sodium_hex2bin(s->key, sizeof(s->key), val, strlen(val), NULL, NULL,
						  NULL) == 0 &&
				   strlen(val) == 2 * SEAL_KEY_BYTES;
		else if (n == 3 && strcmp(word, "run") == 0 && strlen(val) == SEAL_RUN_HEX - 1) {
			memcpy(s->after, val, SEAL_RUN_HEX);
			s->after_closed = strcmp(state, "closed") == 0;
		}
		sodium_memzero(val, sizeof(val));
	}
	if (!have_start || !have_interval || !have_epoch || !have_key)
		return fail(err, err_size, -EINVAL, "damaged: a start, interval, epoch or key line "
						    "is missing or wrong");
	return 0;
}

/* Moves s's key to the current epoch, and the file with it; s->mu held. */
static int evolve(struct sealer *s, bool force_save, uint64_t now)
{
	uint64_t epoch = now > s->start ? (now - s->start) / s->interval : 0;

	if (epoch <= s->epoch && !force_save)
		return 0;
	while (s->epoch < epoch) {
		step(s->key, s->key);
		s->epoch++;
	}
	return save(s->path, s->start, s->interval, s->epoch, s->key, s->run, false, false);
}

int sealer_open(struct sealer **out, const char *path, char *err, size_t err_size)
{
	char text[1024];
	int r;

	if (sodium_init() < 0)
		return fail(err, err_size, -EIO, "cannot initialize libsodium");
	struct sealer *s = sodium_malloc(sizeof(*s));
	if (!s)
		return fail(err, err_size, -ENOMEM, "out of memory");
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	s->path = strdup(path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = fail(err, err_size, -errno, "%s: %s%s", path, strerror(errno),
			 errno == ENOENT ? " (make it with tcp-audit seal-init)" : "");
		goto fail;
	}
	struct stat st;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	bool loose = fstat(fd, &st) == 0 && (st.st_mode & 077);
	close(fd);
	if (n < 0) {
		r = fail(err, err_size, -errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	text[n] = '\0';
	r = parse_keyfile(text, s, err, err_size);
	sodium_memzero(text, sizeof(text));
	if (r) {
		char reason[256];
		snprintf(reason, sizeof(reason), "%s", err);
		r = fail(err, err_size, r, "%s: %s", path, reason);
		goto fail;
	}
	if (loose)
		log_warning("%s can be read by others than its owner: chmod 600 it", path);
	uint8_t run[16];
	randombytes_buf(run, sizeof(run));
	sodium_bin2hex(s->run, sizeof(s->run), run, sizeof(run));
	r = evolve(s, true, wall_s()); /* also records this run as open */
	if (r) {
		r = fail(err, err_size, r, "cannot update %s: %s", path, strerror(-r));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	free(s->path);
	pthread_mutex_destroy(&s->mu);
	sodium_free(s);
	return r;
}

void sealer_tick(struct sealer *s)
{
	pthread_mutex_lock(&s->mu);
	int r = evolve(s, false, wall_s());
	pthread_mutex_unlock(&s->mu);
	if (r)
		log_error("cannot update the sealing key %s: %s", s->path, strerror(-r));
}

void sealer_close(struct sealer *s, bool clean)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	int r = evolve(s, false, wall_s());
	if (!r && clean)
		r = save(s->path, s->start, s->interval, s->epoch, s->key, s->run, true, false);
	pthread_mutex_unlock(&s->mu);
	if (r)
		log_error("cannot update the sealing key %s: %s", s->path, strerror(-r));
	free(s->path);
	pthread_mutex_destroy(&s->mu);
	sodium_free(s); /* zeroes the key */
}

struct seal_chain *seal_chain_new(struct sealer *s)
{
	struct seal_chain *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->s = s;
	memset(c->prev, '0', seal_mac_hex_len(SEAL_FORMAT));
	c->body = seal_body_new();
	if (!c->body) {
		free(c);
		return NULL;
	}
	return c;
}

void seal_chain_free(struct seal_chain *c)
{
	if (!c)
		return;
	free(c->text);
	free(c->fp);
	seal_body_free(c->body);
	free(c);
}

void seal_fp_key(const uint8_t key[SEAL_KEY_BYTES], const char run[SEAL_RUN_HEX],
		 uint64_t index, uint8_t out[16])
{
	char msg[sizeof(FP_CONTEXT) + SEAL_RUN_HEX + 24];
	int len = snprintf(msg, sizeof(msg), FP_CONTEXT " %s %" PRIu64, run, index);

	crypto_generichash(out, 16, (const uint8_t *)msg, (size_t)len, key, SEAL_KEY_BYTES);
}

/*
 * strnlen() of a name field (size a multiple of 16), 16 bytes a step: inline,
 * where the call to libc's cost more than the search in a 16-byte name.
 */
static inline size_t name_len(const char *name, size_t size)
{
#if defined(__SSE2__)
	for (size_t at = 0; at < size; at += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(name + at));
		unsigned zero = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128()));
		if (zero)
			return at + (size_t)__builtin_ctz(zero);
	}
	return size;
#else
	return strnlen(name, size);
#endif
}

_Static_assert(TCP_AUDIT_COMM_LEN % 16 == 0 && TCP_AUDIT_HOST_LEN % 16 == 0,
	       "name_len() reads whole 16-byte steps");

/* A name as its length and bytes; copies all size bytes (out has room). */
static size_t put_name(uint8_t *out, const char *name, size_t size)
{
	size_t n = name_len(name, size);

	out[0] = (uint8_t)n;
	memcpy(out + 1, name, size);
	return n + 1;
}

/*
 * The bytes of an event a fingerprint covers: what a store keeps of it,
 * without the padding that is most of the 256: the fields up to and with
 * `error` as they are (96 bytes), the addresses (the first 4 bytes of each
 * for AF_INET, else 16), each name as a length byte and its bytes to the
 * NUL, then gap_lost, then the machine where the event has one.  Returns the
 * length (at most sizeof(*ev)).
 */
static size_t canonical(const struct tcp_audit_event *ev, uint8_t *out)
{
	size_t len = offsetof(struct tcp_audit_event, saddr);

	memcpy(out, ev, len);
	if (ev->family == AF_INET) {
		memcpy(out + len, ev->saddr, 4);
		memcpy(out + len + 4, ev->daddr, 4);
		len += 8;
	} else {
		memcpy(out + len, ev->saddr, 16);
		memcpy(out + len + 16, ev->daddr, 16);
		len += 32;
	}
	len += put_name(out + len, ev->comm_on_cpu, sizeof(ev->comm_on_cpu));
	len += put_name(out + len, ev->owner_comm, sizeof(ev->owner_comm));
	len += put_name(out + len, ev->host, sizeof(ev->host));
	memcpy(out + len, &ev->gap_lost, sizeof(ev->gap_lost));
	len += sizeof(ev->gap_lost);
	/* only where there is one: the events of builds before it are covered as they were */
	if (ev->valid & TCP_AUDIT_HAS_MACHINE) {
		memcpy(out + len, &ev->machine, sizeof(ev->machine));
		len += sizeof(ev->machine);
	}
	return len;
}

uint64_t seal_fp(const uint8_t fp_key[16], const struct tcp_audit_event *ev)
{
	uint8_t buf[sizeof(*ev)], h[crypto_shorthash_BYTES];
	uint64_t v = 0;

	crypto_shorthash(h, buf, canonical(ev, buf), fp_key);
	for (int i = 0; i < 8; i++)
		v = v << 8 | h[i];
	return v;
}

uint32_t seal_crc(const struct tcp_audit_event *ev)
{
	uint8_t buf[sizeof(*ev)];

	return crc32c(buf, canonical(ev, buf));
}

size_t seal_mac_hex_len(uint64_t format)
{
	return format == 2 ? 64 : 2 * crypto_onetimeauth_BYTES;
}

size_t seal_fp_hex_len(uint64_t format)
{
	return format >= 4 ? 8 : 16;
}

/* A one-time key: BLAKE2b-256 under key of a context string and a seal's text. */
static void derive(const uint8_t key[SEAL_KEY_BYTES], const char *context, const char *head,
		   size_t len, uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, key, SEAL_KEY_BYTES, 32);
	crypto_generichash_update(&st, (const uint8_t *)context, strlen(context));
	crypto_generichash_update(&st, (const uint8_t *)head, len);
	crypto_generichash_final(&st, out, 32);
	sodium_memzero(&st, sizeof(st));
}

struct seal_body *seal_body_new(void)
{
	struct seal_body *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	b->used = b->n = 0;
	b->ctx = EVP_CIPHER_CTX_new();
	if (!b->ctx) {
		free(b);
		return NULL;
	}
	return b;
}

void seal_body_free(struct seal_body *b)
{
	if (!b)
		return;
	EVP_CIPHER_CTX_free(b->ctx); /* cleanses the key schedule */
	free(b);
}

int seal_body_key(struct seal_body *b, const uint8_t key[SEAL_KEY_BYTES], const char *head,
		  size_t len)
{
	uint8_t k[32];

	derive(key, BODY_CONTEXT, head, len, k);
	int ok = EVP_EncryptInit_ex(b->ctx, EVP_aes_256_gcm(), NULL, k, NULL);
	sodium_memzero(k, sizeof(k));
	b->used = b->n = 0;
	return ok == 1 ? 0 : -EIO;
}

void seal_body_add(struct seal_body *b, const struct tcp_audit_event *ev)
{
	size_t len = canonical(ev, b->buf + b->used);

	b->at[b->n] = (uint16_t)b->used;
	b->len[b->n++] = (uint16_t)len;
	b->used += len;
}

/* The fingerprints of the chunk's events, three at a time. */
static void body_fps(const struct seal_body *b, uint32_t *fp)
{
	size_t i = 0;

	for (; i + 3 <= b->n; i += 3) {
		const void *p[3] = {b->buf + b->at[i], b->buf + b->at[i + 1], b->buf + b->at[i + 2]};
		size_t len[3] = {b->len[i], b->len[i + 1], b->len[i + 2]};
		crc32c_x3(p, len, fp + i);
	}
	for (; i < b->n; i++)
		fp[i] = crc32c(b->buf + b->at[i], b->len[i]);
}

int seal_body_tag(struct seal_body *b, uint64_t chunk, char out[SEAL_TAG_HEX], uint32_t *fp)
{
	uint8_t iv[12] = {0}, tag[16], none[16];
	uint64_t be = htobe64(chunk);
	int len, ok;

	if (fp)
		body_fps(b, fp);
	memcpy(iv + 4, &be, 8);
	/* GMAC: AES-256-GCM with the chunk's bytes as its only (additional) data */
	ok = EVP_EncryptInit_ex(b->ctx, NULL, NULL, NULL, iv) == 1 &&
	     (b->used == 0 || EVP_EncryptUpdate(b->ctx, NULL, &len, b->buf, (int)b->used) == 1) &&
	     EVP_EncryptFinal_ex(b->ctx, none, &len) == 1 &&
	     EVP_CIPHER_CTX_ctrl(b->ctx, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag) == 1;
	b->used = b->n = 0;
	if (!ok)
		return -EIO;
	for (int half = 0; half < 2; half++) { /* the tag's bytes in order, as two big-endian halves */
		uint64_t v;
		memcpy(&v, tag + 8 * half, 8);
		format_hex64(be64toh(v), out + 16 * half);
	}
	return 0;
}

void seal_body_done(struct seal_body *b)
{
	EVP_CIPHER_CTX_reset(b->ctx); /* the one-time key's schedule, cleansed */
	b->used = b->n = 0;
}

/* Packs up to 64 of the n fingerprints at fp into buf, big-endian, of width bytes. */
static size_t pack_fps(uint8_t buf[64 * 8], const uint64_t *fp, size_t n, size_t width)
{
	size_t k = n < 64 ? n : 64;

	for (size_t i = 0; i < k; i++) {
		uint64_t be = htobe64(fp[i] << (64 - 8 * width));
		memcpy(buf + i * width, &be, width);
	}
	return k;
}

/* Format 2's MAC: BLAKE2b-256 under key of the seal's text and its fingerprints. */
static void mac_blake2b(const uint8_t key[SEAL_KEY_BYTES], const char *head, size_t len,
			const uint64_t *fp, size_t n, uint8_t mac[32])
{
	crypto_generichash_state st;
	uint8_t buf[64 * 8];

	crypto_generichash_init(&st, key, SEAL_KEY_BYTES, 32);
	crypto_generichash_update(&st, (const uint8_t *)head, len);
	for (size_t k; n; fp += k, n -= k) {
		k = pack_fps(buf, fp, n, 8);
		crypto_generichash_update(&st, buf, k * 8);
	}
	crypto_generichash_final(&st, mac, 32);
	sodium_memzero(&st, sizeof(st));
}

/*
 * Formats 3 and 4's MAC: Poly1305 of the same bytes (the fingerprints width
 * bytes each) under a one-time key derived from the text.
 */
static void mac_poly1305(const uint8_t key[SEAL_KEY_BYTES], const char *head, size_t len,
			 const uint64_t *fp, size_t n, size_t width,
			 uint8_t mac[crypto_onetimeauth_BYTES])
{
	crypto_onetimeauth_state st;
	uint8_t buf[64 * 8], otk[crypto_onetimeauth_KEYBYTES];

	derive(key, MAC_CONTEXT, head, len, otk);
	crypto_onetimeauth_init(&st, otk);
	sodium_memzero(otk, sizeof(otk));
	crypto_onetimeauth_update(&st, (const uint8_t *)head, len);
	for (size_t k; n; fp += k, n -= k) {
		k = pack_fps(buf, fp, n, width);
		crypto_onetimeauth_update(&st, buf, k * width);
	}
	crypto_onetimeauth_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
}

void seal_mac_hex(uint64_t format, const uint8_t key[SEAL_KEY_BYTES], const char *head,
		  size_t len, const uint64_t *fp, size_t n, char out[SEAL_MAC_HEX_MAX + 1])
{
	uint8_t mac[32];

	if (format == 2)
		mac_blake2b(key, head, len, fp, n, mac);
	else
		mac_poly1305(key, head, len, fp, n, seal_fp_hex_len(format) / 2, mac);
	sodium_bin2hex(out, SEAL_MAC_HEX_MAX + 1, mac, seal_mac_hex_len(format) / 2);
}

int seal_chain_make(struct seal_chain *c, const struct tcp_audit_event *ev, size_t n, bool last,
		    struct tcp_audit_seal *out)
{
	struct sealer *s = c->s;
	size_t chunks = (n + SEAL_CHUNK - 1) / SEAL_CHUNK;
	size_t need = SEAL_FIXED_MAX + n * seal_fp_hex_len(SEAL_FORMAT) + chunks * SEAL_TAG_HEX;
	uint8_t key[SEAL_KEY_BYTES];
	char stamp[RFC3339_NS_LEN + 1];
	int r;

	if (need > c->cap) {
		char *t = realloc(c->text, need);
		if (!t)
			return -ENOMEM;
		c->text = t;
		c->cap = need;
	}
	if (n > c->fp_cap) {
		uint64_t *f = realloc(c->fp, n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		c->fp = f;
		c->fp_cap = n;
	}
	uint64_t now = wall_ns();
	pthread_mutex_lock(&s->mu);
	r = evolve(s, false, now / 1000000000u);
	memcpy(key, s->key, sizeof(key));
	uint64_t epoch = s->epoch;
	pthread_mutex_unlock(&s->mu);
	if (r)
		log_error("cannot update the sealing key %s: %s", s->path, strerror(-r));
	stamp[format_rfc3339_ns(now, stamp)] = '\0';
	char *p = c->text;
	p += sprintf(p,
		     "{\"kind\":\"seal\",\"v\":%d,\"run\":\"%s\",\"index\":%" PRIu64
		     ",\"epoch\":%" PRIu64 ",\"time\":\"%s\",\"time_ns\":%" PRIu64
		     ",\"count\":%zu,\"last\":%s",
		     SEAL_FORMAT, s->run, c->index, epoch, stamp, now, n, last ? "true" : "false");
	if (c->index == 0)
		p += sprintf(p, ",\"after\":\"%s\",\"after_closed\":%s", s->after[0] ? s->after : "",
			     s->after_closed ? "true" : "false");
	p += sprintf(p, ",\"prev\":\"%s\",\"body\":\"", c->prev);
	/* the body's tags (its key from the text so far), then the fingerprints */
	r = seal_body_key(c->body, key, c->text, (size_t)(p - c->text));
	char *tags = p;
	p += chunks * SEAL_TAG_HEX;
	p += sprintf(p, "\",\"fp\":\"");
	size_t head = (size_t)(p - c->text);
	for (size_t k = 0; !r && k < chunks; k++) {
		size_t from = k * SEAL_CHUNK, to = from + SEAL_CHUNK < n ? from + SEAL_CHUNK : n;
		uint32_t fp[SEAL_CHUNK];
		for (size_t i = from; i < to; i++)
			seal_body_add(c->body, &ev[i]);
		r = seal_body_tag(c->body, k, tags + k * SEAL_TAG_HEX, fp);
		for (size_t i = from; i < to; i++) {
			c->fp[i] = fp[i - from];
			format_hex32(fp[i - from], p);
			p += 8;
		}
	}
	seal_body_done(c->body);
	if (r) {
		sodium_memzero(key, sizeof(key));
		return r;
	}
	seal_mac_hex(SEAL_FORMAT, key, c->text, head, c->fp, n, c->mac);
	p += sprintf(p, "\",\"mac\":\"%s\"}", c->mac);
	sodium_memzero(key, sizeof(key));
	*out = (struct tcp_audit_seal){
		.text = c->text,
		.len = (size_t)(p - c->text),
		.run = s->run,
		.index = c->index,
		.time_ns = now,
		.count = (uint32_t)n,
		.last = last,
	};
	return 0;
}

void seal_chain_advance(struct seal_chain *c)
{
	memcpy(c->prev, c->mac, sizeof(c->prev));
	c->index++;
}

/* ------------------------------------------------------------------------ */

int seal_vkey_parse(const char *text, struct seal_vkey *out)
{
	char hex[2 * SEAL_KEY_BYTES + 1];
	int end = 0;

	if (sscanf(text, "tav1-%64[0-9a-f]-%" SCNu64 "-%" SCNu64 "%n", hex, &out->start,
		   &out->interval, &end) != 3 ||
	    text[end] != '\0' || strlen(hex) != 2 * SEAL_KEY_BYTES || out->interval == 0)
		return -EINVAL;
	if (sodium_init() < 0 ||
	    sodium_hex2bin(out->k0, sizeof(out->k0), hex, strlen(hex), NULL, NULL, NULL) != 0)
		return -EINVAL;
	sodium_memzero(hex, sizeof(hex));
	return 0;
}

void seal_keys_init(struct seal_keys *ks, const struct seal_vkey *vk)
{
	ks->vk = vk;
	ks->epoch = 0;
	memcpy(ks->key, vk->k0, SEAL_KEY_BYTES);
}

const uint8_t *seal_keys_at(struct seal_keys *ks, uint64_t epoch)
{
	if (epoch < ks->epoch)
		seal_keys_init(ks, ks->vk);
	while (ks->epoch < epoch) {
		step(ks->key, ks->key);
		ks->epoch++;
	}
	return ks->key;
}
