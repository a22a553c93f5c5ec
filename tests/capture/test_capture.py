"""Kernel capture, end to end: the real tcp-audit with a real eventer
(the first argument: bpf or tracefs) over real loopback connections.

Needs root.  Every test starts tcp-audit, makes connections, stops it with
SIGINT and reads what the jsonl sink wrote.
"""
import collections
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import tcpaudit
from tcpaudit import CLIENT, LISTENER, SERVER, Running, split_gaps, states, summary

EVENTER = sys.argv[1] if len(sys.argv) > 1 else "bpf"
LOADGEN = os.environ.get("TCP_AUDIT_LOADGEN", "")
URING_ACCEPT = os.environ.get("TCP_AUDIT_URING_ACCEPT", "")
# what each eventer knows beyond the basic fields
HAS_OWNER = EVENTER == "bpf"
HAS_COOKIE = EVENTER == "bpf"
# the socket's own error on a close (tracefs knows only what follows a reset)
HAS_SOCK_ERROR = EVENTER == "bpf"
# Tests that hold every socket's chain of states to be whole take no counted
# loss: with bpf they run its rescue program, which records the state changes
# the kernel skips when one interrupts the program on its CPU (by default
# counted as lost instead, about one in a million with every CPU busy).
EXACT = ["rescue=on"] if EVENTER == "bpf" else []


def sees_root_cgroup():
    """Whether this process is in the initial cgroup namespace with a cgroup2
    file system mounted from its root: where the bpf eventer sees accept()
    through the root cgroup's getpeername hooks."""
    try:
        if os.readlink("/proc/self/ns/cgroup") != "cgroup:[4026531835]":
            return False
    except OSError:
        pass  # no cgroup namespaces: the one there is
    with open("/proc/self/mountinfo") as f:
        return any(l.split(" - ")[1].startswith("cgroup2 ") and l.split()[3] == "/" for l in f)


HAS_PEERNAME_HOOKS = EVENTER == "bpf" and sees_root_cgroup()
# what the bpf eventer warns of when a socket was accepted without its accept() seen
ACCEPT_UNSEEN = "accept() was not seen"


# a server and a client in processes of their own, with their own names
PEER = textwrap.dedent("""
    import ctypes, socket, sys
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
    if len(sys.argv) > 5:  # run as that user and group
        import os
        "".encode("idna")  # what is imported later, while it can still be read
        os.setgroups([])
        os.setgid(int(sys.argv[5]))
        os.setuid(int(sys.argv[5]))
    fam = socket.AF_INET6 if sys.argv[3] == "6" else socket.AF_INET
    host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
    port = int(sys.argv[4])
    if sys.argv[2] == "server":
        l = socket.socket(fam)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((host, port))
        l.listen()
        print("listening", flush=True)
        s, _ = l.accept()
        while s.recv(100):
            pass
        s.close()
        l.close()
    elif sys.argv[2] == "churn":
        for _ in range(40):
            socket.create_connection((host, port)).close()
    else:
        c = socket.create_connection((host, port))
        print(c.getsockname()[1], flush=True)
        c.close()
""")

# a server pinned to CPU 1 that closes first, a client pinned to CPU 0
CROSS_CPU = textwrap.dedent("""
    import os, socket, sys
    role, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.sched_setaffinity(0, {1 if role == "server" else 0})
    if role == "server":
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("127.0.0.1", port))
        l.listen(128)
        print("listening", flush=True)
        for _ in range(n):
            s, _ = l.accept()
            s.close()
        l.close()
    else:
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            while c.recv(100):
                pass
            c.close()
""")

# a pre-fork server: the parent listens, two children named ta-acceptor accept
PREFORK = textwrap.dedent("""
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None)
    libc.prctl(15, b"ta-parent", 0, 0, 0)
    port, n = int(sys.argv[1]), int(sys.argv[2])
    kids_n, noaddr = (1, True) if sys.argv[3:] == ["noaddr"] else (2, False)
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    kids = []
    for _ in range(kids_n):
        pid = os.fork()
        if pid == 0:
            libc.prctl(15, b"ta-acceptor", 0, 0, 0)
            for _ in range(n):
                if noaddr:  # accept(fd, NULL, NULL), as libuv does
                    s = socket.socket(fileno=libc.accept4(l.fileno(), None, None, 0))
                else:
                    s, _ = l.accept()
                while s.recv(100):
                    pass
                s.close()
            os._exit(0)
        kids.append(pid)
    print(" ".join(map(str, kids)), flush=True)
    for k in kids:
        os.waitpid(k, 0)
    l.close()
""")

# a connection that exists before tcp-audit starts: a process named argv[1]
# listens on port argv[3] (family argv[2]), connects to itself and accepts,
# then closes all three when a line comes on stdin
PAIR = textwrap.dedent("""
    import ctypes, socket, sys
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
    fam = socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET
    host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
    l = socket.socket(fam)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, int(sys.argv[3])))
    l.listen()
    c = socket.create_connection((host, int(sys.argv[3])))
    s, _ = l.accept()
    print(c.getsockname()[1], flush=True)
    sys.stdin.readline()
    c.close()
    s.close()
    l.close()
    print("closed", flush=True)
""")

# a client that hands its connection to a child: the parent (ta-parent)
# connects, forks, closes its copy; the child (ta-child) closes the connection
HANDOVER = textwrap.dedent("""
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None)
    libc.prctl(15, b"ta-parent", 0, 0, 0)
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    print(c.getsockname()[1], flush=True)
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, b"ta-child", 0, 0, 0)
        sys.stdin.readline()  # the parent has closed its copy
        c.close()
        os._exit(0)
    c.close()
    print(pid, flush=True)
    os.waitpid(pid, 0)
""")


def own_comm():
    with open("/proc/self/comm") as f:
        return f.read().strip()


def free_port(family=socket.AF_INET):
    return tcpaudit.free_ports(1, family)[0]


def loadgen(port, connections, result, shape="fin", threads=2):
    """Runs the load generator to its end; its report (events=, ...) goes
    into result."""
    out = subprocess.run([LOADGEN, "-s", shape, "-t", str(threads), "-n", str(connections),
                          "-p", str(port)],
                         capture_output=True, text=True, check=True).stdout
    result.update(kv.split("=") for kv in out.split())


def wait_for_quiet_port(port, timeout=2.0):
    """Waits until no socket on port is in a state that will still change
    (TIME-WAIT sockets have no more transitions to report)."""
    hexport = ":%04X" % port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    local, remote, state = line.split()[1:4]
                    if hexport in (local[-5:], remote[-5:]) and state != "06":
                        busy = True
        if not busy:
            return
        time.sleep(0.001)


def attached_programs(pid):
    """The names of the BPF programs process pid holds a link to (its fds)."""
    ids = set()
    for fd in os.listdir("/proc/%d/fdinfo" % pid):
        try:
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                info = f.read()
        except OSError:
            continue  # closed meanwhile
        m = re.search(r"^prog_id:\s*(\d+)", info, re.M)
        if "link_type:" in info and m:
            ids.add(int(m.group(1)))
    names = set()
    for i in ids:
        out = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(i)],
                             capture_output=True, text=True, check=True).stdout
        names.add(json.loads(out)["name"])
    return names


def by_socket(events):
    """Events by socket cookie, in file order."""
    socks = collections.defaultdict(list)
    for e in events:
        socks[e["sock_cookie"]].append(e)
    return socks


def server_sockets(events, port):
    """A server's events on port: the listener's, and the events of each
    accepted socket and of each client socket (lists per socket)."""
    socks = by_socket(events).values()
    listener = [e for e in events if e["sport"] == port and e["dport"] == 0]
    children = [evs for evs in socks if evs[0]["sport"] == port and evs[0]["dport"] != 0]
    clients = [evs for evs in socks if evs[0]["dport"] == port]
    return listener, children, clients


