"""A server the tests run as a plain process in a folder of its own (ClickHouse,
ZooKeeper): started and waited for until ready(), stopped (or killed with -9)
and started again on the same folder, removed with it by cleanup()."""
import os
import shutil
import signal
import subprocess
import tempfile
import time


class ServerProcess:
    NAME = "server"
    LOGS = ("out.log",)  # files of its folder whose ends explain a failure

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.proc = None
        self.out = None

    def spawn(self, args, ready, timeout):
        """Runs args (output into out.log) until ready() is true; returns self."""
        self.out = open(os.path.join(self.dir, "out.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.NAME, self.log_tail()))
            if ready():
                return self
            time.sleep(0.1)
        raise RuntimeError("%s did not start: %s" % (self.NAME, self.log_tail()))

    def log_tail(self):
        text = ""
        for name in self.LOGS:
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()[-2000:]
            except OSError:
                pass
        return text

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.out:
            self.out.close()
            self.out = None

    def kill(self):
        self.stop(signal.SIGKILL)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
