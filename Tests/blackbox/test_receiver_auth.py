"""SMTP AUTH for clients (RFC 4954; issue 12 item 2): `[receiver] auth_users`,
PLAIN (RFC 4616) and LOGIN, the delay and lockout after failures, the relay
rule for clients outside `allow_clients`, the trace of who authenticated
(RFC 3848 §2: ESMTPA, ESMTPSA), credentials kept out of the log, and the user
file read again on SIGHUP.

The clients are ones nobody on the project wrote: Python's ``smtplib`` (as Home
Assistant uses it), ``swaks`` and ``curl``, plus a line-level client for the
exchanges no library lets one mistype. The user file is made with the real
``postern passwd``; the certificate with the ``openssl`` command.

Failed AUTHs are delayed and counted per client address (1, 2, 4, 8 s), so a
test that fails more than once or twice connects from a fresh loopback address
(the whole 127.0.0.0/8 is on ``lo`` and counts as loopback) to stay short.
Every wait is a bounded poll.
"""

import base64
import itertools
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (POSTERN_BIN, RawClient, free_port, make_message, parse_log_line,
                      strip_first_header_field, wait_until)

USERS = {"alice": "Alice-s3cret.pw", "grafana": "Graf4na-0ther.pw"}
WRONG = "Wrong-guess.pw"

_ids = itertools.count(1)


def new_id(tag):
    return f"auth-{tag}-{next(_ids)}"


def message_key(msgid):
    """The Message-ID header value ``make_message(msgid=...)`` writes."""
    return f"<{msgid}@client.example>"


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def plain(user, password, authzid=""):
    """RFC 4616 §2: [authzid] NUL authcid NUL passwd, base64-encoded."""
    return b64(f"{authzid}\0{user}\0{password}")


def enhanced(texts):
    """The enhanced status code (RFC 3463) at the start of a reply's first line."""
    return texts[0].split(" ", 1)[0] if texts and texts[0] else ""


# --------------------------------------------------------------------------------
# the user file, the daemon, the certificate


