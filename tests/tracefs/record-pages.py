#!/usr/bin/env python3
"""Records raw trace buffer pages of sock:inet_sock_set_state for the decoder
tests (run as root; writes into tests/tracefs/pages/).

Makes one IPv4 and one IPv6 loopback connection on ports of its own, reads
the binary per-CPU buffers (trace_pipe_raw) of a private tracing instance,
and keeps the pages as they are, with the event's format, the page header's
format and a manifest of the connections made (which the test checks the
decoded events against).  With --resets: the state changes and the resets
(tcp:tcp_send_reset, tcp:tcp_receive_reset) of a refused IPv4 connect and
an abortive IPv6 close, on one CPU, into resets-*.page and resets.json.
"""
import json
import os
import shutil
import socket
import struct
import sys

TRACING = "/sys/kernel/tracing"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pages")


def connection(family, host):
    l = socket.socket(family)
    l.bind((host, 0))
    l.listen()
    port = l.getsockname()[1]
    c = socket.create_connection((host, port))
    s, _ = l.accept()
    cport = c.getsockname()[1]
    c.close()
    s.close()
    l.close()
    return {"family": "inet6" if family == socket.AF_INET6 else "inet", "server_port": port,
            "client_port": cport}


def refused(family, host):
    """A connect to a closed port: the reset is sent for no socket."""
    with socket.socket(family) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    c = socket.socket(family)
    try:
        c.connect((host, port))
    except ConnectionRefusedError:
        pass
    cport = c.getsockname()[1]
    c.close()
    return {"family": "inet6" if family == socket.AF_INET6 else "inet", "what": "refused",
            "server_port": port, "client_port": cport}


def aborted(family, host):
    """SO_LINGER 0: the client sends a reset, the server's socket receives it."""
    l = socket.socket(family)
    l.bind((host, 0))
    l.listen()
    port = l.getsockname()[1]
    c = socket.create_connection((host, port))
    s, _ = l.accept()
    cport = c.getsockname()[1]
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    try:
        s.recv(10)
    except ConnectionResetError:
        pass
    s.close()
    l.close()
    return {"family": "inet6" if family == socket.AF_INET6 else "inet", "what": "aborted",
            "server_port": port, "client_port": cport}


def main():
    if sys.argv[1:] == ["--resets"]:
        return record(["sock/inet_sock_set_state", "tcp/tcp_send_reset", "tcp/tcp_receive_reset"],
                      "resets", lambda: [refused(socket.AF_INET, "127.0.0.1"),
                                         aborted(socket.AF_INET6, "::1")])
    return record(["sock/inet_sock_set_state"], "inet_sock_set_state",
                  lambda: [connection(socket.AF_INET, "127.0.0.1"),
                           connection(socket.AF_INET6, "::1")])


def record(events, prefix, make):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU: one buffer, in order
    inst = os.path.join(TRACING, "instances", "tcp_audit_record")
    if os.path.exists(inst):
        os.rmdir(inst)
    os.mkdir(inst)
    try:
        with open(os.path.join(inst, "trace_clock"), "w") as f:
            f.write("mono")
        for ev in events:
            with open(os.path.join(inst, "events", ev, "enable"), "w") as f:
                f.write("1")
        conns = make()
        for ev in events:
            with open(os.path.join(inst, "events", ev, "enable"), "w") as f:
                f.write("0")
        os.makedirs(OUT, exist_ok=True)
        pages = []
        for cpu in range(os.cpu_count()):
            path = os.path.join(inst, "per_cpu/cpu%d/trace_pipe_raw" % cpu)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            n = 0
            while True:
                try:
                    page = os.read(fd, 4096)
                except BlockingIOError:
                    break
                if not page:
                    break
                name = "%s-cpu%d-%d.page" % (prefix, cpu, n)
                with open(os.path.join(OUT, name), "wb") as f:
                    f.write(page)
                pages.append(name)
                n += 1
            os.close(fd)
        for ev in events:
            shutil.copyfile(os.path.join(TRACING, "events", ev, "format"),
                            os.path.join(OUT, os.path.basename(ev) + ".format"))
        shutil.copyfile(os.path.join(TRACING, "events/header_page"),
                        os.path.join(OUT, "header_page"))
        with open(os.path.join(OUT, prefix + ".json"), "w") as f:
            json.dump({"kernel": os.uname().release, "pages": pages, "connections": conns}, f,
                      indent=1)
        print("recorded %d pages" % len(pages))
    finally:
        os.rmdir(inst)


if __name__ == "__main__":
    sys.exit(main())
