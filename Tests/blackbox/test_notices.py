"""Failure notices (issue 8 item 6): a recipient refused with 5xx, or a message
past max_age, produces one RFC 3464 delivery status notification to the envelope
sender, or to [notify] postmaster when the sender is empty or local; never a
notice about a notice. Parsed with Python's email package as a mail client
would."""

import email
import email.policy
import subprocess

from conftest import POSTERN_BIN, send_one, wait_until

UNSYNC_SHIM = r"""
#include <string.h>
#include <sys/timex.h>
/* The kernel's clock reported synchronised, so max_age applies (Postern never
   expires mail while the clock may be wrong). */
int adjtimex(struct timex *tx) { memset(tx, 0, sizeof *tx); return TIME_OK; }
"""


def notices(upstream):
    return upstream.notices


def parse(m):
    return email.message_from_bytes(m.content, policy=email.policy.default)


def check_report(msg, recipient, status, subject):
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status_text = parts[1].as_string()
    assert f"Final-Recipient: rfc822; {recipient}" in status_text
    assert "Action: failed" in status_text and f"Status: {status}" in status_text
    assert f"Subject: {subject}" in parts[2].get_payload() if isinstance(parts[2].get_payload(), str) \
        else f"Subject: {subject}".encode() in parts[2].get_payload(decode=True)
    return parts


def test_refused_recipient_gets_one_notice(make_daemon, upstream):
    upstream.reply_to_rcpt("never@example.com", "550 5.1.1 <never@example.com>: no such user")
    d = make_daemon(upstream.port)
    send_one(d.port, "half refused", rcpt=("ok@example.com", "never@example.com"))
    wait_until(lambda: len(notices(upstream)) == 1, what="the failure notice upstream")
    (n,) = notices(upstream)
    assert n.rcpt_tos == ["sender@client.example"]
    parts = check_report(parse(n), "never@example.com", "5.1.1", "half refused")
    assert "550 5.1.1" in parts[1].as_string()
    assert [m.rcpt_tos for m in upstream.messages] == [["ok@example.com"]]
    # Restarting does not repeat it: the recipient is finished in the spool.
    d.stop()
    d.start()
    d.wait_for_log("spool recovered")
    assert "queued=0" in d.find("spool recovered")[0]
    assert len(notices(upstream)) == 1


def test_local_sender_notice_goes_to_postmaster(make_daemon, upstream):
    upstream.reply_to_rcpt("ops@example.com", "554 5.7.1 relaying denied")
    d = make_daemon(upstream.port, notify__postmaster="admin@example.com")
    send_one(d.port, "from cron", sender="root@postern.test")
    wait_until(lambda: len(notices(upstream)) == 1, what="the notice to the postmaster")
    (n,) = notices(upstream)
    assert n.rcpt_tos == ["admin@example.com"]
    check_report(parse(n), "ops@example.com", "5.7.1", "from cron")


def test_no_postmaster_for_local_sender_is_logged(make_daemon, upstream):
    upstream.reply_to_rcpt("ops@example.com", "550 5.1.1 no")
    d = make_daemon(upstream.port)
    send_one(d.port, "from root", sender="root@postern.test")
    d.wait_for_log("no failure notice sent")
    assert notices(upstream) == []


def test_failed_notice_is_dropped_never_a_notice_about_it(make_daemon, upstream):
    """The notice's own recipient refuses it: logged and dropped; nothing more is
    sent (null reverse-path, RFC 5321 §6.1), even with a postmaster set."""
    upstream.reply_to_rcpt("ops@example.com", "550 5.1.1 no such user")
    upstream.reply_to_rcpt("sender@client.example", "550 5.1.1 sender gone too", "550 5.1.1 again")
    d = make_daemon(upstream.port, notify__postmaster="admin@example.com")
    send_one(d.port, "bounce loop bait")
    d.wait_for_log("a failure notice could not be delivered; it is dropped")
    wait_until(lambda: upstream.rcpt_attempts("sender@client.example") == 1)
    res = subprocess.run([POSTERN_BIN, "status",
                          "--config", str(d.config_path)], capture_output=True, text=True)
    assert "queue:          0 messages" in res.stdout, res.stdout
    assert upstream.rcpt_attempts("admin@example.com") == 0
    assert notices(upstream) == []


def test_expired_message_gets_a_notice(make_daemon, stopped_upstream, workdir):
    """Past max_age (60 s here, the shortest allowed) with the upstream down: the
    message is given up, and its notice waits in the queue like any message
    until the upstream is back."""
    src, lib = workdir / "sync.c", workdir / "sync.so"
    src.write_text(UNSYNC_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    d = make_daemon(stopped_upstream.port, start=False, spool__max_age="60s", retry__initial="1s", retry__max="2s")
    d.env = {"LD_PRELOAD": str(lib)}
    d.start()
    send_one(d.port, "too old")
    d.wait_for_log("event=expired", timeout=90)
    d.wait_for_log("failure notice queued")
    stopped_upstream.start()
    wait_until(lambda: len(notices(stopped_upstream)) == 1, timeout=30, what="the expiry notice")
    (n,) = notices(stopped_upstream)
    assert n.rcpt_tos == ["sender@client.example"]
    parts = check_report(parse(n), "ops@example.com", "4.4.7", "too old")
    assert "1 minute" in parts[0].get_content() or "60" in parts[0].get_content() or "minute" in parts[0].get_content()
    assert stopped_upstream.count() == 0, "the expired message itself was sent"
