/* SPDX-License-Identifier: MIT */
/*
 * Forward-secure seals (--seal KEYFILE): every batch a sink writes is
 * followed, in the same store, by a seal record that only the key of the
 * batch's time could make.
 *
 * The key evolves at fixed intervals (epochs): k(e+1) = BLAKE2b(k(e)), and the
 * key file holds only the current one; an older key is overwritten in memory
 * and in the file as soon as its epoch is over.  Whoever reads the file at
 * time t can therefore seal nothing for an epoch before t.  The verification
 * key (printed once by seal-init, to be kept off the host) is k(0) with the
 * epochs' start and length: from it a verifier derives every k(e).
 *
 * A seal record is one JSON object (the jsonl sink writes it as a line with
 * "kind":"seal"):
 *
 *   {"kind":"seal","v":4,"run":R,"index":I,"epoch":E,"time":T,"time_ns":N,
 *    "count":C,"last":B,["after":R0,"after_closed":B0,]"prev":P,"body":G,
 *    "fp":F,"mac":M}
 *
 * run: 32 hex digits, random per tcp-audit run; index: the seal's number in
 * the run's chain for this sink, from 0; count: the events of the batch it
 * follows; last: the run's closing seal (count 0) at a clean stop; after (on
 * index 0 only): the previous run of this key file and whether it stopped
 * cleanly, so a crash is recorded by the run after it; prev: the previous
 * seal's mac in the chain (zeros for index 0).
 *
 * Each event is covered by its canonical bytes: what a store keeps of it,
 * without the padding that is most of its 256 (seal.c, canonical(): the
 * machine only where the event has one).
 *
 * body: per chunk of 64 events of the batch (the last one shorter), 32 hex
 * digits: the GMAC tag (AES-256-GCM, no plaintext, the chunk's canonical
 * bytes in batch order as its additional data, IV: 4 zero bytes and the
 * chunk's number as 8 big-endian) under a one-time key: keyed BLAKE2b-256
 * under k(E) of "tcp-audit seal body" and the text up to and with
 * '"body":"' (which holds the run, the index and the time in ns, so no two
 * seals share a key).  This is what proves the events.
 *
 * fp: per event, in batch order, 8 hex digits: the CRC-32C of its canonical
 * bytes.  Not keyed: it names an event deleted, altered or inserted; an
 * alteration made to keep the CRC is still caught by its chunk's tag.
 *
 * mac: 32 hex digits, Poly1305 of the text up to and with '"fp":"', then
 * the fingerprints as 4 bytes each (big endian, as their digits read), under
 * a one-time key: keyed BLAKE2b-256 under k(E) of "tcp-audit seal mac" and
 * that text.  It proves the seal itself (its place in the chain, count,
 * time, body tags and fingerprints) without its events, so that deletions
 * and insertions are named against it.
 *
 * Cost on this kind of VM, an event of ~150 canonical bytes: GMAC ~18 ns
 * (AES-NI and PCLMULQDQ through libcrypto), the CRC ~4 ns (SSE4.2, three
 * events' chains side by side), Poly1305 of its 4 bytes ~1 ns; making a
 * whole seal of 4,096 events 36-38 ns an event with the events in cache,
 * ~70 with them cold (format 3: 63-72, ~90).
 *
 * Formats verify still reads: 3 (builds of 2026-12-03 to -05): no body; fp
 * is 16 hex digits per event, SipHash-2-4 under a key derived from k(E), the
 * run and the index (keyed BLAKE2b-128 of "tcp-audit seal fp R I"), so it
 * alone proves the event; mac as format 4's with 8 bytes a fingerprint.
 * 2 (builds of 2026-12-02 and -03): as 3, but mac is 64 hex digits, keyed
 * BLAKE2b-256 under k(E) of the same bytes.  Format 1, of the builds of
 * 2026-12-01, fingerprinted all 256 bytes, MACed the text and chained on its
 * digest: not read.
 */
#ifndef TCP_AUDIT_SEAL_H
#define TCP_AUDIT_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcp-audit/plugin.h>

#define SEAL_FORMAT 4        /* the seal records' "v" this build writes */
#define SEAL_FORMAT_OLDEST 2 /* the oldest verify reads */
#define SEAL_MAC_HEX_MAX 64  /* a MAC's hex digits, at most (format 2) */
#define SEAL_KEY_BYTES 32
#define SEAL_RUN_HEX 33          /* 32 hex digits and a NUL */
#define SEAL_DEFAULT_INTERVAL 900 /* s: an epoch, as journald's sealing */
/* "tav1-" 64 hex "-" start "-" interval */
#define SEAL_VKEY_MAX 128

