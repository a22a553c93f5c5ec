/* SPDX-License-Identifier: MIT */
/*
 * Plugins are found by name in the plugin directories, loaded with dlopen()
 * and checked before use: ABI version and descriptor size first (so a plugin
 * built for another ABI is refused, not run), then the descriptor itself.
 */
#include "plugin-loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "options.h"

#ifndef TCP_AUDIT_PLUGIN_DIR
#error "TCP_AUDIT_PLUGIN_DIR must be defined by the build"
#endif
#ifndef TCP_AUDIT_BUILD_EXE_DIR
#error "TCP_AUDIT_BUILD_EXE_DIR must be defined by the build"
#endif

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_size, const char *fmt,
						      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

const char *plugin_kind_word(int kind)
{
	return kind == TCP_AUDIT_EVENTER ? "eventer" : kind == TCP_AUDIT_SINKER ? "sink" : "plugin";
}

static const char *with_article(int kind)
{
	return kind == TCP_AUDIT_EVENTER ? "an eventer" : "a sink";
}

static const char *file_suffix(int kind)
{
	return kind == TCP_AUDIT_EVENTER ? "eventer" : "sink";
}

static int running_from_build_tree(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return 0;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	return strcmp(exe, TCP_AUDIT_BUILD_EXE_DIR) == 0;
}

const char *plugin_search_path(void)
{
	const char *env = getenv("TCP_AUDIT_PLUGIN_PATH");

	if (env && *env)
		return env;
	return running_from_build_tree() ? TCP_AUDIT_BUILD_PLUGIN_PATH : TCP_AUDIT_PLUGIN_DIR;
}

/* Finds file in the ':'-separated dirs; 0 and the full path in out, or -ENOENT. */
static int search(const char *dirs, const char *file, char *out, size_t out_size)
{
	for (const char *d = dirs; *d;) {
		const char *colon = strchr(d, ':');
		size_t len = colon ? (size_t)(colon - d) : strlen(d);
		if (len > 0) {
			snprintf(out, out_size, "%.*s/%s", (int)len, d, file);
			if (access(out, F_OK) == 0)
				return 0;
		}
		if (!colon)
			break;
		d = colon + 1;
	}
	return -ENOENT;
}

static int check_descriptor(const struct tcp_audit_plugin *d, char *err, size_t err_size)
{
	char why[256];

	if (!d->name || !d->name[0])
		return fail(err, err_size, "its descriptor has no name");
	if (d->kind == TCP_AUDIT_EVENTER) {
		if (!d->eventer_open || !d->eventer_read || !d->eventer_close)
			return fail(err, err_size, "eventer \"%s\" lacks open, read or close",
				    d->name);
	} else if (d->kind == TCP_AUDIT_SINKER) {
		if (!d->sinker_open || !d->sinker_write || !d->sinker_close)
			return fail(err, err_size, "sink \"%s\" lacks open, write or close", d->name);
	} else {
		return fail(err, err_size, "plugin \"%s\" has an unknown kind %d", d->name, d->kind);
	}
	for (const struct tcp_audit_option *o = d->options; o && o->key; o++)
		if (option_check_declaration(o, d->config_size, why, sizeof(why)))
			return fail(err, err_size, "plugin \"%s\": %s", d->name, why);
	return 0;
}

/*
 * Running as root, a plugin runs as root: refuse one that someone else could
 * have put there or changed.  The file (after symlinks) and its folder must
 * be owned by root and writable by nobody else.
 */
static int check_owner(const char *path, char *err, size_t err_size)
{
	char real[PATH_MAX];
	struct stat st;

	if (geteuid() != 0)
		return 0;
	if (!realpath(path, real))
		return fail(err, err_size, "plugin file %s: %s", path, strerror(errno));
	for (int i = 0; i < 2; i++) {
		if (i == 1)
			*strrchr(real, '/') = '\0'; /* the folder; "" is / */
		const char *shown = real[0] ? real : "/";
		char what[PATH_MAX + 16] = "it";
		if (i == 1)
			snprintf(what, sizeof(what), "its folder %s", shown);
		if (stat(shown, &st) != 0)
			return fail(err, err_size, "%s: %s", shown, strerror(errno));
		if (st.st_uid != 0)
			return fail(err, err_size,
				    "refused: %s is owned by uid %u, not root (a plugin runs as root)",
				    what, (unsigned)st.st_uid);
		if (st.st_mode & (S_IWGRP | S_IWOTH))
			return fail(err, err_size,
				    "refused: %s is writable by %s (a plugin runs as root: chmod go-w)",
				    what, st.st_mode & S_IWOTH ? "others" : "its group");
	}
	return 0;
}