def add_user(path, user, password):
    """``postern passwd USER --file PATH`` with the password on standard input."""
    res = subprocess.run([POSTERN_BIN, "passwd", user, "--file", str(path)], input=(password + "\n").encode(),
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res


@pytest.fixture
def users_file(workdir):
    """An auth_users file with alice and grafana (yescrypt hashes by postern passwd)."""
    path = workdir / "auth_users"
    for user, password in USERS.items():
        add_user(path, user, password)
    return path


def auth_daemon(make_daemon, upstream, users_file, start=True, **overrides):
    return make_daemon(upstream.port, start=start, receiver__auth_users=str(users_file), **overrides)


def make_cert(root):
    cert, key = root / "cert.pem", root / "cert.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_auth_daemon(make_daemon, upstream, users_file, tmp_path):
    """A daemon with auth_users and STARTTLS; ``.cert`` is its certificate."""
    cert, key = make_cert(tmp_path)
    d = auth_daemon(make_daemon, upstream, users_file, receiver__tls_cert=str(cert), receiver__tls_key=str(key))
    d.cert = cert
    return d


def client_context(cert):
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


# --------------------------------------------------------------------------------
# clients and what they leave behind


class Session(RawClient):
    """A line-level client connected from a chosen loopback source address."""

    def __init__(self, port, source="127.0.0.1", host="127.0.0.1", timeout=30.0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def raw_line(self):
        """One reply line as sent, without its CRLF."""
        return self._readline()

    def ehlo(self, name="client.example"):
        """Reads the greeting, sends EHLO; returns the EHLO reply's lines after the first."""
        code, _ = self.reply()
        assert code == 220, code
        code, texts = self.cmd(f"EHLO {name}")
        assert code == 250, (code, texts)
        return texts[1:]

    def timed(self, line):
        """``cmd`` and the seconds its reply took."""
        start = time.monotonic()
        code, texts = self.cmd(line)
        return code, texts, time.monotonic() - start

    def relay(self, msgid, sender="cam@lan.example", rcpt="ops@example.com"):
        """One whole transaction; returns the message sent."""
        msg = make_message(f"subject {msgid}", msgid=msgid)
        code, texts = self.cmd(f"MAIL FROM:<{sender}>")
        assert code == 250, (code, texts)
        assert self.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert self.cmd("DATA")[0] == 354
        self.send(msg + b".\r\n")
        code, texts = self.reply()
        assert code == 250, (code, texts)
        return msg


def arrived(upstream, msgid):
    """The message with this Message-ID at the upstream (waits for it)."""
    return upstream.wait_for_match(lambda m: message_key(msgid).encode() in m.content, what=msgid)[0]


def trace_field(m):
    """Postern's Received: field of a message at the upstream, unfolded."""
    field, _ = strip_first_header_field(m.content)
    assert field.lower().startswith(b"received:"), field[:200]
    return re.sub(r"\r\n[ \t]+", " ", field.decode("utf-8", "replace")).strip()


def assert_authenticated_trace(m, user, protocol):
    """RFC 3848 §2 (ESMTPA, ESMTPSA), and the user named as Postfix names it."""
    trace = trace_field(m)
    assert f"(Authenticated sender: {user})" in trace, trace
    assert re.search(rf"\bwith {protocol} id\b", trace), trace


def received_event(d, user):
    """The 'message received' log lines with auth_user=USER (waits for one)."""
    return wait_until(lambda: [e for e in d.events("received") if e.get("auth_user") == user],
                      what=f"a 'message received' line with auth_user={user}")


def auth_success_lines(d, user, mechanism):
    """Log lines, other than 'message received' and refusals, naming the user
    and the mechanism: the successful AUTH's line."""
    out = []
    for line in d.log_lines():
        f = parse_log_line(line)
        if f.get("auth_user") == user and f.get("event") not in ("received", "rejected") and mechanism in f.values():
            out.append(line)
    return out


# --------------------------------------------------------------------------------
# the offer (RFC 4954 §3)


def test_rfc4954_3_ehlo_offers_auth_plain_login_on_loopback_with_auth_users(make_daemon, upstream, users_file):
    """RFC 4954 §3: with auth_users, EHLO to a loopback client (even in plain
    text) lists the AUTH keyword with PLAIN and LOGIN."""
    d = auth_daemon(make_daemon, upstream, users_file)
    for source in ("127.0.0.1", "127.0.0.2"):
        with Session(d.port, source) as c:
            keywords = c.ehlo()
            assert "AUTH PLAIN LOGIN" in keywords, keywords
    with Session(d.port) as c:
        assert c.reply()[0] == 220
        # HELO lists no extensions (RFC 5321 §4.1.1.1); EHLO after it still does.
        assert c.cmd("HELO client.example")[0] == 250
        assert "AUTH PLAIN LOGIN" in c.cmd("EHLO client.example")[1][1:]


def test_rfc4954_3_no_auth_without_auth_users(daemon):
    """Without auth_users nothing is offered, and an AUTH command is refused (5xx)."""
    with Session(daemon.port) as c:
        keywords = c.ehlo()
        assert not any(k.upper().startswith("AUTH") for k in keywords), keywords
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))
        assert 500 <= code < 600, (code, texts)


# --------------------------------------------------------------------------------
# the exchange (RFC 4954 §4, RFC 4616 §2) and the trace (RFC 3848 §2)


@pytest.mark.board  # 32-bit widths: the armv7 binary under qemu too
def test_rfc4954_4_smtplib_login_plain_relays_marked_esmtpa_and_logged(make_daemon, upstream, users_file):
    """smtplib's login() (AUTH PLAIN with an initial response, RFC 4954 §4) gets
    235 2.7.0 (§6); the message it sends reaches the upstream with
    "(Authenticated sender: alice)" and "with ESMTPA" in Postern's Received:
    field (RFC 3848 §2); the 'message received' line has auth_user=alice, and
    the AUTH itself is logged with the user and the mechanism."""
    d = auth_daemon(make_daemon, upstream, users_file)
    msgid = new_id("smtplib-plain")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("ha.lan")
        assert s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"], s.esmtp_features
        code, text = s.login("alice", USERS["alice"])
        assert (code, text) == (235, b"2.7.0 Authentication successful"), (code, text)
        assert s.sendmail("ha@lan.example", ["ops@example.com"], make_message("plain", msgid=msgid)) == {}
    m = arrived(upstream, msgid)
    assert_authenticated_trace(m, "alice", "ESMTPA")
    received_event(d, "alice")
    wait_until(lambda: auth_success_lines(d, "alice", "PLAIN"),
               what="the successful AUTH logged with auth_user=alice and PLAIN")


