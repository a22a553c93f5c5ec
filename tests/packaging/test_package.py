"""The Debian package, built from a clean copy of the source tree as a user
would (dpkg-buildpackage -b -us -uc): lintian finds nothing, the unit's
exposure is at most 3.5, packaging/test-in-container.sh boots it in a
Debian 12 container and checks the service, and packaging/test-oci.sh builds
and runs the OCI images from it.  Once, on the plain build."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import tcpaudit
from tcpaudit import SOURCE_DIR

TOOLS = ("dpkg-buildpackage", "lintian", "mmdebstrap", "systemd-nspawn", "systemd-analyze")


@unittest.skipIf(tcpaudit.WRAPPER or os.environ.get("TCP_AUDIT_SANITIZED"),
                 "builds and boots the package: once, on the plain build")
@unittest.skipUnless(os.geteuid() == 0, "needs root")
@unittest.skipUnless(all(shutil.which(t) for t in TOOLS), "needs " + ", ".join(TOOLS))
class DebianPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="tcp-audit-deb-")
        src = os.path.join(cls.tmp.name, "tcp-audit")
        os.mkdir(src)
        files = subprocess.run(["git", "-C", SOURCE_DIR, "ls-files", "-z", "-co",
                                "--exclude-standard"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-C", SOURCE_DIR, "--null", "-T", "-", "-cf",
                        os.path.join(cls.tmp.name, "src.tar")], input=files, check=True)
        subprocess.run(["tar", "-C", src, "-xf", os.path.join(cls.tmp.name, "src.tar")],
                       check=True)
        r = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src,
                           capture_output=True, text=True)
        if r.returncode:
            raise AssertionError("dpkg-buildpackage failed:\n" + (r.stdout + r.stderr)[-6000:])
        cls.changes = glob.glob(os.path.join(cls.tmp.name, "*.changes"))[0]
        cls.deb = glob.glob(os.path.join(cls.tmp.name, "tcp-audit_*.deb"))[0]
        cls.dev = glob.glob(os.path.join(cls.tmp.name, "tcp-audit-dev_*.deb"))[0]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def contents(self, deb):
        out = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                             check=True).stdout
        return [line.split()[-1].lstrip(".") for line in out.splitlines()]

    def test_contents(self):
        files = self.contents(self.deb)
        for path in ("/usr/bin/tcp-audit", "/lib/systemd/system/tcp-audit.service",
                     "/etc/default/tcp-audit", "/etc/logrotate.d/tcp-audit",
                     "/usr/share/man/man8/tcp-audit.8.gz",
                     "/usr/share/man/man7/tcp-audit-plugins.7.gz",
                     "/usr/share/tcp-audit/prometheus/tcp-audit.rules.yml",
                     "/usr/share/doc/tcp-audit/examples/prometheus.yml"):
            self.assertIn(path, files)
        plugins = sorted(re.search(r"/tcp-audit/tcp-audit-(.*)\.so$", f)[1] for f in files
                         if re.search(r"/tcp-audit/tcp-audit-.*\.so$", f))
        self.assertEqual(plugins, ["bpf-eventer", "clickhouse-sink", "console-sink",
                                   "jsonl-sink", "pgsql-sink", "replay-eventer", "sqlite-sink",
                                   "tracefs-eventer"])
        dev = self.contents(self.dev)
        self.assertIn("/usr/include/tcp-audit/plugin.h", dev)
        self.assertTrue(any(f.endswith("/pkgconfig/tcp-audit.pc") for f in dev), dev)

    def test_lintian_clean(self):
        r = subprocess.run(["lintian", "--fail-on", "error,warning", self.changes],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotRegex(r.stdout, r"(?m)^[EW]: ")

    def test_unit_exposure(self):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["dpkg-deb", "-x", self.deb, d], check=True)
            unit = os.path.join(d, "lib/systemd/system/tcp-audit.service")
            r = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                               capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertLessEqual(float(m.group(1)), 3.5)

    def test_in_container(self):
        r = subprocess.run([os.path.join(SOURCE_DIR, "packaging", "test-in-container.sh"),
                            self.deb], capture_output=True, text=True, timeout=900)
        print("\n".join("# " + line for line in r.stdout.splitlines()))  # not TAP lines
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(re.findall(r"(?m)^ok - ", r.stdout)), 5, r.stdout)

    @unittest.skipUnless(shutil.which("podman") and shutil.which("runc"), "needs podman and runc")
    def test_oci_images(self):
        r = subprocess.run([os.path.join(SOURCE_DIR, "packaging", "test-oci.sh"), self.deb,
                            self.dev], capture_output=True, text=True, timeout=900)
        print("\n".join("# " + line for line in r.stdout.splitlines()))  # not TAP lines
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(re.findall(r"(?m)^ok - ", r.stdout)), 4, r.stdout)


if __name__ == "__main__":
    tcpaudit.main()
