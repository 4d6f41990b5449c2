#!/usr/bin/python3
"""CPU per large message (issue 11 item 2): the daemon's user + system time
(utime + stime of /proc/PID/stat) for relaying N messages of SIZE bytes, each in
its own SMTP session from Python's smtplib, to an upstream that is a plain
socket sink answering SMTP as fast as it can (so the figure is Postern's cost,
not the peer's). Postfix takes 29 ms per 5 MB message on this kind of run; the
target is at most half of that.

    python3 Tests/bench/cpu_large.py [--bin build/postern] [--count 20] [--size 5M]
                                     [--line 76] [--perf perf.data] [--syscalls] [--rounds 1]

--perf records the daemon with `perf record -g` while the messages pass
(use an unstripped binary to see Postern's symbols) and prints the top of
`perf report --no-children`.
"""
import argparse
import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ms(pid):
    """utime and stime of the process, in milliseconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return int(fields[11]) * 1000.0 / CLK_TCK, int(fields[12]) * 1000.0 / CLK_TCK


class Sink:
    """A minimal SMTP receiver: 220, EHLO with PIPELINING and 8BITMIME, 250 to
    everything, 354 to DATA, and the text skipped until CRLF.CRLF."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.messages = 0
        self.bytes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"220 sink ESMTP\r\n")
        buf = b""
        in_data = False
        try:
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                buf += chunk
                replies = []
                while True:
                    if in_data:
                        end = buf.find(b"\r\n.\r\n")
                        if end < 0:
                            # Keep the tail that could start the marker.
                            with self.lock:
                                self.bytes += max(0, len(buf) - 4)
                            buf = buf[-4:]
                            break
                        with self.lock:
                            self.bytes += end
                            self.messages += 1
                        buf = buf[end + 5:]
                        in_data = False
                        replies.append(b"250 2.0.0 ok\r\n")
                        continue
                    nl = buf.find(b"\r\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 2:]
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        replies.append(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        # The DATA line's CRLF counts as the first CRLF of the marker.
                        buf = b"\r\n" + buf
                        replies.append(b"354 go\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"".join(replies) + b"221 bye\r\n")
                        return
                    else:
                        replies.append(b"250 ok\r\n")
                if replies:
                    conn.sendall(b"".join(replies))
        except OSError:
            return
        finally:
            conn.close()


def message(size, line, seed):
    """About `size` bytes of MIME-like text: a header, then lines of `line`
    octets of base64 alphabet (an attachment), each ending in CRLF."""
    rnd = random.Random(seed)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    row = bytes(rnd.choice(alphabet) for _ in range(4096))
    head = (b"From: bench@example.com\r\nTo: ops@example.com\r\nSubject: large\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    lines = []
    total = len(head)
    k = 0
    while total < size:
        start = (k * 37) % (len(row) - line)
        lines.append(row[start:start + line] + b"\r\n")
        total += line + 2
        k += 1
    return head + b"".join(lines)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def run(args):
    sink = Sink()
    port = free_port()
    body = message(args.size, args.line, 1)
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\nmax_message_size = {2 * args.size + (1 << 20)}\n"
                    f"[spool]\ndir = {tmp}/spool\nmax_size = 2G\n"
                    f"[upstream]\nhost = 127.0.0.1\nport = {sink.port}\ntls = none\n")
        daemon = subprocess.Popen([args.bin, "run", "--config", conf, "--log", "stderr"],
                                  stderr=open(os.path.join(tmp, "log"), "w"))
        perf = None
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            if not wait_for(listening, 30):
                sys.exit("postern did not start listening")
            # One small message first: the upstream connection, the spool's
            # first segment and every page touched once are not counted.
            with smtplib.SMTP("127.0.0.1", port) as s:
                s.sendmail("bench@example.com", ["ops@example.com"], b"Subject: warm\r\n\r\nwarm\r\n")
            if not wait_for(lambda: sink.messages == 1, 30):
                sys.exit("the warm-up message was not delivered")
            time.sleep(0.3)
            if args.perf:
                perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p", str(daemon.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            elif args.syscalls:
                perf = subprocess.Popen(["strace", "-c", "-p", str(daemon.pid)],
                                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "strace"), "w"))
                time.sleep(0.5)
            before = cpu_ms(daemon.pid)
            started = time.monotonic()
            for _ in range(args.count):
                with smtplib.SMTP("127.0.0.1", port) as s:
                    s.sendmail("bench@example.com", ["ops@example.com"], body)
            if not wait_for(lambda: sink.messages == 1 + args.count, 300):
                sys.exit(f"only {sink.messages - 1} of {args.count} messages arrived upstream")
            elapsed = time.monotonic() - started
            after = cpu_ms(daemon.pid)
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
            if args.syscalls:
                print(f"system calls for {args.count} messages (strace -c; its overhead inflates the CPU figure):")
                print(open(os.path.join(tmp, "strace")).read())
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
    user, system = after[0] - before[0], after[1] - before[1]
    per = (user + system) / args.count
    print(f"{args.count} x {len(body)} bytes (lines of {args.line}): daemon CPU {user + system:.0f} ms, "
          f"{per:.1f} ms per message (user {user / args.count:.1f}, system {system / args.count:.1f}), "
          f"wall {elapsed:.1f} s ({args.bin})")
    return per


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "postern"))
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--size", type=parse_size, default=5 << 20)
    p.add_argument("--line", type=int, default=76, help="octets per text line before CRLF")
    p.add_argument("--rounds", type=int, default=1, help="repeat the run; prints the median")
    p.add_argument("--perf", help="perf.data path: record the daemon while the messages pass")
    p.add_argument("--syscalls", action="store_true", help="count the daemon's system calls (strace -c)")
    args = p.parse_args()
    results = sorted(run(args) for _ in range(args.rounds))
    if args.rounds > 1:
        print(f"median of {args.rounds}: {results[len(results) // 2]:.1f} ms per message")
    if args.perf:
        out = subprocess.run(["perf", "report", "-i", args.perf, "--no-children", "--stdio",
                              "--sort", "dso,symbol", "-g", "none"],
                             capture_output=True, text=True).stdout
        print("\n".join(out.splitlines()[:60]))


if __name__ == "__main__":
    main()
