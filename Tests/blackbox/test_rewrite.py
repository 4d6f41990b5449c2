"""Sender rewriting for smarthosts that accept only their own account (issue 8
item 7): ``envelope_from`` replaces the reverse-path, ``rewrite_from = yes`` also
rewrites ``From:``, keeping the original name and, as ``Reply-To:``, the
original address. Checked byte for byte at the upstream."""

import hashlib
import smtplib

from conftest import strip_received, wait_until


def relay_with_rewrite(make_daemon, upstream):
    return make_daemon(upstream.port, upstream__envelope_from="alerts@example.com",
                       upstream__rewrite_from="yes", receiver__hostname="raspberrypi",
                       receiver__max_message_size="30M")


def send(port, sender, message: bytes):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        assert s.sendmail(sender, ["ops@example.com"], message) == {}


def test_from_is_rewritten_byte_for_byte(make_daemon, upstream):
    d = relay_with_rewrite(make_daemon, upstream)
    original = (b"From: Cron Daemon <root>\r\n"
                b"To: root\r\n"
                b"Subject: Cron <root@raspberrypi> /usr/local/bin/backup\r\n"
                b"\r\n"
                b"backup failed: disk full\r\n")
    send(d.port, "root@raspberrypi", original)
    (m,) = upstream.wait_for(1)
    assert m.mail_from == "alerts@example.com"
    assert strip_received(m.content) == (b"To: root\r\n"
                                         b"Subject: Cron <root@raspberrypi> /usr/local/bin/backup\r\n"
                                         b"From: Cron Daemon <alerts@example.com>\r\n"
                                         b"Reply-To: Cron Daemon <root@raspberrypi>\r\n"
                                         b"\r\n"
                                         b"backup failed: disk full\r\n")


def test_existing_reply_to_is_kept_and_body_untouched(make_daemon, upstream):
    d = relay_with_rewrite(make_daemon, upstream)
    body = b"From: this line is body, not a header\r\n" + (b"x" * 900 + b"\r\n") * 6
    original = (b"Reply-To: desk@example.net\r\n"
                b"From: \"Camera 3\" <cam3@192-168-1-50.local>\r\n"
                b"Subject: motion\r\n\r\n") + body
    send(d.port, "cam3@192-168-1-50.local", original)
    (m,) = upstream.wait_for(1)
    got = strip_received(m.content)
    assert got == (b"Reply-To: desk@example.net\r\n"
                   b"Subject: motion\r\n"
                   b"From: \"Camera 3\" <alerts@example.com>\r\n\r\n") + body


def test_large_message_rewritten_with_flat_memory(make_daemon, upstream):
    """A 20 MB message is rewritten while it streams: its body arrives intact and
    peak RSS stays within 1 MB of a small message's."""
    d = relay_with_rewrite(make_daemon, upstream)
    send(d.port, "root@raspberrypi", b"From: root\r\nSubject: small\r\n\r\nhi\r\n")
    upstream.wait_for(1)
    small = d.status_kb("VmHWM")
    line = b"z" * 998 + b"\r\n"
    body = line * (20 * 1000 * 1000 // len(line))
    send(d.port, "root@raspberrypi", b"From: root\r\nSubject: big\r\n\r\n" + body)
    msgs = upstream.wait_for(2, timeout=120)
    big = [m for m in msgs if m.header("Subject") == "big"][0]
    assert big.header("From") == "\"root@raspberrypi\" <alerts@example.com>"
    got = strip_received(big.content)
    assert hashlib.sha256(got.split(b"\r\n\r\n", 1)[1]).hexdigest() == hashlib.sha256(body).hexdigest()
    grew = d.status_kb("VmHWM") - small
    print(f"\nVmHWM grew {grew} kB for a 20 MB message with From: rewriting")
    assert grew < 1024
