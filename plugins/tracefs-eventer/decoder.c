// SPDX-License-Identifier: MIT
#include "decoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <arpa/inet.h>
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

/* The largest end of the fields, or -1 if one is not a number's size (or 16 or 28). */
static long fields_end(const struct ta_field *const *all, size_t n)
{
	long end = 0;

	for (size_t i = 0; i < n; i++) {
		if (all[i]->size > 8 && all[i]->size != 16 && all[i]->size != 28)
			return -1;
		if (all[i]->offset + all[i]->size > end)
			end = all[i]->offset + all[i]->size;
	}
	return end;
}

/* A reset event's fields, if tep has the event (f->id stays 0 if not). */
static int reset_fields(struct tep_handle *tep, const char *name, struct ta_reset_fields *f,
			char *err, size_t err_size)
{
	struct tep_event *ev = tep_find_event_by_name(tep, "tcp", name);
	int r;

	memset(f, 0, sizeof(*f));
	if (!ev)
		return 0;
	if ((r = find(ev, "skaddr", &f->skaddr, true, err, err_size)) ||
	    (r = find(ev, "state", &f->state, false, err, err_size)) ||
	    (r = find(ev, "reason", &f->reason, false, err, err_size)) ||
	    (r = find(ev, "saddr", &f->saddr, true, err, err_size)) ||
	    (r = find(ev, "daddr", &f->daddr, true, err, err_size)) ||
	    (r = find(ev, "sock_cookie", &f->cookie, false, err, err_size)))
		return r;
	f->sockaddrs = f->saddr.size == 28;
	if (!f->sockaddrs &&
	    ((r = find(ev, "sport", &f->sport, true, err, err_size)) ||
	     (r = find(ev, "dport", &f->dport, true, err, err_size)) ||
	     (r = find(ev, "family", &f->family, false, err, err_size)) ||
	     (r = find(ev, "saddr_v6", &f->saddr_v6, true, err, err_size)) ||
	     (r = find(ev, "daddr_v6", &f->daddr_v6, true, err, err_size)) ||
	     (r = need_size(&f->saddr, 4, "saddr", err, err_size)) ||
	     (r = need_size(&f->daddr, 4, "daddr", err, err_size)) ||
	     (r = need_size(&f->saddr_v6, 16, "saddr_v6", err, err_size)) ||
	     (r = need_size(&f->daddr_v6, 16, "daddr_v6", err, err_size))))
		return r;
	if (f->sockaddrs && (r = need_size(&f->daddr, 28, "daddr", err, err_size)))
		return r;
	const struct ta_field *all[] = {&f->skaddr, &f->state,  &f->reason,   &f->sport,
					&f->dport,  &f->family, &f->saddr,    &f->daddr,
					&f->saddr_v6, &f->daddr_v6, &f->cookie};
	long end = fields_end(all, sizeof(all) / sizeof(all[0]));
	if (end < 0) {
		snprintf(err, err_size, "tcp:%s: a field of an odd size", name);
		return -EINVAL;
	}
	f->record_min = (size_t)end;
	f->id = ev->id;
	return 0;
}

/*
 * The kernel's names of its reset reasons, from the event's print format:
 * __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, ...).
 */
static void find_reasons(struct reset_reason_map *m, const struct tep_print_arg *arg)
{
	for (; arg; arg = arg->next) {
		if (arg->type == TEP_PRINT_SYMBOL && arg->symbol.field &&
		    arg->symbol.field->type == TEP_PRINT_FIELD && arg->symbol.field->field.name &&
		    strcmp(arg->symbol.field->field.name, "reason") == 0) {
			for (const struct tep_print_flag_sym *s = arg->symbol.symbols; s; s = s->next) {
				char *end;
				long v = s->value ? strtol(s->value, &end, 0) : -1;
				if (s->value && !*end && s->str)
					reset_reason_map_add(m, v, s->str, strlen(s->str));
			}
		} else if (arg->type == TEP_PRINT_OP) {
			find_reasons(m, arg->op.left);
			find_reasons(m, arg->op.right);
		}
	}
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
	if ((r = find(ev, "skaddr", &d->skaddr, false, err, err_size)) ||
	    (r = find(ev, "common_pid", &d->pid, true, err, err_size)) ||
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
					&d->daddr, &d->saddr_v6, &d->daddr_v6, &d->skaddr};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (all[i]->size > 8 && all[i]->size != 16) {
			snprintf(err, err_size, "a field of %d bytes where a number is expected",
				 all[i]->size);
			return -EINVAL;
		}
		if ((size_t)(all[i]->offset + all[i]->size) > d->record_min)
			d->record_min = (size_t)(all[i]->offset + all[i]->size);
	}
	if ((r = reset_fields(tep, "tcp_send_reset", &d->sent, err, err_size)) ||
	    (r = reset_fields(tep, "tcp_receive_reset", &d->received, err, err_size)))
		return r;
	reset_reason_map_init(&d->reasons);
	if (d->sent.id)
		find_reasons(&d->reasons, tep_find_event(tep, d->sent.id)->print_fmt.args);
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

