/* SPDX-License-Identifier: MIT */
/*
 * The start-up snapshot (see snapshot.h).  Three passes, each bounded by what
 * the host has: the network namespaces (of every process in /proc, and the
 * named ones in /run/netns); the TCP sockets of each through a
 * NETLINK_SOCK_DIAG socket made inside it (a netlink socket answers for the
 * namespace it was made in); then one walk over /proc/PID/fd that finds the
 * holder of each socket inode.  A socket held by several processes (a
 * listener shared by pre-forked workers) gets the lowest pid, as /proc lists
 * them.
 */
#include "snapshot.h"
#include "kernel-helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TCP_NEW_SYN_RECV 12 /* request sockets: not sockets of their own yet */
#define RECV_BUFFER (64 * 1024)

/* ------------------------------------------------------------------------ */
/* Network namespaces                                                        */

struct ns {
	uint32_t inum;
	int fd;
};

struct ns_list {
	struct ns *v;
	size_t n, cap;
};

/* Adds the namespace path names, once per namespace; 0, or -ENOMEM. */
static int ns_add(struct ns_list *l, int dirfd, const char *path)
{
	struct stat st;

	if (fstatat(dirfd, path, &st, 0) != 0)
		return 0; /* gone meanwhile, or not a namespace */
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].inum == (uint32_t)st.st_ino)
			return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct ns *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	l->v[l->n++] = (struct ns){(uint32_t)st.st_ino, fd};
	return 0;
}

static bool is_pid(const char *name)
{
	if (!*name)
		return false;
	for (; *name; name++)
		if (*name < '0' || *name > '9')
			return false;
	return true;
}

