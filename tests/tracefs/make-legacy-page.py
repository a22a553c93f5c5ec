#!/usr/bin/env python3
"""Makes the tcp:tcp_set_state (Linux 4.15) test page from the recorded
inet_sock_set_state page: every record re-laid in the old format, which has
no family or protocol field, with the same timestamps.  This kernel no
longer has the old event, so its page cannot be recorded here.

Writes pages/tcp_set_state.format, pages/tcp_set_state-0.page and
pages/tcp_set_state.json (the same connections as the recorded page).
"""
import json
import os
import struct

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pages")
LEGACY_ID = 1234

FORMAT = """name: tcp_set_state
ID: %d
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:36;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:52;\tsize:16;\tsigned:0;

print fmt: "sport=%%hu dport=%%hu oldstate=%%d newstate=%%d", REC->sport, REC->dport, REC->oldstate, REC->newstate
""" % LEGACY_ID


def modern_id():
    with open(os.path.join(DIR, "inet_sock_set_state.format")) as f:
        for line in f:
            if line.startswith("ID:"):
                return int(line.split()[1])
    raise SystemExit("no ID in the format")


def convert(page, mid):
    ts, commit = struct.unpack_from("<QQ", page, 0)
    size = commit & ((1 << 27) - 1)
    out = bytearray()
    pos = 16
    while pos < 16 + size:
        (word,) = struct.unpack_from("<I", page, pos)
        type_len, delta = word & 31, word >> 5
        if 1 <= type_len <= 28:
            body = page[pos + 4:pos + 4 + type_len * 4]
            if struct.unpack_from("<H", body, 0)[0] == mid:
                (family,) = struct.unpack_from("<H", body, 28)
                legacy = bytearray(68)
                legacy[0:28] = body[0:28]
                struct.pack_into("<H", legacy, 0, LEGACY_ID)
                legacy[28:36] = body[32:40]   # saddr, daddr
                legacy[36:68] = body[40:72]   # saddr_v6, daddr_v6
                out += struct.pack("<I", (68 // 4) | (delta << 5)) + legacy
            else:
                out += page[pos:pos + 4 + type_len * 4]
            pos += 4 + type_len * 4
        elif type_len == 0:
            (length,) = struct.unpack_from("<I", page, pos + 4)
            out += page[pos:pos + 4 + length]
            pos += 4 + length
        elif type_len == 29:   # padding: the rest of the page
            break
        else:                  # time extend / absolute time stamp: 8 bytes
            out += page[pos:pos + 8]
            pos += 8
    header = struct.pack("<QQ", ts, len(out) | (commit & ~((1 << 27) - 1)))
    return (header + out).ljust(len(page), b"\0")


def main():
    with open(os.path.join(DIR, "inet_sock_set_state.json")) as f:
        manifest = json.load(f)
    mid = modern_id()
    pages = []
    for i, name in enumerate(manifest["pages"]):
        with open(os.path.join(DIR, name), "rb") as f:
            page = f.read()
        out = "tcp_set_state-%d.page" % i
        with open(os.path.join(DIR, out), "wb") as f:
            f.write(convert(page, mid))
        pages.append(out)
    with open(os.path.join(DIR, "tcp_set_state.format"), "w") as f:
        f.write(FORMAT)
    manifest = dict(manifest, pages=pages, derived_from="inet_sock_set_state pages")
    with open(os.path.join(DIR, "tcp_set_state.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
