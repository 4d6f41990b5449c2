#!/usr/bin/python3
"""Memory figures of the release binary, from /proc/PID/status and
/proc/PID/smaps_rollup (`make bench-memory`).

Starts build/postern on loopback with an aiosmtpd upstream, once over plain SMTP
and once over implicit TLS (a throwaway CA and certificate made by openssl),
then reports: the binary's size, VmRSS and Private_Dirty (what the board pays;
libc and libssl pages are shared) when idle, and VmHWM (peak RSS) after relaying
a 2 KB message and after relaying a 20 MB message, each waited for upstream.

Then the memory per receiver connection (issue 12): Private_Dirty with 12 idle
clients connected after EHLO, without TLS and after STARTTLS (TLS 1.3), less
the daemon's with none, divided by 12 (the plain round first, then TLS).
"""
import os
import signal
import smtplib
import socket
import ssl
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


def private_dirty(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    raise KeyError("Private_Dirty")


def certificate(tmp):
    """A CA and a certificate for 127.0.0.1 signed by it, made by openssl."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=bench CA")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "up.key", "-out", "up.csr", "-subj", "/CN=bench upstream",
            "-addext", "subjectAltName=IP:127.0.0.1")
    open(os.path.join(tmp, "ext"), "w").write("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "up.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "30", "-extfile", "ext", "-out", "up.pem")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(tmp, "up.pem"), os.path.join(tmp, "up.key"))
    return ctx, os.path.join(tmp, "ca.pem")


def main():
    for tls in (False, True):
        measure(tls)
    per_connection()


def per_connection(clients=12):
    upstream_port, port = free_port(), free_port()
    controller = Controller(Counter(), hostname="127.0.0.1", port=upstream_port)
    controller.start()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", "key.pem", "-out", "cert.pem", "-days", "30", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, cwd=tmp)
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\ntls_cert = {tmp}/cert.pem\ntls_key = {tmp}/key.pem\n"
                    f"[spool]\ndir = {tmp}/spool\n[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\ntls = none\n")
        daemon = subprocess.Popen([BIN, "run", "--config", conf, "--log", "stderr"],
                                  stderr=open(os.path.join(tmp, "log"), "w"))
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "cert.pem"))
        ctx.check_hostname = False
        results = {}
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(listening)
            # The first round of each is reported: freed OpenSSL memory stays in
            # the heap, so a second TLS round would reuse it and show less.
            for tls in (False, True):
                time.sleep(1.5)                         # closed slots give their pages back after 1 s
                base_private, base_rss = private_dirty(daemon.pid), status(daemon.pid, "VmRSS")
                sessions = []
                for _ in range(clients):
                    s = smtplib.SMTP("127.0.0.1", port)
                    if tls:
                        s.starttls(context=ctx)
                    s.ehlo("bench")
                    sessions.append(s)
                time.sleep(0.3)
                results[tls] = ((private_dirty(daemon.pid) - base_private) / clients,
                                (status(daemon.pid, "VmRSS") - base_rss) / clients)
                for s in sessions:
                    s.quit()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            controller.stop()
    print(f"--- receiver connections ({clients} idle clients after EHLO)")
    for tls, label in ((False, "plain"), (True, "STARTTLS, " + "TLS 1.3")):
        private, rss = results[tls]
        print(f"per connection, {label}: Private_Dirty {private:.1f} kB, VmRSS {rss:.1f} kB")


def measure(tls):
    upstream_port, port = free_port(), free_port()
    handler = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        if tls:
            ctx, ca = certificate(tmp)
            controller = Controller(handler, hostname="127.0.0.1", port=upstream_port, ssl_context=ctx)
            upstream = f"tls = implicit\nca_file = {ca}\n"
        else:
            controller = Controller(handler, hostname="127.0.0.1", port=upstream_port)
            upstream = "tls = none\n"
        controller.start()
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\nmax_message_size = 25M\n"
                    f"[spool]\ndir = {tmp}/spool\n[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\n"
                    + upstream)
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
            idle_private = private_dirty(daemon.pid)
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
            time.sleep(3)   # the idle connection is let go after 2 s
            rss_after = status(daemon.pid, "VmRSS")
            private_after = private_dirty(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            controller.stop()
    print(f"--- {'implicit TLS (verified, ca_file)' if tls else 'plain SMTP (tls = none)'}")
    print(f"binary size:                   {os.path.getsize(BIN)} bytes ({BIN})")
    print(f"idle VmRSS:                    {idle} kB")
    print(f"idle Private_Dirty:            {idle_private} kB")
    print(f"peak VmHWM after a 2 KB message:  {after_small} kB")
    print(f"peak VmHWM after a 20 MB message: {after_big} kB  (+{after_big - after_small} kB)")
    print(f"idle again after both:         VmRSS {rss_after} kB, Private_Dirty {private_after} kB")


if __name__ == "__main__":
    main()