@pytest.mark.board  # 32-bit widths: the armv7 binary under qemu too
def test_rfc4954_4_plain_and_login_challenges_and_initial_responses(make_daemon, upstream, users_file):
    """RFC 4954 §4: AUTH PLAIN without an initial response gets "334 " (an
    empty challenge) and takes the response on the next line; AUTH LOGIN asks
    "Username:" (334 VXNlcm5hbWU6) then "Password:" (334 UGFzc3dvcmQ6); AUTH
    LOGIN with the user name as initial response goes straight to the password.
    smtplib's LOGIN (which sends that initial response) works too. The
    message of a LOGIN session names its user."""
    d = auth_daemon(make_daemon, upstream, users_file)
    with Session(d.port) as c:
        c.ehlo()
        c.send(b"AUTH PLAIN\r\n")
        assert c.raw_line() == b"334 "
        code, texts = c.cmd(plain("alice", USERS["alice"]))
        assert (code, texts) == (235, ["2.7.0 Authentication successful"]), (code, texts)
    with Session(d.port) as c:
        c.ehlo()
        c.send(b"AUTH LOGIN\r\n")
        assert c.raw_line() == b"334 VXNlcm5hbWU6"
        c.send(b64("grafana").encode() + b"\r\n")
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        code, texts = c.cmd(b64(USERS["grafana"]))
        assert code == 235 and enhanced(texts) == "2.7.0", (code, texts)
        msgid = new_id("login")
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), "grafana", "ESMTPA")
    wait_until(lambda: auth_success_lines(d, "grafana", "LOGIN"),
               what="the successful AUTH logged with auth_user=grafana and LOGIN")
    with Session(d.port) as c:
        c.ehlo()
        c.send(f"AUTH LOGIN {b64('alice')}\r\n".encode())
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        code, texts = c.cmd(b64(USERS["alice"]))
        assert code == 235 and enhanced(texts) == "2.7.0", (code, texts)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("x")
        s.user, s.password = "grafana", USERS["grafana"]
        code, text = s.auth("LOGIN", s.auth_login)
        assert code == 235, (code, text)


@pytest.mark.board  # 32-bit widths: the armv7 binary under qemu too
def test_rfc4954_6_wrong_password_and_unknown_user_535_after_a_growing_delay(make_daemon, upstream, users_file):
    """RFC 4954 §6: a wrong password and an unknown user get the same
    535 5.7.8 (nothing tells which users exist), the first failure from an
    address after at least a second, the second after at least two (lower
    bounds only). RFC 4954 §4: the client may then try again on the same
    session, and the right password works."""
    d = auth_daemon(make_daemon, upstream, users_file)
    with Session(d.port) as c:
        c.ehlo()
        code, texts, took = c.timed("AUTH PLAIN " + plain("alice", WRONG))
        assert code == 535 and texts == ["5.7.8 Error: authentication failed"], (code, texts)
        assert took >= 0.8, f"first failure answered after {took:.2f}s"
        c.send(b"AUTH LOGIN\r\n")
        assert c.raw_line() == b"334 VXNlcm5hbWU6"
        c.send(b64("mallory").encode() + b"\r\n")
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        code, texts, took = c.timed(b64(WRONG))
        assert code == 535 and texts == ["5.7.8 Error: authentication failed"], (code, texts)
        assert took >= 1.8, f"second failure answered after {took:.2f}s"
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))
        assert code == 235, (code, texts)
        msgid = new_id("after-failures")
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), "alice", "ESMTPA")


