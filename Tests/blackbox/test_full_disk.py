"""A full disk never outlives its cause (issue 7 item 4).

DESIGN principle 4: a full disk loses nothing acknowledged and is refused with
452 4.3.1 — and README "Full disk": mail is accepted again once there is room.
The spool's file system here is a small tmpfs, the default 4 MiB segment does
not fit in it, and messages are bigger than what is left when it is full: the
segment being written is then the only one, and once the queue drains it holds
nothing but finished records. These tests fill the disk until
452, drain the upstream, and require a 250 for a new message within a bounded
poll; every message that got 250 must arrive upstream once, exactly as sent.
"""

import collections
import os

import pytest

from conftest import RawClient, hold_for, make_message, wait_until
# The full-disk helpers of the durability suite: one transaction on an open
# session, the 4.3.1 check, filler text and the 4 MiB tmpfs fixture.
from test_durability import filler, is_452_4_3_1, send_raw, tmpfs_spool  # noqa: F401 (a fixture)

MESSAGE = 20_000       # bytes of body: bigger than what a full 4 MiB tmpfs has left


def transaction(c: RawClient, msg: bytes):
    return send_raw(c, "sender@client.example", msg)


def session(port):
    c = RawClient("127.0.0.1", port, timeout=15)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.example")[0] == 250
    return c


def fill_until_refused(daemon, tag, sent, limit=1000):
    """Sends MESSAGE-sized messages on one session until one is refused; the
    refusal must be 452 4.3.1 (at MAIL or at the end of DATA). Adds the accepted
    ones to ``sent`` (subject -> bytes) and returns how many were accepted."""
    accepted = 0
    with session(daemon.port) as c:
        for i in range(limit):
            subject = f"{tag} {i}"
            msg = make_message(subject, body=filler(MESSAGE, subject))
            stage, code, texts = transaction(c, msg)
            if code == 250:
                sent[subject] = msg
                accepted += 1
                continue
            assert stage in ("MAIL", "END") and is_452_4_3_1(code, texts), \
                f"{tag}: message {i} got {stage} {code} {texts} (expected 452 4.3.1)\n{daemon.log_text()}"
            # The session goes on, and while nothing drains the next MAIL is refused too.
            assert c.cmd("RSET")[0] == 250
            code, texts = c.cmd("MAIL FROM:<sender@client.example>")
            assert is_452_4_3_1(code, texts), f"{tag}: MAIL after the refusal got {code} {texts}"
            assert c.cmd("QUIT")[0] == 221
            return accepted
    pytest.fail(f"{tag}: {limit} messages of {MESSAGE} bytes accepted without a refusal")


def accepted_within(daemon, subject, sent, timeout):
    """Polls with a new message until it gets 250 (each try on a new session);
    every refusal on the way must be 452 4.3.1."""
    msg = make_message(subject, body=filler(MESSAGE, subject))

    def attempt():
        with session(daemon.port) as c:
            stage, code, texts = transaction(c, msg)
            if code == 250:
                sent[subject] = msg
                return True
            assert is_452_4_3_1(code, texts), (stage, code, texts)
            return False
    wait_until(attempt, timeout=timeout, interval=0.2,
               what=lambda: f"250 for '{subject}' once the queue drained\n{daemon.log_text()}")


