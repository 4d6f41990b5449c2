"""Refusals: each gets the right reply, and the daemon keeps serving afterwards
(a normal message still goes through on a new connection)."""

import smtplib
import time

import pytest

from conftest import RawClient, make_message, send_one, wait_until


def assert_still_serving(daemon, upstream, subject, host="127.0.0.1"):
    assert daemon.running, f"postern died:\n{daemon.log_text()}"
    send_one(daemon.port, subject, host=host)
    upstream.wait_for_match(lambda m: m.header("Subject") == subject,
                            what=f"the follow-up message {subject!r} upstream")


def never_relayed(upstream, subject):
    return all(m.header("Subject") != subject for m in upstream.messages)


def test_rfc1870_6_1_size_parameter_over_limit_552_5_3_4(make_daemon, upstream):
    daemon = make_daemon(upstream.port, receiver__max_message_size="10K")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.has_extn("size") and s.esmtp_features["size"] == "10240", s.esmtp_features
        code, text = s.mail("sender@client.example", ["SIZE=20000"])
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        # A declared size within the limit is fine on the same session.
        code, text = s.mail("sender@client.example", ["SIZE=2000"])
        assert code == 250, (code, text)
    daemon.wait_for_log("event=rejected")
    assert_still_serving(daemon, upstream, "after SIZE refusal")


def test_rfc5321_4_5_3_1_7_oversized_body_without_size_552_5_3_4(make_daemon, upstream):
    daemon = make_daemon(upstream.port, receiver__max_message_size="10K")
    big = make_message("too big", body=("y" * 98 + "\r\n") * 300)   # ~30 KB
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.mail("sender@client.example")[0] == 250      # no SIZE= parameter
        assert s.rcpt("ops@example.com")[0] == 250
        code, text = s.data(big)
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        # The session goes on: the transaction was reset.
        assert s.noop()[0] == 250
        assert s.rcpt("ops@example.com")[0] == 503
    assert_still_serving(daemon, upstream, "after oversized body")
    assert never_relayed(upstream, "too big")
    assert len(daemon.wait_for_log("event=received")) == 1     # only the follow-up message


def test_rfc5321_4_5_3_1_10_too_many_recipients_452_4_5_3(make_daemon, upstream):
    daemon = make_daemon(upstream.port, receiver__max_recipients="3")
    msg = make_message("three recipients")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.mail("sender@client.example")[0] == 250
        for i in range(3):
            assert s.rcpt(f"r{i}@example.com")[0] == 250
        code, text = s.rcpt("r3@example.com")
        assert code == 452 and text.startswith(b"4.5.3"), (code, text)
        # The accepted recipients' transaction still completes.
        code, text = s.data(msg)
        assert code == 250, (code, text)
    got = upstream.wait_for_match(lambda m: m.header("Subject") == "three recipients")[0]
    assert got.rcpt_tos == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert_still_serving(daemon, upstream, "after too many recipients")


def test_rfc5321_4_3_2_bad_sequence_503(daemon, upstream):
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        code, text = c.cmd("RCPT TO:<ops@example.com>")
        assert code == 503, ("RCPT before MAIL", code, text)
        code, text = c.cmd("DATA")
        assert code == 503, ("DATA before MAIL", code, text)
        assert c.cmd("MAIL FROM:<sender@client.example>")[0] == 250
        code, text = c.cmd("DATA")
        assert code == 503, ("DATA before RCPT", code, text)
        code, text = c.cmd("MAIL FROM:<sender@client.example>")
        assert code == 503, ("nested MAIL", code, text)
        assert c.cmd("QUIT")[0] == 221
    assert_still_serving(daemon, upstream, "after bad sequence")


def test_rfc5321_4_2_4_unknown_command_500(daemon, upstream):
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        code, text = c.cmd("XYZZY frobnicate")
        assert code == 500, (code, text)
        assert c.cmd("NOOP")[0] == 250     # the session survives it
        assert c.cmd("QUIT")[0] == 221
    assert_still_serving(daemon, upstream, "after unknown command")


def test_denied_client_550_5_7_1_at_mail(make_daemon, upstream):
    """DESIGN principle 7: only allowed client networks may send (no open relay)."""
    from conftest import free_port
    port = free_port()
    daemon = make_daemon(upstream.port, port=port, receiver__listen=f"127.0.0.1:{port}, [::1]:{port}",
                         receiver__allow_clients="::1/128")
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        code, text = c.cmd("MAIL FROM:<sender@client.example>")
        assert code == 550 and text[0].startswith("5.7.1"), (code, text)
        code, text = c.cmd("RCPT TO:<ops@example.com>")
        assert code == 503, (code, text)
        assert c.cmd("QUIT")[0] == 221
    wait_until(lambda: any("127.0.0.1" in l for l in daemon.find("event=rejected")),
               what="a rejected event naming client 127.0.0.1")
    # The allowed network (::1) still gets through.
    assert_still_serving(daemon, upstream, "from the allowed client", host="::1")
    assert len(daemon.wait_for_log("event=received")) == 1