def test_rfc4954_4_auth_before_ehlo_in_a_transaction_and_twice_503_5_5_1(make_daemon, upstream, users_file):
    """RFC 4954 §4: AUTH before EHLO, during a mail transaction and after a
    successful AUTH is refused with 503 5.5.1 (§6); none of these ends the
    session, which then authenticates once and relays as alice."""
    d = auth_daemon(make_daemon, upstream, users_file)
    good = "AUTH PLAIN " + plain("alice", USERS["alice"])
    with Session(d.port) as c:
        assert c.reply()[0] == 220
        code, texts = c.cmd(good)
        assert code == 503 and enhanced(texts) == "5.5.1", (code, texts)
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<cam@lan.example>")[0] == 250
        code, texts = c.cmd(good)
        assert code == 503 and enhanced(texts) == "5.5.1", (code, texts)
        assert c.cmd("RSET")[0] == 250
        code, texts = c.cmd(good)
        assert code == 235, (code, texts)
        code, texts = c.cmd("AUTH LOGIN " + b64("grafana"))
        assert code == 503 and enhanced(texts) == "5.5.1", (code, texts)
        msgid = new_id("503")
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), "alice", "ESMTPA")


def test_rfc4954_4_unknown_mechanism_504_bad_base64_501_5_5_2_cancel_501_5_7_0(make_daemon, upstream, users_file):
    """RFC 4954 §4 and §6: an unknown mechanism is 504 5.5.4; a response that
    is not base64 (initial or on a later line) is 501 5.5.2; a "*" line cancels
    the exchange with 501 5.7.0 (at the PLAIN challenge and at LOGIN's password
    prompt). The session goes on and authenticates afterwards."""
    d = auth_daemon(make_daemon, upstream, users_file)
    with Session(d.port) as c:
        c.ehlo()
        code, texts = c.cmd("AUTH CRAM-MD5")
        assert code == 504 and enhanced(texts) == "5.5.4", (code, texts)
        code, texts = c.cmd("AUTH PLAIN not*base64!")
        assert code == 501 and enhanced(texts) == "5.5.2", (code, texts)
        c.send(b"AUTH LOGIN\r\n")
        assert c.raw_line() == b"334 VXNlcm5hbWU6"
        code, texts = c.cmd("@@@@")
        assert code == 501 and enhanced(texts) == "5.5.2", (code, texts)
        c.send(b"AUTH PLAIN\r\n")
        assert c.raw_line() == b"334 "
        code, texts = c.cmd("*")
        assert code == 501 and enhanced(texts) == "5.7.0", (code, texts)
        c.send(f"AUTH LOGIN {b64('alice')}\r\n".encode())
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        code, texts = c.cmd("*")
        assert code == 501 and enhanced(texts) == "5.7.0", (code, texts)
        assert c.cmd("NOOP")[0] == 250
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))
        assert code == 235, (code, texts)


def test_rfc4616_2_authzid_other_than_authcid_refused_535_5_7_8(make_daemon, upstream, users_file):
    """RFC 4616 §2: with an authorization identity the server checks the
    authenticated user may act as it; here a user acts only as itself, so
    alice's right password with authzid "grafana" is 535 5.7.8, while authzid
    "alice" (the same as the authcid) is accepted and the message names alice."""
    d = auth_daemon(make_daemon, upstream, users_file)
    with Session(d.port) as c:
        c.ehlo()
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"], authzid="grafana"))
        assert code == 535 and enhanced(texts) == "5.7.8", (code, texts)
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"], authzid="alice"))
        assert code == 235, (code, texts)
        msgid = new_id("authzid")
        c.relay(msgid)
    m = arrived(upstream, msgid)
    assert_authenticated_trace(m, "alice", "ESMTPA")
    assert "grafana" not in trace_field(m)


