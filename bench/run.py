#!/usr/bin/env python3
"""The tcp-audit benchmark: completeness and overhead side by side, in one run.

For each eventer (bpf, tracefs) and sink (jsonl to a file, sqlite, pgsql) it
alternates untraced and traced rounds of the loopback load generator and
reports medians:
  completeness  events captured for the generator's port / events it caused
  overhead      the generator's connection rate traced / untraced
  CPU           tcp-audit's user+system CPU time per million events captured
  RSS           tcp-audit's peak resident set
  loss          the loss counters of tcp-audit's exit summary
Then sink throughput: a replay of a generated file of --replay-events events
into each sink (rows/s), and for pgsql the original's one-INSERT-per-event way
on the same server.

Run as root from the source tree after building (`ninja -C build`):
    bench/run.py            # the full benchmark, prints a Markdown table
    bench/run.py --quick    # a smaller, faster run
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import tcpaudit  # noqa: E402  (summary parsing, sample lines)


def free_port(family):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def loadgen(build, connections, threads, port, ipv6=False):
    args = [os.path.join(build, "bench", "loadgen"), "-t", str(threads), "-p", str(port),
            "-n", str(connections)] + (["-6"] if ipv6 else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in (kv.split("=") for kv in out.split())}


class Sink:
    """How to point tcp-audit at a store and count what arrived in it."""

    def __init__(self, name, workdir, pg=None):
        # "jsonl+spool": the jsonl sink behind the durable spool (--spool)
        self.name, _, extra = name.partition("+")
        self.spool = extra == "spool"
        self.workdir = workdir
        self.pg = pg
        self.round = 0

    def args(self):
        self.round += 1
        spool = []
        if self.spool:
            self.spool_dir = os.path.join(self.workdir, "spool%d" % self.round)
            spool = ["--spool", self.spool_dir]
        return spool + self.sink_args()

    def sink_args(self):
        if self.name == "jsonl":
            self.path = os.path.join(self.workdir, "round%d.jsonl" % self.round)
            return ["--sink", "jsonl", "-p", "path=" + self.path]
        if self.name == "sqlite":
            self.path = os.path.join(self.workdir, "round%d.db" % self.round)
            return ["--sink", "sqlite", "-p", "path=" + self.path]
        if self.name == "pgsql":
            self.db = "bench%d" % self.round
            self.pg.createdb(self.db)
            return ["--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo(self.db)]
        raise ValueError(self.name)

    def count(self, port):
        if self.spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
        if self.name == "jsonl":
            n = 0
            needle = (b'"sport":%d,' % port, b'"dport":%d,' % port)
            with open(self.path, "rb") as f:
                for line in f:
                    if needle[0] in line or needle[1] in line:
                        n += 1
            os.unlink(self.path)
            return n
        q = "SELECT count(*) FROM tcp_events WHERE src_port = %d OR dst_port = %d" % (port, port)
        if self.name == "sqlite":
            with sqlite3.connect(self.path) as db:
                n = db.execute(q).fetchone()[0]
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.unlink(self.path + suffix)
            return n
        n = int(self.pg.psql(self.db, q).strip())
        self.pg.dropdb(self.db)
        return n


def traced_round(a, eventer, sink, connections):
    port = free_port(socket.AF_INET)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([a.bin, "--event", eventer] + sink.args(),
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while True:
            err.seek(0)
            text = err.read().decode(errors="replace")
            if "tcp-audit: started" in text:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("tcp-audit did not start:\n" + text)
            time.sleep(0.05)
        gen = loadgen(a.build, connections, a.threads, port)
        time.sleep(0.5)  # let the last events leave the kernel ring
        proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    s = tcpaudit.summary(text)
    captured = sink.count(port)
    return {
        "rate": gen["rate"],
        "caused": gen["events"],
        "captured": captured,
        "completeness": captured / gen["events"],
        "cpu": usage.ru_utime + usage.ru_stime,
        "events_total": s.get("events read", 0),
        "rss_mib": usage.ru_maxrss / 1024,
        "lost": s.get("lost in kernel", 0) + s.get("lost in queue", 0) +
                s.get("lost in spool", 0),
    }


def capture_bench(a, eventer, sink_name, workdir, pg, rows):
    sink = Sink(sink_name, workdir, pg)
    untraced, traced = [], []
    for _ in range(a.rounds):
        untraced.append(loadgen(a.build, a.connections, a.threads,
                                free_port(socket.AF_INET))["rate"])
        traced.append(traced_round(a, eventer, sink, a.connections))
    base = statistics.median(untraced)
    rates = [t["rate"] for t in traced]
    cpu_per_m = [t["cpu"] / (t["events_total"] / 1e6) for t in traced if t["events_total"]]
    row = {
        "eventer": eventer,
        "sink": sink_name,
        "caused": int(statistics.median(t["caused"] for t in traced)),
        "completeness": min(t["completeness"] for t in traced),
        "untraced": base,
        "traced": statistics.median(rates),
        "overhead": statistics.median(rates) / base,
        "cpu_us_per_event": statistics.median(cpu_per_m) if cpu_per_m else float("nan"),
        "rss_mib": max(t["rss_mib"] for t in traced),
        "lost": sum(t["lost"] for t in traced),
    }
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)


def make_replay_file(path, n):
    with open(path, "w") as f:
        for i in range(1, n + 1):
            f.write(tcpaudit.sample_line(i) + "\n")


def replay_bench(a, sink_name, workdir, pg, replay_file, n, rows):
    sink = Sink(sink_name, workdir, pg)
    args = [a.bin, "--event", "replay", "-p", "path=" + replay_file] + sink.args()
    start = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True)
    secs = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError("replay into %s failed:\n%s" % (sink_name, r.stderr))
    if sink_name == "jsonl":
        os.unlink(sink.path)
    elif sink_name == "sqlite":
        with sqlite3.connect(sink.path) as db:
            got = db.execute("SELECT count(*) FROM tcp_events").fetchone()[0]
        assert got == n, (got, n)
        os.unlink(sink.path)
    else:
        got = int(pg.psql(sink.db, "SELECT count(*) FROM tcp_events").strip())
        assert got == n, (got, n)
        pg.dropdb(sink.db)
    row = {"sink": sink_name, "events": n, "seconds": secs, "rows_per_s": n / secs}
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)


def baseline_bench(a, pg, replay_file, n, rows):
    pg.createdb("baseline")
    env = dict(os.environ, **pg.env("baseline"))
    out = subprocess.run([os.path.join(a.build, "bench", "pg-insert-baseline"), replay_file],
                         env=env, capture_output=True, text=True, check=True).stdout
    kv = {k: float(v) for k, v in (x.split("=") for x in out.split())}
    row = {"sink": "pgsql (original: one INSERT per event)", "events": int(kv["rows"]),
           "seconds": kv["seconds"], "rows_per_s": kv["rate"]}
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    pg.dropdb("baseline")


def markdown(a, capture_rows, sink_rows):
    out = []
    out.append("Capture: %d connections (%d events) per round, %d loadgen threads, %d traced "
               "and %d untraced rounds alternating, medians." %
               (a.connections, a.connections * 10 + 2, a.threads, a.rounds, a.rounds))
    out.append("")
    out.append("| eventer | sink | completeness (worst round) | rate untraced | rate traced "
               "| overhead (traced/untraced) | tcp-audit CPU per event | peak RSS | lost |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in capture_rows:
        out.append("| %s | %s | %.4f%% | %.0f/s | %.0f/s | %.3f | %.3f us | %.1f MiB | %d |" % (
            r["eventer"], r["sink"], 100 * r["completeness"], r["untraced"], r["traced"],
            r["overhead"], r["cpu_us_per_event"], r["rss_mib"], r["lost"]))
    out.append("")
    out.append("| sink throughput (replay) | events | seconds | rows/s |")
    out.append("|---|---|---|---|")
    for r in sink_rows:
        out.append("| %s | %d | %.2f | %.0f |" % (r["sink"], r["events"], r["seconds"],
                                                  r["rows_per_s"]))
    pg = [r for r in sink_rows if r["sink"] == "pgsql"]
    base = [r for r in sink_rows if r["sink"].startswith("pgsql (original")]
    if pg and base:
        out.append("")
        out.append("pgsql sink / original way: %.1fx" % (pg[0]["rows_per_s"] /
                                                       base[0]["rows_per_s"]))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--connections", type=int, default=200000,
                   help="connections per round (10 events each; default 200000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="traced (and untraced) rounds")
    p.add_argument("--eventers", default="bpf,tracefs")
    p.add_argument("--sinks", default="jsonl,jsonl+spool,sqlite,pgsql",
                   help="sinks measured with the bpf eventer; jsonl+spool is jsonl behind "
                        "--spool (default jsonl,jsonl+spool,sqlite,pgsql)")
    p.add_argument("--tracefs-sinks", default="jsonl",
                   help="sinks measured with the tracefs eventer (default jsonl)")
    p.add_argument("--replay-events", type=int, default=1000000)
    p.add_argument("--baseline-events", type=int, default=100000)
    p.add_argument("--quick", action="store_true", help="20000 connections, 1 round, "
                   "100000 replayed events")
    a = p.parse_args()
    if a.quick:
        a.connections, a.rounds, a.replay_events, a.baseline_events = 20000, 1, 100000, 20000
    a.bin = os.path.join(a.build, "src", "tcp-audit")
    if os.geteuid() != 0:
        sys.exit("bench/run.py: run as root (kernel tracing)")

    workdir = tempfile.mkdtemp(prefix="tcp-audit-bench-")
    sinks = a.sinks.split(",")
    pg = None
    try:
        if "pgsql" in sinks:
            from pgserver import PostgresServer
            pg = PostgresServer()
            pg.start()
        capture_rows, sink_rows = [], []
        for eventer in a.eventers.split(","):
            for sink in (sinks if eventer == "bpf" else a.tracefs_sinks.split(",")):
                capture_bench(a, eventer, sink, workdir, pg, capture_rows)
        replay_file = os.path.join(workdir, "replay.jsonl")
        make_replay_file(replay_file, a.replay_events)
        for sink in (s for s in sinks if "+" not in s):  # the store, not the route
            replay_bench(a, sink, workdir, pg, replay_file, a.replay_events, sink_rows)
        if pg:
            base_file = os.path.join(workdir, "baseline.jsonl")
            make_replay_file(base_file, a.baseline_events)
            baseline_bench(a, pg, base_file, a.baseline_events, sink_rows)
        print(markdown(a, capture_rows, sink_rows))
    finally:
        if pg:
            pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
