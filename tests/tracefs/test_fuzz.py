"""A bounded libFuzzer run of the tracefs record decoder, seeded with the
recorded pages: no crash, no leak, no undefined behaviour (the target is
built with ASan and UBSan).  Arguments: the fuzz target, the pages folder.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import tcpaudit

TARGET, PAGES = sys.argv[1], sys.argv[2]
SECONDS = int(os.environ.get("TCP_AUDIT_FUZZ_SECONDS", "30"))


class Fuzz(unittest.TestCase):
    def test_decoder_survives_fuzzing(self):
        with tempfile.TemporaryDirectory() as corpus:
            for name in os.listdir(PAGES):
                if name.endswith(".page"):
                    data = open(os.path.join(PAGES, name), "rb").read()
                    if name.startswith("tcp_set_state"):
                        data = b"L" + data[1:]  # the target's switch to the old format
                    with open(os.path.join(corpus, name), "wb") as f:
                        f.write(data)
            r = subprocess.run([TARGET, "-max_total_time=%d" % SECONDS, "-max_len=4096", "-timeout=10",
                                "-rss_limit_mb=2048", "-print_final_stats=1", corpus],
                               capture_output=True, text=True, cwd=corpus,
                               env=dict(os.environ, TCP_AUDIT_PAGES=PAGES),
                               timeout=SECONDS + 120)
            tail = "\n".join(r.stderr.splitlines()[-25:])
            self.assertEqual(r.returncode, 0, tail)
            self.assertIn("Done", r.stderr, tail)


if __name__ == "__main__":
    tcpaudit.main()
