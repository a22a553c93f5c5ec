"""The sqlite sink with real SQLite files: every field intact, the original's
tables filled as the original filled them, no duplicates, kill -9 safety and
clear start-up errors."""
import json
import os
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import BIN, run, sample_line, store_lines

# a query written for the original's PostgreSQL tables
ORIGINAL_QUERY = """
SELECT e.timestamp, e.pid_on_cpu, e.comm_on_cpu, e.src_ip, e.dst_ip, e.src_port, e.dst_port,
       e.old_state, e.new_state, s.id, s.inode, s.user_id, s.group_id, s.state
FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid
WHERE e.dst_port = 8080 AND e.new_state = 'SYN-SENT' AND e.timestamp > '2026-01-01'
ORDER BY e.timestamp
"""


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

    def test_original_tables_and_query(self):
        self.replay()
        # one socket_info row per event with socket info, linked to its event
        info = self.rows("SELECT e.seq, s.id, s.inode, s.user_id, s.group_id, s.state"
                         " FROM tcp_events_socket_info s JOIN tcp_events e"
                         " ON s.tcp_event_uid = e.uid ORDER BY e.seq")
        self.assertEqual([r[0] for r in info], [1, 2, 3, 4, 5, 6])
        self.assertEqual(info[0][1:], (b"%x" % 1001, 50001, 1000, 1000, b"CONNECTING"))
        uids = self.rows("SELECT uid FROM tcp_events UNION ALL SELECT uid FROM"
                         " tcp_events_socket_info")
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

    def test_schema_version(self):
        self.replay()
        self.assertEqual(self.rows("PRAGMA user_version"), [(1,)])
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


if __name__ == "__main__":
    tcpaudit.main()
