"""The loop never waits for a sync (issue 11 item 3), with `[spool] sync = helper`.

The group commit's fdatasync runs in a helper process (a fork of the daemon,
made at start): while it runs, other clients are served, and the 250s it covers
go out only once it has finished. (The default on a kernel with io_uring is the
ring, test_sync_ring.py; the helpers are its fallback.) An LD_PRELOAD
shim (Tests/tools/sync_gate.c, inherited by the helper) logs every sync and can
hold it for as long as the test likes: a very slow SD card under control.
"""
import os
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from conftest import EMULATED, POSTERN_BIN, REPO, TARGET, RawClient, children, send_one, wait_until

# Not under qemu-user: a forked child hangs there (a trivial C program that
# forks does too), so the board binaries are tested with sync = loop.
pytestmark = pytest.mark.skipif(EMULATED, reason="qemu-user's forked children hang")


@pytest.fixture
def gate(workdir):
    """(directory, shim): the shim built with the target's compiler."""
    d = workdir / "gate"
    d.mkdir()
    lib = workdir / "sync_gate.so"
    subprocess.run([TARGET["cc"], "-shared", "-fPIC", "-O2", "-o", str(lib),
                    str(REPO / "Tests" / "tools" / "sync_gate.c"), "-ldl"], check=True)
    return d, lib


def gated_daemon(make_daemon, upstream_port, gate, **overrides):
    d, lib = gate
    daemon = make_daemon(upstream_port, start=False, spool__sync="helper", **overrides)
    daemon.env = {"SYNC_GATE_DIR": str(d)}
    if EMULATED:
        daemon.env["QEMU_SET_ENV"] = f"LD_PRELOAD={lib}"
    else:
        daemon.env["LD_PRELOAD"] = str(lib)
    return daemon.start()


def log_entries(gate):
    path = gate[0] / "log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, pid, ns = line.split()
        out.append((what, int(pid), int(ns)))
    return out


# The daemon starts four (SpoolStorage.syncCapacity: four syncs at once).
SYNC_HELPERS = 4


def helper_pids(daemon):
    """The sync helpers: the daemon's children while no command or lookup
    runs."""
    kids = children(daemon.pid)
    return kids if len(kids) == SYNC_HELPERS else None


def exists(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def send_in_thread(port, subject, results):
    def run():
        try:
            send_one(port, subject)
            results.append(("250", time.monotonic_ns()))
        except Exception as e:  # noqa: BLE001 - the test looks at what happened
            results.append((repr(e), time.monotonic_ns()))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_the_sync_runs_in_the_helper_and_the_loop_serves_others_meanwhile(make_daemon, upstream, gate):
    daemon = gated_daemon(make_daemon, upstream.port, gate)
    helpers = wait_until(lambda: helper_pids(daemon), what="the four sync helper processes")
    (gate[0] / "hold").touch()
    results = []
    sender = send_in_thread(daemon.port, "held by a slow sync", results)
    # The message's sync has started, in the helper, not in the daemon.
    enters = wait_until(lambda: [e for e in log_entries(gate) if e[0] == "enter"], what="a sync to start")
    assert {pid for _, pid, _ in enters} <= set(helpers), f"syncs by {enters}, helpers {helpers}, daemon {daemon.pid}"
    # While it is held, another client gets its whole conversation answered.
    with RawClient("127.0.0.1", daemon.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO other.example")[0] == 250
        for _ in range(3):
            assert c.cmd("NOOP")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    # The control socket answers too.
    out = subprocess.run([POSTERN_BIN, "status", "--config", str(daemon.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # ... and the first client still has no 250: its message is not durable yet.
    assert results == [], "250 before the sync finished"
    assert not [e for e in log_entries(gate) if e[0] == "leave"]
    (gate[0] / "hold").unlink()
    sender.join(30)
    assert results and results[0][0] == "250", results
    leave = [e for e in log_entries(gate) if e[0] == "leave"][0]
    assert results[0][1] >= leave[2], "the 250 came before the sync it waited for had finished"
    upstream.wait_for(1)


def test_commits_during_a_sync_share_the_next_one(make_daemon, upstream, gate):
    """Group commit groups: 16 clients at once while every sync takes 200 ms;
    far fewer syncs than messages, every message acknowledged and delivered."""
    daemon = gated_daemon(make_daemon, upstream.port, gate)
    wait_until(lambda: helper_pids(daemon), what="the four sync helper processes")
    before = len([e for e in log_entries(gate) if e[0] == "enter"])
    (gate[0] / "delay").write_text("200")
    results = []
    threads = [send_in_thread(daemon.port, f"grouped {i}", results) for i in range(16)]
    for t in threads:
        t.join(60)
    assert [r for r, _ in results] == ["250"] * 16, results
    syncs = len([e for e in log_entries(gate) if e[0] == "enter"]) - before
    assert syncs <= 8, f"{syncs} syncs for 16 messages"
    upstream.wait_for(16)


def test_a_killed_daemon_with_a_sync_in_flight_promised_nothing_and_its_helper_goes_too(make_daemon, upstream, gate):
    """kill -9 while a message's sync is held: the client never got 250, the
    helper dies with the daemon (it holds no lock), and the restarted daemon
    opens the spool and works."""
    daemon = gated_daemon(make_daemon, upstream.port, gate)
    helpers = wait_until(lambda: helper_pids(daemon), what="the four sync helper processes")
    (gate[0] / "hold").touch()
    results = []
    sender = send_in_thread(daemon.port, "in flight at the crash", results)
    wait_until(lambda: [e for e in log_entries(gate) if e[0] == "enter"], what="a sync to start")
    daemon.kill9()
    sender.join(30)
    assert results and results[0][0] != "250", results
    # PR_SET_PDEATHSIG: the helpers are gone too, without waiting for the sync.
    wait_until(lambda: not any(exists(h) for h in helpers), what="the helpers to die with the daemon")
    (gate[0] / "hold").unlink()
    daemon.start()
    assert daemon.find('msg="spool recovered"')
    send_one(daemon.port, "after the crash")
    upstream.wait_for_match(lambda m: b"after the crash" in m.content)


def test_killed_helpers_cost_nothing_but_speed(make_daemon, upstream, gate):
    """Every helper killed: the next sync runs in the loop, mail is still
    acknowledged only once durable, and it is said in the log."""
    daemon = gated_daemon(make_daemon, upstream.port, gate)
    helpers = wait_until(lambda: helper_pids(daemon), what="the four sync helper processes")
    send_one(daemon.port, "synced by a helper")
    send_one(daemon.port, "synced by a helper again")
    for h in helpers:
        os.kill(h, signal.SIGKILL)
    wait_until(lambda: not any(exists(h) for h in helpers), what="the helpers to die")
    send_one(daemon.port, "synced in the loop")
    upstream.wait_for_match(lambda m: b"synced in the loop" in m.content)
    daemon.wait_for_log("the sync helper ended")
    enters = [e for e in log_entries(gate) if e[0] == "enter"]
    assert daemon.pid in {pid for _, pid, _ in enters}, "no sync in the daemon itself after the helper died"


def test_the_helper_ends_with_the_daemon(make_daemon, upstream, gate):
    daemon = gated_daemon(make_daemon, upstream.port, gate)
    helpers = wait_until(lambda: helper_pids(daemon), what="the four sync helper processes")
    send_one(daemon.port, "one")
    assert daemon.stop() == 0
    wait_until(lambda: not any(exists(h) for h in helpers), what="the helpers to end")
