"""Shared helpers for the end-to-end tests: run the real tcp-audit binary.

Every test script is a plain unittest module run by `meson test`, which sets
TCP_AUDIT_BIN (the binary in the build tree; run from there it loads the
plugins of the build tree) and TCP_AUDIT_BUILD_DIR.
"""
import collections
import contextlib
import json
import sys
import unittest
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("TCP_AUDIT_BIN", "")
BUILD_DIR = os.environ.get("TCP_AUDIT_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("TCP_AUDIT_SOURCE_DIR", "")
# a command tcp-audit runs under, e.g. valgrind (meson test --setup valgrind)
WRAPPER = shlex.split(os.environ.get("TCP_AUDIT_WRAPPER", ""))
# a STATE_DIRECTORY of the shell (or unit) that runs the tests is not theirs: without this, every
# test's tcp-audit (and the commands tests start with dict(os.environ, ...)) would share its
# archive and spool, and write into it
os.environ.pop("STATE_DIRECTORY", None)


def with_state_directory(env, directory):
    """env (default: ours) with STATE_DIRECTORY set to directory unless env sets it:
    a test's tcp-audit keeps its default archive and spool to itself, never in
    /var/lib/tcp-audit."""
    env = dict(os.environ if env is None else env)
    env.setdefault("STATE_DIRECTORY", directory)
    return env


def run(args, input=None, timeout=60, env=None):
    """Runs tcp-audit to completion; returns CompletedProcess (text)."""
    with tempfile.TemporaryDirectory(prefix="tcp-audit-state-") as state:
        return subprocess.run(WRAPPER + [BIN] + list(args), input=input, capture_output=True,
                              text=True, timeout=timeout, env=with_state_directory(env, state))


class Running:
    """A tcp-audit process in the background.

    Waits until it logs that it has started (all plugins open, reading), so
    traffic made afterwards is captured.  stderr goes to a file (never a
    pipe that could fill up); stdout likewise unless a file object is given
    as stdout (then stdout() is not available).
    """

    def __init__(self, args, env=None, start_timeout=30, wait_started=True, stdout=None):
        self.dir = tempfile.TemporaryDirectory(prefix="tcp-audit-test-")
        self.stderr_path = os.path.join(self.dir.name, "stderr")
        self.stdout_path = os.path.join(self.dir.name, "stdout")
        self._err = open(self.stderr_path, "wb")
        self._out = stdout if stdout is not None else open(self.stdout_path, "wb")
        self.state_dir = os.path.join(self.dir.name, "state")
        os.mkdir(self.state_dir)
        self.proc = subprocess.Popen(WRAPPER + [BIN] + list(args), stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL,
                                     env=with_state_directory(env, self.state_dir))
        if wait_started:
            self.wait_for_log("tcp-audit: started", start_timeout)

    def stderr(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.stdout_path, "r", errors="replace") as f:
            return f.read()

    def wait_for_log(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return
            if self.proc.poll() is not None:
                raise AssertionError("tcp-audit exited %d before logging %r:\n%s"
                                     % (self.proc.returncode, text, self.stderr()))
            time.sleep(0.02)
        raise AssertionError("tcp-audit did not log %r within %ss:\n%s"
                             % (text, timeout, self.stderr()))

    def counters(self):
        """Asks for the counters (SIGUSR1) and returns them parsed."""
        mark = "tcp-audit: counters: events read"
        before = self.stderr().count(mark)
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: self.stderr().count(mark) > before, 10, "the counters")
        return counters(self.stderr(), "counters")

    def stop(self, sig=signal.SIGINT, timeout=60):
        """Signals it and waits; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._err.close()
            self._out.close()

    def wait(self, timeout=60):
        rc = self.proc.wait(timeout=timeout)
        self._err.close()
        self._out.close()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()
        self._out.close()
        self.dir.cleanup()


def read_jsonl(path):
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def free_ports(n, family=socket.AF_INET):
    """n loopback ports free now, all different: the sockets that found them
    are held until the last is bound (ports found one after the other can
    repeat, and two cases of a test on one port mix their connections)."""
    held = [socket.socket(family) for _ in range(n)]
    try:
        for s in held:
            s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def wait_until(cond, timeout=30, what="condition"):
    """Polls cond() until it is true; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))


