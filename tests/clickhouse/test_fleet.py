"""A fleet into one store: three "hosts" (network namespaces the test makes,
each with its own host name in a UTS namespace, two of them the same name,
its own machine id bind-mounted in a mount namespace, and its own loopback
traffic),
one tcp-audit per host (bpf, netns= filter, a spool of its own) writing to a
ClickHouse cluster of two shards (one replica each, ZooKeeper,
ReplicatedReplacingMergeTree under a Distributed table, cluster=) and to one
PostgreSQL.  Mid-run a shard is killed with -9 and restarted, then ZooKeeper
is stopped and started again: every event once in both stores, per host
exactly the traffic that host made, hosts of the same name told apart by
their machine ids."""
import os
import signal
import subprocess
import tempfile
import time
import unittest

import chserver
import pgserver
import tcpaudit
import zkserver
from tcpaudit import BIN, WRAPPER, run, wait_until

LOADGEN = os.environ.get("TCP_AUDIT_LOADGEN", "")
SANITIZED = bool(os.environ.get("TCP_AUDIT_SANITIZED") or os.environ.get("TCP_AUDIT_WRAPPER"))
# key: (host name, index); c has a's name, and only its machine id tells them apart
HOSTS = {"a": ("fleet-a", 0), "b": ("fleet-b", 1), "c": ("fleet-a", 2)}
ROUNDS = ((100, 150, 200), (120, 80, 60), (90, 110, 130))  # connections per host per round
OUTAGE_TIMEOUT = 240  # seconds for the stores to catch up after an outage


def ready():
    if os.geteuid() != 0:
        return "needs root"
    if SANITIZED:
        return "a heavy integration test: runs once, on the plain build"
    if not (chserver.available() and zkserver.available() and pgserver.available()):
        return "needs clickhouse-server, zookeeper and postgresql"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs BTF for the bpf eventer"
    if not os.path.isfile("/etc/machine-id"):
        return "needs /etc/machine-id to mount each host's own over"
    return None


class Host:
    """A network namespace with its own name, traffic and tcp-audit."""

    def __init__(self, key, workdir):
        self.key = key
        self.name, self.index = HOSTS[key]
        self.machine_id = os.urandom(16).hex()
        self.ns = "ta-fleet-%s-%d" % (key, os.getpid())
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.inode = os.stat("/run/netns/" + self.ns).st_ino
        self.dir = os.path.join(workdir, key)
        os.mkdir(self.dir)
        with open(os.path.join(self.dir, "machine-id"), "w") as f:
            f.write(self.machine_id + "\n")
        self.proc = None
        self.events = 0

    def start(self, sinks):
        args = ["unshare", "--uts", "--mount", "sh", "-c",
                'mount --bind "$0" /etc/machine-id && hostname "$1" && shift && exec "$@"',
                os.path.join(self.dir, "machine-id"), self.name] + \
            WRAPPER + [BIN, "--event", "bpf", "-p", "netns=%d" % self.inode,
                       "-p", "snapshot=false", "-p", "kinds=state",
                       "--spool", os.path.join(self.dir, "spool"), "--stop-grace", "60"] + sinks
        self.err_path = os.path.join(self.dir, "stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.err,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: "tcp-audit: started" in self.stderr() or self.proc.poll() is not None,
                   60, "%s's tcp-audit to start" % self.name)
        if self.proc.poll() is not None:
            raise AssertionError("%s's tcp-audit exited:\n%s" % (self.name, self.stderr()))

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def churn(self, connections):
        """Connections on the host's own loopback; the state changes they made."""
        r = subprocess.run(["ip", "netns", "exec", self.ns, LOADGEN, "-n", str(connections)],
                           capture_output=True, text=True, check=True)
        made = int(dict(kv.split("=") for kv in r.stdout.split())["events"])
        self.events += made
        return made

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            rc = self.proc.wait(timeout=120)
        else:
            rc = self.proc.returncode if self.proc else None
        if self.proc:
            self.err.close()
        return rc

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True)


