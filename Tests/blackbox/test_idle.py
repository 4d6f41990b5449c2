"""An idle daemon's cost (issue 10 item 5): how often it wakes up, with and
without systemd's watchdog. A board's CPU sleeps deepest when nothing wakes it,
so an idle Postern wakes only for what the watchdog needs: never without it,
once per ping with it. Wake-ups are the voluntary context switches of the
thread that runs the loop (/proc/PID/task/PID/status): each return from a
blocking poll(2) is one. Under qemu-user that thread runs the board binary's
code, so the same figure holds for the board builds (`make board-check`).
That an idle daemon writes nothing is test_durability.py's strace check."""

from pathlib import Path

import pytest

from conftest import hold_for
from test_systemd import managed_daemon, manager  # noqa: F401 (manager is a fixture)

WINDOW = 12.0  # seconds


def loop_wakeups(pid: int) -> int:
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("voluntary_ctxt_switches:"))


def wakeups_over_window(d) -> int:
    before = loop_wakeups(d.pid)
    hold_for(lambda: d.running, WINDOW, interval=0.5, what="the idle daemon")
    return loop_wakeups(d.pid) - before


@pytest.mark.board
def test_idle_daemon_without_watchdog_does_not_wake(make_daemon, upstream):
    d = make_daemon(upstream.port)
    wakeups = wakeups_over_window(d)
    print(f"\nidle, no watchdog: {wakeups} wake-ups in {WINDOW:.0f} s")
    # Nothing is queued and no client talks: no timer may fire. One is allowed
    # for a stray signal; a periodic timer of 6 s or less shows as two or more.
    assert wakeups <= 1, f"{wakeups} wake-ups in {WINDOW:.0f} s of idleness"


@pytest.mark.board
def test_idle_daemon_with_watchdog_wakes_once_per_ping(make_daemon, upstream, manager):  # noqa: F811
    # WatchdogSec=4s: a ping (WATCHDOG=1) every 2 s, the half interval of sd_watchdog_enabled(3).
    d = managed_daemon(make_daemon, upstream.port, manager, watchdog_usec=4_000_000)
    pings_before = len(manager.pings())
    wakeups = wakeups_over_window(d)
    pings = len(manager.pings()) - pings_before
    print(f"\nidle, WatchdogSec=4s: {wakeups} wake-ups and {pings} pings in {WINDOW:.0f} s")
    needed = WINDOW / 2  # the pings the watchdog needs in the window
    assert pings >= needed - 2, f"{pings} pings in {WINDOW:.0f} s at a 2 s cadence"
    # One wake-up per ping; the window's two edges may each catch one more.
    assert wakeups <= needed + 2, f"{wakeups} wake-ups in {WINDOW:.0f} s, {needed:.0f} pings needed"
