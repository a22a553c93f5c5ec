"""The tracefs eventer's tracing instance: made per run, gone after every
kind of stop (a kill -9 is cleaned up by the next start), tracefs mounted
when it is not, and --event auto falling back to tracefs.  Needs root.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import BIN, BUILD_DIR, Running

OURS = re.compile(r"^tcp_audit_\d+_\d+$")


def tracefs_mounts():
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2] == "tracefs"]


def tracing_dir():
    mounts = tracefs_mounts()
    return mounts[0] if mounts else None


BASELINE = set()  # instances of tcp-audit processes running besides the tests'


def instances():
    d = tracing_dir()
    return sorted(n for n in os.listdir(os.path.join(d, "instances"))
                  if OURS.match(n) and n not in BASELINE)


def one_connection():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    port = l.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = l.accept()
    c.close()
    s.close()
    l.close()
    return port


@unittest.skipUnless(os.geteuid() == 0, "tracefs needs root")
class Instance(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "events.jsonl")
        self.started = []
        # a start removes what dead runs left; live ones are not ours to judge
        Running(["--event", "tracefs", "--sink", "jsonl", "-p", "path=/dev/null"]).stop()
        BASELINE.clear()
        BASELINE.update(instances())

    def tearDown(self):
        for t in self.started:  # a failed test must not leave a capture running
            if t.proc.poll() is None:
                t.stop(signal.SIGKILL)
        self.tmp.cleanup()

    def start(self, *extra, env=None):
        t = Running(["--event", "tracefs"] + list(extra) +
                    ["--sink", "jsonl", "-p", "path=" + self.out], env=env)
        self.started.append(t)
        return t

    def test_gone_after_sigint_and_sigterm(self):
        for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            t = self.start()
            self.assertEqual(instances(), ["tcp_audit_%d_0" % t.proc.pid])
            self.assertEqual(t.stop(sig), status, t.stderr())
            self.assertEqual(instances(), [])

    def test_kill_9_leftover_removed_by_next_start(self):
        t = self.start()
        t.stop(signal.SIGKILL)
        left = "tcp_audit_%d_0" % t.proc.pid
        self.assertEqual(instances(), [left])
        t = self.start()
        try:
            self.assertEqual(instances(), ["tcp_audit_%d_0" % t.proc.pid])
        finally:
            self.assertEqual(t.stop(), 130)
        self.assertIn("removed tracing instance %s left by an earlier run" % left, t.stderr())
        self.assertEqual(instances(), [])

    def test_other_instances_left_alone(self):
        d = os.path.join(tracing_dir(), "instances")
        foreign = os.path.join(d, "tcp_audit_keep")  # not our naming
        os.mkdir(foreign)
        try:
            a = self.start()
            b = self.start()  # must not remove a's, a running tcp-audit's
            self.assertEqual(instances(), sorted(["tcp_audit_%d_0" % a.proc.pid,
                                                  "tcp_audit_%d_0" % b.proc.pid]))
            port = one_connection()
            time.sleep(0.3)
            self.assertEqual(b.stop(), 130)
            self.assertEqual(a.stop(), 130)
            self.assertTrue(os.path.isdir(foreign))
        finally:
            os.rmdir(foreign)
        with open(self.out) as f:
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        # both runs saw the connection: 10 events and the listener's 2, each
        self.assertEqual(len([e for e in events if port in (e["sport"], e["dport"])]), 24)

    def test_mounts_tracefs_when_it_is_not(self):
        # every tracefs mount goes (with debugfs mounted there is a second one,
        # /sys/kernel/debug/tracing), and each comes back at the end
        unmounted = []
        try:
            while tracing_dir() is not None:
                where = tracing_dir()
                if subprocess.run(["umount", where], capture_output=True).returncode != 0:
                    self.skipTest("tracefs at %s is busy" % where)
                unmounted.append(where)
            t = self.start()
            port = one_connection()
            time.sleep(0.3)
            self.assertEqual(t.stop(), 130, t.stderr())
        finally:
            mounted = tracefs_mounts()  # tcp-audit mounts one itself
            for where in unmounted:
                if where not in mounted:
                    subprocess.run(["mount", "-t", "tracefs", "nodev", where], check=True)
        self.assertIsNotNone(tracing_dir())
        with open(self.out) as f:
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        self.assertEqual(len([e for e in events if port in (e["sport"], e["dport"])]), 12)

    def test_auto_falls_back_to_tracefs_without_bpf(self):
        # a plugin folder without the bpf eventer, as on a host without it
        plugins = os.path.join(self.tmp.name, "plugins")
        os.mkdir(plugins)
        for name in ("tcp-audit-tracefs-eventer.so", "tcp-audit-jsonl-sink.so"):
            for root, _, files in os.walk(os.path.join(BUILD_DIR, "plugins")):
                if name in files:
                    os.symlink(os.path.join(root, name), os.path.join(plugins, name))
        env = dict(os.environ, TCP_AUDIT_PLUGIN_PATH=plugins)
        t = Running(["--event", "auto", "--sink", "jsonl", "-p", "path=" + self.out], env=env)
        self.started.append(t)
        port = one_connection()
        time.sleep(0.3)
        self.assertEqual(t.stop(), 130, t.stderr())
        self.assertIn("--event auto: using tracefs", t.stderr())
        with open(self.out) as f:
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        self.assertEqual(len([e for e in events if port in (e["sport"], e["dport"])]), 12)


if __name__ == "__main__":
    tcpaudit.main()
