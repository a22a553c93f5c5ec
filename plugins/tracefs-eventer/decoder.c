// SPDX-License-Identifier: MIT
#include "decoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <traceevent/event-parse.h>

/* a page: u64 timestamp, a long of commit (size and flags), then the data */
#define PAGE_HEADER (8 + sizeof(long))
#define COMMIT_SIZE_MASK ((1ul << 27) - 1)
#define SLACK 64 /* zeroed bytes after a page: a length word may sit past the end */

static int find(struct tep_event *ev, const char *name, struct ta_field *f, bool required,
		char *err, size_t err_size)
{
	struct tep_format_field *field = tep_find_any_field(ev, name);

	f->offset = f->size = 0;
	if (!field) {
		if (required)
			snprintf(err, err_size, "%s:%s has no field %s", ev->system, ev->name, name);
		return required ? -EINVAL : 0;
	}
	if (field->offset < 0 || field->size <= 0 || field->offset + field->size > 4096) {
		snprintf(err, err_size, "%s:%s: field %s has a strange place (%d, %d bytes)",
			 ev->system, ev->name, name, field->offset, field->size);
		return -EINVAL;
	}
	f->offset = field->offset;
	f->size = field->size;
	return 0;
}

static int need_size(const struct ta_field *f, int size, const char *name, char *err,
		     size_t err_size)
{
	if (f->size && f->size != size) {
		snprintf(err, err_size, "field %s is %d bytes, not %d", name, f->size, size);
		return -EINVAL;
	}
	return 0;
}

int ta_decoder_init(struct ta_decoder *d, struct tep_handle *tep, char *err, size_t err_size)
{
	struct tep_event *ev = tep_find_event_by_name(tep, "sock", "inet_sock_set_state");
	int r;

	memset(d, 0, sizeof(*d));
	if (!ev) {
		ev = tep_find_event_by_name(tep, "tcp", "tcp_set_state");
		d->legacy = true;
	}
	if (!ev) {
		snprintf(err, err_size, "the kernel has neither sock:inet_sock_set_state nor "
					"tcp:tcp_set_state");
		return -ENOENT;
	}
	d->tep = tep;
	d->event_id = ev->id;
	if ((r = find(ev, "common_pid", &d->pid, true, err, err_size)) ||
	    (r = find(ev, "oldstate", &d->oldstate, true, err, err_size)) ||
	    (r = find(ev, "newstate", &d->newstate, true, err, err_size)) ||
	    (r = find(ev, "sport", &d->sport, true, err, err_size)) ||
	    (r = find(ev, "dport", &d->dport, true, err, err_size)) ||
	    (r = find(ev, "family", &d->family, !d->legacy, err, err_size)) ||
	    (r = find(ev, "protocol", &d->protocol, !d->legacy, err, err_size)) ||
	    (r = find(ev, "saddr", &d->saddr, true, err, err_size)) ||
	    (r = find(ev, "daddr", &d->daddr, true, err, err_size)) ||
	    (r = find(ev, "saddr_v6", &d->saddr_v6, true, err, err_size)) ||
	    (r = find(ev, "daddr_v6", &d->daddr_v6, true, err, err_size)))
		return r;
	if ((r = need_size(&d->saddr, 4, "saddr", err, err_size)) ||
	    (r = need_size(&d->daddr, 4, "daddr", err, err_size)) ||
	    (r = need_size(&d->saddr_v6, 16, "saddr_v6", err, err_size)) ||
	    (r = need_size(&d->daddr_v6, 16, "daddr_v6", err, err_size)))
		return r;
	const struct ta_field *all[] = {&d->pid,   &d->oldstate, &d->newstate, &d->sport,
					&d->dport, &d->family,   &d->protocol, &d->saddr,
					&d->daddr, &d->saddr_v6, &d->daddr_v6};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (all[i]->size > 8 && all[i]->size != 16) {
			snprintf(err, err_size, "a field of %d bytes where a number is expected",
				 all[i]->size);
			return -EINVAL;
		}
		if ((size_t)(all[i]->offset + all[i]->size) > d->record_min)
			d->record_min = (size_t)(all[i]->offset + all[i]->size);
	}
	d->page_size = tep_get_sub_buffer_size(tep);
	if (d->page_size <= 0)
		d->page_size = tep_get_page_size(tep);
	if (d->page_size <= (int)PAGE_HEADER || d->page_size > (1 << 20)) {
		snprintf(err, err_size, "strange trace buffer page size %d", d->page_size);
		return -EINVAL;
	}
	d->page = calloc(1, (size_t)d->page_size + SLACK);
	if (!d->page) {
		ta_decoder_fini(d);
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

void ta_decoder_fini(struct ta_decoder *d)
{
	free(d->page);
	d->page = NULL;
}

static uint64_t number(const struct ta_decoder *d, const uint8_t *rec, const struct ta_field *f)
{
	return f->size ? tep_read_number(d->tep, rec + f->offset, f->size) : 0;
}

static bool v4_mapped(const uint8_t *a)
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

/* 1: an event in ev; 0: not ours (other event, protocol or family) */
static int decode(const struct ta_decoder *d, const uint8_t *rec, struct tcp_audit_event *ev)
{
	if ((int)tep_read_number(d->tep, rec, 2) != d->event_id)
		return 0;
	int family;
	if (d->family.size) {
		family = (int)number(d, rec, &d->family);
	} else {
		/* tcp_set_state: IPv4 sockets store a v4-mapped address in saddr_v6 */
		family = v4_mapped(rec + d->saddr_v6.offset) ? AF_INET : AF_INET6;
	}
	if (d->protocol.size && number(d, rec, &d->protocol) != IPPROTO_TCP)
		return 0;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	uint64_t old_state = number(d, rec, &d->oldstate);
	uint64_t new_state = number(d, rec, &d->newstate);
	if (old_state < 1 || old_state > 12 || new_state < 1 || new_state > 12)
		return 0; /* not a TCP state: not a record we understand */

	memset(ev, 0, sizeof(*ev));
	ev->family = (uint16_t)family;
	ev->old_state = (uint8_t)old_state;
	ev->new_state = (uint8_t)new_state;
	ev->sport = (uint16_t)number(d, rec, &d->sport);
	ev->dport = (uint16_t)number(d, rec, &d->dport);
	if (family == AF_INET) {
		memcpy(ev->saddr, rec + d->saddr.offset, 4);
		memcpy(ev->daddr, rec + d->daddr.offset, 4);
	} else {
		memcpy(ev->saddr, rec + d->saddr_v6.offset, 16);
		memcpy(ev->daddr, rec + d->daddr_v6.offset, 16);
	}
	ev->tid_on_cpu = (uint32_t)number(d, rec, &d->pid);
	ev->valid = TCP_AUDIT_HAS_TID;
	return 1;
}

static uint32_t u32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * The page is walked here, by the ring buffer's own rules (the kernel's
 * rb_event_length() and rb_update_read_stamp()), not with libtraceevent's
 * kbuffer: kbuffer (1.7) loops for ever on a record whose length word takes
 * it backwards, which the fuzz target found.  Every step must move forward
 * and stay inside the data; the first that does not ends the page as damaged
 * (what came before it is kept).
 */
