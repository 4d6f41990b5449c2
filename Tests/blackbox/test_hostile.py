"""Hostile clients (issue 7, item 10): each attack gets a bounded, well-formed answer,
and after each one the daemon is still alive, a normal client (smtplib) still gets
a message through, and nothing acknowledged is lost.

That last check is one helper, ``assert_survived``, run at the end of every case.
It is backed by a ``Ledger`` of every message the cases send: a message that got
250 must arrive upstream exactly once, byte-exact apart from the Received: field
Postern adds; a message whose 250 was never seen (a reset after the final dot)
may arrive at most once; and a message that was never acknowledged, or that was
hidden inside another one (SMTP smuggling), must not arrive at all. Every test
message carries its own Message-ID, which is how the ledger recognises it.

Most cases share one daemon (``timeout = 3s``, so the timeout cases are quick) and
one upstream. If a case kills the daemon, that case fails and the next one starts
it again on the same spool, so one crash is reported once, by the case that caused
it. Cases that need another configuration start their own daemon.

Every wait is a bounded poll; nothing sleeps to synchronise.
"""

import itertools
import random
import re
import select
import smtplib
import socket
import struct
import subprocess
import tempfile
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import (DEFAULT_TIMEOUT, POSTERN_BIN, Daemon, RawClient, Upstream, hold_for, make_message,
                      wait_until)

HOST = "127.0.0.1"
TIMEOUT_S = 3               # `[receiver] timeout` of the daemons here
CUT_OFF_BOUND = 7.0         # "within a few seconds": timeout + generous slack, well under 10 s
RSS_BOUND_KB = 2048         # what an attack may add to the daemon's resident memory


# --------------------------------------------------------------------------------
# the ledger: what was sent, what was acknowledged, what must (not) arrive

_ids = itertools.count(1)


def new_id(tag):
    return f"{tag}-{next(_ids)}"


def message_key(msgid):
    """The Message-ID header value ``make_message(msgid=...)`` writes."""
    return f"<{msgid}@client.example>"


def stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency for a CRLF message sent by hand."""
    return re.sub(rb"(?m)^\.", b"..", data)


class Entry:
    def __init__(self, key, data, rcpts, sender, same):
        self.key = key
        self.data = data
        self.rcpts = rcpts
        self.sender = sender
        self.same = same            # custom comparison of the relayed text, or None (byte-exact)
        self.acked = False          # the client saw 250 after the end of data
        self.max_copies = 1         # None after a crash of the daemon (at-least-once)

    def ack(self):
        self.acked = True


class Ledger:
    """Every message the cases handed to one daemon and what may become of it."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.entries: dict[str, Entry] = {}
        self.reported: set = set()   # problems already failed once (not failed again by later cases)

    def expect(self, msgid, data, rcpts=("ops@example.com",), sender=None, same=None) -> Entry:
        """Registers a message before it is sent: until ``ack()`` it may arrive at
        most once (its fate is unknown), after it must arrive exactly once."""
        e = Entry(message_key(msgid), data, list(rcpts) if rcpts is not None else None, sender, same)
        self.entries[e.key] = e
        return e

    def crashed(self):
        """The daemon died: what it had accepted may now be delivered more than once
        (DESIGN principle 4, at-least-once), but never zero times."""
        for e in self.entries.values():
            e.max_copies = None

    def _by_key(self):
        groups: dict = {}
        for m in self.upstream.messages:
            groups.setdefault(m.header("Message-ID"), []).append(m)
        return groups

    def verify(self, label, timeout=DEFAULT_TIMEOUT):
        """Waits (bounded) for every acknowledged message, then checks what arrived."""
        def missing():
            have = self._by_key()
            return [e for e in self.entries.values()
                    if e.acked and e.key not in have and ("lost", e.key) not in self.reported]
        deadline = time.monotonic() + timeout
        while missing() and time.monotonic() < deadline:
            time.sleep(0.05)
        problems = []
        for e in missing():
            problems.append(f"acknowledged message {e.key} never arrived upstream")
            self.reported.add(("lost", e.key))
        for key, got in self._by_key().items():
            e = self.entries.get(key)
            if e is None:
                if ("stranger", key) not in self.reported:
                    self.reported.add(("stranger", key))
                    problems.append(f"a message that no client was given 250 for arrived upstream: "
                                    f"Message-ID {key}, from {got[0].mail_from}, to {got[0].rcpt_tos}, "
                                    f"{len(got)} cop{'y' if len(got) == 1 else 'ies'}")
                continue
            if e.max_copies is not None and len(got) > e.max_copies and ("dup", key) not in self.reported:
                self.reported.add(("dup", key))
                problems.append(f"{key} arrived {len(got)} times")
            for m in got:
                why = self._differs(e, m)
                if why and ("content", key) not in self.reported:
                    self.reported.add(("content", key))
                    problems.append(f"{key}: {why}")
        assert not problems, f"after {label}: " + "; ".join(problems)

    @staticmethod
    def _differs(e, m):
        if e.sender is not None and m.mail_from != e.sender:
            return f"envelope sender {m.mail_from!r}, sent {e.sender!r}"
        if e.rcpts is not None and m.rcpt_tos != e.rcpts:
            return f"recipients {m.rcpt_tos[:5]}... ({len(m.rcpt_tos)}), sent {e.rcpts[:5]}... ({len(e.rcpts)})"
        try:
            body = m.body
        except AssertionError as err:
            return str(err)
        if e.same is not None:
            return None if e.same(body, e.data) else "relayed text does not match what was sent"
        if body != e.data:
            return (f"altered in transit beyond the Received: field "
                    f"({len(body)} bytes relayed, {len(e.data)} sent)")
        return None


class Harness:
    """A daemon, its upstream and its ledger."""

    def __init__(self, daemon, upstream):
        self.daemon = daemon
        self.upstream = upstream
        self.ledger = Ledger(upstream)
        self.deaths = []

    def tail(self, n=40):
        return "\n".join(self.daemon.log_lines(all_runs=True)[-n:])

    def revive(self):
        """Starts the daemon again (same port, same spool) if an earlier case killed it."""
        if self.daemon.proc is not None and not self.daemon.running:
            self.deaths.append(self.daemon.stop())
            self.ledger.crashed()
            self.daemon.start()

    def alive(self):
        return self.daemon.running

    def exit_status(self, settle=1.0):
        """"running" or "exited <code>" (a negative code is the signal that killed
        it). The kernel closes a dying process's sockets before its exit can be
        reaped, so a connection that just broke waits up to ``settle`` seconds."""
        if self.daemon.proc is None:
            return "not started"
        deadline = time.monotonic() + settle
        while self.daemon.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        rc = self.daemon.proc.poll()
        return "running" if rc is None else f"exited {rc}"


# --------------------------------------------------------------------------------
# the check run after every hostile case


def assert_survived(h: Harness, label: str):
    """The daemon process is alive; a normal client (smtplib) sends a message that
    arrives upstream; every message that got 250 arrived once, intact; nothing that
    was not acknowledged arrived."""
    assert h.alive(), f"postern died during {label} ({h.exit_status(0)}):\n{h.tail()}"
    msgid = new_id("survivor")
    msg = make_message(f"survivor after {label}", msgid=msgid)
    entry = h.ledger.expect(msgid, msg, sender="survivor@client.example")
    try:
        with smtplib.SMTP(HOST, h.daemon.port, timeout=10) as s:
            s.ehlo("survivor.example")
            refused = s.sendmail("survivor@client.example", ["ops@example.com"], msg)
    except (smtplib.SMTPException, OSError) as err:
        pytest.fail(f"after {label}, a normal client could not send ({err!r}); daemon {h.exit_status()}:\n{h.tail()}")
    assert refused == {}, refused
    entry.ack()
    h.ledger.verify(label)
    assert h.alive(), f"postern died after {label} ({h.exit_status(0)}):\n{h.tail()}"


