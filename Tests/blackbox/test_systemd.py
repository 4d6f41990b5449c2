"""Postern as a systemd service (issue 4): sd_notify readiness and state through a
fake service manager, the watchdog, socket activation with
systemd-socket-activate, and structured entries in a real systemd-journald."""

import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import POSTERN_BIN, REPO, RawClient, hold_for, make_message, send_one, wait_until


class FakeServiceManager:
    """A unix datagram socket in NOTIFY_SOCKET that records every sd_notify
    message with the monotonic time it arrived."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []           # (time, {key: value})
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()

    def with_key(self, key, value=None):
        with self.lock:
            return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def pings(self):
        return [t for t, _ in self.with_key("WATCHDOG", "1")]


@pytest.fixture
def manager(workdir):
    m = FakeServiceManager(workdir / "notify.sock")
    yield m
    m.close()


def managed_daemon(make_daemon, upstream_port, manager, watchdog_usec=None, **overrides):
    d = make_daemon(upstream_port, start=False, **overrides)
    d.env["NOTIFY_SOCKET"] = manager.path
    if watchdog_usec:
        d.env["WATCHDOG_USEC"] = str(watchdog_usec)
    return d.start()


@pytest.mark.board
def test_sd_notify_ready_only_after_recovery_and_listeners(make_daemon, stopped_upstream, manager):
    """READY=1 comes once the spool is recovered (STATUS counts the recovered
    queue) and the listener accepts connections."""
    first = make_daemon(stopped_upstream.port)
    for i in range(3):
        send_one(first.port, f"queued {i}")
    assert first.stop() == 0
    d = managed_daemon(make_daemon, stopped_upstream.port, manager, port=first.port)
    wait_until(lambda: manager.with_key("READY", "1"), what="READY=1")
    t_ready, ready = manager.with_key("READY", "1")[0]
    assert ready["STATUS"].startswith("3 queued"), ready
    socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
    # The recovery was logged before readiness was announced.
    assert d.find('msg="spool recovered"') and "queued=3" in d.find('msg="spool recovered"')[0]


def test_sd_notify_status_follows_queue_and_upstream(make_daemon, stopped_upstream, manager):
    d = managed_daemon(make_daemon, stopped_upstream.port, manager)
    send_one(d.port, "one")
    wait_until(lambda: any(m["STATUS"].startswith("1 queued") and "unreachable" in m["STATUS"]
                           for _, m in manager.with_key("STATUS")),
               what="STATUS showing one queued message and the unreachable upstream")
    stopped_upstream.start()
    stopped_upstream.wait_for(1)
    wait_until(lambda: any(m["STATUS"].startswith("0 queued") and "last delivery none" not in m["STATUS"]
                           for _, m in manager.with_key("STATUS")),
               what="STATUS showing the delivery")
    # Rate-limited: never two STATUS updates (other than READY/RELOADING/STOPPING) within 1.9 s.
    times = [t for t, m in manager.with_key("STATUS") if len(m) == 1]
    assert all(b - a >= 1.9 for a, b in zip(times, times[1:])), times


@pytest.mark.board
def test_watchdog_cadence_stall_and_resume(make_daemon, upstream, manager):
    """sd_watchdog_enabled(3): WATCHDOG=1 at half the interval; a stalled loop
    (SIGSTOP) sends none, and the pings resume after SIGCONT."""
    d = managed_daemon(make_daemon, upstream.port, manager, watchdog_usec=1_000_000)
    time.sleep(3.2)
    pings = manager.pings()
    assert len(pings) >= 4, pings
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 1.0, f"a gap of {max(gaps):.2f}s would have let systemd kill a healthy daemon"
    os.kill(d.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        hold_for(lambda: not [t for t in manager.pings() if t > stopped_at + 0.05], 2.5,
                 what="no pings from a stopped process")
    finally:
        os.kill(d.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_until(lambda: [t for t in manager.pings() if t > resumed_at], timeout=1.5, what="a ping after SIGCONT")
    # And the daemon still works.
    send_one(d.port, "after the stall")
    upstream.wait_for(1)


def test_stopping_on_sigterm(make_daemon, upstream, manager):
    d = managed_daemon(make_daemon, upstream.port, manager)
    assert d.stop() == 0
    wait_until(lambda: manager.with_key("STOPPING", "1"), what="STOPPING=1")


@pytest.mark.board
def test_sighup_reloads_configuration_and_refuses_a_bad_one(make_daemon, upstream, manager):
    """RELOADING=1 with MONOTONIC_USEC, then READY=1; the new settings apply to new
    sessions; a bad file is refused, logged, and the running configuration stays."""
    d = managed_daemon(make_daemon, upstream.port, manager, receiver__max_recipients="100")
    wait_until(lambda: manager.with_key("READY", "1"), what="READY=1")
    d.settings["receiver"]["max_recipients"] = "2"
    d.write_config()
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: manager.with_key("RELOADING", "1"), what="RELOADING=1")
    _, reloading = manager.with_key("RELOADING", "1")[0]
    usec = int(reloading["MONOTONIC_USEC"])
    assert before * 1e6 - 1e6 <= usec <= time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6 + 1e6
    wait_until(lambda: len(manager.with_key("READY", "1")) >= 2, what="READY=1 after the reload")
    wait_until(lambda: d.find('msg="configuration reloaded"'), what="the reload log line")

    def third_recipient_code():
        with RawClient("127.0.0.1", d.port) as c:
            c.reply()
            c.cmd("EHLO client.example")
            c.cmd("MAIL FROM:<a@client.example>")
            c.cmd("RCPT TO:<r1@example.com>")
            c.cmd("RCPT TO:<r2@example.com>")
            code = c.cmd("RCPT TO:<r3@example.com>")[0]
            c.cmd("QUIT")
            return code
    assert third_recipient_code() == 452

    # A bad configuration is refused and the last good one stays.
    d.config_path.write_text(d.config_path.read_text() + "\n[receiver2]\nbogus = 1\n")
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: d.find("configuration reload refused"), what="the refusal in the log")
    assert "receiver2" in d.find("configuration reload refused")[0]
    wait_until(lambda: len(manager.with_key("READY", "1")) >= 3, what="READY=1 after the refused reload")
    assert third_recipient_code() == 452
    send_one(d.port, "still serving")
    upstream.wait_for(1)


def test_socket_activation_with_systemd_socket_activate(make_daemon, upstream):
    """sd_listen_fds(3): listeners passed the way systemd passes them, by name."""
    if not shutil.which("systemd-socket-activate"):
        pytest.fail("systemd-socket-activate is missing (package systemd)")
    d = make_daemon(upstream.port, start=False)
    activated_port = d.port
    # The configured listen address is another port: it must not be used.
    d.settings["receiver"]["listen"] = "127.0.0.1:1"
    d.listen = "127.0.0.1:1"
    d.wrapper = ["systemd-socket-activate", "-l", f"127.0.0.1:{activated_port}", "--fdname=smtp"]
    # systemd-socket-activate starts the program on the first connection, as a
    # socket unit does: the start-up check's connection is that one.
    d.wait_listening = False
    d.start()
    wait_until(lambda: d.find("msg=listening"), what="the listening line")
    line = d.find("msg=listening")[0]
    assert "from=systemd" in line and "name=smtp" in line and f":{activated_port}" in line, line
    assert d.find("socket-activated")
    with smtplib.SMTP("127.0.0.1", activated_port, timeout=10) as s:
        assert s.sendmail("sender@client.example", ["ops@example.com"], make_message("activated")) == {}
    upstream.wait_for(1)


JOURNAL_WRAPPER = r"""
set -e
# A private mount namespace: this journald and its sockets are the test's own.
mkdir -p /run/systemd/journal /run/log/journal
mount -t tmpfs tmpfs /run/systemd/journal
mount --bind "$1" /run/log/journal
/lib/systemd/systemd-journald &
journald=$!
for i in $(seq 1 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
shift
set +e
# postern runs as a child so journald can be stopped after it; signals go on to it.
"$@" &
child=$!
trap 'kill -TERM $child' TERM INT
rc=0
while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done
kill $journald
wait $journald
exit $rc
"""


def test_journald_entries_carry_message_ids_and_postern_fields(make_daemon, stopped_upstream, workdir):
    """Every event of DESIGN.md's Observability section as one journal entry, sent
    with sd_journal_sendv: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, a fixed
    MESSAGE_ID per kind and the POSTERN_* fields, read back with journalctl -o json."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("this test needs root and unshare(1) to run its own journald")
    journal = workdir / "journal"
    journal.mkdir()
    (workdir / "wrap.sh").write_text(JOURNAL_WRAPPER)
    d = make_daemon(stopped_upstream.port, start=False, receiver__allow_recipients="*@example.com")
    d.wrapper = ["unshare", "-m", "--propagation", "private", "bash", str(workdir / "wrap.sh"), str(journal)]
    d.extra_args = ["--log", "journal"]
    d.wait_listening = False
    d.start()
    stopped_upstream.reply_to_rcpt("later@example.com", "451 4.2.0 come back later")
    stopped_upstream.reply_to_rcpt("never@example.com", "550 5.1.1 no such user")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("sender@client.example", ["ops@example.com", "later@example.com", "never@example.com"],
                   make_message("to the journal"))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("sender@client.example", ["someone@elsewhere.example"], make_message("refused"))
    stopped_upstream.start()
    stopped_upstream.wait_for(2)      # ops at once, later after one retry
    assert d.stop() == 0
    assert not d.log_lines(), f"nothing should go to stderr when the journal works:\n{d.log_text()}"

    out = subprocess.run(["journalctl", "-D", str(journal), "-o", "json", "--no-pager",
                          "SYSLOG_IDENTIFIER=postern"], capture_output=True, text=True, timeout=30)
    entries = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    assert entries, out.stderr
    by_event = {}
    for e in entries:
        by_event.setdefault(e.get("POSTERN_EVENT"), []).append(e)
    ids = {"received": "d68fb2e7462b445caac8f9d229f848cc", "delivered": "34332fe3e0bd46d99914157086bc56af",
           "deferred": "8db8ccf84d844976a8277571d3f2d945", "failed": "afde9db0f221495f9e2019f642baf56e",
           "rejected": "74b28c45e8fd419d96a11b59c0c7f77d"}
    for kind, mid in ids.items():
        assert kind in by_event, f"no {kind} entry in {sorted(k for k in by_event if k)}"
        for e in by_event[kind]:
            assert e["MESSAGE_ID"] == mid
            assert e["SYSLOG_IDENTIFIER"] == "postern"
            assert e["MESSAGE"]
            assert e["PRIORITY"] in "34567"
    received = by_event["received"][0]
    assert received["POSTERN_FROM"] == "<sender@client.example>"
    assert "<ops@example.com>" in received["POSTERN_RCPT"]
    assert int(received["POSTERN_SIZE"]) > 0
    qid = received["POSTERN_QUEUE_ID"]
    delivered = [e for e in by_event["delivered"] if e["POSTERN_QUEUE_ID"] == qid]
    assert {e["POSTERN_RCPT"] for e in delivered} == {"<ops@example.com>", "<later@example.com>"}
    assert all(e["POSTERN_UPSTREAM"] == f"127.0.0.1:{stopped_upstream.port}" for e in delivered)
    assert any(e["POSTERN_REPLY"].startswith("250") for e in delivered)
    deferred = [e for e in by_event["deferred"] if e.get("POSTERN_RCPT") == "<later@example.com>"]
    assert deferred and deferred[0]["POSTERN_REPLY"].startswith("451 4.2.0") and deferred[0]["POSTERN_ATTEMPT"]
    failed = by_event["failed"][0]
    assert failed["POSTERN_RCPT"] == "<never@example.com>" and failed["PRIORITY"] == "3"
    rejected = by_event["rejected"][0]
    assert rejected["POSTERN_REPLY"].startswith("550 5.7.1")
    started = [e for e in entries if e.get("MESSAGE_ID") == "4d1dc29184894904a7e2702e600ef20e"]
    stopped = [e for e in entries if e.get("MESSAGE_ID") == "fac7ec3a713d4347840ab066d686e8a5"]
    assert started and stopped


def test_journal_send_failure_falls_back_to_stderr(make_daemon, upstream):
    """With --log journal but no journald socket to talk to, no entry is lost:
    they are written to stderr instead."""
    d = make_daemon(upstream.port, start=False)
    d.extra_args = ["--log", "journal"]
    d.wait_listening = False
    d.wrapper = ["unshare", "-m", "--propagation", "private", "bash", "-c",
                 "mkdir -p /run/systemd/journal && mount -t tmpfs tmpfs /run/systemd/journal && exec \"$@\"", "wrap"]
    d.start()
    send_one(d.port, "no journal")
    upstream.wait_for(1)
    wait_until(lambda: d.find("event=delivered"), what="the delivered event on stderr")
    assert d.find("the journal refused an entry")
