/* SPDX-License-Identifier: MIT */
/* Dropping capabilities and switching user (see privileges.h), without libcap. */
#include "privileges.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernel-helpers.h"

#define BIT(cap) (1ull << (cap))

static int caps_set(uint64_t caps)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = (uint32_t)caps;
	d[1].effective = d[1].permitted = (uint32_t)(caps >> 32);
	return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

static int switch_user(const char *user, uint64_t have, char *err, size_t errlen)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(user);
	if (!pw) {
		snprintf(err, errlen, "--user %s: %s", user,
			 errno ? strerror(errno) : "no such user");
		return errno ? -errno : -ENOENT;
	}
	if (!(have & BIT(CAP_SETUID)) || !(have & BIT(CAP_SETGID))) {
		snprintf(err, errlen, "--user %s: switching user needs root (or CAP_SETUID and "
			 "CAP_SETGID)", user);
		return -EPERM;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	/* keep the permitted set across the uid change; the effective one is set after */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || initgroups(user, gid) < 0 ||
	    setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		int e = errno;
		snprintf(err, errlen, "--user %s: cannot switch to uid %u gid %u: %s", user,
			 (unsigned)uid, (unsigned)gid, strerror(e));
		return -e;
	}
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	return 0;
}

int privileges_drop(const char *user, uint64_t keep, uint64_t *kept, char *err, size_t errlen)
{
	uint64_t have = 0;
	int r;

	*kept = 0;
	if ((r = caps_read(NULL, &have))) {
		snprintf(err, errlen, "cannot read this process's capabilities: %s", strerror(-r));
		return r;
	}
	keep &= have;
	/* the bounding set first (needs CAP_SETPCAP): nothing comes back through exec */
	if (have & BIT(CAP_SETPCAP))
		for (int cap = 0; cap < 64; cap++)
			if (!(keep & BIT(cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
			    errno == EINVAL)
				break; /* past the kernel's last capability */
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (user && (r = switch_user(user, have, err, errlen)))
		return r;
	if ((r = caps_set(keep))) {
		snprintf(err, errlen, "cannot drop capabilities: %s", strerror(-r));
		return r;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot set no_new_privs: %s", strerror(errno));
		return r;
	}
	*kept = keep;
	return 0;
}

void capability_names(uint64_t caps, char *buf, size_t len)
{
	static const struct {
		int cap;
		const char *name;
	} names[] = {
		{CAP_DAC_OVERRIDE, "cap_dac_override"}, {CAP_DAC_READ_SEARCH, "cap_dac_read_search"},
		{CAP_SYS_ADMIN, "cap_sys_admin"},       {CAP_NET_ADMIN, "cap_net_admin"},
		{CAP_SYS_PTRACE, "cap_sys_ptrace"},     {CAP_SYS_RESOURCE, "cap_sys_resource"},
#ifdef CAP_BPF
		{CAP_BPF, "cap_bpf"},                   {CAP_PERFMON, "cap_perfmon"},
#endif
	};
	size_t used = 0;

	buf[0] = '\0';
	for (int cap = 0; cap < 64; cap++) {
		if (!(caps & BIT(cap)))
			continue;
		const char *name = NULL;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (names[i].cap == cap)
				name = names[i].name;
		int n = name ? snprintf(buf + used, len - used, "%s%s", used ? "," : "", name)
			     : snprintf(buf + used, len - used, "%scap_%d", used ? "," : "", cap);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	if (!used)
		snprintf(buf, len, "none");
}
