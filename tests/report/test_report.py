"""tcp-audit report over archives made by a real capture (root: bpf tracing).

One capture, into jsonl (what the kernel gave: the reference), SQLite and
PostgreSQL at once, of a scenario on ports of its own: a churn of N
connections, a refused connect, a connection reset by an abortive close, a
connect that times out (a namespace whose firewall drops the SYN), a
CLOSE-WAIT leak (a server that never closes) and a connection still open at
the end.  The report of each store must give every socket of the jsonl
exactly as the rules say (side, path, outcome), and each case its outcome.
"""
import calendar
import collections
import decimal
import json
import os
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import pgserver
import schema_v1
import tcpaudit
from tcpaudit import BIN, Running, run

LOADGEN = os.environ.get("TCP_AUDIT_LOADGEN", "")
CHURN = 20
FAILED = ("refused", "timed-out", "unreachable")


def report(source, *args):
    """tcp-audit report SOURCE --format json ARGS: the parsed report."""
    r = run(["report", source, "--format", "json"] + list(args))
    if r.returncode != 0:
        raise AssertionError("report failed (%d): %s" % (r.returncode, r.stderr))
    return json.loads(r.stdout, parse_float=decimal.Decimal)


def ns(text):
    """Nanoseconds since the epoch of the report's RFC 3339 UTC time."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 10**9 + \
        int(text[20:29])


def socket_key(c):
    """A connection's identity: host and cookie, or without a cookie (tracefs)
    host, addresses, ports and the time of its first transition."""
    if c.get("sock_cookie") is not None:
        return (c["host"], c["sock_cookie"])
    return (c["host"], c["saddr"], c["sport"], c["daddr"], c["dport"], c["opened"])


# schema v1's columns, as schema v2's views of the original's tables have them
V1_EVENTS = ("uid, timestamp, pid_on_cpu, comm_on_cpu, src_ip, dst_ip, src_port, dst_port,"
             " old_state, new_state, time_ns, family, tid_on_cpu, owner_pid, owner_uid,"
             " owner_comm, sock_cookie, netns, cgroup_id, host, seq, ktime")
V1_GAPS = "uid, timestamp, time_ns, host, stage, lost, seq, ktime"

STARTS = {("CLOSED", None), ("SYN-SENT", None), ("LISTEN", "SYN-RECEIVED")}


def reference(events):
    """The connections of a capture's events, by the README's rules, as a
    dict socket_key -> (side, states, outcome, error)."""
    socks = collections.defaultdict(list)
    instance = collections.Counter()
    for e in sorted(events, key=lambda e: (e["time"], e.get("seq", 0))):
        kind = e.get("kind", "state")
        if kind not in ("state", "reset"):
            continue
        if "sock_cookie" in e:
            socks[(e["host"], e["sock_cookie"])].append(e)
        elif kind == "state" and not (e["new_state"] == "SYN-SENT" and e["sport"] == 0):
            # without a cookie: a socket per addresses and ports, a new one at each start
            tup = (e["host"], e["saddr"], e["sport"], e["daddr"], e["dport"])
            if (e["old_state"], None) in STARTS or (e["old_state"], e["new_state"]) in STARTS:
                instance[tup] += 1
            socks[tup + (instance[tup],)].append(e)
    out = {}
    for key, evs in socks.items():
        st = [e for e in evs if e.get("kind", "state") == "state"]
        if not st:
            continue
        path = [st[0]["old_state"]] + [e["new_state"] for e in st]
        seen = {e["new_state"] for e in st} | {e["old_state"] for e in st}
        side = ("client" if "SYN-SENT" in seen else "server" if "SYN-RECEIVED" in seen
                else "listener" if "LISTEN" in seen else None)
        news = {e["new_state"] for e in st}
        errors = {e.get("error") for e in st} - {None}
        resets = [e for e in evs if e.get("kind") == "reset" and e.get("state") != "LISTEN"]
        if "CLOSED" not in news:
            outcome = "open"
        elif "ECONNREFUSED" in errors:
            outcome = "refused"
        elif "ETIMEDOUT" in errors:
            outcome = "timed-out"
        elif errors & {"EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN"}:
            outcome = "unreachable"
        elif resets or errors & {"ECONNRESET", "EPIPE"}:
            outcome = "reset"
        else:
            outcome = "closed"
        if "sock_cookie" not in st[0]:
            key = key[:5] + (st[0]["time"],)
        out[key] = (side, " ".join(path), outcome, max(errors) if errors else None)
    return out


def capture(cls, eventer):
    """The scenario captured by eventer into jsonl, SQLite and (when there is
    one) PostgreSQL; sets the class's attributes the tests read."""
    cls.tmp = tempfile.TemporaryDirectory(prefix="tcp-audit-report-")
    cls.jsonl = os.path.join(cls.tmp.name, "events.jsonl")
    cls.db = os.path.join(cls.tmp.name, "archive.db")
    cls.pg = None
    sinks = ["--sink", "jsonl", "-p", "path=" + cls.jsonl,
             "--sink", "sqlite", "-p", "path=" + cls.db]
    if pgserver.available():
        cls.pg = pgserver.PostgresServer()
        cls.pg.start()
        cls.pg.createdb("audit")
        cls.conninfo = cls.pg.conninfo("audit")
        sinks += ["--sink", "pgsql", "-p", "conninfo=" + cls.conninfo]
    case = unittest.TestCase()
    cls.scenario = sc = Scenario(case)
    netns = sc.netns_dropping_syns()
    try:
        ports = ",".join(str(p) for p in sc.ports)
        with tcpaudit.Witness(sc.ports) as witness, \
                Running(["--event", eventer, "-p", "ports=" + ports] + sinks) as t:
            cls.start = time.time()
            sc.play(netns)
            time.sleep(0.5)
            rc = t.stop()
            cls.end = time.time()
            cls.stderr = t.stderr()
            cls.blind = witness.blind() if eventer == "bpf" else {}
        case.assertEqual(rc, 130, cls.stderr)
    finally:
        sc.close()
        case.doCleanups()
    cls.events = tcpaudit.read_jsonl(cls.jsonl)
    cls.ref = reference(cls.events)
    cls.sources = [("sqlite", cls.db)] + ([("pgsql", cls.conninfo)] if cls.pg else [])
    cls.reports = {name: report(src, "--stuck", "0.2") for name, src in cls.sources}


