"""The year 2038 (issue 10 item 2): armv7 is a 32-bit time_t world, and the
board binaries are built with _TIME_BITS=64 so that Postern's wall clock runs
on past 2038-01-19T03:14:07Z. These tests move the daemon's wall clock (only:
the monotonic clock it schedules on stays where it is) with the LD_PRELOAD shim
Tests/tools/clock_shift.c, compiled for the binary's architecture, and check
what a clock past 2038 shows: the Received: field, the Date: and Message-ID
`postern sendmail` adds, the age `postern queue` reports after a restart,
retries, and max_age expiry across the boundary itself.

A binary whose time_t is 32 bits fails these: past the boundary glibc's
32-bit clock_gettime fails with EOVERFLOW, as the shim's does.

Postern writes no timestamp of its own into its stderr log lines (the journal
stamps each entry), so there is none to check there."""

import email.utils
import json
import os
import re
import subprocess
import time

import pytest

from conftest import EMULATED, POSTERN_BIN, REPO, TARGET, hold_for, make_message, wait_until

# 2038-01-19T03:14:08Z: the first second a 32-bit time_t cannot hold.
Y2038 = 1 << 31
# 2040-02-29T12:00:00Z.
IN_2040 = 2214129600
# Under qemu-user the daemon starts and answers more slowly.
SLOW = 3 if EMULATED else 1


@pytest.fixture
def clock_shim(workdir):
    """Tests/tools/clock_shift.c built with the target's compiler into the
    test's directory (without _TIME_BITS=64: it defines the 32-bit entry
    points too)."""
    lib = workdir / "clock_shift.so"
    subprocess.run([TARGET["cc"], "-shared", "-fPIC", "-O2", "-o", str(lib),
                    str(REPO / "Tests" / "tools" / "clock_shift.c"), "-ldl"], check=True)
    return lib


def clock_env(lib, wall_now, synchronised=False):
    """The environment that puts the wall clock at ``wall_now`` (seconds since
    the epoch) at this moment, and lets it run on from there."""
    env = {"POSTERN_TEST_CLOCK_SHIFT": str(wall_now - int(time.time()))}
    if synchronised:
        env["POSTERN_TEST_CLOCK_SYNCHRONISED"] = "1"
    if EMULATED:
        # For the guest's loader only, not the host shell of the qemu wrapper.
        env["QEMU_SET_ENV"] = f"LD_PRELOAD={lib}"
    else:
        env["LD_PRELOAD"] = str(lib)
    return env


def run_postern(daemon, *args, input=None):
    """A command of the binary under test with the daemon's shifted clock."""
    config = ["-C", str(daemon.config_path)] if args[0] == "sendmail" else ["--config", str(daemon.config_path)]
    return subprocess.run([POSTERN_BIN, args[0], *config, *args[1:]], input=input,
                          capture_output=True, timeout=60 * SLOW, env={**os.environ, **daemon.env})


def queue_json(daemon):
    r = run_postern(daemon, "queue", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def field_time(value):
    """Seconds since the epoch of an RFC 5322 date-time."""
    return email.utils.parsedate_to_datetime(value).timestamp()


def received_date(message) -> float:
    field = message.content.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    m = re.match(r"Received:.*?;\s*([^\r\n]+)", field, re.S)
    assert m, f"no Received: field with a date: {field[:300]!r}"
    return field_time(m.group(1))


def seconds_of(age):
    """`postern queue`'s age column ("45s", "12m", "3h05m", "4d02h") in seconds
    (the lower bound)."""
    m = re.fullmatch(r"(\d+)([smhd])(?:(\d\d)[hm])?", age)
    assert m, f"not an age: {age!r}"
    n, unit = int(m.group(1)), m.group(2)
    if unit == "s":
        return n
    if unit == "m":
        return n * 60
    if unit == "h":
        return n * 3600 + int(m.group(3)) * 60
    return n * 86400 + int(m.group(3)) * 3600


@pytest.mark.board
def test_received_field_and_sendmail_headers_dated_2040(make_daemon, upstream, clock_shim):
    """RFC 5321 §4.4: the Received: field's date-time is the relay's clock, here
    in 2040; so are the Date: and the Message-ID `postern sendmail` adds to a
    message without them (RFC 5322 §3.6.1, §3.6.4)."""
    d = make_daemon(upstream.port, start=False)
    d.env = clock_env(clock_shim, IN_2040)
    d.start(timeout=20 * SLOW)

    import smtplib
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15 * SLOW) as s:
        assert s.sendmail("sender@client.example", ["ops@example.com"], make_message("in 2040")) == {}
    (got,) = upstream.wait_for(1, timeout=20 * SLOW)
    stamped = received_date(got)
    assert IN_2040 - 5 <= stamped <= IN_2040 + 120 * SLOW, \
        f"Received: dated {email.utils.formatdate(stamped, usegmt=True)}, not 2040-02-29"

    # postern sendmail: the board's own programs, the same clock.
    r = run_postern(d, "sendmail", "-i", "ops@example.com",
                    input=b"Subject: from cron in 2040\n\nbackup done\n")
    assert r.returncode == 0, r.stderr
    m = upstream.wait_for_match(lambda m: m.header("Subject") == "from cron in 2040", timeout=20 * SLOW)[0]
    assert IN_2040 - 5 <= field_time(m.header("Date")) <= IN_2040 + 120 * SLOW, m.header("Date")
    assert IN_2040 - 5 <= received_date(m) <= IN_2040 + 120 * SLOW
    # The Message-ID's left part starts with the wall clock in hex.
    left = m.header("Message-ID").strip("<>").split(".", 1)[0]
    assert IN_2040 - 5 <= int(left, 16) <= IN_2040 + 120 * SLOW, m.header("Message-ID")


