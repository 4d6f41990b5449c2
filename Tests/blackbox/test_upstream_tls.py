"""The sender reaches real smarthosts (issue 8): verified TLS (STARTTLS, RFC 3207,
and implicit TLS, RFC 8314 §3.3), AUTH (RFC 4954: PLAIN, LOGIN, XOAUTH2) and
fallback upstreams, against aiosmtpd with a throwaway CA whose certificates the
``openssl`` command makes here. A certificate that does not pass never receives a
message: it stays queued, and the log says why in words."""

import os
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import POSTERN_BIN, Upstream, make_message, send_one, wait_until

# --------------------------------------------------------------------------------
# a throwaway PKI


CA_CONF = """
[ ca ]
default_ca = testca
[ testca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = copy
[ anything ]
commonName = supplied
"""


class PKI:
    """Certificates for "localhost" / 127.0.0.1, good and bad, made by openssl."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = self._authority("ca", "Postern Test CA")
        self.other_ca = self._authority("other", "Some Other CA")
        san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
        self.good = self.leaf("good", san)
        self.wrong_host = self.leaf("wronghost", "subjectAltName=DNS:smtp.wrong.example")
        self.expired = self.leaf("expired", san, start="20200101000000Z", end="20210101000000Z")
        self.not_yet_valid = self.leaf("future", san, start="20400101000000Z", end="20410101000000Z")
        self.other_issuer = self.leaf("otherissuer", san, ca=self.other_ca)
        self.self_signed = self._self_signed("selfsigned", san)

    def openssl(self, *args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.root)

    def _authority(self, name, cn):
        d = self.root / name
        (d / "issued").mkdir(parents=True)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("1000\n")
        (d / "ca.cnf").write_text(CA_CONF.format(dir=d))
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "3650",
                     "-subj", f"/CN={cn}")
        return d

    def leaf(self, name, san, ca=None, start="20240101000000Z", end="20391231000000Z"):
        ca = ca or self.ca
        key, csr, pem = (self.root / f"{name}.{x}" for x in ("key", "csr", "pem"))
        self.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}.test", "-addext", san)
        self.openssl("ca", "-batch", "-config", str(ca / "ca.cnf"), "-cert", str(ca / "ca.pem"),
                     "-keyfile", str(ca / "ca.key"), "-startdate", start, "-enddate", end,
                     "-notext", "-in", str(csr), "-out", str(pem))
        return (pem, key)

    def _self_signed(self, name, san):
        key, pem = self.root / f"{name}.key", self.root / f"{name}.pem"
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", str(key), "-out", str(pem), "-days", "365", "-subj", f"/CN={name}.test",
                     "-addext", san)
        return (pem, key)

    def context(self, cert):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx

    def pin(self, cert):
        """sha256: of the certificate's SubjectPublicKeyInfo, as openssl computes it."""
        pub = subprocess.run(["openssl", "x509", "-in", str(cert[0]), "-pubkey", "-noout"],
                             check=True, capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                             check=True, capture_output=True).stdout
        digest = subprocess.run(["openssl", "dgst", "-sha256", "-hex"], input=der,
                                check=True, capture_output=True).stdout.decode()
        return "sha256:" + digest.split("= ")[-1].strip()

    @property
    def ca_file(self):
        return str(self.ca / "ca.pem")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_upstream(pki):
    """``tls_upstream(cert=pki.good, mode="starttls", logins=None)``: a running TLS
    upstream; all stopped at teardown."""
    made = []

    def make(cert=None, mode="starttls", logins=None, port=None):
        ctx = pki.context(cert or pki.good)
        up = Upstream(port=port, starttls=ctx if mode == "starttls" else None,
                      implicit=ctx if mode == "implicit" else None, logins=logins)
        made.append(up)
        return up.start()

    yield make
    for up in made:
        up.stop()


def tls_settings(pki, up, mode="starttls", host="localhost", **extra):
    """The daemon's [upstream] for a TLS upstream on loopback."""
    s = {"host": host, "port": str(up.port), "tls": mode, "ca_file": pki.ca_file}
    s.update(extra)
    return s


def relay(make_daemon, up, settings):
    d = make_daemon(up.port, start=False)
    d.settings["upstream"] = settings
    return d.start()


