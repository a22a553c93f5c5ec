"""The durable spool (--spool DIR): a sink that is down holds back no other,
kill -9 and restart delivers what was spooled once, the cap's two policies,
damaged and truncated spool files.  Real files, real processes; the events
come from the synthetic eventer (seq 1..N) and the faulty sink records the
seq of each event it stores."""
import glob
import json
import os
import signal
import struct
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import Running, fixture, run, sample_line, summary, wait_until

SYNTH = fixture("synthetic-eventer")
FAULTY = fixture("faulty-sink")
HEADER = 64
# the record sizes of the two formats: the whole event, and without host and machine
RECORD = {1: 272, 2: 184}


def segment_format(path):
    """A segment's format and record size, from its header."""
    with open(path, "rb") as f:
        head = f.read(HEADER)
    return struct.unpack_from("<II", head, 16)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip() for l in f if l.strip()]


def jsonl_seqs(path):
    """The seqs of the lines written whole (not one being written, or cut
    short by a kill -9: a restarted jsonl sink cuts that off)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        whole = [l for l in f if l.endswith("\n")]
    return [e["seq"] for e in map(json.loads, whole) if e.get("kind") != "gap"]



class Spool(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.spool = os.path.join(self.d, "spool")
        self.down = os.path.join(self.d, "down")

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.d, name)

    def faulty(self, name="a", down=True):
        args = ["--sink", FAULTY, "-p", "path=" + self.path(name), "-p", "append=true"]
        if down:
            args += ["-p", "down_file=" + self.down]
        return args

    def segments(self):
        return sorted(glob.glob(os.path.join(self.spool, "*.spool")))

    def test_a_sink_that_is_down_holds_back_no_other(self):
        open(self.down, "w").close()
        with Running(["--spool", self.spool, "--event", SYNTH, "-p", "count=0", "-p",
                      "interval_ms=2", "-p", "per_read=20"] + self.faulty() +
                     ["--sink", "jsonl", "-p", "path=" + self.path("b.jsonl")]) as t:
            wait_until(lambda: len(jsonl_seqs(self.path("b.jsonl"))) >= 2000,
                       what="the jsonl sink to store 2000 events while the other is down")
            self.assertEqual(lines(self.path("a")), [])
            os.unlink(self.down)
            wait_until(lambda: len(lines(self.path("a"))) >= 2000, what="the catch-up")
            rc = t.stop(signal.SIGTERM)
            err = t.stderr()
        self.assertEqual(rc, 143, err)
        n = summary(err)["events read"]
        self.assertEqual(lines(self.path("a")), [str(i) for i in range(1, n + 1)])
        self.assertEqual(jsonl_seqs(self.path("b.jsonl")), list(range(1, n + 1)))
        self.assertIn("faulty is unavailable", err)
        # everything stored: no segment file is left behind
        self.assertEqual(self.segments(), [])

    def test_kill_9_then_restart_delivers_the_spooled_events_once(self):
        open(self.down, "w").close()
        with Running(["--spool", self.spool, "--event", SYNTH, "-p", "count=0", "-p",
                      "interval_ms=1", "-p", "per_read=50"] + self.faulty() +
                     ["--sink", "jsonl", "-p", "path=" + self.path("b.jsonl")]) as t:
            wait_until(lambda: len(jsonl_seqs(self.path("b.jsonl"))) >= 5000,
                       what="5000 events stored by jsonl")
            t.proc.kill()
            t.proc.wait()
        stored_b = jsonl_seqs(self.path("b.jsonl"))
        self.assertEqual(lines(self.path("a")), [])
        os.unlink(self.down)
        # the next start, with an eventer that has nothing new
        r = run(["--spool", self.spool, "--event", "replay", "-p", "path=/dev/null"] +
                self.faulty() + ["--sink", "jsonl", "-p", "path=" + self.path("b.jsonl")])
        self.assertEqual(r.returncode, 0, r.stderr)
        a = [int(x) for x in lines(self.path("a"))]
        n = len(a)
        self.assertGreaterEqual(n, len(stored_b))
        # every spooled event, in order, none twice
        self.assertEqual(a, list(range(1, n + 1)))
        b = jsonl_seqs(self.path("b.jsonl"))
        self.assertEqual(sorted(set(b)), list(range(1, n + 1)))
        self.assertIn("not yet confirmed by faulty: delivering them first", r.stderr)
        self.assertEqual(summary(r.stderr)["sink faulty written"], n)

    def test_block_at_the_cap_waits_and_loses_nothing(self):
        open(self.down, "w").close()
        # 20,000 events are 5.4 MB of spool: four times the cap
        with Running(["--spool", self.spool, "--spool-size", "1M", "--event", SYNTH, "-p",
                      "count=20000", "-p", "per_read=100"] + self.faulty()) as t:
            t.wait_for_log("spool is full (on_full=block)")
            time.sleep(1)
            size = sum(os.path.getsize(f) for f in self.segments())
            self.assertLessEqual(size, 1 << 20)
            self.assertEqual(t.stderr().count("spool is full"), 1, "one warning per episode")
            os.unlink(self.down)
            rc = t.proc.wait(timeout=60)
            err = t.stderr()
        self.assertEqual(rc, 0, err)
        self.assertEqual(lines(self.path("a")), [str(i) for i in range(1, 20001)])
        s = summary(err)
        self.assertEqual(s["lost in spool"], 0)

    def test_drop_oldest_at_the_cap_counts_the_loss_in_gap_records(self):
        open(self.down, "w").close()
        with Running(["--spool", self.spool, "--spool-size", "1M", "--spool-on-full",
                      "drop_oldest", "--event", SYNTH, "-p", "count=20000", "-p",
                      "per_read=100", "-p", "interval_ms=2"] + self.faulty() +
                     ["--sink", "jsonl", "-p", "path=" + self.path("b.jsonl")]) as t:
            t.wait_for_log("dropping the oldest events")
            wait_until(lambda: t.counters()["events read"] == 20000, timeout=30,
                       what="all events read")
            os.unlink(self.down)
            rc = t.proc.wait(timeout=60)
            err = t.stderr()
        self.assertEqual(rc, 0, err)
        a = lines(self.path("a"))
        seqs = [int(x) for x in a if not x.startswith("gap")]
        gaps = [int(x.split()[1]) for x in a if x.startswith("gap")]
        lost = summary(err)["lost in spool"]
        self.assertGreater(lost, 10000)
        # the down sink: the batch it held, the newest events, gap records for the rest
        self.assertEqual(sum(gaps), lost)
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual(seqs[-1], 20000)
        self.assertEqual(len(seqs) + lost, 20000)
        self.assertEqual(err.count("dropping the oldest events"), 1)
        # the sink that kept up: every event either there or counted in a gap record
        with open(self.path("b.jsonl")) as f:
            b = [json.loads(l) for l in f]
        b_seqs = [e["seq"] for e in b if e.get("kind") != "gap"]
        self.assertEqual(b_seqs, sorted(set(b_seqs)))
        self.assertEqual(len(b_seqs) + sum(e["lost"] for e in b if e.get("kind") == "gap"),
                         20000)

    def spool_undelivered(self, count):
        """Runs with the faulty sink down: count events stay in the spool."""
        open(self.down, "w").close()
        with Running(["--spool", self.spool, "--spool-size", "1M", "--stop-grace", "1",
                      "--event", SYNTH, "-p", "count=%d" % count] + self.faulty()) as t:
            t.wait_for_log("is unavailable")
            time.sleep(0.5)
            rc = t.stop(signal.SIGTERM)
            err = t.stderr()
        self.assertEqual(rc, 143, err)
        self.assertIn("stay in the spool for the next start", err)
        s = summary(err)
        self.assertEqual(s["sink faulty undelivered"], count)
        os.unlink(self.down)

    def test_stop_leaves_an_unavailable_sinks_events_for_the_next_start(self):
        self.spool_undelivered(3000)
        r = run(["--spool", self.spool, "--event", "replay", "-p", "path=/dev/null"] +
                self.faulty())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(lines(self.path("a")), [str(i) for i in range(1, 3001)])

    def test_damaged_and_truncated_files_are_reported_and_the_rest_recovered(self):
        count = 4500
        self.spool_undelivered(count)
        segs = self.segments()
        self.assertGreaterEqual(len(segs), 4)
        # the synthetic eventer's events are this host's: compact records
        self.assertEqual({segment_format(x) for x in segs}, {(2, RECORD[2])})
        rec = RECORD[2]
        per_seg = (os.path.getsize(segs[0]) - HEADER) // rec
        # a flipped byte in record 100 of the first file
        with open(segs[0], "r+b") as f:
            f.seek(HEADER + 100 * rec + 40)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xff]))
        # the second file's header is garbage
        with open(segs[1], "r+b") as f:
            f.write(b"garbage!")
        # the last file ends in half a record
        with open(segs[-1], "r+b") as f:
            f.truncate(os.path.getsize(segs[-1]) - rec // 2)
        last_records = (os.path.getsize(segs[-1]) - HEADER) // rec

        r = run(["--spool", self.spool, "--event", "replay", "-p", "path=/dev/null"] +
                self.faulty())
        self.assertEqual(r.returncode, 0, r.stderr)
        name0, name1, name_last = (os.path.basename(x) for x in (segs[0], segs[1], segs[-1]))
        self.assertIn("%s: 1 damaged record at offset %d (position 100)" %
                      (name0, HEADER + 100 * rec), r.stderr)
        self.assertIn("%s: damaged header: file moved aside as %s.damaged" % (name1, name1),
                      r.stderr)
        self.assertIn("%s: ends in a partial record at offset %d" %
                      (name_last, HEADER + last_records * rec), r.stderr)
        self.assertTrue(os.path.exists(segs[1] + ".damaged"))

        a = lines(self.path("a"))
        seqs = [int(x) for x in a if not x.startswith("gap")]
        gaps = [int(x.split()[1]) for x in a if x.startswith("gap")]
        lost_file = set(range(per_seg + 1, 2 * per_seg + 1))
        expected = [i for i in range(1, count) if i != 101 and i not in lost_file]
        self.assertEqual(seqs, expected)
        # a gap record in place of each: damaged record, damaged file, torn record
        self.assertEqual(gaps, [1, per_seg, 1])
        self.assertEqual(summary(r.stderr)["lost in spool"], per_seg + 2)
        self.assertIn("%d events in %s are lost to damage" % (per_seg + 1, self.spool),
                      r.stderr)

    def test_events_of_another_host_go_whole_and_every_event_comes_back_as_it_was(self):
        # this host's events (no host in the line: stamped with --host) make compact
        # records; another host's need the whole record, in a format-1 segment (the
        # format of every version before), which then takes everything until it is full
        # (963 records of 272 bytes in a segment of a 1M spool), then compact again
        own = lambda i: sample_line(i, host=None)
        other = lambda i: sample_line(i, host='"elsewhere"')
        inp = [own(i) for i in range(1, 301)] + [other(i) for i in range(301, 351)] + \
              [own(i) for i in range(351, 1351)]
        path = self.path("in.jsonl")
        with open(path, "w") as f:
            f.write("".join(l + "\n" for l in inp))
        open(self.down, "w").close()
        common = ["--host", "here", "--event", "replay", "-p", "path=" + path]
        with Running(common + ["--spool", self.spool, "--spool-size", "1M", "--stop-grace",
                               "1", "--sink", "jsonl", "-p",
                               "path=" + self.path("spooled.jsonl")] + self.faulty()) as t:
            wait_until(lambda: len(lines(self.path("spooled.jsonl"))) == len(inp),
                       what="the jsonl sink to store every event while the other is down")
            self.assertEqual(t.stop(signal.SIGTERM), 143, t.stderr())
        segs = self.segments()
        self.assertEqual([segment_format(x) for x in segs],
                         [(2, RECORD[2]), (1, RECORD[1]), (2, RECORD[2])])
        sizes = [(os.path.getsize(x) - HEADER) // RECORD[segment_format(x)[0]] for x in segs]
        self.assertEqual(sizes, [300, 963, 1350 - 300 - 963])
        # what the jsonl sink got through the spool is what it gets without one
        r = run(common + ["--spool", "none", "--sink", "jsonl", "-p",
                          "path=" + self.path("direct.jsonl")])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.path("spooled.jsonl"), "rb") as a, \
                open(self.path("direct.jsonl"), "rb") as b:
            spooled, direct = a.read(), b.read()
        self.assertEqual(spooled, direct)
        hosts = [json.loads(l)["host"] for l in direct.splitlines()]
        self.assertEqual(hosts, ["here"] * 300 + ["elsewhere"] * 50 + ["here"] * 1000)
        # the sink that was down gets all of them from the files at the next start
        os.unlink(self.down)
        r = run(["--spool", self.spool, "--event", "replay", "-p", "path=/dev/null"] +
                self.faulty())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(lines(self.path("a")), [str(i) for i in range(1, 1351)])
        self.assertEqual(self.segments(), [])

    def test_a_spool_in_use_is_refused(self):
        with Running(["--spool", self.spool, "--event", SYNTH, "-p", "count=0", "-p",
                      "interval_ms=50", "--sink", FAULTY, "-p", "path=" + self.path("a")]) as t:
            r = run(["--spool", self.spool, "--event", SYNTH, "--sink", FAULTY, "-p",
                     "path=" + self.path("b")])
            self.assertEqual(r.returncode, 2)
            self.assertIn("is in use by another tcp-audit (pid %d)" % t.proc.pid, r.stderr)
            t.stop(signal.SIGTERM)

    def test_on_by_default_in_the_state_directory_and_kill_9_loses_nothing(self):
        state = self.path("state")
        env = dict(os.environ, STATE_DIRECTORY=state)
        default_spool = os.path.join(state, "spool")
        open(self.down, "w").close()
        with Running(["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=1", "-p",
                      "per_read=50"] + self.faulty(), env=env) as t:
            wait_until(lambda: t.counters()["events read"] >= 3000, what="3000 events read")
            self.assertTrue(glob.glob(os.path.join(default_spool, "*.spool")))
            self.assertEqual(t.counters()["backlog peak"], 0)  # nothing held in memory
            t.proc.kill()
            t.proc.wait()
        self.assertEqual(lines(self.path("a")), [])
        os.unlink(self.down)
        # the next start with that spool gets every event read before the kill, in order
        r = run(["--spool", default_spool, "--event", "replay", "-p", "path=/dev/null"] +
                self.faulty())
        self.assertEqual(r.returncode, 0, r.stderr)
        a = [int(x) for x in lines(self.path("a"))]
        self.assertGreaterEqual(len(a), 3000)
        self.assertEqual(a, list(range(1, len(a) + 1)))

    def test_not_by_default_for_a_file_nor_with_none(self):
        state = self.path("state")
        env = dict(os.environ, STATE_DIRECTORY=state)
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write("\n".join(tcpaudit.sample_line(i) for i in range(1, 101)) + "\n")
        r = run(["--event", "replay", "-p", "path=" + inp] + self.faulty(down=False), env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary(r.stderr)["sink faulty written"], 100)
        r = run(["--spool", "none", "--event", SYNTH, "-p", "count=100"] +
                self.faulty("b", down=False), env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(lines(self.path("b")), [str(i) for i in range(1, 101)])
        self.assertFalse(os.path.exists(os.path.join(state, "spool")))

    def test_option_mistakes(self):
        for args, msg in [
            (["--spool-size", "10"], "--spool-size: \"10\" is not a size of at least 1M"),
            (["--spool-on-full", "wait"], "\"wait\" is not block or drop_oldest"),
            (["--spool", "none", "--spool-size", "1G"], "need a spool, not --spool none"),
            (["--queue-size", "100"], "--queue-size sizes the in-memory pipeline, which a "
             "spool replaces: give --spool none"),
        ]:
            if "--spool" not in args:
                args = ["--spool", self.spool] + args
            r = run(args + ["--event", SYNTH, "--sink", FAULTY, "-p", "path=" + self.path("x")])
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(msg, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)


if __name__ == "__main__":
    tcpaudit.main()
