"""The tracefs record decoder on recorded trace buffer pages.

Arguments: the decode-pages tool and the folder of recorded pages.  The
inet_sock_set_state page was read from trace_pipe_raw while record-pages.py
made one IPv4 and one IPv6 loopback connection (its manifest says which);
the tcp_set_state page holds the same records in the old format.  Neither
needs root: only the decoder runs.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import tcpaudit
from tcpaudit import CLIENT, LISTENER, SERVER, states

TOOL, PAGES = sys.argv[1], sys.argv[2]

def decode(system, event, pages, more=()):
    """more: the other events' (system, event) on the pages."""
    return subprocess.run([TOOL, os.path.join(PAGES, "header_page"), system,
                           os.path.join(PAGES, event + ".format")] +
                          ["%s:%s" % (s, os.path.join(PAGES, e + ".format")) for s, e in more] +
                          pages, capture_output=True, text=True)


class Decoder(unittest.TestCase):
    def check(self, system, event):
        with open(os.path.join(PAGES, event + ".json")) as f:
            manifest = json.load(f)
        r = decode(system, event, [os.path.join(PAGES, p) for p in manifest["pages"]])
        self.assertEqual(r.returncode, 0, r.stderr)
        events = [json.loads(l) for l in r.stdout.splitlines()]
        times = [e["ktime"] for e in events]
        self.assertEqual(times, sorted(times), "one CPU's page is in time order")
        for c in manifest["connections"]:
            port, cport = c["server_port"], c["client_port"]
            mine = [e for e in events if port in (e["sport"], e["dport"])]
            host = "::1" if c["family"] == "inet6" else "127.0.0.1"
            for e in mine:
                self.assertEqual(e["family"], c["family"], e)
                self.assertIn(e["saddr"], (host, "::" if c["family"] == "inet6" else "0.0.0.0"))
                self.assertGreater(e["tid_on_cpu"], 0)
            listener = [e for e in mine if e["sport"] == port and e["dport"] == 0]
            child = [e for e in mine if e["sport"] == port and e["dport"] == cport]
            client = [e for e in mine if e["dport"] == port and e["sport"] in (0, cport)]
            self.assertEqual(len(listener) + len(child) + len(client), len(mine))
            self.assertEqual(states(listener), LISTENER)
            self.assertEqual(states(child), SERVER)
            self.assertEqual(states(client), CLIENT)
        return events

    def test_inet_sock_set_state_page(self):
        self.check("sock", "inet_sock_set_state")

    def test_tcp_set_state_page_without_family(self):
        old = self.check("tcp", "tcp_set_state")
        new = self.check("sock", "inet_sock_set_state")
        self.assertEqual(old, new)

    def test_resets_page(self):
        """A refused IPv4 connect and an abortive IPv6 close, with the resets
        (this kernel's tcp_send_reset has its addresses as struct sockaddr)."""
        with open(os.path.join(PAGES, "resets.json")) as f:
            manifest = json.load(f)
        r = decode("sock", "inet_sock_set_state",
                   [os.path.join(PAGES, p) for p in manifest["pages"]],
                   more=[("tcp", "tcp_send_reset"), ("tcp", "tcp_receive_reset")])
        self.assertEqual(r.returncode, 0, r.stderr)
        events = [json.loads(l) for l in r.stdout.splitlines()]
        refused, aborted = manifest["connections"]
        port, cport = refused["server_port"], refused["client_port"]
        resets = [e for e in events if e.get("kind") == "reset" and port in (e["sport"], e["dport"])]
        self.assertEqual(len(resets), 2, events)
        sent, received = resets  # the reset goes out before it comes in
        self.assertEqual((sent["direction"], sent["reason"], sent["family"]),
                         ("sent", "NO_SOCKET", "inet"))
        self.assertEqual((sent["saddr"], sent["sport"], sent["daddr"], sent["dport"]),
                         ("127.0.0.1", port, "127.0.0.1", cport))
        self.assertNotIn("state", sent)
        self.assertNotIn("sock_cookie", sent)
        self.assertEqual((received["direction"], received["sport"], received["dport"]),
                         ("received", cport, port))
        self.assertGreater(received["sock_cookie"], 0)
        self.assertNotIn("reason", received)
        port, cport = aborted["server_port"], aborted["client_port"]
        resets = [e for e in events if e.get("kind") == "reset" and port in (e["sport"], e["dport"])]
        self.assertEqual(sorted((e["direction"], e["family"], e["sport"], e["dport"]) for e in resets),
                         [("received", "inet6", port, cport), ("sent", "inet6", cport, port)])
        sent = [e for e in resets if e["direction"] == "sent"][0]
        self.assertEqual((sent["state"], sent["saddr"], sent["daddr"]), ("CLOSED", "::1", "::1"))
        self.assertIn("reason", sent)
        # the state changes on the same pages are decoded as before
        self.assertEqual(states([e for e in events if "kind" not in e and e["sport"] == cport]),
                         ["SYN-SENT", "ESTABLISHED", "CLOSED"])

    def test_damaged_pages_are_reported_not_read(self):
        with open(os.path.join(PAGES, "inet_sock_set_state-cpu1-0.page"), "rb") as f:
            page = bytearray(f.read())
        with tempfile.TemporaryDirectory() as tmp:
            cases = {}
            long_commit = bytearray(page)
            long_commit[8:16] = (len(page)).to_bytes(8, "little")  # more data than the page
            cases["commit"] = long_commit
            cases["truncated"] = page[:10]  # shorter than a page header
            bad_length = bytearray(page)
            bad_length[16:20] = (0).to_bytes(4, "little")  # type_len 0...
            bad_length[20:24] = (0xfffffff0).to_bytes(4, "little")  # ...with a huge length
            cases["length"] = bad_length
            backwards = bytearray(page)  # padding whose length walks back: kbuffer would spin
            backwards[16:20] = (29 | 5 << 5).to_bytes(4, "little")  # a discarded event
            backwards[20:24] = (0xfffffffc).to_bytes(4, "little")
            cases["backwards"] = backwards
            for name, data in cases.items():
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(data)
                r = decode("sock", "inet_sock_set_state", [path])
                self.assertEqual(r.returncode, 1, name + ": " + r.stderr)
                self.assertIn(path + ": malformed", r.stderr)
            # the good page after a bad one is still read
            good = os.path.join(PAGES, "inet_sock_set_state-cpu1-0.page")
            r = decode("sock", "inet_sock_set_state", [os.path.join(tmp, "commit"), good])
            self.assertEqual(r.returncode, 1)
            self.assertGreaterEqual(len(r.stdout.splitlines()), 22)


if __name__ == "__main__":
    tcpaudit.main()
