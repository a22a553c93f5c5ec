"""A plugin built outside the source tree, against the installed header and
pkg-config file alone, runs through the real processor; and `meson install`
installs the binary, the plugins, the header and the pkg-config file."""
import glob
import os
import subprocess
import tempfile
import unittest

import tcpaudit
from tcpaudit import BUILD_DIR, sample_line

PLUGIN_SOURCE = r'''
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <tcp-audit/plugin.h>

struct cfg { const char *path; int64_t every; };
struct counter { FILE *f; const struct cfg *cfg; const struct tcp_audit_host *host; uint64_t n; };

static const struct tcp_audit_option opts[] = {
	{"path", TCP_AUDIT_OPT_STRING, NULL, true, "where the count goes",
	 offsetof(struct cfg, path), 0, 0, NULL},
	{"every", TCP_AUDIT_OPT_INT, "1", false, "count every Nth event",
	 offsetof(struct cfg, every), 1, 100, NULL},
	{0},
};

static int c_open(void **self, const void *config, const struct tcp_audit_host *host)
{
	struct counter *c = calloc(1, sizeof(*c));
	if (!c) return -ENOMEM;
	c->cfg = config;
	c->host = host;
	c->f = fopen(c->cfg->path, "w");
	if (!c->f) { free(c); return -errno; }
	tcp_audit_info(host, "counting into %s", c->cfg->path);
	*self = c;
	return 0;
}

static int c_write(void *self, const struct tcp_audit_event *ev, size_t n)
{
	struct counter *c = self;
	for (size_t i = 0; i < n; i++)
		if (ev[i].seq % (uint64_t)c->cfg->every == 0)
			c->n++;
	return 0;
}

static void c_close(void *self)
{
	struct counter *c = self;
	fprintf(c->f, "%llu\n", (unsigned long long)c->n);
	fclose(c->f);
	free(c);
}

static const struct tcp_audit_plugin plugin = {
#ifdef OLD_DESCRIPTOR /* as a plugin built for tcp-audit 0.1 fills it: no flags */
	.abi_version = TCP_AUDIT_ABI_VERSION, .struct_size = TCP_AUDIT_PLUGIN_MIN_SIZE,
#else
	TCP_AUDIT_PLUGIN_HEADER,
#endif
	.name = "counter", .kind = TCP_AUDIT_SINKER, .description = "counts events",
	.options = opts, .config_size = sizeof(struct cfg),
	.sinker_open = c_open, .sinker_write = c_write, .sinker_close = c_close,
};

TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t abi)
{
	(void)abi;
	return &plugin;
}
'''


class ExternalPlugin(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dest = os.path.join(cls.tmp.name, "dest")
        r = subprocess.run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet",
                            "--destdir", cls.dest], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("meson install failed:\n" + r.stdout + r.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def find(self, pattern):
        hits = glob.glob(os.path.join(self.dest, "**", pattern), recursive=True)
        self.assertTrue(hits, "%s is not installed under %s" % (pattern, self.dest))
        return hits[0]

    def test_install_layout(self):
        exe = self.find("bin/tcp-audit")
        self.assertTrue(os.access(exe, os.X_OK))
        self.find("include/tcp-audit/plugin.h")
        self.find("pkgconfig/tcp-audit.pc")
        plugin_dir = os.path.dirname(self.find("tcp-audit/tcp-audit-jsonl-sink.so"))
        for name in ["replay-eventer", "console-sink"]:
            self.assertTrue(os.path.exists(os.path.join(plugin_dir,
                                                        "tcp-audit-%s.so" % name)))

    def test_plugin_built_against_installed_header(self):
        pc_dir = os.path.dirname(self.find("pkgconfig/tcp-audit.pc"))
        env = dict(os.environ, PKG_CONFIG_PATH=pc_dir, PKG_CONFIG_SYSROOT_DIR=self.dest)
        cflags = subprocess.run(["pkg-config", "--cflags", "tcp-audit"], env=env,
                                capture_output=True, text=True, check=True).stdout.split()
        self.assertTrue(any(self.dest in f for f in cflags), cflags)
        src = os.path.join(self.tmp.name, "counter.c")
        with open(src, "w") as f:
            f.write(PLUGIN_SOURCE)
        so = os.path.join(self.tmp.name, "tcp-audit-counter-sink.so")
        old = os.path.join(self.tmp.name, "old", "tcp-audit-counter-sink.so")
        os.makedirs(os.path.dirname(old), exist_ok=True)
        for out, extra in ((so, []), (old, ["-DOLD_DESCRIPTOR"])):
            r = subprocess.run(["cc", "-std=gnu17", "-Wall", "-Wextra", "-Werror", "-shared",
                                "-fPIC", "-fvisibility=hidden", "-o", out, src] + extra + cflags,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        exported = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True,
                                  text=True).stdout
        self.assertIn("tcp_audit_plugin_entry", exported)
        self.assertNotIn("c_write", exported)  # hidden visibility

        inp = os.path.join(self.tmp.name, "in.jsonl")
        with open(inp, "w") as f:
            for i in range(1, 101):
                f.write(sample_line(i) + "\n")
        count = os.path.join(self.tmp.name, "count")
        # the installed tcp-audit, finding the installed replay plugin and ours by name
        exe = self.find("bin/tcp-audit")
        plugin_dir = os.path.dirname(self.find("tcp-audit/tcp-audit-replay-eventer.so"))
        env = dict(os.environ, TCP_AUDIT_PLUGIN_PATH=plugin_dir + ":" + self.tmp.name)
        r = subprocess.run([exe, "--event", "replay", "-p", "path=" + inp, "--sink", "counter",
                            "-p", "path=" + count, "-p", "every=5"], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[sink:counter] counting into", r.stderr)
        with open(count) as f:
            self.assertEqual(f.read(), "20\n")
        # and its options are validated by the host like any other
        r = subprocess.run([exe, "--event", "replay", "-p", "path=" + inp, "--sink", "counter",
                            "-p", "path=" + count, "-p", "every=0"], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn('option "every": 0 is out of range (1 to 100)', r.stderr)
        # a plugin whose descriptor ends before flags (built for 0.1) loads and runs too
        r = subprocess.run([exe, "--event", "replay", "-p", "path=" + inp, "--sink", old,
                            "-p", "path=" + count], env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(count) as f:
            self.assertEqual(f.read(), "100\n")


if __name__ == "__main__":
    tcpaudit.main()
