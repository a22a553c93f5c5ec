"""The sqlite sink with real SQLite files: every field intact, the original's
tables filled as the original filled them, no duplicates, kill -9 safety and
clear start-up errors."""
import errno
import json
import os
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
import unittest

import schema_v1
import tcpaudit
from tcpaudit import BIN, SNAPSHOT_LINE, reset_lines, run, sample_line, store_lines

# a query written for the original's PostgreSQL tables
ORIGINAL_QUERY = """
SELECT e.timestamp, e.pid_on_cpu, e.comm_on_cpu, e.src_ip, e.dst_ip, e.src_port, e.dst_port,
       e.old_state, e.new_state, s.id, s.inode, s.user_id, s.group_id, s.state
FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid
WHERE e.dst_port = 8080 AND e.new_state = 'SYN-SENT' AND e.timestamp > '2026-01-01'
ORDER BY e.timestamp
"""

# tcp_events' columns: the original's, ours, then error
TCP_EVENTS_COLUMNS = [
    "uid", "timestamp", "pid_on_cpu", "comm_on_cpu", "src_ip", "dst_ip", "src_port", "dst_port",
    "old_state", "new_state", "time_ns", "family", "tid_on_cpu", "owner_pid", "owner_uid",
    "owner_comm", "sock_cookie", "netns", "cgroup_id", "host", "seq", "ktime", "error"]

RESETS = ("SELECT timestamp, time_ns, host, direction, reason, family, saddr, sport, daddr, dport,"
          " state, pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid, owner_comm,"
          " sock_cookie, sock_inode, netns, cgroup_id, seq, ktime FROM tcp_audit_resets"
          " ORDER BY seq")

# a file of schema v2 as tcp-audit made it before reset records
V2_BEFORE_RESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "v2-before-resets.sql")