@unittest.skipIf(ready(), ready())
class Fleet(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.servers = []
        self.hosts = []
        self.zk = zkserver.ZooKeeperServer().start()
        self.servers.append(self.zk)
        self.shards = [chserver.ClickHouseServer(), chserver.ClickHouseServer()]
        for i, s in enumerate(self.shards):
            s.configure("fleet", self.shards, i + 1, self.zk)
            self.servers.append(s)
            s.start()
        self.pg = pgserver.PostgresServer(durable=True)
        self.servers.append(self.pg)
        self.pg.start()
        self.pg.createdb("fleet")

    def tearDown(self):
        for h in self.hosts:
            h.cleanup()
        for s in reversed(self.servers):
            s.cleanup()
        self.tmp.cleanup()

    def ch_counts(self, final=False):
        out = self.shards[0].query(
            "SELECT host, machine, count(), uniqExact(uid) FROM fleet.tcp_events%s WHERE kind ="
            " 'state_change' GROUP BY host, machine FORMAT TabSeparated"
            % (" FINAL" if final else ""))
        rows = [l.split("\t") for l in out.splitlines()]
        return {(r[0], r[1]): [int(r[2]), int(r[3])] for r in rows}

    def pg_counts(self):
        out = self.pg.psql("fleet", "SELECT host, machine, count(*), count(DISTINCT uid) FROM"
                                    " tcp_audit_events WHERE kind = 0 GROUP BY host, machine")
        rows = [l.split("|") for l in out.splitlines()]
        return {(r[0], r[1]): [int(r[2]), int(r[3])] for r in rows}

    def want(self):
        return {(h.name, h.machine_id[:16]): [h.events, h.events] for h in self.hosts}

    def caught_up(self):
        try:
            return self.ch_counts() == self.want() and self.pg_counts() == self.want()
        except (OSError, RuntimeError, subprocess.CalledProcessError):
            return False

    def churn(self, round_):
        for h in self.hosts:
            h.churn(ROUNDS[round_][h.index])

    def test_hosts_into_a_sharded_cluster_and_postgresql_through_outages(self):
        for key in HOSTS:
            self.hosts.append(Host(key, self.tmp.name))
        # every host seals with a key of its own
        vkeys = []
        for h in self.hosts:
            key = os.path.join(h.dir, "seal.key")
            r = run(["seal-init", key])
            self.assertEqual(r.returncode, 0, r.stderr)
            vkeys += ["--verify-key", "%s=%s" % (h.name, r.stdout.strip())]
            shard = self.shards[h.index % 2]
            h.start(["--seal", key,
                     "--sink", "clickhouse", "-p", "url=" + shard.url, "-p", "database=fleet",
                     "-p", "cluster=fleet", "-p", "interval=200",
                     "--sink", "pgsql", "-p", "conninfo=" + self.pg.conninfo("fleet")])
        # the tables were made ON CLUSTER on both shards
        for s in self.shards:
            self.assertEqual(s.query("EXISTS TABLE fleet.tcp_events_local").strip(), "1")

        self.churn(0)
        wait_until(self.caught_up, 60, "the first round in both stores")

        # a shard dies mid-run: inserts through either shard fail until it is back
        self.shards[1].kill()
        self.churn(1)
        wait_until(lambda: all("is unavailable" in h.stderr() for h in self.hosts), 60,
                   "every host to find the cluster unavailable")
        self.shards[1].start()
        wait_until(self.caught_up, OUTAGE_TIMEOUT, "the second round after the shard's restart")

        # ZooKeeper away: the replicated tables are read-only
        self.zk.stop()
        self.churn(2)
        time.sleep(3)
        self.assertFalse(self.caught_up())
        self.zk.start()
        wait_until(self.caught_up, OUTAGE_TIMEOUT, "the third round after ZooKeeper's restart")

        for h in self.hosts:
            self.assertEqual(h.stop(), 130, h.stderr())
        want = self.want()
        self.assertEqual(len(want), len(HOSTS))
        for h in self.hosts:
            self.assertEqual(h.events, 10 * sum(r[h.index] for r in ROUNDS) + 6)
        # every event once: without FINAL too (retries were dropped as blocks already held)
        self.assertEqual(self.ch_counts(), want)
        self.assertEqual(self.ch_counts(final=True), want)
        self.assertEqual(self.pg_counts(), want)
        # both shards hold a share of every host's events (sharded by uid)
        for s in self.shards:
            out = s.query("SELECT uniqExact(host, machine) FROM fleet.tcp_events_local")
            self.assertEqual(out.strip(), str(len(HOSTS)))
        log = "".join(h.stderr() for h in self.hosts)
        self.assertIn("is back", log)
        # every batch with its seal, through both outages: the fleet's stores verify with
        # the hosts' keys, each run under its host's, each key its host's events only
        for s in self.shards:
            self.assertEqual(s.query("EXISTS TABLE fleet.tcp_audit_seals_local").strip(), "1")
        stored = self.shards[0].query("SELECT count() FROM fleet.tcp_events FINAL").strip()
        for source in (self.shards[1].url + "/?database=fleet", self.pg.conninfo("fleet")):
            r = run(["verify", source] + vkeys)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("%s events verified" % stored, r.stdout)
            self.assertIn("of %d runs," % len(HOSTS), r.stdout)
            for h in self.hosts:
                self.assertIn("(the key of host %s)" % h.name, r.stdout)


if __name__ == "__main__":
    tcpaudit.main()