# --------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def harness():
    """One daemon (timeout 3s) and one upstream for the cases that can share them."""
    workdir = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    up = Upstream().start()
    daemon = Daemon(workdir, up.port, receiver__timeout=f"{TIMEOUT_S}s")
    h = Harness(daemon, up)
    try:
        daemon.start()
        yield h
    finally:
        was_running = daemon.running        # a death at the last case was reported by that case
        rc = daemon.stop()
        up.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if h.deaths:
        print(f"shared postern died {len(h.deaths)} time(s) in this module (exit codes {h.deaths})")
    assert not was_running or rc == 0, f"shared postern exited {rc} on SIGTERM:\n{h.tail()}"


@pytest.fixture
def shared(harness, request):
    harness.revive()
    yield harness
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        print(f"--- shared postern, last log lines ---\n{harness.tail(80)}")


@pytest.fixture
def own(make_daemon, upstream):
    """``own(**overrides)``: a daemon of its own (timeout 3s unless overridden)."""
    def make(start=True, **overrides):
        overrides.setdefault("receiver__timeout", f"{TIMEOUT_S}s")
        d = make_daemon(upstream.port, start=start, **overrides)
        return Harness(d, upstream)
    return make


# --------------------------------------------------------------------------------
# client helpers


class Conn(RawClient):
    """A raw SMTP client with replies that fail the test clearly."""

    def __init__(self, h: Harness, timeout=10.0):
        super().__init__(HOST, h.daemon.port, timeout=timeout)
        self.h = h

    def get(self, what="a reply", timeout=10.0):
        self.sock.settimeout(timeout)
        try:
            return self.reply()
        except (EOFError, ConnectionResetError) as err:
            pytest.fail(f"connection closed while waiting for {what} ({err!r}); "
                        f"postern {self.h.exit_status()}:\n{self.h.tail()}")
        except socket.timeout:
            pytest.fail(f"no reply within {timeout}s waiting for {what}")

    def ask(self, line, what=None):
        """Sends one command (str or bytes, CRLF added) and returns its reply."""
        data = line if isinstance(line, bytes) else line.encode()
        self.send(data + b"\r\n")
        return self.get(what or repr(data[:60]))

    def open(self, ehlo="hostile.example"):
        code, text = self.get("the greeting")
        assert code == 220, (code, text)
        code, text = self.ask(f"EHLO {ehlo}")
        assert code == 250, (code, text)
        return self

    def maybe_reply(self, timeout):
        """The next reply, or None if the daemon closed or reset the connection."""
        self.sock.settimeout(timeout)
        try:
            return self.reply()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return None

    def reply_within(self, timeout):
        """The next reply; None if the connection was closed; "timeout" if none came."""
        try:
            return self.maybe_reply(max(timeout, 0.01))
        except socket.timeout:
            return "timeout"

    def rst(self):
        """Closes with a TCP reset (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def end_data(c: Conn, e: Entry, wire: bytes):
    """Sends the text as given (dot-stuffed or not) and the end of data; the entry
    counts as acknowledged once 250 is read, which is then asserted."""
    c.send(wire + b".\r\n")
    code, text = c.get("the reply to the end of data")
    if code == 250:
        e.ack()
    assert code == 250, (code, text)


def transaction(c: Conn, h: Harness, tag, rcpts=("ops@example.com",), msgid=None, msg=None, sender=None):
    """One whole transaction in lock step on an open session; returns the entry.
    A ``msg`` of the caller's must come with the ``msgid`` it carries."""
    assert (msg is None) == (msgid is None)
    if msg is None:
        msgid = new_id(tag)
        msg = make_message(f"{tag} message", msgid=msgid)
    sender = sender or f"{tag}@client.example"
    e = h.ledger.expect(msgid, msg, rcpts=rcpts, sender=sender)
    assert c.ask(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        assert c.ask(f"RCPT TO:<{r}>")[0] == 250
    assert c.ask("DATA")[0] == 354
    end_data(c, e, stuff(msg))
    return e


def rss_kb(h: Harness):
    return h.daemon.status_kb("VmRSS")


def enhanced(texts):
    """The enhanced status code (RFC 3463) at the start of a reply's first line."""
    return texts[0].split(" ", 1)[0] if texts and texts[0] else ""


# ================================================================================
# 1. malformed paths: a reply, never a crash (RFC 5321 §4.1.2, §4.5.3.1.3)

PATH_300 = "<" + "a" * 64 + "@" + ".".join(["b" * 57] * 4) + ".c>"    # a valid domain of 233 octets
ROUTE_300 = "<" + ",".join(["@r.example"] * 27) + ":x@y.example>"
assert len(PATH_300) == 300 and len(ROUTE_300) >= 300

BAD_REVERSE_PATHS = [
    ("empty-route-mailbox", "<@a:>"),
    ("lone-at", "<@>"),
    ("two-hop-route-no-mailbox", "<@a,@b:>"),
    ("route-empty-domain", "<@:x@y>"),
    ("quote-backslash", '<"\\>'),
    ("path-300-bytes", PATH_300),
    ("route-padded-path-300-bytes", ROUTE_300),
    ("dotted-route-no-mailbox", "<@a.example:>"),
    ("route-empty-hop", "<@a,:x@y.example>"),
    ("route-then-at", "<@a:@b.example>"),
    ("no-domain", "<x@>"),
    ("at-without-route-colon", "<@x@y.example>"),
    ("unterminated-quote", '<"x@y.example>'),
    ("unclosed-bracket", "<x@y.example"),
    ("bracket-only", "<"),
    ("space-in-local-part", "<x y@z.example>"),
    ("del-in-local-part", "<\x7f@y.example>"),
    ("leading-dot", "<.x@y.example>"),
    ("double-dot", "<x..y@y.example>"),
    ("empty-label", "<x@y..example>"),
    ("hyphen-label", "<x@-y.example>"),
    ("ipv4-octet-999", "<x@[1.2.3.999]>"),
    ("ipv4-three-parts", "<x@[1.2.3]>"),
    ("empty-literal", "<x@[]>"),
    ("ipv6-tag-only", "<x@[IPv6:]>"),
    ("ipv6-nine-groups", "<x@[IPv6:1:2:3:4:5:6:7:8:9]>"),
    ("ipv6-two-gaps", "<x@[IPv6:1::2::3]>"),
    ("ipv6-long-group", "<x@[IPv6:12345::]>"),
    ("ipv6-colons", "<x@[IPv6:::::::::]>"),
    ("ipv6-tag-ipv4", "<x@[IPv6:1.2.3.4]>"),
]


@pytest.mark.parametrize("path", [p for _, p in BAD_REVERSE_PATHS], ids=[i for i, _ in BAD_REVERSE_PATHS])
def test_rfc5321_4_1_2_malformed_reverse_path_501_5_1_7(shared, path):
    """RFC 5321 §4.1.2 (Path = "<" [ A-d-l ":" ] Mailbox ">", At-domain = "@"
    Domain) and §4.5.3.1.3 (a path is at most 256 octets, punctuation included):
    each of these MAIL commands gets 501 with RFC 3463 code 5.1.7 (bad sender's
    mailbox address syntax), the bad command changes nothing, and the session goes
    on. ``<@a:>`` used to kill the daemon (a trap in the source-route parser)."""
    with Conn(shared).open() as c:
        code, text = c.ask(f"MAIL FROM:{path}", what=f"the reply to MAIL FROM:{path[:40]}")
        assert code == 501 and enhanced(text) == "5.1.7", (code, text)
        assert c.ask("NOOP")[0] == 250
        # Nothing was opened: a valid MAIL is not "nested".
        assert c.ask("MAIL FROM:<after-bad-path@client.example>")[0] == 250
        assert c.ask("RSET")[0] == 250
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"MAIL FROM:{path[:40]}")


