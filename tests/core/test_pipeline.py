"""The pipeline end to end: drain on signal, consecutive errors, counted loss,
several sinks, backpressure, retries."""
import gzip
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import Running, fixture, open_flags, run, summary, wait_until

SYNTH = fixture("synthetic-eventer")
FAULTY = fixture("faulty-sink")


def seqs(path):
    with open(path) as f:
        return [l.strip() for l in f if l.strip()]


class Pipeline(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.d, name)

    def test_end_of_stream_delivers_everything(self):
        r = run(["--event", SYNTH, "-p", "count=50000", "--sink", FAULTY, "-p",
                 "path=" + self.path("a")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(seqs(self.path("a")), [str(i) for i in range(1, 50001)])
        s = summary(r.stderr)
        self.assertEqual(s["events read"], 50000)
        self.assertEqual(s["sink faulty written"], 50000)
        self.assertEqual(s["sink faulty undelivered"], 0)

    def drain_on(self, sig, status):
        # a slow sink and a fast one; stop while the slow one is behind
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=2", "-p",
                      "per_read=50", "--sink", FAULTY, "-p", "path=" + self.path("slow"),
                      "-p", "delay_ms=100", "--sink", "jsonl", "-p",
                      "path=" + self.path("fast.jsonl")]) as t:
            time.sleep(1.0)
            rc = t.stop(sig)
            err = t.stderr()
        self.assertEqual(rc, status, err)
        s = summary(err)
        n = s["events read"]
        self.assertGreater(n, 100)
        self.assertEqual(seqs(self.path("slow")), [str(i) for i in range(1, n + 1)])
        with open(self.path("fast.jsonl")) as f:
            self.assertEqual([json.loads(l)["seq"] for l in f], list(range(1, n + 1)))
        self.assertEqual(s["sink faulty written"], n)
        self.assertEqual(s["sink jsonl written"], n)
        self.assertEqual(s["sink faulty undelivered"], 0)
        self.assertIn("delivering what was read", err)

    def test_sigint_drains_then_exits_130(self):
        self.drain_on(signal.SIGINT, 130)

    def test_sigterm_drains_then_exits_143(self):
        self.drain_on(signal.SIGTERM, 143)

    def logrotate(self, out, pid):
        """Runs the shipped logrotate snippet for out, forced, its postrotate
        signalling pid (instead of the service)."""
        with open(os.path.join(tcpaudit.SOURCE_DIR, "packaging/logrotate/tcp-audit")) as f:
            conf = f.read()
        conf = conf.replace("/var/log/tcp-audit/*.jsonl", out)
        conf = re.sub(r"(?s)postrotate.*endscript", "postrotate\n\t\tkill -HUP %d\n\tendscript" % pid,
                      conf)
        with open(self.path("logrotate.conf"), "w") as f:
            f.write(conf)
        r = subprocess.run(["logrotate", "-f", "-s", self.path("logrotate.state"),
                            self.path("logrotate.conf")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def rotations(self, spool):
        """Events flow into a jsonl file that is moved away three times, each
        time followed by SIGHUP: by hand, then twice by the shipped logrotate
        snippet (which compresses a file one rotation late).  Every event
        once, in order, across the files, and a moved file gets nothing after
        its SIGHUP was handled."""
        out = self.path("events.jsonl")
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=2", "-p",
                      "per_read=50", "--spool", spool, "--sink", "jsonl", "-p",
                      "path=" + out]) as t:
            time.sleep(0.5)
            os.rename(out, out + ".0")
            t.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: t.stderr().count("reopened " + out) == 1, 10, "the reopen")
            moved = os.path.getsize(out + ".0")
            for i in (2, 3):
                time.sleep(0.5)
                self.logrotate(out, t.proc.pid)
                wait_until(lambda: t.stderr().count("reopened " + out) == i, 10, "the reopen")
            time.sleep(0.5)
            rc = t.stop()
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        self.assertEqual(err.count("got SIGHUP: the sinks reopen their files"), 3, err)
        self.assertEqual(os.path.getsize(out + ".0"), moved)  # nothing after its reopen
        got = []
        for name in [out + ".0", out + ".2.gz", out + ".1", out]:
            with (gzip.open if name.endswith(".gz") else open)(name, "rt") as f:
                part = [json.loads(l)["seq"] for l in f]
            self.assertTrue(part, name + " is empty")
            got += part
        n = summary(err)["events read"]
        self.assertEqual(got, list(range(1, n + 1)))

    def test_sighup_reopens_the_jsonl_file_for_logrotate(self):
        self.rotations(self.path("spool"))

    def test_sighup_reopens_without_a_spool_too(self):
        self.rotations("none")

    def appended_run(self, direct):
        """Events in reads of 37 (batches ending inside a block), appended to
        a file that has lines of its own, not a whole number of blocks long:
        its lines stay, ours follow in order, every line whole."""
        out = self.path("events.jsonl")
        own = "".join('{"earlier":%d,"pad":"%s"}\n' % (i, "x" * (i % 50)) for i in range(90))
        with open(out, "w") as f:
            f.write(own)
        self.assertNotEqual(len(own) % 4096, 0)
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=2", "-p",
                      "per_read=37", "--sink", "jsonl", "-p", "path=" + out, "-p",
                      "direct=" + direct]) as t:
            wait_until(lambda: os.path.getsize(out) > len(own) + 300000, 30, "300 KB of lines")
            fds = [bool(f & os.O_DIRECT) for f in open_flags(t.proc.pid, out)]
            rc = t.stop()
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        with open(out) as f:
            text = f.read()
        self.assertTrue(text.startswith(own))
        lines = text[len(own):].split("\n")
        self.assertEqual(lines[-1], "")  # ends with a whole line
        self.assertEqual([json.loads(l)["seq"] for l in lines[:-1]],
                         list(range(1, summary(err)["events read"] + 1)))
        return fds

    def test_jsonl_writes_whole_blocks_with_o_direct(self):
        fds = self.appended_run("true")
        if not any(fds):
            self.skipTest("the file system of %s takes no O_DIRECT writes" % self.d)
        self.assertEqual(sorted(fds), [False, True])  # the file appended to, the blocks

    def test_jsonl_through_the_page_cache_only_with_direct_false(self):
        self.assertEqual(self.appended_run("false"), [False])

    def test_two_tcp_audits_append_to_one_jsonl_file(self):
        """Batches ending inside a block from two processes at once (O_DIRECT
        where it can be): every line of each, in its order, none over another."""
        out = self.path("events.jsonl")
        runs = []
        try:
            for host in ("a", "b"):
                runs.append(Running(["--host", host, "--event", SYNTH, "-p", "count=0", "-p",
                                     "interval_ms=1", "-p", "per_read=37", "--sink", "jsonl",
                                     "-p", "path=" + out]))
            wait_until(lambda: os.path.getsize(out) > 2000000, 60, "2 MB of lines")
        finally:
            codes = [t.stop() for t in runs]  # both stopped before any assertion
        errs = [t.stderr() for t in runs]
        for code, err in zip(codes, errs):
            self.assertEqual(code, 130, err)
        with open(out) as f:
            text = f.read()
        self.assertTrue(text.endswith("\n"))
        lines = [json.loads(l) for l in text.splitlines()]
        for host, err in zip(("a", "b"), errs):
            self.assertEqual([e["seq"] for e in lines if e["host"] == host],
                             list(range(1, summary(err)["events read"] + 1)), host)
        self.assertEqual(len(lines), sum(summary(e)["events read"] for e in errs))

    @unittest.skipUnless(os.geteuid() == 0, "mounts a small tmpfs: needs root")
    def test_jsonl_stdout_on_a_full_file_system_waits_and_leaves_no_hole(self):
        # stdout a file opened as `>` does (no O_APPEND) on a file system that fills up:
        # an outage (retried past --max-errors), each failed batch cut back, and its retry
        # written at the cut, not where the failed write had left the file offset
        # not in self.d, which tearDown removes before the cleanups unmount
        tmp = self.enterContext(tempfile.TemporaryDirectory(prefix="tcp-audit-small-"))
        small = self.enterContext(tcpaudit.small_file_system(os.path.join(tmp, "small"), 16))
        out, filler = os.path.join(small, "out.jsonl"), os.path.join(small, "filler")
        with open(out, "wb") as f, Running(
                ["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=10", "-p", "per_read=37",
                 "--spool", self.path("spool"), "--sink", "jsonl"], stdout=f) as t:
            wait_until(lambda: os.path.getsize(out) > 0, 30, "the first lines")
            subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=4k"], capture_output=True)
            t.wait_for_log("cannot write to -: No space left on device: holding events and "
                           "retrying")
            time.sleep(7)  # more than --max-errors (5) retries
            self.assertIsNone(t.proc.poll())
            os.unlink(filler)
            t.wait_for_log("- is writable again")
            rc = t.stop()
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        with open(out, "rb") as f:
            data = f.read()
        self.assertEqual(data.count(b"\0"), 0, "a hole: written past the cut")
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual([json.loads(l)["seq"] for l in data.decode().splitlines()],
                         list(range(1, summary(err)["events read"] + 1)))

    def test_second_signal_exits_without_waiting(self):
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=5", "--sink",
                      FAULTY, "-p", "path=" + self.path("a"), "-p",
                      "retry_first=1000000"]) as t:
            t.wait_for_log("is unavailable")
            t.proc.send_signal(signal.SIGINT)
            t.wait_for_log("got SIGINT")
            time.sleep(0.3)
            self.assertIsNone(t.proc.poll(), "must keep trying to deliver after one signal")
            started = time.monotonic()
            rc = t.stop(signal.SIGINT)
            self.assertLess(time.monotonic() - started, 5)
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        self.assertIn("second signal", err)
        self.assertGreater(summary(err)["sink faulty undelivered"], 0)

    def test_consecutive_sink_errors_stop_with_exit_1(self):
        r = run(["--event", SYNTH, "-p", "count=100", "--sink", FAULTY, "-p",
                 "path=" + self.path("a"), "-p", "fail_first=5"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.count("write failed"), 5)
        self.assertIn("faulty failed 5 times in a row: stopping", r.stderr)
        s = summary(r.stderr)
        self.assertEqual(s["sink faulty written"], 0)
        self.assertEqual(s["sink faulty undelivered"], 100)

    def test_max_errors_option(self):
        r = run(["--max-errors", "2", "--event", SYNTH, "-p", "count=100", "--sink", FAULTY,
                 "-p", "path=" + self.path("a"), "-p", "fail_first=5"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.count("write failed"), 2)

    def test_errors_below_the_limit_lose_nothing(self):
        r = run(["--event", SYNTH, "-p", "count=100", "--sink", FAULTY, "-p",
                 "path=" + self.path("a"), "-p", "fail_first=4"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(seqs(self.path("a")), [str(i) for i in range(1, 101)])

    def test_retry_is_not_an_error(self):
        r = run(["--event", SYNTH, "-p", "count=100", "--sink", FAULTY, "-p",
                 "path=" + self.path("a"), "-p", "retry_first=6"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(seqs(self.path("a")), [str(i) for i in range(1, 101)])
        self.assertEqual(r.stderr.count("is unavailable"), 1)  # once per episode
        self.assertEqual(r.stderr.count("is writing again"), 1)

    def test_consecutive_eventer_errors(self):
        r = run(["--event", SYNTH, "-p", "count=100", "-p", "fail_at=10", "-p",
                 "fail_times=5", "--sink", FAULTY, "-p", "path=" + self.path("a")])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.count("read failed"), 5)
        # what was read before the failure is still delivered
        self.assertEqual(seqs(self.path("a")), [str(i) for i in range(1, 11)])
        r = run(["--event", SYNTH, "-p", "count=100", "-p", "fail_at=10", "-p",
                 "fail_times=4", "--sink", FAULTY, "-p", "path=" + self.path("b")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(seqs(self.path("b")), [str(i) for i in range(1, 101)])

    def test_fatal_eventer_error(self):
        r = run(["--event", SYNTH, "-p", "count=100", "-p", "fatal_at=30", "--sink", FAULTY,
                 "-p", "path=" + self.path("a")])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot go on", r.stderr)
        self.assertEqual(seqs(self.path("a")), [str(i) for i in range(1, 31)])

    def test_kernel_loss_is_counted_and_archived(self):
        r = run(["--event", SYNTH, "-p", "count=100", "-p", "lost=7", "--sink", FAULTY, "-p",
                 "path=" + self.path("a"), "--sink", "jsonl", "-p",
                 "path=" + self.path("b.jsonl")])
        self.assertEqual(r.returncode, 0, r.stderr)
        s = summary(r.stderr)
        self.assertEqual(s["lost in kernel"], 7)
        self.assertEqual(s["gap records"], 1)
        self.assertIn("synthetic lost 7 events", r.stderr)
        self.assertEqual(seqs(self.path("a"))[-1], "gap 7")
        with open(self.path("b.jsonl")) as f:
            last = json.loads(f.readlines()[-1])
        self.assertEqual((last["kind"], last["stage"], last["lost"]), ("gap", "kernel", 7))

    def test_several_sinks_get_the_same_events(self):
        r = run(["--event", SYNTH, "-p", "count=20000", "--sink", "jsonl", "-p",
                 "path=" + self.path("1.jsonl"), "--sink", "jsonl", "-p",
                 "path=" + self.path("2.jsonl"), "--sink", FAULTY, "-p",
                 "path=" + self.path("f")])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.path("1.jsonl"), "rb") as a, open(self.path("2.jsonl"), "rb") as b:
            one = a.read()
            self.assertEqual(one, b.read())
        self.assertEqual(one.count(b"\n"), 20000)
        s = summary(r.stderr)
        self.assertEqual(s["sink jsonl#1 written"], 20000)
        self.assertEqual(s["sink jsonl#2 written"], 20000)
        self.assertEqual(len(seqs(self.path("f"))), 20000)

    def test_slow_sink_holds_others_back_only_by_the_queue(self):
        queue = 256
        with Running(["--spool", "none", "--queue-size", str(queue), "--backlog", "0",
                      "--batch-size", "64", "--event", SYNTH,
                      "-p", "count=0", "-p", "interval_ms=1", "-p", "per_read=64",
                      "--sink", FAULTY, "-p", "path=" + self.path("slow"), "-p",
                      "delay_ms=50", "--sink", "jsonl", "-p",
                      "path=" + self.path("fast.jsonl")]) as t:
            time.sleep(1.5)
            # several looks: one can meet the fast sink in the middle of a write held up
            # on a busy host, a batch behind the slow one
            samples = []
            for _ in range(5):
                samples.append(t.counters())
                time.sleep(0.3)
            rc = t.stop()
            s = summary(t.stderr())
        ahead = [c["sink jsonl written"] - c["sink faulty written"] for c in samples]
        # the fast sink is not held in lockstep: more than a batch ahead at some look
        self.assertGreater(max(ahead), 64, samples)
        for a in ahead:                           # ... but never more than the queue
            self.assertLessEqual(a, queue, samples)
        self.assertEqual(rc, 130)
        self.assertEqual(s["sink faulty written"], s["events read"])
        self.assertEqual(s["sink jsonl written"], s["events read"])


    def test_backlog_absorbs_a_burst_for_a_slow_sink(self):
        # the eventer reads 100000 events at once; the slow sink takes ~2 s
        args = ["--spool", "none", "--queue-size", "1024", "--batch-size", "1024", "--event",
                SYNTH, "-p",
                "count=100000", "-p", "per_read=1024", "--sink", FAULTY, "-p",
                "path=" + self.path("slow"), "-p", "delay_ms=20", "--sink", "jsonl", "-p",
                "path=" + self.path("fast.jsonl")]
        r = run(["--backlog", "200000"] + args)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = summary(r.stderr)
        self.assertGreater(s["backlog peak"], 50000)
        self.assertLessEqual(s["backlog peak"], 200000)
        self.assertEqual(seqs(self.path("slow")), [str(i) for i in range(1, 100001)])
        with open(self.path("fast.jsonl")) as f:
            self.assertEqual([json.loads(l)["seq"] for l in f], list(range(1, 100001)))
        # without one, the eventer is held back instead; still nothing lost
        os.unlink(self.path("fast.jsonl"))
        r = run(["--backlog", "0"] + args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary(r.stderr)["backlog peak"], 0)
        self.assertEqual(seqs(self.path("slow")), [str(i) for i in range(1, 100001)])


if __name__ == "__main__":
    tcpaudit.main()