def test_rfc4616_2_fields_of_255_octets_accepted_on_a_1037_octet_auth_line(make_daemon, upstream, workdir):
    """RFC 4616 §2: a server MUST accept authzid, authcid and passwd of up to
    255 octets each; RFC 4954 §4: and the base64 of such a response, which
    makes an AUTH PLAIN line of 1,037 octets (over RFC 5321's 512), on the
    command line and on a line after the empty challenge alike."""
    users = workdir / "users"
    name, password = "u" * 255, "p" * 255
    add_user(users, name, password)
    d = make_daemon(upstream.port, receiver__auth_users=str(users))
    line = "AUTH PLAIN " + plain(name, password, authzid=name)
    assert len(line) + 2 == 1037
    with Session(d.port) as c:
        c.ehlo()
        code, texts = c.cmd(line)
        assert code == 235, (code, texts)
        msgid = new_id("long-name")
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), name, "ESMTPA")
    with Session(d.port) as c:
        c.ehlo()
        c.send(b"AUTH PLAIN\r\n")
        assert c.raw_line() == b"334 "
        code, texts = c.cmd(plain(name, password, authzid=name))
        assert code == 235, (code, texts)


# --------------------------------------------------------------------------------
# the relay rule (RFC 4954 §6: 530 5.7.0)


def test_rfc4954_6_client_outside_allow_clients_530_until_authenticated(make_daemon, upstream, users_file):
    """allow_clients = ::1/128 with auth_users: 127.0.0.1 is outside it and gets
    530 5.7.0 Authentication required at MAIL until it authenticates, then
    relays (ESMTPA), also after an RSET. ::1, inside allow_clients, relays without AUTH as before,
    and its message carries plain ESMTP and no authenticated sender."""
    port = free_port()
    d = auth_daemon(make_daemon, upstream, users_file, port=port,
                    receiver__listen=f"127.0.0.1:{port}, [::1]:{port}", receiver__allow_clients="::1/128")
    outside, inside = new_id("outside"), new_id("inside")
    with Session(d.port) as c:
        assert "AUTH PLAIN LOGIN" in c.ehlo()
        code, texts = c.cmd("MAIL FROM:<cam@lan.example>")
        assert code == 530 and texts == ["5.7.0 Authentication required"], (code, texts)
        code, texts = c.cmd("RCPT TO:<ops@example.com>")
        assert code == 503, (code, texts)
        code, texts = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))
        assert code == 235, (code, texts)
        # RSET ends a transaction, not the authentication.
        assert c.cmd("MAIL FROM:<cam@lan.example>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        c.relay(outside)
    with Session(d.port, source=None, host="::1") as c:
        c.ehlo()
        c.relay(inside)
    assert_authenticated_trace(arrived(upstream, outside), "alice", "ESMTPA")
    trace = trace_field(arrived(upstream, inside))
    assert "Authenticated sender" not in trace and re.search(r"\bwith ESMTP id\b", trace), trace
    events = wait_until(lambda: (lambda e: e if len(e) == 2 else None)(d.events("received")),
                        what="two 'message received' lines")
    assert sorted(e.get("auth_user", "") for e in events) == ["", "alice"], events


def test_smtplib_sendmail_without_login_refused_530_outside_allow_clients(make_daemon, upstream, users_file):
    """The same rule as a library sees it: smtplib's sendmail without login()
    from outside allow_clients raises SMTPSenderRefused with 530; nothing is
    relayed."""
    d = auth_daemon(make_daemon, upstream, users_file, receiver__allow_clients="::1/128")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            s.sendmail("cam@lan.example", ["ops@example.com"], make_message("no login"))
        assert refused.value.smtp_code == 530, refused.value
        assert s.noop()[0] == 250
    assert upstream.count() == 0
    assert not d.events("received")


# --------------------------------------------------------------------------------
# over TLS: real clients (RFC 3207, RFC 3848 §2 ESMTPSA)


def test_rfc3848_2_smtplib_starttls_login_relays_marked_esmtpsa(tls_auth_daemon, upstream):
    """As Home Assistant sends: smtplib starttls() then login() then sendmail();
    AUTH PLAIN LOGIN is offered after STARTTLS too, and the message arrives with
    "with ESMTPSA" and the authenticated sender."""
    d = tls_auth_daemon
    msgid = new_id("ha")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("ha.lan")
        assert s.starttls(context=client_context(d.cert))[0] == 220
        s.ehlo("ha.lan")
        assert s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"], s.esmtp_features
        assert s.login("alice", USERS["alice"])[0] == 235
        assert s.sendmail("ha@lan.example", ["ops@example.com"], make_message("ha", msgid=msgid)) == {}
    assert_authenticated_trace(arrived(upstream, msgid), "alice", "ESMTPSA")
    received_event(d, "alice")


def test_rfc3207_4_2_starttls_forgets_an_authentication_made_before_it(make_daemon, upstream, users_file, tmp_path):
    """RFC 3207 §4.2: after STARTTLS the server discards what it knew from the
    client before the handshake, an AUTH made in plain text included: a client
    outside allow_clients gets 530 at MAIL again, may AUTH again (no 503), and
    its message is then ESMTPSA."""
    cert, key = make_cert(tmp_path)
    d = auth_daemon(make_daemon, upstream, users_file, receiver__allow_clients="::1/128",
                    receiver__tls_cert=str(cert), receiver__tls_key=str(key))
    good = "AUTH PLAIN " + plain("alice", USERS["alice"])
    with Session(d.port) as c:
        c.ehlo()
        assert c.cmd(good)[0] == 235
        assert c.cmd("STARTTLS")[0] == 220
        c.sock = client_context(cert).wrap_socket(c.sock, server_hostname="localhost")
        code, texts = c.cmd("EHLO client.example")
        assert code == 250 and "AUTH PLAIN LOGIN" in texts[1:], (code, texts)
        code, texts = c.cmd("MAIL FROM:<cam@lan.example>")
        assert code == 530 and enhanced(texts) == "5.7.0", (code, texts)
        code, texts = c.cmd(good)
        assert code == 235, (code, texts)
        msgid = new_id("auth-tls-auth")
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), "alice", "ESMTPSA")