struct sealer;
struct seal_chain;

/*
 * seal-init: creates path (0600, never over an existing file) with a new
 * random key, epochs of interval seconds from now; writes the verification
 * key into vkey.  Returns 0 or -errno with a one-line reason in err.
 */
int seal_key_create(const char *path, uint64_t interval, char vkey[SEAL_VKEY_MAX], char *err,
		    size_t err_size);

/*
 * --seal: loads the key file, moves its key to the current epoch and records
 * this run as open in it.  Returns 0 or -errno with a reason in err.
 */
int sealer_open(struct sealer **out, const char *path, char *err, size_t err_size);

/* Moves the key to the current epoch (once a second is enough). */
void sealer_tick(struct sealer *s);

/* clean: every sink stored its closing seal; records the run as closed. */
void sealer_close(struct sealer *s, bool clean);

/* One chain per sink. */
struct seal_chain *seal_chain_new(struct sealer *s);
void seal_chain_free(struct seal_chain *c);

/*
 * The seal of the next batch (n events; n == 0 and last: the closing seal)
 * into out.  The same seal is handed again while the batch is retried; once
 * the store has it, seal_chain_advance().
 */
int seal_chain_make(struct seal_chain *c, const struct tcp_audit_event *ev, size_t n, bool last,
		    struct tcp_audit_seal *out);
void seal_chain_advance(struct seal_chain *c);
/* The text out holds is the chain's; freed with it. */

/* ------------------------------------------------------------------------ */
/* Verifying                                                                 */

struct seal_vkey {
	uint8_t k0[SEAL_KEY_BYTES];
	uint64_t start, interval;
};

/* Parses a verification key; 0 or -EINVAL. */
int seal_vkey_parse(const char *text, struct seal_vkey *out);

/* k(epoch) from the verification key; walks forward from a cached key. */
struct seal_keys {
	const struct seal_vkey *vk;
	uint64_t epoch;
	uint8_t key[SEAL_KEY_BYTES];
};
void seal_keys_init(struct seal_keys *ks, const struct seal_vkey *vk);
const uint8_t *seal_keys_at(struct seal_keys *ks, uint64_t epoch);

/* Formats 2 and 3: the per-batch fingerprint key and one event's fingerprint. */
void seal_fp_key(const uint8_t key[SEAL_KEY_BYTES], const char run[SEAL_RUN_HEX],
		 uint64_t index, uint8_t out[16]);
uint64_t seal_fp(const uint8_t fp_key[16], const struct tcp_audit_event *ev);

/* Format 4: an event's fingerprint (the CRC-32C of its canonical bytes). */
uint32_t seal_crc(const struct tcp_audit_event *ev);

/*
 * Format 4's body tags: seal_body_key() with the seal's text up to and with
 * '"body":"'; per chunk, seal_body_add() its events in order (at most
 * SEAL_CHUNK), then seal_body_tag() writes the chunk's tag as 32 hex digits
 * (no NUL) and, with fp, the events' fingerprints, and starts the next
 * chunk; seal_body_done() at the end of a seal.  0 or -EIO (libcrypto
 * failed).
 */
#define SEAL_CHUNK 64
#define SEAL_TAG_HEX 32
struct seal_body;
struct seal_body *seal_body_new(void);
void seal_body_free(struct seal_body *b);
int seal_body_key(struct seal_body *b, const uint8_t key[SEAL_KEY_BYTES], const char *head,
		  size_t len);
void seal_body_add(struct seal_body *b, const struct tcp_audit_event *ev);
int seal_body_tag(struct seal_body *b, uint64_t chunk, char out[SEAL_TAG_HEX], uint32_t *fp);
void seal_body_done(struct seal_body *b);

/* The hex digits of a MAC, and of a fingerprint, of format (2 to 4). */
size_t seal_mac_hex_len(uint64_t format);
size_t seal_fp_hex_len(uint64_t format);

/*
 * A seal's MAC of format (2 to 4) under key, as hex + NUL: of head (its text
 * up to and with '"fp":"', len bytes) and its n fingerprints.
 */
void seal_mac_hex(uint64_t format, const uint8_t key[SEAL_KEY_BYTES], const char *head,
		  size_t len, const uint64_t *fp, size_t n, char out[SEAL_MAC_HEX_MAX + 1]);

/* ------------------------------------------------------------------------ */
/* The commands (verify.c)                                                   */

/* tcp-audit seal-init KEYFILE [--interval SECONDS]: exit status */
int seal_init_main(int argc, char **argv);

/* tcp-audit verify SOURCE --verify-key KEY: 0 all checks, 1 problems found, 2 usage */
int verify_main(int argc, char **argv);

#endif