def assert_refused(d, up, fragment, subject="refused"):
    """The message is taken, never reaches the upstream, stays queued, and the log
    says ``fragment``."""
    send_one(d.port, subject)
    line = d.wait_for_log(fragment)
    assert line[0].startswith("level=error event=deferred "), line
    assert up.mail_count == 0
    res = subprocess.run([POSTERN_BIN, "status", "--config", str(d.config_path)], capture_output=True, text=True)
    assert res.returncode == 0 and "queue:          1 message," in res.stdout, res.stdout
    return line


# --------------------------------------------------------------------------------
# TLS


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_verified_tls_delivers(pki, tls_upstream, make_daemon, mode):
    """RFC 3207 and RFC 8314 §3.3: the right certificate, checked against ca_file
    and the host name, delivers; the session at the upstream was encrypted."""
    up = tls_upstream(mode=mode)
    d = relay(make_daemon, up, tls_settings(pki, up, mode))
    send_one(d.port, f"over {mode}")
    (m,) = up.wait_for(1)
    assert m.tls, "the upstream saw a plain-text session"
    assert b"Subject: over " + mode.encode() in m.content
    assert len(d.events("delivered")) == 1


def test_port_465_means_implicit_tls(pki, tls_upstream, make_daemon, workdir):
    """`tls` not written and port 465: implicit TLS (check-config says so)."""
    conf = workdir / "p465.conf"
    conf.write_text("[upstream]\nhost = smtp.example.com\nport = 465\n")
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "tls = implicit" in res.stdout


@pytest.mark.parametrize("cert,fragment", [
    ("wrong_host", "wrong host name: the certificate is not for localhost"),
    ("expired", "the certificate expired on 2021-01-01"),
    ("not_yet_valid", "the certificate is not valid yet until 2040-01-01"),
    ("self_signed", "the certificate is self-signed"),
    ("other_issuer", "unknown issuer: CN=Some Other CA is not among the trusted CAs"),
])
def test_bad_certificate_gets_nothing(pki, tls_upstream, make_daemon, cert, fragment):
    """Issue 8 item 2: each failed check is said in words; nothing is sent; the
    message stays queued (deferred, never failed: certificates get fixed)."""
    up = tls_upstream(cert=getattr(pki, cert))
    d = relay(make_daemon, up, tls_settings(pki, up))
    assert_refused(d, up, fragment)
    assert not d.events("failed")


def test_pinned_key_accepts_and_wrong_pin_refuses(pki, tls_upstream, make_daemon):
    """fingerprint = sha256:… pins the public key (SPKI): a self-signed certificate
    with that key delivers without any CA; another key is refused."""
    up = tls_upstream(cert=pki.self_signed)
    s = tls_settings(pki, up, fingerprint=pki.pin(pki.self_signed))
    del s["ca_file"]
    d = relay(make_daemon, up, s)
    send_one(d.port, "pinned")
    (m,) = up.wait_for(1)
    assert m.tls
    d.stop()

    up2 = tls_upstream(cert=pki.good)
    s2 = tls_settings(pki, up2, fingerprint=pki.pin(pki.self_signed))
    d2 = relay(make_daemon, up2, s2)
    line = assert_refused(d2, up2, "fingerprint mismatch")
    assert pki.pin(pki.good) in line[0], "the log gives the key to pin"


def test_no_starttls_offered_gets_nothing(pki, upstream, make_daemon):
    """RFC 3207: with tls = starttls, an upstream that does not announce STARTTLS
    receives no MAIL (no fallback to plain text)."""
    d = relay(make_daemon, upstream, tls_settings(pki, upstream))
    assert_refused(d, upstream, "the upstream does not offer STARTTLS")


def test_verify_no_warns_at_start_and_delivers(pki, tls_upstream, make_daemon):
    up = tls_upstream(cert=pki.self_signed)
    s = tls_settings(pki, up, verify="no")
    del s["ca_file"]
    d = relay(make_daemon, up, s)
    assert d.find("verify = no"), "no warning at start"
    send_one(d.port, "unverified")
    up.wait_for(1)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_per_recipient_outcomes_over_tls(pki, tls_upstream, make_daemon, mode):
    """452 for one recipient and 550 for another end with the right outcome over
    TLS too (RFC 5321 §4.2.5); the 452 one is delivered on the retry."""
    up = tls_upstream(mode=mode)
    up.reply_to_rcpt("later@example.com", "452 4.2.2 mailbox full")
    up.reply_to_rcpt("never@example.com", "550 5.1.1 no such user")
    d = relay(make_daemon, up, tls_settings(pki, up, mode))
    send_one(d.port, "mixed", rcpt=("ok@example.com", "later@example.com", "never@example.com"))
    wait_until(lambda: len(up.messages) >= 2, what="the first delivery and the retry")
    got = sorted(r for m in up.messages for r in m.rcpt_tos)
    assert got == ["later@example.com", "ok@example.com"]
    assert [e["rcpt"] for e in d.events("failed")] == ["<never@example.com>"] or \
        [e["rcpt"] for e in d.events("failed")] == ["never@example.com"]


