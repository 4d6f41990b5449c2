#!/usr/bin/python3
"""Offline for weeks (issue 3 item 5), as a benchmark: `make bench-offline`.

With the upstream unreachable, 4 clients queue N (default 100,000) messages of
2 KB. Reports, from the real binary: the daemon's RSS before and after (the
in-memory index per queued message), the recovery time after a restart (the
daemon's own "spool recovered ... ms=" figure and the time until it accepts
mail), and, once the upstream comes back, the drain time, checking that the
queue drains in order of arrival (the queue ids in the Received: headers reach
the upstream in increasing order) and that every message arrives exactly once.

    POSTERN_BENCH_MESSAGES=20000 /usr/bin/python3 Tests/bench/offline.py
"""
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

from aiosmtpd.controller import Controller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "postern"))
N = int(os.environ.get("POSTERN_BENCH_MESSAGES", "100000"))
CLIENTS = 4
QUEUE_ID = re.compile(rb"id ([0-9a-f]{16})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Recorder:
    def __init__(self):
        self.ids = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        m = QUEUE_ID.search(envelope.original_content[:400])
        with self.lock:
            self.ids.append(m.group(1) if m else b"?")
        return "250 2.0.0 Ok"


class Daemon:
    def __init__(self, tmp, port, upstream_port):
        self.conf = os.path.join(tmp, "postern.conf")
        with open(self.conf, "w") as f:
            f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\nmax_connections = 16\n"
                    f"[spool]\ndir = {tmp}/spool\nmax_size = 1G\nsegment_size = 4M\n"
                    f"[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\n"
                    f"[retry]\ninitial = 1s\nmax = 5s\n[control]\nsocket = {tmp}/control\n")
        self.port = port
        self.log = os.path.join(tmp, "postern.log")
        self.proc = None

    def start(self):
        started = time.monotonic()
        self.proc = subprocess.Popen([BIN, "run", "--config", self.conf, "--log", "stderr"],
                                     stderr=open(self.log, "a"))

        def accepting():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(accepting, 300, "the daemon to listen")
        return time.monotonic() - started

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0

    def recovered_ms(self):
        with open(self.log) as f:
            found = re.findall(r'ms=(\d+) msg="spool recovered"', f.read())
        return int(found[-1])


def send_share(port, first, count, errors):
    body = ("x" * 76 + "\r\n") * 25      # 2 KB of text
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        for i in range(first, first + count):
            msg = f"Subject: offline {i}\r\nMessage-ID: <offline-{i}@bench>\r\n\r\n{body}"
            s.sendmail("bench@example.com", ["ops@example.com"], msg)
        s.quit()
    except Exception as e:   # reported by the main thread
        errors.append(e)


def main():
    upstream_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(tmp, port, upstream_port)
        daemon.start()
        time.sleep(0.5)
        rss_empty = status_kb(daemon.proc.pid, "VmRSS")

        started = time.monotonic()
        errors = []
        share = N // CLIENTS
        threads = [threading.Thread(target=send_share, args=(port, k * share, share, errors)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(f"sending failed: {errors[0]}")
        total = share * CLIENTS
        queue_seconds = time.monotonic() - started
        rss_full = status_kb(daemon.proc.pid, "VmRSS")
        spool_bytes = sum(os.path.getsize(os.path.join(tmp, "spool", f)) for f in os.listdir(os.path.join(tmp, "spool")))
        daemon.stop()

        restart_seconds = daemon.start()
        recovery_ms = daemon.recovered_ms()
        time.sleep(0.5)
        rss_recovered = status_kb(daemon.proc.pid, "VmRSS")

        recorder = Recorder()
        controller = Controller(recorder, hostname="127.0.0.1", port=upstream_port)
        controller.start()
        drain_started = time.monotonic()
        try:
            wait_for(lambda: len(recorder.ids) >= total, 3600, f"{total} messages upstream")
            drain_seconds = time.monotonic() - drain_started
            time.sleep(1)
            daemon.stop()
        finally:
            controller.stop()

    ids = recorder.ids
    in_order = all(a < b for a, b in zip(ids, ids[1:]))
    print(f"messages queued offline:         {total} x 2 KB by {CLIENTS} clients in {queue_seconds:.1f} s "
          f"({total / queue_seconds:.0f}/s)")
    print(f"spool on disk:                   {spool_bytes / 1e6:.1f} MB")
    print(f"RSS empty / with the queue:      {rss_empty} kB / {rss_full} kB "
          f"=> {(rss_full - rss_empty) * 1024 / total:.0f} bytes per queued message")
    print(f"restart: recovery scan           {recovery_ms} ms (daemon's own figure); "
          f"accepting mail after {restart_seconds:.2f} s")
    print(f"RSS after recovery:              {rss_recovered} kB "
          f"=> {(rss_recovered - rss_empty) * 1024 / total:.0f} bytes per queued message")
    print(f"drain when the upstream is back: {drain_seconds:.1f} s ({total / drain_seconds:.0f}/s)")
    print(f"arrived upstream:                {len(ids)} (unique {len(set(ids))}), "
          f"in order of arrival: {'yes' if in_order else 'NO'}")
    if len(ids) != total or len(set(ids)) != total or not in_order:
        sys.exit("FAILED: the queue did not drain exactly once, in order")


if __name__ == "__main__":
    main()
