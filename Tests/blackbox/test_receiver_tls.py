"""TLS for clients (issue 12 item 1): STARTTLS (RFC 3207), the implicit-TLS
listener (RFC 8314 §3.3), ``tls_min_version``, a certificate renewed by SIGHUP.

Every client here is one nobody on the project wrote: Python's ``smtplib`` and
``ssl`` (as Home Assistant uses them), ``swaks``, ``curl`` and ``openssl
s_client``. The certificates are made by the ``openssl`` command.
"""
import itertools
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess

import pytest

from conftest import RawClient, free_port, make_message

_ids = itertools.count(1)


def new_id(tag):
    return f"{tag}-{next(_ids)}"


def message_key(msgid):
    """The Message-ID header value ``make_message(msgid=...)`` writes."""
    return f"<{msgid}@client.example>"


def enhanced(text):
    """The enhanced status code (RFC 3463) at the start of a reply text."""
    return text.split(" ", 1)[0] if text else ""


class Certs:
    """A self-signed certificate for "localhost"/127.0.0.1 and a second one, as a
    renewal would bring."""

    def __init__(self, root):
        self.root = root
        self.cert, self.key = self.make("first")
        self.cert2, self.key2 = self.make("renewed")

    def make(self, name):
        cert, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
                        "-subj", f"/CN=localhost/O={name}",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        return cert, key

    def context(self, cafile=None):
        ctx = ssl.create_default_context(cafile=str(cafile or self.cert))
        ctx.check_hostname = False
        return ctx


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def tls_daemon(make_daemon, upstream, certs, tmp_path, **overrides):
    # The daemon reads its certificate from paths that a renewal overwrites.
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(certs.cert, live_cert)
    shutil.copy(certs.key, live_key)
    return make_daemon(upstream.port, receiver__tls_cert=str(live_cert), receiver__tls_key=str(live_key),
                       **overrides)


def ehlo_keywords(client, name="client.example"):
    code, text = client.ehlo(name)
    assert code == 250, (code, text)
    return [l.split()[0].upper() for l in text.decode().splitlines()[1:] if l]


def test_rfc3207_smtplib_starttls_relays_and_marks_esmtps(make_daemon, upstream, certs, tmp_path):
    """RFC 3207 §4 and §4.2: STARTTLS is offered before TLS and not after; the
    message sent over TLS reaches the upstream whole, with "ESMTPS" in the
    Received: header (RFC 3848 §2)."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    msgid = new_id("tls-relay")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        assert "STARTTLS" in ehlo_keywords(s)
        code, _ = s.starttls(context=certs.context())
        assert code == 220
        assert "STARTTLS" not in ehlo_keywords(s)
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.sendmail("alarm@board.example", ["ops@example.com"], make_message("over tls", msgid=msgid))
    m = upstream.wait_for_match(lambda m: message_key(msgid).encode() in m.content, what="the TLS message")[0]
    assert re.search(rb"^Received: from client\.example .*\r?\n?\s*.*with ESMTPS id ", m.content, re.M | re.S), \
        m.content[:400]
    assert d.find('msg="TLS started"')


def test_rfc3207_starttls_not_offered_without_certificate(daemon):
    """Without tls_cert: no STARTTLS keyword, and the command is 502 5.5.1."""
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
        assert "STARTTLS" not in ehlo_keywords(s)
        code, text = s.docmd("STARTTLS")
        assert code == 502 and enhanced(text.decode()) == "5.5.1"


@pytest.mark.parametrize("injected", [b"RSET\r\n", b"MAIL FROM:<evil@attacker.example>\r\n"])
def test_rfc3207_cve_2011_0411_plaintext_pipelined_after_starttls_is_discarded(make_daemon, upstream, certs,
                                                                                tmp_path, injected):
    """RFC 3207 §4 / CVE-2011-0411: commands pipelined in the clear behind
    STARTTLS are discarded, never executed inside the TLS session. A server that
    kept them would answer them first after the handshake, and the client would
    read that answer as the reply to its own first command."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"220 ")
    raw.sendall(b"EHLO x\r\n")
    while True:
        line = f.readline()
        if line.startswith(b"250 "):
            break
    raw.sendall(b"STARTTLS\r\n" + injected)
    assert f.readline().startswith(b"220 2.0.0")
    tls = certs.context().wrap_socket(raw, server_hostname="localhost")
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO client.example\r\n")
    first = tf.readline()
    assert first.startswith(b"250-postern.test"), f"first reply after the handshake: {first!r}"
    while not first.startswith(b"250 "):
        first = tf.readline()
    # Had MAIL been executed, RCPT would be taken; it needs MAIL (503).
    tls.sendall(b"RCPT TO:<ops@example.com>\r\n")
    reply = tf.readline()
    assert reply.startswith(b"503 5.5.1"), reply
    tls.sendall(b"QUIT\r\n")
    assert tf.readline().startswith(b"221")
    tls.close()
    assert d.find("bytes sent after STARTTLS before the handshake discarded")


