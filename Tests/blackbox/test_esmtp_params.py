"""SMTPUTF8 (RFC 6531) and DSN parameters (RFC 3461), issue 12 item 3: taken
from a real client (Python's smtplib), kept in the spool, and relayed to an
aiosmtpd upstream exactly as given — or, where the upstream lacks SMTPUTF8,
never sent, with a failure notice that says why (5.6.7)."""

import email
import re
import email.policy
import smtplib

import pytest

from conftest import Upstream, UpstreamHandler, _BigLineController, _BigLineSMTP, wait_until

UTF8_RCPT = "用户@例子.广告"
UTF8_SENDER = "pelé@example.com"


# -- upstreams ------------------------------------------------------------------

class _RawLinesSMTP(_BigLineSMTP):
    """aiosmtpd 1.4 refuses MAIL/RCPT parameters it does not know (RET, ENVID,
    NOTIFY, ORCPT) with 555, and upper-cases the ones it keeps. This receiver
    records each MAIL and RCPT argument as it came off the wire, then hides the
    DSN parameters from aiosmtpd's own checks."""

    DSN_KEYWORDS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")

    def _strip(self, arg):
        words = arg.split(" ")
        return " ".join(w for w in words if not w.upper().startswith(self.DSN_KEYWORDS))

    async def smtp_MAIL(self, arg):
        self.event_handler.raw_commands.append("MAIL " + (arg or ""))
        await super().smtp_MAIL(self._strip(arg) if arg else arg)

    async def smtp_RCPT(self, arg):
        self.event_handler.raw_commands.append("RCPT " + (arg or ""))
        await super().smtp_RCPT(self._strip(arg) if arg else arg)


class _RawLinesController(_BigLineController):
    def factory(self):
        return _RawLinesSMTP(self.handler, **self.SMTP_kwargs)


class _Handler(UpstreamHandler):
    def __init__(self, dsn):
        super().__init__()
        self.dsn = dsn
        self.raw_commands = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        if self.dsn:
            responses = responses[:-1] + ["250-DSN"] + responses[-1:]
        return responses


class EsmtpUpstream(Upstream):
    """The capture upstream of conftest, offering SMTPUTF8 or not and DSN or not,
    and keeping the raw MAIL and RCPT arguments."""

    def __init__(self, smtputf8=True, dsn=True):
        super().__init__()
        self.handler = _Handler(dsn)
        self.smtputf8 = smtputf8

    def start(self):
        self.controller = _RawLinesController(self.handler, hostname=self.host, port=self.port,
                                              data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=self.smtputf8)
        self.controller.start()
        return self

    @property
    def raw_commands(self):
        with self.handler.lock:
            return list(self.handler.raw_commands)


@pytest.fixture
def make_esmtp_upstream():
    made = []

    def make(**kwargs):
        u = EsmtpUpstream(**kwargs).start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def message(subject, extra=b""):
    return (b"From: Sender <sender@client.example>\r\nTo: ops@example.com\r\nSubject: " + subject.encode()
            + b"\r\nMessage-ID: <" + subject.replace(" ", "-").encode() + b"@client.example>\r\n" + extra
            + b"\r\nhello\r\n")


# -- receiving ---------------------------------------------------------------------