/* Ours first, then every process's, then the named ones. */
static int list_namespaces(struct ns_list *l)
{
	char path[300];
	struct dirent *d;
	DIR *dir;
	int r;

	if ((r = ns_add(l, AT_FDCWD, "/proc/self/ns/net")))
		return r;
	if (l->n == 0)
		return -ENOENT; /* no /proc, or no network namespaces */
	if ((dir = opendir("/proc"))) {
		while ((d = readdir(dir))) {
			if (!is_pid(d->d_name))
				continue;
			snprintf(path, sizeof(path), "%s/ns/net", d->d_name);
			if ((r = ns_add(l, dirfd(dir), path)))
				break;
		}
		closedir(dir);
		if (r)
			return r;
	}
	if ((dir = opendir("/run/netns"))) {
		while ((d = readdir(dir)))
			if (d->d_name[0] != '.' && (r = ns_add(l, dirfd(dir), d->d_name)))
				break;
		closedir(dir);
	}
	return r;
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                   */

struct dump {
	struct snapshot *s;
	size_t max;
	snapshot_keep_fn keep;
	void *arg;
	char *buf;
};

static int add_socket(struct dump *d, struct snapshot_socket *sk)
{
	struct snapshot *s = d->s;

	if ((d->keep && !d->keep((struct snapshot_socket *)sk, d->arg)) || s->n >= d->max) {
		s->not_listed++;
		return 0;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		if (cap > d->max)
			cap = d->max;
		struct snapshot_socket *v = realloc(s->sockets, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->sockets = v;
		s->cap = cap;
	}
	s->sockets[s->n++] = *sk;
	return 0;
}

static void from_diag(const struct inet_diag_msg *m, size_t len, uint32_t netns,
		      struct snapshot_socket *sk)
{
	memset(sk, 0, sizeof(*sk));
	sk->family = m->idiag_family;
	sk->state = m->idiag_state;
	sk->sport = ntohs(m->id.idiag_sport);
	sk->dport = ntohs(m->id.idiag_dport);
	size_t alen = m->idiag_family == AF_INET ? 4 : 16;
	memcpy(sk->saddr, m->id.idiag_src, alen);
	memcpy(sk->daddr, m->id.idiag_dst, alen);
	if (m->id.idiag_cookie[0] != INET_DIAG_NOCOOKIE ||
	    m->id.idiag_cookie[1] != INET_DIAG_NOCOOKIE)
		sk->cookie = (uint64_t)m->id.idiag_cookie[1] << 32 | m->id.idiag_cookie[0];
	sk->inode = m->idiag_inode;
	sk->netns = netns;
	/* the attributes: the socket's cgroup where the kernel tells it */
	const char *p = (const char *)m + NLMSG_ALIGN(sizeof(*m)), *end = (const char *)m + len;
	while (p + sizeof(struct nlattr) <= end) {
		const struct nlattr *a = (const struct nlattr *)p;
		if (a->nla_len < sizeof(*a) || p + a->nla_len > end)
			break;
		if ((a->nla_type & NLA_TYPE_MASK) == INET_DIAG_CGROUP_ID &&
		    a->nla_len >= NLA_HDRLEN + sizeof(uint64_t))
			memcpy(&sk->cgroup, p + NLA_HDRLEN, sizeof(uint64_t));
		p += NLA_ALIGN(a->nla_len);
	}
}

/* The TCP sockets of one family in nl's namespace. */
static int dump_family(struct dump *d, int nl, uint8_t family, uint32_t netns)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nlh = {.nlmsg_len = sizeof(msg),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			.nlmsg_seq = family},
		.req = {.sdiag_family = family,
			.sdiag_protocol = IPPROTO_TCP,
			.idiag_states = ~(1u << TCP_NEW_SYN_RECV)},
	};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};

	if (sendto(nl, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	for (;;) {
		ssize_t n = recv(nl, d->buf, RECV_BUFFER, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		for (struct nlmsghdr *h = (struct nlmsghdr *)d->buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				return h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error
					       ? e->error
					       : -EPROTO;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				continue;
			struct snapshot_socket sk;
			from_diag(NLMSG_DATA(h), h->nlmsg_len - NLMSG_LENGTH(0), netns, &sk);
			int r = add_socket(d, &sk);
			if (r)
				return r;
		}
	}
}

/*
 * A NETLINK_SOCK_DIAG socket made inside ns (we return to ours at once: only
 * this thread moves); -errno if it cannot be made, -ENOTRECOVERABLE if we
 * could not return.
 */
static int diag_socket_in(const struct ns *ns, const struct ns *self)
{
	int fd, err;

	if (ns != self && setns(ns->fd, CLONE_NEWNET) != 0)
		return -errno;
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	err = errno;
	if (ns != self && setns(self->fd, CLONE_NEWNET) != 0) {
		if (fd >= 0)
			close(fd);
		return -ENOTRECOVERABLE;
	}
	return fd >= 0 ? fd : -err;
}

/* ------------------------------------------------------------------------ */
/* Owners                                                                    */

/* Socket inode -> index in s->sockets: open addressing, linear probing. */
struct inode_index {
	uint64_t *keys;
	uint32_t *idx;
	size_t mask;
};

static int index_build(struct inode_index *x, const struct snapshot *s)
{
	size_t size = 64;

	while (size < 2 * s->n)
		size <<= 1;
	x->keys = calloc(size, sizeof(*x->keys));
	x->idx = calloc(size, sizeof(*x->idx));
	if (!x->keys || !x->idx)
		return -ENOMEM;
	x->mask = size - 1;
	for (size_t i = 0; i < s->n; i++) {
		uint64_t key = s->sockets[i].inode;
		if (!key)
			continue;
		size_t h = (size_t)(key * 0x9e3779b97f4a7c15ull) & x->mask;
		while (x->keys[h] && x->keys[h] != key)
			h = (h + 1) & x->mask;
		x->keys[h] = key;
		x->idx[h] = (uint32_t)i;
	}
	return 0;
}

static long index_find(const struct inode_index *x, uint64_t key)
{
	size_t h = (size_t)(key * 0x9e3779b97f4a7c15ull) & x->mask;

	while (x->keys[h]) {
		if (x->keys[h] == key)
			return x->idx[h];
		h = (h + 1) & x->mask;
	}
	return -1;
}

struct process {
	uint32_t pid, uid;
	char comm[TCP_AUDIT_COMM_LEN];
	bool read;
};

/* The process's command name and real uid, read once. */
static void read_process(int procfd, struct process *p)
{
	char path[48], buf[4096];
	ssize_t n;
	int fd;

	if (p->read)
		return;
	p->read = true;
	snprintf(path, sizeof(path), "%" PRIu32 "/comm", p->pid);
	if ((fd = openat(procfd, path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, p->comm, sizeof(p->comm) - 1);
		close(fd);
		if (n > 0 && p->comm[n - 1] == '\n')
			n--;
		p->comm[n > 0 ? n : 0] = '\0';
	}
	snprintf(path, sizeof(path), "%" PRIu32 "/status", p->pid);
	if ((fd = openat(procfd, path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		const char *uid = strstr(buf, "\nUid:");
		if (uid)
			p->uid = (uint32_t)strtoul(uid + 5, NULL, 10);
	}
}

/* Gives each socket with an inode the first process found holding it. */
static int find_owners(struct snapshot *s)
{
	struct inode_index x = {0};
	struct dirent *d, *f;
	int r = index_build(&x, s);
	DIR *proc = r ? NULL : opendir("/proc");

	if (!r && !proc)
		r = -errno;
	while (!r && (d = readdir(proc))) {
		if (!is_pid(d->d_name))
			continue;
		char path[300];
		snprintf(path, sizeof(path), "%s/fd", d->d_name);
		int fdfd = openat(dirfd(proc), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fdfd < 0)
			continue; /* exited meanwhile, or a kernel thread */
		DIR *fds = fdopendir(fdfd);
		if (!fds) {
			close(fdfd);
			continue;
		}
		struct process p = {.pid = (uint32_t)strtoul(d->d_name, NULL, 10)};
		while ((f = readdir(fds))) {
			struct stat st;
			/* the file behind the fd: a socket's inode, uid and gid in one call */
			if (f->d_name[0] == '.' || fstatat(fdfd, f->d_name, &st, 0) != 0 ||
			    !S_ISSOCK(st.st_mode))
				continue;
			long i = index_find(&x, st.st_ino);
			if (i < 0 || s->sockets[i].owner_pid)
				continue;
			struct snapshot_socket *sk = &s->sockets[i];
			read_process(dirfd(proc), &p);
			sk->owner_pid = p.pid;
			sk->owner_uid = p.uid;
			memcpy(sk->owner_comm, p.comm, sizeof(sk->owner_comm));
			sk->sock_uid = st.st_uid;
			sk->sock_gid = st.st_gid;
		}
		closedir(fds);
	}
	if (proc)
		closedir(proc);
	free(x.keys);
	free(x.idx);
	return r;
}

/* ------------------------------------------------------------------------ */

int snapshot_take(struct snapshot *s, size_t max, snapshot_keep_fn keep, void *arg,
		  const struct tcp_audit_host *host)
{
	struct ns_list l = {0};
	struct dump d = {s, max, keep, arg, malloc(RECV_BUFFER)};
	uint64_t start = clock_now_ns(CLOCK_MONOTONIC);
	int r;

	memset(s, 0, sizeof(*s));
	s->time_ns = clock_now_ns(CLOCK_REALTIME);
	s->ktime_ns = start;
	if (!d.buf)
		return -ENOMEM;
	r = list_namespaces(&l);
	if (r) {
		tcp_audit_error(host, "snapshot: cannot list the network namespaces: %s",
				strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < l.n; i++) {
		int nl = diag_socket_in(&l.v[i], &l.v[0]);
		if (nl == -ENOTRECOVERABLE) {
			r = nl;
			tcp_audit_error(host, "snapshot: cannot return to our network namespace");
			goto out;
		}
		if (nl >= 0) {
			r = dump_family(&d, nl, AF_INET, l.v[i].inum);
			if (!r)
				r = dump_family(&d, nl, AF_INET6, l.v[i].inum);
			close(nl);
			if (r == -ENOMEM)
				goto out;
		}
		if (nl < 0 || r) {
			s->unreadable++;
			tcp_audit_warning(host, "snapshot: cannot read the sockets of network "
						"namespace %" PRIu32 ": %s",
					  l.v[i].inum, strerror(nl < 0 ? -nl : -r));
			r = 0;
		} else {
			s->namespaces++;
		}
	}
	uint64_t dumped = clock_now_ns(CLOCK_MONOTONIC);
	r = find_owners(s);
	tcp_audit_debug(host, "snapshot: namespaces and sockets %.1f ms, owners %.1f ms",
			(double)(dumped - start) / 1e6,
			(double)(clock_now_ns(CLOCK_MONOTONIC) - dumped) / 1e6);
	if (r)
		tcp_audit_error(host, "snapshot: cannot find the sockets' owners: %s",
				strerror(-r));
out:
	for (size_t i = 0; i < l.n; i++)
		close(l.v[i].fd);
	free(l.v);
	free(d.buf);
	s->duration_ns = clock_now_ns(CLOCK_MONOTONIC) - start;
	if (r) {
		snapshot_free(s);
		return r;
	}
	size_t listed = 0;
	for (size_t i = 0; i < s->n; i++)
		listed += !s->sockets[i].quiet;
	tcp_audit_info(host,
		       "snapshot: %zu TCP socket%s open in %zu network namespace%s (%zu not "
		       "listed: filtered out or over the limit), taken in %.0f ms",
		       listed, listed == 1 ? "" : "s", s->namespaces, s->namespaces == 1 ? "" : "s",
		       s->n - listed + s->not_listed, (double)s->duration_ns / 1e6);
	return 0;
}

void snapshot_event(const struct snapshot *s, const struct snapshot_socket *sk,
		    struct tcp_audit_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = TCP_AUDIT_KIND_SNAPSHOT;
	ev->time_ns = s->time_ns;
	ev->ktime_ns = s->ktime_ns;
	ev->family = sk->family;
	ev->sport = sk->sport;
	ev->dport = sk->dport;
	memcpy(ev->saddr, sk->saddr, sizeof(ev->saddr));
	memcpy(ev->daddr, sk->daddr, sizeof(ev->daddr));
	ev->old_state = ev->new_state = sk->state;
	ev->netns = sk->netns;
	ev->valid = TCP_AUDIT_HAS_KTIME | TCP_AUDIT_HAS_NETNS;
	if (sk->cookie) {
		ev->sock_cookie = sk->cookie;
		ev->valid |= TCP_AUDIT_HAS_COOKIE;
	}
	if (sk->cgroup) {
		ev->cgroup_id = sk->cgroup;
		ev->valid |= TCP_AUDIT_HAS_CGROUP;
	}
	if (sk->owner_pid) {
		ev->owner_pid = sk->owner_pid;
		ev->owner_uid = sk->owner_uid;
		memcpy(ev->owner_comm, sk->owner_comm, sizeof(ev->owner_comm));
		ev->owner_comm[TCP_AUDIT_COMM_LEN - 1] = '\0';
		ev->sock_inode = sk->inode;
		ev->sock_uid = sk->sock_uid;
		ev->sock_gid = sk->sock_gid;
		ev->valid |= TCP_AUDIT_HAS_OWNER | TCP_AUDIT_HAS_SOCK_INODE;
	}
}

size_t snapshot_next_events(struct snapshot *s, struct tcp_audit_event *events, size_t max)
{
	size_t n = 0;

	for (; n < max && s->next < s->n; s->next++)
		if (!s->sockets[s->next].quiet)
			snapshot_event(s, &s->sockets[s->next], &events[n++]);
	if (s->next == s->n && s->sockets) {
		free(s->sockets); /* all out: the memory goes back at once */
		s->sockets = NULL;
		s->cap = 0;
	}
	return n;
}

void snapshot_free(struct snapshot *s)
{
	free(s->sockets);
	s->sockets = NULL;
	s->n = s->cap = s->next = 0;
}
