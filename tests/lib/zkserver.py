"""A private ZooKeeper (Debian's zookeeper package) for the ClickHouse cluster
tests: a standalone server as a plain java process, its own folder, a free
loopback port, no admin web server.  stop() and start() again keep its data."""
import os
import shutil
import socket

from serverproc import ServerProcess
from tcpaudit import free_ports

JAR = "/usr/share/java/zookeeper.jar"


def available():
    return os.path.exists(JAR) and shutil.which("java") is not None and os.geteuid() == 0


class ZooKeeperServer(ServerProcess):
    NAME = "zookeeper"

    def __init__(self):
        super().__init__("tcp-audit-zk-")
        (self.port,) = free_ports(1)
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
        return self.spawn(["java", "-Xmx256m", "-Dzookeeper.log.dir=" + self.dir,
                           "-cp", "/etc/zookeeper/conf:/usr/share/java/*",
                           "org.apache.zookeeper.server.ZooKeeperServerMain",
                           os.path.join(self.dir, "zoo.cfg")], self.ruok, timeout)
