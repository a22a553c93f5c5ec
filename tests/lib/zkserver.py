"""A private ZooKeeper (Debian's zookeeper package) for the ClickHouse cluster
tests: a standalone server as a plain java process, its own folder, a free
loopback port, no admin web server.  stop() and start() again keep its data."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tcpaudit import free_ports

JAR = "/usr/share/java/zookeeper.jar"


def available():
    return os.path.exists(JAR) and shutil.which("java") is not None and os.geteuid() == 0


class ZooKeeperServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tcp-audit-zk-")
        (self.port,) = free_ports(1)
        self.proc = None
        os.mkdir(os.path.join(self.dir, "data"))
        with open(os.path.join(self.dir, "zoo.cfg"), "w") as f:
            f.write("tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=%s/data\n"
                    "clientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                    "4lw.commands.whitelist=ruok\nmaxClientCnxns=200\n" % (self.dir, self.port))

    def ruok(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(16) == b"imok"
        except OSError:
            return False

    def start(self, timeout=60):
        self.out = open(os.path.join(self.dir, "out.log"), "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xmx256m", "-Dzookeeper.log.dir=" + self.dir,
             "-cp", "/etc/zookeeper/conf:/usr/share/java/*",
             "org.apache.zookeeper.server.ZooKeeperServerMain",
             os.path.join(self.dir, "zoo.cfg")],
            stdout=self.out, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("zookeeper exited: " + self.log_tail())
            if self.ruok():
                return self
            time.sleep(0.1)
        raise RuntimeError("zookeeper did not start: " + self.log_tail())

    def log_tail(self):
        with open(os.path.join(self.dir, "out.log"), errors="replace") as f:
            return f.read()[-2000:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()
            self.out = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