#define TYPE_PADDING 29
#define TYPE_TIME_EXTEND 30
#define TYPE_TIME_STAMP 31
#define TS_SHIFT 27
#define TS_MSB (0xf8ull << 56) /* absolute stamps lack the top 5 bits */

int ta_decoder_page(struct ta_decoder *d, const void *page, size_t len, ta_record_fn fn,
		    void *ctx)
{
	size_t size = (size_t)d->page_size;
	uint8_t *buf = d->page;
	int n = 0;

	if (len > size || len < PAGE_HEADER)
		return -EINVAL;
	memcpy(buf, page, len);
	memset(buf + len, 0, size + SLACK - len);

	uint64_t ts;
	unsigned long commit;
	memcpy(&ts, buf, sizeof(ts));
	memcpy(&commit, buf + 8, sizeof(commit));
	size_t data_size = commit & COMMIT_SIZE_MASK;
	if (data_size > len - PAGE_HEADER)
		return -EINVAL;
	const uint8_t *data = buf + PAGE_HEADER;

	size_t pos = 0;
	while (pos < data_size) {
		uint32_t word = u32_at(data + pos), type_len = word & 31, delta = word >> 5;
		const uint8_t *rec = NULL;
		size_t step, rec_len = 0;

		if (type_len == TYPE_PADDING) {
			if (delta == 0)
				break; /* the rest of the page is padding */
			step = 4 + (size_t)u32_at(data + pos + 4);
		} else if (type_len == TYPE_TIME_EXTEND) {
			ts += ((uint64_t)u32_at(data + pos + 4) << TS_SHIFT) + delta;
			step = 8;
		} else if (type_len == TYPE_TIME_STAMP) {
			uint64_t abs = ((uint64_t)u32_at(data + pos + 4) << TS_SHIFT) | delta;
			ts = abs | (ts & TS_MSB);
			step = 8;
		} else if (type_len == 0) { /* a length word, itself included, then data */
			uint32_t length = u32_at(data + pos + 4);
			if (length < 4)
				return -EINVAL;
			step = 4 + (((size_t)length + 3) & ~(size_t)3);
			rec = data + pos + 8;
			rec_len = length - 4;
			ts += delta;
		} else {
			step = 4 + 4 * (size_t)type_len;
			rec = data + pos + 4;
			rec_len = 4 * (size_t)type_len;
			ts += delta;
		}
		if (step < 4 || step > data_size - pos)
			return -EINVAL; /* a length that leaves the page: damaged here */
		if (rec && rec_len >= d->record_min) {
			struct tcp_audit_event ev;
			if (decode(d, rec, &ev) == 1) {
				int fr = fn(ctx, &ev, ts);
				if (fr < 0)
					return fr;
				n++;
			}
		}
		pos += step;
	}
	return n;
}