BAD_FORWARD_PATHS = [
    ("empty-route-mailbox", "<@a:>"),
    ("two-hop-route-no-mailbox", "<@a,@b:>"),
    ("route-empty-domain", "<@:x@y>"),
    ("null-path", "<>"),
    ("quote-backslash", '<"\\>'),
    ("path-300-bytes", PATH_300),
    ("ipv6-two-gaps", "<x@[IPv6:1::2::3]>"),
]


@pytest.mark.parametrize("path", [p for _, p in BAD_FORWARD_PATHS], ids=[i for i, _ in BAD_FORWARD_PATHS])
def test_rfc5321_4_1_2_malformed_forward_path_501_5_1_3(shared, path):
    """RFC 5321 §4.1.2 / §4.1.1.3: a malformed RCPT path gets 501 with RFC 3463
    code 5.1.3 (bad destination mailbox address syntax); the transaction stays open
    and a good recipient after it still makes a message."""
    with Conn(shared).open() as c:
        msgid = new_id("after-bad-rcpt")
        msg = make_message("after a bad forward path", msgid=msgid)
        e = shared.ledger.expect(msgid, msg, sender="bad-rcpt@client.example")
        assert c.ask("MAIL FROM:<bad-rcpt@client.example>")[0] == 250
        code, text = c.ask(f"RCPT TO:{path}", what=f"the reply to RCPT TO:{path[:40]}")
        assert code == 501 and enhanced(text) == "5.1.3", (code, text)
        assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
        assert c.ask("DATA")[0] == 354
        end_data(c, e, stuff(msg))
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"RCPT TO:{path[:40]}")


def test_rfc5321_4_1_2_source_route_accepted_and_ignored(shared):
    """RFC 5321 §4.1.2: the source route "MUST BE accepted, SHOULD NOT be generated,
    and SHOULD be ignored" — the fix for the crash above must not refuse it."""
    with Conn(shared).open() as c:
        msgid = new_id("routed")
        msg = make_message("source route", msgid=msgid)
        e = shared.ledger.expect(msgid, msg, rcpts=["ops@example.com"], sender="routed@client.example")
        code, text = c.ask("MAIL FROM:<@a.example,@b.example:routed@client.example>")
        assert code == 250, (code, text)
        code, text = c.ask("RCPT TO:<@c.example:ops@example.com>")
        assert code == 250, (code, text)
        assert c.ask("DATA")[0] == 354
        end_data(c, e, stuff(msg))
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, "source route")


BAD_MAIL_PARAMETERS = [
    ("size-20-digits", "SIZE=99999999999999999999"),
    ("size-2^64", "SIZE=18446744073709551616"),
    ("size-int64-max+1", "SIZE=9223372036854775808"),
    ("size-18-digits", "SIZE=999999999999999999"),
    ("size-negative", "SIZE=-1"),
    ("size-hex", "SIZE=0x10"),
    ("size-empty", "SIZE="),
    ("keyword-empty", "=x"),
    ("body-bogus", "BODY=9BITMIME"),
    ("unknown-keyword", "XFROBNICATE=1"),
    ("two-equals", "SIZE=1=2"),
]


@pytest.mark.parametrize("param", [p for _, p in BAD_MAIL_PARAMETERS], ids=[i for i, _ in BAD_MAIL_PARAMETERS])
def test_rfc5321_4_1_2_bad_mail_parameters_5xx(shared, param):
    """RFC 5321 §4.1.2 (esmtp-param) and RFC 1870 §6: numbers too large for any
    integer, negative or malformed, and unknown keywords get a 5xx (501, 552 or
    555); no parse of a number overflows; the session goes on unchanged."""
    with Conn(shared).open() as c:
        code, text = c.ask(f"MAIL FROM:<param@client.example> {param}")
        assert 500 <= code <= 599, (code, text)
        assert c.ask("NOOP")[0] == 250
        assert c.ask("MAIL FROM:<param@client.example>")[0] == 250
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"MAIL parameter {param}")


# ================================================================================
# 2. pipelining (RFC 2920)


@pytest.mark.parametrize("command", ["NOOP", "EHLO again.example"], ids=["NOOP", "EHLO"])
def test_rfc2920_400_pipelined_commands_all_answered_promptly(shared, command):
    """RFC 2920 §1 (among the server bugs pipelining trips on: input kept in process
    buffers and lost) and §3.1 (NOOP and EHLO end a group): a client writes 400
    NOOPs (or 400 EHLOs, whose replies are five lines each) in one write. Every one
    gets its 250, in order, well before the 3 s idle timeout, and nothing more (the
    daemon used to stop after 147 replies until the timeout: input processing
    paused while the output was half full and nothing resumed it)."""
    with Conn(shared).open() as c:
        c.send(f"{command}\r\n".encode() * 400)
        start = time.monotonic()
        codes = []
        for i in range(400):
            r = c.reply_within(2.0 - (time.monotonic() - start))
            if r is None or r == "timeout" or r[0] != 250:
                pytest.fail(f"after {len(codes)} of 400 pipelined {command.split()[0]}s: {r!r} "
                            f"{time.monotonic() - start:.2f}s after sending (bound 2.0 s, timeout {TIMEOUT_S} s)")
            codes.append(r[0])
        elapsed = time.monotonic() - start
        code, text = c.ask("QUIT")
        assert code == 221, f"an extra reply after the 400: {code} {text}"
    print(f"400 pipelined {command.split()[0]}s answered in {elapsed * 1000:.0f} ms")
    assert_survived(shared, f"400 pipelined {command.split()[0]}s")


def test_rfc2920_long_group_read_after_writing_everything(shared):
    """RFC 2920 §3.1: MAIL, 150 RCPTs and DATA written at once by a client that
    reads only afterwards. Every reply comes, in order: 250, 100 x 250, 50 x 452
    4.5.3 (RFC 5321 §4.5.3.1.10, max_recipients = 100), 354; then the message is
    relayed to exactly the first 100 recipients."""
    rcpts = [f"g{i:03d}@example.com" for i in range(150)]
    msgid = new_id("long-group")
    msg = make_message("long pipelined group", msgid=msgid)
    e = shared.ledger.expect(msgid, msg, rcpts=rcpts[:100], sender="group@client.example")
    with Conn(shared).open() as c:
        c.send(b"MAIL FROM:<group@client.example>\r\n"
               + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) + b"DATA\r\n")
        replies = []
        start = time.monotonic()
        for i in range(152):
            r = c.reply_within(2.5 - (time.monotonic() - start))
            if r is None or r == "timeout":
                pytest.fail(f"{'no reply within 2.5 s' if r else 'connection closed'} after {len(replies)} "
                            f"of 152 replies; last ones: {replies[-2:]}")
            replies.append(r)
        codes = [r[0] for r in replies]
        assert codes == [250] + [250] * 100 + [452] * 50 + [354], \
            f"replies out of order or wrong: {[(i, r) for i, r in enumerate(replies) if r[0] not in (250, 354)][:5]}"
        assert all(enhanced(r[1]) == "4.5.3" for r in replies[101:151]), replies[101]
        c.send(stuff(msg) + b".\r\nQUIT\r\n")
        code, text = c.get("the end-of-data reply")
        if code == 250:
            e.ack()
        assert code == 250, (code, text)
        assert c.get("the reply to QUIT")[0] == 221
        assert c.at_eof()
    assert_survived(shared, "a long pipelined group")