def test_rfc8314_implicit_tls_smtplib_smtp_ssl_login_marked_esmtpsa(make_daemon, upstream, users_file, tmp_path):
    """On the implicit-TLS port (RFC 8314 §3.3) AUTH is offered from the first
    EHLO; smtplib.SMTP_SSL + login() relays, marked ESMTPSA."""
    cert, key = make_cert(tmp_path)
    tls_port = free_port()
    d = auth_daemon(make_daemon, upstream, users_file, receiver__tls_cert=str(cert), receiver__tls_key=str(key),
                    receiver__listen_tls=f"127.0.0.1:{tls_port}")
    msgid = new_id("smtps")
    with smtplib.SMTP_SSL("127.0.0.1", tls_port, context=client_context(cert), timeout=15) as s:
        s.ehlo("nas.lan")
        assert s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"], s.esmtp_features
        assert s.login("grafana", USERS["grafana"])[0] == 235
        assert s.sendmail("nas@lan.example", ["ops@example.com"], make_message("smtps", msgid=msgid)) == {}
    assert_authenticated_trace(arrived(upstream, msgid), "grafana", "ESMTPSA")
    assert d.running


@pytest.mark.parametrize("client", ["swaks-plain", "swaks-login", "swaks-pipeline", "curl"])
def test_rfc3848_2_swaks_and_curl_over_starttls_with_auth(tls_auth_daemon, upstream, tmp_path, client):
    """swaks --tls --auth PLAIN / --auth LOGIN / --pipeline, and curl smtp://
    --ssl-reqd --user: each authenticates over STARTTLS and its message reaches
    the upstream marked ESMTPSA with the user that authenticated."""
    d = tls_auth_daemon
    msgid = new_id(client)
    user = "grafana" if client in ("swaks-login", "curl") else "alice"
    if client == "curl":
        msg = tmp_path / "curl.eml"
        msg.write_bytes(make_message("curl auth", msgid=msgid))
        cmd = ["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{d.port}", "--user", f"{user}:{USERS[user]}",
               "--mail-from", "nas@lan.example", "--mail-rcpt", "ops@example.com", "-T", str(msg)]
    else:
        cmd = ["swaks", "--server", f"127.0.0.1:{d.port}", "--tls", "--helo", "cam.lan",
               "--auth", "LOGIN" if client == "swaks-login" else "PLAIN",
               "--auth-user", user, "--auth-password", USERS[user],
               "--from", "cam@lan.example", "--to", "ops@example.com",
               "--header", f"Message-ID: {message_key(msgid)}"]
        if client == "swaks-pipeline":
            cmd.append("--pipeline")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    if client.startswith("swaks"):
        assert "235 2.7.0" in res.stdout, res.stdout
    assert_authenticated_trace(arrived(upstream, msgid), user, "ESMTPSA")


