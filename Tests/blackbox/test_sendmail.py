"""Mail from the board itself (issue 9): `postern sendmail` and the same binary
called as sendmail, mailq and newaliases; the local submission socket, the drop
directory, and [aliases] for root.

The programs that submit are the real ones where they exist: bsd-mailx's
mail(1), cron's exact sendmail command line, Python driving `sendmail -bs`. The
upstream is aiosmtpd (conftest). Unprivileged users are made with useradd and
the programs run as them with setpriv.
"""

import os
import pwd
import re
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import POSTERN_BIN, REPO, RawClient, send_one, wait_until

ALIASES = {"aliases__root": "admin@example.com", "aliases__cron-job": "ops@example.com, admin@example.com"}


@pytest.fixture
def mta(workdir):
    """sendmail, mailq and newaliases as links to a copy of the binary (as the
    package installs them), in a directory any user can reach (the checkout may
    be in root's home)."""
    os.chmod(workdir, 0o755)
    bindir = workdir / "bin"
    bindir.mkdir()
    shutil.copy(POSTERN_BIN, bindir / "postern")
    for name in ("sendmail", "mailq", "newaliases"):
        (bindir / name).symlink_to("postern")
    return bindir


def sendmail(mta, daemon, args, data=b"", user=None, name="sendmail", env=None, timeout=60):
    cmd = [str(mta / name), *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout,
                          env={**os.environ, "POSTERN_CONFIG": str(daemon.config_path), **(env or {})})


def drop_dir(daemon):
    return daemon.workdir / "spool" / "maildrop"


def dropped(daemon):
    return sorted(p.name for p in drop_dir(daemon).iterdir() if p.name.startswith("m."))


# --------------------------------------------------------------------------------
# through the running daemon