def counters(stderr_text, what="summary"):
    """Parses the exit summary (or SIGUSR1 "counters") lines into a dict:
    "events read", "lost in kernel", ..., and per sink "sink LABEL written",
    "sink LABEL undelivered".  Later lines win."""
    out = {}
    prefix = "tcp-audit: %s: " % what
    for line in stderr_text.splitlines():
        if not line.startswith(prefix):
            continue
        body = line[len(prefix):]
        if body.startswith("sink "):
            label, _, rest = body[len("sink "):].partition(": ")
            for part in rest.split(", "):
                k, _, v = part.partition(" ")
                out["sink %s %s" % (label, k)] = int(v.split()[0])
        else:
            for part in body.split(", "):
                k, _, v = part.rpartition(" ")
                out[k] = int(v)
    return out


def split_gaps(lines):
    """A store's lines as (those that are not gap records, the events the gap
    records count as lost)."""
    return ([e for e in lines if e.get("kind") != "gap"],
            sum(e["lost"] for e in lines if e.get("kind") == "gap"))


def summary(stderr_text):
    return counters(stderr_text, "summary")


def open_flags(pid, path):
    """The open flags of each of pid's descriptors open on path."""
    found = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != path:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                found.append(int(re.search(r"flags:\s*([0-7]+)", f.read()).group(1), 8))
        except FileNotFoundError:
            continue  # closed meanwhile
    return found


FIXTURES = os.environ.get("TCP_AUDIT_FIXTURE_DIR", "")


def fixture(name):
    """Path of a test fixture plugin, e.g. fixture("faulty-sink")."""
    return os.path.join(FIXTURES, "tcp-audit-%s.so" % name)


def sample_line(seq, **over):
    """A JSON line in the jsonl sink's exact format, with every field."""
    fields = [
        ("time", '"2026-11-25T01:53:07.%09dZ"' % seq),
        ("host", '"host-a"'),
        ("family", '"inet"'),
        ("saddr", '"127.0.0.1"'),
        ("sport", str(40000 + seq % 20000)),
        ("daddr", '"127.0.0.2"'),
        ("dport", "8080"),
        ("old_state", '"CLOSED"'),
        ("new_state", '"SYN-SENT"'),
        ("error", None),  # only when given
        ("pid_on_cpu", "100"),
        ("tid_on_cpu", "101"),
        ("comm_on_cpu", '"curl"'),
        ("owner_pid", "100"),
        ("owner_uid", "1000"),
        ("owner_comm", '"curl"'),
        ("sock_cookie", str(1000 + seq)),
        ("sock_inode", str(50000 + seq)),
        ("sock_uid", "1000"),
        ("sock_gid", "1000"),
        ("sock_state", '"CONNECTING"'),
        ("netns", "4026531840"),
        ("cgroup_id", "7"),
        ("seq", str(seq)),
        ("ktime", str(1000000 + seq)),
    ]
    out = []
    for k, v in fields:
        if k in over:
            if over[k] is None:
                continue
            v = over[k]
        if v is not None:
            out.append('"%s":%s' % (k, v))
    return "{" + ",".join(out) + "}"


def sqlite_uids(path):
    """The uids of the events in an SQLite archive of the sqlite sink."""
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [r[0] for r in con.execute("SELECT uid FROM tcp_audit_events")]
    finally:
        con.close()


# A socket's transitions over loopback, as the kernel tests expect them.
CLIENT = ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSED"]
SERVER = ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
LISTENER = ["CLOSED", "LISTEN", "CLOSED"]


def states(events):
    """The transition chain of one socket's events: [old0, new0, new1, ...]."""
    if not events:
        return []
    chain = [events[0]["old_state"]]
    for e in events:
        if e["old_state"] != chain[-1]:
            chain.append("?%s" % e["old_state"])
        chain.append(e["new_state"])
    return chain


