"""The pgsql sink against a real PostgreSQL that the test starts itself:
every field intact, the original's tables and queries, a server restart in
the middle of a run losing and duplicating nothing, clear start-up errors
that never show the password."""
import errno
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import pgserver
import schema_v1
import tcpaudit
from tcpaudit import (SNAPSHOT_LINE, Running, reset_lines, run, sample_line, store_lines,
                      summary, wait_until)

ORIGINAL_QUERY = """
SELECT e.timestamp, e.pid_on_cpu, e.comm_on_cpu, host(e.src_ip), host(e.dst_ip), e.src_port,
       e.dst_port, e.old_state, e.new_state, s.id, s.inode, s.user_id, s.group_id, s.state
FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid
WHERE e.dst_port = 8080 AND e.new_state = 'SYN-SENT' AND e.timestamp > '2026-01-01'
ORDER BY e.timestamp
"""

RESETS = ("SELECT timestamp, time_ns, host, direction, reason, family, host(saddr), sport,"
          " host(daddr), dport, state, pid_on_cpu, tid_on_cpu, comm_on_cpu, owner_pid, owner_uid,"
          " owner_comm, sock_cookie, sock_inode, netns, cgroup_id, seq, ktime"
          " FROM tcp_audit_resets ORDER BY seq")

# a database of schema v2 as tcp-audit made it before reset records
V2_BEFORE_RESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "v2-before-resets.sql")

# the columns of the table and the views, with their types
COLUMNS = ("SELECT table_name, ordinal_position, column_name, data_type"
           " FROM information_schema.columns WHERE table_schema = 'public' AND (table_name"
           " IN ('tcp_audit_events', 'tcp_events', 'tcp_events_socket_info', 'tcp_audit_gaps',"
           " 'tcp_audit_snapshots', 'tcp_audit_resets')) ORDER BY 1, 2")


