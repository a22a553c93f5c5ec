"""The manual pages the build writes (doc/gen-man.py): every flag of the
program, every option of every plugin and every metric served are in them,
and groff renders them without a warning."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.request

import tcpaudit
from tcpaudit import BUILD_DIR, SOURCE_DIR, Running, fixture, run

PAGE8 = os.path.join(BUILD_DIR, "doc", "tcp-audit.8")
PAGE7 = os.path.join(BUILD_DIR, "doc", "tcp-audit-plugins.7")


def read(path):
    with open(path) as f:
        return f.read()


def plain(page):
    """The page as man shows it, without hyphenation or adjustment."""
    r = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-dAD=l", "-rLL=200n",
                        page], capture_output=True, text=True, check=True)
    return r.stdout


@unittest.skipUnless(shutil.which("groff"), "needs groff")
class ManPages(unittest.TestCase):
    def test_render_without_warnings(self):
        for page in (PAGE8, PAGE7):
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)

    def test_every_flag(self):
        with open(os.path.join(SOURCE_DIR, "src", "main.c")) as f:
            longopts = re.findall(r'\{"([a-z-]+)", (?:no|required)_argument', f.read())
        self.assertIn("metrics", longopts)
        help_text = run(["--help"]).stdout
        text = plain(PAGE8)
        for name in longopts:
            self.assertIn("--" + name, help_text)
            self.assertIn("--" + name, text, name)
        for section in ("SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES", "METRICS"):
            self.assertIn("\n" + section + "\n", text)

    def test_every_plugin_option(self):
        listed = run(["--list-plugins"]).stdout
        text = plain(PAGE7)
        plugins = re.findall(r"^(eventer|sink) (\S+)$", listed, re.M)
        self.assertGreaterEqual(len(plugins), 7)
        for kind, name in plugins:
            self.assertIn("%s %s" % (kind, name), text)
        options = re.findall(r"^    -p (\S+=<[^>]*>)", listed, re.M)
        self.assertGreater(len(options), 20)
        for opt in options:
            self.assertIn("-p " + opt.replace("<", "").replace(">", ""), text)

    def test_every_metric(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        with Running(["--metrics", "127.0.0.1:0", "--event", fixture("synthetic-eventer"),
                      "-p", "count=0", "-p", "interval_ms=50", "--sink", "jsonl", "-p",
                      "path=" + os.path.join(tmp.name, "out.jsonl")]) as t:
            where = re.search(r"serving http://(\S+)/metrics", t.stderr()).group(1)
            with urllib.request.urlopen("http://%s/metrics" % where, timeout=30) as r:
                body = r.read().decode()
            t.stop()
        names = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
        self.assertGreater(len(names), 15)
        text = plain(PAGE8)
        for name in names:
            self.assertIn(name, text)


if __name__ == "__main__":
    tcpaudit.main()