# The kernel's names of TCP states (the tracepoint's text) in ours.
KERNEL_STATES = {
    "TCP_ESTABLISHED": "ESTABLISHED", "TCP_SYN_SENT": "SYN-SENT", "TCP_SYN_RECV": "SYN-RECEIVED",
    "TCP_FIN_WAIT1": "FIN-WAIT-1", "TCP_FIN_WAIT2": "FIN-WAIT-2", "TCP_TIME_WAIT": "TIME-WAIT",
    "TCP_CLOSE": "CLOSED", "TCP_CLOSE_WAIT": "CLOSE-WAIT", "TCP_LAST_ACK": "LAST-ACK",
    "TCP_LISTEN": "LISTEN", "TCP_CLOSING": "CLOSING", "TCP_NEW_SYN_RECV": "NEW-SYN-RECEIVED",
}


@contextlib.contextmanager
def small_file_system(where, mib, ext4=False):
    """A file system of mib MiB mounted on where (a directory made here), for
    a test to fill up: tmpfs, or ext4 in an image file beside where (ext4
    takes O_DIRECT writes and chattr +i).  Unmounted and gone at the end.
    Needs root."""
    os.mkdir(where)
    image = where + ".img"
    try:
        if ext4:
            with open(image, "wb") as f:
                f.truncate(mib << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
            subprocess.run(["mount", "-o", "loop", image, where], check=True)
        else:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % mib, "tcp-audit-test",
                            where], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", where], check=True)
    finally:
        os.rmdir(where)
        if ext4 and os.path.exists(image):
            os.unlink(image)


def pid1_threads():
    """The thread ids of PID 1."""
    return {int(t) for t in os.listdir("/proc/1/task")}