def test_drop_mid_data_over_tls_is_retried(pki, tls_upstream, make_daemon):
    up = tls_upstream(mode="implicit")
    up.reply_to_data("DROP", "421 4.3.0 going down")
    d = relay(make_daemon, up, tls_settings(pki, up, "implicit"))
    send_one(d.port, "dropped")
    (m,) = up.wait_for(1, timeout=30)
    assert b"Subject: dropped" in m.content
    assert len(d.events("deferred")) >= 2


# --------------------------------------------------------------------------------
# AUTH


def secret_file(workdir, name, text, mode=0o600):
    p = Path(workdir) / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


@pytest.mark.parametrize("auth", ["plain", "login", "auto"])
def test_auth_with_password_file(pki, tls_upstream, make_daemon, workdir, auth):
    """RFC 4954: AUTH after STARTTLS (aiosmtpd offers AUTH only over TLS here),
    the password from a 0600 file."""
    up = tls_upstream(logins={"alerts@example.com": "app password 16"})
    s = tls_settings(pki, up, auth=auth, username="alerts@example.com",
                     password_file=secret_file(workdir, "secret", "app password 16\n"))
    d = relay(make_daemon, up, s)
    send_one(d.port, "authenticated")
    (m,) = up.wait_for(1)
    assert m.login == "alerts@example.com"
    mechanism = {"plain": "PLAIN", "login": "LOGIN", "auto": "PLAIN"}[auth]
    assert up.auth_attempts == [(mechanism, "alerts@example.com", True)]
    assert "app password" not in d.log_text()


def test_xoauth2_token(pki, tls_upstream, make_daemon, workdir):
    up = tls_upstream(mode="implicit", logins={"me@gmail.example": "ya29.a0AfB_token"})
    s = tls_settings(pki, up, "implicit", auth="xoauth2", username="me@gmail.example",
                     password_file=secret_file(workdir, "token", "ya29.a0AfB_token\n"))
    d = relay(make_daemon, up, s)
    send_one(d.port, "oauth")
    (m,) = up.wait_for(1)
    assert m.login == "me@gmail.example"
    assert up.auth_attempts == [("XOAUTH2", "me@gmail.example", True)]


@pytest.mark.parametrize("mechanism", ["plain", "xoauth2"])
def test_wrong_password_is_an_error_once_per_attempt(pki, tls_upstream, make_daemon, workdir, mechanism):
    """A 535 is a configuration error: an error-level entry that says what to
    check, the queue kept, retried on the schedule (1s, then 2s here), not in a
    tight loop; the secret never reaches the log."""
    up = tls_upstream(logins={"u@example.com": "right"})
    s = tls_settings(pki, up, auth=mechanism, username="u@example.com",
                     password_file=secret_file(workdir, "secret", "wrong-secret\n"))
    d = relay(make_daemon, up, s)
    send_one(d.port, "bad password")
    d.wait_for_log("cannot authenticate to the upstream", count=2, timeout=15)
    errors = [e for e in d.events("deferred") if "authenticate" in e.get("msg", "")]
    assert all(e["level"] == "error" for e in errors)
    assert "password_file" in errors[0]["msg"] and "535" in errors[0]["reply"]
    # The schedule, not a tight loop: two failures took at least the 1s backoff.
    assert len(up.auth_attempts) <= 3 and up.mail_count == 0
    assert "wrong-secret" not in d.log_text()