def cleanup(cls):
    if cls.pg:
        cls.pg.cleanup()
    cls.tmp.cleanup()


def check_every_socket(test):
    """Each store's report has exactly the jsonl's sockets, each with its
    side, path, outcome and error as the reference computes them."""
    for name, rep in test.reports.items():
        with test.subTest(store=name):
            got = {socket_key(c): (c["side"], c["states"], c["outcome"], c["error"])
                   for c in rep["connections"]}
            test.assertEqual(got, test.ref)
            # a duration to the nanosecond: closed - opened
            test.assertEqual([c["duration_s"] and c["duration_s"] * 10**9
                              for c in rep["connections"]],
                             [ns(c["closed"]) - ns(c["opened"]) if c["closed"] else None
                              for c in rep["connections"]])
            test.assertEqual(rep["totals"]["connections"], len(test.ref))
            for outcome in ("closed", "reset", "refused", "timed-out", "open"):
                test.assertEqual(rep["totals"][outcome],
                                 sum(1 for v in test.ref.values() if v[2] == outcome))


class Scenario:
    """The traffic of the capture, on ports of its own."""

    def __init__(self, test):
        self.test = test
        self.churn, self.refused, self.reset, self.leak, self.open, self.timeout = (
            tcpaudit.free_ports(6))
        self.ports = [self.churn, self.refused, self.reset, self.leak, self.open, self.timeout]
        self.keep = []  # sockets held open past the capture's end

    def netns_dropping_syns(self):
        name = "ta-report-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.test.addCleanup(subprocess.run, ["ip", "netns", "del", name],
                             stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw",
                        "net.ipv4.tcp_syn_retries=1"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], check=True, text=True,
                       input="table inet ta { chain in { type filter hook input priority 0;"
                             " tcp dport %d tcp flags syn drop; }; }" % self.timeout)
        return name

    def play(self, netns):
        subprocess.run([LOADGEN, "-n", str(CHURN), "-p", str(self.churn)], check=True,
                       capture_output=True)
        with socket.socket() as s:
            with self.test.assertRaises(ConnectionRefusedError):
                s.connect(("127.0.0.1", self.refused))
        # an abortive close (SO_LINGER 0): a reset sent, and received by the server
        with socket.create_server(("127.0.0.1", self.reset)) as l:
            c = socket.create_connection(("127.0.0.1", self.reset))
            a, _ = l.accept()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            with self.test.assertRaises(ConnectionResetError):
                a.recv(10)
            a.close()
        code = ("import socket, errno\ntry:\n    socket.create_connection(('127.0.0.1', %d),"
                " timeout=30)\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
                % self.timeout)
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60).stdout.strip()
        self.test.assertEqual(out, "ETIMEDOUT")
        # the client closes, the server never does: CLOSE-WAIT until the end
        l = socket.create_server(("127.0.0.1", self.leak))
        c = socket.create_connection(("127.0.0.1", self.leak))
        a, _ = l.accept()
        c.close()
        self.keep += [l, a]
        l = socket.create_server(("127.0.0.1", self.open))
        c = socket.create_connection(("127.0.0.1", self.open))
        a, _ = l.accept()
        self.keep += [l, c, a]

    def close(self):
        for s in self.keep:
            s.close()


