/* SPDX-License-Identifier: MIT */
/* Finding, loading and checking plugin shared objects. */
#ifndef TCP_AUDIT_PLUGIN_LOADER_H
#define TCP_AUDIT_PLUGIN_LOADER_H

#include <stddef.h>

#include <tcp-audit/plugin.h>

struct loaded_plugin {
	void *handle;
	const struct tcp_audit_plugin *desc;
	char *path;
};

/* "eventer" / "sink" */
const char *plugin_kind_word(int kind);

/*
 * Loads NAME (resolved in the plugin directories) or PATH (contains '/') as a
 * plugin of the wanted kind.  On failure returns a negative errno with a
 * one-line reason in err; nothing stays loaded.
 */
int plugin_load(const char *name_or_path, int want_kind, struct loaded_plugin *out, char *err,
		size_t err_size);

void plugin_unload(struct loaded_plugin *p);

/*
 * The directories searched for plugin names, ':'-separated:
 * $TCP_AUDIT_PLUGIN_PATH, else the build tree's when this binary runs from
 * it, else the installed one.
 */
const char *plugin_search_path(void);

#endif