def test_rfc3207_starttls_refusals(make_daemon, upstream, certs, tmp_path):
    """RFC 3207 §4: STARTTLS takes no parameter (501); it is refused inside a
    transaction (503) and once TLS is active (554 5.5.1, as Postfix)."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo("x")
        code, text = s.docmd("STARTTLS", "now")
        assert code == 501 and enhanced(text.decode()) == "5.5.4"
        assert s.docmd("MAIL", "FROM:<a@b.example>")[0] == 250
        code, text = s.docmd("STARTTLS")
        assert code == 503, (code, text)
        assert s.docmd("RSET")[0] == 250
        s.starttls(context=certs.context())
        s.ehlo("x")
        code, text = s.docmd("STARTTLS")
        assert code == 554 and enhanced(text.decode()) == "5.5.1"


def test_rfc8314_implicit_tls_listener_swaks_curl_smtplib(make_daemon, upstream, certs, tmp_path):
    """RFC 8314 §3.3: on a listen_tls port TLS starts with the first byte; the
    greeting comes through it. swaks --tls-on-connect, curl smtps:// and
    smtplib.SMTP_SSL all relay a message."""
    tls_port = free_port()
    d = tls_daemon(make_daemon, upstream, certs, tmp_path, receiver__listen_tls=f"127.0.0.1:{tls_port}")
    ids = [new_id(f"implicit-{i}") for i in range(3)]
    res = subprocess.run(["swaks", "--server", f"127.0.0.1:{tls_port}", "--tls-on-connect", "--to", "ops@example.com",
                          "--from", "cam@lan.example", "--header", f"Message-ID: {message_key(ids[0])}",
                          "--helo", "cam.lan"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    msg = tmp_path / "curl.eml"
    msg.write_bytes(make_message("curl smtps", msgid=ids[1]))
    res = subprocess.run(["curl", "-sS", "--cacert", str(certs.cert), f"smtps://localhost:{tls_port}",
                          "--mail-from", "nas@lan.example", "--mail-rcpt", "ops@example.com",
                          "--upload-file", str(msg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    with smtplib.SMTP_SSL("127.0.0.1", tls_port, context=certs.context(), timeout=10) as s:
        assert "STARTTLS" not in ehlo_keywords(s)
        s.sendmail("ha@lan.example", ["ops@example.com"], make_message("smtp_ssl", msgid=ids[2]))
    for i in ids:
        upstream.wait_for_match(lambda m, i=i: message_key(i).encode() in m.content, what=i)


def test_swaks_pipelined_starttls_and_curl_starttls(make_daemon, upstream, certs, tmp_path):
    """swaks --tls --pipeline and curl smtp:// --ssl-reqd (STARTTLS) relay."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    ids = [new_id("swaks-tls"), new_id("curl-starttls")]
    res = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}", "--tls", "--pipeline", "--to",
                          "ops@example.com,dev@example.com", "--from", "ups@lan.example",
                          "--header", f"Message-ID: {message_key(ids[0])}"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    msg = tmp_path / "curl.eml"
    msg.write_bytes(make_message("curl starttls", msgid=ids[1]))
    res = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", str(certs.cert), f"smtp://localhost:{d.port}",
                          "--mail-from", "nas@lan.example", "--mail-rcpt", "ops@example.com",
                          "--upload-file", str(msg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    for i in ids:
        upstream.wait_for_match(lambda m, i=i: message_key(i).encode() in m.content, what=i)


def test_large_message_over_tls_arrives_whole(make_daemon, upstream, certs, tmp_path):
    """A 3 MB message over STARTTLS: TLS records (16 KiB) larger than what the
    receiver reads at once must not stall the session (decrypted bytes OpenSSL
    holds are read without waiting for the socket)."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    msgid = new_id("tls-big")
    body = "".join(f"line {i:07d} " + "x" * 60 + "\r\n" for i in range(40_000))
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.starttls(context=certs.context())
        s.sendmail("cam@lan.example", ["ops@example.com"], make_message("big", msgid=msgid, body=body))
    m = upstream.wait_for_match(lambda m: message_key(msgid).encode() in m.content, timeout=60,
                                what="the big message")[0]
    assert body.encode() in m.content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def s_client(port, *args, data=b"QUIT\r\n", starttls=True):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args]
    if starttls:
        cmd[2:2] = ["-starttls", "smtp"]
    return subprocess.run(cmd, input=data, capture_output=True, timeout=30)


def test_tls_min_version_default_refuses_tls_1_0(make_daemon, upstream, certs, tmp_path):
    """tls_min_version defaults to 1.2: an old client offering only TLS 1.0
    (openssl s_client -tls1 -starttls smtp) cannot complete the handshake; the
    daemon logs why and keeps serving."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    res = s_client(d.port, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert b"Cipher is (NONE)" in res.stdout, res.stdout.decode(errors="replace")[-800:]
    assert b"alert protocol version" in res.stderr, res.stderr[-400:]
    d.wait_for_log("TLS handshake with a client failed")
    res = s_client(d.port, "-tls1_2")
    assert b"Protocol  : TLSv1.2" in res.stdout and b"221 2.0.0" in res.stdout, res.stdout[-600:]


def test_tls_min_version_1_0_lets_an_old_camera_in_with_a_warning(make_daemon, upstream, certs, tmp_path):
    """tls_min_version = 1.0 is for old cameras and printers: the daemon warns at
    start, and a TLS 1.0 client gets through STARTTLS and sends a message."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path, receiver__tls_min_version="1.0")
    assert d.find("retired by RFC 8996")
    msgid = new_id("tls10")
    data = (b"EHLO old-camera\r\nMAIL FROM:<cam@lan.example>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\n"
            + make_message("tls 1.0", msgid=msgid) + b".\r\nQUIT\r\n")
    res = s_client(d.port, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", data=data)
    assert b"Protocol  : TLSv1\n" in res.stdout, res.stdout.decode(errors="replace")[-1200:]
    upstream.wait_for_match(lambda m: message_key(msgid).encode() in m.content, what="the TLS 1.0 message")
    assert d.find('tls="TLSv1 ')


def peer_cert_der(port, cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.starttls(context=ctx)
    der = s.sock.getpeercert(binary_form=True)
    return s, der


def test_sighup_loads_a_renewed_certificate_without_dropping_connections(make_daemon, upstream, certs, tmp_path):
    """SIGHUP reads tls_cert/tls_key again: new handshakes get the renewed
    certificate, a session open across the reload goes on with the old one and
    delivers its message. A reload with a broken certificate is refused and the
    running one stays."""
    d = tls_daemon(make_daemon, upstream, certs, tmp_path)
    old_session, old_der = peer_cert_der(d.port, certs.cert)
    old_session.ehlo("x")
    shutil.copy(certs.cert2, tmp_path / "live.pem")
    shutil.copy(certs.key2, tmp_path / "live.key")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reloaded")
    new_session, new_der = peer_cert_der(d.port, certs.cert2)
    assert new_der != old_der
    new_session.quit()
    msgid = new_id("across-reload")
    old_session.sendmail("cam@lan.example", ["ops@example.com"], make_message("across reload", msgid=msgid))
    old_session.quit()
    upstream.wait_for_match(lambda m: message_key(msgid).encode() in m.content, what="the message across the reload")
    # A key that does not match the certificate: the reload is refused.
    shutil.copy(certs.key, tmp_path / "live.key")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reload refused")
    assert d.find("cannot load tls_key")
    s, der = peer_cert_der(d.port, certs.cert2)
    assert der == new_der
    s.quit()


def test_rfc5321_4_5_3_2_stalled_handshake_is_cut_off(make_daemon, upstream, certs, tmp_path):
    """The per-command deadline holds for the TLS handshake: a client that sends
    STARTTLS and then nothing (or half a ClientHello) is closed after
    ``timeout``; one that sends garbage instead of a handshake is closed at once;
    the daemon keeps serving."""
    tls_port = free_port()
    d = tls_daemon(make_daemon, upstream, certs, tmp_path, receiver__timeout="2s",
                   receiver__listen_tls=f"127.0.0.1:{tls_port}")
    with RawClient("127.0.0.1", d.port) as c:
        assert c.reply()[0] == 220
        c.cmd("EHLO x")
        assert c.cmd("STARTTLS")[0] == 220
        assert c.at_eof(timeout=10), "a silent handshake was not cut off"
    with RawClient("127.0.0.1", tls_port) as c:
        c.send(b"\x16\x03\x01\x00\xff\x01")     # the start of a ClientHello, then silence
        assert c.at_eof(timeout=10), "a half handshake on the TLS port was not cut off"
    with RawClient("127.0.0.1", tls_port) as c:
        c.send(b"EHLO plaintext-on-the-tls-port\r\n")
        assert c.at_eof(timeout=10)
    d.wait_for_log("client timed out in the TLS handshake", count=2)
    with smtplib.SMTP_SSL("127.0.0.1", tls_port, context=certs.context(), timeout=10) as s:
        assert s.noop()[0] == 250


def test_unreadable_certificate_at_start_runs_without_tls(make_daemon, upstream, tmp_path):
    """A certificate that cannot be loaded at start is an error in the log, but
    the board's own alerts still flow: STARTTLS is simply not offered."""
    d = make_daemon(upstream.port, receiver__tls_cert=str(tmp_path / "missing.pem"),
                    receiver__tls_key=str(tmp_path / "missing.key"))
    assert d.find("receiver TLS unavailable")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        assert "STARTTLS" not in ehlo_keywords(s)
        s.sendmail("a@b.example", ["ops@example.com"], make_message("no tls"))