def test_rfc6531_3_1_and_rfc3461_4_ehlo_offers_smtputf8_and_dsn(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream()
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.has_extn("smtputf8"), s.esmtp_features
        assert s.has_extn("dsn"), s.esmtp_features


def test_rfc6531_3_5_utf8_address_without_smtputf8_is_553_5_6_7(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream()
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        code, text = s.docmd("MAIL FROM:<sender@client.example>")
        assert code == 250
        # smtplib would encode the line as ASCII; send the UTF-8 octets ourselves.
        s.send(("RCPT TO:<" + UTF8_RCPT + ">\r\n").encode())
        code, text = s.getreply()
        assert code == 553 and text.startswith(b"5.6.7"), (code, text)
        s.send(("MAIL FROM:<" + UTF8_SENDER + ">\r\n").encode())
        code, text = s.getreply()
        assert code == 503   # the first MAIL stands; the point is the 553 above
        s.rset()
        s.send(("MAIL FROM:<" + UTF8_SENDER + ">\r\n").encode())
        code, text = s.getreply()
        assert code == 553 and text.startswith(b"5.6.7"), (code, text)


@pytest.mark.parametrize("mail, rcpt, code", [
    ("MAIL FROM:<a@client.example> RET=EVERYTHING", None, 501),
    ("MAIL FROM:<a@client.example> ENVID=a+2", None, 501),
    ("MAIL FROM:<a@client.example> RET=FULL RET=HDRS", None, 501),
    ("MAIL FROM:<a@client.example>", "RCPT TO:<ops@example.com> NOTIFY=NEVER,SUCCESS", 501),
    ("MAIL FROM:<a@client.example>", "RCPT TO:<ops@example.com> NOTIFY=FAILURE NOTIFY=DELAY", 501),
    ("MAIL FROM:<a@client.example>", "RCPT TO:<ops@example.com> ORCPT=ops@example.com", 501),
    ("MAIL FROM:<a@client.example>", "RCPT TO:<ops@example.com> XUNKNOWN=1", 555),
])
def test_rfc3461_4_malformed_or_repeated_parameters_are_501_5_5_4(make_daemon, make_esmtp_upstream, mail, rcpt, code):
    up = make_esmtp_upstream()
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        got, text = s.docmd(mail)
        if rcpt is None:
            assert (got, text[:5]) == (code, b"5.5.4"), text
            return
        assert got == 250
        got, text = s.docmd(rcpt)
        assert (got, text[:5]) == (code, b"5.5.4"), text


# -- relaying ----------------------------------------------------------------------

def test_rfc6531_3_4_smtputf8_message_relayed_with_smtputf8_byte_for_byte(make_daemon, make_esmtp_upstream):
    """A client's SMTPUTF8 message with UTF-8 sender and recipient, and a UTF-8
    header field (RFC 6532), reaches an SMTPUTF8 upstream unchanged, with
    SMTPUTF8 on MAIL."""
    up = make_esmtp_upstream(smtputf8=True, dsn=False)
    d = make_daemon(up.port)
    msg = message("utf8 relay", extra="X-Name: Jürgen Groß\r\n".encode())
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        refused = s.sendmail(UTF8_SENDER, [UTF8_RCPT], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}
    (got,) = up.wait_for(1)
    assert got.mail_from == UTF8_SENDER
    assert got.rcpt_tos == [UTF8_RCPT]
    mail, rcpt = up.raw_commands
    assert mail.startswith("MAIL FROM:<" + UTF8_SENDER + "> SIZE=") and mail.endswith(" BODY=8BITMIME SMTPUTF8"), mail
    assert rcpt == "RCPT TO:<" + UTF8_RCPT + ">"
    assert got.body == msg


def test_rfc3461_dsn_parameters_relayed_as_received_to_a_dsn_upstream(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream(smtputf8=True, dsn=True)
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        refused = s.sendmail("sender@client.example", ["ops@example.com", "dev@example.com"], message("dsn relay"),
                             mail_options=["RET=HDRS", "ENVID=QQ+2B314159"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@y"])
        assert refused == {}
    up.wait_for(1)
    mail, *rcpts = up.raw_commands
    assert mail.startswith("MAIL FROM:<sender@client.example> SIZE=")
    assert mail.endswith(" RET=HDRS ENVID=QQ+2B314159"), mail
    assert rcpts == ["RCPT TO:<ops@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
                     "RCPT TO:<dev@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y"]


def test_rfc3461_dsn_parameters_dropped_for_an_upstream_without_dsn(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream(smtputf8=True, dsn=False)
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        s.sendmail("sender@client.example", ["ops@example.com"], message("dsn dropped"),
                   mail_options=["RET=FULL", "ENVID=abc"], rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;ops@example.com"])
    up.wait_for(1)
    assert all("RET=" not in c and "ENVID=" not in c and "NOTIFY=" not in c and "ORCPT=" not in c
               for c in up.raw_commands), up.raw_commands


def test_dsn_parameters_survive_a_restart_in_the_spool(make_daemon, make_esmtp_upstream):
    """Kept in the spool: queued while the upstream is down, relayed with the
    parameters by a restarted daemon."""
    up = make_esmtp_upstream(smtputf8=True, dsn=True)
    up.stop()
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        s.sendmail(UTF8_SENDER, [UTF8_RCPT], message("dsn spooled"),
                   mail_options=["SMTPUTF8", "RET=HDRS", "ENVID=spool+2B1"],
                   rcpt_options=["NOTIFY=NEVER", "ORCPT=utf-8;" + UTF8_RCPT])
    assert d.stop() == 0
    up.start()
    d.start()
    up.wait_for(1)
    mail, rcpt = up.raw_commands[-2:]
    assert mail.startswith("MAIL FROM:<" + UTF8_SENDER + "> SIZE=")
    assert mail.endswith(" SMTPUTF8 RET=HDRS ENVID=spool+2B1"), mail
    assert rcpt == "RCPT TO:<" + UTF8_RCPT + "> NOTIFY=NEVER ORCPT=utf-8;" + UTF8_RCPT


def test_rfc6531_3_2_upstream_without_smtputf8_fails_with_5_6_7_and_a_notice(make_daemon, make_esmtp_upstream):
    """Never downgraded: an upstream that does not offer SMTPUTF8 gets no MAIL for
    the message; the recipient fails for good with 5.6.7, and the sender's
    failure notice says why (Final-Recipient in RFC 6533's utf-8 form)."""
    up = make_esmtp_upstream(smtputf8=False, dsn=False)
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        refused = s.sendmail("sender@client.example", [UTF8_RCPT], message("needs utf8"), mail_options=["SMTPUTF8"])
        assert refused == {}
    wait_until(lambda: len(up.notices) == 1, what="the failure notice upstream")
    assert up.messages == []
    assert not any(UTF8_RCPT in c for c in up.raw_commands), up.raw_commands
    (n,) = up.notices
    assert n.rcpt_tos == ["sender@client.example"]
    report = email.message_from_bytes(n.content, policy=email.policy.default)
    # Unfolded: the reply may be wrapped over continuation lines.
    text = re.sub(r"\r\n[ \t]+", " ", n.content.decode("utf-8", "replace"))
    assert "Status: 5.6.7" in text
    assert "SMTPUTF8 is required, but was not offered by the upstream" in text
    assert "Final-Recipient: utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}" in text
    assert report.get_content_type() == "multipart/report"
    assert d.events("failed"), d.log_text()


def test_rfc3461_4_1_notify_never_means_no_notice(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream(smtputf8=False, dsn=False)
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        s.sendmail("sender@client.example", [UTF8_RCPT], message("never notice"), mail_options=["SMTPUTF8"],
                   rcpt_options=["NOTIFY=NEVER"])
    d.wait_for_log("no failure notice for recipients whose NOTIFY did not ask for one")
    assert up.notices == [] and up.messages == []


def test_rfc3461_6_3_notice_carries_envid_and_orcpt(make_daemon, make_esmtp_upstream):
    up = make_esmtp_upstream(smtputf8=True, dsn=True)
    up.reply_to_rcpt("gone@example.com", "550 5.1.1 No such user")
    d = make_daemon(up.port)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example")
        s.sendmail("sender@client.example", ["gone@example.com"], message("envid notice"),
                   mail_options=["ENVID=QQ+2B314159"], rcpt_options=["ORCPT=rfc822;gone+40example.com"])
    wait_until(lambda: len(up.notices) == 1, what="the failure notice upstream")
    text = up.notices[0].content.decode()
    assert "\r\nOriginal-Envelope-Id: QQ+314159\r\n" in text
    assert "\r\nOriginal-Recipient: rfc822; gone@example.com\r\nFinal-Recipient: rfc822; gone@example.com\r\n" in text
