"""Fault tests with real parts: kernel capture (bpf) of loopback traffic from
the load generator, a real PostgreSQL the test starts, kills and restarts or
whose tablespace fills up, a real SQLite file on a tmpfs and a jsonl file on
an ext4 that fill up, and tcp-audit itself killed with
-9 or stopped with SIGTERM under load.  In each, every event captured must
end up in every sink exactly once (or be counted as lost)."""
import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import pgserver
import tcpaudit
from tcpaudit import Running, run, split_gaps, summary, wait_until

LOADGEN = os.environ.get("TCP_AUDIT_LOADGEN", "")


def loadgen(port, connections):
    out = subprocess.run([LOADGEN, "-t", "2", "-n", str(connections), "-p", str(port)],
                         capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=") for kv in out.split())


def jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.endswith("\n")]


@unittest.skipUnless(pgserver.available() and os.geteuid() == 0,
                     "needs root (kernel tracing) and the postgresql package")
class Faults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgserver.PostgresServer(durable=True)
        cls.pg.start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        if not self.pg.running:
            self.pg.start()
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        Faults.n += 1
        self.db = "f%d" % Faults.n
        self.pg.createdb(self.db)
        self.port, = tcpaudit.free_ports(1)
        # every test captures with bpf: a witness tells the VM's blind spot
        # from lost events (tcpaudit.Witness)
        self.witness = tcpaudit.Witness([self.port])

    def tearDown(self):
        self.witness.__exit__()
        self.tmp.cleanup()

    def wait_for_reference(self, *runs, timeout=30):
        """Waits until the jsonl sink holds every state change the load
        generator's runs (of so many connections each, all ended) caused, 10
        per connection and 2 per run, but for those the witness saw happen in
        the VM's blind spot, which never reach BPF, and those counted as lost
        in gap records (runs the kernel skipped); stops the witness.  Once
        nothing came for 3 s, the blind spot's are known (the runs are over)
        and the wait goes on for the rest until the timeout: an event that
        comes late is late, not lost, and the failure says which it was."""
        want = sum(10 * n + 2 for n in runs)
        start = time.monotonic()
        blind = None
        last, since = -1, start
        while True:
            events, lost = split_gaps(jsonl(self.path("ref.jsonl")))
            n = len(events)
            now = time.monotonic()
            if n != last:
                last, since = n, now
            if blind is None and (n + lost >= want or now - since > 3):
                blind = sum(self.witness.blind().values())
            if blind is not None and n + lost + blind >= want or now - start > timeout:
                break
            time.sleep(0.05)
        if blind is None:  # events still came in at the timeout
            blind = sum(self.witness.blind().values())
        self.assertGreaterEqual(
            n + lost + blind, want,
            "the jsonl sink has %d events of the %d caused after %.1f s (the last came at "
            "%.1f s; %d counted lost, %d in the blind spot; the witness saw %d); the witness "
            "saw these happen and the sink lacks them:\n%s" % (
                n, want, now - start, since - start, lost, blind,
                sum(self.witness.transitions().values()),
                "\n".join(self.witness.unstored(events)) or "(none)"))
        if since - start > 3:
            print("# the jsonl sink's last events came %.1f s into the wait" % (since - start))

    def path(self, name):
        return os.path.join(self.d, name)

    def pg_seqs(self, where=""):
        out = self.pg.psql(self.db, "SELECT seq FROM tcp_events WHERE (src_port = %d OR "
                                    "dst_port = %d) %s ORDER BY seq" % (self.port, self.port,
                                                                        where))
        return [int(x) for x in out.split()]

    def pg_count(self):
        try:
            return int(self.pg.psql(self.db, "SELECT count(*) FROM tcp_events").strip())
        except RuntimeError:
            return -1  # no table yet, or the server is down

    def assert_each_once(self):
        dup = self.pg.psql(self.db, "SELECT count(*) - count(DISTINCT uid) FROM tcp_events")
        self.assertEqual(dup.strip(), "0")

    def capture_args(self, *extra):
        # (no snapshot, no resets: the counts below are of state changes)
        return ["--event", "bpf", "-p", "ports=%d" % self.port, "-p", "snapshot=false", "-p",
                "kinds=state",
                "--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo(self.db), "--sink",
                "jsonl", "-p",
                "path=" + self.path("ref.jsonl")] + list(extra)

    def test_postgres_killed_9_and_restarted_10_s_later(self):
        with Running(["--spool", self.path("spool")] + self.capture_args()) as t:
            loadgen(self.port, 1000)
            wait_until(lambda: self.pg_count() > 0, what="the first rows")
            self.pg.kill9()
            loadgen(self.port, 1000)
            during = len(jsonl(self.path("ref.jsonl")))
            # the other sink is not held back by the outage
            self.wait_for_reference(1000, 1000)
            time.sleep(10)
            self.pg.start()
            loadgen(self.port, 1000)
            time.sleep(1)
            ref = [e for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
            wait_until(lambda: self.pg_count() >= len(ref), 60, "PostgreSQL to catch up")
            rc = t.stop(signal.SIGTERM)
            err = t.stderr()
        self.assertEqual(rc, 143, err)
        self.assertGreater(during, 0)
        ref = [e["seq"] for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
        s = summary(err)
        self.assertEqual(len(ref), s["events read"])
        self.assertEqual(self.pg_seqs(), sorted(ref))
        self.assert_each_once()
        self.assertIn("connection lost", err)
        self.assertIn("is back", err)

    def test_postgres_unreachable_at_start(self):
        self.pg.stop()
        with Running(self.capture_args()) as t:
            t.wait_for_log("holding the events and retrying to connect")
            loadgen(self.port, 2000)
            self.wait_for_reference(2000)
            self.pg.start()
            ref = [e for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
            wait_until(lambda: self.pg_count() >= len(ref), 60, "PostgreSQL to catch up")
            rc = t.stop(signal.SIGTERM)
            err = t.stderr()
        self.assertEqual(rc, 143, err)
        ref = [e["seq"] for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
        # everything from the start, once
        self.assertEqual(self.pg_seqs(), sorted(ref))
        self.assert_each_once()
        self.assertEqual(summary(err)["sink pgsql undelivered"], 0)

    def test_postgres_out_of_disk_space_is_waited_out(self):
        # the events' tables in a tablespace on a small file system that fills up: the
        # server refuses batches (SQLSTATE 53100), an outage that --max-errors (5) does not
        # end, and every event is stored once when the space is back
        space = os.path.join(self.pg.dir, "space-" + self.db)  # where postgres can go
        tablespace = "small_" + self.db
        with tcpaudit.small_file_system(space, 16):
            try:
                pw = pwd.getpwnam("postgres")
                os.chown(space, pw.pw_uid, pw.pw_gid)
                os.chmod(space, 0o700)
                self.pg.psql(self.db, "CREATE TABLESPACE %s LOCATION '%s'" % (tablespace, space))
                self.pg.psql(self.db, "ALTER DATABASE %s SET default_tablespace = %s" % (
                    self.db, tablespace))
                with Running(["--spool", self.path("spool")] + self.capture_args()) as t:
                    loadgen(self.port, 300)
                    wait_until(lambda: self.pg_count() > 0, what="the first rows")
                    filler = os.path.join(space, "filler")
                    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"],
                                   capture_output=True)
                    loadgen(self.port, 3000)
                    t.wait_for_log("holding events and retrying")
                    self.wait_for_reference(300, 3000)
                    # more than --max-errors retries (backoff 0.1, 0.2, ... 3.2 s): still running
                    time.sleep(8)
                    self.assertIsNone(t.proc.poll())
                    os.unlink(filler)
                    ref = [e for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
                    wait_until(lambda: self.pg_count() >= len(ref), 60, "PostgreSQL to catch up")
                    rc = t.stop(signal.SIGTERM)
                    err = t.stderr()
                self.assertEqual(rc, 143, err)
                self.assertIn("cannot take a batch now: ERROR:  could not extend file", err)
                self.assertIn("No space left on device", err)
                self.assertEqual(err.count("holding events and retrying"), 1, err)
                self.assertIn("takes batches again", err)
                self.assertNotIn("failed", err)
                ref = [e["seq"] for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
                self.assertEqual(self.pg_seqs(), sorted(ref))
                self.assert_each_once()
            finally:
                self.pg.dropdb(self.db)
                self.pg.psql("postgres", "DROP TABLESPACE IF EXISTS " + tablespace)

    def test_tcp_audit_killed_9_then_restarted_delivers_the_spool_once(self):
        self.pg.stop()
        spool = self.path("spool")
        with Running(["--spool", spool] + self.capture_args()) as t:
            loadgen(self.port, 2000)
            self.wait_for_reference(2000)
            # the pgsql sink has had nothing: all of it waits in the spool
            t.proc.kill()
            t.proc.wait()
        ref = [e["seq"] for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
        self.pg.start()
        with Running(["--spool", spool] + self.capture_args()) as t:
            wait_until(lambda: self.pg_count() >= len(ref), 60, "the spooled events")
            time.sleep(1)
            rc = t.stop(signal.SIGTERM)
            err = t.stderr()
        self.assertEqual(rc, 143, err)
        self.assertIn("not yet confirmed by pgsql: delivering them first", err)
        self.assertEqual(self.pg_seqs(), sorted(ref))
        self.assert_each_once()

    def test_sigterm_under_load_delivers_everything_read_to_every_sink(self):
        db_path = self.path("events.db")
        done = threading.Event()

        def churn():
            while not done.is_set():
                loadgen(self.port, 500)

        with Running(self.capture_args("--sink", "sqlite", "-p", "path=" + db_path)) as t:
            th = threading.Thread(target=churn)
            th.start()
            try:
                time.sleep(1 if tcpaudit.WRAPPER else 3)
                rc = t.stop(signal.SIGTERM, timeout=600)
                err = t.stderr()
            finally:
                done.set()
                th.join()
        self.assertEqual(rc, 143, err)
        s = summary(err)
        read = s["events read"]
        self.assertGreater(read, 10000)
        for sink in ("pgsql", "jsonl", "sqlite"):
            self.assertEqual(s["sink %s undelivered" % sink], 0, err)
        ref = jsonl(self.path("ref.jsonl"))
        gaps = s["gap records"]
        self.assertEqual(len(ref), read + gaps)
        with sqlite3.connect(db_path) as db:
            rows = db.execute("SELECT count(*) FROM tcp_events").fetchone()[0]
            gap_rows = db.execute("SELECT count(*) FROM tcp_audit_gaps").fetchone()[0]
        self.assertEqual((rows, gap_rows), (read, gaps))
        self.assertEqual(self.pg_count(), read)
        self.assert_each_once()

    def test_sqlite_on_a_full_tmpfs_resumes_when_space_is_freed(self):
        with tcpaudit.small_file_system(self.path("small"), 32) as mnt:
            db_path = os.path.join(mnt, "events.db")
            filler = os.path.join(mnt, "filler")
            args = ["--event", "bpf", "-p", "ports=%d" % self.port, "-p", "snapshot=false",
                    "-p", "kinds=state", "--sink", "sqlite", "-p", "path=" + db_path,
                    "--sink", "jsonl", "-p", "path=" + self.path("ref.jsonl")]
            with Running(args) as t:
                # fill what is left of the file system
                subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"],
                               capture_output=True)
                loadgen(self.port, 2000)
                t.wait_for_log("holding events and retrying")
                self.wait_for_reference(2000)
                self.assertIsNone(t.proc.poll())
                os.unlink(filler)
                ref = [e for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]

                def stored():
                    try:
                        with sqlite3.connect("file:%s?mode=ro" % db_path, uri=True) as db:
                            return db.execute("SELECT count(*) FROM tcp_events").fetchone()[0]
                    except sqlite3.Error:
                        return -1
                wait_until(lambda: stored() >= len(ref), 60, "sqlite to catch up")
                rc = t.stop(signal.SIGTERM)
                err = t.stderr()
            self.assertEqual(rc, 143, err)
            self.assertIn("is writable again", err)
            self.assertEqual(stored(), len(ref))
            self.assertEqual(summary(err)["sink sqlite undelivered"], 0)

    def test_jsonl_on_a_full_ext4_resumes_when_space_is_freed(self):
        # ext4 takes O_DIRECT writes: the blocks' path and its cut-back are tested too.
        # A full file system is an outage, not a failure: the default --max-errors (5)
        # does not stop the run however long it lasts.
        with tcpaudit.small_file_system(self.path("small"), 32, ext4=True) as mnt:
            out = os.path.join(mnt, "events.jsonl")
            filler = os.path.join(mnt, "filler")
            args = ["--event", "bpf", "-p", "ports=%d" % self.port, "-p", "snapshot=false",
                    "-p", "kinds=state", "--spool", self.path("spool"),
                    "--sink", "jsonl", "-p", "path=" + out,
                    "--sink", "jsonl", "-p", "path=" + self.path("ref.jsonl")]
            with Running(args) as t:
                loadgen(self.port, 300)
                wait_until(lambda: jsonl(out), 30, "the first lines")
                flags = tcpaudit.open_flags(t.proc.pid, out)
                self.assertTrue(any(f & os.O_DIRECT for f in flags), "no O_DIRECT on " + out)
                # fill what is left of the file system
                subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"],
                               capture_output=True)
                loadgen(self.port, 3000)
                t.wait_for_log("cannot write to %s: No space left on device: holding events "
                               "and retrying" % out)
                self.wait_for_reference(300, 3000)
                # more than --max-errors retries (backoff 0.1, 0.2, ... 3.2 s): still running
                time.sleep(8)
                self.assertIsNone(t.proc.poll())
                os.unlink(filler)
                ref = [e["seq"] for e in jsonl(self.path("ref.jsonl")) if e.get("kind") != "gap"]
                wait_until(lambda: len(jsonl(out)) >= len(ref), 60, "the full file to catch up")
                rc = t.stop(signal.SIGTERM)
                err = t.stderr()
            self.assertEqual(rc, 143, err)
            self.assertEqual(err.count("holding events and retrying"), 1, err)
            self.assertIn("%s is writable again" % out, err)
            self.assertNotIn("failed", err)
            with open(out) as f:
                self.assertTrue(f.read().endswith("\n"))
            self.assertEqual([e["seq"] for e in jsonl(out) if e.get("kind") != "gap"], ref)
            self.assertEqual(summary(err)["sink jsonl#1 undelivered"], 0)


if __name__ == "__main__":
    tcpaudit.main()