class SqliteSink(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.db = os.path.join(self.tmp.name, "events.db")
        self.inp = os.path.join(self.tmp.name, "in.jsonl")
        with open(self.inp, "w") as f:
            f.write("\n".join(store_lines()) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def replay(self, path=None):
        r = run(["--event", "replay", "-p", "path=" + (path or self.inp), "--sink", "sqlite",
                 "-p", "path=" + self.db])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def rows(self, sql):
        with sqlite3.connect(self.db) as db:
            db.text_factory = bytes
            return db.execute(sql).fetchall()

    def test_every_field_arrives(self):
        self.replay()
        want = [json.loads(l) for l in store_lines() if '"gap"' not in l]
        got = self.rows("SELECT timestamp, pid_on_cpu, comm_on_cpu, src_ip, dst_ip, src_port,"
                        " dst_port, old_state, new_state, time_ns, family, tid_on_cpu,"
                        " owner_pid, owner_uid, owner_comm, sock_cookie, netns, cgroup_id,"
                        " host, seq, ktime FROM tcp_events ORDER BY seq")
        self.assertEqual(len(got), len(want))
        for w, g in zip(want, got):
            g = [x.decode("latin-1") if isinstance(x, bytes) else x for x in g]
            self.assertEqual(g[0], w["time"].replace("T", " ").rstrip("Z"))
            self.assertEqual(g[1:11], [w["pid_on_cpu"],
                                       w["comm_on_cpu"].encode("utf-8").decode("latin-1")
                                       if w["seq"] != 6 else 'we"i\trd\xff',
                                       w["saddr"], w["daddr"], w["sport"], w["dport"],
                                       w["old_state"], w["new_state"], g[9], w["family"]])
            self.assertEqual(g[11:], [w.get("tid_on_cpu"), w.get("owner_pid"),
                                      w.get("owner_uid"), w.get("owner_comm"),
                                      w.get("sock_cookie"), w.get("netns"), w.get("cgroup_id"),
                                      w["host"], w["seq"], w.get("ktime")])
        # nanoseconds are kept
        self.assertEqual(got[0][9], 1795571587000000001)
        gaps = self.rows("SELECT timestamp, host, stage, lost FROM tcp_audit_gaps")
        self.assertEqual(gaps, [(b"2026-11-25 01:53:08.000000000", b"host-a", b"kernel", 42)])

    def test_snapshot_records_in_their_view_not_in_tcp_events(self):
        with open(self.inp, "a") as f:
            f.write(SNAPSHOT_LINE + "\n")
        self.replay()
        want = [(b"2026-11-25 01:53:06.000000000", b"host-a", b"inet6", b"::1", 8443, b"::", 0,
                 b"LISTEN", 77, 1000, b"nginx", 4242, 99, 4026531840)]
        q = ("SELECT timestamp, host, family, saddr, sport, daddr, dport, state, owner_pid,"
             " owner_uid, owner_comm, sock_cookie, sock_inode, netns FROM tcp_audit_snapshots")
        self.assertEqual(self.rows(q), want)
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events WHERE src_port = 8443"),
                         [(0,)])
        # a v2 file made before the view gets it when opened
        with sqlite3.connect(self.db) as db:
            db.execute("DROP VIEW tcp_audit_snapshots")
        with open(self.inp, "w") as f:
            f.write(sample_line(99) + "\n")
        self.replay()
        self.assertEqual(self.rows(q), want)

    def test_reset_records_and_errors(self):
        with open(self.inp, "a") as f:
            f.write("\n".join(reset_lines()) + "\n")
        self.replay()
        # the numbers, NULL where the event had none (a reset's state: 0 without a socket)
        self.assertEqual(self.rows(
            "SELECT seq, kind, old_state, new_state, reset_direction, reset_reason, error,"
            " sock_cookie, owner_pid FROM tcp_audit_events WHERE seq > 20 ORDER BY seq"),
            [(21, 3, 1, 1, 1, 11, None, 1021, 100),
             (22, 3, 2, 2, 2, None, None, 1022, None),
             (23, 3, 0, 0, 1, 1, None, None, None),
             (24, 0, 2, 7, None, None, errno.ECONNREFUSED, 1024, 100),
             (25, 0, 1, 7, None, None, errno.ETIMEDOUT, 1025, 100)])
        self.assertEqual(self.rows(
            "SELECT count(*) FROM tcp_audit_events WHERE reset_direction IS NULL"
            " AND reset_reason IS NULL AND error IS NULL"), [(len(store_lines()),)])
        self.assertEqual(self.rows(RESETS), [
            (b"2026-11-25 01:53:07.100000021", 1795571587100000021, b"host-a", b"sent",
             b"TCP_ABORT_ON_CLOSE", b"inet", b"127.0.0.1", 40021, b"127.0.0.2", 8080,
             b"ESTABLISHED", 100, 101, b"curl", 100, 1000, b"curl", 1021, 50021, 4026531840,
             7, 21, 1000021),
            (b"2026-11-25 01:53:07.100000022", 1795571587100000022, b"host-a", b"received",
             None, b"inet6", b"::1", 40022, b"2001:db8::42", 443, b"SYN-SENT", 0, None,
             b"swapper/0", None, None, None, 1022, None, 4026531840, None, 22, 1000022),
            (b"2026-11-25 01:53:07.100000023", 1795571587100000023, b"host-a", b"sent",
             b"NO_SOCKET", b"inet", b"127.0.0.1", 9, b"127.0.0.1", 40023, None, 0, None,
             b"swapper/1", None, None, None, None, None, 4026531840, None, 23, 1000023)])
        self.assertEqual(self.rows("SELECT r.uid FROM tcp_audit_resets r JOIN tcp_audit_events e"
                                   " ON e.uid = r.uid AND e.kind = 3 ORDER BY e.seq"),
                         self.rows("SELECT uid FROM tcp_audit_events WHERE kind = 3 ORDER BY seq"))
        # the error by name beside the state changes; tcp_events' columns as they were, then it
        self.assertEqual(self.rows("SELECT seq, error FROM tcp_events WHERE error IS NOT NULL"
                                   " ORDER BY seq"), [(24, b"ECONNREFUSED"), (25, b"ETIMEDOUT")])
        self.assertEqual([r[1].decode() for r in self.rows("PRAGMA table_info(tcp_events)")],
                         TCP_EVENTS_COLUMNS)
        # resets in their view only
        for view in ("tcp_events", "tcp_events_socket_info", "tcp_audit_gaps",
                     "tcp_audit_snapshots"):
            self.assertEqual(self.rows("SELECT count(*) FROM %s WHERE uid IN (SELECT uid FROM"
                                       " tcp_audit_events WHERE kind = 3)" % view), [(0,)], view)
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events"), [(9,)])

    def test_reset_records_and_errors_arrive_as_fed(self):
        # jsonl -> replay -> sqlite: every key of every line back from the views
        with open(self.inp, "w") as f:
            f.write("\n".join(reset_lines()) + "\n")
        self.replay()
        got = []
        with sqlite3.connect(self.db) as db:
            db.row_factory = sqlite3.Row
            for r in db.execute("SELECT r.*, e.sock_uid, e.sock_gid FROM tcp_audit_resets r"
                                " JOIN tcp_audit_events e ON e.uid = r.uid ORDER BY r.seq"):
                d = {k: r[k] for k in r.keys() if k not in ("uid", "timestamp", "time_ns")}
                d.update(time=r["timestamp"].replace(" ", "T") + "Z", kind="reset")
                got.append(d)
            for r in db.execute("SELECT e.*, s.inode, s.user_id, s.group_id, s.state"
                                " FROM tcp_events e LEFT JOIN tcp_events_socket_info s"
                                " ON s.tcp_event_uid = e.uid ORDER BY e.seq"):
                names = {"src_ip": "saddr", "dst_ip": "daddr", "src_port": "sport",
                         "dst_port": "dport", "inode": "sock_inode", "user_id": "sock_uid",
                         "group_id": "sock_gid", "state": "sock_state"}
                d = {names.get(k, k): r[k] for k in r.keys()
                     if k not in ("uid", "timestamp", "time_ns")}
                d["time"] = r["timestamp"].replace(" ", "T") + "Z"
                got.append(d)
        got = [{k: v for k, v in d.items() if v is not None} for d in got]
        self.assertEqual(got, [json.loads(l) for l in reset_lines()])

    def schema(self, path):
        """A file's columns of tcp_audit_events and its views' SQL."""
        with sqlite3.connect(path) as db:
            return (db.execute("PRAGMA table_info(tcp_audit_events)").fetchall(),
                    db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"
                               " ORDER BY name").fetchall())

    def test_v2_file_made_before_resets_is_brought_up_to_date(self):
        with open(V2_BEFORE_RESETS) as f, sqlite3.connect(self.db) as db:
            db.executescript(f.read())
        columns, views = self.schema(self.db)
        self.assertEqual((len(columns), columns[-1][1]), (28, "gap_lost"))
        self.assertNotIn("tcp_audit_resets", [v[0] for v in views])
        old = ("SELECT * FROM %s WHERE uid IN (SELECT uid FROM tcp_audit_events"
               " WHERE seq IS NULL OR seq < 20) ORDER BY uid")
        before = {v: self.rows(old % v) for v in ("tcp_events", "tcp_events_socket_info",
                                                  "tcp_audit_gaps", "tcp_audit_snapshots")}
        self.assertEqual([len(r) for r in before.values()], [7, 6, 1, 1])
        with open(self.inp, "w") as f:
            f.write("\n".join(reset_lines()) + "\n")
        r = self.replay()
        self.assertIn("schema version 2 brought up to date: 4 columns added, views made again",
                      r.stderr)
        # the schema of a file made now
        fresh = os.path.join(self.tmp.name, "fresh.db")
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "sqlite", "-p",
                 "path=" + fresh])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.schema(self.db), self.schema(fresh))
        # the rows it had, as they were, with no error and no reset fields
        for view, rows in before.items():
            after = self.rows(old % view)
            if view == "tcp_events":
                self.assertEqual({a[-1] for a in after}, {None})
                after = [a[:-1] for a in after]
            self.assertEqual(after, rows, view)
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_audit_events WHERE"
                                   " reset_direction IS NULL AND reset_reason IS NULL"
                                   " AND error IS NULL"), [(9,)])
        # and the new events
        self.assertEqual(self.rows("SELECT seq, direction, reason, state FROM tcp_audit_resets"
                                   " ORDER BY seq"),
                         [(21, b"sent", b"TCP_ABORT_ON_CLOSE", b"ESTABLISHED"),
                          (22, b"received", None, b"SYN-SENT"),
                          (23, b"sent", b"NO_SOCKET", None)])
        self.assertEqual(self.rows("SELECT seq, error FROM tcp_events WHERE seq > 20"
                                   " ORDER BY seq"), [(24, b"ECONNREFUSED"), (25, b"ETIMEDOUT")])
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_audit_events"), [(14,)])
        self.assertEqual(self.rows("PRAGMA integrity_check"), [(b"ok",)])
        # up to date now: opened again, nothing to do, nothing stored twice
        r = self.replay()
        self.assertNotIn("brought up to date", r.stderr)
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_audit_events"), [(14,)])

    def test_original_tables_and_query(self):
        self.replay()
        # one socket_info row per event with socket info, linked to its event
        info = self.rows("SELECT e.seq, s.id, s.inode, s.user_id, s.group_id, s.state"
                         " FROM tcp_events_socket_info s JOIN tcp_events e"
                         " ON s.tcp_event_uid = e.uid ORDER BY e.seq")
        self.assertEqual([r[0] for r in info], [1, 2, 3, 4, 5, 6])
        self.assertEqual(info[0][1:], (b"%x" % 1001, 50001, 1000, 1000, b"CONNECTING"))
        # the socket info is part of its event: the same uid
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events_socket_info"
                                   " WHERE uid <> tcp_event_uid"), [(0,)])
        uids = self.rows("SELECT uid FROM tcp_events")
        self.assertEqual(len({u[0] for u in uids}), len(uids))
        for (u,) in uids:
            self.assertRegex(u.decode(), r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                         r"[0-9a-f]{12}$")
        result = self.rows(ORIGINAL_QUERY)
        self.assertEqual(len(result), 7)
        self.assertEqual(result[0][3:9], (b"127.0.0.1", b"127.0.0.2", 40001, 8080, b"CLOSED",
                                          b"SYN-SENT"))
        self.assertIsNone(result[6][9])  # no socket info for that one

    def test_replaying_twice_inserts_nothing_new(self):
        self.replay()
        self.replay()
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events"), [(7,)])
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events_socket_info"), [(6,)])
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_audit_gaps"), [(1,)])

    def test_many_rows_per_insert_store_what_one_row_inserts_store(self):
        # full runs of a batch go in multi-row INSERTs, the rest row by row; a batch
        # of one takes the row-by-row path only. Every kind of event in both, and
        # each event twice in the same batch.
        lines = store_lines() + reset_lines() + [sample_line(i) for i in range(30, 100)]
        with open(self.inp, "w") as f:
            f.write("\n".join(lines + lines) + "\n")
        tables = []
        for batch in ("1", "4096"):
            db = os.path.join(self.tmp.name, "batch-%s.db" % batch)
            r = run(["--batch-size", batch, "--event", "replay", "-p", "path=" + self.inp,
                     "--sink", "sqlite", "-p", "path=" + db])
            self.assertEqual(r.returncode, 0, r.stderr)
            with sqlite3.connect(db) as c:
                c.text_factory = bytes
                tables.append(c.execute("SELECT * FROM tcp_audit_events ORDER BY uid").fetchall())
        self.assertEqual(len(tables[0]), len(lines))
        self.assertEqual(tables[0], tables[1])
        # with what is new at the end of a row: reset direction, reason, error (machine: none)
        self.assertEqual(sorted((r[24], r[28:31]) for r in tables[0] if 20 < (r[24] or 0) < 30),
                         [(21, (1, 11, None)), (22, (2, None, None)), (23, (1, 1, None)),
                          (24, (None, None, errno.ECONNREFUSED)),
                          (25, (None, None, errno.ETIMEDOUT))])

    def test_schema_version(self):
        self.replay()
        self.assertEqual(self.rows("PRAGMA user_version"), [(2,)])
        self.assertEqual(self.rows("PRAGMA journal_mode"), [(b"wal",)])
        with sqlite3.connect(self.db) as db:
            db.execute("PRAGMA user_version = 99")
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "sqlite", "-p",
                 "path=" + self.db])
        self.assertEqual(r.returncode, 2)
        self.assertIn("schema version 99, newer than", r.stderr)

    def test_kill_9_leaves_whole_batches(self):
        fifo = os.path.join(self.tmp.name, "fifo")
        os.mkfifo(fifo)
        proc = subprocess.Popen([BIN, "--batch-size", "100", "--event", "replay", "-p",
                                 "path=" + fifo, "--sink", "sqlite", "-p", "path=" + self.db],
                                stderr=subprocess.DEVNULL)
        with open(fifo, "w") as f:
            for i in range(1, 200001):
                f.write(sample_line(i) + "\n")
                if i % 20000 == 0:
                    f.flush()
                    time.sleep(0.05)
                if i == 120000:
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait()
        with sqlite3.connect(self.db) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            seqs = [r[0] for r in db.execute("SELECT seq FROM tcp_events ORDER BY seq")]
            infos = db.execute("SELECT count(*) FROM tcp_events_socket_info").fetchone()[0]
        self.assertGreater(len(seqs), 0)
        # committed batches, in order, each with its socket info rows
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(infos, len(seqs))

    def test_bad_paths(self):
        notdb = os.path.join(self.tmp.name, "not.db")
        with open(notdb, "w") as f:
            f.write("this is not a database, just text of some length\n" * 100)
        ro = os.path.join(self.tmp.name, "ro")
        os.mkdir(ro)
        os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
        cases = [
            ("/nonexistent-dir/x.db", "cannot create or write /nonexistent-dir/x.db"),
            (notdb, notdb + " is not an SQLite database"),
        ]
        if os.geteuid() != 0:  # root writes anywhere
            cases.append((os.path.join(ro, "x.db"), "cannot create or write"))
        for path, msg in cases:
            with self.subTest(path=path):
                r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "sqlite",
                         "-p", "path=" + path])
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn(msg, r.stderr)

    def test_default_path_is_in_the_state_directory(self):
        env = dict(os.environ, STATE_DIRECTORY=os.path.join(self.tmp.name, "state"))
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "sqlite"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.db = os.path.join(self.tmp.name, "state", "tcp-audit.db")
        self.assertEqual(self.rows("SELECT count(*) FROM tcp_events"), [(7,)])
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.db)).st_mode), 0o750)

    def test_archive_files_are_for_owner_and_group_only(self):
        """A new archive outside the state directory, and its -wal and -shm
        files while tcp-audit writes, are 0640 whatever the umask; an
        existing file keeps its mode."""
        for umask in (0o022, 0o000):
            db = os.path.join(self.tmp.name, "archive-%o.db" % umask)
            fifo = os.path.join(self.tmp.name, "feed-%o" % umask)
            os.mkfifo(fifo)
            old = os.umask(umask)
            try:
                # the replay's open() of the pipe waits for its writer
                t = tcpaudit.Running(["--event", "replay", "-p", "path=" + fifo,
                                      "--sink", "sqlite", "-p", "path=" + db],
                                     wait_started=False)
            finally:
                os.umask(old)
            with t, open(fifo, "w") as feed:
                t.wait_for_log("tcp-audit: started")
                feed.write("\n".join(store_lines()) + "\n")
                feed.flush()
                self.db = db
                tcpaudit.wait_until(lambda: os.path.exists(db + "-wal") and
                                    self.rows("SELECT count(*) FROM tcp_events") == [(7,)],
                                    30, "the rows")
                for path in (db, db + "-wal", db + "-shm"):
                    self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640, path)
                feed.close()
                self.assertEqual(t.wait(), 0, t.stderr())
        os.chmod(db, 0o600)
        self.replay()  # into self.db, the last archive
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)

    def test_view_value_forms(self):
        lines = [sample_line(1, time='"2026-11-25T01:53:07.000000009Z"', sock_cookie="255",
                             old_state='"NEW-SYN-RECV"', new_state='"TIME-WAIT"',
                             sock_state='"DISCONNECTING"'),
                 sample_line(2, sock_cookie=str(2**64 - 1), family='"inet6"',
                             saddr='"::ffff:10.0.0.1"', daddr='"fe80::1"')]
        with open(self.inp, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.replay()
        self.assertEqual(self.rows(
            "SELECT timestamp, old_state, new_state, src_ip, dst_ip, family, sock_cookie"
            " FROM tcp_events ORDER BY seq"),
            [(b"2026-11-25 01:53:07.000000009", b"NEW-SYN-RECV", b"TIME-WAIT", b"127.0.0.1",
              b"127.0.0.2", b"inet", 255),
             (b"2026-11-25 01:53:07.000000002", b"CLOSED", b"SYN-SENT", b"::ffff:10.0.0.1",
              b"fe80::1", b"inet6", -1)])
        self.assertEqual(self.rows("SELECT id, state FROM tcp_events_socket_info ORDER BY inode"),
                         [(b"ff", b"DISCONNECTING"), (b"ffffffffffffffff", b"CONNECTING")])
        # a state the kernel adds later keeps its number
        with sqlite3.connect(self.db) as db:
            db.execute("UPDATE tcp_audit_events SET new_state = 99 WHERE seq = 1")
        self.assertEqual(self.rows("SELECT new_state FROM tcp_events WHERE seq = 1"), [(b"99",)])

    def test_time_range_by_uid_uses_the_key(self):
        self.replay()
        # the README's way of asking for a time range: a range of uids
        t0, t1 = 1795571587000000002, 1795571587000000004
        sql = ("SELECT seq FROM tcp_audit_events WHERE uid >= printf('%08x-%04x-%04x', ?1 >> 32,"
               " (?1 >> 16) & 65535, ?1 & 65535) AND uid < printf('%08x-%04x-%04x', (?2 + 1) >> 32,"
               " ((?2 + 1) >> 16) & 65535, (?2 + 1) & 65535) ORDER BY uid")
        with sqlite3.connect(self.db) as db:
            self.assertEqual([r[0] for r in db.execute(sql, (t0, t1))], [2, 3, 4])
            plan = " ".join(str(r) for r in db.execute("EXPLAIN QUERY PLAN " + sql, (t0, t1)))
        self.assertIn("USING INDEX sqlite_autoindex_tcp_audit_events_1 (uid>? AND uid<?)", plan)
        # the original's join for one uid uses it too
        with sqlite3.connect(self.db) as db:
            plan = " ".join(str(r) for r in db.execute(
                "EXPLAIN QUERY PLAN " + ORIGINAL_QUERY.replace("WHERE", "WHERE e.uid = 'x' AND")))
        self.assertNotIn("SCAN", plan)


# n v1 events 1 us apart from T0, two thirds with socket info, every 7th IPv6
V1_FILL = """
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n)
INSERT INTO tcp_events SELECT
 printf('%08x-%04x-%04x-%04x-%012x', t >> 32, (t >> 16) & 65535, t & 65535, i & 65535,
        (i * 2654435761) & 281474976710655),
 strftime('%Y-%m-%d %H:%M:%S', t / 1000000000, 'unixepoch') || printf('.%09d', t % 1000000000),
 1000 + i % 50, 'proc' || (i % 50), CASE WHEN i % 7 = 0 THEN '::1' ELSE '10.0.0.' || (i % 200) END,
 CASE WHEN i % 7 = 0 THEN '2001:db8::' || (i % 90) ELSE '10.1.0.' || (i % 250) END,
 30000 + i % 30000, 80 + i % 3,
 CASE i % 3 WHEN 0 THEN 'CLOSED' WHEN 1 THEN 'SYN-SENT' ELSE 'ESTABLISHED' END,
 CASE i % 3 WHEN 0 THEN 'SYN-SENT' WHEN 1 THEN 'ESTABLISHED' ELSE 'FIN-WAIT-1' END,
 t, CASE WHEN i % 7 = 0 THEN 'inet6' ELSE 'inet' END, 2000 + i % 50,
 CASE WHEN i % 5 = 0 THEN NULL ELSE 1000 + i % 50 END, CASE WHEN i % 5 = 0 THEN NULL ELSE 0 END,
 CASE WHEN i % 5 = 0 THEN NULL ELSE 'owner' || (i % 50) END, 5000 + i / 5, 4026531840, 7,
 'v1-host', i, 100000 + i
FROM (SELECT i, 1795571587000000000 + i * 1000 AS t FROM c);
INSERT INTO tcp_events_socket_info SELECT 'info-' || uid, uid, printf('%x', sock_cookie),
 70000 + seq, 1000, 1001, 'CONNECTED' FROM tcp_events WHERE seq % 3 <> 0;
INSERT INTO tcp_audit_gaps VALUES ('18eb26d8-53eb-6000-0000-000000000001',
 '2026-11-25 01:53:07.500000000', 1795571587500000000, 'v1-host', 'kernel', 42, NULL, NULL);
"""


class SqliteMigration(unittest.TestCase):
    N = 20000 if tcpaudit.WRAPPER else 1000000  # under valgrind, a smaller file

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.db = os.path.join(self.tmp.name, "v1.db")
        with sqlite3.connect(self.db) as db:
            db.executescript(schema_v1.SQLITE)
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(V1_FILL.replace(":n", str(self.N)))

    def tearDown(self):
        self.tmp.cleanup()

    def query(self, sql):
        with sqlite3.connect(self.db) as db:
            return db.execute(sql).fetchall()

    def test_v1_file_is_migrated_in_place(self):
        sample = ("SELECT e.uid, e.timestamp, e.pid_on_cpu, e.comm_on_cpu, e.src_ip, e.dst_ip,"
                  " e.src_port, e.dst_port, e.old_state, e.new_state, e.time_ns, e.family,"
                  " e.tid_on_cpu, e.owner_pid, e.owner_uid, e.owner_comm, e.sock_cookie,"
                  " e.netns, e.cgroup_id, e.host, e.seq, e.ktime, s.id, s.inode, s.user_id,"
                  " s.group_id, s.state FROM tcp_events e LEFT JOIN tcp_events_socket_info s"
                  " ON s.tcp_event_uid = e.uid WHERE e.seq %% 9973 = 1 AND e.host = 'v1-host'"
                  " ORDER BY e.uid")
        before = self.query(sample % ())
        gaps = self.query("SELECT uid, timestamp, time_ns, host, stage, lost FROM tcp_audit_gaps")
        inp = os.path.join(self.tmp.name, "in.jsonl")
        with open(inp, "w") as f:
            f.write("\n".join(store_lines()) + "\n")
        r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "sqlite", "-p",
                 "path=" + self.db], timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("migrating %d events from schema v1 to v2" % self.N, r.stderr)
        if self.N >= 200000:  # slices of 100000
            self.assertIn("migrated 100000 of %d events (%d%%)" % (self.N, 10**7 // self.N),
                          r.stderr)
        self.assertIn("migrated %d of %d events (100%%)" % (self.N, self.N), r.stderr)
        self.assertEqual(self.query("PRAGMA user_version"), [(2,)])
        self.assertEqual(sorted(r[0] for r in self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table'")), ["tcp_audit_events"])
        # every v1 event, unchanged as the original's queries see it (the socket
        # info's own uid excepted: it is now its event's), and the new ones after
        after = self.query(sample % ())
        self.assertEqual(len(after), len(before))
        self.assertEqual(after, before)
        self.assertEqual(self.query("SELECT count(*) FROM tcp_events"), [(self.N + 7,)])
        self.assertEqual(self.query("SELECT count(*) FROM tcp_events_socket_info"),
                         [(self.N - self.N // 3 + 6,)])
        self.assertEqual(self.query("SELECT uid, timestamp, time_ns, host, stage, lost"
                                    " FROM tcp_audit_gaps ORDER BY time_ns")[0], gaps[0])
        self.assertEqual(self.query("PRAGMA integrity_check"), [("ok",)])
        # uids were kept: the same events again store nothing new
        r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "sqlite", "-p",
                 "path=" + self.db])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.query("SELECT count(*) FROM tcp_events"), [(self.N + 7,)])

    def test_kill_9_during_migration_leaves_v1_whole(self):
        with tcpaudit.Running(["--event", "replay", "-p", "path=/dev/null", "--sink", "sqlite",
                               "-p", "path=" + self.db], wait_started=False) as t:
            t.wait_for_log("migrating %d events" % self.N, timeout=300)
            if self.N >= 200000:
                t.wait_for_log("migrated 100000 of", timeout=300)
            t.proc.kill()
            t.wait()
        self.assertEqual(self.query("PRAGMA user_version"), [(1,)])
        self.assertEqual(self.query("SELECT count(*) FROM tcp_events"), [(self.N,)])
        self.assertEqual(self.query("SELECT count(*) FROM sqlite_master"
                                    " WHERE name = 'tcp_audit_events'"), [(0,)])
        r = run(["--event", "replay", "-p", "path=/dev/null", "--sink", "sqlite", "-p",
                 "path=" + self.db], timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.query("SELECT count(*) FROM tcp_events"), [(self.N,)])

if __name__ == "__main__":
    tcpaudit.main()
