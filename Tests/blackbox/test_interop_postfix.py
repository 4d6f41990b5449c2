"""Interop with Postfix as the client (issue 12 item 7): Postfix's own smtp(8)
relaying through Postern, in the clear and over STARTTLS, and Postfix's load
generator smtp-source(1) into Postern, under and over the cap per client.

The Postfix here is a private null client (STANDARDIZED_CONFIGURATION_README,
"Postfix on a null client"): its own config_directory, queue and data directories
in a fresh /tmp/pbb-postfix-* directory, `relayhost = [127.0.0.1]:<postern port>`,
started with `postfix -c DIR start-fg` and stopped with `postfix -c DIR stop`.
The system's Postfix (and /etc/postfix) is never touched. Mail goes into it
through its own smtpd with smtplib, out through its smtp client into Postern,
and on to the aiosmtpd upstream, where the text is compared.

Postfix's smtp(8) client has no BDAT (Postfix implements CHUNKING on the server
side only, BDAT_README; the states of smtp_proto.c are MAIL, RCPT, DATA, DOT, and
the smtp binary of Debian's Postfix 3.7 holds no "BDAT" string):
so the Postfix cases see CHUNKING offered and DATA used, and check that both
sides agree on which one was. BDAT itself is covered by test_chunking.py.

Every wait is a bounded poll.
"""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, hold_for, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance must be started as root"),
    pytest.mark.skipif(shutil.which("postfix") is None or shutil.which("smtp-source") is None,
                       reason="Postfix (postfix, smtp-source) is not installed"),
]

DEBUG = ["--log", "stderr", "--debug"]   # Postern's phase changes are logged at debug
SOURCE_SENDER, SOURCE_RCPT = "a@example.com", "b@example.com"


# --------------------------------------------------------------------------------
# a private Postfix null client (a smaller Tests/bench/relay_bench.py `Postfix`)

