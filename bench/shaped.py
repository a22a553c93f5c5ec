"""Events shaped like a capture, in the JSON-lines format, for the benchmark's
replays (sink throughput, the lookup archive).

What a busy host's capture looks like, made up but plausible:
  - connections arrive at random (a Poisson process) at the rate that gives
    the asked number of events per second; 45% go out from this host (the
    client's 5 transitions), 45% come in (the server's 5), 10% are local
    (both ends on this host: 10)
        client  CLOSED->SYN-SENT->ESTABLISHED->FIN-WAIT-1->FIN-WAIT-2->CLOSED
        server  LISTEN->SYN-RECEIVED->ESTABLISHED->CLOSE-WAIT->LAST-ACK->CLOSED
    spaced by a round trip (loopback: tens of us; remote: up to 80 ms) and a
    lifetime from a millisecond to two minutes; their events interleave and
    come out in time order, every time_ns distinct and rising
  - one socket cookie per socket, rising as sockets are created, and a
    socket inode to go with it; the bpf eventer's port 0 in the
    client's first event
  - a third of the connections IPv6; outgoing ones go to a pool of servers
    where a few are much more popular than the rest (ports 443, 80, 5432,
    ...), incoming ones come from many clients to a few local services
  - the process on the CPU is the owner in its own system calls, and another
    process or the idle task in the softirq transitions; the owner (pid, uid,
    command) on 95% of the sockets; socket info (inode, uid, gid, state) on
    two thirds of the events; a network namespace and a cgroup per process
  - seq counts the events as written, ktime is the monotonic clock

The same seed gives the same file.  Keys are written in the jsonl sink's
order (see tests/lib/tcpaudit.py sample_line).
"""
import calendar
import heapq
import ipaddress
import math
import random
import time

# 2026-11-24T00:00:00Z
DEFAULT_START_NS = calendar.timegm((2026, 11, 24, 0, 0, 0)) * 10**9

CLIENT = ("CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSED")
SERVER = ("LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT", "LAST-ACK", "CLOSED")
# the kernel socket_state after each transition (index of the new state)
CLIENT_SOCK = ("CONNECTING", "CONNECTED", "DISCONNECTING", "DISCONNECTING", "UNCONNECTED")
SERVER_SOCK = ("CONNECTING", "CONNECTED", "CONNECTED", "DISCONNECTING", "UNCONNECTED")
# transitions made in the owner's own system call (connect, close), by index
CLIENT_IN_CALL = (True, False, True, False, False)
SERVER_IN_CALL = (False, False, False, True, False)

# (command, uid, gid) of the processes that open connections / serve them
CLIENTS = [("curl", 1000, 1000), ("python3", 1000, 1000), ("java", 1001, 1001),
           ("node", 1002, 1002), ("chrome", 1000, 1000), ("apt-get", 0, 0),
           ("git-remote-http", 1000, 1000), ("prometheus", 112, 118),
           ("envoy", 1003, 1003), ("postgres", 105, 110)]
SERVERS = [("nginx", 33, 33), ("sshd", 0, 0), ("postgres", 105, 110),
           ("envoy", 1003, 1003), ("redis-server", 106, 111), ("java", 1001, 1001)]
LOCAL_PORTS = [443, 443, 443, 80, 22, 5432, 6379, 8443]
REMOTE_PORTS = [443] * 8 + [80] * 3 + [5432, 6379, 9092, 53, 22, 8080, 3306, 11211]
HOST_V4, HOST_V6 = "10.20.0.5", "2001:db8:20::5"


def _addr_pool(rng, n, v6):
    out = []
    for _ in range(n):
        if v6:
            out.append(str(ipaddress.IPv6Address(
                (0x20010db8 << 96) | (rng.getrandbits(16) << 64) | rng.getrandbits(20))))
        else:
            first = rng.choice((198, 203, 172, 10))
            out.append(str(ipaddress.IPv4Address(
                (first << 24) | rng.getrandbits(24))))
    return out