def test_sendmail_t_takes_recipients_from_the_header_and_adds_the_missing_fields(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    msg = b"To: root\nCc: Ops <ops@example.net>\nBcc: hidden@example.org\nSubject: disk\n\nsda is failing\n"
    res = sendmail(mta, d, ["-t"], msg)
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert sorted(m.rcpt_tos) == ["admin@example.com", "hidden@example.org", "ops@example.net"]
    # RFC 5322 §3.6.3: with -t the Bcc: field is taken out.
    assert m.header("Bcc") is None
    assert m.header("Subject") == "disk"
    assert re.match(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", m.header("Date")), m.header("Date")
    assert re.match(r"<[^@>]+@postern\.test>$", m.header("Message-ID")), m.header("Message-ID")
    assert "root@postern.test" in m.header("From")
    # LF alone became CRLF; the kernel's word on who sent it is in Received:.
    assert b"\r\nsda is failing\r\n" in m.content and b"\n\n" not in m.content.replace(b"\r\n", b"")
    received = m.content.split(b"\r\n\r\n", 1)[0].decode()
    assert re.search(r"Received: by postern\.test \(Postern, from userid 0 root, pid \d+\)", received), received
    assert d.events("received")[-1].get("user") == "root"


def test_sendmail_f_with_recipient_arguments_applies_the_alias(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    msg = b"From: Backup <backup@board.example>\nSubject: nightly\n\nok\n"
    res = sendmail(mta, d, ["-f", "backup@board.example", "root", "cron-job"], msg)
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.mail_from == "backup@board.example"
    assert sorted(m.rcpt_tos) == ["admin@example.com", "ops@example.com"]
    assert m.header("From") == "Backup <backup@board.example>"   # kept, not added twice
    assert m.content.count(b"\r\nFrom:") + m.content.startswith(b"From:") == 1


def test_cron_job_output_arrives_through_crons_own_command_line(make_daemon, upstream, mta, workdir):
    """cron(8) on Debian runs `sendmail -FCronDaemon -i -B8BITMIME -oem root` and
    writes this header; a run-parts style job's output goes through it."""
    d = make_daemon(upstream.port, **ALIASES)
    job = workdir / "job"
    job.write_text("#!/bin/sh\necho 'smartctl: /dev/sda SMART overall-health: FAILED'\necho .\necho done\n")
    job.chmod(0o755)
    output = subprocess.run([str(job)], capture_output=True, check=True).stdout
    header = (b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@board> run-parts /etc/cron.daily\n"
              b"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
              b"X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\n")
    res = sendmail(mta, d, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], header + output)
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.rcpt_tos == ["admin@example.com"]
    assert m.header("Subject") == "Cron <root@board> run-parts /etc/cron.daily"
    # -i: the lone "." line is content (dot-stuffed on the wire, unstuffed by the upstream).
    assert m.body.endswith(b"FAILED\r\n.\r\ndone\r\n"), m.body
    assert m.header("Message-ID") and m.header("Date")


def test_a_lone_dot_ends_the_input_without_i(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    res = sendmail(mta, d, ["root"], b"Subject: dot\n\nbefore\n.\nafter\n")
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.body.endswith(b"before\r\n") and b"after" not in m.body


# mail(1) from bsd-mailx: unpacked by `make check` (its package would pull in an MTA).
MAILX = REPO / "build" / "tools" / "bsd-mailx" / "usr" / "bin" / "bsd-mailx"


def test_mail_from_bsd_mailx_arrives(make_daemon, upstream, mta, workdir):
    mailx = str(MAILX) if MAILX.exists() else shutil.which("bsd-mailx")
    if mailx is None:
        pytest.fail("bsd-mailx is missing: make check unpacks it (Tests/tools/unpack-deb bsd-mailx build/tools/bsd-mailx)")
    d = make_daemon(upstream.port, **ALIASES)
    mailrc = workdir / "mailrc"
    mailrc.write_text(f"set sendmail={mta / 'sendmail'}\n")
    res = subprocess.run([mailx, "-s", "UPS on battery", "root"], input=b"power lost at 03:12\n",
                         capture_output=True, timeout=60,
                         env={**os.environ, "MAILRC": str(mailrc), "POSTERN_CONFIG": str(d.config_path)})
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.rcpt_tos == ["admin@example.com"]
    assert m.header("Subject") == "UPS on battery"
    assert b"power lost at 03:12\r\n" in m.body
    assert m.header("Message-ID") and m.header("Date") and m.header("From")


def test_sendmail_bs_is_an_smtp_session_with_the_daemon(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    proc = subprocess.Popen([str(mta / "sendmail"), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "POSTERN_CONFIG": str(d.config_path)})

    def reply():
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "sendmail -bs closed early"
            lines.append(line)
            if line[3:4] == b" ":
                return int(line[:3]), b"".join(lines)

    def cmd(line):
        proc.stdin.write(line + b"\r\n")
        proc.stdin.flush()
        return reply()

    try:
        assert reply()[0] == 220
        assert cmd(b"EHLO localhost")[0] == 250
        assert cmd(b"MAIL FROM:<app@board.example>")[0] == 250
        assert cmd(b"RCPT TO:<root>")[0] == 250
        assert cmd(b"DATA")[0] == 354
        code, text = cmd(b"Subject: via -bs\r\n\r\nhello\r\n.")
        assert code == 250, text
        assert cmd(b"QUIT")[0] == 221
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    m = upstream.wait_for(1)[0]
    assert m.rcpt_tos == ["admin@example.com"] and m.header("Subject") == "via -bs"


def test_unmapped_local_recipient_gets_550_5_1_1_at_rcpt(make_daemon, upstream):
    d = make_daemon(upstream.port, **ALIASES)
    with RawClient("127.0.0.1", d.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO lan.example")[0] == 250
        assert c.cmd("MAIL FROM:<camera@lan.example>")[0] == 250
        code, text = c.cmd("RCPT TO:<nobody@localhost>")
        assert code == 550 and "5.1.1" in " ".join(text), text
        code, text = c.cmd("RCPT TO:<root>")
        assert code == 250, text
        code, text = c.cmd("RCPT TO:<ROOT@Postern.Test>")
        assert code == 250, text


def test_star_alias_takes_every_other_local_name(make_daemon, upstream):
    d = make_daemon(upstream.port, **{**ALIASES, "aliases__*": "catchall@example.com"})
    send_one(d.port, "any local", rcpt=("backup@localhost",))
    m = upstream.wait_for(1)[0]
    assert m.rcpt_tos == ["catchall@example.com"]


def test_rewrite_to_puts_the_alias_into_to_and_cc(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, upstream__rewrite_to="yes", **ALIASES)
    res = sendmail(mta, d, ["-t"], b"To: root\nCc: cron-job@localhost, someone@example.net\nSubject: x\n\nbody\n")
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.header("To") == "admin@example.com", m.header("To")
    cc = m.header("Cc")
    assert "ops@example.com" in cc and "admin@example.com" in cc and "someone@example.net" in cc, cc
    assert "localhost" not in cc


def test_alias_loop_is_a_configuration_error_naming_the_line(workdir):
    conf = workdir / "postern.conf"
    conf.write_text("[upstream]\nhost = 127.0.0.1\n\n[aliases]\nroot = a\na = b\nb = a\n")
    res = subprocess.run([POSTERN_BIN, "check-config", "--config", str(conf)], capture_output=True, text=True)
    assert res.returncode == 78, res
    assert re.search(r"postern\.conf:[567]: .*loop", res.stderr), res.stderr


def test_unknown_option_is_a_usage_error_naming_it(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    res = sendmail(mta, d, ["-z", "root"], b"x\n")
    assert res.returncode == 64
    assert b"-z" in res.stderr or b"z" in res.stderr.split(b"\n")[0]
    assert upstream.count() == 0


def test_mailq_lists_and_newaliases_does_nothing(make_daemon, stopped_upstream, mta):
    d = make_daemon(stopped_upstream.port, **ALIASES)
    assert sendmail(mta, d, ["root"], b"Subject: queued\n\nx\n").returncode == 0
    wait_until(lambda: d.events("received"), what="the message received")
    res = sendmail(mta, d, [], name="mailq")
    assert res.returncode == 0, res.stderr
    assert b"admin@example.com" in res.stdout
    res = sendmail(mta, d, ["-bp"])
    assert res.returncode == 0 and b"admin@example.com" in res.stdout
    assert sendmail(mta, d, [], name="newaliases").returncode == 0


def test_a_20_mb_message_through_sendmail_keeps_memory_flat(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, receiver__max_message_size="30M", **ALIASES)
    before = d.status_kb("VmRSS")
    proc = subprocess.Popen([str(mta / "sendmail"), "-i", "root"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "POSTERN_CONFIG": str(d.config_path)})
    line = b"x" * 75 + b"\n"
    proc.stdin.write(b"Subject: big\n\n")
    peak = 0
    for i in range(20 * 1024 * 1024 // len(line)):
        proc.stdin.write(line)
        if i % 20000 == 0:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
    status = Path(f"/proc/{proc.pid}/status").read_text()
    peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
    proc.stdin.close()
    assert proc.wait(120) == 0, proc.stderr.read()
    m = upstream.wait_for(1, timeout=60)[0]
    assert len(m.body) > 20 * 1024 * 1024
    # The sendmail process streams: its peak is its fixed buffers plus libraries.
    assert peak < 16 * 1024, f"sendmail peaked at {peak} kB"
    assert d.status_kb("VmRSS") - before < 2048


# --------------------------------------------------------------------------------
# without a running daemon: the drop directory


def test_with_the_daemon_stopped_messages_wait_in_the_drop_directory_and_arrive_in_order(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    d.stop()
    for i in range(3):
        res = sendmail(mta, d, ["root"], f"Subject: offline {i}\n\nnumber {i}\n".encode())
        assert res.returncode == 0, res.stderr
    names = dropped(d)
    assert len(names) == 3
    for n in names:
        assert stat.S_IMODE((drop_dir(d) / n).stat().st_mode) == 0o640
    assert upstream.count() == 0
    d.start()
    msgs = upstream.wait_for(3)
    assert [m.header("Subject") for m in msgs] == ["offline 0", "offline 1", "offline 2"]
    wait_until(lambda: dropped(d) == [], what="the drop directory emptied")
    received = msgs[0].content.split(b"\r\n\r\n", 1)[0].decode()
    assert "from userid 0 root, via maildrop" in received, received


def test_a_message_dropped_while_running_is_taken_in(make_daemon, upstream, mta):
    """A sendmail that found the socket gone (a restart) leaves its file; the
    running daemon sees it arrive (inotify) and takes it in."""
    d = make_daemon(upstream.port, **ALIASES)
    res = sendmail(mta, d, ["root"], b"Subject: raced\n\nx\n", env={"POSTERN_CONFIG": str(_config_without_socket(d))})
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    assert m.header("Subject") == "raced"


def _config_without_socket(d):
    """The daemon's configuration with a socket path nothing listens on."""
    text = d.config_path.read_text().replace("socket = submit.sock", "socket = nothing.sock")
    text = text.replace("dir = spool", f"dir = {d.workdir / 'spool'}")
    p = d.workdir / "other.conf"
    p.write_text(text)
    return p


def test_exit_75_when_neither_the_daemon_nor_the_drop_directory_takes_it(make_daemon, upstream, mta):
    d = make_daemon(upstream.port, **ALIASES)
    d.stop()
    shutil.rmtree(drop_dir(d))
    res = sendmail(mta, d, ["root"], b"Subject: lost?\n\nx\n")
    assert res.returncode == 75
    assert len(res.stderr.strip().split(b"\n")) == 1, res.stderr
    assert b"not running" in res.stderr and b"maildrop" in res.stderr


@pytest.fixture
def two_users():
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, useradd and setpriv")
    names = ("pmtest1", "pmtest2")
    for n in names:
        try:
            pwd.getpwnam(n)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", n], check=True)
    return names


def test_a_second_user_can_submit_but_cannot_read_or_remove_the_firsts_dropped_message(
        make_daemon, upstream, mta, two_users):
    first, second = two_users
    d = make_daemon(upstream.port, **ALIASES)
    d.stop()
    assert stat.S_IMODE(drop_dir(d).stat().st_mode) == 0o3733
    res = sendmail(mta, d, ["root"], b"Subject: from the first\n\nsecret\n", user=first)
    assert res.returncode == 0, res.stderr
    [name] = dropped(d)
    path = drop_dir(d) / name
    assert path.stat().st_uid == pwd.getpwnam(first).pw_uid

    def as_second(*cmd):
        return subprocess.run(["setpriv", f"--reuid={second}", f"--regid={second}", "--init-groups", "--", *cmd],
                              capture_output=True, timeout=30)

    assert as_second("cat", str(path)).returncode != 0
    assert as_second("ls", str(drop_dir(d))).returncode != 0
    assert as_second("rm", "-f", str(path)).returncode != 0 and path.exists()
    assert as_second("mv", str(path), str(drop_dir(d) / "m.0")).returncode != 0 and path.exists()
    assert as_second("sh", "-c", f"echo x >> {path}").returncode != 0
    res = sendmail(mta, d, ["root"], b"Subject: from the second\n\nhello\n", user=second)
    assert res.returncode == 0, res.stderr
    d.start()
    msgs = upstream.wait_for(2)
    by_subject = {m.header("Subject"): m for m in msgs}
    uid1, uid2 = pwd.getpwnam(first).pw_uid, pwd.getpwnam(second).pw_uid
    assert f"from userid {uid1} {first}, via maildrop" in by_subject["from the first"].content.decode()
    assert f"from userid {uid2} {second}, via maildrop" in by_subject["from the second"].content.decode()


def test_a_user_submits_through_the_socket_and_is_named_by_the_kernel(make_daemon, upstream, mta, two_users):
    first, _ = two_users
    d = make_daemon(upstream.port, **ALIASES)
    # The From: and the envelope claim root; the kernel says who it was.
    res = sendmail(mta, d, ["-f", "root@postern.test", "root"], b"From: root\nSubject: claimed\n\nx\n", user=first)
    assert res.returncode == 0, res.stderr
    m = upstream.wait_for(1)[0]
    uid = pwd.getpwnam(first).pw_uid
    assert re.search(rf"from userid {uid} {first}, pid \d+", m.content.decode()), m.content
    ev = d.events("received")[-1]
    assert ev.get("uid") == str(uid) and ev.get("user") == first


def test_planted_files_in_the_drop_directory_are_refused_not_followed(make_daemon, upstream, workdir):
    """A symbolic link, a FIFO, a second hard link and a file that is not a drop
    file: each is renamed failed.NAME and logged as an error; nothing is read
    through them and nothing is sent."""
    d = make_daemon(upstream.port, **ALIASES)
    secret = workdir / "secret"
    secret.write_text("POSTERN-DROP 1\nF root@x.example\nR admin@example.com\n\nSubject: not yours\r\n\r\nx\r\n")
    d.stop()
    os.symlink(secret, drop_dir(d) / "m.0000000000000000.link")
    os.mkfifo(drop_dir(d) / "m.0000000000000001.fifo")
    os.link(secret, drop_dir(d) / "m.0000000000000002.hardlink")
    (drop_dir(d) / "m.0000000000000003.garbage").write_bytes(b"\x00\xffnot a drop file\n\n")
    d.start()
    wait_until(lambda: len(d.events("rejected")) >= 4, what="all four files refused")
    assert upstream.count() == 0
    names = sorted(p.name for p in drop_dir(d).iterdir())
    assert names == ["failed.m.0000000000000000.link", "failed.m.0000000000000001.fifo",
                     "failed.m.0000000000000002.hardlink", "failed.m.0000000000000003.garbage"], names
    assert all(e.get("level") == "error" for e in d.events("rejected"))


def test_socket_activated_submission_socket_starts_the_daemon(make_daemon, upstream, mta):
    """As postern.socket passes /run/postern/submit: sendmail's connection to the
    passed unix socket starts the daemon (systemd-socket-activate, as systemd
    does at boot), which takes it as the submission socket by its family."""
    if not shutil.which("systemd-socket-activate"):
        pytest.fail("systemd-socket-activate is missing (package systemd)")
    d = make_daemon(upstream.port, start=False, **ALIASES)
    path = d.workdir / "activated.sock"
    d.settings["local"]["socket"] = str(path)
    d.write_config()
    log = d.workdir / "activated.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(["systemd-socket-activate", "-l", str(path), "--fdname=smtp",
                                 POSTERN_BIN, "run", "--config", str(d.config_path), "--log", "stderr"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=d.workdir)
    try:
        wait_until(lambda: path.exists(), what="the activated socket")
        assert "postern started" not in log.read_text()    # not yet: the first connection starts it
        res = sendmail(mta, d, ["root"], b"Subject: activated\n\nx\n")
        assert res.returncode == 0, res.stderr
        m = upstream.wait_for(1)[0]
        assert m.header("Subject") == "activated" and m.rcpt_tos == ["admin@example.com"]
        text = log.read_text()
        assert re.search(r"socket=\S*activated\.sock from=systemd", text), text
        assert dropped(d) == []
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()
