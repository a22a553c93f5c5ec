#!/usr/bin/env python3
"""The tcp-audit benchmark: capture, burst, sink throughput and lookups, in one run.

Sections (--sections, all by default; each can run alone):

capture  For each load -- the load generator's two shapes (fin: the client
         closes first, the server after reading its FIN, and connect() spends
         most of the time finding a reusable port: 65-130 us of CPU per
         connection; busy: connect, accept, close, close, nothing else, ~20 us
         per connection, so tracing costs show; see bench/loadgen.c), with 1
         and 2 threads, --connections per round at full speed -- and each
         configuration (--configs), it alternates untraced and traced rounds
         and reports medians of:
           completeness  events stored for the generator's port / events it
                         caused (the traced round stops tcp-audit with SIGINT
                         and waits for its exit, which waits for every sink
                         to store what was read; then it counts in the store)
           overhead      the generator's connection rate traced / untraced
           CPU           tcp-audit's user+system CPU time per event read, and
                         its user part alone
                         (PostgreSQL's own CPU, server and backends, beside it)
           RSS           tcp-audit's peak resident set
           loss          the loss counted in tcp-audit's exit summary
resets   What recording resets costs, as paired rounds: for each eventer and
         load, --pair-rounds times an untraced round and then the eventer
         -> jsonl with the reset tracepoints (the default) and with
         -p kinds=state (none), in alternating order (ABBA), so that the
         two configurations see the same drift of the machine; reports
         the median ratio of each and the median of the per-round
         differences (with - without; the target: within 0.01 of 0).
eventers bpf -> jsonl against tracefs -> jsonl in paired rounds, as resets
         (--pair-rounds of them): the median ratio of each, the median of
         the per-round differences, how many rounds bpf was ahead, and
         tcp-audit's CPU per event over its whole run and while the
         generator ran (no start-up: bpf's loading of its programs).
kernelpath
         What the tracing costs inside the traced workload's kernel, per
         event: bpf -> jsonl and tracefs -> jsonl in alternating order
         (--pair-rounds rounds), the generator under perf record -e
         cpu-clock -a -g (perf: Debian's linux-perf): the CPU time sampled
         under the tracing's kernel functions (bpf's tracepoint programs
         with their helpers and ring, its getpeername hook; tracefs's event
         writes into the trace buffer), tcp-audit's own CPU meanwhile, and
         the generator's, each per event caused.  No untraced run: these
         are CPU times, not rates, and far steadier than the ratios.
seal     What sealing costs (--seal, issue 19's target: the ratio within 0.01,
         tcp-audit's CPU per event up by at most 0.1 us): bpf -> jsonl with
         and without --seal in paired rounds, as resets; every sealed store
         is checked with tcp-audit verify.
witness  What the bpf eventer misses and why: --pair-rounds rounds of bpf ->
         jsonl for each load, each with the capture tests' witness beside it
         (a tracing instance of its own with sock:inet_sock_set_state on the
         generator's port): the state changes the witness saw that the store
         lacks, how many of them it saw while a thread of the VM's PID 1 was
         on the CPU (the blind spot README's "Limits" describes), the rest,
         and the counted loss.  The witness slows the generator: no rates.
syscalls What every process on a traced host pays per system call, whatever
         it calls: bench/syscall-loop's ns per getppid() untraced, and with
         tcp-audit running (bpf, bpf -p accept=syscalls and tracefs -> jsonl,
         nothing else to do), --pair-rounds rounds in rotating order: medians
         and ranges.
burst    2,000,000 events (--burst-connections of the fin shape, 2 threads)
         into `tcp-audit` with no arguments at all: share stored, counted
         loss, peak RSS, overhead, and how long the stop took to store it all.
replay   Sink throughput: a replay of --replay-events events shaped like a
         capture (bench/shaped.py), in time order and shuffled, into jsonl,
         sqlite and pgsql on a stock and a tuned PostgreSQL, each into a fresh
         store; on the stock server also its own COPY FROM a CSV of the same
         events into an index-free table, and the original's one INSERT per
         event (bench/pg-insert-baseline); into clickhouse (Debian's server,
         started by the benchmark), with the server alone taking the same rows
         back as RowBinary from curl, one insert and two inserts at a time.
verify   How fast `tcp-audit verify` checks a sealed archive: --replay-events
         capture-shaped events replayed with --seal into each store of
         --replay-sinks, then verified: seconds, events/s, verify's CPU.
snapshot The start-up snapshot with --snapshot-sockets TCP sockets open on the
         host (half of them clients, half accepted, all held by one process
         across several loopback source addresses): for each eventer, the
         time the snapshot took (as tcp-audit logs it), the time from exec to
         "started", the snapshot records stored, and tcp-audit's peak RSS.
archive  Lookups in an archive of --archive-events events spanning 24 hours,
         in SQLite and in the stock PostgreSQL: build rate, size, and the
         time of four typical queries.

Configurations (rows of capture):
  default            tcp-audit with no arguments (eventer auto, sqlite at
                     $STATE_DIRECTORY/tcp-audit.db, the default spool)
  bpf-jsonl          --event bpf --sink jsonl (the default spool)
  bpf-jsonl-nospool  the same with --spool none
  bpf-jsonl-states   bpf -> jsonl with -p kinds=state: no reset tracepoints
                     (beside bpf-jsonl, which records resets too: their cost)
  bpf-sqlite         --event bpf --sink sqlite (the default spool)
  bpf-pgsql-stock    --event bpf --sink pgsql, on a PostgreSQL as initdb leaves it
  bpf-pgsql-tuned    the same on a PostgreSQL tuned for speed (fsync off, ...)
  tracefs-jsonl      --event tracefs --sink jsonl (the default spool)
  tracefs-jsonl-states  the same with -p kinds=state
  bpf-jsonl-sealed   bpf -> jsonl with --seal (a key made by seal-init for the
                     run); only when asked for (the seal section pairs it)
Every tcp-audit runs with STATE_DIRECTORY set to a fresh directory of its own.

Output: Markdown tables on stdout (each section's as it ends), and one JSON
line per row on stderr.

Run as root from the source tree after building (`ninja -C build`):
    bench/run.py            # everything (about half an hour on 2 cores)
    bench/run.py --quick    # smaller rounds and files
    bench/run.py --sections capture --configs default,bpf-jsonl --shapes busy
    bench/run.py --sections replay,archive --archive-events 2000000
"""
import argparse
import collections
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import shaped  # noqa: E402  (capture-shaped events)
import tcpaudit  # noqa: E402  (summary parsing)

SECTIONS = ("capture", "resets", "eventers", "kernelpath", "seal", "witness", "syscalls",
            "burst", "replay", "verify", "snapshot", "archive")
SHAPES = ("fin", "busy")

# name: (eventer shown, sink shown, spool shown, arguments before the sink's own)
CONFIGS = {
    "default": ("auto", "sqlite", "default", None),
    "bpf-jsonl": ("bpf", "jsonl", "default", ["--event", "bpf"]),
    "bpf-jsonl-nospool": ("bpf", "jsonl", "none", ["--spool", "none", "--event", "bpf"]),
    "bpf-jsonl-states": ("bpf", "jsonl, kinds=state", "default",
                         ["--event", "bpf", "-p", "kinds=state"]),
    "bpf-sqlite": ("bpf", "sqlite", "default", ["--event", "bpf"]),
    "bpf-pgsql-stock": ("bpf", "pgsql (stock)", "default", ["--event", "bpf"]),
    "bpf-pgsql-tuned": ("bpf", "pgsql (tuned)", "default", ["--event", "bpf"]),
    "tracefs-jsonl": ("tracefs", "jsonl", "default", ["--event", "tracefs"]),
    "tracefs-jsonl-states": ("tracefs", "jsonl, kinds=state", "default",
                             ["--event", "tracefs", "-p", "kinds=state"]),
    "bpf-jsonl-sealed": ("bpf", "jsonl, --seal", "default", ["--event", "bpf", "--seal", None]),
}
# not rows of capture unless asked for (the seal section has them, paired)
CAPTURE_DEFAULT = [c for c in CONFIGS if c != "bpf-jsonl-sealed"]
SEAL_KEY = []  # the seal section's key file, made once

STOP_TIMEOUT = 1800  # seconds a stopped tcp-audit may take to store what it read


def emit(row):
    print(json.dumps(row), file=sys.stderr, flush=True)


def progress(a, text):
    if a.verbose:
        print("# " + text, file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_interval(values, resamples=4000):
    """A 90% interval of the rounds' median (bootstrap percentiles, the same
    pseudo-random draws every run): how far the median of this many rounds
    may be from the true one, given how they spread.  The paired sections'
    rounds spread over 0.2-0.6 in ratio on the development VM, so a target
    within 0.01-0.03 is shown only when this interval lies on its side."""
    values = [v for v in values if v is not None]
    if len(values) < 5:  # fewer: it would be little more than their range
        return (None, None)
    draw = random.Random(1)
    meds = sorted(statistics.median(draw.choices(values, k=len(values)))
                  for _ in range(resamples))
    return meds[int(0.05 * resamples)], meds[int(0.95 * resamples) - 1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_int(path, index=0):
    with open(path) as f:
        return int(f.read().split()[index])


# TIME-WAIT: every run of the generator is in a network namespace of its own
# (loadgen -N), whose time-wait sockets the kernel purges when it exits.  On
# the host's, each run would leave a local port range's worth of them for a
# minute: a later run would meet a fuller table, or, once it is full
# (net.ipv4.tcp_max_tw_buckets), closing connections skip TIME-WAIT and the
# fin shape, whose connect() otherwise searches for a reusable port, runs ~7
# times faster (measured: 101,000/s instead of 15,000/s after ten busy
# rounds).  So every run starts from an empty table, with no minute's wait
# between runs; loadgen counts the sockets that still skipped TIME-WAIT
# (TcpExt TCPTimeWaitOverflow of its namespace).

def loadgen(a, shape, threads, connections, port=0, wrap=()):
    """Runs the generator (under the command wrap, if any: perf record) and
    returns what it printed."""
    args = list(wrap) + [os.path.join(a.build, "bench", "loadgen"), "-N", "-s", shape, "-t",
                         str(threads), "-p", str(port), "-n", str(connections)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout,
                                                     r.stderr))
    return {k: float(v) for k, v in (kv.split("=") for kv in r.stdout.split())}


# -- PostgreSQL: servers started on first use, their CPU time

class Servers:
    def __init__(self):
        self.pg = {}
        self.ch = None
        self.n = 0

    def clickhouse(self):
        """The ClickHouse server (Debian's, as it runs with its own settings), started
        on first use."""
        if self.ch is None:
            import chserver
            if not chserver.available():
                raise RuntimeError("ClickHouse is needed (the clickhouse-server package, as "
                                   "root)")
            self.ch = chserver.ClickHouseServer().start()
        return self.ch

    def get(self, kind):
        """The "stock" or "tuned" server, started on first use."""
        if kind not in self.pg:
            import pgserver
            if not pgserver.available():
                raise RuntimeError("PostgreSQL is needed (the postgresql package, as root)")
            pg = pgserver.PostgresServer(stock=(kind == "stock"))
            pg.start()
            self.pg[kind] = pg
        return self.pg[kind]

    def fresh_db(self, kind, prefix):
        self.n += 1
        name = "%s_%d" % (prefix, self.n)
        self.get(kind).createdb(name)
        return name

    def cleanup(self):
        for pg in self.pg.values():
            pg.cleanup()
        if self.ch:
            self.ch.cleanup()


def _cpu_ticks(pid, children_too):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are 14-17
    ticks = int(fields[11]) + int(fields[12])
    if children_too:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def server_cpu(pg):
    """CPU seconds used so far by the server: the postmaster, its live
    children (backends, writers) and the children it has reaped (ClickHouse:
    its one process)."""
    if pg is None:
        return None
    if hasattr(pg, "http_port"):
        return _cpu_ticks(pg.proc.pid, True) / os.sysconf("SC_CLK_TCK")
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        master = int(f.readline())
    ticks = _cpu_ticks(master, True)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[2])
            if ppid == master:
                ticks += _cpu_ticks(int(d), False)
        except (OSError, ValueError, IndexError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def settle_server_cpu(pg, before):
    """The server's CPU since before, once the tcp-audit backend has gone."""
    if pg is None:
        return None
    if hasattr(pg, "http_port"):  # ClickHouse: the merges the inserts caused, settled
        time.sleep(2)
        return server_cpu(pg) - before
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        n = int(pg.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE "
                                    "backend_type = 'client backend' AND pid <> "
                                    "pg_backend_pid()").strip())
        if n == 0:
            break
        time.sleep(0.05)
    time.sleep(0.1)  # let the postmaster reap it
    return server_cpu(pg) - before