class Generator:
    def __init__(self, seed=1, start_ns=DEFAULT_START_NS, events_per_s=20000.0,
                 host="bench-host"):
        self.rng = random.Random(seed)
        self.start_ns = start_ns
        # 5.5 events per connection on average (45% x 5 + 45% x 5 + 10% x 10)
        self.conn_gap_ns = 1e9 / (events_per_s / 5.5)
        self.host = '"%s"' % host
        rng = self.rng
        # outgoing destinations: a Zipf-like popularity over a pool of servers
        self.servers = {}
        for v6 in (False, True):
            addrs = _addr_pool(rng, 2000, v6)
            self.servers[v6] = [(a, rng.choice(REMOTE_PORTS)) for a in addrs]
        self.zipf = [1.0 / (k + 1) for k in range(2000)]
        self.zipf_cum = []
        total = 0.0
        for w in self.zipf:
            total += w
            self.zipf_cum.append(total)
        self.peers = {False: _addr_pool(rng, 50000, False), True: _addr_pool(rng, 50000, True)}
        # processes: a few pids per command, each with its namespace and cgroup
        self.procs = {}
        for role, table in (("client", CLIENTS), ("server", SERVERS)):
            procs = []
            for comm, uid, gid in table:
                for _ in range(3):
                    pid = rng.randint(300, 400000)
                    netns = 4026531840 if rng.random() < 0.8 else 4026532200 + rng.randint(0, 40)
                    procs.append((pid, '"%s"' % comm, uid, gid, netns, rng.randint(2, 9000)))
            self.procs[role] = procs
        self.others = self.procs["client"] + self.procs["server"]
        self.cookie = 8192 + rng.randint(0, 1 << 20)
        self.inode = 30000000 + rng.randint(0, 1 << 20)
        self.boot_ns = start_ns - 3 * 86400 * 10**9  # booted three days before
        self._sec = None
        self._sec_text = ""

    # -- one connection: its events as (time_ns, text without time/seq/ktime)

    def _server_pick(self, v6):
        k = self.rng.random() * self.zipf_cum[-1]
        lo, hi = 0, len(self.zipf_cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.zipf_cum[mid] < k:
                lo = mid + 1
            else:
                hi = mid
        return self.servers[v6][lo]

    def _on_cpu(self, owner, in_call):
        if in_call and owner:
            pid, comm = owner[0], owner[1]
            return pid, pid + self.rng.choice((0, 0, 0, 1, 2, 7)), comm
        r = self.rng.random()
        if r < 0.3:
            cpu = self.rng.randint(0, 1)
            return 0, 0, '"swapper/%d"' % cpu
        p = self.rng.choice(self.others)
        return p[0], p[0], p[1]

    def _socket(self, family, chain, sock_states, in_call, saddr, sport, daddr, dport, owner,
                times, first_port_zero):
        rng = self.rng
        self.cookie += rng.randint(1, 3)
        self.inode += rng.randint(1, 4)
        cookie, inode = self.cookie, self.inode
        known = owner if rng.random() < 0.95 else None
        out = []
        for i in range(5):
            pid, tid, comm = self._on_cpu(owner, in_call[i])
            sp = 0 if (first_port_zero and i == 0) else sport
            parts = [',"family":', family, ',"saddr":"', saddr, '","sport":', str(sp),
                     ',"daddr":"', daddr, '","dport":', str(dport), ',"old_state":"',
                     chain[i], '","new_state":"', chain[i + 1], '","pid_on_cpu":',
                     str(pid), ',"tid_on_cpu":', str(tid), ',"comm_on_cpu":', comm]
            if known:
                parts += [',"owner_pid":', str(known[0]), ',"owner_uid":', str(known[2]),
                          ',"owner_comm":', known[1]]
            parts += [',"sock_cookie":', str(cookie)]
            if rng.random() < 2.0 / 3.0:
                parts += [',"sock_inode":', str(inode), ',"sock_uid":', str(owner[2]),
                          ',"sock_gid":', str(owner[3]), ',"sock_state":"', sock_states[i],
                          '"']
            parts += [',"netns":', str(owner[4]), ',"cgroup_id":', str(owner[5])]
            out.append((times[i], "".join(parts)))
        return out

    def _connection(self, t0):
        rng = self.rng
        v6 = rng.random() < 1.0 / 3.0
        family = '"inet6"' if v6 else '"inet"'
        r = rng.random()
        kind = "out" if r < 0.45 else "in" if r < 0.9 else "local"
        if kind == "local":
            rtt = rng.randint(20000, 100000)
        else:
            rtt = int(rng.lognormvariate(math.log(8e6), 1.2))
            rtt = max(150000, min(rtt, 80000000))
        life = int(min(rng.lognormvariate(math.log(50e6), 2.0), 120e9)) + 1000000
        linger = rng.randint(10000, 2000000)  # the server's close after the client's FIN
        ephemeral = rng.randint(32768, 60999)
        client_times = [t0, t0 + rtt, t0 + rtt + life, t0 + 2 * rtt + life,
                        t0 + 2 * rtt + life + linger]
        server_times = [t0 + rtt // 2, t0 + rtt + rtt // 2, t0 + rtt + rtt // 2 + life,
                        t0 + rtt + rtt // 2 + life + linger,
                        t0 + 2 * rtt + rtt // 2 + life + linger]
        events = []
        if kind == "out":
            here = HOST_V6 if v6 else HOST_V4
            addr, port = self._server_pick(v6)
            owner = rng.choice(self.procs["client"])
            events += self._socket(family, CLIENT, CLIENT_SOCK, CLIENT_IN_CALL, here,
                                   ephemeral, addr, port, owner, client_times, True)
        elif kind == "in":
            here = HOST_V6 if v6 else HOST_V4
            peer = rng.choice(self.peers[v6])
            owner = rng.choice(self.procs["server"])
            events += self._socket(family, SERVER, SERVER_SOCK, SERVER_IN_CALL, here,
                                   rng.choice(LOCAL_PORTS), peer, ephemeral, owner,
                                   server_times, False)
        else:
            here = "::1" if v6 else "127.0.0.1"
            port = rng.choice(LOCAL_PORTS)
            client = rng.choice(self.procs["client"])
            server = rng.choice(self.procs["server"])
            events += self._socket(family, CLIENT, CLIENT_SOCK, CLIENT_IN_CALL, here,
                                   ephemeral, here, port, client, client_times, True)
            events += self._socket(family, SERVER, SERVER_SOCK, SERVER_IN_CALL, here, port,
                                   here, ephemeral, server, server_times, False)
        return events

    def _time_text(self, t):
        sec = t // 1000000000
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return '{"time":"%s.%09dZ","host":%s' % (self._sec_text, t % 1000000000, self.host)

    def lines(self, n):
        """Yields n JSON lines (no newline), in time order."""
        rng = self.rng
        heap = []
        tie = 0
        next_start = self.start_ns
        last = 0
        seq = 0
        while seq < n:
            # bring in every connection that starts before the earliest pending event
            while not heap or next_start <= heap[0][0]:
                for t, text in self._connection(next_start):
                    tie += 1
                    heapq.heappush(heap, (t, tie, text))
                next_start += int(rng.expovariate(1.0) * self.conn_gap_ns) + 1
            t, _, text = heapq.heappop(heap)
            t = max(t, last + 1)
            if not seq:
                self.first_ns = t
            last = self.last_ns = t
            seq += 1
            yield '%s%s,"seq":%d,"ktime":%d}' % (self._time_text(t), text, seq,
                                                  t - self.boot_ns)


def write(path, n, seed=1, start_ns=DEFAULT_START_NS, events_per_s=20000.0):
    """Writes n events to path; returns (first time_ns, last time_ns)."""
    g = Generator(seed=seed, start_ns=start_ns, events_per_s=events_per_s)
    with open(path, "w") as f:
        buf = []
        for line in g.lines(n):
            buf.append(line)
            if len(buf) >= 10000:
                buf.append("")
                f.write("\n".join(buf))
                buf = []
        if buf:
            buf.append("")
            f.write("\n".join(buf))
    return g.first_ns, g.last_ns


def shuffle(src, dst, seed=2):
    """The same lines in a random order (as a replay of several hosts' files
    into one store would bring them)."""
    with open(src) as f:
        lines = f.readlines()
    random.Random(seed).shuffle(lines)
    with open(dst, "w") as f:
        f.writelines(lines)