# Only what a null client that relays needs; no chroot, no local delivery. The
# smtp client logs its conversation for 127.0.0.1 (debug_peer_list), so the
# maillog shows the EHLO keywords Postern offered and the verb Postfix used.
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp -o debug_peer_list=127.0.0.1
relay     unix  -       -       n       -       -       smtp -o debug_peer_list=127.0.0.1
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PrivatePostfix:
    """One private Postfix instance relaying everything to ``relay_port``; extra
    main.cf lines in ``main_extra``. ``send`` injects through its smtpd."""

    def __init__(self, relay_port: int, main_extra: str = ""):
        # Not under pytest's tmp_path: its directories are 0700, and Postfix's
        # daemons run as user postfix below the queue and data directories.
        self.dir = Path(tempfile.mkdtemp(prefix="pbb-postfix-", dir="/tmp"))
        self.dir.chmod(0o755)   # root-owned and not writable by others, as `postfix check` wants
        self.conf = self.dir / "conf"
        for d in (self.conf, self.dir / "queue"):
            d.mkdir(0o755)
        self.port = free_port()
        self.maillog = self.dir / "maillog"
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
myhostname = postfix-client.example
myorigin = $myhostname
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{relay_port}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
message_size_limit = 67108864
mailbox_size_limit = 0
maillog_file_prefixes = {self.dir}
maillog_file = {self.maillog}
smtp_tls_loglevel = 1
# Retry soon: a test that defers waits for the next attempt, not Postfix's minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
{main_extra}
""")
        (self.conf / "master.cf").write_text(f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + _SERVICES)
        self.out = open(self.dir / "start-fg.log", "w")
        self.proc = subprocess.Popen(["postfix", "-c", str(self.conf), "start-fg"], stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                pytest.fail(f"postfix start-fg exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                    return s.noop()[0] == 250
            except OSError:
                return False
        wait_until(listening, 30, what="the private Postfix's smtpd")

    def send(self, sender, rcpt, msg: bytes):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            assert s.sendmail(sender, [rcpt], msg) == {}

    def log_text(self):
        text = (self.dir / "start-fg.log").read_text(errors="replace")
        if self.maillog.exists():
            text += self.maillog.read_text(errors="replace")
        return text

    def maillog_lines(self, fragment):
        if not self.maillog.exists():
            return []
        return [l for l in self.maillog.read_text(errors="replace").splitlines() if fragment in l]

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)   # master, which we started
                self.proc.wait(10)
        self.out.close()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_postfix(request):
    made = []

    def make(relay_port, main_extra=""):
        p = PrivatePostfix(relay_port, main_extra)
        made.append(p)
        return p

    yield make
    call = getattr(request.node, "report_call", None)
    for p in made:
        if call is not None and call.failed:
            print(f"--- postfix log ({p.dir}) ---\n{p.log_text()[-20000:]}")
        p.stop()
        p.remove()


# --------------------------------------------------------------------------------
# helpers


def message(msgid, body: bytes) -> bytes:
    """A complete message: Postfix adds nothing to it but its Received: field
    (Date, Message-ID, From and To are present)."""
    head = (f"From: Camera <cam@lan.example>\r\nTo: Ops <ops@example.com>\r\nSubject: {msgid}\r\n"
            f"Date: Wed, 02 Dec 2026 09:00:00 +0000\r\nMessage-ID: <{msgid}@lan.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    return head + body


def body_of(size, dots=False, seed=0) -> bytes:
    """``size`` bytes of 7-bit CRLF lines under 998 octets (Postfix folds longer
    ones, smtp_line_length_limit); with ``dots`` every third line starts with
    '.' or '..' (dot-stuffing both ways, RFC 5321 §4.5.2), and one is a lone '..'."""
    lines, n, i = [], 0, seed
    while n < size:
        line = f"line {i:07d} " + "abcdefghijklmnopqrstuvwxyz0123456789"[: i % 37] + "\r\n"
        if dots and i % 3 == 0:
            line = ("." if i % 2 else "..") + line
        if dots and i == seed + 7:
            line = "..\r\n"
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines).encode()


def text_after_headers(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[1]


def by_msgid(upstream, msgid):
    key = f"<{msgid}@lan.example>".encode()
    return [m for m in upstream.messages if key in m.content.split(b"\r\n\r\n", 1)[0]]


def verbs_used(postfix, port):
    """The transfer verbs Postfix's smtp client sent to Postern, from its debug
    log ("> 127.0.0.1[127.0.0.1]:PORT: DATA")."""
    peer = f"127.0.0.1[127.0.0.1]:{port}: "
    return [l.split(peer, 1)[1].split()[0] for l in postfix.maillog_lines(peer)
            if re.search(re.escape("> " + peer) + r"(DATA|BDAT)\b", l)]


def offered(postfix, port, keyword):
    peer = f"< 127.0.0.1[127.0.0.1]:{port}: 250"
    return [l for l in postfix.maillog_lines(peer) if re.search(rf"250[- ]{keyword}\b", l)]


def assert_relayed_whole(upstream, postfix, sent):
    """Each of ``sent`` ({msgid: message}) arrived once, its text after the
    header section byte for byte, behind Postern's and Postfix's Received: fields."""
    wait_until(lambda: all(by_msgid(upstream, i) for i in sent), 60,
               what=lambda: f"{len(sent)} messages upstream (have {upstream.count()}); "
                            f"postfix: {postfix.maillog_lines('status=')[-3:]}")
    for msgid, msg in sent.items():
        got = by_msgid(upstream, msgid)
        assert len(got) == 1, f"{msgid}: {len(got)} copies"
        content = got[0].content
        assert content.startswith(b"Received: from postfix-client.example"), content[:300]
        assert text_after_headers(content) == text_after_headers(msg), \
            f"{msgid}: text differs ({len(text_after_headers(content))} vs {len(text_after_headers(msg))} bytes)"


# --------------------------------------------------------------------------------
# Postfix's smtp client into Postern


def test_postfix_smtp_client_relays_1k_100k_dot_lines_and_2m_byte_for_byte(make_daemon, upstream, make_postfix):
    """Five messages (1 KB ×2, 100 KB with lines starting with '.' ×2, 2 MB)
    through Postfix's smtp client and Postern reach the upstream with the text
    after the headers byte for byte (dot-stuffing undone once, RFC 5321 §4.5.2).
    Postern offers CHUNKING (RFC 3030 §2) to Postfix; Postfix's client sends DATA
    (it has no BDAT), and Postern's phase changes show the same verb for all five."""
    d = make_daemon(upstream.port, start=False, receiver__max_message_size="10M")
    d.extra_args = DEBUG
    d.start()
    pf = make_postfix(d.port, "smtp_tls_security_level = none")
    sizes = [("1k-a", 1024, False), ("1k-b", 1024, False), ("100k-a", 100 * 1024, True),
             ("100k-b", 100 * 1024, True), ("2m", 2 * 1024 * 1024, False)]
    sent = {}
    for i, (tag, size, dots) in enumerate(sizes):
        msgid = f"pf-{tag}"
        sent[msgid] = message(msgid, body_of(size, dots, seed=i * 1000))
        pf.send("cam@lan.example", "ops@example.com", sent[msgid])
    assert_relayed_whole(upstream, pf, sent)

    wait_until(lambda: len(pf.maillog_lines(f"relay=127.0.0.1[127.0.0.1]:{d.port}")) >= 5,
               what="Postfix's 5 status=sent lines")
    assert len([l for l in pf.maillog_lines("status=sent") if f":{d.port}," in l]) == 5
    assert offered(pf, d.port, "CHUNKING"), "Postern did not offer CHUNKING to Postfix"
    verbs = verbs_used(pf, d.port)
    assert len(verbs) == 5 and len(set(verbs)) == 1, verbs
    phase = {"DATA": "-> receivingData", "BDAT": "-> receivingChunk"}[verbs[0]]
    assert len(d.find(phase)) >= 5, f"Postern's log has {len(d.find(phase))} '{phase}' for Postfix's {verbs}"
    print(f"Postfix's smtp client used {verbs[0]} for all 5 (CHUNKING offered)")