def test_group_readable_password_file_is_refused(pki, tls_upstream, make_daemon, workdir):
    """The file is named; check-config fails; the daemon says so at start and
    keeps the mail queued instead of sending the password."""
    up = tls_upstream(logins={"u": "pw"})
    path = secret_file(workdir, "open-secret", "pw\n", mode=0o644)
    s = tls_settings(pki, up, username="u", password_file=path)
    d = make_daemon(up.port, start=False)
    d.settings["upstream"] = s
    d.write_config()
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(d.config_path)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"password_file {path} is readable by group or others (mode 0644)" in res.stderr
    d.start()
    assert d.find("readable by group or others")
    send_one(d.port, "kept")
    d.wait_for_log("cannot authenticate to the upstream")
    assert up.auth_attempts == [] and up.mail_count == 0


def test_auth_is_never_sent_without_tls_unless_tls_none_is_written(workdir):
    conf = Path(workdir) / "x.conf"
    conf.write_text("[upstream]\nhost = 127.0.0.1\ntls = none\nusername = u\npassword_file = /nonexistent\n")
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(conf)], capture_output=True, text=True)
    assert res.returncode == 1 and "/nonexistent" in res.stderr


# --------------------------------------------------------------------------------
# several upstreams


def test_fallback_when_primary_down_then_primary_again(pki, tls_upstream, make_daemon, stopped_upstream):
    """Issue 8 item 4: primary down → the fallback takes the mail at once (no
    backoff wait); primary back → it is used again at the next connection."""
    fallback = tls_upstream(mode="implicit")
    d = make_daemon(stopped_upstream.port, start=False)
    d.settings["upstream#2"] = tls_settings(pki, fallback, "implicit")
    d.start()
    send_one(d.port, "via fallback")
    (m,) = fallback.wait_for(1)
    assert b"via fallback" in m.content
    (ev,) = [e for e in d.events("delivered")]
    assert ev["upstream"] == f"localhost:{fallback.port}"
    assert d.find("trying the next upstream")

    stopped_upstream.start()
    send_one(d.port, "via primary")
    (m2,) = stopped_upstream.wait_for(1, timeout=30)
    assert b"via primary" in m2.content
    assert fallback.count() == 1
    res = subprocess.run([POSTERN_BIN, "status", "--config", str(d.config_path)], capture_output=True, text=True)
    assert "fallback 1" in res.stdout and "primary" in res.stdout, res.stdout


def test_tls_failure_on_primary_moves_to_fallback(pki, tls_upstream, make_daemon):
    bad = tls_upstream(cert=pki.expired)
    good = tls_upstream(mode="implicit")
    d = make_daemon(bad.port, start=False)
    d.settings["upstream"] = tls_settings(pki, bad)
    d.settings["upstream#2"] = tls_settings(pki, good, "implicit")
    d.start()
    send_one(d.port, "around the bad certificate")
    good.wait_for(1)
    assert bad.mail_count == 0
    assert d.find("expired on")


# --------------------------------------------------------------------------------
# memory


def test_tls_memory_flat_for_5mb(pki, tls_upstream, make_daemon):
    """Issue 8 item 9: a 5 MB message over TLS keeps RSS within 1 MB of a 2 KB one."""
    up = tls_upstream(mode="implicit")
    d = relay(make_daemon, up, tls_settings(pki, up, "implicit"))
    def send(subject, body):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            assert s.sendmail("sender@client.example", ["ops@example.com"], make_message(subject) + body) == {}

    send("small", b"x" * 2000 + b"\r\n")
    up.wait_for(1)
    small = d.status_kb("VmHWM")
    line = b"y" * 998 + b"\r\n"
    body = line * (5 * 1024 * 1024 // len(line))
    send("large", body)
    (_, big) = up.wait_for(2, timeout=60)
    assert big.body.endswith(body)
    large = d.status_kb("VmHWM")
    print(f"\nVmHWM over TLS after 2 KB: {small} kB; after 5 MB: {large} kB")
    assert large - small < 1024, f"peak RSS grew {large - small} KiB for 5 MB over TLS"


# --------------------------------------------------------------------------------
# password_command


def script(workdir, name, text):
    p = Path(workdir) / name
    p.write_text("#!/bin/sh\n" + text)
    os.chmod(p, 0o700)
    return str(p)


def test_password_command_token_once_per_connection(pki, tls_upstream, make_daemon, workdir):
    """Issue 8 item 3: the command runs without a shell when a connection needs
    the secret (not per message); its standard output is the token."""
    up = tls_upstream(mode="implicit", logins={"me@gmail.example": "ya29.fresh-token"})
    runs = Path(workdir) / "runs"
    cmd = script(workdir, "token", f"echo run >> {runs}\necho ya29.fresh-token\n")
    s = tls_settings(pki, up, "implicit", auth="xoauth2", username="me@gmail.example",
                     password_command=f"{cmd} --account 'me@gmail.example'")
    d = relay(make_daemon, up, s)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        for i in range(3):
            c.sendmail("a@client.example", ["ops@example.com"], make_message(f"batch {i}"))
    up.wait_for(3)
    assert runs.read_text().count("run") <= 2, "the token command ran per message"
    assert "ya29.fresh-token" not in d.log_text()
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(d.config_path)], capture_output=True, text=True)
    assert f"password_command = {cmd} …" in res.stdout and "me@gmail" not in res.stdout.split("password_command")[1].split("\n")[0]