def test_denied_recipient_550_5_7_1(make_daemon, upstream):
    """DESIGN principle 7: only allowed recipients (no open relay)."""
    daemon = make_daemon(upstream.port, receiver__allow_recipients="*@example.com")
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<sender@client.example>")[0] == 250
        code, text = c.cmd("RCPT TO:<someone@other.example>")
        assert code == 550 and text[0].startswith("5.7.1"), (code, text)
        code, text = c.cmd("DATA")
        assert code in (503, 554), (code, text)     # no valid recipient
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    assert_still_serving(daemon, upstream, "to an allowed recipient")
    assert len(daemon.wait_for_log("event=received")) == 1     # only the follow-up message


def test_rfc5321_3_8_max_connections_421_at_connect(make_daemon, upstream):
    daemon = make_daemon(upstream.port, receiver__max_connections="2")
    c1 = RawClient("127.0.0.1", daemon.port)
    c2 = RawClient("127.0.0.1", daemon.port)
    try:
        assert c1.reply()[0] == 220
        assert c2.reply()[0] == 220
        with RawClient("127.0.0.1", daemon.port) as c3:
            code, text = c3.reply()
            assert code == 421, (code, text)
            assert c3.at_eof(), "connection over max_connections not closed after 421"
        # The first two are still served.
        assert c2.cmd("EHLO client.example")[0] == 250
        assert c1.cmd("NOOP")[0] == 250
        # Free one slot (the daemon closes its side after 221); then a new client gets in.
        assert c1.cmd("QUIT")[0] == 221
        assert c1.at_eof()
        assert_still_serving(daemon, upstream, "after max_connections")
    finally:
        c1.close()
        c2.close()