@unittest.skipUnless(pgserver.available(), "needs root and the postgresql package")
class PgsqlSink(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgserver.PostgresServer(durable=True)
        cls.pg.start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.inp = os.path.join(self.tmp.name, "in.jsonl")
        with open(self.inp, "w") as f:
            f.write("\n".join(store_lines()) + "\n")
        PgsqlSink.n += 1
        self.db = "t%d" % PgsqlSink.n
        self.pg.createdb(self.db)

    def tearDown(self):
        self.tmp.cleanup()

    def sink(self):
        return ["--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo(self.db)]

    def q(self, sql):
        return [l.split("|") for l in self.pg.psql(self.db, sql).splitlines()]

    def replay(self, path=None):
        r = run(["--event", "replay", "-p", "path=" + (path or self.inp)] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_snapshot_records_in_their_view_not_in_tcp_events(self):
        with open(self.inp, "a") as f:
            f.write(SNAPSHOT_LINE + "\n")
        self.replay()
        want = [["2026-11-25 01:53:06", "host-a", "inet6", "::1", "8443", "::", "0", "LISTEN",
                 "77", "1000", "nginx", "4242", "99", "4026531840"]]
        q = ("SELECT timestamp, host, family, host(saddr), sport, host(daddr), dport, state,"
             " owner_pid, owner_uid, owner_comm, sock_cookie, sock_inode, netns"
             " FROM tcp_audit_snapshots")
        self.assertEqual(self.q(q), want)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events WHERE src_port = 8443"),
                         [["0"]])
        # a v2 database made before the view gets it when opened
        self.pg.psql(self.db, "DROP VIEW tcp_audit_snapshots")
        with open(self.inp, "w") as f:
            f.write(sample_line(99) + "\n")
        self.replay()
        self.assertEqual(self.q(q), want)

    def test_reset_records_and_errors(self):
        with open(self.inp, "a") as f:
            f.write("\n".join(reset_lines()) + "\n")
        raw = ("SELECT seq, kind, old_state, new_state, reset_direction, reset_reason, error,"
               " sock_cookie, owner_pid FROM tcp_audit_events WHERE seq > 20 ORDER BY seq")
        want = [["21", "3", "1", "1", "1", "11", "", "1021", "100"],
                ["22", "3", "2", "2", "2", "", "", "1022", ""],
                ["23", "3", "0", "0", "1", "1", "", "", ""],
                ["24", "0", "2", "7", "", "", str(errno.ECONNREFUSED), "1024", "100"],
                ["25", "0", "1", "7", "", "", str(errno.ETIMEDOUT), "1025", "100"]]
        resets = [
            ["2026-11-25 01:53:07.1", "1795571587100000021", "host-a", "sent",
             "TCP_ABORT_ON_CLOSE", "inet", "127.0.0.1", "40021", "127.0.0.2", "8080",
             "ESTABLISHED", "100", "101", "curl", "100", "1000", "curl", "1021", "50021",
             "4026531840", "7", "21", "1000021"],
            ["2026-11-25 01:53:07.1", "1795571587100000022", "host-a", "received", "", "inet6",
             "::1", "40022", "2001:db8::42", "443", "SYN-SENT", "0", "", "swapper/0", "", "",
             "", "1022", "", "4026531840", "", "22", "1000022"],
            ["2026-11-25 01:53:07.1", "1795571587100000023", "host-a", "sent", "NO_SOCKET",
             "inet", "127.0.0.1", "9", "127.0.0.1", "40023", "", "0", "", "swapper/1", "", "",
             "", "", "", "4026531840", "", "23", "1000023"]]
        # the second time through the staging table (every event already stored)
        for _ in range(2):
            self.replay()
            self.assertEqual(self.q(raw), want)
            self.assertEqual(self.q("SELECT count(*) FROM tcp_audit_events WHERE"
                                    " reset_direction IS NULL AND reset_reason IS NULL"
                                    " AND error IS NULL"), [[str(len(store_lines()))]])
            self.assertEqual(self.q(RESETS), resets)
            self.assertEqual(self.q("SELECT seq, error FROM tcp_events WHERE error IS NOT NULL"
                                    " ORDER BY seq"), [["24", "ECONNREFUSED"], ["25", "ETIMEDOUT"]])
            for view in ("tcp_events", "tcp_events_socket_info", "tcp_audit_gaps",
                         "tcp_audit_snapshots"):
                self.assertEqual(self.q("SELECT count(*) FROM %s WHERE uid IN (SELECT uid::text"
                                        " FROM tcp_audit_events WHERE kind = 3)" % view),
                                 [["0"]], view)
            self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["9"]])
        # tcp_events' columns as they were, then error
        self.assertEqual([r[0] for r in self.q(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tcp_events'"
            " ORDER BY ordinal_position")],
            ["uid", "timestamp", "pid_on_cpu", "comm_on_cpu", "src_ip", "dst_ip", "src_port",
             "dst_port", "old_state", "new_state", "time_ns", "family", "tid_on_cpu",
             "owner_pid", "owner_uid", "owner_comm", "sock_cookie", "netns", "cgroup_id",
             "host", "seq", "ktime", "error"])

    def test_v2_database_made_before_resets_is_brought_up_to_date(self):
        with open(V2_BEFORE_RESETS) as f:
            self.pg.psql_script(self.db, f.read())
        self.assertEqual(self.q("SELECT count(*), max(attnum) FROM pg_attribute WHERE attrelid ="
                                " 'tcp_audit_events'::regclass AND attnum > 0"), [["28", "28"]])
        self.assertEqual(self.q("SELECT to_regclass('tcp_audit_resets')"), [[""]])
        old = ("SELECT * FROM %s WHERE uid IN (SELECT uid::text FROM tcp_audit_events"
               " WHERE seq IS NULL OR seq < 20) ORDER BY uid")
        before = {v: self.q(old % v) for v in ("tcp_events", "tcp_events_socket_info",
                                               "tcp_audit_gaps", "tcp_audit_snapshots")}
        self.assertEqual([len(r) for r in before.values()], [7, 6, 1, 1])
        with open(self.inp, "w") as f:
            f.write("\n".join(reset_lines()) + "\n")
        r = run(["--event", "replay", "-p", "path=" + self.inp] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("schema version 2 brought up to date: 4 columns added, views made again",
                      r.stderr)
        # the columns and views of a database made now (the chunk's columns too)
        PgsqlSink.n += 1
        fresh = "t%d" % PgsqlSink.n
        self.pg.createdb(fresh)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                 "conninfo=" + self.pg.conninfo(fresh)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.pg.psql(self.db, COLUMNS), self.pg.psql(fresh, COLUMNS))
        chunk = ("SELECT column_name, data_type FROM information_schema.columns WHERE"
                 " table_name = 'tcp_audit_events_2026112501' ORDER BY ordinal_position")
        self.assertEqual(self.pg.psql(self.db, chunk), self.pg.psql(fresh, chunk))
        # the rows it had, as they were, with no error and no reset fields
        for view, rows in before.items():
            after = self.q(old % view)
            if view == "tcp_events":
                self.assertEqual({a[-1] for a in after}, {""})
                after = [a[:-1] for a in after]
            self.assertEqual(after, rows, view)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_audit_events WHERE"
                                " reset_direction IS NULL AND reset_reason IS NULL"
                                " AND error IS NULL"), [["9"]])
        # and the new events, in the chunk that was there
        self.assertEqual(self.q("SELECT seq, direction, reason, state FROM tcp_audit_resets"
                                " ORDER BY seq"),
                         [["21", "sent", "TCP_ABORT_ON_CLOSE", "ESTABLISHED"],
                          ["22", "received", "", "SYN-SENT"], ["23", "sent", "NO_SOCKET", ""]])
        self.assertEqual(self.q("SELECT seq, error FROM tcp_events WHERE seq > 20 ORDER BY seq"),
                         [["24", "ECONNREFUSED"], ["25", "ETIMEDOUT"]])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_audit_events_2026112501"), [["14"]])
        # up to date now: opened again, nothing to do, nothing stored twice
        r = run(["--event", "replay", "-p", "path=" + self.inp] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("brought up to date", r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_audit_events"), [["14"]])

    def test_every_field_arrives(self):
        self.replay()
        got = self.q("SELECT timestamp, pid_on_cpu, comm_on_cpu, host(src_ip), host(dst_ip),"
                     " src_port, dst_port, old_state, new_state, time_ns, family, tid_on_cpu,"
                     " owner_pid, owner_uid, owner_comm, sock_cookie, netns, cgroup_id, host,"
                     " seq, ktime FROM tcp_events ORDER BY seq")
        want = [json.loads(l) for l in store_lines() if '"gap"' not in l]
        self.assertEqual(len(got), len(want))
        opt = lambda w, k: "" if w.get(k) is None else str(w[k])  # noqa: E731
        for w, g in zip(want, got):
            comm = 'we"i\trd\xff' if w["seq"] == 6 else w["comm_on_cpu"]
            self.assertEqual(g[0], w["time"].replace("T", " ")[:26].rstrip("0").rstrip("."))
            self.assertEqual(g[1:], [
                str(w["pid_on_cpu"]), comm, w["saddr"], w["daddr"], str(w["sport"]),
                str(w["dport"]), w["old_state"], w["new_state"], g[9], w["family"],
                opt(w, "tid_on_cpu"), opt(w, "owner_pid"), opt(w, "owner_uid"),
                opt(w, "owner_comm"), opt(w, "sock_cookie"), opt(w, "netns"),
                opt(w, "cgroup_id"), w["host"], str(w["seq"]), opt(w, "ktime")])
        self.assertEqual(got[0][9], "1795571587000000001")  # nanoseconds kept
        self.assertEqual(self.q("SELECT timestamp, host, stage, lost FROM tcp_audit_gaps"),
                         [["2026-11-25 01:53:08", "host-a", "kernel", "42"]])

    def test_original_tables_and_query(self):
        self.replay()
        info = self.q("SELECT e.seq, s.id, s.inode, s.user_id, s.group_id, s.state FROM"
                      " tcp_events_socket_info s JOIN tcp_events e ON s.tcp_event_uid = e.uid"
                      " ORDER BY e.seq")
        self.assertEqual([r[0] for r in info], ["1", "2", "3", "4", "5", "6"])
        self.assertEqual(info[0][1:], ["%x" % 1001, "50001", "1000", "1000", "CONNECTING"])
        rows = self.q(ORIGINAL_QUERY)
        self.assertEqual(len(rows), 7)
        self.assertEqual(rows[0][3:9], ["127.0.0.1", "127.0.0.2", "40001", "8080", "CLOSED",
                                        "SYN-SENT"])
        self.assertEqual(rows[6][9], "")  # no socket info for that one
        # the original's ON DELETE CASCADE still holds
        self.pg.psql(self.db, "DELETE FROM tcp_events WHERE seq = 1")
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_socket_info"), [["5"]])

    def test_same_uids_as_sqlite(self):
        self.replay()
        db = os.path.join(self.tmp.name, "x.db")
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "sqlite", "-p",
                 "path=" + db])
        self.assertEqual(r.returncode, 0, r.stderr)
        import sqlite3
        with sqlite3.connect(db) as c:
            lite = sorted(u for (u,) in c.execute("SELECT uid FROM tcp_events"))
        self.assertEqual(sorted(r[0] for r in self.q("SELECT uid FROM tcp_events")), lite)

    def test_replaying_twice_inserts_nothing_new(self):
        self.replay()
        self.replay()
        self.assertEqual(self.q("SELECT (SELECT count(*) FROM tcp_events),"
                                " (SELECT count(*) FROM tcp_events_socket_info),"
                                " (SELECT count(*) FROM tcp_audit_gaps)"), [["7", "6", "1"]])

    def test_the_original_tables_are_migrated(self):
        self.pg.psql(self.db, """
            CREATE TABLE tcp_events (uid TEXT PRIMARY KEY, timestamp TIMESTAMP,
              pid_on_cpu INTEGER, comm_on_cpu TEXT, src_ip INET, dst_ip INET, src_port INTEGER,
              dst_port INTEGER, old_state TEXT, new_state TEXT);
            INSERT INTO tcp_events VALUES ('6f1c0cde-0000-4000-8000-000000000001',
              '2025-01-01 00:00:00', 1, 'old', '10.0.0.1', '10.0.0.2', 1, 2, 'LISTEN',
              'CLOSED');""")
        self.replay()
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["8"]])
        self.assertEqual(self.q("SELECT comm_on_cpu, owner_pid FROM tcp_events"
                                " WHERE uid LIKE '6f1c0cde%'"), [["old", ""]])

    def dated_lines(self, days_ago):
        """store_lines' events, each day of days_ago in turn (UTC)."""
        import datetime
        today = datetime.datetime.now(datetime.timezone.utc).date()
        out = []
        for i, line in enumerate(l for l in store_lines() if '"gap"' not in l):
            day = today - datetime.timedelta(days=days_ago[i % len(days_ago)])
            out.append(line.replace('"time":"2026-11-25T', '"time":"%sT' % day.isoformat()))
        path = os.path.join(self.tmp.name, "dated-%s.jsonl" % "-".join(map(str, days_ago)))
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
        return path

    def partitions(self):
        return sorted(r[0] for r in self.q(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'tcp_audit_events'::regclass"))

    def indexes(self, table):
        return sorted(r[0] for r in self.q(
            "SELECT indexname FROM pg_indexes WHERE tablename = '%s'" % table))

    def test_partitioned_by_day(self):
        import datetime
        path = self.dated_lines([10, 1, 0])
        r = run(["--event", "replay", "-p", "path=" + path] + self.sink() + ["-p", "partition=day"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT relkind FROM pg_class WHERE relname = 'tcp_audit_events'"),
                         [["p"]])
        today = datetime.datetime.now(datetime.timezone.utc).date()
        days = sorted((today - datetime.timedelta(days=d)).strftime("%Y%m%d") for d in (10, 1, 0))
        self.assertEqual(self.partitions(), ["tcp_audit_events_" + d for d in days])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_audit_events_" + days[0]), [["3"]])
        # the same again (without the option: the store keeps its chunks): nothing twice
        r = run(["--event", "replay", "-p", "path=" + path] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT (SELECT count(*) FROM tcp_events),"
                                " (SELECT count(*) FROM tcp_events_socket_info)"), [["7", "6"]])
        # the original's join and cascade still work
        self.assertEqual(len(self.q("SELECT e.uid FROM tcp_events e JOIN tcp_events_socket_info s"
                                    " ON s.tcp_event_uid = e.uid")), 6)
        self.pg.psql(self.db, "DELETE FROM tcp_events WHERE seq = 1")
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_socket_info"), [["5"]])

    def test_hour_chunks_get_their_indexes_when_they_close(self):
        # events over four hours, then one two hours later: the first four close
        lines = [sample_line(i, time='"2026-11-25T%02d:%02d:07.%09dZ"' % (i // 10, i % 60, i))
                 for i in range(1, 40)]
        # a chunk closes per batch written after it may: four batches more
        lines += [sample_line(i, time='"2026-11-25T06:00:00.%09dZ"' % i) for i in range(40, 80)]
        path = os.path.join(self.tmp.name, "hours.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = run(["--batch-size", "10", "--event", "replay", "-p", "path=" + path] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        hours = ["tcp_audit_events_20261125%02d" % h for h in (0, 1, 2, 3, 6)]
        self.assertEqual(self.partitions(), hours)
        for h in hours[:4]:
            self.assertIn("indexed the closed chunk %s" % h, r.stderr)
            for kind in ("_cookie", "_dst", "_owner", "_uid"):
                self.assertIn(h + kind, self.indexes(h))
        self.assertNotIn("indexed the closed chunk %s" % hours[4], r.stderr)
        self.assertFalse([i for i in self.indexes(hours[4]) if i.endswith("_dst")])
        # lookups on a closed chunk use them
        uid = self.q("SELECT uid FROM tcp_events WHERE seq = 5")[0][0]
        plan = self.pg.psql(self.db, "SET enable_seqscan = off; EXPLAIN " +
                            ORIGINAL_QUERY.replace("WHERE", "WHERE e.uid = '%s' AND" % uid))
        self.assertIn(hours[0] + "_uid", plan)
        self.assertEqual(len(self.q(ORIGINAL_QUERY.replace("WHERE",
                                                           "WHERE e.uid = '%s' AND" % uid))), 1)
        plan = self.pg.psql(self.db, "SET enable_seqscan = off; EXPLAIN SELECT * FROM"
                            " tcp_audit_events WHERE daddr = '127.0.0.2' AND dport = 8080")
        self.assertIn(hours[0] + "_dst", plan)
        # a restart finds nothing left to index but the open chunk
        r = run(["--event", "replay", "-p", "path=" + path] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("indexed the closed chunk", r.stderr)

    def test_retention_drops_old_days(self):
        import datetime
        old = self.dated_lines([10, 0])
        r = run(["--event", "replay", "-p", "path=" + old] + self.sink() + ["-p", "partition=day"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.partitions()), 2)
        r = run(["--event", "replay", "-p", "path=" + self.dated_lines([0])] + self.sink() +
                ["-p", "retention=5"])
        self.assertEqual(r.returncode, 0, r.stderr)
        gone = (datetime.datetime.now(datetime.timezone.utc).date() -
                datetime.timedelta(days=10)).strftime("%Y%m%d")
        self.assertIn("dropped tcp_audit_events_%s (older than 5 days)" % gone, r.stderr)
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
        self.assertEqual(self.partitions(), ["tcp_audit_events_" + today])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_retention_with_hour_chunks(self):
        r = run(["--event", "replay", "-p", "path=" + self.dated_lines([3, 0])] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.partitions()), 2, r.stderr)
        r = run(["--event", "replay", "-p", "path=/dev/null"] + self.sink() + ["-p", "retention=2"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.partitions()), 1, r.stderr)
        self.assertIn("dropped tcp_audit_events_", r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["3"]])

    def test_other_chunks_asked_of_an_existing_store(self):
        self.replay()
        r = run(["--event", "replay", "-p", "path=" + self.inp] + self.sink() +
                ["-p", "partition=day"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("tcp_audit_events is in chunks of an hour; partition=day applies to a new"
                      " database", r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def replay_through_a_restart(self, total, at, extra=()):
        """Replays total sample lines through a pipe, the server killed with -9
        after line `at` and started again; returns (exit status, stderr)."""
        fifo = os.path.join(self.tmp.name, "fifo")
        os.mkfifo(fifo)
        with Running(["--batch-size", "500", "--event", "replay", "-p", "path=" + fifo] +
                     list(extra) + self.sink(), wait_started=False) as t:
            with open(fifo, "w") as f:
                for i in range(1, total + 1):
                    f.write(sample_line(i) + "\n")
                    if i % 5000 == 0:
                        f.flush()
                        time.sleep(0.1)
                    if i == at:
                        f.flush()
                        time.sleep(0.5)
                        self.pg.kill9()
                        time.sleep(3)
                        self.pg.start()
            return t.wait(timeout=120), t.stderr()

    def test_server_restart_mid_run_loses_and_duplicates_nothing(self):
        total = 60000
        rc, err = self.replay_through_a_restart(total, 20000)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.q("SELECT count(*), count(DISTINCT seq), min(seq), max(seq)"
                                " FROM tcp_events"), [[str(total), str(total), "1", str(total)]])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_socket_info"), [[str(total)]])
        self.assertEqual(err.count("connection lost"), 1, err)  # once per outage
        self.assertEqual(err.count("is back"), 1, err)         # and once on recovery
        self.assertEqual(summary(err)["sink pgsql undelivered"], 0)

    def sealed_db(self, lines, batch=500, extra=()):
        """A fresh database with lines replayed into it with --seal; the
        verification key in self.vkey."""
        if not hasattr(self, "vkey"):
            self.key = os.path.join(self.tmp.name, "seal.key")
            r = run(["seal-init", self.key])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.vkey = r.stdout.strip()
        PgsqlSink.n += 1
        db = "sealed%d" % PgsqlSink.n
        self.pg.createdb(db)
        with open(self.inp, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--batch-size", str(batch),
                 "--seal", self.key, "--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo(db)]
                + list(extra))
        self.assertEqual(r.returncode, 0, r.stderr)
        return db

    def verify(self, db, expect):
        r = run(["verify", self.pg.conninfo(db), "--verify-key", self.vkey])
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        last = [l.split(":")[0] for l in r.stdout.splitlines()[-1:]]
        self.assertEqual(last, ["FAILED" if expect else "OK"], r.stdout + r.stderr)
        return r.stdout

    def test_sealed_store_verifies_and_tampering_is_named(self):
        # every field, a command name with a byte that is not UTF-8, a gap record
        lines = store_lines() + [sample_line(i) for i in range(100, 2100)]
        # and one with the capturing machine's id
        lines.append(sample_line(2500).replace('"host":"host-a",',
                                               '"host":"host-a","machine":"0123456789abcdef",'))
        db = self.sealed_db(lines)
        out = self.verify(db, 0)
        self.assertIn("%d events verified in 6 seals of 1 run" % len(lines), out)
        run_id = lambda db: self.pg.psql(db, "SELECT run FROM tcp_audit_seals LIMIT 1")[:8]
        # one row deleted: it was the 19th event of the first batch
        self.pg.psql(db, "DELETE FROM tcp_audit_events WHERE seq = 110")
        out = self.verify(db, 1)
        self.assertIn("event 19 of seal %s #0 is missing (deleted)" % run_id(db), out)
        # one address changed
        db = self.sealed_db(lines)
        altered = self.pg.psql(db, "SELECT uid FROM tcp_audit_events WHERE seq = 120").strip()
        self.pg.psql(db, "UPDATE tcp_audit_events SET saddr = '10.0.0.99' WHERE seq = 120")
        out = self.verify(db, 1)
        self.assertIn("event %s: event altered (it was event 29 of seal %s #0"
                      % (altered, run_id(db)), out)
        # the machine changed (the last line: the 9th event of the fifth batch)
        altered = self.pg.psql(db, "SELECT uid FROM tcp_audit_events WHERE seq = 2500").strip()
        self.pg.psql(db, "UPDATE tcp_audit_events SET machine = '0123456789abcdee'"
                         " WHERE seq = 2500")
        out = self.verify(db, 1)
        self.assertIn("event %s: event altered (it was event 9 of seal %s #4"
                      % (altered, run_id(db)), out)
        # a forged row: another's copy with another port and uid
        db = self.sealed_db(lines)
        self.pg.psql(db, "CREATE TEMP TABLE f AS SELECT * FROM tcp_audit_events WHERE seq = 130;"
                         " UPDATE f SET dport = 4444,"
                         " uid = overlay(uid::text placing 'ffff' from 25 for 4)::uuid;"
                         " INSERT INTO tcp_audit_events SELECT * FROM f;")
        forged = self.pg.psql(db, "SELECT uid FROM tcp_audit_events WHERE dport = 4444").strip()
        out = self.verify(db, 1)
        self.assertIn("event %s: an event no seal covers" % forged, out)
        # a seal dropped, and the end cut off
        db = self.sealed_db(lines)
        self.pg.psql(db, "DELETE FROM tcp_audit_seals WHERE idx = 2")
        out = self.verify(db, 1)
        self.assertIn("seal #2 of run %s is missing" % run_id(db), out)
        self.assertIn("(500 in time order): events no seal covers", out)
        self.pg.psql(db, "DELETE FROM tcp_audit_seals WHERE idx >= 4")
        out = self.verify(db, 1)
        self.assertIn("has no closing seal after #3", out)

    def test_sealed_across_a_server_restart_verifies(self):
        """A batch retried after the server came back goes with the same seal
        (its COMMIT may have made it before the crash): nothing twice, the
        chain whole."""
        total = 30000
        self.key = os.path.join(self.tmp.name, "seal.key")
        r = run(["seal-init", self.key])
        self.vkey = r.stdout.strip()
        rc, err = self.replay_through_a_restart(total, 10000, ["--seal", self.key])
        self.assertEqual(rc, 0, err)
        self.assertIn("connection lost", err)
        out = self.verify(self.db, 0)
        self.assertIn("%d events verified" % total, out)

    def start_error(self, conninfo, env=None, lines=1):
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                 "conninfo=" + conninfo], env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), lines, r.stderr)
        self.assertNotIn(pgserver.PASSWORD, r.stderr)
        return r.stderr

    def test_unreachable_server_is_waited_for(self):
        # no server there (yet): capture goes on and the events wait for it
        # (the fault tests check that they arrive when it comes up)
        with Running(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                      "conninfo=host=/nonexistent-dir dbname=x user=postgres"]) as t:
            t.wait_for_log("holding the events and retrying to connect to "
                           "postgres@/nonexistent-dir:5432/x")
            # every line read before the stop (slow under valgrind)
            wait_until(lambda: t.counters()["events read"] == len(store_lines()), 60,
                       "the replay to be read")
            t.proc.send_signal(signal.SIGINT)
            t.wait_for_log("got SIGINT")
            rc = t.stop(signal.SIGINT)  # the second signal: give up on the sink
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        self.assertEqual(summary(err)["sink pgsql undelivered"], len(store_lines()))

    def test_malformed_conninfo(self):
        err = self.start_error("host=/tmp dbname")
        self.assertIn("cannot connect to PostgreSQL", err)
        self.assertIn('missing "=" after "dbname"', err)

    def test_wrong_password_is_never_shown(self):
        err = self.start_error("host=%s dbname=%s user=audit password=wrong-%s"
                               % (self.pg.socket_dir, self.db, pgserver.PASSWORD), lines=2)
        self.assertIn("password authentication failed", err)
        self.assertIn("conninfo= holds a password", err)  # the warning, then the error
        self.assertIn("audit@", err)
        env = dict(os.environ, PGPASSWORD="wrong-" + pgserver.PASSWORD, PGUSER="audit",
                   PGHOST=self.pg.socket_dir, PGDATABASE=self.db)
        self.assertIn("password authentication failed", self.start_error("", env=env))

    def test_verify_and_report_never_show_a_password(self):
        """verify and report name the store as user@host:port/db, not as the
        conninfo given (which can hold a password), also when it is refused."""
        self.replay()
        self.pg.psql(self.db, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO audit")
        key = os.path.join(self.tmp.name, "k")
        vkey = run(["seal-init", key]).stdout.strip()
        for pw in (pgserver.PASSWORD, "wrong-" + pgserver.PASSWORD):
            ci = "host=%s dbname=%s user=audit password=%s" % (self.pg.socket_dir, self.db, pw)
            for args in (["verify", ci, "--verify-key", vkey], ["report", ci]):
                r = run(args)
                self.assertEqual(r.returncode, 2 if args[0] == "verify" or pw != pgserver.PASSWORD
                                 else 0, r.stdout + r.stderr)
                self.assertNotIn(pgserver.PASSWORD, r.stdout + r.stderr)
                if pw == pgserver.PASSWORD:
                    self.assertIn("audit@%s:" % self.pg.socket_dir, r.stdout + r.stderr)
                else:
                    self.assertIn("password authentication failed", r.stderr)

    def test_right_password_from_environment(self):
        self.pg.psql(self.db, "GRANT ALL ON SCHEMA public TO audit")
        env = dict(os.environ, PGPASSWORD=pgserver.PASSWORD, PGUSER="audit",
                   PGHOST=self.pg.socket_dir, PGDATABASE=self.db)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(pgserver.PASSWORD, r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_password_in_conninfo_is_warned_about_and_a_passfile_is_not(self):
        """A password on the command line is visible to every local user
        (/proc/PID/cmdline): one warning, the password itself never shown;
        a password file (libpq's passfile=, or PGPASSFILE) gives none."""
        self.pg.psql(self.db, "GRANT ALL ON SCHEMA public TO audit")
        base = "host=%s dbname=%s user=audit" % (self.pg.socket_dir, self.db)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                 "conninfo=%s password=%s" % (base, pgserver.PASSWORD)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.count("conninfo= holds a password"), 1, r.stderr)
        self.assertNotIn(pgserver.PASSWORD, r.stderr)
        passfile = os.path.join(self.tmp.name, "pgpass")
        with open(os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("*:*:*:audit:%s\n" % pgserver.PASSWORD)
        for conninfo, env in ((base + " passfile=" + passfile, None),
                              (base, dict(os.environ, PGPASSFILE=passfile))):
            r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                     "conninfo=" + conninfo], env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("password", r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_missing_database(self):
        err = self.start_error(self.pg.conninfo("no_such_db"))
        self.assertIn('database "no_such_db" does not exist', err)


# n v1 events spread over two days from 2026-11-24 (UTC), two thirds with socket info,
# every 7th IPv6, and a gap record
V1_FILL = """
INSERT INTO tcp_events SELECT
 lpad(to_hex(t >> 32), 8, '0') || '-' || lpad(to_hex((t >> 16) & 65535), 4, '0') || '-' ||
 lpad(to_hex(t & 65535), 4, '0') || '-' || lpad(to_hex(i & 65535), 4, '0') || '-' ||
 lpad(to_hex((i * 2654435761) & 281474976710655), 12, '0'),
 '1970-01-01'::timestamp + ((t + 500) / 1000) * interval '1 microsecond',
 1000 + i %% 50, 'proc' || (i %% 50),
 CASE WHEN i %% 7 = 0 THEN '::1'::inet ELSE ('10.0.0.' || (i %% 200))::inet END,
 CASE WHEN i %% 7 = 0 THEN ('2001:db8::' || (i %% 90))::inet
      ELSE ('10.1.0.' || (i %% 250))::inet END,
 30000 + i %% 30000, 80 + i %% 3,
 CASE i %% 3 WHEN 0 THEN 'CLOSED' WHEN 1 THEN 'SYN-SENT' ELSE 'ESTABLISHED' END,
 CASE i %% 3 WHEN 0 THEN 'SYN-SENT' WHEN 1 THEN 'ESTABLISHED' ELSE 'FIN-WAIT-1' END,
 t, CASE WHEN i %% 7 = 0 THEN 'inet6' ELSE 'inet' END, 2000 + i %% 50,
 CASE WHEN i %% 5 = 0 THEN NULL ELSE 1000 + i %% 50 END, CASE WHEN i %% 5 = 0 THEN NULL ELSE 0 END,
 CASE WHEN i %% 5 = 0 THEN NULL ELSE 'owner' || (i %% 50) END, 5000 + i / 5, 4026531840, 7,
 'v1-host', i, 100000 + i
FROM (SELECT i, 1795478400000000000 + i * (172000000000000 / %(n)d) AS t
      FROM generate_series(1, %(n)d) i) x;
INSERT INTO tcp_events_socket_info SELECT 'info-' || uid, uid, to_hex(sock_cookie),
 70000 + seq, 1000, 1001, 'CONNECTED' %(info_ts)s FROM tcp_events WHERE seq %% 3 <> 0;
INSERT INTO tcp_audit_gaps VALUES ('18eb26d8-53eb-6000-0000-000000000001',
 '2026-11-25 01:53:07.5', 1795571587500000000, 'v1-host', 'kernel', 42, NULL, NULL);
"""
SAMPLE = ("SELECT e.uid, e.timestamp, e.pid_on_cpu, e.comm_on_cpu, e.src_ip, e.dst_ip, e.src_port,"
          " e.dst_port, e.old_state, e.new_state, e.time_ns, e.family, e.tid_on_cpu, e.owner_pid,"
          " e.owner_uid, e.owner_comm, e.sock_cookie, e.netns, e.cgroup_id, e.host, e.seq,"
          " e.ktime, s.tcp_event_uid, s.id, s.inode, s.user_id, s.group_id, s.state"
          " FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid"
          " WHERE e.seq %% %d = 1 AND e.host = 'v1-host' ORDER BY e.uid")


@unittest.skipUnless(pgserver.available(), "needs root and the postgresql package")
class PgsqlMigration(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgserver.PostgresServer(durable=True)
        cls.pg.start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def make_v1(self, db, n, partitioned):
        self.pg.createdb(db)
        tables = schema_v1.PGSQL_PARTITIONED_TABLES if partitioned else schema_v1.PGSQL_TABLES
        self.pg.psql(db, tables + schema_v1.PGSQL_REST)
        self.pg.psql(db, V1_FILL % {"n": n, "info_ts": ", timestamp" if partitioned else ""})

    def migrate(self, db, n, partitioned, *options):
        before = self.pg.psql(db, SAMPLE % (n // 97))
        gaps = self.pg.psql(db, "SELECT uid, timestamp, time_ns, host, stage, lost"
                                " FROM tcp_audit_gaps")
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        inp = os.path.join(tmp.name, "in.jsonl")
        with open(inp, "w") as f:
            f.write("\n".join(store_lines()) + "\n")
        r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "pgsql", "-p",
                 "conninfo=" + self.pg.conninfo(db)] + list(options), timeout=900)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("migrating %d events from schema v1 to v2" % n, r.stderr)
        self.assertIn("migrated %d of %d events (100%%)" % (n, n), r.stderr)
        after = self.pg.psql(db, SAMPLE % (n // 97))
        self.assertGreater(after.count("\n"), 90)
        self.assertEqual(after, before)
        q = lambda sql: self.pg.psql(db, sql).strip()  # noqa: E731
        self.assertEqual(q("SELECT count(*) FROM tcp_events"), str(n + 7))
        self.assertEqual(q("SELECT count(*) FROM tcp_events_socket_info"), str(n - n // 3 + 6))
        self.assertIn(gaps.strip(), q("SELECT uid, timestamp, time_ns, host, stage, lost"
                                      " FROM tcp_audit_gaps"))
        self.assertEqual(q("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class"
                           " WHERE relname IN ('tcp_events', 'tcp_events_socket_info',"
                           " 'tcp_audit_gaps') AND relkind = 'v'"),
                         "tcp_audit_gaps,tcp_events,tcp_events_socket_info")
        self.assertEqual(q("SELECT version, chunk FROM tcp_audit_schema"),
                         "2|" + ("day" if partitioned else "hour"))
        # the uids were kept: the same events again store nothing new
        r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "pgsql", "-p",
                 "conninfo=" + self.pg.conninfo(db)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(q("SELECT count(*) FROM tcp_events"), str(n + 7))
        return r.stderr

    def test_v1_partitioned_database_of_1m_events(self):
        n = 20000 if tcpaudit.WRAPPER else 1000000  # under valgrind, a smaller one
        self.make_v1("v1p", n, True)
        self.migrate("v1p", n, True)
        self.assertEqual(self.pg.psql("v1p", "SELECT string_agg(c.relname, ',' ORDER BY 1)"
                                      " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                                      " WHERE i.inhparent = 'tcp_audit_events'::regclass").strip(),
                         "tcp_audit_events_20261124,tcp_audit_events_20261125")

    def test_v1_database_into_hour_chunks(self):
        self.make_v1("v1h", 5000, False)
        err = self.migrate("v1h", 5000, False)
        # the old chunks close as new events come: one is indexed after the first batch
        self.assertIn("indexed the closed chunk tcp_audit_events_20261124", err)

    def test_kill_9_during_migration_leaves_v1_whole(self):
        n = 20000 if tcpaudit.WRAPPER else 300000
        self.make_v1("v1k", n, False)
        with Running(["--event", "replay", "-p", "path=/dev/null", "--sink", "pgsql", "-p",
                      "conninfo=" + self.pg.conninfo("v1k")], wait_started=False) as t:
            t.wait_for_log("migrating %d events" % n, timeout=300)
            t.proc.kill()
            t.wait()
        time.sleep(0.5)  # the server ends the dead session's transaction
        self.assertEqual(self.pg.psql("v1k", "SELECT version FROM tcp_audit_schema").strip(), "1")
        self.assertEqual(self.pg.psql("v1k", "SELECT count(*) FROM tcp_events").strip(), str(n))
        self.assertEqual(self.pg.psql("v1k", "SELECT to_regclass('tcp_audit_events')").strip(), "")


if __name__ == "__main__":
    tcpaudit.main()