def test_rfc2920_client_that_never_reads_is_cut_off_in_bounded_memory(shared):
    """DESIGN principle 2 (fixed memory) and 7 (bound every idle period): a client
    that writes NOOPs endlessly and never reads a reply. Once its replies back up,
    the daemon stops reading from it; it is cut off within a few seconds of the
    last byte the daemon took (timeout = 3s), and the daemon's resident memory
    stays within 2 MiB of where it started, however much the client pushes."""
    h = shared
    c = Conn(h).open()
    chunk = memoryview(b"NOOP\r\n" * (64 * 1024 // 6))
    offset = 0
    base = rss_kb(h)
    peak = base
    pushed = 0
    start = last_progress = time.monotonic()
    cut = None
    c.sock.setblocking(False)
    try:
        while time.monotonic() - start < 30.0:
            _, writable, _ = select.select([], [c.sock], [], 0.05)
            peak = max(peak, rss_kb(h))
            assert h.alive(), f"postern died under a client that never reads:\n{h.tail()}"
            if not writable:
                continue
            try:
                n = c.sock.send(chunk[offset:])
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                cut = time.monotonic()
                break
            pushed += n
            offset = (offset + n) % len(chunk)     # the chunk is whole lines: never split a command
            last_progress = time.monotonic()
    finally:
        c.sock.close()
    print(f"never-reading client: pushed {pushed / 1048576:.1f} MiB in {time.monotonic() - start:.1f}s; "
          f"VmRSS {base} kB -> peak {peak} kB")
    assert cut is not None, f"a client that never reads was not cut off within 30 s ({pushed} bytes pushed)"
    stalled = cut - last_progress
    assert stalled <= CUT_OFF_BOUND, f"cut off {stalled:.1f}s after its last accepted byte (timeout {TIMEOUT_S}s)"
    assert peak - base <= RSS_BOUND_KB, f"VmRSS grew by {peak - base} kB ({base} -> {peak} kB)"
    assert_survived(h, "a client that never reads")


# ================================================================================
# 3. too many recipients (RFC 5321 §4.5.3.1.8-10)


def _rcpt_lockstep(c, rcpts):
    """RCPTs one at a time; stops with a clear failure at a reply other than 250/452."""
    replies = []
    for i, r in enumerate(rcpts):
        reply = c.ask(f"RCPT TO:<{r}>", what=f"the reply to RCPT #{i + 1}")
        if reply[0] not in (250, 452):
            pytest.fail(f"RCPT #{i + 1} of {len(rcpts)} got {reply} (max_recipients = 100)")
        replies.append(reply)
    return replies


def test_rfc5321_4_5_3_1_10_excess_recipients_452_transaction_stays_open(shared):
    """RFC 5321 §4.5.3.1.8: a server that limits recipients "MUST behave in an
    orderly fashion, such as rejecting additional addresses over its limit rather
    than silently discarding addresses previously accepted"; §4.5.3.1.10: the reply
    is 452. With max_recipients = 100, RCPTs 101-130 each get 452 4.5.3, the
    transaction stays open, DATA delivers to the first 100, and the client sends
    the other 30 in a second transaction on the same connection (the daemon used to
    answer RCPT 121 with 421 and drop the 100 accepted ones)."""
    rcpts = [f"x{i:03d}@example.com" for i in range(130)]
    with Conn(shared).open() as c:
        msgid = new_id("first-chunk")
        msg = make_message("first hundred", msgid=msgid)
        e1 = shared.ledger.expect(msgid, msg, rcpts=rcpts[:100], sender="chunks@client.example")
        assert c.ask("MAIL FROM:<chunks@client.example>")[0] == 250
        replies = _rcpt_lockstep(c, rcpts)
        assert [r[0] for r in replies[:100]] == [250] * 100
        bad = [(i + 101, r) for i, r in enumerate(replies[100:]) if r[0] != 452 or enhanced(r[1]) != "4.5.3"]
        assert not bad, f"excess RCPTs not answered 452 4.5.3: {bad[:3]}"
        assert c.ask("DATA")[0] == 354
        end_data(c, e1, stuff(msg))
        # The client delivers the rest in another transaction (§4.5.3.1.10).
        transaction(c, shared, "second-chunk", rcpts=rcpts[100:], sender="chunks@client.example")
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, "130 recipients")


def test_1000_excess_recipients_do_not_end_the_session(shared):
    """Like Postfix (smtpd_recipient_overshoot_limit = 1000), excess recipients do
    not count toward the error limit until 1000 of them: RCPTs 101-1100 all get
    452 4.5.3, and DATA after them still delivers to the first 100."""
    rcpts = [f"o{i:04d}@example.com" for i in range(1100)]
    with Conn(shared).open() as c:
        msgid = new_id("overshoot")
        msg = make_message("overshoot", msgid=msgid)
        e = shared.ledger.expect(msgid, msg, rcpts=rcpts[:100], sender="overshoot@client.example")
        assert c.ask("MAIL FROM:<overshoot@client.example>")[0] == 250
        replies = _rcpt_lockstep(c, rcpts)
        assert [r[0] for r in replies[:100]] == [250] * 100
        bad = [(i + 101, r) for i, r in enumerate(replies[100:]) if r[0] != 452]
        assert not bad, f"excess RCPTs not answered 452: {bad[:3]}"
        assert c.ask("DATA")[0] == 354
        end_data(c, e, stuff(msg))
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, "1000 excess recipients")


