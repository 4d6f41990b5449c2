"""Store and forward: retries, restarts, crashes, per-recipient replies."""

import collections
import smtplib
import threading

import pytest

from conftest import RawClient, hold_for, make_message, send_one, wait_until


def subjects(upstream):
    return collections.Counter(m.header("Subject") for m in upstream.messages)


@pytest.mark.board
def test_rfc5321_6_1_accepted_while_upstream_down_then_delivered(make_daemon, stopped_upstream):
    """RFC 5321 §6.1: once 250 is given the relay keeps the message and retries
    until the upstream takes it."""
    daemon = make_daemon(stopped_upstream.port)
    sent = send_one(daemon.port, "upstream down at first")   # asserts the 250
    daemon.wait_for_log("event=deferred")
    assert stopped_upstream.count() == 0
    stopped_upstream.start()
    got = stopped_upstream.wait_for(1)[0]
    assert got.body == sent
    assert got.rcpt_tos == ["ops@example.com"]
    daemon.wait_for_log("event=delivered")


@pytest.mark.board
def test_restart_with_nonempty_queue_delivers_each_exactly_once(make_daemon, stopped_upstream):
    daemon = make_daemon(stopped_upstream.port)
    for i in range(3):
        send_one(daemon.port, f"queued {i}")
    assert len(daemon.wait_for_log("event=received", count=3)) == 3
    daemon.wait_for_log("event=deferred")
    assert daemon.stop() == 0, daemon.log_text()

    stopped_upstream.start()
    daemon.start()          # same config, same spool, same port
    stopped_upstream.wait_for(3)
    wait_until(lambda: len(daemon.events("delivered")) >= 3, what="3 delivered events after restart")
    # Retry max is 2 s: a second copy of anything would show within that.
    hold_for(lambda: stopped_upstream.count() == 3, 2.5, what="exactly 3 messages upstream")
    assert subjects(stopped_upstream) == {f"queued {i}": 1 for i in range(3)}


@pytest.mark.board
def test_kill9_right_after_250_loses_nothing(make_daemon, stopped_upstream):
    """DESIGN principle 4 / RFC 5321 §6.1: a 250 to DATA is a promise that survives
    SIGKILL. The daemon is killed the moment the last 250 reaches the client."""
    daemon = make_daemon(stopped_upstream.port)
    s = smtplib.SMTP("127.0.0.1", daemon.port, timeout=15)
    try:
        for i in range(5):
            assert s.sendmail("sender@client.example", ["ops@example.com"],
                              make_message(f"crash {i}")) == {}
        daemon.kill9()
    finally:
        s.close()

    stopped_upstream.start()
    daemon.start()
    wait_until(lambda: all(subjects(stopped_upstream)[f"crash {i}"] >= 1 for i in range(5)),
               what=lambda: f"all 5 acknowledged messages upstream (have {dict(subjects(stopped_upstream))})")


