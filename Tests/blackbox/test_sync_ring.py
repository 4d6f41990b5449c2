"""The spool's syncs through io_uring, the default where the kernel allows it
(issue 11 item 3), and the fall-backs where it does not.

With `[spool] sync = auto` the group commit's fdatasync and directory fsync are
IORING_OP_FSYNC requests, their completions signalled to the poll loop by an
eventfd: the daemon itself makes no fdatasync or fsync call while it relays,
and it forks no helper. Where io_uring_setup fails (a kernel without io_uring, a
seccomp filter, kernel.io_uring_disabled; here an LD_PRELOAD shim,
Tests/tools/no_uring.c), `auto` falls back to the helper processes and
`io_uring` to syncing in the loop; either way it is logged and mail flows.

The 250-after-durable rule and the loop going on while a sync runs are the
spool's, the same whichever runs the sync: test_sync_helper.py holds syncs in
the helpers, and the crash tests (CrashTests.swift) lose power with syncs in
flight. Not under qemu-user, which has no io_uring.
"""
import contextlib
import os
import signal
import smtplib
import subprocess
import threading

import pytest

from conftest import EMULATED, REPO, TARGET, children, make_message, send_one, wait_until

pytestmark = pytest.mark.skipif(EMULATED, reason="qemu-user has no io_uring")


def ring_fds(pid):
    """The daemon's descriptors that are io_uring instances."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]":
                out.append(int(fd))
        except OSError:
            pass
    return out


@contextlib.contextmanager
def traced(daemon, path, calls, into):
    """strace on the daemon (its threads too) for the `calls` (a strace -e
    trace= list) made inside the block; their names are appended to `into`
    once the block is done."""
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(daemon.pid), "-o", str(path),
                               "-e", f"trace={calls}"], stderr=subprocess.DEVNULL)
    try:
        # strace writes nothing until a call is made: wait until it is attached.
        wait_until(lambda: "TracerPid:\t0" not in open(f"/proc/{daemon.pid}/status").read(),
                   what="strace to attach")
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    into.extend(line.split()[1].split("(")[0] for line in path.read_text().splitlines() if "(" in line)


@pytest.fixture
def no_uring(workdir):
    lib = workdir / "no_uring.so"
    subprocess.run([TARGET["cc"], "-shared", "-fPIC", "-O2", "-o", str(lib),
                    str(REPO / "Tests" / "tools" / "no_uring.c"), "-ldl"], check=True)
    return lib


def test_the_syncs_run_through_io_uring_and_the_daemon_neither_syncs_nor_forks(make_daemon, upstream, workdir):
    daemon = make_daemon(upstream.port)
    if daemon.find("io_uring cannot run here"):
        pytest.skip("this kernel refuses io_uring (the fall-backs are tested below)")
    # Two rings: the syncs' and the finished segments' unlinks'.
    assert len(ring_fds(daemon.pid)) == 2, os.listdir(f"/proc/{daemon.pid}/fd")
    assert children(daemon.pid) == []
    # Count the daemon's own sync calls while 4 clients send 40 messages.
    calls = []
    with traced(daemon, workdir / "strace.out", "fdatasync,fsync,io_uring_enter", calls):
        errors = []

        def client(k):
            try:
                for i in range(10):
                    send_one(daemon.port, f"ring {k}.{i}")
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        upstream.wait_for(40)
    assert calls.count("fdatasync") == 0 and calls.count("fsync") == 0, calls
    # One io_uring_enter per group commit (a batch is submitted at once), and
    # group commit groups: at most one per message.
    enters = calls.count("io_uring_enter")
    assert 1 <= enters <= 40, calls
    assert children(daemon.pid) == []


def test_without_io_uring_auto_uses_the_helpers(make_daemon, upstream, no_uring):
    daemon = make_daemon(upstream.port, start=False)
    daemon.env = {"LD_PRELOAD": str(no_uring), "NO_URING_ERRNO": "1"}  # EPERM, as seccomp says it
    daemon.start()
    daemon.wait_for_log("io_uring cannot run here; the spool syncs in helper processes")
    assert ring_fds(daemon.pid) == []
    wait_until(lambda: len(children(daemon.pid)) == 4, what="the four sync helpers")
    send_one(daemon.port, "synced by a helper")
    upstream.wait_for_match(lambda m: b"synced by a helper" in m.content)


def test_sync_io_uring_without_io_uring_syncs_in_the_loop(make_daemon, upstream, no_uring):
    daemon = make_daemon(upstream.port, start=False, spool__sync="io_uring")
    daemon.env = {"LD_PRELOAD": str(no_uring)}
    daemon.start()
    daemon.wait_for_log("io_uring cannot run here; the spool syncs in the loop")
    send_one(daemon.port, "synced in the loop")
    upstream.wait_for_match(lambda m: b"synced in the loop" in m.content)
    assert children(daemon.pid) == []


def test_sync_loop_uses_neither(make_daemon, upstream):
    daemon = make_daemon(upstream.port, spool__sync="loop")
    send_one(daemon.port, "synced in the loop")
    upstream.wait_for_match(lambda m: b"synced in the loop" in m.content)
    assert ring_fds(daemon.pid) == [] and children(daemon.pid) == []


def test_a_reload_that_changes_sync_says_it_waits_for_the_next_start(make_daemon, upstream):
    daemon = make_daemon(upstream.port)
    if daemon.find("io_uring cannot run here"):
        pytest.skip("this kernel refuses io_uring")
    daemon.settings["spool"]["sync"] = "helper"
    daemon.write_config()
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_for_log('msg="configuration reloaded"')
    assert daemon.find("[spool] sync takes effect at the next start")
    # Still the ring, and no helper forked.
    send_one(daemon.port, "after the reload")
    upstream.wait_for_match(lambda m: b"after the reload" in m.content)
    assert len(ring_fds(daemon.pid)) == 2 and children(daemon.pid) == []


def test_finished_segments_are_unlinked_through_io_uring_not_in_the_loop(make_daemon, upstream, workdir):
    """Unlinking a finished segment frees its blocks, 2-5 ms for 4 MiB on ext4:
    the daemon hands it to its second ring and goes on. Messages of 150 KB
    through 64 KiB segments finish a segment or two each; every finished one
    goes, the daemon making no unlink call of its own."""
    daemon = make_daemon(upstream.port, spool__segment_size="64K")
    if daemon.find("io_uring cannot run here"):
        pytest.skip("this kernel refuses io_uring")
    spool = workdir / "spool"
    calls = []
    with traced(daemon, workdir / "strace-unlink.out", "unlink,unlinkat,io_uring_enter", calls):
        body = ("x" * 76 + "\r\n") * 2000
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
            for i in range(8):
                assert s.sendmail("sender@client.example", ["ops@example.com"],
                                  make_message(f"big {i}", body=body)) == {}
        upstream.wait_for(8)
        # Every finished segment goes; the active one stays.
        wait_until(lambda: len([p for p in spool.iterdir() if p.name.endswith(".seg")]) == 1,
                   what=lambda: f"only the active segment left (have {sorted(p.name for p in spool.iterdir())})")
    assert "io_uring_enter" in calls
    assert calls.count("unlink") == 0 and calls.count("unlinkat") == 0, calls
    assert not daemon.find("io_uring cannot unlink")
    assert not daemon.find("could not delete")