def test_10000_recipients_in_one_transaction(shared):
    """10,000 RCPTs in one transaction, pipelined in groups of 20. The first 100 get
    250, the rest 452 4.5.3, up to an optional 421 that closes the connection —
    but not before 1000 excess recipients were answered 452 (the overshoot limit;
    then 20 more errors is Postfix's hard limit). If the session survives to the
    end, DATA delivers to exactly the first 100. Either way the daemon survives and
    its memory does not grow with the recipients it refuses."""
    h = shared
    rcpts = [f"t{i:05d}@example.com" for i in range(10000)]
    msgid = new_id("ten-thousand")
    msg = make_message("ten thousand", msgid=msgid)
    e = h.ledger.expect(msgid, msg, rcpts=rcpts[:100], sender="many@client.example")
    base = rss_kb(h)
    with Conn(h).open() as c:
        assert c.ask("MAIL FROM:<many@client.example>")[0] == 250
        codes = []
        closed_by = None
        for g in range(0, len(rcpts), 20):
            c.send(b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts[g:g + 20]))
            for _ in range(20):
                r = c.maybe_reply(10.0)
                if r is None:
                    closed_by = "close"
                    break
                codes.append(r[0])
                n = len(codes)
                if r[0] == 421:
                    closed_by = "421"
                    break
                expected = 250 if n <= 100 else 452
                assert r[0] == expected and (n <= 100 or enhanced(r[1]) == "4.5.3"), \
                    f"RCPT #{n}: {r} (expected {expected})"
            if closed_by:
                break
        peak = rss_kb(h)
        if closed_by is None:
            assert c.ask("DATA")[0] == 354
            end_data(c, e, stuff(msg))
            assert c.ask("QUIT")[0] == 221
        else:
            assert closed_by == "421", f"connection closed without 421 after {len(codes)} RCPTs"
            assert len(codes) > 1100, \
                f"421 at RCPT #{len(codes)}: before 1000 excess recipients had been answered 452"
            assert c.at_eof(), "connection not closed after 421"
    print(f"10,000 RCPTs: {len(codes)} replies, ended by {closed_by or 'DATA'}; VmRSS {base} -> {peak} kB")
    assert peak - base <= RSS_BOUND_KB, f"VmRSS grew by {peak - base} kB over 10,000 RCPTs"
    assert_survived(h, "10,000 recipients")


# ================================================================================
# 4. configuration


def test_spool_max_size_alone_is_a_valid_configuration(own):
    """Issue 7 item 5: `[spool] max_size = 2M` without segment_size is valid — the
    segment size derives from max_size. check-config exits 0 and the daemon starts
    and relays."""
    h = own(start=False, spool__max_size="2M")
    del h.daemon.settings["spool"]["segment_size"]
    h.daemon.write_config()
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(h.daemon.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"check-config exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    h.daemon.start()
    assert_survived(h, "max_size = 2M alone")


# ================================================================================
# 5. slow clients (RFC 5321 §4.5.3.2)


def trickle(c: Conn, data: bytes, give_up_after=10.0):
    """Sends ``data`` one byte a second until the daemon speaks or closes. Returns
    (seconds from the first byte, the reply or None, closed?)."""
    start = time.monotonic()
    c.sock.settimeout(1.0)
    for b in data:
        try:
            c.sock.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, None, True
        ready, _, _ = select.select([c.sock], [], [], 1.0)
        if ready:
            r = c.reply_within(2.0)
            if r == "timeout":
                r = None
            return time.monotonic() - start, r, r is None or c.at_eof(5.0)
        if time.monotonic() - start > give_up_after:
            return time.monotonic() - start, None, False
    return time.monotonic() - start, None, False


def _assert_cut_off(elapsed, reply, closed, what):
    assert closed or reply is not None, \
        f"{what} at one byte a second was not cut off within {elapsed:.0f}s (timeout {TIMEOUT_S}s)"
    if reply is not None:
        assert reply[0] == 421 and enhanced(reply[1]) == "4.4.2", f"{what}: cut off with {reply}"
    assert closed, f"{what}: connection not closed after {reply}"
    assert elapsed <= CUT_OFF_BOUND, f"{what} cut off only after {elapsed:.1f}s (timeout {TIMEOUT_S}s)"


def test_rfc5321_4_5_3_2_command_trickled_one_byte_a_second_is_cut_off(shared):
    """RFC 5321 §4.5.3.2 ("a timer is set for each SMTP command"; §4.5.3.2.7 the
    server's wait for the next command) / issue 7 item 9: with timeout = 3s, a
    client that trickles a command at one byte a second gets 421 4.4.2 and is
    closed (or is just closed) within a few seconds; the bytes it keeps sending do
    not restart the clock."""
    with Conn(shared).open() as c:
        elapsed, reply, closed = trickle(c, b"MAIL FROM:<trickler@client.example>\r\n")
        _assert_cut_off(elapsed, reply, closed, "a trickled command")
    assert_survived(shared, "a trickled command")


def test_rfc5321_4_5_3_2_5_text_trickled_one_byte_a_second_is_cut_off_not_delivered(shared):
    """RFC 5321 §4.5.3.2.5 (a timer for each block of data) / issue 7 item 9:
    message text trickled at one byte a second is cut off within a few seconds and
    nothing of it is delivered."""
    msgid = new_id("trickled-text")
    with Conn(shared).open() as c:
        assert c.ask("MAIL FROM:<trickle-text@client.example>")[0] == 250
        assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
        assert c.ask("DATA")[0] == 354
        elapsed, reply, closed = trickle(c, make_message("trickled text", msgid=msgid, body="slow " * 40))
        _assert_cut_off(elapsed, reply, closed, "trickled message text")
    assert_survived(shared, "trickled message text")
    assert not [m for m in shared.upstream.messages if m.header("Message-ID") == message_key(msgid)]


class Tricklers:
    """Clients that each send one byte a second from a thread until stopped."""

    def __init__(self, h, n, in_data):
        self.conns = []
        for i in range(n):
            c = Conn(h).open()
            if in_data[i % len(in_data)]:
                assert c.ask(f"MAIL FROM:<slow{i}@client.example>")[0] == 250
                assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
                assert c.ask("DATA")[0] == 354
            c.sock.setblocking(False)
            self.conns.append(c)
        self.cut = [None] * n
        self.stop = threading.Event()
        self.start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for i, c in enumerate(self.conns):
                if self.cut[i] is not None:
                    continue
                try:
                    while c.sock.recv(4096):    # replies (a 421) are read and dropped
                        pass
                    self.cut[i] = time.monotonic() - self.start     # EOF
                    continue
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    self.cut[i] = time.monotonic() - self.start
                    continue
                try:
                    c.sock.send(b"x")
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    self.cut[i] = time.monotonic() - self.start
            self.stop.wait(1.0)

    def all_cut(self):
        return all(t is not None for t in self.cut)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.sock.close()


def test_normal_client_served_while_slow_clients_hold_connections(shared):
    """Issue 7 item 9: eight clients trickling bytes (four in commands, four in
    message text) hold connections; meanwhile a normal client is served at once."""
    t = Tricklers(shared, 8, in_data=[False, True])
    try:
        start = time.monotonic()
        assert_survived(shared, "slow clients holding connections")
        took = time.monotonic() - start
        assert took <= 3.0, f"the normal client took {took:.1f}s while slow clients held connections"
    finally:
        t.close()


# ================================================================================
# 6. NUL and 8-bit bytes in commands (RFC 5321 §2.4)

NUL_AND_8BIT = [
    ("nul-in-mailbox", b"MAIL FROM:<a\x00b@x>", "greeted"),
    ("ehlo-8bit", b"EHLO \xff\xfe", "greeted"),
    ("helo-utf8", b"HELO caf\xc3\xa9.example", "greeted"),
    ("only-nuls", b"\x00\x00\x00", "greeted"),
    ("nul-in-verb", b"MA\x00IL FROM:<a@x.example>", "greeted"),
    ("nul-after-verb", b"NOOP\x00", "greeted"),
    ("only-ff", b"\xff\xff\xff\xff", "greeted"),
    ("rcpt-utf8-local-part", b"RCPT TO:<\xc3\xa9@example.com>", "mail"),
    ("rcpt-utf8-domain", b"RCPT TO:<ops@exampl\xc3\xa9.com>", "mail"),
    ("mail-8bit-param", b"MAIL FROM:<a@x.example> X\xe9=1", "greeted"),
    ("data-with-nul", b"DATA\x00", "rcpt"),
]


@pytest.mark.parametrize("line,state", [(l, s) for _, l, s in NUL_AND_8BIT], ids=[i for i, _, _ in NUL_AND_8BIT])
def test_rfc5321_2_4_nul_and_8bit_bytes_in_commands_5xx(shared, line, state):
    """RFC 5321 §2.4: commands are ASCII; without an extension that allows more,
    "Receiving systems SHOULD reject such commands, normally using '500 syntax error
    - invalid character' replies". Each line gets one 5xx reply — no crash, no hang
    — and the session goes on (a NOOP after it gets 250)."""
    with Conn(shared).open() as c:
        if state in ("mail", "rcpt"):
            assert c.ask("MAIL FROM:<bytes@client.example>")[0] == 250
        if state == "rcpt":
            assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
        code, text = c.ask(line, what=f"the reply to {line!r}")
        assert 500 <= code <= 599, (line, code, text)
        assert c.ask("NOOP")[0] == 250
        assert c.ask("RSET")[0] == 250
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"command {line!r}")


