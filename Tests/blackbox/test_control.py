"""The control socket and `postern queue`, `flush`, `status` (issue 3 item 7)."""

import json
import os
import socket
import stat
import subprocess

import pytest

from conftest import POSTERN_BIN, send_one, wait_until


def postern(daemon, *args):
    return subprocess.run([POSTERN_BIN, *args, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=30)


def control_request(daemon, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.workdir / "control.sock"))
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.board
def test_control_socket_is_owner_only(daemon):
    mode = os.stat(daemon.workdir / "control.sock").st_mode
    assert stat.S_ISSOCK(mode)
    assert mode & 0o077 == 0, oct(mode)


@pytest.mark.board
def test_queue_lists_messages_with_recipients_attempts_and_last_reply(make_daemon, stopped_upstream):
    daemon = make_daemon(stopped_upstream.port, retry__initial="1s", retry__max="1s")
    send_one(daemon.port, "first", rcpt=("ops@example.com", "dev@example.com"))
    send_one(daemon.port, "second")
    stopped_upstream.reply_to_rcpt("dev@example.com", "451 4.3.0 try later")
    stopped_upstream.start()
    # ops gets through; dev is deferred with the upstream's reply.
    wait_until(lambda: len(daemon.events("deferred")) >= 1 and len(daemon.events("delivered")) >= 2,
               what="one recipient deferred, two delivered")
    r = postern(daemon, "queue")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("QUEUE ID"), r.stdout
    assert "<sender@client.example>" in lines[1]
    assert any("<dev@example.com> pending" in l for l in lines), r.stdout
    assert any("<ops@example.com> delivered" in l for l in lines), r.stdout
    assert any("last reply: 451 4.3.0 try later" in l for l in lines), r.stdout
    assert lines[-1] == "-- 1 message, " + lines[-1].split(", ", 1)[1]

    j = postern(daemon, "queue", "--json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert doc["count"] == 1
    m = doc["messages"][0]
    assert m["from"] == "sender@client.example"
    assert {r["address"]: r["state"] for r in m["recipients"]} == {
        "ops@example.com": "delivered", "dev@example.com": "pending"}
    assert m["attempts"] >= 1
    assert m["last_reply"].startswith("451 4.3.0")
    assert m["age_seconds"] >= 0 and m["size"] > 0


@pytest.mark.board
def test_flush_retries_now_and_status_reports(make_daemon, stopped_upstream):
    # A long backoff: without flush nothing would be retried within the test.
    daemon = make_daemon(stopped_upstream.port, retry__initial="1h", retry__max="1h")
    send_one(daemon.port, "waiting")
    wait_until(lambda: daemon.events("deferred"), what="the first failed attempt")
    s = postern(daemon, "status")
    assert s.returncode == 0, s.stderr
    assert "queue:          1 message" in s.stdout
    assert "unreachable" in s.stdout
    assert "last delivery:  none since start" in s.stdout
    stopped_upstream.start()
    f = postern(daemon, "flush")
    assert f.returncode == 0, f.stderr
    assert "1 message scheduled" in f.stdout
    stopped_upstream.wait_for(1)
    wait_until(lambda: "queue:          0 messages" in postern(daemon, "status").stdout,
               what="an empty queue in postern status")
    assert "ago" in postern(daemon, "status").stdout
    assert postern(daemon, "queue").stdout.strip().endswith("Mail queue is empty")


@pytest.mark.board
def test_malformed_control_requests_get_an_error_and_the_daemon_keeps_serving(daemon, upstream):
    assert control_request(daemon, b"bogus\n").startswith(b"ERROR unknown request")
    assert control_request(daemon, b"x" * 5000).startswith(b"ERROR request too long")
    assert control_request(daemon, b"\x00\xff\n").startswith(b"ERROR")
    # A client that connects and goes away, or sends half a line, changes nothing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.workdir / "control.sock"))
        s.sendall(b"sta")
    assert control_request(daemon, b"status\n").startswith(b"OK\npostern ")
    send_one(daemon.port, "still serving")
    upstream.wait_for(1)


@pytest.mark.board
def test_queue_reads_the_spool_when_no_daemon_runs(make_daemon, stopped_upstream):
    daemon = make_daemon(stopped_upstream.port)
    send_one(daemon.port, "offline one", rcpt=("a@example.com",))
    send_one(daemon.port, "offline two", rcpt=("b@example.com",))
    assert daemon.stop() == 0
    before = sorted(os.listdir(daemon.workdir / "spool"))
    r = postern(daemon, "queue", "--json")
    assert r.returncode == 0, r.stderr
    assert "no daemon is running" in r.stderr
    doc = json.loads(r.stdout)
    assert [m["recipients"][0]["address"] for m in doc["messages"]] == ["a@example.com", "b@example.com"]
    # Read-only: nothing in the spool changed.
    assert sorted(os.listdir(daemon.workdir / "spool")) == before
    s = postern(daemon, "status")
    assert s.returncode == 69, (s.returncode, s.stdout, s.stderr)
    assert "not running" in s.stderr