class Witness:
    """A second, independent record of the state changes on some ports: a
    tracing instance of the test's own with sock:inet_sock_set_state on, so
    a test can tell a BPF blind spot of the test VM from a tcp-audit bug.

    On the VM the tests run in, a state change that happens while a thread
    of PID 1 (the VM's agent) is on the CPU never runs a BPF program, and
    the kernel counts no miss (README, "Limits"); ftrace sees it.  blind()
    returns the transitions the witness saw in that context: the only ones
    a bpf capture may be missing."""

    TRACING = "/sys/kernel/tracing"

    def __init__(self, ports, buffer_kb=32768):
        if not os.path.isdir(os.path.join(self.TRACING, "instances")):
            subprocess.run(["mount", "-t", "tracefs", "nodev", self.TRACING], check=True)
        self.dir = os.path.join(self.TRACING, "instances", "tcp-audit-test-witness-%d" % os.getpid())
        if os.path.isdir(self.dir):
            os.rmdir(self.dir)
        os.mkdir(self.dir)
        self._write("buffer_size_kb", str(buffer_kb))
        event = os.path.join("events", "sock", "inet_sock_set_state")
        self._write(os.path.join(event, "filter"),
                    " || ".join("sport == %d || dport == %d" % (p, p) for p in ports))
        self._write(os.path.join(event, "enable"), "1")
        self.threads = pid1_threads()
        self.lines = None

    def _write(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def stop(self):
        """Stops recording and reads what was recorded; the instance goes."""
        if self.lines is not None:
            return
        self._write("tracing_on", "0")
        self.threads |= pid1_threads()
        overrun = 0
        for cpu in os.listdir(os.path.join(self.dir, "per_cpu")):
            with open(os.path.join(self.dir, "per_cpu", cpu, "stats")) as f:
                stats = dict(l.split(":", 1) for l in f if ":" in l)
            overrun += int(stats["overrun"])
        with open(os.path.join(self.dir, "trace")) as f:
            self.lines = [l for l in f if "inet_sock_set_state:" in l]
        os.rmdir(self.dir)
        if overrun:
            raise AssertionError("the witness's buffer overflowed (%d events)" % overrun)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.lines is None:
            self._write("tracing_on", "0")
            os.rmdir(self.dir)
            self.lines = []

    def blind(self):
        """Counter of (sport, dport, old_state, new_state) the witness saw
        while a thread of PID 1 was on the CPU."""
        return self.transitions(only_blind=True)

    def _in_blind_spot(self, line):
        m = re.match(r"\s*.*?-(\d+)\s+(?:\(\s*\S+\)\s+)?\[\d+\]", line)
        return m is not None and int(m.group(1)) in self.threads

    @staticmethod
    def _transition(line):
        f = dict(kv.split("=", 1) for kv in line.split("inet_sock_set_state:", 1)[1].split())
        return (int(f["sport"]), int(f["dport"]), KERNEL_STATES[f["oldstate"]],
                KERNEL_STATES[f["newstate"]])

    def transitions(self, only_blind=False):
        """Counter of (sport, dport, old_state, new_state) the witness saw
        (with only_blind, those of the VM's blind spot alone)."""
        self.stop()
        return collections.Counter(self._transition(l) for l in self.lines
                                   if not only_blind or self._in_blind_spot(l))

    def unstored(self, events, limit=20):
        """The witness's lines (at most limit) of the transitions it saw more
        often than events (a store's state changes) hold them: what a failing
        test shows of its missing events (the task on the CPU, in or out of
        the blind spot, the CPU, the time)."""
        self.stop()
        extra = self.transitions() - collections.Counter(
            (e["sport"], e["dport"], e["old_state"], e["new_state"]) for e in events)
        return [l.rstrip("\n") for l in self.lines if extra[self._transition(l)]][:limit]


# A start-up snapshot record: a listener held by a process, as the eventers write it.
SNAPSHOT_LINE = ('{"time":"2026-11-25T01:53:06.000000000Z","host":"host-a","kind":"snapshot",'
                 '"family":"inet6","saddr":"::1","sport":8443,"daddr":"::","dport":0,'
                 '"old_state":"LISTEN","new_state":"LISTEN","owner_pid":77,"owner_uid":1000,'
                 '"owner_comm":"nginx","sock_cookie":4242,"sock_inode":99,"sock_uid":1000,'
                 '"sock_gid":1000,"netns":4026531840,"ktime":5}')


# Why connections fail: a refused connect as the bpf eventer writes it (the reset
# sent for it with no socket, the reset received in SYN-SENT, the close with
# its error), and an abortive close's reset with a reason the kernel gave.
FAILURE_LINES = [
    '{"time":"2026-11-25T01:53:09.000000001Z","host":"host-a","kind":"reset",'
    '"direction":"sent","reason":"NO_SOCKET","family":"inet","saddr":"127.0.0.2",'
    '"sport":8080,"daddr":"127.0.0.1","dport":40001,"pid_on_cpu":100,"tid_on_cpu":101,'
    '"comm_on_cpu":"curl","netns":4026531840,"seq":81,"ktime":2000001}',
    '{"time":"2026-11-25T01:53:09.000000002Z","host":"host-a","kind":"reset",'
    '"direction":"received","family":"inet","saddr":"127.0.0.1","sport":40001,'
    '"daddr":"127.0.0.2","dport":8080,"state":"SYN-SENT","pid_on_cpu":100,"tid_on_cpu":101,'
    '"comm_on_cpu":"curl","owner_pid":100,"owner_uid":1000,"owner_comm":"curl",'
    '"sock_cookie":1081,"sock_inode":50081,"sock_uid":1000,"sock_gid":1000,'
    '"sock_state":"CONNECTING","netns":4026531840,"cgroup_id":7,"seq":82,"ktime":2000002}',
    '{"time":"2026-11-25T01:53:09.000000003Z","host":"host-a","family":"inet",'
    '"saddr":"127.0.0.1","sport":40001,"daddr":"127.0.0.2","dport":8080,'
    '"old_state":"SYN-SENT","new_state":"CLOSED","error":"ECONNREFUSED","pid_on_cpu":100,'
    '"tid_on_cpu":101,"comm_on_cpu":"curl","owner_pid":100,"owner_uid":1000,'
    '"owner_comm":"curl","sock_cookie":1081,"sock_inode":50081,"sock_uid":1000,'
    '"sock_gid":1000,"sock_state":"CONNECTING","netns":4026531840,"cgroup_id":7,"seq":83,'
    '"ktime":2000003}',
    '{"time":"2026-11-25T01:53:09.000000004Z","host":"host-a","kind":"reset",'
    '"direction":"sent","reason":"TCP_ABORT_ON_LINGER","family":"inet6","saddr":"::1",'
    '"sport":40002,"daddr":"::1","dport":443,"state":"CLOSED","pid_on_cpu":100,'
    '"tid_on_cpu":101,"comm_on_cpu":"curl","owner_pid":100,"owner_uid":1000,'
    '"owner_comm":"curl","sock_cookie":1084,"seq":84,"ktime":2000004}',
]


def reset_lines():
    """Reset records and state changes an error ended, as the eventers write them
    (seq 21-25): a reset sent with its reason and the socket's state, cookie, owner and
    socket file; one received (no reason) on an IPv6 socket whose owner is not known;
    one sent for a segment that matched no socket (no state, cookie or owner, reason
    NO_SOCKET); a connection refused and one timed out."""
    return [
        '{"time":"2026-11-25T01:53:07.100000021Z","host":"host-a","kind":"reset",'
        '"direction":"sent","reason":"TCP_ABORT_ON_CLOSE","family":"inet",'
        '"saddr":"127.0.0.1","sport":40021,"daddr":"127.0.0.2","dport":8080,'
        '"state":"ESTABLISHED","pid_on_cpu":100,"tid_on_cpu":101,"comm_on_cpu":"curl",'
        '"owner_pid":100,"owner_uid":1000,"owner_comm":"curl","sock_cookie":1021,'
        '"sock_inode":50021,"sock_uid":1000,"sock_gid":1000,"netns":4026531840,'
        '"cgroup_id":7,"seq":21,"ktime":1000021}',
        '{"time":"2026-11-25T01:53:07.100000022Z","host":"host-a","kind":"reset",'
        '"direction":"received","family":"inet6","saddr":"::1","sport":40022,'
        '"daddr":"2001:db8::42","dport":443,"state":"SYN-SENT","pid_on_cpu":0,'
        '"comm_on_cpu":"swapper/0","sock_cookie":1022,"netns":4026531840,"seq":22,'
        '"ktime":1000022}',
        '{"time":"2026-11-25T01:53:07.100000023Z","host":"host-a","kind":"reset",'
        '"direction":"sent","reason":"NO_SOCKET","family":"inet","saddr":"127.0.0.1",'
        '"sport":9,"daddr":"127.0.0.1","dport":40023,"pid_on_cpu":0,'
        '"comm_on_cpu":"swapper/1","netns":4026531840,"seq":23,"ktime":1000023}',
        sample_line(24, old_state='"SYN-SENT"', new_state='"CLOSED"', error='"ECONNREFUSED"',
                    sock_state='"UNCONNECTED"'),
        sample_line(25, old_state='"ESTABLISHED"', new_state='"CLOSED"', error='"ETIMEDOUT"',
                    sock_state='"DISCONNECTING"'),
    ]


def store_lines():
    """Lines for the database sinks' tests: IPv4 and IPv6, a command name with a
    quote, a tab and a byte that is not UTF-8, one event with no optional
    field, and a gap record."""
    out = [sample_line(i) for i in range(1, 6)]
    out.append(sample_line(6, family='"inet6"', saddr='"::1"', daddr='"2001:db8::42"',
                           comm_on_cpu='"we\\"i\\trd\\u00ff"'))
    out.append(sample_line(7, owner_pid=None, owner_uid=None, owner_comm=None,
                           sock_cookie=None, sock_inode=None, sock_uid=None, sock_gid=None,
                           sock_state=None, netns=None, cgroup_id=None, tid_on_cpu=None))
    out.append('{"time":"2026-11-25T01:53:08.000000000Z","host":"host-a","kind":"gap",'
               '"stage":"kernel","lost":42}')
    return out


class _TapResult(unittest.TestResult):
    """Prints each test as a TAP line as soon as it ends, so `meson test`
    counts test cases, not files (protocol: 'tap')."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.n = 0

    def _line(self, ok, test, directive="", details=""):
        self.n += 1
        name = test.id().split(".", 1)[-1]
        print("%s %d - %s%s" % ("ok" if ok else "not ok", self.n, name, directive), flush=True)
        for l in details.splitlines():
            print("# " + l, flush=True)
        if details:  # `meson test --print-errorlogs` shows stderr only
            print("%s:\n%s" % (name, details), file=sys.stderr, flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(True, test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(False, test, details=self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._line(False, test, details=self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line(True, test, " # SKIP " + reason)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._line(False, subtest, details="".join(
                __import__("traceback").format_exception(*err)))


def main():
    """Runs the calling module's tests, printing TAP."""
    import __main__
    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    result = _TapResult()
    suite.run(result)
    print("1..%d" % result.n, flush=True)
    sys.exit(0 if result.wasSuccessful() else 1)