def test_password_command_that_hangs_is_killed(pki, tls_upstream, make_daemon, workdir):
    """A command that never ends is killed at its 15 s limit (with what it
    started), the attempt fails as an AUTH error, the mail stays queued, and the
    receiver keeps answering meanwhile."""
    up = tls_upstream(logins={"u": "pw"})
    cmd = script(workdir, "hang", "sleep 600 &\nwait\n")
    d = relay(make_daemon, up, tls_settings(pki, up, username="u", password_command=cmd))
    send_one(d.port, "waiting for a token")
    wait_until(lambda: subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True).returncode == 0,
               what="the command to start")
    send_one(d.port, "the receiver still answers")
    line = d.wait_for_log("timed out after 15s and was killed", timeout=30)
    assert "cannot authenticate" in line[0]
    wait_until(lambda: subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True).returncode != 0,
               what="the command's own child to be killed too")
    assert up.mail_count == 0


def test_password_command_failure_is_reported(pki, tls_upstream, make_daemon, workdir):
    up = tls_upstream(logins={"u": "pw"})
    cmd = script(workdir, "broken", "echo 'refresh token revoked' >&2\nexit 3\n")
    d = relay(make_daemon, up, tls_settings(pki, up, username="u", password_command=cmd))
    send_one(d.port, "no token")
    line = d.wait_for_log("exited with status 3: refresh token revoked")
    assert line[0].startswith("level=error event=deferred")


# --------------------------------------------------------------------------------
# a board without a real-time clock

CLOCK_SHIM = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <unistd.h>
/* adjtimex(2) as the kernel answers before NTP has set the clock, while the
   file named by POSTERN_TEST_UNSYNC exists. */