def delivered_exactly(upstream, sent):
    """Every message that got 250 arrived once, byte for byte as the client sent it."""
    wait_until(lambda: set(sent) <= {m.header("Subject") for m in upstream.messages}, timeout=30,
               what=lambda: "every accepted message upstream (missing "
                            f"{sorted(set(sent) - {m.header('Subject') for m in upstream.messages})[:5]})")
    counts = collections.Counter(m.header("Subject") for m in upstream.messages)
    # Retry max is 2 s: a second copy of anything would show within that.
    hold_for(lambda: all(counts[s] == 1 for s in sent) and
             collections.Counter(m.header("Subject") for m in upstream.messages) == counts, 2.5,
             what=lambda: "every accepted message upstream exactly once")
    for m in upstream.messages:
        subject = m.header("Subject")
        assert m.body == sent[subject], f"'{subject}' arrived changed"


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_issue7_4_full_disk_recovers_when_the_queue_drains(tmpfs_spool, make_daemon, stopped_upstream):
    """The issue's case: a 4 MiB tmpfs, `segment_size = 4M`, 20 KB messages and
    the upstream down. Fill until 452 4.3.1; start the upstream and let it drain
    everything: the queue is empty, and a new message must get 250 within a
    bounded poll (before the fix the finished 4 MiB segment stayed and every new
    message got 452 for as long as the daemon ran). Twice, so the recovered spool
    fills and recovers again; everything accepted arrives once, unchanged."""
    upstream = stopped_upstream
    daemon = make_daemon(upstream.port, spool__max_size="64M", spool__segment_size="4M")
    sent = {}
    for cycle in ("first", "second"):
        accepted = fill_until_refused(daemon, f"{cycle} fill", sent)
        free = free_bytes(tmpfs_spool)
        print(f"{cycle} fill: {accepted} x {MESSAGE} bytes accepted, then 452 4.3.1 with {free} bytes free")
        assert accepted >= 100, f"only {accepted} messages fit in 4 MiB"
        assert free < MESSAGE + 4096, f"refused with {free} bytes free: the disk was not full"
        assert daemon.running, daemon.log_text()

        upstream.start()
        wait_until(lambda: {s for s in sent} <= {m.header("Subject") for m in upstream.messages}, timeout=30,
                   what="the queue drained upstream")
        accepted_within(daemon, f"{cycle} after the drain", sent, timeout=5)
        upstream.wait_for_match(lambda m: m.header("Subject") == f"{cycle} after the drain")
        upstream.stop()
    assert daemon.find("spool space reclaimed"), daemon.log_text()
    upstream.start()
    delivered_exactly(upstream, sent)
    assert daemon.running


def test_issue7_4_disk_filled_by_another_program_recovers_when_it_frees_space(tmpfs_spool, make_daemon, upstream):
    """Another program fills the file system to the last page while the spool's
    segment holds only finished records. A message then fails for lack of space
    (452 4.3.1 at the end of DATA, or at MAIL); the spool reclaims its finished
    segment (logged) and keeps going: when the failed write's cut gave back
    enough of the segment's zero-filled room for a new segment's header, the
    new segment comes first, and when not even that fits, the old one is deleted
    first (also logged; the unit test `rollFailsDeleteFirst` makes sure of that
    path). While the disk stays full, MAIL is refused with 452 4.3.1 at once;
    when the other program frees its space, a new message gets 250 within a
    bounded poll and is delivered unchanged."""
    daemon = make_daemon(upstream.port, spool__max_size="64M", spool__segment_size="4M")
    sent = {}
    with session(daemon.port) as c:
        # Less than `minimumFreeSpace` (128 KiB) of records: reclaiming them does
        # not make room for new mail, freeing the other program's space does.
        for i in range(2):
            msg = make_message(f"before {i}", body=filler(MESSAGE, f"before {i}"))
            assert transaction(c, msg)[1] == 250
            sent[f"before {i}"] = msg
    upstream.wait_for(2)
    wait_until(lambda: len(daemon.events("delivered")) >= 2, what="two deliveries logged")

    hog = tmpfs_spool / "hog"
    fd = os.open(hog, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 1):      # to the last byte of the last page
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert free_bytes(tmpfs_spool) == 0

    with session(daemon.port) as c:
        msg = make_message("disk full", body=filler(5 * MESSAGE, "disk full"))
        stage, code, texts = transaction(c, msg)
        assert (stage, is_452_4_3_1(code, texts)) in (("END", True), ("MAIL", True)), (stage, code, texts)
        assert c.cmd("RSET")[0] == 250
        code, texts = c.cmd("MAIL FROM:<sender@client.example>")
        assert is_452_4_3_1(code, texts), (code, texts)
    wait_until(lambda: daemon.find("no room for a new spool segment") or daemon.find("spool space reclaimed"),
               what=lambda: f"the log line of the reclaimed segment\n{daemon.log_text()}")
    assert daemon.running, daemon.log_text()

    hog.unlink()
    # At once, not after a waiting period: the spool asks the file system.
    accepted_within(daemon, "the other program freed its space", sent, timeout=3)
    delivered_exactly(upstream, sent)
    segments = sorted(p.name for p in tmpfs_spool.iterdir() if p.name.endswith(".seg"))
    assert len(segments) == 1, segments