@pytest.mark.board
def test_queue_age_retries_and_restart_in_2040(make_daemon, stopped_upstream, clock_shim):
    """With the clock in 2040 and the upstream down, the message's age in
    `postern queue` is seconds, before and after a restart (the arrival read
    back from the spool); retries keep their 1-2 s rhythm on the monotonic
    clock; and once the upstream is back the message arrives once, stamped 2040."""
    d = make_daemon(stopped_upstream.port, start=False, retry__initial="1s", retry__max="2s")
    d.env = clock_env(clock_shim, IN_2040)
    d.start(timeout=20 * SLOW)
    import smtplib
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15 * SLOW) as s:
        assert s.sendmail("sender@client.example", ["ops@example.com"], make_message("waits in 2040")) == {}

    # Retries: the 1st, 2nd and 3rd attempts come about 1 and 2 s apart (with
    # jitter), neither all at once nor never.
    started = time.monotonic()
    d.wait_for_log("event=deferred", count=3, timeout=30 * SLOW)
    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed <= 15 * SLOW, f"three attempts took {elapsed:.1f}s"
    attempts = [int(e.get("attempt", 0)) for e in d.events("deferred")]
    assert attempts[:3] == [1, 2, 3], attempts

    doc = queue_json(d)
    (m,) = doc["messages"]
    assert IN_2040 - 5 <= m["arrival"] <= IN_2040 + 120 * SLOW, m
    assert 0 <= m["age_seconds"] <= 120 * SLOW, m

    # After a restart the age comes from the arrival in the spool and today's
    # clock: seconds, not negative, not 68 years.
    env = d.env
    assert d.stop() == 0, d.log_text()
    d.start(timeout=20 * SLOW)
    assert d.env is env
    doc = queue_json(d)
    (m2,) = doc["messages"]
    assert m2["id"] == m["id"] and m2["arrival"] == m["arrival"]
    assert 0 <= m2["age_seconds"] <= 180 * SLOW, m2
    text = run_postern(d, "queue")
    assert text.returncode == 0, text.stderr
    row = text.stdout.decode().splitlines()[1].split()
    assert row[0] == m["id"] and seconds_of(row[1]) <= 180 * SLOW, text.stdout
    status = run_postern(d, "status").stdout.decode()
    old = re.search(r"oldest message: \S+, (\S+) old", status)
    assert old and seconds_of(old.group(1)) <= 180 * SLOW, status

    stopped_upstream.start()
    (got,) = stopped_upstream.wait_for(1, timeout=30 * SLOW)
    assert IN_2040 - 5 <= received_date(got) <= IN_2040 + 180 * SLOW
    d.wait_for_log("event=delivered", timeout=20 * SLOW)
    hold_for(lambda: stopped_upstream.count() == 1, 2.5, what="exactly one copy upstream")


@pytest.mark.board
def test_max_age_across_the_2038_boundary(make_daemon, stopped_upstream, clock_shim):
    """A message arrives a few seconds before 2038-01-19T03:14:08Z; the daemon
    is restarted just after it. The message's age is then the 40 s it has
    really been queued: max_age (60 s) gives it up some 20 s later, not at once
    (an age of decades) and not never (a negative one). The failure notice
    (RFC 3464) is dated after the boundary, its Arrival-Date before it."""
    d = make_daemon(stopped_upstream.port, start=False, spool__max_age="60s",
                    retry__initial="1s", retry__max="2s")
    d.env = clock_env(clock_shim, Y2038 - 15, synchronised=True)
    d.start(timeout=20 * SLOW)
    import smtplib
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15 * SLOW) as s:
        assert s.sendmail("sender@client.example", ["ops@example.com"], make_message("crosses 2038")) == {}
    (m,) = queue_json(d)["messages"]
    arrival = m["arrival"]
    assert Y2038 - 15 <= arrival < Y2038, f"arrived at {arrival}, not just before {Y2038}"
    assert d.stop() == 0, d.log_text()

    # Restarted when the message has been queued 40 s: after the boundary.
    d.env = clock_env(clock_shim, arrival + 40, synchronised=True)
    restarted = time.monotonic()
    d.start(timeout=20 * SLOW)
    (m,) = queue_json(d)["messages"]
    assert m["arrival"] == arrival
    assert 40 <= m["age_seconds"] <= 40 + 10 * SLOW, m
    assert not d.find("event=expired")

    line = d.wait_for_log("event=expired", timeout=60 * SLOW)[0]
    waited = time.monotonic() - restarted
    assert 15 <= waited <= 20 + 10 * SLOW, f"expired {waited:.1f}s after the restart, not about 20 s"
    age = re.search(r"\bage=(\S+)", line).group(1)
    assert 55 <= seconds_of(age) <= 60 + 10 * SLOW, line

    d.wait_for_log("failure notice queued", timeout=20 * SLOW)
    stopped_upstream.start()
    wait_until(lambda: stopped_upstream.notices, timeout=30 * SLOW, what="the expiry notice upstream")
    (n,) = stopped_upstream.notices
    assert stopped_upstream.count() == 0, "the expired message itself was sent"
    dated = field_time(n.header("Date"))
    assert Y2038 <= dated <= arrival + 120 * SLOW, n.header("Date")
    arrived = re.search(rb"Arrival-Date: ([^\r\n]+)", n.content)
    assert arrived, n.content[:2000]
    assert field_time(arrived.group(1).decode()) == arrival