@unittest.skipUnless(os.geteuid() == 0, "kernel tracing needs root")
class Capture(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "events.jsonl")
        self.blind = collections.Counter()  # what the witness saw in the blind spot
        self.explained = collections.Counter()  # the missing transitions it explained
        self._witness = None

    def tearDown(self):
        self.tmp.cleanup()

    def witness(self, ports, buffer_kb=16384):
        """With bpf, a Witness of the state changes on ports (tcpaudit.Witness);
        self.blind is what it saw in the VM's blind spot once it is stopped."""
        self.blind = collections.Counter()
        self.explained = collections.Counter()
        if EVENTER != "bpf" or not ports:
            return contextlib.nullcontext()
        w = tcpaudit.Witness(ports, buffer_kb)
        self._witness = w
        return w

    def stop_witness(self):
        if getattr(self, "_witness", None) is not None:
            self.blind = self._witness.blind()
            self._witness = None

    def assert_missing_explained(self, missing, counted=0):
        """missing: Counter of (old_state, new_state) transitions a test
        expected and did not get.  Each must be one the witness saw in the
        VM's blind spot (each such sighting explains one, once), but for
        counted loss."""
        blind = collections.Counter()
        for (_, _, old, new), n in self.blind.items():
            blind[(old, new)] += n
        blind -= self.explained
        if missing or blind:
            print("# missing transitions: %s; seen in PID 1's context: %s"
                  % (dict(missing), dict(blind)))
        unexplained = missing - blind
        self.explained += missing - unexplained
        self.assertLessEqual(sum(unexplained.values()), counted,
                             "events lost without a count: %s" % dict(unexplained))

    def missing_along(self, evs, chain):
        """Checks that evs, one socket's events, are transitions along chain
        in order, some perhaps left out; returns those left out (a Counter)."""
        want = list(zip(chain, chain[1:]))
        got = [(e["old_state"], e["new_state"]) for e in evs]
        left = iter(want)
        self.assertTrue(all(t in left for t in got), "not along %s: %s" % (chain, got))
        return collections.Counter(want) - collections.Counter(got)

    def assert_chain(self, evs, chain):
        """evs, one socket's events, are its transitions along chain, in
        order, but for what the witness saw happen in the VM's blind spot."""
        self.assert_missing_explained(self.missing_along(evs, chain))

    def capture(self, params, action, settle=0.5, snapshots=False, resets=False, watch=None,
                witness_kb=16384):
        """Runs action() while tcp-audit captures; returns (events, summary).
        settle: seconds between the action and the stop.  The start-up
        snapshot's records (of sockets left by earlier tests too, TIME-WAIT
        ones among them) are left out unless snapshots, reset records unless
        resets.  watch: the ports a witness records (default: those of a
        ports= filter), into a buffer of witness_kb per CPU."""
        if os.path.exists(self.out):
            os.unlink(self.out)  # the jsonl sink appends
        args = ["--event", EVENTER]
        for p in params:
            args += ["-p", p]
        args += ["--sink", "jsonl", "-p", "path=" + self.out]
        if watch is None:
            watch = [int(v) for p in params if p.startswith("ports=") for v in p[6:].split(",")]
        with self.witness(watch, witness_kb), Running(args) as t:
            action()
            time.sleep(settle)  # the reader polls the kernel buffer on a short timer
            rc = t.stop()
            err = t.stderr()
            self.stop_witness()
        self.assertEqual(rc, 130, err)
        self.log = err
        with open(self.out) as f:
            events = [json.loads(l) for l in f]
        if not snapshots:
            events = [e for e in events if e.get("kind") != "snapshot"]
        if not resets:
            events = [e for e in events if e.get("kind") != "reset"]
        return events, summary(err)

    def peer(self, name, role, family, port, uid=None):
        """PEER as a process of its own; uid: it runs as that user and group."""
        return subprocess.Popen([sys.executable, "-c", PEER, name, role, family, str(port)] +
                                ([] if uid is None else [str(uid)]),
                                stdout=subprocess.PIPE, text=True)

    def connection_in_two_processes(self, family):
        port = free_port(socket.AF_INET6 if family == "6" else socket.AF_INET)
        pids = {}

        def action():
            server = self.peer("ta-server", "server", family, port)
            self.assertEqual(server.stdout.readline().strip(), "listening")
            client = self.peer("ta-client", "client", family, port)
            pids["client_port"] = int(client.stdout.readline())
            client.wait(timeout=10)
            server.wait(timeout=10)
            pids["server"], pids["client"] = server.pid, client.pid

        events, s = self.capture(["ports=%d" % port] + EXACT, action)
        self.assertEqual(s["lost in kernel"], 0)
        return events, port, pids

    def check_sequences(self, family):
        events, port, pids = self.connection_in_two_processes(family)
        cport = pids["client_port"]
        fam = "inet6" if family == "6" else "inet"
        for e in events:
            self.assertEqual(e["family"], fam)
        listener = [e for e in events if e["sport"] == port and e["dport"] == 0]
        child = [e for e in events if e["sport"] == port and e["dport"] == cport]
        client = [e for e in events if e["dport"] == port and e["sport"] in (0, cport)]
        self.assertEqual(len(listener) + len(child) + len(client), len(events), events)
        for evs, chain in ((listener, LISTENER), (child, SERVER), (client, CLIENT)):
            self.assert_chain(evs, chain)
        return listener, child, client, pids

    def test_ipv4_sequences(self):
        self.check_sequences("4")

    def test_ipv6_sequences(self):
        self.check_sequences("6")

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_owner_is_the_socket_owner_not_the_process_on_cpu(self):
        for family in ("4", "6"):
            listener, child, client, pids = self.check_sequences(family)
            for e in listener + child:
                self.assertEqual((e["owner_pid"], e["owner_comm"]), (pids["server"], "ta-server"),
                                 e)
            for e in client:
                self.assertEqual((e["owner_pid"], e["owner_comm"]), (pids["client"], "ta-client"),
                                 e)
            # the point of owners: on loopback the server side's handshake runs
            # while the client is on the CPU
            self.assertIn(pids["client"], [e["pid_on_cpu"] for e in child])

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_owner_uid_is_the_owning_process_uid(self):
        """owner_uid is the uid of the process that owns the socket, read
        where it is named: a server running as one user (its listen() and its
        accept()) and a client as another (its connect()), neither root, who
        runs tcp-audit and whose process is on the CPU for much of it."""
        port = free_port()

        def action():
            server = self.peer("ta-server", "server", "4", port, uid=4321)
            try:
                self.assertEqual(server.stdout.readline().strip(), "listening")
                client = self.peer("ta-client", "client", "4", port, uid=5432)
                self.assertTrue(client.stdout.readline().strip().isdigit())
                self.assertEqual(client.wait(timeout=10), 0)
                self.assertEqual(server.wait(timeout=10), 0)
            finally:
                server.kill()
                server.wait()

        events, _ = self.capture(["ports=%d" % port], action)
        server = [e for e in events if e["sport"] == port]
        client = [e for e in events if e["dport"] == port]
        self.assertEqual(len(server) + len(client), len(events), events)
        self.assertTrue(any(e["new_state"] == "LISTEN" for e in server), server)
        self.assertTrue(any(e["new_state"] == "ESTABLISHED" for e in server), server)
        self.assertTrue(any(e["new_state"] == "SYN-SENT" for e in client), client)
        self.assertEqual({e["owner_uid"] for e in server}, {4321}, server)
        self.assertEqual({e["owner_uid"] for e in client}, {5432}, client)

    @unittest.skipUnless(HAS_OWNER, "this eventer does not read the socket's inode")
    def test_socket_inode_uid_and_gid(self):
        """The socket file's inode, uid and gid (fchown'd by the test, so not
        the process's own ids) are in the events of its socket."""
        port = free_port()
        ids = {}

        def action():
            with socket.socket() as l:
                l.bind(("127.0.0.1", port))
                l.listen()
                c = socket.socket()
                os.fchown(c.fileno(), 4321, 8765)
                ids["inode"] = os.fstat(c.fileno()).st_ino
                c.connect(("127.0.0.1", port))
                s, _ = l.accept()
                c.close()
                s.close()
        events, _ = self.capture(["ports=%d" % port], action)
        client = [e for e in events if e["dport"] == port]
        self.assert_chain(client, CLIENT)
        with_file = [e for e in client if "sock_inode" in e]
        self.assertGreaterEqual(len(with_file), 3, client)  # until close() drops the file
        for e in with_file:
            self.assertEqual((e["sock_inode"], e["sock_uid"], e["sock_gid"]),
                             (ids["inode"], 4321, 8765), e)

    @unittest.skipUnless(HAS_COOKIE, "this eventer cannot know socket cookies")
    def test_one_cookie_per_socket(self):
        listener, child, client, _ = self.check_sequences("4")
        for sock in (listener, child, client):
            self.assertEqual(len({e["sock_cookie"] for e in sock}), 1, sock)
        self.assertEqual(len({sock[0]["sock_cookie"] for sock in (listener, child, client)}), 3)

    @unittest.skipUnless(HAS_COOKIE and os.cpu_count() >= 2, "needs cookies and 2 CPUs")
    def test_a_sockets_events_in_order_across_cpus(self):
        """The server on CPU 1, the client on CPU 0: a client socket's events
        happen on both (its CLOSE-WAIT in the softirq of the server's FIN, on
        CPU 1; its LAST-ACK in its own close(), on CPU 0), and come out of
        the per-CPU rings in order."""
        port = free_port()
        n = 2000

        def action():
            server = subprocess.Popen([sys.executable, "-c", CROSS_CPU, "server", str(port),
                                       str(n)], stdout=subprocess.PIPE, text=True)
            self.assertEqual(server.stdout.readline().strip(), "listening")
            client = subprocess.run([sys.executable, "-c", CROSS_CPU, "client", str(port),
                                     str(n)], timeout=120)
            self.assertEqual(client.returncode, 0)
            self.assertEqual(server.wait(timeout=60), 0)

        events, s = self.capture(["ports=%d" % port] + EXACT, action)
        self.assertEqual(s["lost in kernel"], 0)
        by_cookie = by_socket(events)
        self.assertEqual(len(by_cookie), 2 * n + 1)
        # the server closes first
        server = ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSED"]
        client = ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED"]
        missing = collections.Counter()
        kinds = collections.Counter()
        for cookie, evs in by_cookie.items():
            sport = max(e["sport"] for e in evs)
            kind = "listener" if evs[0]["dport"] == 0 else "server" if sport == port else "client"
            kinds[kind] += 1
            missing.update(self.missing_along(
                evs, {"listener": LISTENER, "server": server, "client": client}[kind]))
            ktimes = [e["ktime"] for e in evs]
            self.assertEqual(ktimes, sorted(ktimes), evs)
        self.assertEqual(kinds, {"listener": 1, "server": n, "client": n})
        self.assert_missing_explained(missing)

    def check_reset(self, r, direction, sock, state, peer=None):
        """r is a reset record of direction, seen from sock's side (addresses
        and ports as in the state change sock, or as in peer's, reversed, when
        there was no socket), in state (None: no socket)."""
        self.assertEqual((r["kind"], r["direction"]), ("reset", direction), r)
        if sock is not None:
            mine = (sock["saddr"], sock["sport"], sock["daddr"], sock["dport"])
        else:
            mine = (peer["daddr"], peer["dport"], peer["saddr"], peer["sport"])
        self.assertEqual((r["saddr"], r["sport"], r["daddr"], r["dport"]), mine, r)
        self.assertEqual(r.get("state"), state, r)
        if sock is None:
            for key in ("sock_cookie", "owner_pid", "sock_inode"):
                self.assertNotIn(key, r)
            return
        if HAS_COOKIE or direction == "received":  # tracefs: the tracepoint's own cookie
            if HAS_COOKIE:
                self.assertEqual(r["sock_cookie"], sock["sock_cookie"], r)
            else:
                self.assertIn("sock_cookie", r)
        if HAS_OWNER:
            self.assertEqual((r["owner_pid"], r["owner_comm"]),
                             (sock["owner_pid"], sock["owner_comm"]), r)

    def test_refused_connect(self):
        """A connect to a closed port: the reset sent for it (no socket there),
        the reset received in SYN-SENT, and ECONNREFUSED on the close."""
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            port = free_port(fam)

            def action():
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection((host, port)).close()

            events, _ = self.capture(["ports=%d" % port], action, resets=True)
            changes = [e for e in events if e.get("kind") != "reset"]
            resets = [e for e in events if e.get("kind") == "reset"]
            self.assert_chain(changes, ["CLOSED", "SYN-SENT", "CLOSED"])
            if HAS_OWNER:
                self.assertEqual({e["owner_pid"] for e in changes}, {os.getpid()})
            self.assertEqual(changes[-1]["error"], "ECONNREFUSED", changes)
            self.assertNotIn("error", changes[0])
            self.assertEqual(len(resets), 2, events)
            sent, received = sorted(resets, key=lambda r: r["direction"] == "received")
            self.check_reset(sent, "sent", None, None, peer=changes[-1])
            self.assertEqual(sent["reason"], "NO_SOCKET", sent)
            self.check_reset(received, "received", changes[-1], "SYN-SENT")
            # in the order they happened: the reset, then the close it caused
            self.assertLess(received["ktime"], changes[-1]["ktime"])

    def reset_connection(self, events, port, cport):
        """A connection's client and accepted sockets' state changes, and its
        two resets (exactly one sent and one received)."""
        changes = [e for e in events if e.get("kind") != "reset"]
        client = [e for e in changes if e["dport"] == port and e["sport"] in (0, cport)]
        child = [e for e in changes if e["sport"] == port and e["dport"] == cport]
        resets = [e for e in events if e.get("kind") == "reset"]
        self.assertEqual(sorted(r["direction"] for r in resets), ["received", "sent"], resets)
        sent = [r for r in resets if r["direction"] == "sent"][0]
        received = [r for r in resets if r["direction"] == "received"][0]
        return client, child, sent, received

    def test_abortive_close(self):
        """SO_LINGER 0: the closing socket sends a reset (tied to it by cookie,
        with its owner), its peer receives it in ESTABLISHED and closes with
        ECONNRESET; the side that aborted has no error."""
        port = free_port()
        ports = {}

        def action():
            l = socket.socket()
            l.bind(("127.0.0.1", port))
            l.listen()
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = l.accept()
            ports["client"] = c.getsockname()[1]
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            with self.assertRaises(ConnectionResetError):
                s.recv(10)
            s.close()
            l.close()

        events, _ = self.capture(["ports=%d" % port], action, resets=True)
        client, child, sent, received = self.reset_connection(events, port, ports["client"])
        self.assert_chain(client, ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSED"])
        self.assert_chain(child, ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSED"])
        self.assertNotIn("error", client[-1])
        self.assertEqual(child[-1]["error"], "ECONNRESET")
        # the kernel closes the socket first, then sends the reset
        self.check_reset(sent, "sent", client[-1], "CLOSED")
        self.assertIn("reason", sent)
        self.check_reset(received, "received", child[-1], "ESTABLISHED")

    def test_reset_received_on_an_established_connection(self):
        """A server that closes with unread data resets the connection: the
        client receives it in ESTABLISHED and its close says ECONNRESET."""
        port = free_port(socket.AF_INET6)
        ports = {}

        def action():
            l = socket.socket(socket.AF_INET6)
            l.bind(("::1", port))
            l.listen()
            c = socket.create_connection(("::1", port))
            s, _ = l.accept()
            ports["client"] = c.getsockname()[1]
            c.sendall(b"unread")
            time.sleep(0.05)
            s.close()  # unread data: RST instead of FIN
            time.sleep(0.05)
            with self.assertRaises(ConnectionResetError):
                c.recv(10)
            c.close()
            l.close()

        events, _ = self.capture(["ports=%d" % port], action, resets=True)
        client, child, sent, received = self.reset_connection(events, port, ports["client"])
        self.assert_chain(client, ["CLOSED", "SYN-SENT", "ESTABLISHED", "CLOSED"])
        self.assertEqual(client[-1]["error"], "ECONNRESET")
        self.check_reset(sent, "sent", child[-1], "CLOSED")
        self.assertEqual(sent["reason"], "TCP_ABORT_ON_CLOSE")
        self.check_reset(received, "received", client[-1], "ESTABLISHED")

    def test_kinds_select_what_is_traced(self):
        port = free_port()

        def refused():
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port)).close()

        events, _ = self.capture(["ports=%d" % port, "kinds=state"], refused, resets=True)
        self.assert_chain(events, ["CLOSED", "SYN-SENT", "CLOSED"])
        events, _ = self.capture(["ports=%d" % port, "kinds=reset"], refused, resets=True)
        self.assertEqual(sorted(e["direction"] for e in events), ["received", "sent"], events)
        r = tcpaudit.run(["--event", EVENTER, "-p", "kinds=state,fin", "--sink", "jsonl",
                          "-p", "path=" + self.out])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn('option kinds: "fin" is not a kind of record (state, reset)', r.stderr)

    def in_namespace(self, rules, sysctls=(), slow=False):
        """A network namespace of our own with lo up, nftables rules and sysctls;
        returns its name (deleted at the end of the test).  slow: packets
        after the first wait for a token bucket (tens of ms), so that an
        answer comes while connect() waits, as from a router: on plain
        loopback it comes within connect() itself."""
        name = "ta-fail-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        if slow:
            subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
                            "tbf", "rate", "8kbit", "burst", "110", "latency", "2s"], check=True)
        for kv in sysctls:
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", kv], check=True)
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=rules, text=True,
                       check=True)
        return name

    def failed_connect_in(self, netns, port, expect):
        """Connects to 127.0.0.1:port inside netns, expecting the errno name expect."""
        code = ("import socket, sys\n"
                "try:\n"
                "    socket.create_connection(('127.0.0.1', %d), timeout=30)\n"
                "except OSError as e:\n"
                "    import errno; print(errno.errorcode[e.errno])\n" % port)
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60).stdout.strip()
        self.assertEqual(out, expect)

    def test_connect_timeout(self):
        """A SYN dropped by a firewall (in a namespace of the test's, with
        tcp_syn_retries lowered there): the connect times out, ETIMEDOUT."""
        for attempt in range(3):
            port = free_port()
            netns = self.in_namespace(
                "table inet ta { chain in { type filter hook input priority 0;"
                " tcp dport %d tcp flags syn drop; }; }" % port,
                ["net.ipv4.tcp_syn_retries=1"])
            events, _ = self.capture(["ports=%d" % port], lambda: self.failed_connect_in(
                netns, port, "ETIMEDOUT"), resets=True)
            # The timeout's CLOSED comes from a timer softirq, which can run
            # on top of the test VM's own agent (its PID 1), whose context
            # runs no BPF program at all (README, "Limits"): when the witness
            # saw it happen there, once more.
            blind = any(k[1:] == (port, "SYN-SENT", "CLOSED") for k in self.blind)
            if states(events) != ["CLOSED", "SYN-SENT"] or not blind:
                break
            print("# bpf: the timeout's CLOSED happened in PID 1's context (attempt %d)"
                  % (attempt + 1))
            subprocess.run(["ip", "netns", "del", netns], check=True)
        self.assertEqual(states(events), ["CLOSED", "SYN-SENT", "CLOSED"], events)
        if HAS_SOCK_ERROR:
            self.assertEqual(events[-1]["error"], "ETIMEDOUT")
            self.assertEqual(events[-1]["netns"], os.stat("/run/netns/" + netns).st_ino)
        else:
            self.assertNotIn("error", events[-1])  # no reset: tracefs cannot tell

    @unittest.skipUnless(EVENTER == "bpf", "tracefs events carry no namespace")
    def test_namespace_of_every_event_as_connections_alternate(self):
        """One thread makes connections in turn in this namespace (port a)
        and in one of the test's (port b), so that each CPU's remembered
        namespace changes all the time: every event names its own."""
        netns = self.in_namespace("table inet ta { }")
        a, b = free_port(), free_port()
        code = textwrap.dedent("""
            import ctypes, os, socket, sys
            libc = ctypes.CDLL(None, use_errno=True)
            spaces = [os.open("/proc/self/ns/net", os.O_RDONLY),
                      os.open("/run/netns/" + sys.argv[1], os.O_RDONLY)]
            for i in range(40):
                if libc.setns(spaces[i % 2], 0x40000000) != 0:  # CLONE_NEWNET
                    sys.exit("setns: %s" % os.strerror(ctypes.get_errno()))
                l = socket.socket()
                l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                l.bind(("127.0.0.1", int(sys.argv[2 + i % 2])))
                l.listen()
                c = socket.create_connection(l.getsockname())
                s, _ = l.accept()
                for x in (c, s, l):
                    x.close()
            """)

        def action():
            subprocess.run([sys.executable, "-c", code, netns, str(a), str(b)], check=True,
                           timeout=30)

        events, s = self.capture(["ports=%d,%d" % (a, b)] + EXACT, action)
        self.assertEqual(s["lost in kernel"], 0)
        want = {a: os.stat("/proc/self/ns/net").st_ino, b: os.stat("/run/netns/" + netns).st_ino}
        self.assertNotEqual(want[a], want[b])
        got = {}
        for e in events:
            port = a if a in (e["sport"], e["dport"]) else b
            got.setdefault(port, []).append(e["netns"])
        # 20 connections a port, 10 state changes each and the listener's 2
        self.assertEqual({p: len(v) for p, v in got.items()}, {a: 20 * 12, b: 20 * 12})
        for p, v in got.items():
            self.assertEqual(set(v), {want[p]})

    def test_unreachable(self):
        """An ICMP host or network unreachable answers the SYN (a reject rule
        in a namespace of the test's): EHOSTUNREACH, ENETUNREACH.  (A connect
        that the routing table itself refuses fails before its socket leaves
        CLOSED: the kernel has no state change to report.)"""
        for icmp, name in (("icmpx type host-unreachable", "EHOSTUNREACH"),
                           ("icmp type net-unreachable", "ENETUNREACH")):
            port = free_port()
            netns = self.in_namespace(
                "table inet ta { chain in { type filter hook input priority 0;"
                " tcp dport %d reject with %s; }; }" % (port, icmp), slow=True)
            events, _ = self.capture(["ports=%d" % port], lambda: self.failed_connect_in(
                netns, port, name), resets=True)
            self.assert_chain(events, ["CLOSED", "SYN-SENT", "CLOSED"])
            if HAS_SOCK_ERROR:
                self.assertEqual(events[-1].get("error"), name, events)
            else:
                self.assertNotIn("error", events[-1])
            subprocess.run(["ip", "netns", "del", netns], check=True)

    def test_port_filter_drops_other_ports(self):
        keep, drop = tcpaudit.free_ports(2)

        def action():
            for p in (keep, drop):
                l = socket.socket()
                l.bind(("127.0.0.1", p))
                l.listen()
                c = socket.create_connection(("127.0.0.1", p))
                s, _ = l.accept()
                c.close()
                s.close()
                l.close()

        events, _ = self.capture(["ports=%d" % keep], action)
        self.assertTrue(events)
        for e in events:
            self.assertIn(keep, (e["sport"], e["dport"]), e)

    def test_stop_right_after_traffic_keeps_what_happened(self):
        """SIGINT at once: what is still in the kernel buffer is read before exit."""
        port = free_port()
        result = {}

        def action():
            loadgen(port, 5000, result)
            # the last ACKs may still be on their way through loopback: events
            # that happen after the stop are not the point
            wait_for_quiet_port(port)

        events, s = self.capture(["ports=%d" % port], action, settle=0)
        self.assertEqual(int(result["events"]), 10 * int(result["connections"]) + 2)
        events, lost = split_gaps(events)
        self.assertEqual(lost, s["lost in kernel"])
        self.check_transitions(events, int(result["connections"]), s["lost in kernel"])

    def both_families(self, port):
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            l = socket.socket(fam)
            l.bind((host, port))
            l.listen()
            c = socket.create_connection((host, port))
            s, _ = l.accept()
            c.close()
            s.close()
            l.close()

    def test_family_and_local_port_filters(self):
        port = free_port()
        both = lambda: self.both_families(port)
        events, _ = self.capture(["ports=%d" % port, "family=inet6"], both)
        self.assertEqual({e["family"] for e in events}, {"inet6"})
        self.assertEqual(len(events), 12)
        events, _ = self.capture(["ports=%d" % port, "family=inet"], both)
        self.assertEqual({e["family"] for e in events}, {"inet"})
        self.assertEqual(len(events), 12)
        events, _ = self.capture(["lports=%d" % port], both)
        self.assertEqual({e["sport"] for e in events}, {port})  # server side only
        self.assertEqual(len(events), 2 * (2 + 5))
        events, _ = self.capture(["rports=%d" % port], both)
        self.assertEqual({e["dport"] for e in events}, {port})  # client side only
        self.assertEqual(len(events), 2 * 5)

    @unittest.skipUnless(EVENTER == "bpf", "bpf filters")
    def test_state_and_address_filters(self):
        port = free_port()
        both = lambda: self.both_families(port)
        events, _ = self.capture(["ports=%d" % port, "states=ESTABLISHED,LISTEN"], both)
        self.assertEqual(sorted(e["new_state"] for e in events),
                         ["ESTABLISHED"] * 4 + ["LISTEN"] * 2)
        events, _ = self.capture(["ports=%d" % port, "addrs=127.0.0.0/8"], both)
        self.assertEqual({e["family"] for e in events}, {"inet"})
        self.assertEqual(len(events), 12)
        events, _ = self.capture(["ports=%d" % port, "addrs=::1/128,10.0.0.0/8"], both)
        self.assertEqual({e["family"] for e in events}, {"inet6"})

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_owners_under_filters_that_drop_the_owners_events(self):
        # the events that name an owner (connect's SYN-SENT, listen's LISTEN)
        # are the ones these filters drop; every event kept still has its owner
        port = free_port()
        both = lambda: self.both_families(port)
        for params, n in ((["ports=%d" % port, "states=ESTABLISHED,CLOSE-WAIT"], 6),
                          (["lports=%d" % port], 14)):
            events, _ = self.capture(params, both)
            self.assertEqual(len(events), n, events)
            self.assertEqual({(e.get("owner_pid"), e.get("owner_comm")) for e in events},
                             {(os.getpid(), own_comm())}, events)

    def pair(self, name, family, port, netns=None):
        cmd = [sys.executable, "-c", PAIR, name, family, str(port)]
        p = subprocess.Popen((["ip", "netns", "exec", netns] if netns else []) + cmd,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.client_port = int(p.stdout.readline())
        return p

    @staticmethod
    def close_pair(p):
        p.stdin.write("close\n")
        p.stdin.flush()
        assert p.stdout.readline() == "closed\n"
        p.wait()

    def test_snapshot_of_connections_open_before_start(self):
        """Connections opened before the start and closed after it: a snapshot
        record for each of their sockets, owned by the process holding them,
        and (bpf) the same owner and cookie on their later events."""
        p4, p6 = free_port(), free_port(socket.AF_INET6)
        pairs = {"inet": self.pair("ta-holder", "4", p4), "inet6": self.pair("ta-holder", "6", p6)}

        def close_all():
            for p in pairs.values():
                self.close_pair(p)

        try:
            events, _ = self.capture(["ports=%d,%d" % (p4, p6)], close_all, snapshots=True)
        finally:
            for p in pairs.values():
                p.kill()
        snaps = [e for e in events if e.get("kind") == "snapshot"]
        later = [e for e in events if "kind" not in e]
        self.assertEqual(events[:len(snaps)], snaps, "snapshot records come first")
        # TIME-WAIT ones (no owner: no socket file) may be left by earlier tests
        self.assertTrue(all("owner_pid" not in e for e in snaps if e["new_state"] == "TIME-WAIT"))
        snaps = [e for e in snaps if e["new_state"] != "TIME-WAIT"]
        for fam, port in (("inet", p4), ("inet6", p6)):
            pid, cport = pairs[fam].pid, pairs[fam].client_port
            mine = sorted((e["sport"], e["dport"], e["new_state"]) for e in snaps
                          if e["family"] == fam)
            self.assertEqual(mine, sorted([(port, cport, "ESTABLISHED"), (port, 0, "LISTEN"),
                                           (cport, port, "ESTABLISHED")]), snaps)
            for e in (e for e in snaps if e["family"] == fam):
                self.assertEqual(e["old_state"], e["new_state"])
                self.assertEqual((e["owner_pid"], e["owner_comm"]), (pid, "ta-holder"), e)
                self.assertGreater(e["sock_inode"], 0)
                self.assertNotIn("pid_on_cpu", e)
                self.assertEqual(e["netns"], os.stat("/proc/self/ns/net").st_ino)
            # their ends, recorded after the start
            client = [e for e in later if e["family"] == fam and e["sport"] == cport]
            self.assert_chain(client, CLIENT[2:])
            server = [e for e in later if e["family"] == fam and e["dport"] == cport]
            self.assert_chain(server, SERVER[2:])
            if HAS_OWNER:
                for e in client + server:
                    self.assertEqual((e["owner_pid"], e["owner_comm"]), (pid, "ta-holder"), e)
            if HAS_COOKIE:
                cookie = {(e["sport"], e["dport"]): e["sock_cookie"] for e in snaps}
                for e in client + server:
                    self.assertEqual(e["sock_cookie"], cookie[(e["sport"], e["dport"])], e)

        # snapshot=false: none
        port = free_port()
        p = self.pair("ta-holder", "4", port)
        try:
            events, _ = self.capture(["ports=%d" % port, "snapshot=false"],
                                     lambda: self.close_pair(p), snapshots=True)
        finally:
            p.kill()
        self.assertEqual([e for e in events if e.get("kind") == "snapshot"], [])
        self.assert_chain([e for e in events if e["sport"] == p.client_port], CLIENT[2:])

    def test_snapshot_in_two_network_namespaces(self):
        """The sockets of other network namespaces are in the snapshot, each
        with its namespace and owner (the same port in both: they are apart)."""
        port = free_port()
        names = ["ta-snap-%d-%s" % (os.getpid(), x) for x in "ab"]
        pairs = []
        try:
            for n in names:
                subprocess.run(["ip", "netns", "add", n], check=True)
                subprocess.run(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"],
                               check=True)
                pairs.append(self.pair("ta-in-" + n[-1], "4", port, netns=n))
            inodes = [os.stat("/run/netns/" + n).st_ino for n in names]
            events, _ = self.capture(["ports=%d" % port], lambda: None, snapshots=True)
        finally:
            for p in pairs:
                p.kill()
                p.wait()
            for n in names:
                subprocess.run(["ip", "netns", "del", n])
        snaps = [e for e in events if e.get("kind") == "snapshot"]
        for n, ino, p in zip(names, inodes, pairs):
            mine = sorted((e["sport"], e["dport"], e["new_state"], e["owner_pid"],
                           e["owner_comm"]) for e in snaps if e["netns"] == ino)
            self.assertEqual(mine, sorted([
                (port, 0, "LISTEN", p.pid, "ta-in-" + n[-1]),
                (port, p.client_port, "ESTABLISHED", p.pid, "ta-in-" + n[-1]),
                (p.client_port, port, "ESTABLISHED", p.pid, "ta-in-" + n[-1])]), snaps)

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_socket_handed_to_a_child_is_owned_by_it_from_its_close(self):
        port = free_port()
        got = {}

        def action():
            l = socket.socket()
            l.bind(("127.0.0.1", port))
            l.listen()
            p = subprocess.Popen([sys.executable, "-c", HANDOVER, str(port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            got["cport"] = int(p.stdout.readline())
            got["parent"], got["child"] = p.pid, int(p.stdout.readline())
            s, _ = l.accept()
            p.stdin.write("go\n")
            p.stdin.flush()
            p.wait()
            s.close()
            l.close()

        events, _ = self.capture(["ports=%d" % port], action)
        client = [e for e in events if e["sport"] == got["cport"] or
                  (e["new_state"] == "SYN-SENT" and e["dport"] == port)]
        self.assert_chain(client, CLIENT)
        owners = [(e["new_state"], e["owner_pid"], e["owner_comm"]) for e in client]
        want = [("SYN-SENT", got["parent"], "ta-parent"),
                ("ESTABLISHED", got["parent"], "ta-parent"),
                ("FIN-WAIT-1", got["child"], "ta-child"),
                ("FIN-WAIT-2", got["child"], "ta-child"),
                ("CLOSED", got["child"], "ta-child")]
        # the last two come from the peer's packets: assert_chain above has explained any of
        # them the VM's blind spot hid (PID 1's context); the first three never are
        seen = {o[0] for o in owners}
        self.assertEqual(owners, [w for w in want if w[0] in seen])
        self.assertEqual(owners[:3], want[:3])
        # the server side: this process, its own close included
        server = [e for e in events if e["dport"] == got["cport"]]
        self.assert_chain(server, SERVER)
        self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in server},
                         {(os.getpid(), own_comm())})

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_pre_fork_server_events_are_owned_by_the_acceptor(self):
        # a parent listens and forks acceptors with another name (nginx,
        # Apache prefork, gunicorn, postmaster): each accepted socket, from its
        # first event, belongs to the child that accepted it
        port, per_child = free_port(), 20
        procs = {}

        def action():
            server = subprocess.Popen([sys.executable, "-c", PREFORK, str(port), str(per_child)],
                                      stdout=subprocess.PIPE, text=True)
            procs["server"] = server.pid
            procs["acceptors"] = [int(p) for p in server.stdout.readline().split()]
            client = self.peer("ta-client", "churn", "4", port)
            procs["client"] = client.pid
            client.communicate(input=None, timeout=20)
            server.wait(timeout=20)

        events, s = self.capture(["ports=%d" % port] + EXACT, action)
        self.assertEqual(s["lost in kernel"], 0)
        listener, children, clients = server_sockets(events, port)
        self.assertEqual((len(children), len(clients)), (2 * per_child, 2 * per_child))
        for evs in children:
            self.assert_chain(evs, SERVER)
            owners = {(e["owner_pid"], e["owner_comm"]) for e in evs}
            self.assertEqual(len(owners), 1, evs)
            pid, comm = owners.pop()
            self.assertIn(pid, procs["acceptors"])
            self.assertEqual(comm, "ta-acceptor")
        for evs in clients:
            self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in evs},
                             {(procs["client"], "ta-client")}, evs)
        self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in listener},
                         {(procs["server"], "ta-parent")})
        # accept() asked for the peer's address: the getpeername hooks saw each
        self.assertNotIn(ACCEPT_UNSEEN, self.log)

    def capture_no_address_acceptor(self, params):
        """A pre-fork server whose acceptor calls accept(fd, NULL, NULL), which
        the getpeername hooks do not see: a connection closed at once, then one
        held open longer than its first events wait for their accept().
        Returns (the child sockets' events, the processes)."""
        port = free_port()
        procs = {}

        def action():
            server = subprocess.Popen([sys.executable, "-c", PREFORK, str(port), "2", "noaddr"],
                                      stdout=subprocess.PIPE, text=True)
            procs["server"] = server.pid
            procs["acceptor"] = int(server.stdout.readline())
            for hold in (0, 2.5):
                c = socket.create_connection(("127.0.0.1", port))
                procs.setdefault("cports", []).append(c.getsockname()[1])
                time.sleep(hold)
                c.close()
                time.sleep(0.5)
            server.wait(timeout=20)

        events, s = self.capture(["ports=%d" % port] + EXACT + params, action)
        self.assertEqual(s["lost in kernel"], 0)
        listener, children, _ = server_sockets(events, port)
        self.assertEqual([evs[0]["dport"] for evs in children], procs["cports"])
        for evs in children:
            self.assert_chain(evs, SERVER)
        self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in listener},
                         {(procs["server"], "ta-parent")})
        return children, procs

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_pre_fork_server_accepting_without_the_peer_address(self):
        # by default (the getpeername hooks) such an accept() is not seen: the
        # first socket closed tells, in a warning; a socket closed within the
        # second its first events wait is owned right all the same (its close
        # names the acceptor); a longer one's events that waited out the second
        # go with the listener's creator
        children, procs = self.capture_no_address_acceptor([])
        acceptor, parent = (procs["acceptor"], "ta-acceptor"), (procs["server"], "ta-parent")
        owners = [[(e["owner_pid"], e["owner_comm"]) for e in evs] for evs in children]
        self.assertEqual(owners[0], [acceptor] * 5)
        if not HAS_PEERNAME_HOOKS:  # the syscall tracepoints, as with accept=syscalls
            self.assertEqual(owners[1], [acceptor] * 5)
            return
        self.assertIn(ACCEPT_UNSEEN, self.log)
        self.assertIn("-p accept=syscalls", self.log)
        # SYN-RECEIVED and ESTABLISHED waited their second; CLOSE-WAIT (the
        # client's FIN) waits again, and the acceptor's close comes within it
        self.assertEqual(owners[1], [parent] * 2 + [acceptor] * 3)

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_accept_syscalls_sees_an_accept_without_the_peer_address(self):
        children, procs = self.capture_no_address_acceptor(["accept=syscalls"])
        for evs in children:
            self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in evs},
                             {(procs["acceptor"], "ta-acceptor")}, evs)
        self.assertNotIn(ACCEPT_UNSEEN, self.log)

    @unittest.skipUnless(HAS_OWNER, "this eventer cannot know owners")
    def test_sockets_accepted_through_io_uring_are_owned_by_the_acceptor(self):
        # no accept() system call: io_uring's IORING_OP_ACCEPT, in a process of
        # another name than the listener's, which closes nothing while we look
        port, n = free_port(), 40  # the churn peer makes 40 connections
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("127.0.0.1", port))
        l.listen(64)
        acceptor = subprocess.Popen([URING_ACCEPT, "ta-uring", str(l.fileno()), str(n)],
                                    pass_fds=[l.fileno()], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        self.addCleanup(acceptor.wait, timeout=20)
        self.addCleanup(acceptor.stdin.close)
        self.addCleanup(l.close)
        if acceptor.stdout.readline().strip() != "ready":
            if acceptor.wait(timeout=10) == 2:
                self.skipTest("io_uring is not available")
            self.fail("uring-accept failed")

        def action():
            client = self.peer("ta-client", "churn", "4", port)
            client.communicate(input=None, timeout=20)
            self.assertEqual(acceptor.stdout.readline().strip(), "accepted")

        events, s = self.capture(["ports=%d" % port] + EXACT, action)
        self.assertEqual(s["lost in kernel"], 0)
        _, children, _ = server_sockets(events, port)
        self.assertEqual(len(children), n)
        for evs in children:
            # the client closed first; the acceptor has not closed yet
            self.assert_chain(evs, SERVER[:4])
            self.assertEqual({(e["owner_pid"], e["owner_comm"]) for e in evs},
                             {(acceptor.pid, "ta-uring")}, evs)

    @unittest.skipUnless(EVENTER == "bpf", "auto prefers bpf")
    def test_auto_uses_bpf(self):
        port = free_port()
        with Running(["--event", "auto", "-p", "ports=%d" % port, "--sink", "jsonl", "-p",
                      "path=" + self.out]) as t:
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port)).close()
            time.sleep(0.5)
            self.assertEqual(t.stop(), 130)
            self.assertIn("--event auto: using bpf", t.stderr())
        with open(self.out) as f:  # (a snapshot may list TIME-WAIT sockets of earlier tests)
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        # the connect's two state changes, and the reset sent and received
        self.assertEqual(states([e for e in events if e.get("kind") is None]),
                         ["CLOSED", "SYN-SENT", "CLOSED"])
        self.assertEqual(sorted(e["direction"] for e in events if e.get("kind") == "reset"),
                         ["received", "sent"])

    def proc_status(self, pid):
        with open("/proc/%d/status" % pid) as f:
            return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)

    def test_privileges_dropped_once_attached(self):
        """--user: the sinks run as that user, with only what the eventer needs."""
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.tmp.name, 0o711)  # nobody may pass through
        d = os.path.join(self.tmp.name, "nobody")
        os.mkdir(d)
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
        out = os.path.join(d, "events.jsonl")
        port = free_port()
        # the default spool's state directory, made for nobody
        state = os.path.join(self.tmp.name, "state")
        env = dict(os.environ, STATE_DIRECTORY=state)
        with Running(["--event", EVENTER, "-p", "ports=%d" % port, "--user", "nobody",
                      "--sink", "jsonl", "-p", "path=" + out], env=env) as t:
            st = self.proc_status(t.proc.pid)
            server = self.peer("ta-server", "server", "4", port)
            self.assertEqual(server.stdout.readline().strip(), "listening")
            client = self.peer("ta-client", "client", "4", port)
            cport = int(client.stdout.readline())
            client.wait(timeout=10)
            server.wait(timeout=10)
            time.sleep(0.5)
            rc = t.stop()
            err = t.stderr()
        self.assertEqual(rc, 130, err)
        self.assertEqual(st["Uid"].split(), [str(nobody.pw_uid)] * 4)
        self.assertEqual(st["Gid"].split()[0], str(nobody.pw_gid))
        self.assertEqual(st["NoNewPrivs"], "1")
        kept = 0 if EVENTER == "bpf" else 1 << 1  # tracefs: CAP_DAC_OVERRIDE
        for which in ("CapEff", "CapPrm", "CapBnd"):
            self.assertEqual(int(st[which], 16), kept, which)
        self.assertEqual(os.stat(out).st_uid, nobody.pw_uid)
        self.assertEqual(os.stat(os.path.join(state, "spool")).st_uid, nobody.pw_uid)
        # and capture still works, stats and close included
        with open(out) as f:
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        self.assert_chain([e for e in events if e["dport"] == cport], SERVER)
        self.assertNotIn("error", err)
        if EVENTER == "tracefs":
            self.assertEqual([i for i in os.listdir("/sys/kernel/tracing/instances")
                              if i.startswith("tcp_audit_%d_" % t.proc.pid)], [])

    def test_capabilities_dropped_without_user(self):
        with Running(["--event", EVENTER, "--sink", "jsonl", "-p", "path=" + self.out]) as t:
            st = self.proc_status(t.proc.pid)
            t.stop()
        kept = 0 if EVENTER == "bpf" else 1 << 1
        self.assertEqual(st["Uid"].split()[0], "0")
        self.assertEqual(int(st["CapEff"], 16), kept)
        self.assertEqual(int(st["CapBnd"], 16), kept)

    @unittest.skipIf(tcpaudit.WRAPPER, "a steady churn: not under valgrind")
    def test_batches_of_one_event_keep_up_while_running(self):
        """--batch-size 1: every read hands out one event, and the reader
        comes straight back (the tracefs eventer waits between passes only
        after one that handed out less than it was asked for): 10,000 events
        reach the sink while tcp-audit runs, not one per wait."""
        port, result = free_port(), {}
        if os.path.exists(self.out):
            os.unlink(self.out)
        with Running(["--batch-size", "1", "--event", EVENTER, "-p", "ports=%d" % port,
                      "-p", "snapshot=false", "--sink", "jsonl", "-p", "path=" + self.out]) as t:
            loadgen(port, 1000, result)
            want = int(result["events"])

            def stored():
                with open(self.out) as f:
                    return sum(1 for l in f if '"kind":"snapshot"' not in l)
            # one event per 4 ms wait would have 5,000 of them there after 20 s (a few
            # may be missing, counted or in this VM's blind spot: other tests see to those)
            tcpaudit.wait_until(lambda: stored() >= want - 10, 20, "the churn's events")
            self.assertEqual(t.stop(), 130, t.stderr())

    @unittest.skipIf(tcpaudit.WRAPPER, "a speed test: not under valgrind")
    def test_connections_accepted_late_in_small_batches(self):
        # 300 connections wait in the accept queue, then are accepted at once:
        # with bpf their first events wait for accept() and then all come out
        # together, through batches of 8 events
        port, n = free_port(), 300

        def action():
            l = socket.socket()
            l.bind(("127.0.0.1", port))
            l.listen(n)
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
            time.sleep(0.3)
            servers = [l.accept()[0] for _ in range(n)]
            for c in clients:
                c.close()
            time.sleep(0.1)
            for sv in servers:
                sv.close()
            l.close()

        if os.path.exists(self.out):
            os.unlink(self.out)
        with self.witness([port]), Running(["--batch-size", "8", "--event", EVENTER,
                                            "-p", "ports=%d" % port,
                                            "--sink", "jsonl", "-p", "path=" + self.out]) as t:
            action()
            time.sleep(0.5)
            self.assertEqual(t.stop(), 130, t.stderr())
            self.stop_witness()
        with open(self.out) as f:
            events = [json.loads(l) for l in f if '"kind":"snapshot"' not in l]
        # a run the kernel skipped (nested in a softirq; rare) is in a gap record
        events, counted = split_gaps(events)
        got = collections.Counter((e["old_state"], e["new_state"]) for e in events)
        want = collections.Counter({t: n for t in zip(CLIENT, CLIENT[1:])})
        want.update({t: n for t in zip(SERVER, SERVER[1:])})
        want.update(zip(LISTENER, LISTENER[1:]))
        self.assertEqual(got - want, collections.Counter())
        self.assert_missing_explained(want - got, counted)
        if HAS_OWNER:
            self.assertEqual({e.get("owner_pid") for e in events}, {os.getpid()})

    @unittest.skipUnless(EVENTER == "bpf", "an option of the bpf eventer")
    def test_rescue_program_runs_only_when_asked(self):
        """rescue=on attaches the second program on the state tracepoint; by
        default only the first one runs."""
        for params, rescue in (([], False), (["rescue=on"], True)):
            args = ["--spool", "none", "--event", "bpf"]
            for p in params:
                args += ["-p", p]
            with Running(args + ["--sink", "jsonl", "-p", "path=/dev/null"]) as t:
                names = attached_programs(t.proc.pid)
                self.assertEqual(t.stop(), 130, t.stderr())
            self.assertIn("on_state", names)
            self.assertEqual("on_state_rescue" in names, rescue, names)

    def test_burst_nothing_lost(self):
        """20,000 connections as fast as they go, default settings, no filter."""
        port = free_port()
        result = {}

        # (reset records too: they take seq numbers; a churn this fast has a few)
        events, s = self.capture([], lambda: loadgen(port, 20000, result), resets=True,
                                 watch=[port], witness_kb=65536)
        events, lost = split_gaps(events)
        mine = [e for e in events if port in (e["sport"], e["dport"]) and e.get("kind") is None]
        # Counted loss: rarely (about one burst in 30 here) the kernel skips a
        # program run nested in a softirq and counts it; it must be in a gap
        # record, and it may explain missing events below.
        counted = s["lost in kernel"]
        self.assertEqual(lost, counted)
        # Under valgrind tcp-audit reads some 30 times slower than the
        # generator writes: the kernel's buffer may overflow, and the test then
        # holds it to what always holds, that every loss is counted.
        slow = bool(tcpaudit.WRAPPER)
        if not slow:
            self.assertLessEqual(counted, 5 if EVENTER == "bpf" else 0)
        if events and "seq" in events[0] and not counted:
            # CPUs fill the ring side by side: seq order is not file order
            seqs = sorted(e["seq"] for e in events if "seq" in e)
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "seq has gaps")
        conns = int(result["connections"])
        self.assertEqual(int(result["events"]), 10 * conns + 2)
        # every transition once, but for counted loss and what the witness saw
        # in the VM's blind spot (no fixed allowance: a counted pair and a
        # blind one in the same burst are both accounted for)
        self.check_transitions(mine, conns, counted)

    @unittest.skipUnless(EVENTER == "bpf", "the bpf eventer's rings")
    def test_small_rings_wake_the_reader_in_time(self):
        """ring_size=1M, the smallest: 4,096 slots a CPU here, what the default
        gives each CPU of a host with 32, woken every 256 records.  The reader
        can go to sleep with more than that already waiting (records younger
        than the merge's slack); a ring that woke it only on reaching exactly
        256 then filled up before the reader's 100 ms timer.  One busy loadgen
        thread (one CPU's worth of churn, ~360,000 events a second, the other
        CPU free for the reader): that code lost 85-89% of 1,000,002 events
        (4 runs), this loses 0 to 1.5% (8 runs; the scheduler may still put the
        woken reader on the churn's CPU now and then, and 4,096 slots last it
        ~11 ms).  With two threads, both CPUs the churn's, the two were
        5.5-12% against 0.1-2.9%: too close to tell apart on this VM.  Nothing
        but the rings is timed here (no spool, /dev/null, no start-up snapshot
        to hand out first): an instrumented reader cannot keep up with the
        churn through rings this small whatever wakes it."""
        if tcpaudit.WRAPPER or os.environ.get("TCP_AUDIT_SANITIZED"):
            self.skipTest("needs tcp-audit's reader at full speed")
        port = free_port()
        result = {}
        with Running(["--spool", "none", "--event", "bpf", "-p", "ring_size=1M", "-p",
                      "kinds=state", "-p", "snapshot=false", "--sink", "jsonl", "-p",
                      "path=/dev/null"]) as t:
            loadgen(port, 100000, result, "busy", threads=1)
            wait_for_quiet_port(port)
            time.sleep(0.5)  # the reader's timer
            self.assertEqual(t.stop(), 130, t.stderr())
            s = summary(t.stderr())
        caused = int(result["events"])
        self.assertEqual(caused, 10 * int(result["connections"]) + 2)
        lost = s["lost in kernel"]  # counted, with a gap record
        self.assertLess(lost, caused // 10, s)
        self.assertGreaterEqual(s["events read"] + lost, caused - 10, s)  # the blind spot

    def test_sealed_capture_verifies(self):
        """--seal into jsonl and sqlite at once (a chain each): the real
        eventer's events (the start-up snapshot's records, state changes of a
        churn, whatever else the machine does), stored and read back, match
        their seals."""
        key = os.path.join(self.tmp.name, "seal.key")
        db = os.path.join(self.tmp.name, "events.db")
        init = tcpaudit.run(["seal-init", key])
        self.assertEqual(init.returncode, 0, init.stderr)
        port = free_port()
        result = {}
        args = ["--event", EVENTER, "--seal", key, "--sink", "jsonl", "-p", "path=" + self.out,
                "--sink", "sqlite", "-p", "path=" + db]
        with Running(args) as t:
            loadgen(port, 2000, result)
            time.sleep(0.5)
            self.assertEqual(t.stop(), 130, t.stderr())
        for store in (self.out, db):
            r = tcpaudit.run(["verify", store, "--verify-key", init.stdout.strip()])
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertRegex(r.stdout, r"(\d+) events verified in (\d+) seals of 1 run")
            verified = int(r.stdout.split(" events verified")[0].split()[-1])
            self.assertGreaterEqual(verified, int(result["events"]))

    def test_stop_counts_what_the_drain_leaves(self):
        """A stop whose drain runs out of time (3 s) with events still in the
        kernel's buffer: what is left there is counted, in a gap record, so
        stored + counted is exactly what happened.  The sink writes into a
        pipe the test does not read until the drain's time is up, and
        events wait in memory only (--spool none, small queue, no backlog),
        so reading stalls with most of the burst still in the kernel.  State
        changes only (kinds=state): tracefs filters reset events in user
        space, so those of any port left in the buffer would count too."""
        port = free_port()
        result = {}
        fifo = os.path.join(self.tmp.name, "pipe")
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader: opening it never waits
        self.addCleanup(os.close, reader)
        args = ["--event", EVENTER, "-p", "ports=%d" % port, "-p", "kinds=state", "--spool", "none",
                "--queue-size", "1024", "--backlog", "0", "--sink", "jsonl", "-p", "path=" + fifo]
        with self.witness([port]), Running(args) as t:
            loadgen(port, 3000, result)
            t.proc.send_signal(signal.SIGINT)
            time.sleep(4)  # the drain's 3 s run out while the sink waits on the pipe
            os.set_blocking(reader, True)
            chunks = []
            while True:
                chunk = os.read(reader, 1 << 16)
                if not chunk:
                    break  # the sink closed the pipe: tcp-audit is done
                chunks.append(chunk)
            rc = t.wait(timeout=60)
            err = t.stderr()
            self.stop_witness()
        self.assertEqual(rc, 130, err)
        lines = [json.loads(l) for l in b"".join(chunks).decode().splitlines()]
        mine = [e for e in lines if e.get("kind") is None and port in (e["sport"], e["dport"])]
        _, lost = split_gaps(lines)
        caused = int(result["events"])
        self.assertGreater(lost, 0, "the drain did not run out of time: the test shows nothing")
        self.assertEqual(summary(err)["lost in kernel"], lost, err)
        self.assertIn("still in the buffer when the stop's drain ran out of time", err)
        # events in the VM's blind spot reach no BPF program: neither stored nor counted
        self.assertEqual(len(mine) + lost + sum(self.blind.values()), caused, err)

    def test_full_kernel_buffer_loss_is_counted(self):
        """tcp-audit frozen (SIGSTOP) while a burst overflows the smallest
        kernel buffers the eventer takes: what found them full is counted, in
        a gap record, and stored + counted is exactly what happened (the bpf
        rings' reserve refuses a full ring; tracefs counts its overruns)."""
        port = free_port()
        result = {}
        size = "ring_size=1M" if EVENTER == "bpf" else "buffer_size=64K"
        args = ["--event", EVENTER, "-p", "ports=%d" % port, "-p", "kinds=state", "-p", size,
                "--sink", "jsonl", "-p", "path=" + self.out]
        with self.witness([port]), Running(args) as t:
            t.proc.send_signal(signal.SIGSTOP)
            try:
                loadgen(port, 20000, result)
            finally:
                t.proc.send_signal(signal.SIGCONT)
            wait_for_quiet_port(port)
            time.sleep(0.5)
            # a few more once it has read again: numbered after the loss
            after = {}
            loadgen(port, 10, after)
            wait_for_quiet_port(port)
            rc = t.stop()
            err = t.stderr()
            self.stop_witness()
        self.assertEqual(rc, 130, err)
        with open(self.out) as f:
            lines = [json.loads(l) for l in f]
        mine = [e for e in lines if e.get("kind") is None and port in (e["sport"], e["dport"])]
        _, lost = split_gaps(lines)
        caused = int(result["events"]) + int(after["events"])
        self.assertGreater(lost, 0, "the buffers did not overflow: the test shows nothing")
        self.assertEqual(summary(err)["lost in kernel"], lost, err)
        self.assertEqual(len(mine) + lost + sum(self.blind.values()), caused, err)
        if EVENTER == "bpf":
            # the events are numbered with a hole for each one a full ring
            # lost (not for a nested run the kernel skipped: rare, at most
            # a few, and not from the rings), before the events after it
            seqs = [e["seq"] for e in mine]
            self.assertEqual(len(set(seqs)), len(seqs), "a seq number twice")
            holes = max(seqs) - len(seqs)
            self.assertTrue(0 <= lost - holes <= 5, "%d lost, %d holes" % (lost, holes))
        # what was stored came through in order: every socket's states chain
        by_socket = collections.defaultdict(list)
        for e in mine:
            by_socket[(e["sport"], e["dport"])].append(e)
        for chain in by_socket.values():
            times = [e["time"] for e in chain]
            self.assertEqual(times, sorted(times))

    def check_transitions(self, mine, conns, counted):
        """The events of a loadgen run: every transition of its connections
        and listener, once, but for counted loss and the VM's blind spot."""
        got = collections.Counter((e["old_state"], e["new_state"]) for e in mine)
        want = collections.Counter({t: conns for t in zip(CLIENT, CLIENT[1:])})
        want.update({t: conns for t in zip(SERVER, SERVER[1:])})
        want.update(zip(LISTENER, LISTENER[1:]))
        missing = want - got
        self.assertEqual(got - want, collections.Counter(), "more events than transitions")
        self.assert_missing_explained(missing, counted)

if __name__ == "__main__":
    tcpaudit.main()
