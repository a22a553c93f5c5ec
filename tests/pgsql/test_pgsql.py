"""The pgsql sink against a real PostgreSQL that the test starts itself:
every field intact, the original's tables and queries, a server restart in
the middle of a run losing and duplicating nothing, clear start-up errors
that never show the password."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import pgserver
import tcpaudit
from tcpaudit import Running, run, sample_line, store_lines, summary

ORIGINAL_QUERY = """
SELECT e.timestamp, e.pid_on_cpu, e.comm_on_cpu, host(e.src_ip), host(e.dst_ip), e.src_port,
       e.dst_port, e.old_state, e.new_state, s.id, s.inode, s.user_id, s.group_id, s.state
FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid
WHERE e.dst_port = 8080 AND e.new_state = 'SYN-SENT' AND e.timestamp > '2026-01-01'
ORDER BY e.timestamp
"""


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

    def test_existing_original_tables_are_kept_and_extended(self):
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
            " WHERE i.inhparent IN ('tcp_events'::regclass,"
            " 'tcp_events_socket_info'::regclass)"))

    def test_partitioned_by_day(self):
        import datetime
        path = self.dated_lines([10, 1, 0])
        r = run(["--event", "replay", "-p", "path=" + path] + self.sink() + ["-p", "partition=day"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT relkind FROM pg_class WHERE relname = 'tcp_events'"),
                         [["p"]])
        today = datetime.datetime.now(datetime.timezone.utc).date()
        days = sorted((today - datetime.timedelta(days=d)).strftime("%Y%m%d") for d in (10, 1, 0))
        self.assertEqual(self.partitions(), sorted(["tcp_events_" + d for d in days] +
                                                   ["tcp_events_socket_info_" + d for d in days]))
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_" + days[0]), [["3"]])
        # the same again (without the option: the store stays partitioned): nothing twice
        r = run(["--event", "replay", "-p", "path=" + path] + self.sink())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT (SELECT count(*) FROM tcp_events),"
                                " (SELECT count(*) FROM tcp_events_socket_info)"), [["7", "6"]])
        # the original's join and cascade still work
        self.assertEqual(len(self.q("SELECT e.uid FROM tcp_events e JOIN tcp_events_socket_info s"
                                    " ON s.tcp_event_uid = e.uid")), 6)
        self.pg.psql(self.db, "DELETE FROM tcp_events WHERE seq = 1")
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_socket_info"), [["5"]])

    def test_retention_drops_old_days(self):
        import datetime
        old = self.dated_lines([10, 0])
        r = run(["--event", "replay", "-p", "path=" + old] + self.sink() + ["-p", "partition=day"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.partitions()), 4)
        r = run(["--event", "replay", "-p", "path=" + self.dated_lines([0])] + self.sink() +
                ["-p", "retention=5"])
        self.assertEqual(r.returncode, 0, r.stderr)
        gone = (datetime.datetime.now(datetime.timezone.utc).date() -
                datetime.timedelta(days=10)).strftime("%Y%m%d")
        self.assertIn("dropped tcp_events_%s (older than 5 days)" % gone, r.stderr)
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
        self.assertEqual(self.partitions(), ["tcp_events_" + today,
                                             "tcp_events_socket_info_" + today])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_partitioning_asked_of_an_unpartitioned_store(self):
        self.replay()
        r = run(["--event", "replay", "-p", "path=" + self.inp] + self.sink() +
                ["-p", "partition=day"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("tcp_events exists and is not partitioned", r.stderr)
        r = run(["--event", "replay", "-p", "path=" + self.inp] + self.sink() +
                ["-p", "retention=30"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("retention= needs tables partitioned by day", r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_server_restart_mid_run_loses_and_duplicates_nothing(self):
        total = 60000
        fifo = os.path.join(self.tmp.name, "fifo")
        os.mkfifo(fifo)
        with Running(["--batch-size", "500", "--event", "replay", "-p", "path=" + fifo] +
                     self.sink(), wait_started=False) as t:
            with open(fifo, "w") as f:
                for i in range(1, total + 1):
                    f.write(sample_line(i) + "\n")
                    if i % 5000 == 0:
                        f.flush()
                        time.sleep(0.1)
                    if i == 20000:
                        f.flush()
                        time.sleep(0.5)
                        self.pg.kill9()
                        time.sleep(3)
                        self.pg.start()
            rc = t.wait(timeout=120)
            err = t.stderr()
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.q("SELECT count(*), count(DISTINCT seq), min(seq), max(seq)"
                                " FROM tcp_events"), [[str(total), str(total), "1", str(total)]])
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events_socket_info"), [[str(total)]])
        self.assertEqual(err.count("connection lost"), 1, err)  # once per outage
        self.assertEqual(err.count("is back"), 1, err)         # and once on recovery
        self.assertEqual(summary(err)["sink pgsql undelivered"], 0)

    def start_error(self, conninfo, env=None):
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                 "conninfo=" + conninfo], env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertNotIn(pgserver.PASSWORD, r.stderr)
        return r.stderr

    def test_unreachable_server_is_waited_for(self):
        # no server there (yet): capture goes on and the events wait for it
        # (the fault tests check that they arrive when it comes up)
        with Running(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql", "-p",
                      "conninfo=host=/nonexistent-dir dbname=x user=postgres"]) as t:
            t.wait_for_log("holding the events and retrying to connect to "
                           "postgres@/nonexistent-dir:5432/x")
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
                               % (self.pg.socket_dir, self.db, pgserver.PASSWORD))
        self.assertIn("password authentication failed", err)
        self.assertIn("audit@", err)
        env = dict(os.environ, PGPASSWORD="wrong-" + pgserver.PASSWORD, PGUSER="audit",
                   PGHOST=self.pg.socket_dir, PGDATABASE=self.db)
        self.assertIn("password authentication failed", self.start_error("", env=env))

    def test_right_password_from_environment(self):
        self.pg.psql(self.db, "GRANT ALL ON SCHEMA public TO audit")
        env = dict(os.environ, PGPASSWORD=pgserver.PASSWORD, PGUSER="audit",
                   PGHOST=self.pg.socket_dir, PGDATABASE=self.db)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "pgsql"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(pgserver.PASSWORD, r.stderr)
        self.assertEqual(self.q("SELECT count(*) FROM tcp_events"), [["7"]])

    def test_missing_database(self):
        err = self.start_error(self.pg.conninfo("no_such_db"))
        self.assertIn('database "no_such_db" does not exist', err)


if __name__ == "__main__":
    tcpaudit.main()
