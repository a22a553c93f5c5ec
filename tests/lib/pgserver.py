"""A private PostgreSQL server for tests and the benchmark.

initdb of a cluster in a temporary directory as the `postgres` OS user,
listening on a Unix socket in that directory only (no TCP port), trust for
the `postgres` role and scram-sha-256 for a role `audit` with a password (to
test authentication).  Stopped by stop() or at exit of a `with` block.

Two kinds of cluster: tuned for speed (the default, what the tests use: fsync
and full_page_writes off, large buffers), or stock=True: the settings exactly
as initdb, and so Debian's pg_createcluster, leave them (fsync,
synchronous_commit and full_page_writes on, shared_buffers 128MB, max_wal_size
1GB), for the benchmark's "as installed" server.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

PASSWORD = "s3cret-pw-not-for-logs"


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]))
    return dirs[-1] if dirs else None


def available():
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return pg_bindir() is not None and os.geteuid() == 0


class PostgresServer:
    """durable=True keeps synchronous_commit on: a COMMIT that returned
    survives a kill -9 of the server (what the fault tests rely on, as a
    production server would).  Off, the last commits can vanish in a crash.

    stock=True: no tuning at all, only the Unix socket (and the roles and
    pg_hba.conf above); durable is then implied."""

    # what a stock cluster is expected to show (settings() reads the real ones)
    STOCK = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
             "shared_buffers": "128MB", "max_wal_size": "1GB"}

    def __init__(self, durable=False, stock=False):
        self.durable = durable or stock
        self.stock = stock
        self.bindir = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="tcp-audit-pg-")
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.socket_dir = self.dir
        self.running = False

    def _as_postgres(self, args, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--"] + args,
                              capture_output=True, text=True, **kw)

    def start(self):
        if not os.path.exists(self.data):
            r = self._as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.data,
                                   "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                   "--no-sync"])
            if r.returncode:
                raise RuntimeError("initdb failed: " + r.stdout + r.stderr)
            with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
                f.write("local all audit scram-sha-256\nlocal all all trust\n")
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("listen_addresses = ''\nunix_socket_directories = '%s'\n"
                        % self.socket_dir)
                if not self.stock:
                    f.write("fsync = off\nsynchronous_commit = %s\nfull_page_writes = off\n"
                            "shared_buffers = 1GB\nmax_wal_size = 8GB\nwal_buffers = 64MB\n"
                            % ("on" if self.durable else "off"))
        r = self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                               self.log, "-w", "-t", "60", "start"])
        if r.returncode:
            raise RuntimeError("pg_ctl start failed: " + r.stdout + r.stderr + self.logtext())
        self.running = True
        if not getattr(self, "_roles", False):
            self.psql("postgres", "CREATE ROLE audit LOGIN PASSWORD '%s'" % PASSWORD)
            self._roles = True

    def stop(self, mode="fast"):
        if self.running:
            self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m",
                               mode, "-w", "stop"])
            self.running = False

    def kill9(self):
        """Kills the postmaster with SIGKILL (and so its backends)."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            pid = int(f.readline())
        os.kill(pid, 9)
        self.running = False
        subprocess.run(["pkill", "-9", "-u", "postgres", "-f", self.data])

    def logtext(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, db, user="postgres"):
        return {"PGHOST": self.socket_dir, "PGDATABASE": db, "PGUSER": user}

    def conninfo(self, db, user="postgres"):
        return "host=%s dbname=%s user=%s" % (self.socket_dir, db, user)

    def psql(self, db, sql):
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-v",
                            "ON_ERROR_STOP=1", "-h", self.socket_dir, "-U", "postgres",
                            "-d", db, "-c", sql], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout

    def psql_script(self, db, script, timeout=None):
        """Runs a psql script (several statements and backslash commands, such
        as \\timing) given as text on its stdin; returns its stdout."""
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-v",
                            "ON_ERROR_STOP=1", "-h", self.socket_dir, "-U", "postgres",
                            "-d", db, "-f", "-"], input=script, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError("psql: " + r.stderr)
        return r.stdout

    def settings(self, names=("fsync", "synchronous_commit", "full_page_writes",
                              "shared_buffers", "max_wal_size", "wal_buffers")):
        """The running server's values of these settings, as SHOW prints them."""
        return {n: self.psql("postgres", "SHOW %s" % n).strip() for n in names}

    def createdb(self, name, owner="postgres"):
        self.psql("postgres", "CREATE DATABASE %s OWNER %s" % (name, owner))

    def dropdb(self, name):
        self.psql("postgres", "DROP DATABASE IF EXISTS %s" % name)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