/* An address and port from a struct sockaddr_in or sockaddr_in6 (28 bytes); its family. */
static int from_sockaddr(const uint8_t *sa, uint8_t addr[16], uint16_t *port)
{
	uint16_t family, be_port;

	memcpy(&family, sa, 2);
	memcpy(&be_port, sa + 2, 2);
	*port = ntohs(be_port);
	if (family == AF_INET)
		memcpy(addr, sa + 4, 4);
	else if (family == AF_INET6)
		memcpy(addr, sa + 8, 16);
	return family;
}

static int decode_reset(const struct ta_decoder *d, const struct ta_reset_fields *f,
			const uint8_t *rec, size_t rec_len, struct tcp_audit_event *ev,
			uint64_t *skaddr)
{
	if (rec_len < f->record_min)
		return 0;
	memset(ev, 0, sizeof(*ev));
	ev->kind = TCP_AUDIT_KIND_RESET;
	ev->reset_direction = f == &d->sent ? TCP_AUDIT_RESET_SENT : TCP_AUDIT_RESET_RECEIVED;
	if (f->sockaddrs) {
		int family = from_sockaddr(rec + f->saddr.offset, ev->saddr, &ev->sport);
		if (from_sockaddr(rec + f->daddr.offset, ev->daddr, &ev->dport) != family)
			return 0;
		ev->family = (uint16_t)family;
	} else {
		int family = f->family.size ? (int)number(d, rec, &f->family)
			     : v4_mapped(rec + f->saddr_v6.offset) ? AF_INET : AF_INET6;
		ev->family = (uint16_t)family;
		ev->sport = (uint16_t)number(d, rec, &f->sport);
		ev->dport = (uint16_t)number(d, rec, &f->dport);
		if (family == AF_INET) {
			memcpy(ev->saddr, rec + f->saddr.offset, 4);
			memcpy(ev->daddr, rec + f->daddr.offset, 4);
		} else {
			memcpy(ev->saddr, rec + f->saddr_v6.offset, 16);
			memcpy(ev->daddr, rec + f->daddr_v6.offset, 16);
		}
	}
	if (ev->family != AF_INET && ev->family != AF_INET6)
		return 0;
	uint64_t state = number(d, rec, &f->state);
	if (state <= 12)
		ev->old_state = ev->new_state = (uint8_t)state;
	if (f->reason.size) {
		uint64_t reason = number(d, rec, &f->reason);
		if (reason < 256 && d->reasons.ours[reason] != RESET_REASON_NONE) {
			ev->reset_reason = d->reasons.ours[reason];
			ev->valid |= TCP_AUDIT_HAS_RESET_REASON;
		}
	}
	ev->sock_cookie = number(d, rec, &f->cookie);
	if (ev->sock_cookie)
		ev->valid |= TCP_AUDIT_HAS_COOKIE;
	ev->tid_on_cpu = (uint32_t)number(d, rec, &d->pid); /* common_pid: the same place */
	ev->valid |= TCP_AUDIT_HAS_TID;
	*skaddr = number(d, rec, &f->skaddr);
	return 1;
}

/* 1: an event in ev; 0: not ours (other event, protocol or family) */
static int decode(const struct ta_decoder *d, const uint8_t *rec, size_t rec_len,
		  struct tcp_audit_event *ev, uint64_t *skaddr)
{
	int id = (int)tep_read_number(d->tep, rec, 2);

	if (id != d->event_id) {
		if (d->sent.id && id == d->sent.id)
			return decode_reset(d, &d->sent, rec, rec_len, ev, skaddr);
		if (d->received.id && id == d->received.id)
			return decode_reset(d, &d->received, rec, rec_len, ev, skaddr);
		return 0;
	}
	if (rec_len < d->record_min)
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
	*skaddr = number(d, rec, &d->skaddr);
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
		if (rec) {
			struct tcp_audit_event ev;
			uint64_t skaddr = 0;
			if (decode(d, rec, rec_len, &ev, &skaddr) == 1) {
				int fr = fn(ctx, &ev, ts, skaddr);
				if (fr < 0)
					return fr;
				n++;
			}
		}
		pos += step;
	}
	return n;
}
