"""The replay eventer and the jsonl sink: byte-for-byte round trips, JSON
that stays valid whatever a command name holds, and malformed input."""
import json
import os
import subprocess
import tempfile
import unittest

import tcpaudit
from tcpaudit import BIN, FAILURE_LINES, SNAPSHOT_LINE, reset_lines, run, sample_line, summary

# command names as the kernel may hold them: quotes, backslashes, control
# characters, valid and invalid UTF-8 (written \u0080-\u00ff, see README)
HOSTILE_COMMS = [
    r'\"quote\"', r'back\\slash', r'\u0001\u001f\n\t', r'\u007f', r'caf\u00e9',
    '"caf\u00e9"'.replace('"', ''), r'\u00ff\u00fe', r'x\u00c3', r'/bin/\"sh\"',
]


def lines_with_everything():
    out = [sample_line(1)]
    out.append(sample_line(2, family='"inet6"', saddr='"::1"', daddr='"fe80::1:2"'))
    out.append(sample_line(3, family='"inet6"', saddr='"::ffff:127.0.0.1"',
                           daddr='"2001:db8::1"'))
    for i, comm in enumerate(HOSTILE_COMMS):
        out.append(sample_line(10 + i, comm_on_cpu='"%s"' % comm, owner_comm='"%s"' % comm))
    # optional fields absent: what an eventer that cannot know them writes
    out.append(sample_line(30, owner_pid=None, owner_uid=None, owner_comm=None,
                           sock_cookie=None, sock_inode=None, sock_uid=None, sock_gid=None,
                           sock_state=None, netns=None, cgroup_id=None, tid_on_cpu=None,
                           ktime=None))
    for st in ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
               "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT", "CLOSED", "NEW-SYN-RECV"]:
        out.append(sample_line(40, new_state='"%s"' % st))
    for ss in ["FREE", "UNCONNECTED", "CONNECTED", "DISCONNECTING"]:
        out.append(sample_line(50, sock_state='"%s"' % ss))
    out.append('{"time":"2026-11-25T01:53:08.000000000Z","host":"host-a","kind":"gap",'
               '"stage":"kernel","lost":12345,"ktime":99}')
    out.append(sample_line(60, sport="0", dport="65535", sock_cookie="18446744073709551615"))
    out.append(SNAPSHOT_LINE)
    out += FAILURE_LINES + reset_lines()
    # the capturing machine's id: on every kind of record
    with_machine = lambda l: l.replace('"host":"host-a",',
                                       '"host":"host-a","machine":"00ff00ff00ff00ff",')
    out += [with_machine(sample_line(70)), with_machine(SNAPSHOT_LINE),
            with_machine(reset_lines()[0]),
            '{"time":"2026-11-25T01:53:08.000000000Z","host":"host-a",'
            '"machine":"ffffffffffffffff","kind":"gap","stage":"queue","lost":1}']
    return out


