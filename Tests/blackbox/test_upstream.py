"""The sender side: how Postern talks to the upstream."""

import smtplib

import pytest

from conftest import Upstream, hold_for, make_message, send_one, wait_until


@pytest.mark.parametrize("pipelining", [False, True], ids=["no-pipelining", "pipelining"])
def test_rfc2920_upstream_connection_reused_pipelining_only_when_offered(make_daemon, make_upstream, pipelining):
    """DESIGN (Delivery): one upstream connection carries many messages, with
    PIPELINING when offered. RFC 2920 §3.1: and never when it is not offered."""
    up = make_upstream(pipelining=pipelining, start=False)
    daemon = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        for i in range(10):
            assert s.sendmail("sender@client.example", ["ops@example.com", "dev@example.com"],
                              make_message(f"burst {i}")) == {}
    daemon.wait_for_log("event=deferred")
    up.start()
    msgs = up.wait_for(10)
    wait_until(lambda: len(daemon.events("delivered")) >= 10, what="10 delivered events")
    assert sorted(m.header("Subject") for m in msgs) == sorted(f"burst {i}" for i in range(10))
    peers = {m.peer for m in msgs}
    assert len(peers) == 1, f"10 queued messages went over {len(peers)} upstream connections"
    assert up.ehlo_count == 1
    if pipelining:
        assert any(m.pipelined for m in msgs), "PIPELINING offered but never used"
    else:
        assert not any(m.pipelined for m in msgs), "pipelined to an upstream that does not offer PIPELINING"


def test_upstream_restart_between_messages_reconnects(make_daemon, upstream):
    """A reused upstream connection that the upstream closed is replaced, and the
    next message still arrives."""
    daemon = make_daemon(upstream.port)
    send_one(daemon.port, "before upstream restart")
    upstream.wait_for(1)
    upstream.stop()                       # closes the connection Postern keeps open
    again = Upstream(port=upstream.port).start()
    try:
        send_one(daemon.port, "after upstream restart")
        got = again.wait_for(1)
        assert got[0].header("Subject") == "after upstream restart"
    finally:
        again.stop()


@pytest.mark.parametrize("stage", ["MAIL", "DATA"])
def test_rfc5321_4_2_1_upstream_5xx_fails_message_without_retry(make_daemon, upstream, stage):
    """RFC 5321 §4.2.1: 5yz is permanent: the recipients are failed, not retried."""
    if stage == "MAIL":
        upstream.reply_to_mail("550 5.7.1 sender refused")
    else:
        upstream.reply_to_data("554 5.6.0 content refused")
    daemon = make_daemon(upstream.port)
    send_one(daemon.port, f"permanent at {stage}", rcpt=("a@example.com", "b@example.com"))
    wait_until(lambda: all(any(r in l for l in daemon.find("event=failed")) for r in ("a@example.com", "b@example.com")),
               what="event=failed for both recipients")
    # Retry max is 2 s: a retry would show within that.
    hold_for(lambda: upstream.mail_count == 1, 2.5, what="a single MAIL upstream (no retry)")
    assert upstream.count() == 0
    # The only delivery is the one failure notice to the sender, for both recipients.
    assert [l for l in daemon.find("event=delivered") if "from=<> " not in l] == []
    wait_until(lambda: len(upstream.notices) == 1, what="one failure notice")
    assert upstream.notices[0].content.count(b"Final-Recipient: rfc822;") == 2
    assert any(("550" if stage == "MAIL" else "554") in l for l in daemon.find("event=failed")), daemon.log_text()


@pytest.mark.parametrize("stage", ["MAIL", "DATA"])
def test_rfc5321_4_2_1_upstream_4xx_retried_then_delivered_once(make_daemon, upstream, stage):
    """RFC 5321 §4.2.1 / §4.5.4.1: 4yz is transient: retried later, delivered once."""
    if stage == "MAIL":
        upstream.reply_to_mail("451 4.3.0 sender check later")
    else:
        upstream.reply_to_data("451 4.3.0 queue busy")
    daemon = make_daemon(upstream.port)
    sent = send_one(daemon.port, f"transient at {stage}", rcpt=("a@example.com", "b@example.com"))
    got = upstream.wait_for(1)[0]
    assert sorted(got.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert got.body == sent
    wait_until(lambda: daemon.find("event=delivered"), what="event=delivered")
    hold_for(lambda: upstream.count() == 1, 2.5, what="a single delivery")
    assert upstream.mail_count == 2
    deferred = daemon.find("event=deferred")
    assert deferred and any("451" in l for l in deferred), daemon.log_text()
    assert not daemon.find("event=failed")


def test_rfc5321_4_5_5_null_reverse_path_relayed(daemon, upstream):
    """RFC 5321 §4.5.5: a message with the null reverse-path (a bounce) is relayed
    with the null reverse-path."""
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        assert s.sendmail("<>", ["ops@example.com"], make_message("a bounce")) == {}
    got = upstream.wait_for(1)[0]
    assert got.mail_from in ("", "<>"), got.mail_from
    assert got.header("Subject") == "a bounce"


def test_rfc2920_all_recipients_refused_then_next_message_on_same_connection(make_daemon, any_upstream):
    """Every RCPT refused (5xx): no message text is sent, each recipient is failed,
    and the connection stays usable: the next message, on the same upstream
    connection, is delivered (RFC 2920 §3.1: with pipelining, the DATA sent after
    refused RCPTs gets an error reply the sender must consume)."""
    upstream = any_upstream
    upstream.reply_to_rcpt("gone1@example.com", "550 5.1.1 no such user")
    upstream.reply_to_rcpt("gone2@example.com", "553 5.1.3 bad address")
    daemon = make_daemon(upstream.port)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        assert s.sendmail("sender@client.example", ["gone1@example.com", "gone2@example.com"],
                          make_message("nobody home")) == {}
        assert s.sendmail("sender@client.example", ["ops@example.com"], make_message("next one")) == {}
    got = upstream.wait_for(1)[0]
    assert got.header("Subject") == "next one" and got.rcpt_tos == ["ops@example.com"]
    wait_until(lambda: all(any(r in l for l in daemon.find("event=failed"))
                           for r in ("gone1@example.com", "gone2@example.com")),
               what="event=failed for both refused recipients")
    hold_for(lambda: upstream.count() == 1, 2.5, what="only the good message upstream")
    assert upstream.rcpt_attempts("gone1@example.com") == 1
    assert upstream.rcpt_attempts("gone2@example.com") == 1
    assert len([l for l in daemon.find("event=delivered") if "from=<> " not in l]) == 1


def test_upstream_connection_lost_before_data_reply_is_retried(make_daemon, upstream):
    """The upstream breaks the connection after the text but before its reply: no
    reply means not delivered (RFC 5321 §6.1), so the message is retried and
    arrives."""
    upstream.reply_to_data("DROP")
    daemon = make_daemon(upstream.port)
    sent = send_one(daemon.port, "dropped once")
    got = upstream.wait_for(1)[0]
    assert got.body == sent
    assert upstream.mail_count == 2
    wait_until(lambda: daemon.find("event=delivered"), what="event=delivered")
    assert daemon.find("event=deferred"), daemon.log_text()
    assert not daemon.find("event=failed"), daemon.log_text()
