"""A private ClickHouse server for tests and the benchmark.

Debian's clickhouse-server run as a plain process (no systemd) with its own
folder, configuration and free loopback ports: HTTP (what the sink speaks)
and the native TCP port (which the server insists on).  Two users: `default`
without a password and `audit` with PASSWORD.  Stopped by stop() / cleanup()
or at the end of a `with` block; kill() is a kill -9, start() again restarts
it on the same folder and ports.
"""
import os
import subprocess
import urllib.error
import urllib.request

from serverproc import ServerProcess
from tcpaudit import free_ports

SERVER = "/usr/sbin/clickhouse-server"
PASSWORD = "ch-s3cret-not-for-logs"

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/server.log</log>
    <errorlog>{dir}/server.err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <path>{data}/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
{cluster}</yandex>
"""

# cluster=: every shard one replica; ZooKeeper for the replicas and ON CLUSTER
CLUSTER = """  <remote_servers><{name}>{shards}</{name}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>
    <session_timeout_ms>6000</session_timeout_ms></zookeeper>
  <macros><shard>{shard}</shard><replica>r1</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
"""
TLS = """  <https_port>{port}</https_port>
  <openSSL><server><certificateFile>{dir}/cert.pem</certificateFile>
    <privateKeyFile>{dir}/key.pem</privateKeyFile><verificationMode>none</verificationMode>
    <disableProtocols>sslv2,sslv3</disableProtocols></server></openSSL>
"""
SHARD = ("<shard><internal_replication>true</internal_replication>"
         "<replica><host>127.0.0.1</host><port>{port}</port></replica></shard>")

USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <audit><password>{password}</password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></audit>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


def server_binary():
    for path in (SERVER, "/usr/bin/clickhouse"):
        if os.path.exists(path):
            return path
    return None


def available():
    return server_binary() is not None and os.geteuid() == 0


class ClickHouseServer(ServerProcess):
    NAME = "clickhouse-server"
    LOGS = ("out.log", "server.err.log")

    def __init__(self, tls=False, data_dir=None):
        """data_dir: where the tables go (default: data/ in the server's folder)."""
        super().__init__("tcp-audit-ch-")
        self.http_port, self.tcp_port, self.https_port = free_ports(3)
        self.tls = tls
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        if tls:  # a self-signed certificate for 127.0.0.1, its own CA
            self.ca_file = os.path.join(self.dir, "cert.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", os.path.join(self.dir, "key.pem"), "-out", self.ca_file,
                            "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)
        self.configure()
        with open(os.path.join(self.dir, "users.xml"), "w") as f:
            f.write(USERS.format(password=PASSWORD))

    def configure(self, cluster=None, shards=(), shard=None, zookeeper=None):
        """cluster: a cluster's name, of the servers of shards (one replica each), this
        one shard number shard, with the ZooKeeper server zookeeper."""
        extra = TLS.format(dir=self.dir, port=self.https_port) if self.tls else ""
        if cluster:
            extra += CLUSTER.format(name=cluster, zk=zookeeper.port, shard="%02d" % shard,
                                   shards="".join(SHARD.format(port=s.tcp_port)
                                                  for s in shards))
        with open(os.path.join(self.dir, "config.xml"), "w") as f:
            f.write(CONFIG.format(dir=self.dir, data=self.data_dir, http=self.http_port,
                                  tcp=self.tcp_port, cluster=extra))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    @property
    def https_url(self):
        return "https://127.0.0.1:%d" % self.https_port

    def start(self, timeout=30):
        binary = server_binary()
        args = [binary] + (["server"] if binary.endswith("/clickhouse") else [])
        return self.spawn(args + ["--config-file=" + os.path.join(self.dir, "config.xml")],
                          self.ready, timeout)

    def ready(self):
        try:
            return self.query("SELECT 1").strip() == "1"
        except (OSError, RuntimeError):
            return False

    def query(self, sql, user=None, password=None):
        """The answer's text; RuntimeError with the server's message on an error."""
        req = urllib.request.Request(self.url + "/", data=sql.encode(), method="POST")
        if user:
            req.add_header("X-ClickHouse-User", user)
        if password:
            req.add_header("X-ClickHouse-Key", password)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode(errors="replace")) from None