# ================================================================================
# 7. a 1 MiB line of garbage (RFC 5321 §4.5.3.1.4)


def test_rfc5321_4_5_3_1_4_one_mebibyte_command_line_500_5_5_2_session_continues(shared):
    """RFC 5321 §4.5.3.1.4 (command lines are at most 512 octets) and §4.5.3.1.9
    ("500 Line too long"); §3.8: a server must not close the connection over a
    command it does not understand. A 1 MiB line of random bytes (no CRLF until
    the end) gets 500 5.5.2 "line too long", a NOOP after it gets 250, and the
    daemon's resident memory stays flat while the line streams in."""
    h = shared
    rng = random.Random(4531)
    garbage = bytes(b for b in rng.randbytes(1100 * 1024) if b not in (10, 13))[:1024 * 1024]
    with Conn(h).open() as c:
        base = peak = rss_kb(h)
        for i in range(0, len(garbage), 64 * 1024):
            c.send(garbage[i:i + 64 * 1024])
            peak = max(peak, rss_kb(h))
        c.send(b"\r\n")
        code, text = c.get("the reply to a 1 MiB line")
        peak = max(peak, rss_kb(h))
        assert code == 500 and enhanced(text) == "5.5.2" and "too long" in text[0].lower(), (code, text)
        assert c.ask("NOOP")[0] == 250
        assert c.ask("QUIT")[0] == 221
    assert peak - base <= RSS_BOUND_KB, f"VmRSS grew by {peak - base} kB for a 1 MiB line"
    assert_survived(h, "a 1 MiB line of garbage")


@pytest.mark.parametrize("length,code", [(512, 250), (513, 500)], ids=["512-octets", "513-octets"])
def test_rfc5321_4_5_3_1_4_command_line_limit_boundary(shared, length, code):
    """RFC 5321 §4.5.3.1.4: "The maximum total length of a command line including
    the command word and the <CRLF> is 512 octets." A NOOP (which takes a string,
    §4.1.1.9) of exactly 512 octets with its CRLF is a command; one octet more is
    refused with 500 5.5.2 and the session goes on."""
    line = b"NOOP " + b"n" * (length - 7)
    assert len(line) + 2 == length
    with Conn(shared).open() as c:
        got, text = c.ask(line)
        assert got == code and (code == 250 or enhanced(text) == "5.5.2"), (got, text)
        assert c.ask("NOOP")[0] == 250
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"a {length}-octet command line")


# ================================================================================
# 8. half-close


@pytest.mark.parametrize("quit", [True, False], ids=["with-quit", "without-quit"])
def test_half_closed_client_gets_every_reply(shared, quit):
    """A client writes a whole session (EHLO, MAIL, RCPT, DATA, text, end of data
    and QUIT) in one go, shuts down its sending side (shutdown(SHUT_WR)) and only
    then reads. Its end of the stream is not the end of the session (RFC 5321 §3.8:
    the server closes after QUIT and its 221): every reply comes, including the
    250 after the text (sent only once the message is on disk) and the 221; the
    message arrives once."""
    msgid = new_id("half-close")
    msg = make_message("half close", msgid=msgid)
    e = shared.ledger.expect(msgid, msg, sender="half@client.example")
    c = Conn(shared)
    try:
        c.sock.sendall(b"EHLO half.example\r\n"
                       b"MAIL FROM:<half@client.example>\r\n"
                       b"RCPT TO:<ops@example.com>\r\n"
                       b"DATA\r\n" + stuff(msg) + b".\r\n" + (b"QUIT\r\n" if quit else b""))
        c.sock.shutdown(socket.SHUT_WR)
        replies = []
        while True:
            r = c.maybe_reply(10.0)
            if r is None:
                break
            replies.append(r)
    finally:
        c.close()
    codes = [r[0] for r in replies]
    if codes[5:6] == [250]:
        e.ack()
    assert codes == [220, 250, 250, 250, 354, 250] + ([221] if quit else []), \
        f"replies to a half-closed client: {replies}"
    assert_survived(shared, f"a half-closed client ({'with' if quit else 'without'} QUIT)")