def test_curl_wrong_password_over_starttls_is_login_denied(tls_auth_daemon, upstream, tmp_path):
    """curl with a wrong password exits 67 (CURLE_LOGIN_DENIED: the server
    refused the login) and nothing is relayed."""
    d = tls_auth_daemon
    msg = tmp_path / "curl.eml"
    msg.write_bytes(make_message("curl wrong"))
    res = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{d.port}",
                          "--user", f"alice:{WRONG}", "--mail-from", "nas@lan.example",
                          "--mail-rcpt", "ops@example.com", "-T", str(msg)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 67, (res.returncode, res.stderr)
    assert upstream.count() == 0


# --------------------------------------------------------------------------------
# secrets (DESIGN principle 7: passwords never reach a log)


def test_credentials_never_reach_the_log_even_with_debug(make_daemon, upstream, users_file):
    """After sessions with successful and failed AUTH PLAIN and LOGIN (initial
    responses and prompted), the daemon's whole log output, with --debug,
    holds no password and no base64 response the clients sent, while it does
    record the AUTHs by user name."""
    d = auth_daemon(make_daemon, upstream, users_file, start=False)
    d.extra_args = ["--log", "stderr", "--debug"]
    d.start()
    sent = []

    def send(c, line):
        sent.append(line)
        return c.cmd(line)

    with Session(d.port) as c:
        c.ehlo()
        assert send(c, "AUTH PLAIN " + plain("alice", USERS["alice"]))[0] == 235
        c.relay(new_id("secrets"))
    with Session(d.port, source="127.0.0.3") as c:
        c.ehlo()
        c.send(b"AUTH LOGIN\r\n")
        assert c.raw_line() == b"334 VXNlcm5hbWU6"
        c.send(b64("grafana").encode() + b"\r\n")
        sent.append(b64("grafana"))
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        assert send(c, b64(WRONG))[0] == 535
    with Session(d.port, source="127.0.0.4") as c:
        c.ehlo()
        c.send(b"AUTH PLAIN\r\n")
        assert c.raw_line() == b"334 "
        assert send(c, plain("alice", WRONG + "2"))[0] == 535
        c.send(f"AUTH LOGIN {b64('grafana')}\r\n".encode())
        assert c.raw_line() == b"334 UGFzc3dvcmQ6"
        assert send(c, b64(USERS["grafana"]))[0] == 235
    wait_until(lambda: d.events("received"), what="the message received")
    wait_until(lambda: auth_success_lines(d, "grafana", "LOGIN"), what="grafana's AUTH logged")
    assert d.stop() == 0
    log = d.log_text()
    assert "alice" in log and "grafana" in log
    secrets = [*USERS.values(), WRONG, WRONG + "2"]
    secrets += [s.split(" ")[-1] for s in sent]          # every base64 response the clients sent
    secrets += [b64(p) for p in secrets if "." in p]     # and each password's base64 (LOGIN's form)
    leaked = [s for s in secrets if s in log]
    assert not leaked, f"in the log: {leaked}"


# --------------------------------------------------------------------------------
# throttle: lockout after repeated failures


