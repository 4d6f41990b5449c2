"""A spool larger than 2 GiB (issue 10 item 2): on armv7 `Int` and, without
_FILE_OFFSET_BITS=64, off_t are 32 bits, and the spool's byte count must
still be right past 2^31. With the upstream down, 110 messages of 20 MiB
(2.15 GiB of text) are queued under max_size = 4G; `postern status` and
`postern queue` report the totals exactly; a restart recovers them all; then
the upstream drains the spool and every message arrives exactly once, intact
(sizes and SHA-256 compared, not contents: the upstream keeps only digests).

Marker `big`: it writes 2.3 GB and takes about 3 minutes under qemu-user, so
it runs only where it proves something, the 32-bit board: `make board-check
ARCH=armv7` (part of `make check`) selects `board or big`. By hand, natively
(about 80 s) or for a board:

    POSTERN_ARCH=armv7 POSTERN_BIN=$PWD/build/armv7/postern-qemu \\
        /usr/bin/python3 -m pytest -q -s -m big Tests/blackbox/test_big_spool.py
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import EMULATED, POSTERN_BIN, Upstream, hold_for, wait_until

MESSAGES = 110
# A little over 20 MiB of text each, in 998-octet lines (RFC 5322 §2.1.1's
# limit) that never start with a dot, so what is sent is what arrives.
MESSAGE_SIZE = 20 << 20
LINE = 998


def message(i: int) -> bytes:
    """Message ``i``: MESSAGE_SIZE bytes and up to one line more, its body
    different for each ``i``."""
    head = (f"From: <load@client.example>\r\nTo: <ops@example.com>\r\nSubject: big {i}\r\n"
            f"Message-ID: <big-{i}@client.example>\r\n\r\n").encode()
    seed = hashlib.sha256(f"body {i}".encode()).hexdigest().encode()   # 64 octets
    line = (seed * (LINE // len(seed) + 1))[:LINE] + b"\r\n"
    return head + line * ((MESSAGE_SIZE - len(head)) // len(line) + 1)


class Sender:
    """One SMTP session sending many large messages (RFC 5321 §3.3), without
    dot-stuffing (no line starts with a dot) and without holding more than one
    message at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220
        assert self.command(b"EHLO load.client.example")[0] == 250

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    def command(self, line: bytes):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, text: bytes):
        assert self.command(b"MAIL FROM:<load@client.example>")[0] == 250
        assert self.command(b"RCPT TO:<ops@example.com>")[0] == 250
        assert self.command(b"DATA")[0] == 354
        self.sock.sendall(text)
        self.sock.sendall(b".\r\n")
        code, text = self.reply()
        assert code == 250, text

    def close(self):
        self.command(b"QUIT")
        self.file.close()
        self.sock.close()


def postern(daemon, *args):
    r = subprocess.run([POSTERN_BIN, *args, "--config", str(daemon.config_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def segment_bytes(daemon) -> int:
    spool = daemon.workdir / "spool"
    return sum(p.stat().st_size for p in spool.iterdir() if p.name.endswith(".seg"))


def status_totals(daemon):
    """(messages, text bytes, spool bytes, segments) from `postern status`."""
    s = postern(daemon, "status")
    q = re.search(r"queue: +(\d+) messages?, (\d+) bytes of text", s)
    sp = re.search(r"spool: +\S+, (\d+) bytes in (\d+) segments?", s)
    assert q and sp, s
    return int(q.group(1)), int(q.group(2)), int(sp.group(1)), int(sp.group(2))


@pytest.mark.big
@pytest.mark.board
def test_spool_past_2gib_counted_recovered_and_drained_once(make_daemon, workdir):
    timings = {}
    t0 = time.monotonic()
    upstream = Upstream(digest_only=True)
    d = make_daemon(upstream.port, start=False,
                    receiver__max_message_size="32M", receiver__timeout="10m",
                    spool__max_size="4G", spool__segment_size="256M",
                    retry__initial="1s", retry__max="2s")
    d.start(timeout=60)

    # 1. 110 messages of 20 MiB while the upstream is down.
    expected = {}
    sender = Sender(d.port)
    for i in range(MESSAGES):
        text = message(i)
        expected[f"big {i}"] = (len(text), hashlib.sha256(text).hexdigest())
        sender.send(text)
    sender.close()
    timings["receive 2.15 GiB"] = time.monotonic() - t0

    # 2. The totals, past 2^31, the same in `status`, `queue` and on disk.
    doc = json.loads(postern(d, "queue", "--json"))
    assert doc["count"] == MESSAGES
    sizes = [m["size"] for m in doc["messages"]]
    assert all(MESSAGE_SIZE < s < MESSAGE_SIZE + 2048 for s in sizes), sizes[:3]   # + Received:
    assert doc["text_bytes"] == sum(sizes) > 1 << 31
    text = postern(d, "queue")
    assert text.splitlines()[-1] == f"-- {MESSAGES} messages, {sum(sizes)} bytes of text", text[-300:]
    count, text_bytes, spool_bytes, segments = status_totals(d)
    assert (count, text_bytes) == (MESSAGES, sum(sizes))
    assert spool_bytes == segment_bytes(d) > text_bytes > 1 << 31
    assert segments == len([p for p in (workdir / "spool").iterdir() if p.name.endswith(".seg")])

    # 3. A restart: the recovery scan reads all of it back.
    t1 = time.monotonic()
    assert d.stop(timeout=120) == 0, d.log_text()
    d.start(timeout=600)
    recovered = d.wait_for_log("spool recovered")[0]
    timings["restart and recover"] = time.monotonic() - t1
    assert f"queued={MESSAGES}" in recovered and "dropped_unacknowledged=0" in recovered, recovered
    assert status_totals(d)[:3] == (MESSAGES, sum(sizes), segment_bytes(d))

    # 4. The upstream comes back and drains it: each message once, intact.
    t2 = time.monotonic()
    upstream.start()
    try:
        wait_until(lambda: upstream.count() >= MESSAGES, timeout=1800, interval=1,
                   what=lambda: f"{MESSAGES} messages upstream (have {upstream.count()})")
        timings["drain"] = time.monotonic() - t2
        wait_until(lambda: len(d.events("delivered")) >= MESSAGES, timeout=60,
                   what="a delivered event for each")
        hold_for(lambda: upstream.count() == MESSAGES, 3, what=f"exactly {MESSAGES} messages upstream")
        got = {}
        for m in upstream.messages:
            subject = m.header("Subject")
            assert subject not in got, f"{subject} arrived twice"
            got[subject] = (m.body_size, m.body_sha256)
        assert got == expected
        wait_until(lambda: status_totals(d)[0] == 0, timeout=60, what="an empty queue in status")
        assert segment_bytes(d) < 256 << 20, "the delivered segments were not deleted"
    finally:
        upstream.stop()
    timings["total"] = time.monotonic() - t0
    print("timings (%s): %s" % ("qemu" if EMULATED else "native",
                                 ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())))