int plugin_load(const char *name_or_path, int want_kind, struct loaded_plugin *out, char *err,
		size_t err_size)
{
	char path[PATH_MAX];
	void *handle = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	if (strchr(name_or_path, '/')) {
		snprintf(path, sizeof(path), "%s", name_or_path);
		if (access(path, F_OK) != 0)
			return fail(err, err_size, "plugin file %s: %s", path, strerror(errno));
	} else {
		const char *dirs = plugin_search_path();
		char file[NAME_MAX + 1];

		if (!*name_or_path)
			return fail(err, err_size, "empty plugin name");
		snprintf(file, sizeof(file), "tcp-audit-%s-%s.so", name_or_path,
			 file_suffix(want_kind));
		if (search(dirs, file, path, sizeof(path)) < 0) {
			int other = want_kind == TCP_AUDIT_EVENTER ? TCP_AUDIT_SINKER
								     : TCP_AUDIT_EVENTER;
			char other_file[NAME_MAX + 1], other_path[PATH_MAX];
			snprintf(other_file, sizeof(other_file), "tcp-audit-%s-%s.so", name_or_path,
				 file_suffix(other));
			if (search(dirs, other_file, other_path, sizeof(other_path)) == 0)
				return fail(err, err_size, "\"%s\" is %s, not %s: use it with %s",
					    name_or_path, with_article(other), with_article(want_kind),
					    other == TCP_AUDIT_EVENTER ? "--event" : "--sink");
			return fail(err, err_size,
				    "no %s named \"%s\": %s not found in %s (see tcp-audit "
				    "--list-plugins)",
				    plugin_kind_word(want_kind), name_or_path, file, dirs);
		}
	}

	if ((r = check_owner(path, err, err_size)) < 0)
		return r;

	/*
	 * RTLD_NODELETE: a plugin's libraries stay mapped after dlclose(), so
	 * what they keep in static storage (libtracefs caches the tracefs path)
	 * is neither unmapped under a thread nor reported as a leak.
	 */
	handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!handle)
		return fail(err, err_size, "%s is not a loadable plugin: %s", path, dlerror());

	tcp_audit_plugin_entry_fn entry;
	*(void **)&entry = dlsym(handle, TCP_AUDIT_ENTRY_SYMBOL);
	if (!entry) {
		r = fail(err, err_size, "%s is not a tcp-audit plugin (it has no %s symbol)", path,
			 TCP_AUDIT_ENTRY_SYMBOL);
		goto fail;
	}
	const struct tcp_audit_plugin *d = entry(TCP_AUDIT_ABI_VERSION);
	if (!d) {
		r = fail(err, err_size, "%s refused plugin ABI version %u", path,
			 TCP_AUDIT_ABI_VERSION);
		goto fail;
	}
	if (d->abi_version != TCP_AUDIT_ABI_VERSION) {
		r = fail(err, err_size,
			 "%s was built for plugin ABI version %u, this tcp-audit needs version %u: "
			 "rebuild the plugin against this tcp-audit's <tcp-audit/plugin.h>",
			 path, d->abi_version, TCP_AUDIT_ABI_VERSION);
		goto fail;
	}
	if (d->struct_size < TCP_AUDIT_PLUGIN_MIN_SIZE) {
		r = fail(err, err_size,
			 "%s has a plugin descriptor of %u bytes, ABI version %u needs at least %zu: "
			 "rebuild the plugin against this tcp-audit's <tcp-audit/plugin.h>",
			 path, d->struct_size, TCP_AUDIT_ABI_VERSION, TCP_AUDIT_PLUGIN_MIN_SIZE);
		goto fail;
	}
	r = check_descriptor(d, err, err_size);
	if (r) {
		char why[512];
		snprintf(why, sizeof(why), "%s", err);
		fail(err, err_size, "%s is not a usable plugin: %s", path, why);
		goto fail;
	}
	if (d->kind != want_kind) {
		r = fail(err, err_size, "%s is %s, not %s: use it with %s", path,
			 with_article(d->kind), with_article(want_kind),
			 d->kind == TCP_AUDIT_EVENTER ? "--event" : "--sink");
		goto fail;
	}

	out->handle = handle;
	out->desc = d;
	out->path = strdup(path);
	if (!out->path) {
		r = fail(err, err_size, "out of memory");
		goto fail;
	}
	return 0;
fail:
	dlclose(handle);
	memset(out, 0, sizeof(*out));
	return r;
}

void plugin_unload(struct loaded_plugin *p)
{
	if (!p)
		return;
	if (p->handle)
		dlclose(p->handle);
	free(p->path);
	p->handle = NULL;
	p->desc = NULL;
	p->path = NULL;
}
