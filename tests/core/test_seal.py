"""Sealing (--seal KEYFILE, tcp-audit seal-init, tcp-audit verify) with the
jsonl sink: a sealed archive verifies; each kind of tampering is found and
named; a key file read later cannot forge what was sealed before; a kill -9
and a restart leave a chain that verifies with the crash recorded.  The
events come from the synthetic eventer; the keys and archives are real files.

The test re-derives keys and MACs in Python (hashlib's BLAKE2b is the same
function as libsodium's crypto_generichash; Poly1305 is written out below from
RFC 8439 and checked against its test vector) to forge seals the way an
attacker holding the key file would; crc-forge (crc-forge.c) alters an event
and keeps its unkeyed fingerprint, as an attacker can."""
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
import unittest

import tcpaudit
from tcpaudit import Running, fixture, run, summary, wait_until

SYNTH = fixture("synthetic-eventer")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def step(key):
    return hashlib.blake2b(b"tcp-audit seal key step" + key, digest_size=32).digest()


def poly1305(key, data):
    """RFC 8439's Poly1305 (libsodium's crypto_onetimeauth)."""
    r = int.from_bytes(key[:16], "little") & 0x0ffffffc0ffffffc0ffffffc0fffffff
    s = int.from_bytes(key[16:32], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(data), 16):
        acc = (acc + int.from_bytes(data[i:i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def mac(key, body, fmt=None):
    """A seal's MAC from its text before ',"mac":' (seal.h): of the text up to
    and with '"fp":"', then the fingerprints' digits as bytes; formats 3 and
    4: Poly1305 under a one-time key, BLAKE2b of the text under key; format
    2: BLAKE2b under key.  fmt: the body's own "v" unless given."""
    fmt = fmt or json.loads(body + "}")["v"]
    head, fps = body.split('"fp":"', 1)
    head = (head + '"fp":"').encode()
    data = head + bytes.fromhex(fps.rstrip('"'))
    if fmt == 2:
        return hashlib.blake2b(data, digest_size=32, key=key).hexdigest()
    otk = hashlib.blake2b(b"tcp-audit seal mac" + head, digest_size=32, key=key).digest()
    return poly1305(otk, data).hex()


def split_seal(line):
    """A seal line's text before ',"mac":' and its fields."""
    body = line[:line.rindex(',"mac":"')]
    return body, json.loads(line)


def reseal(lines, first, key_at, fmt=None):
    """Re-MACs the seal at lines[first] and every later seal of its run (each
    one's prev then changes), with key_at(epoch) -> key: what someone holding
    such keys would do to make an edit before lines[first] pass.  With fmt,
    the seals are rewritten in that format (the first one's prev as zeros)."""
    run = json.loads(lines[first])["run"]
    prev = None
    for i in range(first, len(lines)):
        if '"kind":"seal"' not in lines[i]:
            continue
        body, s = split_seal(lines[i])
        if s["run"] != run:
            continue
        if fmt:
            body = body.replace('"v":%d,' % s["v"], '"v":%d,' % fmt, 1)
            if prev is None:
                prev = "0" * (64 if fmt == 2 else 32)
        if prev is not None:
            body = body.replace('"prev":"%s"' % s["prev"], '"prev":"%s"' % prev)
        prev = mac(key_at(s["epoch"]), body)
        lines[i] = body + ',"mac":"%s"}' % prev


def key_from(k0):
    """key_at(epoch) for reseal from the verification key's k(0)."""
    def at(epoch):
        k = k0
        for _ in range(epoch):
            k = step(k)
        return k
    return at


class Seal(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.key = os.path.join(self.d, "seal.key")
        self.out = os.path.join(self.d, "events.jsonl")

    def tearDown(self):
        self.tmp.cleanup()

    def seal_init(self, *args):
        r = run(["seal-init", self.key] + list(args))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.vkey = r.stdout.strip()
        return self.vkey

    def capture(self, count=3000, batch=500, extra=()):
        r = run(["--event", SYNTH, "-p", "count=%d" % count, "--sink", "jsonl",
                 "-p", "path=" + self.out, "--seal", self.key, "--batch-size", str(batch),
                 "--spool", "none"] + list(extra))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.stderr = r.stderr
        with open(self.out) as f:
            return f.read().splitlines()

    def verify(self, lines=None, expect=0):
        path = self.out
        if lines is not None:
            path = os.path.join(self.d, "tampered.jsonl")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
        r = run(["verify", path, "--verify-key", self.vkey])
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        last = [l.split(":")[0] for l in r.stdout.splitlines()[-1:]]
        self.assertEqual(last, ["FAILED" if expect else "OK"], r.stdout + r.stderr)
        return r.stdout

    def seal_lines(self, lines):
        return [i for i, l in enumerate(lines) if l.startswith('{"kind":"seal",')]

    def test_seal_init(self):
        vkey = self.seal_init("--interval", "60")
        self.assertRegex(vkey, r"^tav1-[0-9a-f]{64}-\d+-60$")
        self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o600)
        with open(self.key) as f:
            text = f.read()
        k0 = vkey.split("-")[1]
        self.assertIn("key " + k0, text)  # epoch 0: the file holds k(0)
        # never over an existing file, and one-line errors for the mistakes
        r = run(["seal-init", self.key])
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists", r.stderr)
        for args, says in ((["seal-init"], "give the key file"),
                           (["seal-init", "x", "--interval", "0"], "--interval"),
                           (["verify", self.out], "--verify-key"),
                           (["verify", self.out, "--verify-key", "nope"], "not a verification key"),
                           (["--seal", self.key, "--event", SYNTH, "--sink", fixture("faulty-sink"),
                             "-p", "path=" + self.out], "cannot store seals")):
            r = run(args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(says, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_sealed_archive_verifies_and_replays(self):
        self.seal_init()
        lines = self.capture()
        seals = self.seal_lines(lines)
        self.assertEqual(len(lines) - len(seals), 3000)
        self.assertEqual(len(seals), 3000 // 500 + 1)  # one a batch, and the closing one
        # the summary counts them, with the CPU time they took
        self.assertEqual(summary(self.stderr)["sink jsonl seals"], len(seals))
        self.assertRegex(self.stderr, r"sink jsonl: written 3000, undelivered 0, seals 7 "
                                      r"\(\d+\.\d{3} s CPU\)\n")
        last = json.loads(lines[-1])
        self.assertTrue(last["last"])
        self.assertEqual(last["count"], 0)
        out = self.verify()
        self.assertIn("3000 events verified in 7 seals of 1 run", out)
        self.assertTrue(out.endswith("OK\n"), out)
        # the key moved to no later epoch, and the run is recorded as closed
        with open(self.key) as f:
            self.assertIn("run %s closed" % last["run"], f.read())
        # a sealed file replays as its events alone
        copy = os.path.join(self.d, "copy.jsonl")
        r = run(["--event", "replay", "-p", "path=" + self.out, "--sink", "jsonl",
                 "-p", "path=" + copy])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(copy) as f:
            self.assertEqual(f.read().splitlines(), [l for l in lines if '"kind":"seal"' not in l])
        self.assertIn("sink jsonl: written 3000, undelivered 0\n", r.stderr)  # not sealed

    def test_a_fleet_archive_verifies_with_every_host_key(self):
        """Two hosts, each sealing with its own key, into one archive (here two
        jsonl files joined): verify takes both keys, names each run's; with one
        key the other host's seals are not taken."""
        vkey_a = self.seal_init()
        lines = self.capture(count=1000)
        os.rename(self.key, self.key + ".a")
        os.unlink(self.out)
        vkey_b = self.seal_init()
        lines += self.capture(count=1500, extra=["--host", "host-b"])
        path = os.path.join(self.d, "fleet.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = run(["verify", path, "--verify-key", vkey_a, "--verify-key", vkey_b])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2500 events verified in 7 seals of 2 runs", r.stdout)
        self.assertRegex(r.stdout, r"run [0-9a-f]{32} \(--verify-key #1\): 3 seals of 1000 events")
        self.assertRegex(r.stdout, r"run [0-9a-f]{32} \(--verify-key #2\): 4 seals of 1500 events")
        r = run(["verify", path, "--verify-key", vkey_b])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("its MAC is wrong: the seal was forged or altered", r.stdout)
        self.assertIn("1500 events verified", r.stdout)
        r = run(["verify", path, "--verify-key", vkey_b, "--verify-key", vkey_b])
        self.assertIn("its MAC is wrong under every key given", r.stdout)
        # keys bound to their hosts: each run under its host's; swapped, every event is named
        here = socket.gethostname()
        r = run(["verify", path, "--verify-key", here + "=" + vkey_a,
                 "--verify-key", "host-b=" + vkey_b])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("(the key of host %s): 3 seals of 1000 events" % here, r.stdout)
        self.assertIn("(the key of host host-b): 4 seals of 1500 events", r.stdout)
        r = run(["verify", path, "--verify-key", "host-b=" + vkey_a,
                 "--verify-key", "host-b=" + vkey_b])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("an event of host %s sealed under the key given for "
                                        "host host-b" % here), 1000, r.stdout[:2000])
        self.assertIn("FAILED: 1000 problems", r.stdout)
        r = run(["verify", path, "--verify-key", "=" + vkey_a])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--verify-key HOST=KEY: a host name of 1 to 79 bytes", r.stderr)

    def test_tampering_is_named(self):
        self.seal_init()
        lines = self.capture()
        seals = self.seal_lines(lines)
        first_seal = json.loads(lines[seals[0]])

        # one event deleted: named by its place in its seal
        t = lines[:]
        del t[4]
        out = self.verify(t, 1)
        self.assertIn("event 5 of seal %s #0" % first_seal["run"][:8], out)
        self.assertIn("missing (deleted)", out)

        # one byte of one address changed
        t = lines[:]
        e = json.loads(t[19])
        self.assertIn('"saddr":"%s"' % e["saddr"], t[19])
        t[19] = t[19].replace('"saddr":"::1"', '"saddr":"::2"', 1)
        self.assertNotEqual(t[19], lines[19])
        out = self.verify(t, 1)
        self.assertIn("line 20: event altered (it was event 20 of seal", out)

        # a forged event inserted (a copy of another with its port changed)
        t = lines[:]
        e = json.loads(t[29])
        e["dport"] = 4444
        t.insert(40, json.dumps(e, separators=(",", ":")))
        out = self.verify(t, 1)
        self.assertIn("line 41: an event no seal covers", out)

        # a seal dropped: the seal and the batch it covered are named
        t = lines[:]
        del t[seals[2]]
        out = self.verify(t, 1)
        self.assertIn("seal #2 of run %s is missing" % first_seal["run"][:8], out)
        self.assertIn("lines %d to %d: events no seal covers" % (seals[1] + 2, seals[2]), out)

        # the end cut off: the missing closing seal, and what is left unsealed
        t = lines[:seals[4] + 200]
        out = self.verify(t, 1)
        self.assertIn("has no closing seal after #4", out)
        self.assertIn("lines %d to %d: events no seal covers" % (seals[4] + 2, seals[4] + 200),
                      out)

        # a seal claiming an epoch far in the future (verify must not walk the key there)
        t = lines[:]
        t[seals[1]] = t[seals[1]].replace('"epoch":%d,' % first_seal["epoch"],
                                          '"epoch":99999999999999,', 1)
        out = self.verify(t, 1)
        self.assertIn("its epoch 99999999999999 lies in the future", out)

        # a seal's text changed (a fingerprint dropped to hide a deletion) without its key
        t = lines[:]
        body, s = split_seal(t[seals[0]])
        t[seals[0]] = body.replace('"count":500', '"count":499').replace(
            '"fp":"' + s["fp"], '"fp":"' + s["fp"][8:]) + ',"mac":"%s"}' % s["mac"]
        del t[0]
        out = self.verify(t, 1)
        self.assertIn("its MAC is wrong", out)

        # the MAC covers the fingerprints as bytes: their digits written another
        # way (upper case) are a damaged seal, not the same seal
        t = lines[:]
        t[seals[0]] = t[seals[0]].replace('"fp":"' + s["fp"], '"fp":"' + s["fp"].upper())
        self.assertNotEqual(t[seals[0]], lines[seals[0]])
        out = self.verify(t, 1)
        self.assertIn("line %d: a damaged seal (its fingerprints)" % (seals[0] + 1), out)

        # and the body's tags: one digit of one changed
        t = lines[:]
        tag = s["body"][32:64]
        t[seals[0]] = t[seals[0]].replace(tag, tag[:-1] + ("0" if tag[-1] != "0" else "1"), 1)
        out = self.verify(t, 1)
        self.assertIn("its MAC is wrong", out)

        # a seal of another format is named, not misread
        t = lines[:]
        self.assertIn('"v":4,', t[seals[1]])
        t[seals[1]] = t[seals[1]].replace('"v":4,', '"v":1,', 1)
        out = self.verify(t, 1)
        self.assertIn("line %d: a seal of format 1, which this tcp-audit does not read "
                      "(it reads formats 2 to 4)" % (seals[1] + 1), out)

    def test_an_alteration_that_keeps_the_fingerprint_is_caught(self):
        """The fingerprints only name events (a CRC-32C, which anyone can make
        come out the same); the body's tags prove them.  An event altered so
        that its fingerprint stays: its chunk of 64 is named, and the other
        chunks still verify."""
        self.seal_init()
        lines = self.capture(count=1000)
        seals = self.seal_lines(lines)
        self.assertEqual(len(json.loads(lines[seals[0]])["body"]), 32 * 8)  # 500 events: 8 tags
        t = lines[:]
        r = subprocess.run([os.environ["TCP_AUDIT_CRC_FORGE"]], input=t[69] + "\n",
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        forged = r.stdout.strip()
        old, new = json.loads(t[69]), json.loads(forged)
        self.assertNotEqual(old["daddr"], new["daddr"])
        t[69] = forged
        out = self.verify(t, 1)
        # line 70 is event 70 of the first seal: in its second chunk (65 to 128)
        self.assertIn("lines 65 to 128: events 65 to 128 of seal %s #0 (line %d) altered behind "
                      "unchanged fingerprints (its tag 2 is wrong): not verified"
                      % (json.loads(lines[seals[0]])["run"][:8], seals[0] + 1), out)
        self.assertNotIn("event altered (it was", out)  # the fingerprint did not tell
        self.assertIn("936 events verified", out)  # every other chunk: 1000 - 64
        self.assertIn("FAILED: 1 problem\n", out)

        # an event deleted: named by its fingerprint; the rest of its chunk unproven
        t = lines[:]
        del t[69]
        out = self.verify(t, 1)
        self.assertIn("event 70 of seal", out)
        self.assertIn("63 other events of seal", out)
        self.assertIn("(of its events 65 to 128, which its tag 2 covers) match their "
                      "fingerprints but are not proven without the missing or altered one", out)
        self.assertIn("936 events verified", out)

    def test_poly1305_as_rfc_8439_gives_it(self):
        # the test's own Poly1305 (which forges format 3 seals) against RFC 8439 2.5.2
        key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
        self.assertEqual(poly1305(key, b"Cryptographic Forum Research Group").hex(),
                         "a8061dc1305136c6c22b8baf0c0127a9")

    def test_archives_of_seal_formats_2_and_3_still_verify(self):
        """Seals of format 3 (builds of 2026-12-03 to -05: SipHash fingerprints,
        no body; data/seal-v3.jsonl, 150 synthetic events sealed by such a
        build) verify, and so do those of format 2 (builds of 2026-12-02 and
        -03: a BLAKE2b MAC of 64 digits; the same archive MACed again as format
        2 did: the fingerprints are the same in both); an event altered under
        either is named."""
        with open(os.path.join(DATA, "seal-v3.vkey")) as f:
            self.vkey = f.read().strip()
        with open(os.path.join(DATA, "seal-v3.jsonl")) as f:
            v3 = f.read().splitlines()
        seals = self.seal_lines(v3)
        self.assertEqual([json.loads(v3[i])["v"] for i in seals], [3] * 4)
        out = self.verify(v3, 0)
        self.assertIn("150 events verified in 4 seals of 1 run", out)
        t = v3[:]
        self.assertIn('"daddr":"::1"', t[7])
        t[7] = t[7].replace('"daddr":"::1"', '"daddr":"::2"', 1)
        out = self.verify(t, 1)
        self.assertIn("line 8: event altered (it was event 8 of seal", out)

        old = v3[:]
        reseal(old, seals[0], key_from(bytes.fromhex(self.vkey.split("-")[1])), fmt=2)
        s = json.loads(old[seals[1]])
        self.assertEqual((s["v"], len(s["mac"]), len(s["prev"])), (2, 64, 64))
        out = self.verify(old, 0)
        self.assertIn("150 events verified in 4 seals of 1 run", out)
        # the chain is checked in format 2 too: a seal's prev changed is named
        t = old[:]
        t[seals[1]] = t[seals[1]].replace('"prev":"%s"' % s["prev"], '"prev":"%s"' % ("0" * 64))
        out = self.verify(t, 1)
        self.assertIn("its MAC is wrong", out)
        t = old[:]
        t[7] = t[7].replace('"daddr":"::1"', '"daddr":"::2"', 1)
        out = self.verify(t, 1)
        self.assertIn("line 8: event altered (it was event 8 of seal", out)
        # and the MAC is a format's own: format 3's MAC under "v":2 is wrong
        t = v3[:]
        t[seals[0]] = t[seals[0]].replace('"v":3,', '"v":2,', 1)
        out = self.verify(t, 1)
        self.assertIn("a damaged seal (fields missing)", out)

    def test_sqlite_archive_made_before_the_machine_column(self):
        # events with no machine (replayed), in a file as builds before the column made it
        self.seal_init()
        inp = os.path.join(self.d, "in.jsonl")
        with open(inp, "w") as f:
            f.write("".join(tcpaudit.sample_line(i) + "\n" for i in range(1, 101)))
        db = os.path.join(self.d, "old.db")
        r = run(["--event", "replay", "-p", "path=" + inp, "--sink", "sqlite", "-p",
                 "path=" + db, "--seal", self.key, "--batch-size", "40"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.verify_db(db, "ALTER TABLE tcp_audit_events DROP COLUMN machine", 0)
        self.assertIn("100 events verified in 4 seals", out)

    def sqlite_capture(self, count=3000, batch=500):
        db = os.path.join(self.d, "events.db")
        r = run(["--event", SYNTH, "-p", "count=%d" % count, "--sink", "sqlite",
                 "-p", "path=" + db, "--seal", self.key, "--batch-size", str(batch),
                 "--spool", "none"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return db

    def verify_db(self, db, edit, expect):
        """A copy of db changed by the SQL edit, verified."""
        copy = os.path.join(self.d, "tampered.db")
        shutil.copyfile(db, copy)
        if edit:
            con = sqlite3.connect(copy)
            con.executescript(edit)
            con.commit()
            con.close()
        r = run(["verify", copy, "--verify-key", self.vkey])
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        last = [l.split(":")[0] for l in r.stdout.splitlines()[-1:]]
        self.assertEqual(last, ["FAILED" if expect else "OK"], r.stdout + r.stderr)
        return r.stdout

    def test_sqlite_archive_verifies_and_tampering_is_named(self):
        self.seal_init()
        db = self.sqlite_capture()
        con = sqlite3.connect(db)
        seals = con.execute("SELECT run, idx, count FROM tcp_audit_seals ORDER BY idx").fetchall()
        con.close()
        self.assertEqual([(i, c) for _, i, c in seals], [(i, 500) for i in range(6)] + [(6, 0)])
        run_id = seals[0][0][:8]
        out = self.verify_db(db, None, 0)
        self.assertIn("3000 events verified in 7 seals of 1 run", out)
        # one row deleted
        out = self.verify_db(db, "DELETE FROM tcp_audit_events WHERE rowid = 5", 1)
        self.assertIn("event 5 of seal %s #0 (seal row 1) is missing (deleted)" % run_id, out)
        # one byte of one address
        out = self.verify_db(db, "UPDATE tcp_audit_events SET saddr = '::2' WHERE rowid = 20", 1)
        self.assertIn("row 20: event altered (it was event 20 of seal %s #0" % run_id, out)
        # the machine of one (the synthetic events are this machine's: it has an id or none)
        out = self.verify_db(db, "UPDATE tcp_audit_events SET machine = "
                                 "CASE WHEN machine IS NULL THEN '0123456789abcdef' END"
                                 " WHERE rowid = 21", 1)
        self.assertIn("row 21: event altered (it was event 21 of seal %s #0" % run_id, out)
        # a forged row (another's copy, another port and uid)
        out = self.verify_db(db, "INSERT INTO tcp_audit_events SELECT 'f' || substr(uid, 2), "
                                 "time_ns, kind, host, family, saddr, daddr, sport, 4444, "
                                 "old_state, new_state, pid_on_cpu, tid_on_cpu, comm_on_cpu, "
                                 "owner_pid, owner_uid, owner_comm, sock_cookie, sock_inode, "
                                 "sock_uid, sock_gid, sock_state, netns, cgroup_id, seq, ktime, "
                                 "gap_stage, gap_lost, reset_direction, reset_reason, error, "
                                 "machine FROM tcp_audit_events WHERE rowid = 30", 1)
        self.assertIn("row 3001: an event no seal covers", out)
        # a seal dropped
        out = self.verify_db(db, "DELETE FROM tcp_audit_seals WHERE idx = 2", 1)
        self.assertIn("seal #2 of run %s is missing" % run_id, out)
        self.assertIn("rows 1001 to 1500: events no seal covers", out)
        # the end cut off
        out = self.verify_db(db, "DELETE FROM tcp_audit_seals WHERE idx >= 5;"
                                 "DELETE FROM tcp_audit_events WHERE rowid > 2600", 1)
        self.assertIn("has no closing seal after #4", out)
        self.assertIn("rows 2501 to 2600: events no seal covers", out)

    def test_a_key_file_read_later_cannot_forge_earlier_seals(self):
        vkey = self.seal_init("--interval", "1")
        k0 = bytes.fromhex(vkey.split("-")[1])
        lines = self.capture()
        seals = self.seal_lines(lines)
        epoch0 = json.loads(lines[seals[0]])["epoch"]
        # time passes; the next run moves the key file on, as any run does
        time.sleep(2.5)
        later = os.path.join(self.d, "later.jsonl")
        r = run(["--event", SYNTH, "-p", "count=10", "--sink", "jsonl", "-p", "path=" + later,
                 "--seal", self.key, "--spool", "none"])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.key) as f:
            fields = dict(l.split(" ", 1) for l in f.read().splitlines() if " " in l)
        stolen_epoch = int(fields["epoch"])
        stolen = bytes.fromhex(fields["key"].strip())
        self.assertGreater(stolen_epoch, epoch0)
        k = k0
        for _ in range(stolen_epoch):
            k = step(k)
        self.assertEqual(stolen, k)  # the file holds k(now) and nothing older

        def from_stolen(epoch):  # the best the thief has: its key, stepped on
            k = stolen
            for _ in range(max(epoch - stolen_epoch, 0)):
                k = step(k)
            return k

        # the forgery: the last batch cut off and a closing seal made for the
        # batch before it, so that the cut reads as a clean stop
        self.assertEqual(len(seals), 7)  # 6 batches of 500 and the closing seal
        forged = lines[:seals[4] + 1]
        body, s = split_seal(lines[seals[6]])
        prev = json.loads(lines[seals[4]])["mac"]
        body = body.replace('"index":6,', '"index":5,').replace(
            '"prev":"%s"' % s["prev"], '"prev":"%s"' % prev)
        forged.append(body + ',"mac":"x"}')
        # with k(0) (kept off the host) the forgery would pass: the method is right
        control = forged[:]
        reseal(control, len(forged) - 1, key_from(k0))
        out = self.verify(control, 0)
        self.assertIn("2500 events verified in 6 seals", out)
        # with the key file's key it does not, whatever epoch it claims
        attempt = forged[:]
        reseal(attempt, len(forged) - 1, from_stolen)
        out = self.verify(attempt, 1)
        self.assertIn("its MAC is wrong", out)
        attempt = forged[:]
        epoch_c = s["epoch"]  # the closing seal's own (the run may have crossed into epoch0 + 1)
        attempt[-1] = attempt[-1].replace('"epoch":%d,' % epoch_c, '"epoch":%d,' % stolen_epoch)
        reseal(attempt, len(forged) - 1, from_stolen)
        out = self.verify(attempt, 1)
        self.assertIn("sealed in epoch %d but dated in epoch %d" % (stolen_epoch, epoch_c), out)

    def kill_9_and_restart(self, sink, path):
        self.seal_init()
        state = os.path.join(self.d, "state")
        os.mkdir(state)
        env = dict(os.environ, STATE_DIRECTORY=state)  # the default spool, a test's own
        args = ["--event", SYNTH, "-p", "count=0", "-p", "interval_ms=5", "-p", "per_read=50",
                "--sink", sink, "-p", "path=" + path, "--seal", self.key, "--batch-size", "100"]
        with Running(args, env=env) as t:
            wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 200000,
                       what="sealed batches")
            t.proc.send_signal(signal.SIGKILL)
            t.wait()
        with open(self.key) as f:
            self.assertRegex(f.read(), r"run [0-9a-f]{32} open")
        with Running(args, env=env) as t:
            size = os.path.getsize(path)
            wait_until(lambda: os.path.getsize(path) > size + 100000, what="more batches")
            self.assertEqual(t.stop(), 130, t.stderr())
        r = run(["verify", path, "--verify-key", self.vkey])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("did not stop cleanly", r.stdout)
        self.assertIn("the next, recorded it", r.stdout)
        self.assertIn("of 2 runs", r.stdout)
        self.assertTrue(r.stdout.endswith("OK\n"), r.stdout)

    def test_kill_9_and_restart_verify_with_the_crash_recorded(self):
        self.kill_9_and_restart("jsonl", self.out)

    def test_kill_9_and_restart_verify_with_the_crash_recorded_sqlite(self):
        self.kill_9_and_restart("sqlite", os.path.join(self.d, "events.db"))

if __name__ == "__main__":
    import tcpaudit
    tcpaudit.main()