@pytest.mark.parametrize("phase", ["command", "data"])
def test_rfc5321_4_5_3_2_idle_timeout_421_and_close(make_daemon, upstream, phase):
    """RFC 5321 §4.5.3.2 (server timeout; §4.5.3.2.7) and DESIGN principle 7: a
    silent client gets 421 and is disconnected, between commands or in the middle
    of the message text; a half-received message is never relayed."""
    daemon = make_daemon(upstream.port, receiver__timeout="2s")
    with RawClient("127.0.0.1", daemon.port, timeout=15) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<sender@client.example>")[0] == 250
        if phase == "data":
            assert c.cmd("RCPT TO:<ops@example.com>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(make_message("stalled") + b"half of the text\r\n")
        start = time.monotonic()
        code, text = c.reply()          # blocks until the daemon speaks (bounded by 15 s)
        waited = time.monotonic() - start
        assert code == 421, (code, text)
        assert 1.5 <= waited <= 8.0, f"idle timeout after {waited:.2f}s, configured 2s"
        assert c.at_eof(), "connection not closed after the timeout's 421"
    assert_still_serving(daemon, upstream, "after idle timeout")
    assert never_relayed(upstream, "stalled")
    assert len(daemon.wait_for_log("event=received")) == 1     # only the follow-up message


def test_client_vanishing_mid_data_leaves_daemon_serving(daemon, upstream):
    """A client that drops the connection in the middle of the text: nothing is
    relayed for it and the daemon goes on serving."""
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
        c.send(make_message("vanished") + b"x" * 50000)
    assert_still_serving(daemon, upstream, "after a vanished client")
    assert never_relayed(upstream, "vanished")
    assert len(daemon.wait_for_log("event=received")) == 1     # only the follow-up message


def test_connection_churn_leaks_no_descriptors(make_daemon, upstream):
    """300 short connections (QUIT, abrupt close, close mid-transaction, refused
    over max_connections) leave the daemon with the descriptors it started with."""
    import os
    daemon = make_daemon(upstream.port, receiver__max_connections="4")
    send_one(daemon.port, "warm up")               # opens the reused upstream connection
    upstream.wait_for(1)

    def fds():
        return len(os.listdir(f"/proc/{daemon.pid}/fd"))
    base = fds()
    for i in range(300):
        with RawClient("127.0.0.1", daemon.port) as c:
            code, _ = c.reply()
            if code != 220:
                continue
            kind = i % 3
            if kind == 0:
                assert c.cmd("QUIT")[0] == 221
            elif kind == 1:
                assert c.cmd("EHLO client.example")[0] == 250
                c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
                assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
                c.send(b"Subject: cut\r\n\r\npartial")
            # kind 2: close right after the greeting
    wait_until(lambda: fds() <= base, what=lambda: f"descriptors back to {base} after 300 connections (now {fds()})")
    extra = [RawClient("127.0.0.1", daemon.port) for _ in range(6)]   # 2 over the limit
    try:
        codes = sorted(c.reply()[0] for c in extra)
        assert codes == [220] * 4 + [421] * 2, codes
    finally:
        for c in extra:
            c.close()
    wait_until(lambda: fds() <= base, what=lambda: f"descriptors back to {base} (now {fds()})")
    assert_still_serving(daemon, upstream, "after churn")


def test_rfc5321_2_3_8_bare_lf_in_command_refused(daemon, upstream):
    """RFC 5321 §2.3.8 / DESIGN principle 7: command lines end with CRLF only and a
    bare LF is not a line end. A line holding one is refused as a whole (one 500);
    the text after the bare LF must not run as a command of its own."""
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        c.send(b"NOOP\nMAIL FROM:<hidden@client.example>\r\n")
        code, text = c.reply()
        assert code == 500, (code, text)
        code, text = c.cmd("RCPT TO:<ops@example.com>")
        assert code == 503, ("a bare LF split the line: the MAIL after it ran; "
                             f"reply read for the next RCPT: {code} {text}")
        assert c.cmd("QUIT")[0] == 221
    assert_still_serving(daemon, upstream, "after bare LF")


def test_rfc5321_4_5_3_1_4_overlong_command_line_500(daemon, upstream):
    """RFC 5321 §4.5.3.1.4: a command line is at most 512 octets; a longer one is
    refused with 500 and the session goes on."""
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        code, text = c.cmd("MAIL FROM:<" + "a" * 3000 + "@client.example>")
        assert code == 500, (code, text)
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("MAIL FROM:<sender@client.example>")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    assert_still_serving(daemon, upstream, "after overlong command")


def test_rfc1870_size_limit_boundary_exact_size_accepted(make_daemon, upstream):
    """RFC 1870 §6: only a message that *exceeds* the fixed maximum is refused; a
    message of exactly max_message_size octets (text as sent, CRLFs included,
    dot-stuffing excluded) is accepted, one octet more is not."""
    limit = 10 * 1024
    daemon = make_daemon(upstream.port, receiver__max_message_size="10K")

    def message(size, subject):
        # Lines of 100 octets (RFC 5321 §4.5.3.1.6 allows 1000), each starting with
        # a dot: stuffing is not counted toward the size.
        head = make_message(subject, body=b"")
        lines = []
        room = size - len(head)
        while room > 0:
            n = 100 if room >= 103 else room          # the last line takes the rest (3 to 102)
            lines.append(b"." + b"z" * (n - 3) + b"\r\n")
            room -= n
        return head + b"".join(lines)

    exact, over = message(limit, "exactly at limit"), message(limit + 1, "one over limit")
    assert len(exact) == limit and len(over) == limit + 1
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.mail("sender@client.example", [f"SIZE={limit}"])[0] == 250
        assert s.rcpt("ops@example.com")[0] == 250
        code, text = s.data(exact)
        assert code == 250, ("exactly max_message_size octets", code, text)
        code, text = s.mail("sender@client.example", [f"SIZE={limit + 1}"])
        assert code == 552, (code, text)
        assert s.mail("sender@client.example")[0] == 250
        assert s.rcpt("ops@example.com")[0] == 250
        code, text = s.data(over)
        assert code == 552, ("max_message_size + 1 octets", code, text)
    got = upstream.wait_for_match(lambda m: m.header("Subject") == "exactly at limit")[0]
    assert got.body == exact
    assert_still_serving(daemon, upstream, "after size boundary")
    assert never_relayed(upstream, "one over limit")


def test_spool_full_452_4_3_1_and_nothing_lost(make_daemon, stopped_upstream):
    """DESIGN ([spool] max_size): beyond it new mail gets 452 4.3.1 at MAIL and
    nothing acknowledged is lost; once delivered, space comes back."""
    upstream = stopped_upstream
    daemon = make_daemon(upstream.port, spool__max_size="256K", spool__segment_size="64K",
                         receiver__max_message_size="200K")
    acked, refusal = [], None
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        s.ehlo("client.example")
        for i in range(10):
            code, text = s.mail("sender@client.example")
            if code != 250:
                refusal = (code, text)
                break
            assert s.rcpt("ops@example.com")[0] == 250
            subject = f"filler {i}"
            code, text = s.data(make_message(subject, body=("f" * 98 + "\r\n") * 1000))  # ~100 KB
            assert code == 250, (code, text)
            acked.append(subject)
    assert refusal is not None, f"spool max_size 256K never refused mail after {len(acked)} x 100 KB"
    assert refusal[0] == 452 and refusal[1].startswith(b"4.3.1"), refusal
    assert 2 <= len(acked) <= 4, acked

    upstream.start()
    wait_until(lambda: {m.header("Subject") for m in upstream.messages} >= set(acked),
               what="every acknowledged message upstream")

    def accepted_again():
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
            s.ehlo("client.example")
            if s.mail("sender@client.example")[0] != 250:
                return False
            assert s.rcpt("ops@example.com")[0] == 250
            assert s.data(make_message("space is back"))[0] == 250
            return True
    wait_until(accepted_again, interval=0.2, what="the spool accepting mail again after delivery")
    upstream.wait_for_match(lambda m: m.header("Subject") == "space is back")