CHROMIUM = shutil.which("chromium")


def chromium(*args):
    """Headless Chromium as root (with the flags that work here)."""
    with tempfile.TemporaryDirectory(prefix="tcp-audit-chromium-") as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--no-first-run", "--disable-background-networking",
                               "--user-data-dir=" + profile, "--enable-logging=stderr",
                               "--v=0"] + list(args),
                              capture_output=True, text=True, timeout=120)


@unittest.skipUnless(os.geteuid() == 0, "needs root (kernel tracing)")
class Report(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        capture(cls, "bpf")

    @classmethod
    def tearDownClass(cls):
        cleanup(cls)

    def blind_on(self, port):
        """Whether the witness saw a transition on port that bpf could not."""
        return any(port in k[:2] for k in self.blind)

    def html(self):
        """--format html of the SQLite archive: (its path, the page)."""
        path = os.path.join(self.tmp.name, "report.html")
        if not os.path.exists(path):
            r = run(["report", self.db, "--format", "html", "-o", path, "--stuck", "0.2"])
            self.assertEqual(r.returncode, 0, r.stderr)
        with open(path) as f:
            return path, f.read()

    def test_html_self_contained(self):
        """One page that needs no network: its three charts and the tables."""
        _, page = self.html()
        self.assertTrue(page.startswith("<!DOCTYPE html>"))
        self.assertIsNone(re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import",
                                    page, re.I))
        self.assertEqual(page.count("<svg"), 3)
        for title in ("Connections opened over time", "Timeline of connections per process",
                      "Connection durations", "Failed connects by destination",
                      "Sockets stuck in CLOSE-WAIT", "No loss recorded"):
            self.assertIn(title, page)
        sc = self.scenario
        if not self.blind_on(sc.refused):
            self.assertRegex(page, r"<td>127\.0\.0\.1</td><td class=\"n\">%d</td>"
                                   r"<td><span[^>]*>&#9632;</span> refused</td>" % sc.refused)
        # a bar per connection in the timeline (all of them: fewer than its cap)
        timeline = page.split("Timeline of connections")[1].split("</svg>")[0]
        self.assertEqual(timeline.count('height="2"'), len(self.ref))

    @unittest.skipUnless(CHROMIUM, "needs chromium")
    def test_html_renders_in_chromium(self):
        """Headless Chromium: the page's DOM has the charts, no console message,
        and a screenshot that is not blank."""
        path, _ = self.html()
        r = chromium("--dump-dom", "file://" + path)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(r.stdout.count("<svg"), 3)
        self.assertGreater(r.stdout.count("<rect"), len(self.ref))
        self.assertEqual([l for l in r.stderr.splitlines() if "CONSOLE" in l], [])
        png = os.path.join(self.tmp.name, "report.png")
        r = chromium("--screenshot=" + png, "--window-size=1100,1600", "file://" + path)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        with open(png, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(data), 20000)  # charts, not a blank page

    def conns(self, rep, **match):
        return [c for c in rep["connections"]
                if all(c[k] == v for k, v in match.items())]

    def test_every_socket_as_the_rules_say(self):
        check_every_socket(self)

    def test_churn_closed(self):
        sc = self.scenario
        if self.blind_on(sc.churn):
            self.skipTest("a transition of the churn happened in PID 1's context (blind spot)")
        for name, rep in self.reports.items():
            with self.subTest(store=name):
                clients = self.conns(rep, side="client", dport=sc.churn)
                servers = self.conns(rep, side="server", sport=sc.churn)
                self.assertEqual([c["outcome"] for c in clients], ["closed"] * CHURN)
                self.assertEqual([c["outcome"] for c in servers], ["closed"] * CHURN)
                self.assertEqual({c["states"] for c in clients},
                                 {"CLOSED SYN-SENT ESTABLISHED FIN-WAIT-1 FIN-WAIT-2 CLOSED"})
                self.assertEqual({c["states"] for c in servers},
                                 {"LISTEN SYN-RECEIVED ESTABLISHED CLOSE-WAIT LAST-ACK CLOSED"})
                self.assertTrue(all(c["duration_s"] >= 0 and c["owner_comm"] == "loadgen"
                                    for c in clients + servers))
                listener = self.conns(rep, side="listener", sport=sc.churn)
                self.assertEqual([(c["states"], c["outcome"]) for c in listener],
                                 [("CLOSED LISTEN CLOSED", "closed")])
                tw = [r for r in rep["time_wait_by_destination"] if r["dport"] == sc.churn]
                self.assertEqual([r["time_waits"] for r in tw], [CHURN])
                talk = [r for r in rep["top_talkers"] if r["dport"] == sc.churn]
                self.assertEqual([(r["owner_comm"], r["connections"]) for r in talk],
                                 [("loadgen", CHURN)])

    def test_failures(self):
        sc = self.scenario
        for name, rep in self.reports.items():
            with self.subTest(store=name):
                if not self.blind_on(sc.refused):
                    c = self.conns(rep, dport=sc.refused, side="client")
                    self.assertEqual([(x["outcome"], x["error"]) for x in c],
                                     [("refused", "ECONNREFUSED")])
                    self.assertIn({"daddr": "127.0.0.1", "dport": sc.refused,
                                   "outcome": "refused", "connections": 1,
                                   "first": c[0]["opened"], "last": c[0]["opened"]},
                                  rep["failed_by_destination"])
                if not self.blind_on(sc.timeout):
                    c = self.conns(rep, dport=sc.timeout, side="client")
                    self.assertEqual([(x["outcome"], x["error"]) for x in c],
                                     [("timed-out", "ETIMEDOUT")])
                if not self.blind_on(sc.reset):
                    for side, key in (("client", "dport"), ("server", "sport")):
                        c = self.conns(rep, side=side, **{key: sc.reset})
                        self.assertEqual([x["outcome"] for x in c], ["reset"], side)
                    peers = {r["peer"] for r in rep["resets_by_peer"]}
                    self.assertIn("127.0.0.1", peers)
                failed = [r for r in rep["failed_by_process"] if r["owner_comm"] == "python3"]
                self.assertEqual(sum(r["connections"] for r in failed),
                                 sum(1 for c in rep["connections"] if c["side"] == "client"
                                     and c["outcome"] in FAILED))

    def test_leak_and_open(self):
        sc = self.scenario
        for name, rep in self.reports.items():
            with self.subTest(store=name):
                if not self.blind_on(sc.leak):
                    stuck = [s for s in rep["stuck"] if s["sport"] == sc.leak]
                    self.assertEqual([s["state"] for s in stuck], ["CLOSE-WAIT"])
                    self.assertGreater(stuck[0]["seconds"], 0.2)
                    server = self.conns(rep, side="server", sport=sc.leak)
                    self.assertEqual([x["outcome"] for x in server], ["open"])
                if not self.blind_on(sc.open):
                    for side, key in (("client", "dport"), ("server", "sport")):
                        c = self.conns(rep, side=side, **{key: sc.open})
                        self.assertEqual([(x["outcome"], x["closed"], x["states"].split()[-1])
                                          for x in c], [("open", None, "ESTABLISHED")], side)
                self.assertEqual(rep["gaps"], [])
                self.assertEqual(rep["totals"]["lost"], 0)

    def test_range_and_host(self):
        """--until before the capture, --since after it, or another host: nothing;
        the last hour of this host: everything."""
        before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.start - 5))
        after = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.end + 1))
        time.sleep(max(0, self.end + 1.1 - time.time()))
        for name, src in self.sources:
            with self.subTest(store=name):
                self.assertEqual(report(src, "--until", before)["connections"], [])
                self.assertEqual(report(src, "--since", after)["connections"], [])
                self.assertEqual(report(src, "--host", "no-such-host")["connections"], [])
                rep = report(src, "--since", "-1h", "--host", socket.gethostname())
                self.assertEqual(len(rep["connections"]), len(self.ref))
                self.assertEqual(rep["host"], socket.gethostname())

    def test_text(self):
        """The text report: within 100 columns, the totals and each case."""
        for name, src in self.sources:
            with self.subTest(store=name):
                r = run(["report", src, "--stuck", "0.2"])
                self.assertEqual(r.returncode, 0, r.stderr)
                lines = r.stdout.splitlines()
                self.assertEqual([l for l in lines if len(l) > 100], [])
                self.assertIn("%d connections:" % len(self.ref), r.stdout)
                self.assertIn("No loss recorded in this range", r.stdout)
                for title in ("Failed connects by destination", "Resets by peer",
                              "Sockets stuck in CLOSE-WAIT", "Top talkers"):
                    self.assertIn(title, r.stdout)
                if not self.blind_on(self.scenario.refused):
                    self.assertTrue(any("refused" in l and str(self.scenario.refused) in l
                                        for l in lines), r.stdout)
                self.assertNotIn(pgserver.PASSWORD, r.stdout)

    def test_older_schema_versions(self):
        """Archives that no sink has opened since an older tcp-audit wrote them,
        made from this capture: schema v2 before its error and reset columns,
        and v1 (tcp-audit 0.1's tables of text rows, no reset records).  The
        same sockets and paths; each outcome as far as such an archive can
        tell it (no error column: a refused connect is closed)."""
        no_error = [{k: v for k, v in e.items() if k != "error"} for e in self.events]
        want = {"v2": reference(no_error),
                "v1": reference([e for e in no_error if e.get("kind") != "reset"])}
        v2 = os.path.join(self.tmp.name, "v2-old.db")
        with sqlite3.connect(self.db) as src, sqlite3.connect(v2) as db:
            src.backup(db)
            for (view,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'view'")\
                    .fetchall():
                db.execute("DROP VIEW " + view)
            for column in ("error", "reset_direction", "reset_reason"):
                db.execute("ALTER TABLE tcp_audit_events DROP COLUMN " + column)
        v1 = os.path.join(self.tmp.name, "v1.db")
        with sqlite3.connect(v1) as db:
            db.executescript(schema_v1.SQLITE)
            db.execute("ATTACH DATABASE ? AS capture", (self.db,))
            db.execute("INSERT INTO tcp_events SELECT %s FROM capture.tcp_events" % V1_EVENTS)
            db.execute("INSERT INTO tcp_audit_gaps SELECT %s FROM capture.tcp_audit_gaps"
                       % V1_GAPS)
        sources = [("v2", "sqlite", v2), ("v1", "sqlite", v1)]
        if self.pg:
            self.pg.psql("audit", "CREATE SCHEMA old2; CREATE TABLE old2.tcp_audit_events AS"
                         " SELECT * FROM tcp_audit_events; ALTER TABLE old2.tcp_audit_events"
                         " DROP COLUMN error, DROP COLUMN reset_direction,"
                         " DROP COLUMN reset_reason; CREATE TABLE old2.tcp_audit_schema AS"
                         " SELECT * FROM tcp_audit_schema;"
                         "CREATE SCHEMA v1; SET search_path = v1, public;"
                         + schema_v1.PGSQL_TABLES + schema_v1.PGSQL_REST +
                         "INSERT INTO v1.tcp_events (%s) SELECT %s FROM public.tcp_events;"
                         "INSERT INTO v1.tcp_audit_gaps SELECT %s FROM public.tcp_audit_gaps"
                         % (V1_EVENTS, V1_EVENTS.replace("uid,", "uid::text,", 1),
                            V1_GAPS.replace("uid,", "uid::text,", 1)))
            sources += [("v2", "pgsql", self.conninfo + " options=-csearch_path=old2"),
                        ("v1", "pgsql", self.conninfo + " options=-csearch_path=v1")]
        for version, name, src in sources:
            with self.subTest(version=version, store=name):
                rep = report(src)
                got = {socket_key(c): (c["side"], c["states"], c["outcome"], c["error"])
                       for c in rep["connections"]}
                self.assertEqual(got, want[version])
                self.assertEqual(rep["gaps"], self.reports[name]["gaps"])

    def test_view_matches_report(self):
        """The stores' tcp_connections view gives the report's connections."""
        rows = subprocess.run(["sqlite3", "-separator", "|", self.db,
                               "SELECT sock_cookie, side, outcome, states FROM tcp_connections"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        want = sorted("%d|%s|%s|%s" % (k[1], v[0] or "", v[2], v[1]) for k, v in self.ref.items())
        self.assertEqual(sorted(rows), want)
        if self.pg:
            rows = self.pg.psql("audit", "SELECT sock_cookie, side, outcome, states"
                                         " FROM tcp_connections").splitlines()
            self.assertEqual(sorted(rows), want)

    def test_output_file(self):
        out = os.path.join(self.tmp.name, "report.json")
        r = run(["report", self.db, "--format", "json", "-o", out])
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o640)
        with open(out) as f:
            self.assertEqual(len(json.load(f)["connections"]), len(self.ref))


@unittest.skipUnless(os.geteuid() == 0, "needs root (kernel tracing)")
class ReportTracefs(unittest.TestCase):
    """The same scenario through the tracefs eventer, whose records have no
    socket cookie: sockets by addresses, ports and time."""

    @classmethod
    def setUpClass(cls):
        capture(cls, "tracefs")

    @classmethod
    def tearDownClass(cls):
        cleanup(cls)

    def test_every_socket_as_the_rules_say(self):
        check_every_socket(self)

    def test_churn_and_failures(self):
        sc = self.scenario
        for name, rep in self.reports.items():
            with self.subTest(store=name):
                self.assertTrue(all(c["sock_cookie"] is None for c in rep["connections"]))
                clients = [c for c in rep["connections"]
                           if c["side"] == "client" and c["dport"] == sc.churn]
                servers = [c for c in rep["connections"]
                           if c["side"] == "server" and c["sport"] == sc.churn]
                self.assertEqual([(c["states"], c["outcome"]) for c in clients],
                                 [("SYN-SENT ESTABLISHED FIN-WAIT-1 FIN-WAIT-2 CLOSED",
                                   "closed")] * CHURN)
                self.assertEqual([(c["states"], c["outcome"]) for c in servers],
                                 [("LISTEN SYN-RECEIVED ESTABLISHED CLOSE-WAIT LAST-ACK CLOSED",
                                   "closed")] * CHURN)
                refused = [c for c in rep["connections"] if c["dport"] == sc.refused]
                self.assertEqual([(c["side"], c["states"], c["outcome"]) for c in refused],
                                 [("client", "SYN-SENT CLOSED", "refused")])
                stuck = [s for s in rep["stuck"] if s["sport"] == sc.leak]
                self.assertEqual([s["state"] for s in stuck], ["CLOSE-WAIT"])


class Replayed(unittest.TestCase):
    """A replayed file into SQLite, which keeps a command name's bytes as they
    are: the JSON report stays valid JSON, a byte that is not UTF-8 written as
    the jsonl format writes it (\u00ff)."""

    def test_name_that_is_not_utf8(self):
        with tempfile.TemporaryDirectory() as d:
            inp, db = os.path.join(d, "in.jsonl"), os.path.join(d, "a.db")
            with open(inp, "w") as f:
                f.write(tcpaudit.sample_line(1, owner_comm='"we\\"i\\u00ff"') + "\n")
            r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "sqlite",
                     "-p", "path=" + db])
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run(tcpaudit.WRAPPER + [BIN, "report", db, "--format", "json"],
                               capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            rep = json.loads(r.stdout.decode("utf-8"))
            self.assertEqual([c["owner_comm"] for c in rep["connections"]], ['we"i\u00ff'])


    def test_file_name_to_escape(self):
        """An archive whose path has what a URI must escape: the threads that
        aggregate it open it by a file: URI, and find every connection."""
        with tempfile.TemporaryDirectory() as d:
            inp = os.path.join(d, "in.jsonl")
            db = os.path.join(d, "it's a %41?b#c&mode=rw.db")
            with open(inp, "w") as f:
                for i in range(1, 9):
                    f.write(tcpaudit.sample_line(i) + "\n")
            r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "sqlite",
                     "-p", "path=" + db])
            self.assertEqual(r.returncode, 0, r.stderr)
            r = run(["report", db, "--format", "json"])
            self.assertEqual(r.returncode, 0, r.stderr)
            rep = json.loads(r.stdout)
            with open(inp) as f:
                cookies = {json.loads(l)["sock_cookie"] for l in f}
            self.assertEqual(sorted(c["sock_cookie"] for c in rep["connections"]),
                             sorted(cookies))
            # and nothing made beside it by a name read wrong
            base = os.path.basename(db)
            self.assertEqual(set(os.listdir(d)) - {base + "-wal", base + "-shm"},
                             {"in.jsonl", base})