@pytest.mark.board
def test_kill9_under_load_loses_no_acknowledged_message(make_daemon, upstream):
    """Crash test: two clients send continuously, the daemon is SIGKILLed mid-way
    and restarted; every message that got 250 arrives at least once."""
    daemon = make_daemon(upstream.port)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(t):
        i = 0
        while not stop.is_set() and i < 500:
            try:
                with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
                    while not stop.is_set() and i < 500:
                        subject = f"load {t}-{i}"
                        if s.sendmail("sender@client.example", ["ops@example.com"],
                                      make_message(subject, body="x" * 3000 + "\r\n")) == {}:
                            with lock:
                                acked.append(subject)
                        i += 1
            except (OSError, smtplib.SMTPException):
                return  # the daemon died under us: that message was never acknowledged

    threads = [threading.Thread(target=client, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: len(acked) >= 40, what="40 acknowledged messages before the crash")
        daemon.kill9()
    finally:
        stop.set()
        for th in threads:
            th.join(20)
    with lock:
        promised = set(acked)
    assert len(promised) >= 40

    daemon.start()
    wait_until(lambda: promised <= set(subjects(upstream)),
               what=lambda: f"every acknowledged message upstream "
                    f"(missing {sorted(promised - set(subjects(upstream)))[:10]})")


def test_rfc5321_per_recipient_replies_refused_deferred_accepted(make_daemon, any_upstream):
    """RFC 5321 §3.3/§4.2.5 (and DESIGN, Delivery): 2xx recipients are done, a 5xx
    recipient is failed and never retried, a 4xx recipient is retried. Run against
    an upstream without and with PIPELINING (RFC 2920 §3.1: replies in order)."""
    upstream = any_upstream
    upstream.reply_to_rcpt("refused@example.com", "550 5.1.1 <refused@example.com>: no such user")
    upstream.reply_to_rcpt("later@example.com", "451 4.3.0 try again later")
    daemon = make_daemon(upstream.port)
    sent = send_one(daemon.port, "per recipient",
                    rcpt=("ok@example.com", "refused@example.com", "later@example.com"))

    msgs = upstream.wait_for(2)
    wait_until(lambda: len(daemon.events("delivered")) >= 2, what="2 delivered events")
    # Retry max is 2 s: a repeat delivery or a retry of the refused one shows within that.
    hold_for(lambda: upstream.count() == 2, 2.5, what="exactly 2 deliveries")
    msgs = upstream.messages
    assert [m.rcpt_tos for m in msgs] == [["ok@example.com"], ["later@example.com"]], msgs
    assert all(m.body == sent for m in msgs)
    assert upstream.rcpt_attempts("refused@example.com") == 1, "a 5xx recipient was retried"
    assert upstream.rcpt_attempts("later@example.com") == 2
    assert upstream.rcpt_attempts("ok@example.com") == 1

    failed = [l for l in daemon.find("event=failed") if "refused@example.com" in l]
    deferred = [l for l in daemon.find("event=deferred") if "later@example.com" in l]
    delivered = daemon.find("event=delivered")
    assert len(failed) == 1 and "550" in failed[0], daemon.log_text()
    assert len(deferred) == 1 and "451" in deferred[0], daemon.log_text()
    assert any("ok@example.com" in l for l in delivered), daemon.log_text()
    assert any("later@example.com" in l for l in delivered), daemon.log_text()
    assert not any("refused@example.com" in l for l in delivered), daemon.log_text()
    assert not any("ok@example.com" in l or "later@example.com" in l
                   for l in daemon.find("event=failed")), daemon.log_text()


@pytest.mark.board
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_rfc5321_6_1_unfinished_message_never_delivered(make_daemon, upstream, sig):
    """A message whose text never ended got no 250: it must not be delivered
    (truncated) after a stop or a crash. On SIGTERM the client gets 421
    (RFC 5321 §3.8) and the daemon exits 0."""
    daemon = make_daemon(upstream.port)
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<sender@client.example>")[0] == 250
        assert c.cmd("RCPT TO:<ops@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message("truncated") + b"first half of the text\r\n" * 4000)   # ~96 KB
        # Make sure the daemon has read (and spooled) the text before it is stopped.
        wait_until(lambda: _spool_bytes(daemon) > 20000, what="the partial text in the spool")
        if sig == "SIGTERM":
            assert daemon.stop() == 0, daemon.log_text()
            try:
                code, text = c.reply()
                assert code == 421, (code, text)
            except (EOFError, ConnectionResetError):
                pass  # closing without a reply is acceptable too; a 250 is not
        else:
            daemon.kill9()
    daemon.start()
    send_one(daemon.port, "after the unfinished one")
    upstream.wait_for_match(lambda m: m.header("Subject") == "after the unfinished one")
    hold_for(lambda: all(m.header("Subject") != "truncated" for m in upstream.messages), 1.5,
             what="the unfinished message staying undelivered")


def _spool_bytes(daemon):
    spool = daemon.workdir / "spool"
    return sum(p.stat().st_size for p in spool.iterdir() if p.name.endswith(".seg"))


@pytest.mark.board
def test_restart_recovers_message_larger_than_a_segment(make_daemon, stopped_upstream):
    """A queued message spanning several spool segments survives a restart intact."""
    import hashlib
    import os
    daemon = make_daemon(stopped_upstream.port, spool__segment_size="1M", receiver__max_message_size="8M")
    body = os.urandom(3 * 1024 * 1024).hex().encode()     # 6 MiB of hex
    body = b"\r\n".join(body[i:i + 998] for i in range(0, len(body), 998)) + b"\r\n"
    msg = make_message("multi segment", body=body)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=60) as s:
        assert s.sendmail("sender@client.example", ["ops@example.com"], msg) == {}
    assert daemon.stop() == 0, daemon.log_text()
    stopped_upstream.start()
    daemon.start()
    got = stopped_upstream.wait_for(1, timeout=30)[0]
    assert hashlib.sha256(got.body).hexdigest() == hashlib.sha256(msg).hexdigest()
    wait_until(lambda: daemon.find("event=delivered"), what="event=delivered")
    hold_for(lambda: stopped_upstream.count() == 1, 2.5, what="a single delivery")


def test_clean_restart_does_not_redeliver_finished_messages(make_daemon, upstream):
    """Messages delivered before a clean stop are finished: a restart on the same
    spool sends none of them again."""
    daemon = make_daemon(upstream.port)
    for i in range(5):
        send_one(daemon.port, f"done {i}")
    upstream.wait_for(5)
    wait_until(lambda: len(daemon.events("delivered")) >= 5, what="5 delivered events")
    assert daemon.stop() == 0, daemon.log_text()
    daemon.start()
    send_one(daemon.port, "after restart")
    upstream.wait_for(6)
    hold_for(lambda: upstream.count() == 6, 2.5, what="no redelivery after restart")
    assert subjects(upstream) == {**{f"done {i}": 1 for i in range(5)}, "after restart": 1}


@pytest.mark.board
def test_finished_segments_are_deleted(make_daemon, upstream):
    """DESIGN principle 5: whole segments are deleted once every message in them is
    finished, so the spool does not keep what was delivered."""
    daemon = make_daemon(upstream.port, spool__segment_size="64K")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        for i in range(20):
            assert s.sendmail("sender@client.example", ["ops@example.com"],
                              make_message(f"gc {i}", body=("g" * 98 + "\r\n") * 300)) == {}  # ~30 KB
    upstream.wait_for(20)
    wait_until(lambda: len(daemon.events("delivered")) >= 20, what="20 delivered events")
    written = 20 * 30 * 1024
    wait_until(lambda: _spool_bytes(daemon) <= 3 * 64 * 1024,
               what=lambda: f"finished segments deleted (spool holds {_spool_bytes(daemon)} bytes "
                    f"after {written} bytes were delivered)")