class RoundTrip(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.inp = os.path.join(self.tmp.name, "in.jsonl")
        self.out = os.path.join(self.tmp.name, "out.jsonl")

    def tearDown(self):
        self.tmp.cleanup()

    def write_input(self, lines):
        with open(self.inp, "w") as f:
            f.write("".join(l + "\n" for l in lines))

    def test_file_to_file_byte_for_byte(self):
        self.write_input(lines_with_everything())
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.inp, "rb") as a, open(self.out, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_stdin_to_stdout_byte_for_byte(self):
        data = "".join(l + "\n" for l in lines_with_everything()) * 200
        r = subprocess.run([BIN, "--event", "replay", "--sink", "jsonl"], input=data.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data.encode())

    def test_output_is_valid_json_and_decodes_right(self):
        self.write_input(lines_with_everything())
        run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
             "path=" + self.out])
        with open(self.out, "rb") as f:
            raw = f.read()
        raw.decode("utf-8")  # strictly valid UTF-8
        objs = [json.loads(l) for l in raw.decode().splitlines()]
        comms = [o["comm_on_cpu"] for o in objs if 10 <= o.get("seq", 0) < 30]
        self.assertEqual(comms[0], '"quote"')
        self.assertEqual(comms[1], "back\\slash")
        self.assertEqual(comms[2], "\x01\x1f\n\t")
        self.assertEqual(objs[2]["saddr"], "::ffff:127.0.0.1")
        self.assertEqual(objs[1]["family"], "inet6")
        for o in objs:
            if o.get("kind") != "gap":
                self.assertRegex(o["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")

    def test_console_shows_every_kind(self):
        self.write_input([sample_line(1), SNAPSHOT_LINE,
                          '{"time":"2026-11-25T01:53:08.000000000Z","kind":"gap",'
                          '"stage":"queue","lost":7}'] + FAILURE_LINES)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "console"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 7, r.stdout)
        self.assertEqual(lines[3], "2026-11-25 01:53:09.000000  tcp4  127.0.0.2:8080 -> "
                                   "127.0.0.1:40001  RESET sent (NO_SOCKET)  (on cpu 100 curl)")
        self.assertEqual(lines[4], "2026-11-25 01:53:09.000000  tcp4  127.0.0.1:40001 -> "
                                   "127.0.0.2:8080  RESET received in SYN-SENT  owner 100 curl  "
                                   "(on cpu 100 curl)")
        self.assertEqual(lines[5], "2026-11-25 01:53:09.000000  tcp4  127.0.0.1:40001 -> "
                                   "127.0.0.2:8080  SYN-SENT -> CLOSED (ECONNREFUSED)  owner 100 "
                                   "curl  (on cpu 100 curl)")
        self.assertEqual(lines[6], "2026-11-25 01:53:09.000000  tcp6  [::1]:40002 -> [::1]:443  "
                                   "RESET sent in CLOSED (TCP_ABORT_ON_LINGER)  owner 100 curl  "
                                   "(on cpu 100 curl)")
        lines = lines[:3]
        self.assertIn(" -> ", lines[0])
        self.assertIn("(on cpu ", lines[0])
        self.assertEqual(lines[1], "2026-11-25 01:53:06.000000  tcp6  [::1]:8443 -> [::]:0  "
                                   "open at start: LISTEN  owner 77 nginx")
        self.assertEqual(lines[2], "2026-11-25 01:53:08.000000  GAP: 7 events lost (queue)")

    def test_appends_to_existing_file(self):
        self.write_input([sample_line(1)])
        for _ in range(2):
            r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                     "path=" + self.out])
            self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), (sample_line(1) + "\n") * 2)

    def test_a_large_archive_does_not_stay_in_the_page_cache(self):
        # ~100 MB of lines: every one written, and the file's pages let go of as it
        # grows, 8 MiB at a time once written (at most the last two windows stay)
        n = 300000
        r = run(["--event", tcpaudit.fixture("synthetic-eventer"), "-p", "count=%d" % n,
                 "--spool", "none", "--sink", "jsonl", "-p", "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        size = os.path.getsize(self.out)
        self.assertGreater(size, 64 << 20)
        cached = int(subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                                     self.out], capture_output=True, text=True,
                                    check=True).stdout)
        self.assertLessEqual(cached, 3 * (8 << 20), "%d of %d bytes cached" % (cached, size))
        with open(self.out, "rb") as f:  # (reading it caches it)
            self.assertEqual(sum(1 for _ in f), n)

    def test_a_torn_last_line_is_cut_before_appending(self):
        # what kill -9 in the middle of a write leaves
        with open(self.out, "w") as f:
            f.write(sample_line(1) + "\n" + sample_line(2)[:40])
        self.write_input([sample_line(3)])
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ended in a line cut short (40 bytes", r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), sample_line(1) + "\n" + sample_line(3) + "\n")
        # a torn piece longer than what is read back at a time
        with open(self.out, "w") as f:
            f.write(sample_line(1) + "\n" + "x" * 10000)
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), sample_line(1) + "\n" + sample_line(3) + "\n")
        # only a torn piece: nothing of it is left
        with open(self.out, "w") as f:
            f.write(sample_line(2)[:40])
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), sample_line(3) + "\n")

    def test_normalises_other_valid_json(self):
        # keys in another order, spaces, a shorter fraction, an offset, \/ escapes
        self.write_input(['  { "dport" : 80, "sport":1, "saddr":"10.0.0.1", "daddr":"10.0.0.2",'
                          '"family":"inet", "old_state":"LISTEN","new_state":"CLOSED",'
                          '"pid_on_cpu":0,"comm_on_cpu":"a\\/b","host":"h",'
                          '"time":"2026-11-25T02:53:07.5+01:00"}  '])
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(),
                             '{"time":"2026-11-25T01:53:07.500000000Z","host":"h",'
                             '"family":"inet","saddr":"10.0.0.1","sport":1,'
                             '"daddr":"10.0.0.2","dport":80,"old_state":"LISTEN",'
                             '"new_state":"CLOSED","pid_on_cpu":0,"comm_on_cpu":"a/b"}\n')