def test_half_closed_client_with_400_pipelined_noops_gets_every_reply(shared):
    """The same with a batch bigger than the daemon's output buffer: EHLO, 400
    NOOPs and QUIT, then shutdown(SHUT_WR). The end of the client's stream arrives
    while replies are still queued; it must not discard them (RFC 2920 §1: input
    and its replies are not lost): 220, 250, 400 x 250, 221, then the close."""
    c = Conn(shared)
    try:
        c.sock.sendall(b"EHLO half.example\r\n" + b"NOOP\r\n" * 400 + b"QUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        replies = []
        while True:
            r = c.reply_within(5.0)
            if r is None or r == "timeout":
                break
            replies.append(r)
    finally:
        c.close()
    codes = [r[0] for r in replies]
    assert codes == [220, 250] + [250] * 400 + [221], \
        f"{len(codes)} replies to a half-closed client of 402 commands; last ones: {replies[-3:]}"
    assert_survived(shared, "a half-closed client with 400 pipelined NOOPs")


# ================================================================================
# 9. resets


def test_reset_mid_data_delivers_nothing(shared):
    """A client that resets the connection (SO_LINGER 0, then close) halfway
    through its message text: nothing of it is delivered and the daemon goes on
    serving."""
    msgid = new_id("reset-mid-data")
    msg = make_message("reset mid data", msgid=msgid, body="half of it\r\n" * 2000)
    c = Conn(shared).open()
    assert c.ask("MAIL FROM:<reset@client.example>")[0] == 250
    assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
    assert c.ask("DATA")[0] == 354
    c.send(stuff(msg)[:len(msg) // 2])
    c.rst()
    assert_survived(shared, "a reset mid-DATA")
    hold_for(lambda: not [m for m in shared.upstream.messages if m.header("Message-ID") == message_key(msgid)],
             0.5, what="nothing delivered from the reset client")


def test_reset_right_after_final_dot_delivers_at_most_once(shared):
    """RFC 5321 §6.1 / DESIGN principle 4: a client that resets right after the
    final dot, before it can read the 250, may or may not have its message
    delivered (the daemon may already have committed it) — but never twice.
    Five clients, five messages; each arrives at most once."""
    ids = []
    for i in range(5):
        msgid = new_id("reset-after-dot")
        msg = make_message(f"reset after dot {i}", msgid=msgid)
        shared.ledger.expect(msgid, msg, sender="dot-reset@client.example")     # never acknowledged
        ids.append(message_key(msgid))
        c = Conn(shared).open()
        assert c.ask("MAIL FROM:<dot-reset@client.example>")[0] == 250
        assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
        assert c.ask("DATA")[0] == 354
        c.send(stuff(msg) + b".\r\n")
        c.rst()
    assert_survived(shared, "resets right after the final dot")
    hold_for(lambda: all(sum(m.header("Message-ID") == k for m in shared.upstream.messages) <= 1 for k in ids),
             1.0, what="each reset message delivered at most once")


# ================================================================================
# 10. bare CR / bare LF in commands (RFC 5321 §2.3.8)

BARE_LINE_ENDINGS = [
    ("lf-splits-mail-rcpt", b"MAIL FROM:<bare@client.example>\nRCPT TO:<ops@example.com>"),
    ("cr-splits-mail-rcpt", b"MAIL FROM:<bare@client.example>\rRCPT TO:<ops@example.com>"),
    ("leading-lf", b"\nMAIL FROM:<bare@client.example>"),
    ("cr-before-crlf", b"MAIL FROM:<bare@client.example>\r"),
    ("lf-after-noop", b"NOOP\nMAIL FROM:<bare@client.example>"),
    ("lf-cr", b"MAIL FROM:<bare@client.example>\n\r"),
]


@pytest.mark.parametrize("line", [l for _, l in BARE_LINE_ENDINGS], ids=[i for i, _ in BARE_LINE_ENDINGS])
def test_rfc5321_2_3_8_bare_cr_lf_in_command_refused_as_one_line(shared, line):
    """RFC 5321 §2.3.8: "Conforming implementations MUST NOT recognize or generate
    any other character or character sequence as a line terminator." A command
    line holding a bare CR or LF is refused as one line (one 500 5.5.2) and never
    split into two commands: no MAIL runs, so the RCPT after it gets 503."""
    with Conn(shared).open() as c:
        code, text = c.ask(line, what=f"the reply to {line!r}")
        assert code == 500 and enhanced(text) == "5.5.2", (code, text)
        code, text = c.ask("RCPT TO:<ops@example.com>")
        assert code == 503, f"the line was split: a hidden MAIL ran (RCPT got {code} {text})"
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"bare line ending {line!r}")


# ================================================================================
# 11. many connections (RFC 5321 §3.8)


@pytest.mark.parametrize("holders", ["idle", "trickling"])
def test_rfc5321_3_8_all_slots_held_421_4_7_0_then_service_resumes(own, holders):
    """max_connections = 4 clients from 127.0.0.1 hold every slot, saying nothing
    (idle) or one byte a second (trickling, issue 7 item 9). A further connection
    gets 421 4.7.0 at connect and is closed (RFC 5321 §3.8). Within a few seconds
    the timeout cuts the holders off, and normal service resumes."""
    h = own(receiver__max_connections="4")
    if holders == "idle":
        conns = [Conn(h) for _ in range(4)]
        for c in conns:
            assert c.get("the greeting")[0] == 220
        t = None
    else:
        t = Tricklers(h, 4, in_data=[False])
        conns = []
    try:
        with Conn(h) as extra:
            code, text = extra.get("the reply over max_connections")
            assert code == 421 and enhanced(text) == "4.7.0", (code, text)
            assert extra.at_eof(), "connection over max_connections not closed after 421"
        start = time.monotonic()
        if t is None:
            for i, c in enumerate(conns):
                r = c.maybe_reply(CUT_OFF_BOUND + 1)
                assert r is None or r[0] == 421, f"idle client {i}: {r}"
                assert c.at_eof(CUT_OFF_BOUND), f"idle client {i} not closed"
        else:
            wait_until(t.all_cut, timeout=CUT_OFF_BOUND + 3,
                       what=lambda: f"the trickling clients cut off (cut at {t.cut})")
        waited = time.monotonic() - start
        assert waited <= CUT_OFF_BOUND + 1, f"slots freed only after {waited:.1f}s (timeout {TIMEOUT_S}s)"
        assert_survived(h, f"all slots held by {holders} clients")
    finally:
        for c in conns:
            c.close()
        if t is not None:
            t.close()


# ================================================================================
# 12. more of what an attacker tries


def test_rfc5321_4_1_1_10_commands_after_quit_in_the_same_packet_ignored(shared):
    """RFC 5321 §4.1.1.10 (QUIT: 221, then close) and RFC 2920 §3.1 (QUIT only
    ends a group): a whole transaction written after QUIT in the same packet gets
    no reply and is not delivered."""
    msgid = new_id("after-quit")
    msg = make_message("after quit", msgid=msgid)
    with Conn(shared).open() as c:
        c.send(b"QUIT\r\nMAIL FROM:<after-quit@client.example>\r\nRCPT TO:<ops@example.com>\r\n"
               b"DATA\r\n" + stuff(msg) + b".\r\n")
        assert c.get("the reply to QUIT")[0] == 221
        assert c.at_eof(), "connection not closed after 221"
        assert c.buf == b"", f"replies after 221: {c.buf!r}"
    assert_survived(shared, "commands after QUIT")
    assert not [m for m in shared.upstream.messages if m.header("Message-ID") == message_key(msgid)]


def test_rfc5321_3_3_pipelined_data_without_recipients_text_never_stored(shared):
    """RFC 5321 §3.3: with no valid recipient the server may answer DATA with 503
    or 554; RFC 2920 §3.1: a pipelining client must check it. A client that does
    not, and writes its text right behind DATA, gets a 5xx for every text line
    (they are commands now) and nothing is stored or relayed."""
    msgid = new_id("orphan-text")
    with Conn(shared).open() as c:
        # A domain-less name is a local recipient (issue 9): with no [aliases]
        # entry for it, 550 5.1.1.
        c.send(b"MAIL FROM:<orphan@client.example>\r\n"
               b"RCPT TO:<no-at-sign>\r\n"
               b"DATA\r\n"
               + f"Subject: orphan\r\nMessage-ID: {message_key(msgid)}\r\n\r\norphan text\r\n.\r\n".encode()
               + b"NOOP\r\n")
        replies = [c.get(f"reply {i + 1} of 9") for i in range(9)]
        codes = [r[0] for r in replies]
        assert codes[0] == 250 and codes[1] == 550 and codes[2] in (503, 554), replies[:3]
        assert all(500 <= x <= 599 for x in codes[3:8]), f"text lines taken as something: {replies[3:8]}"
        assert codes[8] == 250, replies[8]
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, "pipelined DATA without recipients")
    assert not [m for m in shared.upstream.messages if m.header("Message-ID") == message_key(msgid)]


def _lines(data: bytes):
    """Lines, whatever ends them, without empty and lone-dot lines (for comparing a
    text with bare CR/LF, which Postern stores as CRLF, DataDecoder.swift)."""
    return [l for l in re.split(rb"\r\n|\r|\n", data) if l not in (b"", b".")]


SMUGGLE_ENDS = [
    ("LF.LF", b"\n.\n"), ("LF.CRLF", b"\n.\r\n"), ("CR.CR", b"\r.\r"), ("CRLF.LF", b"\r\n.\n"),
    ("CRLF.CR", b"\r\n.\r"), ("CR.CRLF", b"\r.\r\n"), ("LF.CR", b"\n.\r"),
]


@pytest.mark.parametrize("fake_end", [e for _, e in SMUGGLE_ENDS], ids=[i for i, _ in SMUGGLE_ENDS])
def test_rfc5321_4_1_1_4_smuggled_end_of_data_stays_text(shared, fake_end):
    """RFC 5321 §4.1.1.4 and §2.3.8 (SMTP smuggling): only <CRLF>.<CRLF> ends the
    text. A second transaction hidden behind a fake end stays text of the first
    message: no extra reply, no second message upstream. The message is accepted
    whole (and relayed with the hidden lines inside, bare line ends stored as
    CRLF) or refused whole."""
    outer_id, inner_id = new_id("smuggle-outer"), new_id("smuggle-inner")
    msg = (make_message("smuggle outer", msgid=outer_id, body=b"before") + fake_end
           + b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
           + f"Subject: smuggled\r\nMessage-ID: {message_key(inner_id)}\r\n\r\nsmuggled\r\n".encode()
           + b"after the hidden message\r\n")
    e = shared.ledger.expect(outer_id, msg, sender="honest@client.example",
                             same=lambda got, sent: _lines(got) == _lines(sent)
                             and b"MAIL FROM:<evil@attacker.example>" in got)
    with Conn(shared).open() as c:
        assert c.ask("MAIL FROM:<honest@client.example>")[0] == 250
        assert c.ask("RCPT TO:<ops@example.com>")[0] == 250
        assert c.ask("DATA")[0] == 354
        c.send(msg + b".\r\n")          # unstuffed, as an attacker sends it: the fake end is the point
        code, text = c.get("the end-of-data reply")
        if code == 250:
            e.ack()
        assert code == 250 or 500 <= code <= 599, (code, text)
        code2, text2 = c.ask("QUIT")
        assert code2 == 221, f"an extra reply after the end of data: {code2} {text2} (the hidden commands ran)"
    assert_survived(shared, f"smuggling with {fake_end!r}")
    assert not shared.daemon.find("from=<evil@attacker.example>"), "the hidden transaction was received"


def test_connection_reset_storm(shared):
    """200 clients that connect and reset at once, before or just after the
    greeting, half of them with a command in flight: writing to a reset socket must
    not kill the daemon (no SIGPIPE, no trap on ECONNRESET/EPIPE)."""
    for i in range(200):
        s = socket.create_connection((HOST, shared.daemon.port), timeout=5)
        if i % 2:
            s.sendall(b"EHLO storm.example\r\nMAIL FROM:<storm@client.example>\r\n")
        if i % 4 == 3:
            s.recv(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert_survived(shared, "a storm of reset connections")


def test_error_limit_cuts_off_a_client_that_only_sends_garbage(shared):
    """DESIGN principle 7 (bound everything; Postfix's smtpd_hard_error_limit): a
    client that sends nothing but unknown commands gets 500s and, after at most 20
    errors, a 421 and the close — it cannot keep a slot busy forever."""
    with Conn(shared).open() as c:
        c.send(b"".join(f"XCMD{i} garbage\r\n".encode() for i in range(40)))
        replies = []
        while True:
            r = c.maybe_reply(5.0)
            if r is None:
                break
            replies.append(r)
            if r[0] == 421:
                break
        codes = [r[0] for r in replies]
        assert codes and codes[-1] == 421, f"no 421 after {len(codes)} errors: {codes[-3:]}"
        assert all(x == 500 for x in codes[:-1]) and 10 <= len(codes) - 1 <= 20, codes
        assert c.at_eof(), "connection not closed after 421"
    assert_survived(shared, "an endless stream of unknown commands")


@pytest.mark.parametrize("name", ["a" * 500, 'evil;(comment "\\quoted', "x" * 60 + ";Mon, 1 Jan 2001 00:00:00 +0000"],
                         ids=["500-octets", "punctuation", "fake-date"])
def test_rfc5321_4_4_hostile_ehlo_name_cannot_break_the_received_field(shared, name):
    """RFC 5321 §4.4: the trace field records the EHLO name. A 500-octet name or
    one full of header punctuation is refused with 501 or accepted; if accepted,
    the message's Received: field stays one well-formed field (no line over 998
    octets, RFC 5322 §2.1.1) and the text after it is untouched."""
    with Conn(shared) as c:
        assert c.get("the greeting")[0] == 220
        code, text = c.ask(f"EHLO {name}")
        assert code in (250, 501), (code, text)
        if code == 250:
            e = transaction(c, shared, "ehlo-name")
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, f"EHLO {name[:20]}")
    if code == 250:
        got = [m for m in shared.upstream.messages if m.header("Message-ID") == e.key][0]
        head = got.content.split(b"\r\n\r\n", 1)[0]
        assert max(len(l) for l in head.split(b"\r\n")) <= 998, "a header line over 998 octets"
        assert got.content.lower().startswith(b"received: from ")


def test_binary_text_round_trips_byte_exact(shared):
    """Message text with every byte value but CR and LF (NUL included), in lines
    under 998 octets: 8-bit data in the text is the client's business, and it
    arrives byte-exact (only commands must be ASCII)."""
    rng = random.Random(8)
    lines = []
    for _ in range(200):
        line = bytes(b for b in rng.randbytes(600) if b not in (10, 13))[:rng.randrange(1, 500)]
        lines.append(line)
    msgid = new_id("binary")
    msg = make_message("binary text", msgid=msgid, body=b"\r\n".join(lines) + b"\r\n")
    with Conn(shared).open() as c:
        transaction(c, shared, "binary", msgid=msgid, msg=msg, sender="binary@client.example")
        assert c.ask("QUIT")[0] == 221
    assert_survived(shared, "binary message text")


SESSION_CORPUS = sorted(p for p in (Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "session").iterdir()
                        if p.is_file())
# The session fuzz target reads 7 bytes of settings before the client's bytes
# (Tests/fuzz/session.swift).
SESSION_SETTINGS_BYTES = 7


def test_sessions_the_fuzzer_found_interesting_replayed_against_the_daemon(own):
    """Issue 7 item 10: every input the `session` fuzz target kept (the inputs that
    reached new code: malformed commands, odd pipelining, broken DATA) is sent, as
    the client's bytes, to the real daemon, then the client half-closes and reads
    until the daemon closes. After all of them the daemon is alive and a normal
    client's message arrives. (A daemon of its own: some inputs hold whole
    transactions whose messages arrive upstream, which the shared ledger would
    count as strangers.)"""
    assert len(SESSION_CORPUS) >= 10, "the session corpus is missing"
    h = own()
    for f in SESSION_CORPUS:
        stream = f.read_bytes()[SESSION_SETTINGS_BYTES:]
        s = socket.create_connection((HOST, h.daemon.port), timeout=10)
        try:
            s.sendall(stream)
            s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and s.recv(65536):
                pass
            assert time.monotonic() < deadline, f"{f.name}: the session did not end after the half-close"
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
        assert h.alive(), f"postern died on the fuzzer's input {f.name} ({h.exit_status(0)}):\n{h.tail()}"
    msgid = new_id("after-corpus")
    msg = make_message("after the fuzzer's sessions", msgid=msgid)
    with smtplib.SMTP(HOST, h.daemon.port, timeout=10) as c:
        assert c.sendmail("survivor@client.example", ["ops@example.com"], msg) == {}
    wait_until(lambda: any(m.header("Message-ID") == message_key(msgid) for m in h.upstream.messages),
               what="the normal client's message upstream")
