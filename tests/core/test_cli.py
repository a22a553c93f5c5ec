"""Bad command lines: each gives one clear line on stderr, exit status 2, and
nothing written to any sink."""
import os
import re
import tempfile
import unittest

import tcpaudit
from tcpaudit import FIXTURES, fixture, read_jsonl, run


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "out.jsonl")
        self.replay_in = os.path.join(self.tmp.name, "in.jsonl")
        with open(self.replay_in, "w") as f:
            f.write(tcpaudit.sample_line(1) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def assertUsageError(self, args, *expect):
        r = run(args)
        lines = [l for l in r.stderr.splitlines() if l]
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(lines), 1, "want one line on stderr, got:\n" + r.stderr)
        self.assertTrue(lines[0].startswith("tcp-audit: error: "), lines[0])
        for e in expect:
            self.assertIn(e, lines[0])
        self.assertFalse(os.path.exists(self.out) and os.path.getsize(self.out) > 0,
                         "something was written to the sink")
        self.assertEqual(r.stdout, "")
        return lines[0]

    def replay(self):
        return ["--event", "replay", "-p", "path=" + self.replay_in]

    def test_missing_plugin_name(self):
        self.assertUsageError(self.replay() + ["--sink", "nosuch", "-p", "path=" + self.out],
                              'no sink named "nosuch"', "tcp-audit-nosuch-sink.so")

    def test_missing_plugin_path(self):
        self.assertUsageError(self.replay() + ["--sink", "/nonexistent/x.so"],
                              "/nonexistent/x.so", "No such file")

    def test_not_a_shared_object(self):
        bogus = os.path.join(self.tmp.name, "tcp-audit-bogus-sink.so")
        with open(bogus, "w") as f:
            f.write("not an ELF file\n")
        self.assertUsageError(self.replay() + ["--sink", bogus], "is not a loadable plugin")

    @unittest.skipUnless(os.geteuid() == 0, "the check applies when running as root")
    def test_plugin_that_others_could_change_is_refused(self):
        import shutil
        d = os.path.join(self.tmp.name, "plugins")
        os.mkdir(d, 0o755)
        so = os.path.join(d, "tcp-audit-jsonl-sink.so")
        shutil.copy(os.path.join(tcpaudit.BUILD_DIR, "plugins", "jsonl-sink",
                                 "tcp-audit-jsonl-sink.so"), so)
        sink = ["--sink", so, "-p", "path=" + self.out]
        os.chmod(so, 0o664)
        self.assertUsageError(self.replay() + sink, "refused: it is writable by its group")
        os.chmod(so, 0o644)
        os.chown(so, 65534, -1)
        self.assertUsageError(self.replay() + sink, "refused: it is owned by uid 65534")
        os.chown(so, 0, -1)
        os.chmod(d, 0o777)
        self.assertUsageError(self.replay() + sink,
                              "refused: its folder %s is writable by others" % d)
        os.chmod(d, 0o755)
        r = run(self.replay() + sink)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.path.getsize(self.out) > 0, True)

    def test_shared_object_without_entry(self):
        self.assertUsageError(self.replay() + ["--sink", fixture("noentry-sink")],
                              "is not a tcp-audit plugin", "tcp_audit_plugin_entry")

    def test_other_abi_version(self):
        line = self.assertUsageError(self.replay() + ["--sink", fixture("badabi-sink"),
                                                      "-p", "path=" + self.out],
                                     "plugin ABI version 99", "needs version 1")
        self.assertIn("rebuild", line)

    def test_eventer_given_to_sink(self):
        self.assertUsageError(self.replay() + ["--sink", "replay"],
                              '"replay" is an eventer, not a sink', "--event")

    def test_sink_given_to_event_by_path(self):
        self.assertUsageError(["--event", fixture("faulty-sink"), "--sink", "jsonl",
                               "-p", "path=" + self.out], "is a sink, not an eventer")

    def test_sink_given_to_event_by_name(self):
        self.assertUsageError(["--event", "jsonl", "--sink", "jsonl", "-p", "path=" + self.out],
                              '"jsonl" is a sink', "--sink")

    def test_unknown_key(self):
        self.assertUsageError(self.replay() + ["--sink", "jsonl", "-p", "path=" + self.out,
                                               "-p", "colour=blue"],
                              '--sink jsonl', 'unknown option "colour"')

    def test_missing_required_option(self):
        self.assertUsageError(self.replay() + ["--sink", fixture("faulty-sink")],
                              'missing required option "path"')

    def test_param_without_equals(self):
        self.assertUsageError(self.replay() + ["--sink", "jsonl", "-p", "path"],
                              '-p "path": expected KEY=VALUE')

    def test_number_out_of_range(self):
        self.assertUsageError(["--event", fixture("synthetic-eventer"), "-p", "interval_ms=99999",
                               "--sink", "jsonl", "-p", "path=" + self.out],
                              'option "interval_ms"', "out of range")

    def test_not_a_number(self):
        self.assertUsageError(["--event", fixture("synthetic-eventer"), "-p", "count=many",
                               "--sink", "jsonl", "-p", "path=" + self.out],
                              '"many" is not an integer')

    def test_host_name(self):
        # --host names the capturing host on every event; an event read with its own keeps it
        r = run(["--event", fixture("synthetic-eventer"), "-p", "count=3", "--spool", "none",
                 "--host", "web-01.example", "--sink", "jsonl", "-p", "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        events = read_jsonl(self.out)
        self.assertEqual([e["host"] for e in events], ["web-01.example"] * 3)
        # with the machine's id (its first 16 hex digits), when it has one
        try:
            with open("/etc/machine-id") as f:
                machine_id = f.read().strip()
        except OSError:
            machine_id = ""
        if re.fullmatch(r"[0-9a-f]{32}", machine_id):
            self.assertEqual({e["machine"] for e in events}, {machine_id[:16]})
        else:
            self.assertNotIn("machine", events[0])
        os.unlink(self.out)
        r = run(self.replay() + ["--host", "web-02", "--sink", "jsonl", "-p", "path=" + self.out])
        self.assertEqual(r.returncode, 0, r.stderr)
        hosts = {e.get("host") for e in read_jsonl(self.out)}
        self.assertEqual(hosts, {"host-a"})
        os.unlink(self.out)
        for bad, text in [("", "give a name of 1 to 64 bytes"), ("x" * 65, "1 to 64 bytes"),
                          ("a\nb", "holds a control character")]:
            self.assertUsageError(self.replay() + ["--host", bad], "--host: ", text)

    def test_bad_enum(self):
        self.assertUsageError(self.replay() + ["-p", "on_error=ignore", "--sink", "jsonl",
                                               "-p", "path=" + self.out],
                              '"ignore" is not one of stop|skip')

    def test_bad_bool(self):
        self.assertUsageError(self.replay() + ["--sink", "jsonl", "-p", "path=" + self.out,
                                               "-p", "fsync=maybe"],
                              "not a boolean")

    def test_two_events(self):
        self.assertUsageError(self.replay() + ["--event", "replay", "--sink", "jsonl",
                                               "-p", "path=" + self.out],
                              "--event given twice")

    def test_param_before_plugin(self):
        self.assertUsageError(["-p", "path=x"] + self.replay(), "put -p after")

    def test_same_key_twice(self):
        self.assertUsageError(self.replay() + ["--sink", "jsonl", "-p", "path=" + self.out,
                                               "-p", "path=" + self.out], "given twice")

    def test_unknown_flag(self):
        self.assertUsageError(["--frobnicate"], "unknown option --frobnicate")

    def test_bad_max_errors(self):
        self.assertUsageError(["--max-errors", "0"] + self.replay(), "--max-errors")

    def test_stray_argument(self):
        self.assertUsageError(self.replay() + ["extra"], 'unexpected argument "extra"')

    def test_sink_cannot_open(self):
        # a start-up failure inside a plugin's open() is exit 2 as well
        r = run(self.replay() + ["--sink", "jsonl", "-p", "path=/nonexistent-dir/x.jsonl"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "tcp-audit: [sink:jsonl] error: cannot open "
                         "/nonexistent-dir/x.jsonl for appending: No such file or directory\n")


class Informational(unittest.TestCase):
    def test_help(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for word in ["--event", "--sink", "-p", "--list-plugins", "--max-errors",
                     "TCP_AUDIT_PLUGIN_PATH", "130, 143"]:
            self.assertIn(word, r.stdout)

    def test_version(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^tcp-audit \d+\.\d+\.\d+ \(plugin ABI 1\)\n$")

    def test_list_plugins(self):
        r = run(["--list-plugins"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("sink jsonl\n", r.stdout)
        self.assertIn("eventer replay\n", r.stdout)
        self.assertIn("-p path=<string>  (default: -)", r.stdout)
        self.assertIn("-p on_error=<stop|skip>  (default: stop)", r.stdout)

    def test_plugin_path_override(self):
        env = dict(os.environ, TCP_AUDIT_PLUGIN_PATH=FIXTURES)
        r = run(["--list-plugins"], env=env)
        self.assertIn("eventer synthetic", r.stdout)
        self.assertNotIn("sink jsonl", r.stdout)
        self.assertIn("plugin ABI version 99", r.stdout)  # badabi is listed as unusable

    def test_original_flag_style(self):
        # the Go original's --event=PATH --sink=PATH form
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "o")
            r = run(["--event=" + fixture("synthetic-eventer"), "-p", "count=10",
                     "--sink=" + fixture("faulty-sink"), "-p", "path=" + out])
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out) as f:
                self.assertEqual(f.read().split(), [str(i) for i in range(1, 11)])


if __name__ == "__main__":
    tcpaudit.main()