class Malformed(unittest.TestCase):
    CASES = [
        ("not json", "expected a JSON object"),
        ('{"time":"2026-11-25T01:53:07Z"}', 'missing key "family"'),
        (sample_line(1, dport="70000"), "dport: 70000 is out of range"),
        (sample_line(1, saddr='"999.1.1.1"'), 'saddr: "999.1.1.1" is not an IPv4 address'),
        (sample_line(1, family='"inet6"'), 'is not an IPv6 address'),
        (sample_line(1, new_state='"OPEN"'), 'new_state: unknown value "OPEN"'),
        (sample_line(1, host='"h","machine":"12345"'), 'machine: "12345" is not 16 hex digits'),
        (sample_line(1, host='"h","machine":"0123456789abcdeg"'), "is not 16 hex digits"),
        (sample_line(1, time='"yesterday"'), 'time: "yesterday" is not an RFC 3339 time'),
        (sample_line(1, comm_on_cpu='"0123456789abcdefg"'), "comm_on_cpu: longer than 15"),
        (sample_line(1, sport="-1"), "sport: expected a non-negative integer"),
        (sample_line(1)[:-1], "expected ',' or '}'"),
        (sample_line(1) + "x", "trailing characters"),
        (sample_line(1).replace('"seq"', '"sequence"'), 'unknown key "sequence"'),
        (sample_line(1).replace('{', '{"seq":1,'), 'duplicate key "seq"'),
        (sample_line(1, owner_uid=None), '"owner_pid", "owner_uid" and "owner_comm" go together'),
        (sample_line(1, comm_on_cpu='"\\ud800"'), "unpaired surrogate"),
    ]

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.inp = os.path.join(self.tmp.name, "in.jsonl")
        self.out = os.path.join(self.tmp.name, "out.jsonl")

    def tearDown(self):
        self.tmp.cleanup()

    def test_each_malformed_line_stops_the_run_naming_the_line(self):
        for bad, reason in self.CASES:
            with self.subTest(bad=bad):
                with open(self.inp, "w") as f:
                    f.write(sample_line(1) + "\n\n" + sample_line(2) + "\n" + bad + "\n" +
                            sample_line(4) + "\n")
                if os.path.exists(self.out):
                    os.unlink(self.out)
                r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl",
                         "-p", "path=" + self.out])
                self.assertEqual(r.returncode, 1, r.stderr)
                line = [l for l in r.stderr.splitlines() if "[event:replay] error:" in l]
                self.assertEqual(len(line), 1, r.stderr)
                self.assertIn("error: %s:4: " % self.inp, line[0])
                self.assertIn(reason, line[0])
                with open(self.out) as f:  # what came before is delivered
                    self.assertEqual(f.read(), sample_line(1) + "\n" + sample_line(2) + "\n")

    def test_skip_counts_instead(self):
        lines = [sample_line(1)] + [bad for bad, _ in self.CASES] + [sample_line(2)]
        with open(self.inp, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = run(["--event", "replay", "-p", "path=" + self.inp, "-p", "on_error=skip",
                 "--sink", "jsonl", "-p", "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary(r.stderr)["skipped input"], len(self.CASES))
        self.assertEqual(r.stderr.count("skipped:"), 10)  # then only counted
        with open(self.out) as f:
            self.assertEqual(f.read(), sample_line(1) + "\n" + sample_line(2) + "\n")

    def test_missing_input_file(self):
        r = run(["--event", "replay", "-p", "path=/nonexistent.jsonl", "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot open /nonexistent.jsonl", r.stderr)

    def test_last_line_without_newline(self):
        with open(self.inp, "w") as f:
            f.write(sample_line(1) + "\n" + sample_line(2))
        r = run(["--event", "replay", "-p", "path=" + self.inp, "--sink", "jsonl", "-p",
                 "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), sample_line(1) + "\n" + sample_line(2) + "\n")


if __name__ == "__main__":
    tcpaudit.main()
