"""A bounded libFuzzer run of one parser that takes outside input: no crash,
no hang, no leak, no undefined behaviour (ASan + UBSan), and the target's own
checks (round trips, bounds).  Arguments: the fuzz target and which parser it
is (options, replay-line, spool, verify; decoder, with the folder of recorded
trace pages as a third), which picks the seeds."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import FAILURE_LINES, SNAPSHOT_LINE, Running, fixture, run, sample_line, store_lines

TARGET, KIND = sys.argv[1], sys.argv[2]
PAGES = sys.argv[3] if len(sys.argv) > 3 else ""
SECONDS = int(os.environ.get("TCP_AUDIT_FUZZ_SECONDS", "20"))


def seeds_options():
    return [b"s=hello\nb=yes\ni=7\nz=4K\ne=cc\nu=-9", b"i=1001", b"z=1T\nz=12kib",
            b"e=a|b\nb=maybe", b"=x\nnokey", b"s=\nb=0\ni=-3\nz=1024"]


def seeds_replay_line():
    out = [sample_line(i).encode() for i in (1, 2, 77)]
    out += [l.encode() for l in store_lines()]
    out += [b'{"kind":"gap","time":"2026-11-25T00:00:00Z","stage":"kernel","lost":3}']
    out += [SNAPSHOT_LINE.encode()]
    out += [l.encode() for l in FAILURE_LINES]
    return out


def seeds_spool(tmp):
    """Real segments: events that a sink which was down left in the spool; this
    host's (compact records, format 2) and another host's (whole, format 1)."""
    other = os.path.join(tmp, "other.jsonl")
    with open(other, "w") as f:
        f.write("".join(sample_line(i) + "\n" for i in range(1, 21)))
    out, formats = [], set()
    for n, eventer in enumerate([[fixture("synthetic-eventer"), "-p", "count=20"],
                                 ["replay", "-p", "path=" + other]]):
        spool = os.path.join(tmp, "spool%d" % n)
        down = os.path.join(tmp, "down")
        open(down, "w").close()
        with Running(["--spool", spool, "--spool-size", "1M", "--stop-grace", "0",
                      "--event"] + eventer + ["--sink", fixture("faulty-sink"), "-p",
                      "path=" + os.path.join(tmp, "a"), "-p", "down_file=" + down]) as t:
            t.wait_for_log("is unavailable")
            t.stop(signal.SIGTERM)
        pos = b"00000000000000000000\n".ljust(24, b"\0")
        for name in sorted(os.listdir(spool)):
            if name.endswith(".spool"):
                with open(os.path.join(spool, name), "rb") as f:
                    data = f.read()
                formats.add(data[16])
                rec = 272 if data[16] == 1 else 184
                out.append(pos + data)
                out.append(b"00000000000000000005\n".ljust(24, b"\0") +
                           data[:64 + rec * 7 + 100])
    if formats != {1, 2}:
        raise AssertionError("no spool segment of each format to seed with")
    return out


def seeds_verify(tmp):
    """Real sealed archives, small: two runs of one key file (so the second
    names the first), batches of 3; and the verification key, for the target."""
    key = os.path.join(tmp, "seal.key")
    r = run(["seal-init", key])
    if r.returncode != 0:
        raise AssertionError(r.stderr)
    os.environ["TCP_AUDIT_FUZZ_VKEY"] = r.stdout.strip()
    path = os.path.join(tmp, "sealed.jsonl")
    for count in (7, 4):
        r = run(["--event", fixture("synthetic-eventer"), "-p", "count=%d" % count, "--sink",
                 "jsonl", "-p", "path=" + path, "--seal", key, "--batch-size", "3",
                 "--spool", "none"])
        if r.returncode != 0:
            raise AssertionError(r.stderr)
    with open(path, "rb") as f:
        data = f.read()
    lines = data.splitlines(keepends=True)
    first_seal = next(i for i, l in enumerate(lines) if l.startswith(b'{"kind":"seal"'))
    return [data, b"".join(lines[:first_seal + 1]), b"".join(lines[first_seal + 1:])]


def seeds_decoder():
    """The recorded trace pages; the target reads an 'L' first byte as the
    old tcp_set_state format."""
    out = []
    for name in sorted(os.listdir(PAGES)):
        if name.endswith(".page"):
            with open(os.path.join(PAGES, name), "rb") as f:
                data = f.read()
            out.append(b"L" + data[1:] if name.startswith("tcp_set_state") else data)
    return out


class Fuzz(unittest.TestCase):
    def test_survives_fuzzing(self):
        with tempfile.TemporaryDirectory() as tmp:
            corpus = os.path.join(tmp, "corpus")
            os.mkdir(corpus)
            make = globals()["seeds_" + KIND.replace("-", "_")]
            seeds = make(tmp) if KIND in ("spool", "verify") else make()  # (these run tcp-audit)
            for i, data in enumerate(seeds):
                with open(os.path.join(corpus, "seed%d" % i), "wb") as f:
                    f.write(data)
            r = subprocess.run([TARGET, "-max_total_time=%d" % SECONDS, "-max_len=%d" % (4096 if KIND == "decoder" else
                                                                 16384 if KIND == "verify" else 8192),
                                "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1",
                                corpus], capture_output=True, text=True, cwd=tmp,
                               env=dict(os.environ, TCP_AUDIT_PAGES=PAGES),
                               timeout=SECONDS + 120)
            tail = "\n".join(r.stderr.splitlines()[-25:])
            self.assertEqual(r.returncode, 0, tail)
            self.assertIn("Done", r.stderr, tail)


if __name__ == "__main__":
    tcpaudit.main()
