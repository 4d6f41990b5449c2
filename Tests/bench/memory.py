#!/usr/bin/python3
"""Memory figures of the release binary, from /proc/PID/status (`make bench-memory`).

Starts build/postern on loopback with an aiosmtpd upstream, then reports:
the binary's size, VmRSS when idle, and VmHWM (peak RSS) after relaying a 2 KB
message and after relaying a 20 MB message, each waited for upstream.
"""
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

from aiosmtpd.controller import Controller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "postern"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class Counter:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 2.0.0 Ok"


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("timed out waiting")


def main():
    upstream_port, port = free_port(), free_port()
    handler = Counter()
    controller = Controller(handler, hostname="127.0.0.1", port=upstream_port)
    controller.start()
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\nmax_message_size = 25M\n"
                    f"[spool]\ndir = {tmp}/spool\n[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\n")
        daemon = subprocess.Popen([BIN, "run", "--config", conf, "--log", "stderr"],
                                  stderr=open(os.path.join(tmp, "log"), "w"))
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(listening)
            time.sleep(0.5)
            idle = status(daemon.pid, "VmRSS")
            small = b"Subject: small\r\n\r\n" + (b"x" * 78 + b"\r\n") * 25
            big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 20000
            with smtplib.SMTP("127.0.0.1", port) as s:
                s.sendmail("bench@example.com", ["ops@example.com"], small)
            wait_for(lambda: handler.count == 1)
            after_small = status(daemon.pid, "VmHWM")
            with smtplib.SMTP("127.0.0.1", port) as s:
                s.sendmail("bench@example.com", ["ops@example.com"], big)
            wait_for(lambda: handler.count == 2)
            after_big = status(daemon.pid, "VmHWM")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            controller.stop()
    print(f"binary size:                   {os.path.getsize(BIN)} bytes ({BIN})")
    print(f"idle VmRSS:                    {idle} kB")
    print(f"peak VmHWM after a 2 KB message:  {after_small} kB")
    print(f"peak VmHWM after a 20 MB message: {after_big} kB  (+{after_big - after_small} kB)")


if __name__ == "__main__":
    main()