int adjtimex(struct timex *tx) {
    const char *flag = getenv("POSTERN_TEST_UNSYNC");
    memset(tx, 0, sizeof *tx);
    if (flag && access(flag, F_OK) == 0) { tx->status = STA_UNSYNC; return TIME_ERROR; }
    return TIME_OK;
}
"""


def test_not_yet_valid_with_unset_clock_waits_for_the_clock(pki, tls_upstream, make_daemon, workdir):
    """Issue 8 item 2: "not yet valid" while the kernel says the clock is not
    synchronised is said as such, and the upstream is tried again as soon as the
    clock is set — not after the (here one hour) backoff."""
    src, lib, flag = workdir / "shim.c", workdir / "shim.so", workdir / "unsync"
    src.write_text(CLOCK_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    flag.write_text("")
    future = tls_upstream(cert=pki.not_yet_valid)
    d = make_daemon(future.port, start=False, retry__initial="1h", retry__max="1h")
    d.settings["upstream"] = tls_settings(pki, future)
    d.env = {"LD_PRELOAD": str(lib), "POSTERN_TEST_UNSYNC": str(flag)}
    d.start()
    send_one(d.port, "after the clock is set")
    line = d.wait_for_log("this system's clock is not synchronised")
    assert "waiting for the clock to be set" in line[0]
    port = future.port
    future.stop()
    good = tls_upstream(port=port)
    flag.unlink()
    (m,) = good.wait_for(1, timeout=15)
    assert b"after the clock is set" in m.content
    assert d.find("the system clock is synchronised now")


# --------------------------------------------------------------------------------
# postern probe


def probe(config_path, *extra):
    return subprocess.run([POSTERN_BIN, "probe", "--config", str(config_path), *extra],
                          capture_output=True, text=True, timeout=120)


def test_probe_says_every_step_and_sends_nothing(pki, tls_upstream, make_daemon, workdir):
    """Issue 8 item 8: resolved addresses, TCP, greeting, capabilities, STARTTLS,
    the certificate with its key to pin, verification and AUTH; no MAIL without
    --send-to; exit 0 only when every upstream would take mail."""
    good = tls_upstream(logins={"u@example.com": "pw"})
    bad = tls_upstream(cert=pki.wrong_host, mode="implicit")
    d = make_daemon(good.port, start=False)
    d.settings["upstream"] = tls_settings(pki, good, username="u@example.com",
                                          password_file=secret_file(workdir, "pw", "pw\n"))
    d.write_config()
    res = probe(d.config_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for fragment in ("resolved localhost: 127.0.0.1", "connected to 127.0.0.1", "< 220 ", "> EHLO postern.test",
                     "250-STARTTLS", "> STARTTLS", "TLS TLSv1.", "certificate: CN=good.test",
                     "issued by CN=Postern Test CA", pki.pin(pki.good), "certificate verified",
                     "> AUTH response (not shown)", "authenticated with AUTH PLAIN", "would take mail"):
        assert fragment in out, f"{fragment!r} missing from:\n{out}"
    assert "MAIL FROM" not in out and good.mail_count == 0
    assert "pw" not in out.replace("password_file", "").replace("/pw", "")

    d.settings["upstream#2"] = tls_settings(pki, bad, "implicit")
    d.write_config()
    res = probe(d.config_path)
    assert res.returncode == 1
    assert "FAILED: TLS: wrong host name: the certificate is not for localhost" in res.stdout
    assert pki.pin(pki.wrong_host) in res.stdout


def test_probe_send_to_delivers_a_test_message(pki, tls_upstream, make_daemon, workdir):
    up = tls_upstream(mode="implicit")
    d = make_daemon(up.port, start=False)
    d.settings["upstream"] = tls_settings(pki, up, "implicit", envelope_from="alerts@example.com")
    d.write_config()
    res = probe(d.config_path, "--send-to", "admin@example.com")
    assert res.returncode == 0, res.stdout
    (m,) = up.wait_for(1)
    assert m.rcpt_tos == ["admin@example.com"] and m.mail_from == "alerts@example.com"
    assert b"Subject: Postern probe from postern.test" in m.content
    assert "test message to <admin@example.com>: accepted" in res.stdout


def test_probe_unreachable_upstream_fails(make_daemon, stopped_upstream):
    d = make_daemon(stopped_upstream.port, start=False)
    d.write_config()
    res = probe(d.config_path)
    assert res.returncode == 1
    assert "Connection refused" in res.stdout and "would NOT take mail" in res.stdout


def test_client_certificate(pki, make_daemon):
    """client_cert / client_key: an upstream that requires a client certificate
    takes mail with it; without one, nothing is delivered and the log says why."""
    ctx = pki.context(pki.good)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca_file)
    up = Upstream(implicit=ctx).start()
    try:
        client = pki.leaf("client", "subjectAltName=DNS:board.test")
        s = tls_settings(pki, up, "implicit", client_cert=str(client[0]), client_key=str(client[1]))
        d = relay(make_daemon, up, s)
        send_one(d.port, "with a client certificate")
        (m,) = up.wait_for(1)
        assert m.tls
        d.stop()

        d2 = relay(make_daemon, up, tls_settings(pki, up, "implicit"))
        send_one(d2.port, "without one")
        line = d2.wait_for_log("event=deferred")
        assert "certificate" in line[0] or "alert" in line[0] or "closed" in line[0], line
        assert up.count() == 1
    finally:
        up.stop()


def test_password_file_that_is_a_fifo_is_refused_without_blocking(pki, tls_upstream, make_daemon, workdir):
    """A FIFO in place of the password file must not stop the daemon in open(2):
    it is refused as not a regular file, and the receiver keeps answering."""
    up = tls_upstream(logins={"u": "pw"})
    fifo = Path(workdir) / "secret-fifo"
    os.mkfifo(fifo, 0o600)
    d = relay(make_daemon, up, tls_settings(pki, up, username="u", password_file=str(fifo)))
    send_one(d.port, "fifo")
    d.wait_for_log(f"password_file {fifo} is not a regular file")
    send_one(d.port, "still answering")
    assert up.mail_count == 0