class Mistakes(unittest.TestCase):
    """Every mistake: exit 2 and one line naming it."""

    def check(self, args, text):
        r = run(["report"] + args)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn(text, r.stderr)
        self.assertEqual(r.stdout, "")

    def test_mistakes(self):
        with tempfile.TemporaryDirectory() as d:
            jsonl = os.path.join(d, "a.jsonl")
            with open(jsonl, "w") as f:
                f.write("{}\n")
            empty = os.path.join(d, "empty.db")
            subprocess.run(["sqlite3", empty, "CREATE TABLE t (x)"], check=True)
            self.check([], "give the archive")
            self.check([jsonl, jsonl], "one archive at a time")
            self.check([os.path.join(d, "missing.db")], "cannot read")
            self.check([jsonl], "neither an SQLite archive nor a PostgreSQL URI")
            self.check(["http://127.0.0.1:1/?database=audit&password=secret"],
                       "the source is a ClickHouse server's URL: report reads SQLite and")
            self.check([empty], "is not a tcp-audit archive (no tables of schema version 1 or 2)")
            newer = os.path.join(d, "newer.db")
            subprocess.run(["sqlite3", newer, "PRAGMA user_version = 3"], check=True)
            self.check([newer], "has schema version 3, newer than this tcp-audit's 2")
            self.check([empty, "--since", "yesterday"], "--since: yesterday is not a time")
            self.check([empty, "--until", "2026-13-01"], "--until: 2026-13-01 is not a time")
            self.check([empty, "--since", "now", "--until", "-1h"], "--since must come before")
            self.check([empty, "--format", "xml"], "--format: xml is not text, json or html")
            self.check([empty, "--stuck", "soon"], "--stuck: soon is not a number")
            self.check([empty, "--bogus"], "unknown option --bogus")
            self.check([empty, "-o", os.path.join(d, "no", "such", "dir")], "cannot write")
            # a report that fails leaves an existing FILE as it was
            keep = os.path.join(d, "keep.txt")
            with open(keep, "w") as f:
                f.write("before\n")
            self.check([empty, "-o", keep], "not a tcp-audit archive")
            with open(keep) as f:
                self.assertEqual(f.read(), "before\n")
            self.assertEqual(sorted(os.listdir(d)),
                             ["a.jsonl", "empty.db", "keep.txt", "newer.db"])

    def test_help(self):
        r = run(["report", "--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: tcp-audit report SOURCE", r.stdout)
        self.assertTrue(all(len(l) <= 80 for l in r.stdout.splitlines()))


if __name__ == "__main__":
    tcpaudit.main()
