"""Shared helpers for the end-to-end tests: run the real tcp-audit binary.

Every test script is a plain unittest module run by `meson test`, which sets
TCP_AUDIT_BIN (the binary in the build tree; run from there it loads the
plugins of the build tree) and TCP_AUDIT_BUILD_DIR.
"""
import json
import os
import signal
import subprocess
import tempfile
import time

BIN = os.environ.get("TCP_AUDIT_BIN", "")
BUILD_DIR = os.environ.get("TCP_AUDIT_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("TCP_AUDIT_SOURCE_DIR", "")


def run(args, input=None, timeout=60, env=None):
    """Runs tcp-audit to completion; returns CompletedProcess (text)."""
    return subprocess.run([BIN] + list(args), input=input, capture_output=True,
                          text=True, timeout=timeout, env=env)


class Running:
    """A tcp-audit process in the background.

    Waits until it logs that it has started (all plugins open, reading), so
    traffic made afterwards is captured.  stderr goes to a file (never a
    pipe that could fill up); stdout likewise unless stdout=PIPE-like given.
    """

    def __init__(self, args, env=None, start_timeout=30, wait_started=True):
        self.dir = tempfile.TemporaryDirectory(prefix="tcp-audit-test-")
        self.stderr_path = os.path.join(self.dir.name, "stderr")
        self.stdout_path = os.path.join(self.dir.name, "stdout")
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([BIN] + list(args), stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL,
                                     env=env)
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


def summary(stderr_text):
    """Parses the exit summary lines into a dict (see src/main.c)."""
    out = {}
    for line in stderr_text.splitlines():
        if line.startswith("tcp-audit: summary: "):
            for part in line[len("tcp-audit: summary: "):].split(", "):
                k, _, v = part.rpartition(" ")
                out[k] = int(v)
    return out