def test_lockout_after_10_failures_454_4_7_0_even_with_the_right_password(make_daemon, upstream, users_file):
    """10 failed AUTHs from one address (10 connections at once, each failing
    once; their delays run side by side) all get 535 5.7.8; then that address
    is locked out: AUTH gets 454 4.7.0 at once, with a text about too many
    failures, even with the right password; the lockout is logged with
    auth_lockout_seconds=900. Another address still authenticates, and mail
    from the locked address still relays without AUTH (it is in
    allow_clients: the lockout refuses AUTH, not mail)."""
    d = auth_daemon(make_daemon, upstream, users_file)

    def fail_once(_):
        with Session(d.port) as c:
            c.ehlo()
            return c.timed("AUTH PLAIN " + plain("alice", WRONG))

    with ThreadPoolExecutor(max_workers=10) as pool:
        # The checker queues a check for every connection (max_connections):
        # all ten are checked and counted.
        results = list(pool.map(fail_once, range(10), timeout=60))
    bad = [r for r in results if not (r[0] == 535 and enhanced(r[1]) == "5.7.8")]
    assert not bad, f"{len(bad)} of 10 failures not answered 535 5.7.8: {bad}"
    assert min(r[2] for r in results) >= 0.8, sorted(r[2] for r in results)

    with Session(d.port) as c:
        c.ehlo()
        for password in (WRONG, USERS["alice"]):
            code, texts, took = c.timed("AUTH PLAIN " + plain("alice", password))
            assert code == 454 and enhanced(texts) == "4.7.0", (code, texts)
            assert "too many" in texts[0].lower(), texts
            # "At once": the failure delay at this count would be 8 s.
            assert took < 5, f"lockout answered after {took:.2f}s"
        c.send(b"AUTH LOGIN\r\n")
        code, texts = c.reply()
        assert code == 454, (code, texts)
    wait_until(lambda: [l for l in d.log_lines() if parse_log_line(l).get("auth_lockout_seconds") == "900"],
               what="the lockout logged with auth_lockout_seconds=900")
    with Session(d.port, source="127.0.0.9") as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))[0] == 235
    with Session(d.port) as c:
        c.ehlo()
        msgid = new_id("locked-out-still-relays")
        c.relay(msgid)
    assert "Authenticated sender" not in trace_field(arrived(upstream, msgid))


def test_a_burst_of_devices_logging_in_at_once_all_succeed(make_daemon, upstream, users_file):
    """14 devices (14 addresses) log in at the same moment, as after a power
    cut: every one gets 235, none a 454 for a busy checker (the checker
    queues a check for every connection the pool can hold)."""
    d = auth_daemon(make_daemon, upstream, users_file)

    def login(i):
        with Session(d.port, source=f"127.0.1.{i + 1}") as c:
            c.ehlo()
            return c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))

    with ThreadPoolExecutor(max_workers=14) as pool:
        results = list(pool.map(login, range(14), timeout=60))
    assert [r[0] for r in results] == [235] * 14, results


# --------------------------------------------------------------------------------
# SIGHUP


def test_sighup_reads_auth_users_again_and_refuses_a_file_that_does_not_parse(make_daemon, upstream, workdir):
    """auth_users is read at start and on SIGHUP: a user added with postern
    passwd cannot authenticate before the reload and can after it. A file that
    does not parse refuses the reload (logged) and the users loaded before
    still authenticate."""
    users = workdir / "users"
    add_user(users, "alice", USERS["alice"])
    d = make_daemon(upstream.port, receiver__auth_users=str(users))

    def auth(user, source):
        with Session(d.port, source) as c:
            c.ehlo()
            return c.cmd("AUTH PLAIN " + plain(user, USERS[user]))

    code, texts = auth("grafana", "127.0.0.5")
    assert code == 535, (code, texts)
    add_user(users, "grafana", USERS["grafana"])
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reloaded")
    code, texts = auth("grafana", "127.0.0.1")
    assert code == 235, (code, texts)

    with users.open("a") as f:
        f.write("broken line without colon\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reload refused")
    assert d.running
    for user in ("alice", "grafana"):
        code, texts = auth(user, "127.0.0.1")
        assert code == 235, (user, code, texts)
    msgid = new_id("after-refused-reload")
    with Session(d.port) as c:
        c.ehlo()
        assert c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"]))[0] == 235
        c.relay(msgid)
    assert_authenticated_trace(arrived(upstream, msgid), "alice", "ESMTPA")
