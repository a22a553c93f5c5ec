"""tcp-audit under systemd's protocols, with the test as the service manager:
sd_notify datagrams to a socket of the test's ($NOTIFY_SOCKET, as systemd
gives a Type=notify service, with $WATCHDOG_USEC for WatchdogSec=), and
$JOURNAL_STREAM naming the stream that is stderr (as systemd says when stderr
is the journal)."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import BIN, WRAPPER, Running, fixture, sample_line, summary

SYNTH = fixture("synthetic-eventer")


class Notify(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock_path = os.path.join(self.tmp.name, "notify")
        self.sock.bind(self.sock_path)

    def tearDown(self):
        self.sock.close()
        self.tmp.cleanup()

    def messages(self, seconds):
        """The datagrams that come within seconds, with when they came."""
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                out.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass
        return out

    def notified_run(self, env_extra, seconds):
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, **env_extra)
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=5", "-p",
                      "per_read=10", "--spool", "none", "--sink", "jsonl", "-p",
                      "path=" + os.path.join(self.tmp.name, "out.jsonl")], env=env,
                     wait_started=False) as t:
            # ready (under valgrind that takes seconds), then seconds more
            self.sock.settimeout(60)
            msgs = [(time.monotonic(), self.sock.recv(4096).decode())]
            self.assertIn("tcp-audit: started", t.stderr())  # READY=1 comes after it
            msgs += self.messages(seconds)
            t.proc.send_signal(signal.SIGINT)
            msgs += self.messages(1.0)
            rc = t.stop()
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        return [m for _, m in msgs], err

    def test_ready_status_watchdog_and_stopping(self):
        msgs, err = self.notified_run({"WATCHDOG_USEC": "400000"}, 5.6)
        self.assertTrue(msgs[0].startswith("READY=1\nSTATUS="), msgs[:3])
        # WatchdogSec=0.4: a ping every 0.2 s
        pings = msgs.count("WATCHDOG=1")
        self.assertGreaterEqual(pings, 10, msgs)
        # the counters every 5 s, as the summary words them
        status = [m for m in msgs[1:] if m.startswith("STATUS=") and "events read" in m]
        self.assertTrue(status, msgs)
        m = re.fullmatch(r"STATUS=(\d+) events read, 0 lost \(kernel 0, queue 0, spool 0\); "
                         r"jsonl: (\d+) written, (\d+) behind", status[0])
        self.assertTrue(m, status[0])
        self.assertGreater(int(m[1]), 0)
        stopping = [i for i, m in enumerate(msgs) if m.startswith("STOPPING=1")]
        self.assertEqual(len(stopping), 1, msgs)
        self.assertNotIn("events read", " ".join(msgs[stopping[0]:]))
        self.assertGreater(summary(err)["events read"], int(m[1]))

    def test_no_watchdog_unless_the_unit_asks(self):
        msgs, _ = self.notified_run({}, 1.0)
        self.assertTrue(msgs[0].startswith("READY=1"), msgs)
        self.assertNotIn("WATCHDOG=1", msgs)
        self.assertTrue(msgs[-1].startswith("STOPPING=1"), msgs)


class Journal(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.inp = os.path.join(self.tmp.name, "in.jsonl")
        with open(self.inp, "w") as f:
            f.write(sample_line(1) + "\nnot json\n" + sample_line(2) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def stderr_lines(self, args, journal):
        """Runs tcp-audit with stderr to a file; journal: $JOURNAL_STREAM names
        that file (True), another one (False: not the journal), or is unset."""
        path = os.path.join(self.tmp.name, "stderr")
        with open(path, "wb") as err:
            st = os.fstat(err.fileno() if journal else os.open(self.inp, os.O_RDONLY))
            env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino),
                       STATE_DIRECTORY=self.tmp.name)
            if journal is None:
                del env["JOURNAL_STREAM"]
            subprocess.run(WRAPPER + [BIN] + args, stderr=err, stdout=subprocess.DEVNULL,
                           env=env, timeout=60)
        with open(path) as f:
            return f.read().splitlines()

    def run_args(self):
        return ["--event", "replay", "-p", "path=" + self.inp, "-p", "on_error=skip",
                "--sink", "jsonl", "-p", "path=" + os.path.join(self.tmp.name, "o.jsonl")]

    def test_syslog_priorities_when_stderr_is_the_journal(self):
        lines = self.stderr_lines(self.run_args(), True)
        self.assertTrue(lines)
        for l in lines:
            self.assertRegex(l, r"^<[3467]>tcp-audit: ")
            if l.startswith("<3>"):
                self.assertIn("error: ", l)
            if l.startswith("<4>"):
                self.assertIn("warning: ", l)
            if l.startswith("<6>"):
                self.assertNotRegex(l, "(error|warning|debug): ")
        self.assertTrue(any(l.startswith("<6>tcp-audit: started") for l in lines), lines)
        self.assertTrue(any(l.startswith("<6>tcp-audit: summary: ") for l in lines), lines)
        self.assertTrue(any(l.startswith("<4>") for l in lines), lines)  # the skipped line
        usage = self.stderr_lines(["--no-such-flag"], True)
        self.assertEqual(len(usage), 1, usage)
        self.assertTrue(usage[0].startswith("<3>tcp-audit: error: "), usage)

    def test_plain_lines_otherwise(self):
        for journal in (False, None):
            lines = self.stderr_lines(self.run_args(), journal)
            self.assertTrue(lines)
            for l in lines:
                self.assertTrue(l.startswith("tcp-audit: "), l)


if __name__ == "__main__":
    tcpaudit.main()