# -- tcp-audit processes

class TcpAudit:
    """One tcp-audit run with STATE_DIRECTORY set to a fresh directory of its
    own; stderr goes to a file, stdout to /dev/null (not a terminal) unless
    start() is given a file for it."""

    def __init__(self, a, workdir):
        self.a = a
        self.state = tempfile.mkdtemp(prefix="state-", dir=workdir)
        self.proc = None

    def start(self, args, stdout=subprocess.DEVNULL):
        self.args = args
        self.err = tempfile.TemporaryFile()
        env = dict(os.environ, STATE_DIRECTORY=self.state)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([self.a.bin] + args, stdout=stdout,
                                     stderr=self.err, stdin=subprocess.DEVNULL, env=env)

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def wait_started(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr()
            if "tcp-audit: started" in text:
                for line in text.splitlines():
                    if "tcp-audit: started: eventer " in line:
                        self.eventer = line.split("eventer ", 1)[1].split(",")[0]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("tcp-audit %s did not start:\n%s" % (
                    shlex.join(self.args), text))
            time.sleep(0.05)

    def cpu_ns(self):
        """{thread id: ns on a CPU so far} of its live threads (schedstat)."""
        out = {}
        task = "/proc/%d/task" % self.proc.pid
        try:
            tids = os.listdir(task)
        except OSError:
            return out
        for tid in tids:
            try:
                with open("%s/%s/schedstat" % (task, tid)) as f:
                    out[tid] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return out

    def hwm_mib(self):
        """Peak RSS so far from /proc (VmHWM).  Not rusage's ru_maxrss: Linux
        carries the forking Python's own peak across exec into it."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def wait(self, timeout, sig=None):
        """Signals it (if sig), waits for its exit; returns the result."""
        t0 = time.monotonic()
        hwm = self.hwm_mib()
        if sig is not None:
            self.proc.send_signal(sig)
        deadline = t0 + timeout
        while True:
            hwm = max(hwm, self.hwm_mib())
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("tcp-audit %s did not exit within %d s:\n%s" % (
                    shlex.join(self.args), timeout, self.stderr()[-4000:]))
            time.sleep(0.02)
        end = time.monotonic()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        text = self.stderr()
        self.err.close()
        return {
            "rc": self.proc.returncode,
            "wall": end - self.started_at,
            "stop_s": end - t0,
            "cpu": usage.ru_utime + usage.ru_stime,
            "user_cpu": usage.ru_utime,
            "rss_mib": hwm or usage.ru_maxrss / 1024,
            "summary": tcpaudit.summary(text),
            "stderr": text,
        }

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.state, ignore_errors=True)


def lost(summary):
    return (summary.get("lost in kernel", 0) + summary.get("lost in queue", 0) +
            summary.get("lost in spool", 0))


# -- the stores: where a configuration writes, how to count what it stored

def port_lines(path, port):
    """The state-change lines of a jsonl store on port: as the stores' tcp_events
    view, not the snapshot's records of an earlier round's sockets on this port."""
    needle = (b'"sport":%d,' % port, b'"dport":%d,' % port)
    with open(path, "rb") as f:
        for line in f:
            if (needle[0] in line or needle[1] in line) and b'"kind":' not in line:
                yield line


def count_jsonl(path, port=None):
    if port is None:  # every event: all lines but the seals
        with open(path, "rb") as f:
            return sum(1 for line in f if b'"kind":"seal"' not in line)
    return sum(1 for _ in port_lines(path, port))


def count_jsonl_transitions(path, port):
    """Counter of (sport, dport, old_state, new_state) of the state changes
    stored on port (as tcpaudit.Witness.transitions counts them)."""
    seen = collections.Counter()
    for line in port_lines(path, port):
        e = json.loads(line)
        seen[(e["sport"], e["dport"], e["old_state"], e["new_state"])] += 1
    return seen


def count_jsonl_kind(path, kind):
    needle = b'"kind":"%s"' % kind
    with open(path, "rb") as f:
        return sum(1 for line in f if needle in line)


def port_query(port):
    return "SELECT count(*) FROM tcp_events WHERE src_port = %d OR dst_port = %d" % (port, port)


def count_sqlite(path, port=None):
    q = port_query(port) if port is not None else "SELECT count(*) FROM tcp_events"
    if not os.path.exists(path):
        raise RuntimeError("%s was not written" % path)
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute(q).fetchone()[0]
    finally:
        db.close()


class Store:
    """A fresh store for one run of a configuration: the arguments that point
    tcp-audit at it, and the count of what arrived."""

    def __init__(self, kind, ta, servers):
        self.kind, self.ta, self.servers = kind, ta, servers
        self.pg = self.db = None
        if kind == "jsonl":
            self.path = os.path.join(ta.state, "events.jsonl")
            self.args = ["--sink", "jsonl", "-p", "path=" + self.path]
        elif kind == "sqlite":
            self.path = os.path.join(ta.state, "events.db")
            self.args = ["--sink", "sqlite", "-p", "path=" + self.path]
        elif kind == "default":  # what tcp-audit with no arguments writes to
            self.path = os.path.join(ta.state, "tcp-audit.db")
            self.args = []
        elif kind == "clickhouse":
            self.pg = servers.clickhouse()
            servers.n += 1
            self.db = "bench_%d" % servers.n
            self.args = ["--sink", "clickhouse", "-p", "url=" + self.pg.url,
                         "-p", "database=" + self.db]
        elif kind in ("pgsql-stock", "pgsql-tuned"):
            server = kind.split("-")[1]
            self.pg = servers.get(server)
            self.db = servers.fresh_db(server, "bench")
            self.args = ["--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo(self.db)]
        else:
            raise ValueError(kind)

    def count(self, port=None):
        if self.kind == "clickhouse":
            where = (" WHERE kind = 'state_change' AND (sport = %d OR dport = %d)" % (port, port)
                     if port is not None else " WHERE kind = 'state_change'")
            return int(self.pg.query("SELECT count() FROM %s.tcp_events FINAL%s"
                                     % (self.db, where)))
        if self.kind == "jsonl":
            return count_jsonl(self.path, port)
        if self.kind in ("sqlite", "default"):
            return count_sqlite(self.path, port)
        q = port_query(port) if port is not None else "SELECT count(*) FROM tcp_events"
        return int(self.pg.psql(self.db, q).strip())

    def size(self):
        if self.kind == "clickhouse":
            return int(self.pg.query("SELECT sum(bytes) FROM system.parts WHERE active AND"
                                     " database = '%s'" % self.db) or 0)
        if self.pg:
            return int(self.pg.psql(self.db, "SELECT pg_database_size(current_database())")
                       .strip())
        return sum(os.path.getsize(self.path + s) for s in ("", "-wal")
                   if os.path.exists(self.path + s))

    def drop(self):
        if self.kind == "clickhouse":
            self.pg.query("DROP DATABASE IF EXISTS %s" % self.db)
        elif self.pg:
            self.pg.dropdb(self.db)


def default_path_problem(a, workdir):
    """None when tcp-audit with no arguments stores under $STATE_DIRECTORY,
    else why not.  Asked of --list-plugins first, so that the benchmark never
    writes to /var/lib/tcp-audit."""
    state = tempfile.mkdtemp(prefix="state-", dir=workdir)
    try:
        r = subprocess.run([a.bin, "--list-plugins"], capture_output=True, text=True,
                           env=dict(os.environ, STATE_DIRECTORY=state))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    # the sqlite sink's entry, up to its next option
    text = r.stdout.split("\nsink sqlite", 1)[-1].split("\n\n", 1)[0]
    text = " ".join(text.split())
    path = text.split("-p path=", 1)[-1].split(" -p ", 1)[0]
    if "-p path=" in text and ("STATE_DIRECTORY" in path or state in path):
        return None
    return ("this tcp-audit's sqlite sink does not store under $STATE_DIRECTORY by default "
            "(--list-plugins says: path=%s): tcp-audit with no arguments would write "
            "outside the benchmark's directory" % path.strip())


def config_store(name):
    if name == "default":
        return "default"
    sink = name.split("-")[1]
    if sink == "pgsql":
        return "pgsql-" + name.split("-")[2]
    return sink


def config_args(name, store):
    pre = CONFIGS[name][3]
    pre = [SEAL_KEY[0] if x is None else x for x in pre] if pre else pre
    return [] if pre is None else pre + store.args


# -- capture and burst

def bpf_prog_runs(prefixes):
    """{prefix: [runs, ns]} summed over the loaded BPF programs whose names start
    with each prefix (bpftool; run counts need kernel.bpf_stats_enabled=1)."""
    out = {p: [0, 0] for p in prefixes}
    try:
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                          text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None
    for prog in progs:
        for p in prefixes:
            if prog.get("name", "").startswith(p):
                out[p][0] += prog.get("run_cnt", 0)
                out[p][1] += prog.get("run_time_ns", 0)
    return out


RESET_PROGS = ("on_send_reset", "on_receive_rese", "on_state")  # names cut at 15 characters


def seal_cpu_us(stderr, read):
    """CPU per event read that tcp-audit's sink threads spent making seals, from
    the summary's "seals N (S s CPU)" (None when the run was not sealed)."""
    spent = [float(m) for m in re.findall(r"seals \d+ \(([0-9.]+) s CPU\)", stderr)]
    return 1e6 * sum(spent) / read if spent and read else None


def traced_round(a, servers, workdir, config, shape, threads, connections, prog_stats=False,
                 witness=False, wrap=()):
    """One traced run of config; wrap: a command the generator runs under (perf record)."""
    ta = TcpAudit(a, workdir)
    store = wit = None
    try:
        store = Store(config_store(config), ta, servers)
        pg_before = server_cpu(store.pg)
        ta.start(config_args(config, store))
        ta.wait_started()
        cpu0 = ta.cpu_ns()
        port = free_port()
        runs0 = bpf_prog_runs(RESET_PROGS) if prog_stats else None
        if witness:
            # ftrace's own record of the port's state changes (1M events of ~80 bytes a CPU)
            wit = tcpaudit.Witness([port], buffer_kb=262144)
        gen = loadgen(a, shape, threads, connections, port, wrap)
        runs1 = bpf_prog_runs(RESET_PROGS) if prog_stats else None
        time.sleep(0.5)  # let the last events leave the kernel's buffer
        # while the generator ran: without start-up (loading, the snapshot) and the exit
        run_ns = sum(v - cpu0.get(t, 0) for t, v in ta.cpu_ns().items())
        res = ta.wait(STOP_TIMEOUT, signal.SIGINT)
        if res["rc"] != 130:
            raise RuntimeError("tcp-audit %s exited %d:\n%s" % (
                shlex.join(ta.args), res["rc"], res["stderr"][-4000:]))
        pg_cpu = settle_server_cpu(store.pg, pg_before)
        stored = store.count(port)
        read = res["summary"].get("events read", 0)
        seen = None
        if wit:
            seen = witness_accounting(wit, count_jsonl_transitions(store.path, port))
        verified = None
        if "--seal" in ta.args:
            r = subprocess.run([a.bin, "verify", store.path, "--verify-key", SEAL_KEY[1]],
                               capture_output=True, text=True)
            verified = r.returncode == 0
            if not verified:
                progress(a, "verify failed: %s" % (r.stdout + r.stderr)[-2000:])
        return {
            "eventer": getattr(ta, "eventer", "?"),
            "rate": gen["rate"],
            "caused": int(gen["events"]),
            "stored": stored,
            "completeness": stored / gen["events"],
            "cpu_us_per_event": 1e6 * res["cpu"] / read if read else None,
            "user_us_per_event": 1e6 * res["user_cpu"] / read if read else None,
            "run_cpu_us_per_event": run_ns / 1e3 / read if read else None,
            "server_cpu_us_per_event": 1e6 * pg_cpu / read if read and pg_cpu is not None
            else None,
            "rss_mib": res["rss_mib"],
            "lost": lost(res["summary"]),
            "stop_s": res["stop_s"],
            "events_read": read,
            "tw_overflow": gen["tw_overflow"],
            "prog_runs": {k: [runs1[k][0] - runs0[k][0], runs1[k][1] - runs0[k][1]]
                          for k in RESET_PROGS} if runs0 and runs1 else None,
            "reset_records": count_jsonl_kind(store.path, b"reset")
            if store.kind == "jsonl" else None,
            "verified": verified,
            "seal_us_per_event": seal_cpu_us(res["stderr"], read),
            "witness": seen,
        }
    finally:
        if wit:  # a no-op once the accounting has read it
            wit.__exit__(None, None, None)
        if store:
            store.drop()
        ta.cleanup()


def measure(a, servers, workdir, config, shape, threads, connections, rounds):
    untraced, traced, overflow = [], [], 0
    for r in range(rounds):
        progress(a, "%s %s/%d round %d: untraced" % (config, shape, threads, r + 1))
        gen = loadgen(a, shape, threads, connections)
        untraced.append(gen["rate"])
        overflow += gen["tw_overflow"]
        progress(a, "%s %s/%d round %d: traced" % (config, shape, threads, r + 1))
        traced.append(traced_round(a, servers, workdir, config, shape, threads, connections))
    base = median(untraced)
    rate = median([t["rate"] for t in traced])
    eventer, sink, spool, _ = CONFIGS[config]
    return {
        "config": config,
        "eventer": traced[0]["eventer"] if eventer == "auto" else eventer,
        "sink": sink,
        "spool": spool,
        "shape": shape,
        "threads": threads,
        "rounds": rounds,
        "caused": int(median([t["caused"] for t in traced])),
        "stored": int(median([t["stored"] for t in traced])),
        "completeness": median([t["completeness"] for t in traced]),
        "completeness_worst": min(t["completeness"] for t in traced),
        "untraced": base,
        "traced": rate,
        "overhead": rate / base,
        "cpu_us_per_event": median([t["cpu_us_per_event"] for t in traced]),
        "user_us_per_event": median([t["user_us_per_event"] for t in traced]),
        "server_cpu_us_per_event": median([t["server_cpu_us_per_event"] for t in traced]),
        "rss_mib": median([t["rss_mib"] for t in traced]),
        "lost": median([t["lost"] for t in traced]),
        "stop_s": median([t["stop_s"] for t in traced]),
        "untraced_rounds": untraced,
        "traced_rounds": traced,
        "tw_overflow": overflow + sum(t["tw_overflow"] for t in traced),
    }


def witness_accounting(wit, stored):
    """What the store is missing of what the witness saw, and how much of it
    the witness saw in the VM's blind spot (README, "Limits")."""
    seen, blind = wit.transitions(), wit.blind()
    missing = seen - stored
    explained = sum(min(n, blind[k]) for k, n in missing.items())
    return {"seen": sum(seen.values()), "missing": sum(missing.values()),
            "explained": explained, "unexplained": sum(missing.values()) - explained,
            "blind": sum(blind.values()), "extra": sum((stored - seen).values())}


def fmt(v, f, none="-"):
    return none if v is None else f % v


def fmt_interval(iv):
    return "-" if iv[0] is None else "%+.3f .. %+.3f" % iv


def capture_section(a, servers, workdir):
    out, rows_all = [], []
    for shape in a.shapes:
        for threads in a.threads:
            rows = []
            for config in a.configs:
                if config == "default" and a.default_problem:
                    row = {"section": "capture", "config": config, "shape": shape,
                           "threads": threads, "skipped": a.default_problem}
                    emit(row)
                    rows.append(row)
                    continue
                row = measure(a, servers, workdir, config, shape, threads, a.connections,
                              a.rounds)
                row["section"] = "capture"
                emit(row)
                rows.append(row)
                rows_all.append(row)
            out.append("")
            out.append("Capture, %s shape, %d loadgen thread%s: %d connections (%d events) per "
                       "round, %d untraced and %d traced rounds alternating, medians." % (
                           shape, threads, "" if threads == 1 else "s", a.connections,
                           10 * a.connections + 2, a.rounds, a.rounds))
            out.append("")
            out.append("| config | eventer | sink | spool | stored / caused | completeness "
                       "(worst) | rate untraced | rate traced | overhead | tcp-audit CPU per "
                       "event (user) | PostgreSQL CPU per event | peak RSS | counted loss | "
                       "stop |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                if "skipped" in r:
                    out.append("| %s | skipped: %s |" % (r["config"], r["skipped"]))
                    continue
                out.append("| %s | %s | %s | %s | %d / %d | %.4f%% (%.4f%%) | %.0f/s | %.0f/s "
                           "| %.3f | %.3f us (%.3f) | %s | %.1f MiB | %g | %.1f s |" % (
                               r["config"], r["eventer"], r["sink"], r["spool"], r["stored"],
                               r["caused"], 100 * r["completeness"],
                               100 * r["completeness_worst"], r["untraced"], r["traced"],
                               r["overhead"], r["cpu_us_per_event"] or float("nan"),
                               r["user_us_per_event"] or float("nan"),
                               fmt(r["server_cpu_us_per_event"], "%.3f us"), r["rss_mib"],
                               r["lost"], r["stop_s"]))
    out.append("")
    out.append("stored: events for the generator's port found in the store after tcp-audit's "
               "exit; stop: from SIGINT to exit (delivering what was read).")
    out += tw_note(rows_all)
    return out


def tw_note(rows):
    hit = ["%s %s/%d" % (r["config"], r["shape"], r["threads"]) for r in rows
           if r.get("tw_overflow")]
    if not hit:
        return []
    return ["", "Warning: the kernel's time-wait table overflowed during rounds of %s (closed "
                "connections skipped TIME-WAIT, which changes the fin shape's speed): their "
                "rates are not comparable." % ", ".join(hit)]


def paired_rounds(a, servers, workdir, what, configs, shape, threads, rounds, prog_stats):
    """Yields, per round, ({config: its traced round}, the untraced rate) for
    the two configurations: each round an untraced run, then both, in
    alternating order (ABBA), so that they see the same drift."""
    for r in range(rounds):
        progress(a, "%s %s/%d round %d" % (what, shape, threads, r + 1))
        base = loadgen(a, shape, threads, a.connections)["rate"]
        got = {}
        for config in (configs if r % 2 == 0 else configs[::-1]):
            got[config] = traced_round(a, servers, workdir, config, shape, threads,
                                       a.connections, prog_stats)
        yield got, base


def eventers_section(a, servers, workdir):
    """bpf -> jsonl against tracefs -> jsonl in paired rounds (issue 13's target)."""
    pair = ("bpf-jsonl", "tracefs-jsonl")
    out = ["", "The eventers against each other: paired rounds, %d connections (%d events) per "
               "round; each round an untraced run, then bpf -> jsonl and tracefs -> jsonl in "
               "alternating order; ratio = traced rate / that round's untraced rate; tcp-audit "
               "CPU per event read (user), from start to exit and while the generator ran "
               "(its threads' time from \"started\" to 0.5 s after the generator's end: no "
               "start-up, no exit)." % (a.connections, 10 * a.connections + 2),
           "",
           "| shape | threads | rounds | bpf ratio | tracefs ratio | bpf - tracefs, median "
           "(range) | its 90% interval | bpf rounds ahead | bpf CPU per event | tracefs CPU per "
           "event | bpf CPU while running | tracefs CPU while running | completeness (worst) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes:
        for threads in a.threads:
            rows = []
            for got, base in paired_rounds(a, servers, workdir, "eventers", pair, shape,
                                           threads, a.reset_rounds, False):
                rows.append({"untraced": base,
                             "bpf": got[pair[0]]["rate"] / base,
                             "tracefs": got[pair[1]]["rate"] / base,
                             "bpf_cpu": got[pair[0]]["cpu_us_per_event"],
                             "bpf_user": got[pair[0]]["user_us_per_event"],
                             "tracefs_cpu": got[pair[1]]["cpu_us_per_event"],
                             "tracefs_user": got[pair[1]]["user_us_per_event"],
                             "bpf_run_cpu": got[pair[0]]["run_cpu_us_per_event"],
                             "tracefs_run_cpu": got[pair[1]]["run_cpu_us_per_event"],
                             "bpf_completeness": got[pair[0]]["completeness"],
                             "tracefs_completeness": got[pair[1]]["completeness"],
                             "bpf_lost": got[pair[0]]["lost"],
                             "tracefs_lost": got[pair[1]]["lost"],
                             "tw_overflow": sum(g["tw_overflow"] for g in got.values()),
                             "completeness": min(g["completeness"] for g in got.values())})
            diffs = [x["bpf"] - x["tracefs"] for x in rows]
            row = {"section": "eventers", "shape": shape, "threads": threads,
                   "rounds": a.reset_rounds, "bpf": median([x["bpf"] for x in rows]),
                   "tracefs": median([x["tracefs"] for x in rows]),
                   "difference": median(diffs), "interval": median_interval(diffs),
                   "per_round": rows}
            emit(row)
            out.append("| %s | %d | %d | %.3f | %.3f | %+.3f (%+.3f .. %+.3f) | %s | %d of %d | "
                       "%.3f us (%.3f) | %.3f us (%.3f) | %.3f us | %.3f us | %.4f%% |" % (
                           shape, threads, a.reset_rounds, row["bpf"], row["tracefs"],
                           row["difference"], min(diffs), max(diffs),
                           fmt_interval(row["interval"]),
                           sum(1 for d in diffs if d >= 0), len(diffs),
                           median([x["bpf_cpu"] for x in rows]),
                           median([x["bpf_user"] for x in rows]),
                           median([x["tracefs_cpu"] for x in rows]),
                           median([x["tracefs_user"] for x in rows]),
                           median([x["bpf_run_cpu"] for x in rows]),
                           median([x["tracefs_run_cpu"] for x in rows]),
                           100 * min(x["completeness"] for x in rows)))
    return out


# The kernel functions through which the traced workload runs the tracing:
# bpf's tracepoint programs (bpf_trace_run<number of arguments>) and its
# getpeername hook (where it sees accept()), tracefs's event writes.
TRACING_PATH = re.compile(r"^(bpf_trace_run\d+|__cgroup_bpf_run_filter_sock_addr|"
                          r"trace_event_raw_event_\w+)$")


def perf_report(path, *args):
    r = subprocess.run(["perf", "report", "-i", path, "--stdio", "-g", "none"] + list(args),
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("perf report failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    return r.stdout


def perf_shares(path):
    """From a perf record -e cpu-clock -a -g file: the CPU time it sampled, in
    ns (on all CPUs, idle too), the share of it under each of TRACING_PATH's
    functions (wherever they ran: the generator, a softirq, a kernel thread),
    and each command's share."""
    text = perf_report(path, "--children", "--sort", "sym")
    total = int(re.search(r"Event count \(approx\.\): (\d+)", text).group(1))
    shares = {}
    for line in text.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+[0-9.]+%\s+\[k\]\s+(\S+)\s*$", line)
        if m and TRACING_PATH.match(m.group(2)):
            shares[m.group(2)] = float(m.group(1)) / 100
    comms = {}
    for line in perf_report(path, "--no-children", "--sort", "comm").splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S.*?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            comms[m.group(2)] = float(m.group(1)) / 100
    return total, shares, comms


def kernelpath_round(a, servers, workdir, config, shape, threads):
    """One traced run of config with the generator under perf record: the CPU
    time per event the tracing path took in the kernel, tcp-audit's and the
    generator's."""
    data = os.path.join(workdir, "perf.data")
    try:
        t = traced_round(a, servers, workdir, config, shape, threads, a.connections,
                         wrap=["perf", "record", "-q", "-e", "cpu-clock", "-a", "-g", "-o",
                               data, "--"])
        total, shares, comms = perf_shares(data)
    finally:
        if os.path.exists(data):
            os.unlink(data)
    per_event = total / t["caused"]
    return {"rate": t["rate"],
            "path_ns": sum(shares.values()) * per_event,
            "accept_hook_ns": shares.get("__cgroup_bpf_run_filter_sock_addr", 0.0) * per_event,
            "tcp_audit_ns": comms.get("tcp-audit", 0.0) * per_event,
            "generator_ns": comms.get("loadgen", 0.0) * per_event,
            "completeness": t["completeness"]}


def kernelpath_section(a, servers, workdir):
    """The tracing's own CPU per event in the traced workload's kernel, bpf
    against tracefs (issue 13: kernel-side cost no higher than tracefs)."""
    pair = ("bpf-jsonl", "tracefs-jsonl")
    out = ["", "What the tracing costs inside the kernel, per event: %d rounds a row of %d "
               "connections (%d events), bpf -> jsonl and tracefs -> jsonl in alternating "
               "order, each with the generator run under `perf record -e cpu-clock -a -g`; "
               "kernel path: the CPU time sampled under the tracing's kernel functions "
               "(bpf: its tracepoint programs' bpf_trace_run*, with the helpers and the ring, "
               "and its getpeername hook, which sees accept(), shown apart; tracefs: "
               "trace_event_raw_event_*, with the trace buffer's write), wherever they ran, "
               "per event the generator caused; both: kernel path + tcp-audit; "
               "tcp-audit: its processes' CPU sampled meanwhile; generator: loadgen's (with "
               "the kernel path it runs)." % (
                   a.reset_rounds, a.connections, 10 * a.connections + 2),
           "",
           "| shape | threads | rounds | bpf kernel path (of it the getpeername hook) | "
           "tracefs kernel path | bpf - tracefs, median (range) | bpf rounds at or below | "
           "bpf tcp-audit | tracefs tcp-audit | bpf both | tracefs both | bpf generator | "
           "tracefs generator | completeness (worst) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes:
        for threads in a.threads:
            rows = []
            for r in range(a.reset_rounds):
                progress(a, "kernelpath %s/%d round %d" % (shape, threads, r + 1))
                got = {}
                for config in (pair if r % 2 == 0 else pair[::-1]):
                    got[config] = kernelpath_round(a, servers, workdir, config, shape, threads)
                rows.append({"bpf": got[pair[0]], "tracefs": got[pair[1]]})
            diffs = [x["bpf"]["path_ns"] - x["tracefs"]["path_ns"] for x in rows]

            def med(who, what):
                return median([x[who][what] for x in rows])

            def both(who):
                return median([x[who]["path_ns"] + x[who]["tcp_audit_ns"] for x in rows])

            row = {"section": "kernelpath", "shape": shape, "threads": threads,
                   "rounds": a.reset_rounds, "bpf_path_ns": med("bpf", "path_ns"),
                   "tracefs_path_ns": med("tracefs", "path_ns"), "difference": median(diffs),
                   "per_round": rows}
            emit(row)
            out.append("| %s | %d | %d | %.0f ns (%.0f) | %.0f ns | %+.0f ns (%+.0f .. %+.0f) | "
                       "%d of %d | %.0f ns | %.0f ns | %.0f ns | %.0f ns | %.0f ns | %.0f ns | "
                       "%.4f%% |" % (
                           shape, threads, a.reset_rounds, row["bpf_path_ns"],
                           med("bpf", "accept_hook_ns"), row["tracefs_path_ns"],
                           row["difference"], min(diffs), max(diffs),
                           sum(1 for d in diffs if d <= 0), len(diffs),
                           med("bpf", "tcp_audit_ns"), med("tracefs", "tcp_audit_ns"),
                           both("bpf"), both("tracefs"),
                           med("bpf", "generator_ns"), med("tracefs", "generator_ns"),
                           100 * min(min(x["bpf"]["completeness"], x["tracefs"]["completeness"])
                                     for x in rows)))
    return out


SYSCALL_CONFIGS = (("untraced", None), ("bpf", ["--event", "bpf"]),
                   ("bpf, -p accept=syscalls", ["--event", "bpf", "-p", "accept=syscalls"]),
                   ("tracefs", ["--event", "tracefs"]))


def syscall_ns(a):
    out = subprocess.run([os.path.join(a.build, "bench", "syscall-loop")], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def syscall_round(a, workdir, args):
    """ns per system call with tcp-audit args running."""
    ta = TcpAudit(a, workdir)
    try:
        ta.start(args + ["--spool", "none", "--sink", "jsonl", "-p", "path=/dev/null"])
        ta.wait_started()
        ns = syscall_ns(a)
        res = ta.wait(STOP_TIMEOUT, signal.SIGINT)
        if res["rc"] != 130:
            raise RuntimeError("tcp-audit exited %d:\n%s" % (res["rc"], res["stderr"][-4000:]))
        return ns
    finally:
        ta.cleanup()


def syscalls_section(a, servers, workdir):
    """What every process on a traced host pays per system call."""
    got = {name: [] for name, _ in SYSCALL_CONFIGS}
    for r in range(a.reset_rounds):
        progress(a, "syscalls round %d" % (r + 1))
        n = len(SYSCALL_CONFIGS)
        for name, args in (SYSCALL_CONFIGS[(i + r) % n] for i in range(n)):
            got[name].append(syscall_ns(a) if args is None else syscall_round(a, workdir, args))
    base = median(got["untraced"])
    out = ["", "What every process pays per system call while tcp-audit runs: bench/syscall-loop, "
               "10,000,000 getppid() calls, ns per call; %d rounds, the configurations in "
               "rotating order." % a.reset_rounds,
           "",
           "| tcp-audit | ns per system call, median (range) | over untraced |",
           "|---|---|---|"]
    for name, _ in SYSCALL_CONFIGS:
        v = got[name]
        emit({"section": "syscalls", "config": name, "ns": median(v), "per_round": v})
        out.append("| %s | %.1f (%.1f .. %.1f) | %+.1f ns |" % (
            name, median(v), min(v), max(v), median(v) - base))
    return out


def witness_section(a, servers, workdir):
    """bpf -> jsonl rounds with a witness: what is missing, and why."""
    out = ["", "What the bpf eventer misses, with a witness: %d rounds a row of %d connections "
               "(%d events), bpf -> jsonl as in capture, and beside it a tracing instance of "
               "the benchmark's own with sock:inet_sock_set_state on the generator's port "
               "(the capture tests' witness, which slows the generator: no rates here). "
               "missing: state changes the witness saw that the store lacks; blind spot: "
               "those of them it saw while a thread of the VM's PID 1 was on the CPU "
               "(README, \"Limits\"); stored unseen: stored, not seen by the witness."
               % (a.reset_rounds, a.connections, 10 * a.connections + 2),
           "",
           "| shape | threads | rounds | caused | witness saw | stored | missing (per round) | "
           "in the blind spot | not explained | counted loss | stored unseen |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes:
        for threads in a.threads:
            rounds = []
            for r in range(a.reset_rounds):
                progress(a, "witness %s/%d round %d" % (shape, threads, r + 1))
                rounds.append(traced_round(a, servers, workdir, "bpf-jsonl", shape, threads,
                                           a.connections, witness=True))
            w = [t["witness"] for t in rounds]
            row = {"section": "witness", "shape": shape, "threads": threads,
                   "rounds": a.reset_rounds, "per_round": w,
                   "lost": [t["lost"] for t in rounds]}
            emit(row)
            out.append("| %s | %d | %d | %d | %d | %d | %d (%s) | %d | %d | %d | %d |" % (
                shape, threads, a.reset_rounds, sum(t["caused"] for t in rounds),
                sum(x["seen"] for x in w), sum(t["stored"] for t in rounds),
                sum(x["missing"] for x in w), ", ".join(str(x["missing"]) for x in w),
                sum(x["explained"] for x in w), sum(x["unexplained"] for x in w),
                sum(t["lost"] for t in rounds), sum(x["extra"] for x in w)))
    return out


RESET_PAIRS = {"bpf": ("bpf-jsonl", "bpf-jsonl-states"),
               "tracefs": ("tracefs-jsonl", "tracefs-jsonl-states")}


def resets_section(a, servers, workdir):
    out = ["", "What recording resets costs: paired rounds, %d connections (%d events) per "
               "round; each round an untraced run, then with and without the reset tracepoints "
               "in alternating order; ratio = traced rate / that round's untraced rate." % (
                   a.connections, 10 * a.connections + 2),
           "",
           "| eventer | shape | threads | rounds | ratio with resets | ratio without | "
           "difference, median (range) | within 0.01 | completeness (worst) | reset records "
           "stored | reset programs: runs, ns | state programs: runs, ns per run |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    stats = "/proc/sys/kernel/bpf_stats_enabled"
    stats_before = _read_int(stats) if a.prog_stats else None
    if a.prog_stats:  # run counts and times of the BPF programs (both configurations pay)
        with open(stats, "w") as f:
            f.write("1")
    for eventer, (with_cfg, without_cfg) in RESET_PAIRS.items():
        for shape in a.shapes:
            for threads in a.threads:
                rows = []
                for got, base in paired_rounds(a, servers, workdir, "resets " + eventer,
                                               (with_cfg, without_cfg), shape, threads,
                                               a.reset_rounds,
                                               a.prog_stats and eventer == "bpf"):
                    rows.append({"prog_runs": got[with_cfg]["prog_runs"],
                                 "reset_records": got[with_cfg]["reset_records"],
                                 "untraced": base,
                                 "with": got[with_cfg]["rate"] / base,
                                 "without": got[without_cfg]["rate"] / base,
                                 "completeness": min(g["completeness"] for g in got.values())})
                diffs = [x["with"] - x["without"] for x in rows]
                row = {"section": "resets", "eventer": eventer, "shape": shape,
                       "threads": threads, "rounds": a.reset_rounds,
                       "with": median([x["with"] for x in rows]),
                       "without": median([x["without"] for x in rows]),
                       "difference": median(diffs), "worst_completeness":
                           min(x["completeness"] for x in rows), "per_round": rows}
                emit(row)
                resets = sum(x["reset_records"] or 0 for x in rows)
                progs = [x["prog_runs"] for x in rows if x["prog_runs"]]
                rst = ("%d, %d" % (sum(p["on_send_reset"][0] + p["on_receive_rese"][0]
                                       for p in progs),
                                   sum(p["on_send_reset"][1] + p["on_receive_rese"][1]
                                       for p in progs)) if progs else "-")
                st_runs = sum(p["on_state"][0] for p in progs)
                st = ("%d, %.0f" % (st_runs, sum(p["on_state"][1] for p in progs) / st_runs)
                      if progs and st_runs else "-")
                out.append("| %s | %s | %d | %d | %.3f | %.3f | %+.3f (%+.3f .. %+.3f) | %s | "
                           "%.4f%% | %d | %s | %s |" % (
                               eventer, shape, threads, a.reset_rounds, row["with"],
                               row["without"], row["difference"], min(diffs), max(diffs),
                               "yes" if abs(row["difference"]) <= 0.01 else "no",
                               100 * row["worst_completeness"], resets, rst, st))
    if a.prog_stats:
        with open(stats, "w") as f:
            f.write(str(stats_before))
    out.append("")
    out.append("completeness: the worst round's share of the caused events found in the "
               "store (both configurations); reset records stored: in the store of every run "
               "with resets (all ports); programs: summed over the runs with resets while the "
               "generator ran (--prog-stats: kernel.bpf_stats_enabled=1, which adds its own "
               "cost to every program run in both configurations).")
    return out


def make_seal_key(a, workdir):
    """The key file of the sealed configuration (once a run), and its verification key."""
    if SEAL_KEY:
        return
    key = os.path.join(workdir, "seal.key")
    if os.path.exists(key):
        os.unlink(key)
    r = subprocess.run([a.bin, "seal-init", key], capture_output=True, text=True, check=True)
    SEAL_KEY[:] = [key, r.stdout.strip()]


def seal_section(a, servers, workdir):
    """bpf -> jsonl with and without --seal in paired rounds (issue 19's cost target)."""
    make_seal_key(a, workdir)
    pair = ("bpf-jsonl-sealed", "bpf-jsonl")
    out = ["", "What sealing costs: paired rounds, %d connections (%d events) per round; each "
               "round an untraced run, then bpf -> jsonl with and without --seal in alternating "
               "order; ratio = traced rate / that round's untraced rate; CPU: tcp-audit's user + "
               "system time per event read (user alone in brackets); making the seals: the CPU "
               "time per event read that the sink's thread spent in them, as tcp-audit's "
               "summary reports it (seals N (S s CPU)); every sealed store passed "
               "tcp-audit verify unless said." % (a.connections, 10 * a.connections + 2),
           "",
           "| shape | threads | rounds | ratio sealed | ratio not | difference, median (range) "
           "| its 90% interval | CPU per event sealed | not | CPU difference, median (range) | "
           "user difference | making the seals, median (range) | verified | completeness "
           "(worst) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes:
        for threads in a.threads:
            rows = []
            for got, base in paired_rounds(a, servers, workdir, "seal", pair, shape, threads,
                                           a.reset_rounds, False):
                s_, n_ = got[pair[0]], got[pair[1]]
                rows.append({"untraced": base, "with": s_["rate"] / base,
                             "without": n_["rate"] / base,
                             "cpu_with": s_["cpu_us_per_event"],
                             "cpu_without": n_["cpu_us_per_event"],
                             "user_with": s_["user_us_per_event"],
                             "user_without": n_["user_us_per_event"],
                             "verified": s_["verified"],
                             "sealing": s_["seal_us_per_event"],
                             "completeness": min(g["completeness"] for g in got.values())})
            diffs = [x["with"] - x["without"] for x in rows]
            cpu = [x["cpu_with"] - x["cpu_without"] for x in rows]
            own = [x["sealing"] for x in rows]
            user = [x["user_with"] - x["user_without"] for x in rows]
            row = {"section": "seal", "shape": shape, "threads": threads,
                   "rounds": a.reset_rounds, "with": median([x["with"] for x in rows]),
                   "without": median([x["without"] for x in rows]),
                   "difference": median(diffs), "cpu_difference": median(cpu),
                   "user_difference": median(user), "sealing": median(own),
                   "interval": median_interval(diffs), "per_round": rows}
            emit(row)
            ok = sum(1 for x in rows if x["verified"])
            out.append("| %s | %d | %d | %.3f | %.3f | %+.3f (%+.3f .. %+.3f) | %s | "
                       "%.3f us (%.3f) | %.3f us (%.3f) | %+.3f us (%+.3f .. %+.3f) | %+.3f us | "
                       "%.3f us (%.3f .. %.3f) | %s | %.4f%% |" % (
                           shape, threads, a.reset_rounds, row["with"], row["without"],
                           row["difference"], min(diffs), max(diffs),
                           fmt_interval(row["interval"]),
                           median([x["cpu_with"] for x in rows]),
                           median([x["user_with"] for x in rows]),
                           median([x["cpu_without"] for x in rows]),
                           median([x["user_without"] for x in rows]),
                           row["cpu_difference"], min(cpu), max(cpu), row["user_difference"],
                           row["sealing"], min(own), max(own),
                           "all" if ok == len(rows) else "%d of %d" % (ok, len(rows)),
                           100 * min(x["completeness"] for x in rows)))
    return out


def burst_section(a, servers, workdir):
    if a.default_problem:
        emit({"section": "burst", "skipped": a.default_problem})
        return ["", "Burst into the default setup: skipped: %s." % a.default_problem]
    row = measure(a, servers, workdir, "default", "fin", 2, a.burst_connections, a.rounds)
    row["section"] = "burst"
    emit(row)
    return [
        "",
        "Burst into the default setup (`tcp-audit`, no arguments): %d connections of the fin "
        "shape, 2 loadgen threads, %d events, %d round%s, medians." % (
            a.burst_connections, row["caused"], a.rounds, "" if a.rounds == 1 else "s"),
        "",
        "| events caused | stored | stored % (worst) | counted loss | peak RSS | rate untraced "
        "| rate traced | overhead | tcp-audit CPU per event | stop (until all stored) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| %d | %d | %.4f%% (%.4f%%) | %g | %.1f MiB | %.0f/s | %.0f/s | %.3f | %.3f us | "
        "%.1f s |" % (row["caused"], row["stored"], 100 * row["completeness"],
                      100 * row["completeness_worst"], row["lost"], row["rss_mib"],
                      row["untraced"], row["traced"], row["overhead"],
                      row["cpu_us_per_event"] or float("nan"), row["stop_s"]),
    ] + tw_note([row])


# -- snapshot: the sockets open at start

# holds argv[1] connections (2 sockets each) to a listener of its own, from
# source address argv[2], until stdin closes
HOLDER = r"""
import socket, sys
n = int(sys.argv[1])
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(4096)
port = l.getsockname()[1]
keep = []
for i in range(n):
    c = socket.socket()
    c.bind((sys.argv[2], 0))
    c.connect(("127.0.0.1", port))
    keep += [c, l.accept()[0]]
print(port, flush=True)
sys.stdin.read()
"""
# connections per holder: a process may have 20,000 files open here (RLIMIT_NOFILE's
# hard limit, which root cannot raise without CAP_SYS_RESOURCE)
PER_HOLDER = 9000


def snapshot_section(a, servers, workdir):
    conns = a.snapshot_sockets // 2
    progress(a, "snapshot: opening %d connections" % conns)
    holders = []
    for i in range(0, conns, PER_HOLDER):
        holders.append(subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(min(PER_HOLDER, conns - i)),
             "127.0.0.%d" % (2 + len(holders))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True))
    if len(holders) > 16:
        sys.exit("bench/run.py: --snapshot-sockets: at most %d" % (32 * PER_HOLDER))
    rows = []
    try:
        ports = ",".join(h.stdout.readline().strip() for h in holders)
        for eventer in ("bpf", "tracefs"):
            out = os.path.join(workdir, "snapshot-%s.jsonl" % eventer)
            err = os.path.join(workdir, "snapshot-%s.err" % eventer)
            env = dict(os.environ, STATE_DIRECTORY=os.path.join(workdir, "state-snap"))
            with open(err, "w") as ef:
                t0 = time.monotonic()
                t = subprocess.Popen([a.bin, "--spool", "none", "--event", eventer, "-p",
                                      "ports=" + ports, "--sink", "jsonl", "-p",
                                      "path=" + out], stderr=ef, env=env)
                started = None
                while started is None and t.poll() is None:
                    with open(err) as f:
                        if "tcp-audit: started" in f.read():
                            started = time.monotonic() - t0
                    time.sleep(0.01)
                time.sleep(1)
                t.send_signal(signal.SIGINT)
                _, status, usage = os.wait4(t.pid, 0)
            with open(err) as f:
                text = f.read()
            m = re.search(r"snapshot: (\d+) TCP sockets? .* taken in (\d+) ms", text)
            with open(out) as f:
                stored = sum('"kind":"snapshot"' in line for line in f)
            row = {"section": "snapshot", "eventer": eventer,
                   "sockets": 2 * conns + len(holders),
                   "listed": int(m[1]) if m else None, "snapshot_ms": int(m[2]) if m else None,
                   "start_s": started, "stored": stored, "rss_mib": usage.ru_maxrss / 1024}
            emit(row)
            rows.append(row)
            os.unlink(out)
    finally:
        for h in holders:
            h.stdin.close()
            h.wait()
    lines = ["", "Start-up snapshot with %d TCP sockets open, held by %d processes (`-p ports=` "
             "of their listeners: all of them are listed)." % (2 * conns + len(holders),
                                                               len(holders)), "",
             "| eventer | sockets listed | snapshot took | exec to started | records stored "
             "| peak RSS |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s ms | %s s | %d | %.1f MiB |" % (
            r["eventer"], r["listed"], r["snapshot_ms"],
            "%.2f" % r["start_s"] if r["start_s"] is not None else "-", r["stored"],
            r["rss_mib"]))
    return lines


# -- replay: sink throughput

def replay_into(a, servers, workdir, kind, path, n, keep=False, source=None):
    """Replays path into a fresh store of kind (or the events of the source
    arguments); returns (row data, store)."""
    ta = TcpAudit(a, workdir)
    store = None
    done = False
    try:
        store = Store(kind, ta, servers)
        pg_before = server_cpu(store.pg)
        ta.start((source or ["--event", "replay", "-p", "path=" + path]) + store.args)
        res = ta.wait(STOP_TIMEOUT * 4)
        if res["rc"] != 0:
            raise RuntimeError("replay into %s failed (%d):\n%s" % (kind, res["rc"],
                                                                   res["stderr"][-4000:]))
        pg_cpu = settle_server_cpu(store.pg, pg_before)
        got = store.count()
        if got != n:
            raise RuntimeError("replay into %s stored %d of %d events" % (kind, got, n))
        row = {
            "events": n,
            "seconds": res["wall"],
            "events_per_s": n / res["wall"],
            "cpu_us_per_event": 1e6 * res["cpu"] / n,
            "server_cpu_us_per_event": None if pg_cpu is None else 1e6 * pg_cpu / n,
            "rss_mib": res["rss_mib"],
            "size_bytes": store.size(),
        }
        done = True
        if keep:
            return row, store, ta
        return row, None, None
    finally:
        if not (keep and done):
            if store:
                store.drop()
            ta.cleanup()


def psql_times(pg, db, sql, runs, warmup=1):
    """Milliseconds per run of sql as psql's \\timing measures it: from
    sending the query to having the whole result in libpq, printing left
    out (the result goes to /dev/null)."""
    script = "\\o /dev/null\n\\timing on\n" + (sql.rstrip().rstrip(";") + ";\n") * (
        warmup + runs)
    out = pg.psql_script(db, script)
    times = [float(line.split()[1]) for line in out.splitlines() if line.startswith("Time: ")]
    if len(times) != warmup + runs:
        raise RuntimeError("psql printed %d times, expected %d:\n%s" % (
            len(times), warmup + runs, out))
    return times[warmup:]


def reference_copy(a, pg, db, n):
    """The server's own COPY FROM a CSV of what the sink stored into an
    index-free table with the same columns; returns the row data."""
    csv = os.path.join(pg.dir, "reference.csv")
    try:
        pg.psql(db, "COPY (SELECT * FROM tcp_audit_events) TO '%s' (FORMAT csv)" % csv)
        pg.psql(db, "DROP TABLE IF EXISTS ref; CREATE TABLE ref (LIKE tcp_audit_events)")
        ms = psql_times(pg, db, "COPY ref FROM '%s' (FORMAT csv)" % csv, 1, warmup=0)[0]
        got = int(pg.psql(db, "SELECT count(*) FROM ref").strip())
        size = os.path.getsize(csv)
        pg.psql(db, "DROP TABLE ref")
    finally:
        if os.path.exists(csv):
            os.unlink(csv)
    return {"events": got, "seconds": ms / 1000, "events_per_s": got / (ms / 1000),
            "csv_bytes": size}


def baseline(a, pg, path, n):
    """The original's way, one INSERT per event (bench/pg-insert-baseline),
    over the first n events of path."""
    part = path + ".baseline"
    with open(path) as src, open(part, "w") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
    pg.createdb("baseline")
    try:
        env = dict(os.environ, **pg.env("baseline"))
        r = subprocess.run([os.path.join(a.build, "bench", "pg-insert-baseline"), part],
                           env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("pg-insert-baseline failed: " + r.stderr)
        kv = {k: float(v) for k, v in (x.split("=") for x in r.stdout.split())}
        return {"events": int(kv["rows"]), "seconds": kv["seconds"], "events_per_s": kv["rate"]}
    finally:
        pg.dropdb("baseline")
        os.unlink(part)


CH_REFERENCE = ("the ClickHouse server alone: the same rows as RowBinary from curl, inserts "
                "of 100,000 rows %s (reference)")


def reference_clickhouse(ch, db, n, streams, rows=100000):
    """How fast the server itself takes the rows the sink stored, with no
    tcp-audit: exported as RowBinary in inserts of the sink's default size,
    then inserted again into an empty table like it by curl, streams inserts
    at a time; returns the row data."""
    parts = []
    try:
        for start in range(0, n, rows):
            fd, part = tempfile.mkstemp(prefix="ch-ref-", dir=ch.dir)
            os.close(fd)
            parts.append(part)
            subprocess.run(["curl", "-sSf", "-o", part, ch.url + "/", "--data-binary",
                            "SELECT * FROM %s.tcp_events ORDER BY host, time_ns, uid "
                            "LIMIT %d OFFSET %d FORMAT RowBinary" % (db, rows, start)],
                           check=True)
        ch.query("DROP TABLE IF EXISTS %s.ref" % db)
        ch.query("CREATE TABLE %s.ref AS %s.tcp_events" % (db, db))
        url = ch.url + "/?query=" + urllib.parse.quote("INSERT INTO %s.ref FORMAT RowBinary" % db)
        time.sleep(2)  # the replay's merges settled
        before = server_cpu(ch)
        t0 = time.monotonic()
        procs = []
        for k in range(streams):
            script = "".join("curl -sSf -H 'Expect:' --data-binary @%s '%s' && " % (p, url)
                             for p in parts[k::streams]) + "true"
            procs.append(subprocess.Popen(["sh", "-c", script]))
        if any(p.wait() for p in procs):
            raise RuntimeError("curl could not insert the reference rows")
        seconds = time.monotonic() - t0
        cpu = settle_server_cpu(ch, before)
        got = int(ch.query("SELECT count() FROM %s.ref FINAL" % db))
        if got != n:
            raise RuntimeError("the reference inserts stored %d of %d rows" % (got, n))
        return {"events": n, "seconds": seconds, "events_per_s": n / seconds,
                "server_cpu_us_per_event": 1e6 * cpu / n}
    finally:
        for part in parts:
            os.unlink(part)


REPLAY_SINKS = (("jsonl", "jsonl (reference)"), ("sqlite", "sqlite"),
                ("pgsql-stock", "pgsql, stock PostgreSQL"),
                ("pgsql-tuned", "pgsql, tuned PostgreSQL"),
                ("clickhouse", "clickhouse, Debian's ClickHouse 18.16"))


def replay_section(a, servers, workdir):
    n = a.replay_events
    in_order = os.path.join(workdir, "replay.jsonl")
    shuffled = os.path.join(workdir, "replay-shuffled.jsonl")
    progress(a, "making %d capture-shaped events" % n)
    shaped.write(in_order, n, seed=1, events_per_s=20000.0)
    shaped.shuffle(in_order, shuffled)
    rows = []

    def add(row):
        row["section"] = "replay"
        emit(row)
        rows.append(row)

    for variant, path in (("in order", in_order), ("shuffled", shuffled)):
        for kind, label in REPLAY_SINKS:
            if kind not in a.replay_sinks:
                continue
            progress(a, "replay %s into %s" % (variant, label))
            keep = (kind in ("pgsql-stock", "clickhouse") and variant == "in order" and
                    a.reference)
            row, store, ta = replay_into(a, servers, workdir, kind, path, n, keep=keep)
            row.update({"store": label, "variant": variant})
            add(row)
            if keep:
                try:
                    if kind == "clickhouse":
                        for streams in (1, 2):
                            progress(a, "reference: the ClickHouse server alone, %d insert(s) "
                                        "at a time" % streams)
                            ref = reference_clickhouse(store.pg, store.db, n, streams)
                            ref.update({"store": CH_REFERENCE % (
                                "one at a time" if streams == 1 else "two at a time"),
                                "variant": variant})
                            add(ref)
                    else:
                        progress(a, "reference: the server's COPY FROM csv")
                        ref = reference_copy(a, store.pg, store.db, n)
                        ref.update({"store": "stock PostgreSQL: COPY FROM csv into an "
                                             "index-free table (reference)", "variant": variant})
                        add(ref)
                finally:
                    store.drop()
                    ta.cleanup()
    if "clickhouse" in a.replay_sinks:
        # the sink and the server without the replay's JSON parsing, which takes one of
        # the two cores: the test fixture's events, made in memory
        progress(a, "events made in memory into clickhouse")
        synthetic = os.path.join(a.build, "tests", "fixtures", "tcp-audit-synthetic-eventer.so")
        row, _, _ = replay_into(a, servers, workdir, "clickhouse", None, n, source=[
            "--event", synthetic, "-p", "count=%d" % n, "--spool", "none"])
        row.update({"store": "clickhouse, events made in memory (tests/fixtures' synthetic "
                             "eventer: no JSON parsing)", "variant": "in order"})
        add(row)
    if a.baseline_events:
        progress(a, "the original's one INSERT per event")
        row = baseline(a, servers.get("stock"), in_order, a.baseline_events)
        row.update({"store": "stock PostgreSQL: the original's one INSERT per event",
                    "variant": "in order"})
        add(row)
    os.unlink(in_order)
    os.unlink(shuffled)

    out = ["", "Sink throughput: a replay of %d capture-shaped events (bench/shaped.py: "
               "per-connection chains, a third IPv6, two thirds with socket info), each "
               "into a fresh store; shuffled: the same events in random order." % n, "",
           "| store | order | events | seconds | events/s | tcp-audit CPU per event | "
           "server CPU per event | peak RSS | store size |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %s | %d | %.2f | %.0f | %s | %s | %s | %s |" % (
            r["store"], r["variant"], r["events"], r["seconds"], r["events_per_s"],
            fmt(r.get("cpu_us_per_event"), "%.3f us"),
            fmt(r.get("server_cpu_us_per_event"), "%.3f us"),
            fmt(r.get("rss_mib"), "%.1f MiB"),
            fmt(r.get("size_bytes") and r["size_bytes"] / 2**20, "%.0f MiB")))
    stock = [r for r in rows if r["store"] == "pgsql, stock PostgreSQL"
             and r["variant"] == "in order"]
    base = [r for r in rows if "one INSERT per event" in r["store"]]
    ref = [r for r in rows if "(reference)" in r["store"] and "COPY" in r["store"]]
    if stock and base:
        out.append("")
        out.append("pgsql sink / the original's way, stock server: %.1fx" % (
            stock[0]["events_per_s"] / base[0]["events_per_s"]))
    if stock and ref:
        out.append("pgsql sink / the server's own COPY FROM csv, stock server: %.2f" % (
            stock[0]["events_per_s"] / ref[0]["events_per_s"]))
    ch = [r for r in rows if r["store"].startswith("clickhouse, Debian")
          and r["variant"] == "in order"]
    ch_ref = [r for r in rows if r["store"] == CH_REFERENCE % "one at a time"]
    if ch and ch_ref:
        out.append("")
        out.append("clickhouse sink / the server alone, one insert at a time: %.2f" % (
            ch[0]["events_per_s"] / ch_ref[0]["events_per_s"]))
    return out


def verify_source(store):
    """What tcp-audit verify takes for a store."""
    if store.kind == "clickhouse":
        return store.pg.url + "/?database=" + store.db
    if store.kind.startswith("pgsql"):
        return store.pg.conninfo(store.db)
    return store.path


def verify_section(a, servers, workdir):
    """tcp-audit verify's speed on a sealed archive of each store."""
    make_seal_key(a, workdir)
    n = a.replay_events
    path = os.path.join(workdir, "verify.jsonl")
    progress(a, "making %d capture-shaped events" % n)
    shaped.write(path, n, seed=1, events_per_s=20000.0)
    out = ["", "tcp-audit verify on a sealed archive: %d capture-shaped events (bench/shaped.py) "
               "replayed with --seal into a fresh store (the seals as the replay's batches make "
               "them), then verified; CPU: verify's own user + system time; every run must "
               "exit 0." % n, "",
           "| store | events | seals | seconds | events/s | verify CPU |",
           "|---|---|---|---|---|---|"]
    for kind, label in REPLAY_SINKS:
        if kind not in a.replay_sinks:
            continue
        progress(a, "sealed replay into %s" % label)
        _, store, ta = replay_into(a, servers, workdir, kind, path, n, keep=True, source=[
            "--event", "replay", "-p", "path=" + path, "--seal", SEAL_KEY[0]])
        try:
            progress(a, "verify %s" % label)
            with tempfile.TemporaryFile() as report:
                ta.start(["verify", verify_source(store), "--verify-key", SEAL_KEY[1]],
                         stdout=report)
                res = ta.wait(STOP_TIMEOUT * 4)
                report.seek(0)
                text = report.read().decode(errors="replace") + res["stderr"]
            if res["rc"] != 0:
                raise RuntimeError("verify of %s failed (%d):\n%s" % (label, res["rc"],
                                                                      text[-4000:]))
            m = re.search(r"(\d+) \w+s verified in (\d+) seals", text)
            if not m or int(m.group(1)) != n:
                raise RuntimeError("verify of %s: not %d events verified:\n%s" % (
                    label, n, text[-4000:]))
            wall = res["wall"]
            row = {"section": "verify", "store": label, "events": n,
                   "seals": int(m.group(2)), "seconds": wall, "events_per_s": n / wall,
                   "cpu_s": res["cpu"]}
            emit(row)
            out.append("| %s | %d | %d | %.1f | %.0f | %.1f s |" % (
                label, n, row["seals"], wall, row["events_per_s"], row["cpu_s"]))
        finally:
            store.drop()
            ta.cleanup()
    os.unlink(path)
    return out


# -- archive: lookups

def sqlite_pick(path, t_mid):
    db = sqlite3.connect(path)
    try:
        uid, cookie, t = db.execute(
            "SELECT uid, sock_cookie, time_ns FROM tcp_audit_events WHERE kind = 0 AND "
            "time_ns >= ? AND sock_cookie IS NOT NULL ORDER BY time_ns LIMIT 1",
            (t_mid,)).fetchone()
        addr, port = db.execute(
            "SELECT daddr, dport FROM tcp_audit_events WHERE time_ns BETWEEN ? AND ? AND "
            "kind = 0 AND daddr NOT IN ('127.0.0.1', '::1') GROUP BY daddr, dport "
            "ORDER BY count(*) DESC, daddr LIMIT 1", (t, t + 3600 * 10**9)).fetchone()
    finally:
        db.close()
    return {"uid": uid, "cookie": cookie, "time_ns": t, "daddr": addr, "dport": port}


def pgsql_pick(pg, db, t_mid):
    line = pg.psql(db, "SELECT uid::text, sock_cookie, time_ns FROM tcp_audit_events WHERE "
                       "kind = 0 AND time_ns >= %d AND sock_cookie IS NOT NULL ORDER BY "
                       "time_ns LIMIT 1" % t_mid).strip()
    uid, cookie, t = line.split("|")
    t = int(t)
    line = pg.psql(db, "SELECT host(daddr), dport FROM tcp_audit_events WHERE time_ns "
                       "BETWEEN %d AND %d AND kind = 0 AND NOT (daddr <<= '127.0.0.0/8' OR "
                       "daddr = '::1') GROUP BY daddr, dport ORDER BY count(*) DESC, daddr "
                       "LIMIT 1" % (t, t + 3600 * 10**9)).strip()
    addr, port = line.split("|")
    return {"uid": uid, "cookie": int(cookie), "time_ns": t, "daddr": addr, "dport": int(port)}


JOIN = ("SELECT e.timestamp, e.pid_on_cpu, e.comm_on_cpu, e.src_ip, e.dst_ip, e.src_port, "
        "e.dst_port, e.old_state, e.new_state, s.id, s.inode, s.user_id, s.group_id, s.state "
        "FROM tcp_events e LEFT JOIN tcp_events_socket_info s ON s.tcp_event_uid = e.uid "
        "WHERE e.uid = '%s'")


def uid_prefix(t):
    """The first 18 characters of every uid of time t (ns): its time in hex."""
    return "%08x-%04x-%04x" % (t >> 32, (t >> 16) & 65535, t & 65535)


def time_range(t0, t1, pgsql):
    """A half-open time range as each store answers it fast: PostgreSQL on
    time_ns (chunks, BRIN), SQLite on its key, the uid, which starts with the
    time (the README's way, with the printf done here)."""
    if pgsql:
        return "time_ns >= %d AND time_ns < %d" % (t0, t1)
    return "uid >= '%s' AND uid < '%s'" % (uid_prefix(t0), uid_prefix(t1))


def queries(v, pgsql):
    addr = "'%s'::inet" % v["daddr"] if pgsql else "'%s'" % v["daddr"]
    t = v["time_ns"]
    return [
        ("the original's join, one uid", JOIN % v["uid"]),
        ("one connection by cookie",
         "SELECT * FROM tcp_audit_events WHERE sock_cookie = %d" % v["cookie"]),
        ("one minute",
         "SELECT * FROM tcp_audit_events WHERE %s" % time_range(t, t + 60 * 10**9, pgsql)),
        ("one address:port, one hour",
         "SELECT * FROM tcp_audit_events WHERE daddr = %s AND dport = %d AND %s" % (
             addr, v["dport"], time_range(t, t + 3600 * 10**9, pgsql))),
    ]


def sqlite_times(path, sql, runs, warmup=1):
    """Milliseconds per run through python's sqlite3: prepare (no statement
    cache), step and fetch every row into Python tuples."""
    db = sqlite3.connect(path, cached_statements=0)
    try:
        times, rows = [], 0
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            rows = len(db.execute(sql).fetchall())
            times.append(1000 * (time.perf_counter() - t0))
        return times[warmup:], rows
    finally:
        db.close()


def report_times(a, source, t0, fmt, workdir, warmup=1):
    """Seconds per run of tcp-audit report over [t0, t0 + 1 h) of source (the
    command as a user runs it, `> report`: stdout a file; Python's reading of a
    pipe took 0.3 s for a 33 MB report that `| cat` takes in 0.03 s, and is not
    the report's time), after the store's writes reached the disk, and what it
    found."""
    def rfc3339(ns):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + \
            ".%09dZ" % (ns % 10**9)
    args = [a.bin, "report", source, "--since", rfc3339(t0), "--until",
            rfc3339(t0 + 3600 * 10**9)] + (["--format", "json"] if fmt == "json" else [])
    # in memory where there is a tmpfs: 33 MB rewritten per run is disk writeback
    # that the next run competed with (SQLite JSON runs 1.36 ... 2.09 s)
    out_dir = "/dev/shm" if os.path.isdir("/dev/shm") else workdir
    path = os.path.join(out_dir, "tcp-audit-bench-report-%d.%s" % (os.getpid(), fmt))
    # the store just built is gigabytes of dirty pages: written before the runs
    os.sync()
    times = []
    for i in range(warmup + a.query_runs):
        with open(path, "wb") as f:
            t = time.perf_counter()
            r = subprocess.run(args, stdout=f, stderr=subprocess.PIPE, text=True)
            times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError("tcp-audit report failed (%d): %s" % (r.returncode, r.stderr))
    with open(path) as f:
        out = f.read()
    os.unlink(path)
    if fmt == "json":
        connections = json.loads(out)["totals"]["connections"]
    else:
        connections = int(re.search(r"^(\d+) connections?:", out, re.M).group(1))
    return {"format": fmt, "seconds": median(times[warmup:]), "seconds_runs": times[warmup:],
            "connections": connections}


def archive_section(a, servers, workdir):
    n = a.archive_events
    path = os.path.join(workdir, "archive.jsonl")
    progress(a, "making a %d-event archive file spanning 24 hours" % n)
    first, last = shaped.write(path, n, seed=3, events_per_s=n / 86400.0)
    t_mid = first + (last - first) // 2
    builds, results, reports = [], [], []
    for kind, label in (("sqlite", "SQLite"), ("pgsql-stock", "PostgreSQL (stock)")):
        progress(a, "archive: building %s" % label)
        row, store, ta = replay_into(a, servers, workdir, kind, path, n, keep=True)
        try:
            row.update({"section": "archive", "store": label, "what": "build",
                        "input_bytes": os.path.getsize(path)})
            emit(row)
            builds.append(row)
            pgsql = kind != "sqlite"
            v = pgsql_pick(store.pg, store.db, t_mid) if pgsql else sqlite_pick(store.path,
                                                                               t_mid)
            for what, sql in queries(v, pgsql):
                progress(a, "archive %s: %s" % (label, what))
                if pgsql:
                    times = psql_times(store.pg, store.db, sql, a.query_runs)
                    rows = int(store.pg.psql(store.db, "SELECT count(*) FROM (%s) q" % sql)
                               .strip())
                else:
                    times, rows = sqlite_times(store.path, sql, a.query_runs)
                r = {"section": "archive", "store": label, "what": "query", "query": what,
                     "sql": sql, "ms": median(times), "ms_runs": times, "rows": rows}
                emit(r)
                results.append(r)
            source = store.pg.conninfo(store.db) if pgsql else store.path
            count = ("SELECT count(*) FROM tcp_audit_events WHERE time_ns >= %d AND "
                     "time_ns < %d" % (t_mid, t_mid + 3600 * 10**9))
            if pgsql:
                hour_events = int(store.pg.psql(store.db, count).strip())
            else:
                with sqlite3.connect(store.path) as db:
                    hour_events = db.execute(count).fetchone()[0]
            for fmt in ("text", "json"):
                progress(a, "archive %s: tcp-audit report, one hour, %s" % (label, fmt))
                r = report_times(a, source, t_mid, fmt, workdir)
                r.update({"section": "archive", "store": label, "what": "report",
                          "events": hour_events})
                emit(r)
                reports.append(r)
        finally:
            store.drop()
            ta.cleanup()
    os.unlink(path)
    out = ["", "Archive: %d capture-shaped events over 24 hours (%.0f events/s on average), "
               "replayed into a fresh store." % (n, n / 86400.0), "",
           "| store | build events/s | build seconds | size | bytes per event |",
           "|---|---|---|---|---|"]
    for r in builds:
        out.append("| %s | %.0f | %.1f | %.0f MiB | %.0f |" % (
            r["store"], r["events_per_s"], r["seconds"], r["size_bytes"] / 2**20,
            r["size_bytes"] / n))
    out += ["", "Lookups, median of %d runs after one warm-up (SQLite: python sqlite3, "
                "prepare + fetch of every row; PostgreSQL: psql's \\timing, from sending the "
                "query to the whole result in libpq):" % a.query_runs, "",
            "| store | query | ms | rows |", "|---|---|---|---|"]
    for r in results:
        out.append("| %s | %s | %.2f | %d |" % (r["store"], r["query"], r["ms"], r["rows"]))
    out += ["", "`tcp-audit report` of one hour (from the middle of the day: about 1/24 of "
                "the events, 'events' below), median of %d runs after one warm-up, wall clock "
                "from exec to exit, the report written to a file (in /dev/shm), after a sync "
                "(issue 18's target: at most 2 s):" % a.query_runs, "",
            "| store | format | seconds | events in the hour | connections | runs |",
            "|---|---|---|---|---|---|"]
    for r in reports:
        out.append("| %s | %s | %.2f | %d | %d | %s |" % (
            r["store"], r["format"], r["seconds"], r["events"], r["connections"],
            " ".join("%.2f" % t for t in r["seconds_runs"])))
    out += ["", "Queries (values picked from the archive: the first event with a cookie past "
                "the middle of the day, and the busiest remote address:port in the hour "
                "that follows it):", ""]
    seen = set()
    for r in results:
        if (r["store"], r["query"]) not in seen:
            seen.add((r["store"], r["query"]))
            out.append("- %s, %s: `%s`" % (r["store"], r["query"], r["sql"]))
    return out


# -- main

def commit():
    def git(*args):
        r = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        head += " (plus uncommitted changes)"
    return head


def comma_list(text, allowed, what):
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in allowed:
            raise SystemExit("bench/run.py: unknown %s %r (one of %s)" % (
                what, x, ", ".join(allowed)))
    return items


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Sections: " + ", ".join(SECTIONS) + ". Configurations: " +
               ", ".join(CONFIGS) + ". See the top of bench/run.py for what each measures.")
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="the build directory (default: build/ of this tree)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma list of sections to run (default: all)")
    p.add_argument("--configs", default=",".join(CAPTURE_DEFAULT),
                   help="comma list of capture configurations (default: all but "
                        "bpf-jsonl-sealed)")
    p.add_argument("--shapes", default=",".join(SHAPES),
                   help="load shapes for capture (default fin,busy)")
    p.add_argument("--threads", default="1,2",
                   help="loadgen thread counts for capture (default 1,2)")
    p.add_argument("--connections", type=int, default=200000,
                   help="connections per capture round (10 events each; default 200000)")
    p.add_argument("--rounds", type=int, default=2,
                   help="traced (and untraced) rounds per row (default 2)")
    p.add_argument("--pair-rounds", "--reset-rounds", dest="reset_rounds", type=int, default=6,
                   help="rounds per row of the resets, eventers, seal (paired) and witness "
                        "sections (default 6)")
    p.add_argument("--prog-stats", action="store_true",
                   help="resets section: count the BPF programs' runs and time "
                        "(kernel.bpf_stats_enabled)")
    p.add_argument("--burst-connections", type=int, default=200000,
                   help="connections of the burst (10 events each; default 200000)")
    p.add_argument("--replay-events", type=int, default=1000000,
                   help="events replayed into each sink (default 1000000)")
    p.add_argument("--replay-sinks", default=",".join(k for k, _ in REPLAY_SINKS),
                   help="comma list of the stores replay writes to (default: all of %s)"
                        % ",".join(k for k, _ in REPLAY_SINKS))
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the server's own COPY FROM csv in replay")
    p.add_argument("--baseline-events", type=int, default=100000,
                   help="events stored the original's way, one INSERT each (default "
                        "100000; 0: skip)")
    p.add_argument("--snapshot-sockets", type=int, default=100000,
                   help="TCP sockets open for the snapshot section (default 100000)")
    p.add_argument("--archive-events", type=int, default=10000000,
                   help="events in the lookup archive (default 10000000)")
    p.add_argument("--no-archive", action="store_true", help="skip the archive section")
    p.add_argument("--query-runs", type=int, default=5,
                   help="timed runs of each lookup, after one warm-up (default 5)")
    p.add_argument("--workdir", help="where the files go (default: a new temporary "
                                     "directory, removed at the end)")
    p.add_argument("--quick", action="store_true",
                   help="20000 connections per round and per burst, 1 round, 100000 "
                        "replayed events, 20000 baseline events, a 1000000-event archive")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="progress lines (starting with #) on stderr")
    a = p.parse_args()
    if a.quick:
        a.connections, a.burst_connections, a.rounds = 20000, 20000, 1
        a.replay_events, a.baseline_events, a.archive_events = 100000, 20000, 1000000
    if min(a.rounds, a.reset_rounds, a.connections, a.burst_connections, a.replay_events, a.archive_events,
           a.query_runs, a.snapshot_sockets) < 1 or a.baseline_events < 0:
        sys.exit("bench/run.py: rounds, connections, events and runs must be positive")
    a.sections = comma_list(a.sections, SECTIONS, "section")
    if a.no_archive and "archive" in a.sections:
        a.sections.remove("archive")
    a.configs = comma_list(a.configs, list(CONFIGS), "configuration")
    a.shapes = comma_list(a.shapes, SHAPES, "shape")
    a.replay_sinks = comma_list(a.replay_sinks, [k for k, _ in REPLAY_SINKS], "replay sink")
    a.threads = [int(t) for t in a.threads.split(",") if t]
    a.bin = os.path.join(a.build, "src", "tcp-audit")
    if os.geteuid() != 0:
        sys.exit("bench/run.py: run as root (kernel tracing)")
    for exe in (a.bin, os.path.join(a.build, "bench", "loadgen"),
                os.path.join(a.build, "bench", "syscall-loop")):
        if not os.access(exe, os.X_OK):
            sys.exit("bench/run.py: %s is missing: build first (ninja -C %s)" % (exe, a.build))
    if "kernelpath" in a.sections and not shutil.which("perf"):
        sys.exit("bench/run.py: the kernelpath section needs perf (Debian: apt-get install "
                 "linux-perf), or leave it out (--sections)")

    print("# tcp-audit benchmark")
    print("")
    print("Command: `%s`  " % shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]))
    print("Commit: %s  " % commit())
    print("Machine: %d CPUs, Linux %s, %s" % (os.cpu_count(), os.uname().release,
                                             time.strftime("%Y-%m-%d %H:%M UTC",
                                                           time.gmtime())))
    sys.stdout.flush()

    workdir = a.workdir or tempfile.mkdtemp(prefix="tcp-audit-bench-")
    os.makedirs(workdir, exist_ok=True)
    servers = Servers()
    try:
        a.default_problem = None
        if "bpf-jsonl-sealed" in a.configs and "capture" in a.sections:
            make_seal_key(a, workdir)
        if "burst" in a.sections or "default" in a.configs and "capture" in a.sections:
            a.default_problem = default_path_problem(a, workdir)
        for section in a.sections:
            out = {"capture": capture_section, "resets": resets_section,
                   "eventers": eventers_section, "kernelpath": kernelpath_section,
                   "seal": seal_section,
                   "witness": witness_section, "syscalls": syscalls_section,
                   "burst": burst_section,
                   "replay": replay_section, "verify": verify_section,
                   "snapshot": snapshot_section,
                   "archive": archive_section}[section](
                       a, servers, workdir)
            print("\n".join(out))
            sys.stdout.flush()
        if servers.pg:
            print("")
            for kind, pg in sorted(servers.pg.items()):
                print("PostgreSQL %s (%s): %s  " % (
                    kind, os.path.basename(os.path.dirname(pg.bindir)),
                    ", ".join("%s %s" % kv for kv in pg.settings().items())))
    finally:
        servers.cleanup()
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
