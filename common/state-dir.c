/* SPDX-License-Identifier: MIT */
/* tcp-audit's state folder (see state-dir.h). */
#include "state-dir.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int state_path(const char *name, char *out, size_t size)
{
	const char *env = getenv("STATE_DIRECTORY");
	size_t len;

	if (env && *env) { /* systemd: one path per StateDirectory= entry, ':'-separated */
		const char *colon = strchr(env, ':');
		len = colon ? (size_t)(colon - env) : strlen(env);
	} else {
		env = DEFAULT_STATE_DIRECTORY;
		len = strlen(env);
	}
	int n = name ? snprintf(out, size, "%.*s/%s", (int)len, env, name)
		     : snprintf(out, size, "%.*s", (int)len, env);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int make_state_directory(void)
{
	char dir[PATH_MAX];
	int r = state_path(NULL, dir, sizeof(dir));

	if (r)
		return r;
	return mkdir(dir, 0750) == 0 || errno == EEXIST ? 0 : -errno;
}