class Certs:
    def __init__(self, root: Path, name="127.0.0.1"):
        self.cert, self.key = root / "postern.pem", root / "postern.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "30",
                        "-subj", f"/CN={name}", "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{name}"],
                       check=True, capture_output=True)
        os.chmod(self.cert, 0o644)   # Postfix's smtp runs as user postfix and reads the CA file


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def test_rfc3207_postfix_smtp_client_starttls_verified_into_postern(make_daemon, upstream, make_postfix, certs):
    """RFC 3207: Postfix with `smtp_tls_security_level = verify` and Postern's
    certificate as its only CA relays two messages over STARTTLS; Postfix logs a
    verified TLS connection to Postern, Postern logs "TLS started" and marks the
    message ESMTPS (RFC 3848 §2)."""
    d = make_daemon(upstream.port, receiver__tls_cert=str(certs.cert), receiver__tls_key=str(certs.key))
    # verify: the chain must lead to smtp_tls_CAfile and the name match the
    # nexthop, here "127.0.0.1" (smtp_tls_verify_cert_match = hostname).
    pf = make_postfix(d.port, f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {certs.cert}")
    sent = {f"pf-tls-{i}": message(f"pf-tls-{i}", body_of(5000, dots=True, seed=i)) for i in range(2)}
    for msg in sent.values():
        pf.send("cam@lan.example", "ops@example.com", msg)
    assert_relayed_whole(upstream, pf, sent)
    verified = pf.maillog_lines(f"Verified TLS connection established to 127.0.0.1[127.0.0.1]:{d.port}")
    assert verified, "no verified TLS connection in Postfix's maillog"
    assert re.search(r"TLSv1\.[23]", verified[0]), verified[0]
    assert d.find('msg="TLS started"')
    for msgid in sent:
        postern_received = by_msgid(upstream, msgid)[0].content.split(b"\r\n")[0:3]
        assert b"ESMTPS" in b" ".join(postern_received), postern_received


def test_tls_min_version_1_3_refuses_postfix_capped_at_1_2_then_takes_it_at_1_3(make_daemon, upstream, make_postfix,
                                                                                  certs):
    """`tls_min_version = 1.3`: Postfix limited to TLS 1.2 (level `encrypt`,
    `smtp_tls_mandatory_protocols = <=TLSv1.2`) cannot hand the message over:
    the handshake fails (Postern logs it), the mail stays deferred in Postfix,
    none arrives and none is lost; Postfix allowed TLS 1.3 then delivers it, and
    its maillog shows TLSv1.3."""
    d = make_daemon(upstream.port, receiver__tls_cert=str(certs.cert), receiver__tls_key=str(certs.key),
                    receiver__tls_min_version="1.3")
    pf = make_postfix(d.port, f"smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = {certs.cert}\n"
                              "smtp_tls_mandatory_protocols = >=TLSv1.2, <=TLSv1.2\n")
    msg = message("pf-min13", body_of(3000))
    pf.send("cam@lan.example", "ops@example.com", msg)
    wait_until(lambda: pf.maillog_lines("status=deferred"), 30, what="Postfix deferring the message")
    assert not by_msgid(upstream, "pf-min13")
    deferred = pf.maillog_lines("status=deferred")[0]
    assert "TLS" in deferred, deferred
    failed = d.wait_for_log('msg="TLS handshake with a client failed"')
    assert not d.find('msg="TLS started"') and not d.events("received"), failed

    # The same instance, now allowed TLS 1.3: `postfix reload` re-reads main.cf
    # and `postqueue -f` retries the deferred mail at once.
    main_cf = pf.conf / "main.cf"
    main_cf.write_text(main_cf.read_text().replace(", <=TLSv1.2\n", "\n"))
    subprocess.run(["postfix", "-c", str(pf.conf), "reload"], check=True, capture_output=True, timeout=30)
    subprocess.run(["postqueue", "-c", str(pf.conf), "-f"], check=True, capture_output=True, timeout=30)
    assert_relayed_whole(upstream, pf, {"pf-min13": msg})
    assert [l for l in pf.maillog_lines("TLS connection established") if "TLSv1.3" in l]


# --------------------------------------------------------------------------------
# smtp-source into Postern


def source_cmd(port, count, sessions, size, *extra, sender=SOURCE_SENDER):
    """smtp-source with -c: it prints a counter for each DATA completed (250)."""
    return ["smtp-source", "-c", "-s", str(sessions), "-m", str(count), "-l", str(size),
            "-f", sender, "-t", SOURCE_RCPT, "-M", "source.example", *extra, f"127.0.0.1:{port}"]


def completed(stdout: bytes) -> int:
    """The last value of smtp-source's -c counter: messages it had accepted."""
    counter = re.findall(rb"(\d+)", stdout.replace(b"\r", b"\n"))
    return int(counter[-1]) if counter else 0


def run_source(port, count, sessions, size, *extra, sender=SOURCE_SENDER, timeout=60):
    """Runs smtp-source to its end: (exit code, messages completed, stderr)."""
    p = subprocess.run(source_cmd(port, count, sessions, size, *extra, sender=sender), capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, completed(p.stdout), p.stderr.decode(errors="replace")


def source_messages(upstream, sender=SOURCE_SENDER):
    return [m for m in upstream.messages if m.mail_from == sender]


@pytest.mark.parametrize("reuse", [False, True], ids=["one-per-connection", "d-all-on-4-connections"])
def test_smtp_source_200_messages_4_sessions_all_arrive(make_daemon, upstream, reuse):
    """smtp-source -s 4 -m 200 -l 2048: 200 messages over 4 parallel sessions,
    one message per connection (smtp-source's default) or all on the four
    connections (-d, RSET between transactions), each reach the upstream once,
    with smtp-source's payload of at least 2048 bytes."""
    d = make_daemon(upstream.port)
    t0 = time.monotonic()
    rc, done, err = run_source(d.port, 200, 4, 2048, *(["-d"] if reuse else []))
    assert rc == 0 and done == 200, (rc, done, err)
    wait_until(lambda: len(source_messages(upstream)) >= 200, 60,
               what=lambda: f"200 smtp-source messages upstream (have {len(source_messages(upstream))})")
    got = source_messages(upstream)
    assert len(got) == 200
    assert all(m.rcpt_tos == [SOURCE_RCPT] for m in got)
    # smtp-source pads its payload with lines of "La de da de da N." to -l bytes.
    sizes = {len(text_after_headers(m.content)) for m in got}
    assert all(2048 <= n <= 2048 + 100 for n in sizes), sizes
    conns = {e["conn"] for e in d.events("received")}
    assert len(conns) == (4 if reuse else 200), f"{len(conns)} connections"
    print(f"smtp-source {'-d ' if reuse else ''}-s 4 -m 200 -l 2048: {time.monotonic() - t0:.1f}s to all upstream")


def test_smtp_source_sessions_over_the_cap_per_client_get_421_4_7_0_nothing_accepted_lost(make_daemon, upstream):
    """max_connections_per_client = 2 with the loopback exemption emptied. One
    smtp-source holds the two slots (-s 2 -d, a second between messages); a
    second smtp-source (-s 4) meanwhile is refused at the banner with Postfix's
    `421 4.7.0 ... too many connections` (it then gives up: smtp-source treats a
    closed connection as fatal) and nothing of it arrives; every message the
    first one completed (its -c count) arrives upstream, and no other."""
    d = make_daemon(upstream.port, receiver__max_connections_per_client="2", receiver__connection_limit_exempt="")
    holder = subprocess.Popen(source_cmd(d.port, 8, 2, 2048, "-d", "-w", "1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        # Both of the holder's sessions have had a message accepted: the two slots are taken.
        wait_until(lambda: len({e["conn"] for e in d.events("received")}) >= 2,
                   what="a message received on each of the holder's two connections")
        rc, done, err = run_source(d.port, 8, 4, 2048, "-A", sender="over@example.com")
        assert holder.poll() is None, "the holder ended before the refused run: nothing was over the cap"
        out, herr = holder.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    refused = re.findall(r"rejected at server banner: 421 4\.7\.0 postern\.test Error: too many connections", err)
    print(f"over the cap: {len(refused)} banner(s) 421 4.7.0, {done} completed (rc {rc}); "
          f"holder completed {completed(out)} of 8 (rc {holder.returncode})")
    assert refused and rc != 0 and done == 0, (rc, done, err)
    assert holder.returncode == 0 and completed(out) == 8, (holder.returncode, completed(out), herr)
    wait_until(lambda: len(d.events("rejected")) >= 1, what="Postern logging the refusal")
    wait_until(lambda: len(source_messages(upstream)) >= 8, 30,
               what=lambda: f"the holder's 8 messages upstream (have {len(source_messages(upstream))})")
    hold_for(lambda: len(source_messages(upstream)) == 8 and not source_messages(upstream, "over@example.com"),
             1.0, what="exactly the holder's 8 messages upstream, none of the refused run's")
