"""Durability: DESIGN.md principle 4 (a 250 to DATA is a promise that survives
kill -9, a full disk and a restart; delivery is at-least-once) and principle 5
(the spool: a quota that refuses with 452 4.3.1, and a flash-friendly daemon that
writes nothing while it is idle).

The crash test is randomised with a fixed seed, printed in the output and in
every failure message; replay a run with ``POSTERN_CRASH_SEED=<seed>``.
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import POSTERN_BIN, REPO, RawClient, hold_for, make_message, parse_log_line, send_one, wait_until


# --------------------------------------------------------------------------------
# helpers


def spool_bytes(spool: Path) -> int:
    """Bytes in the spool's segment files (what `[spool] max_size` bounds)."""
    return sum(p.stat().st_size for p in spool.iterdir() if p.name.endswith(".seg"))


def subjects(upstream):
    return collections.Counter(m.header("Subject") for m in upstream.messages)


def filler(size, tag):
    """About ``size`` bytes of 100-octet CRLF lines."""
    line = (tag + " " + "f" * 100)[:98] + "\r\n"
    return line * max(1, size // len(line))


def send_raw(c: RawClient, sender, msg: bytes):
    """One transaction on an open RawClient. Returns ("MAIL"|"RCPT"|"DATA"|"END",
    code, texts): the stage of the first reply that was not a success, or ("END",
    250, …) when the message was accepted. A connection closed without a reply
    raises EOFError/ConnectionError (the callers treat that as a failure)."""
    code, texts = c.cmd(f"MAIL FROM:<{sender}>")
    if code != 250:
        return "MAIL", code, texts
    code, texts = c.cmd("RCPT TO:<ops@example.com>")
    if code != 250:
        return "RCPT", code, texts
    code, texts = c.cmd("DATA")
    if code != 354:
        return "DATA", code, texts
    c.send(re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n")
    code, texts = c.reply()
    return "END", code, texts


def is_452_4_3_1(code, texts):
    return code == 452 and bool(texts) and texts[0].startswith("4.3.1")


@pytest.fixture
def tmpfs_spool(workdir):
    """A 4 MiB tmpfs mounted on ``<workdir>/spool`` (the daemon's spool directory),
    unmounted at teardown. Request it before ``make_daemon`` so the daemon is
    stopped first."""
    spool = workdir / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(spool)], check=True)
    try:
        yield spool
    finally:
        if subprocess.run(["umount", str(spool)]).returncode != 0:
            subprocess.run(["umount", "-l", str(spool)])


# --------------------------------------------------------------------------------
# 1. kill -9 at random moments under load

SEED_ENV = "POSTERN_CRASH_SEED"
DEFAULT_SEED = 20250601
KILLS = 50
CLIENTS = 4
# The clients pause while more than this many acknowledged messages are not yet
# upstream, so the queue stays short and "in flight" stays meaningful (delivery
# over one upstream connection is slower than four clients submitting).
BACKLOG = 16
KEY_RE = re.compile(r"<?(c\d+-\d+)@client\.example>?")


class Sent:
    """One message as a client sent it."""

    __slots__ = ("key", "data", "stage", "outcome", "reply", "data_at")

    def __init__(self, key, data):
        self.key = key
        self.data = data
        self.stage = "MAIL"     # MAIL, RCPT, DATA (from the DATA command on), done
        self.outcome = None     # "acked" (250 at the end of DATA), "refused", "lost" (connection died)
        self.reply = None
        self.data_at = None     # monotonic time the DATA command was sent


def key_of(address):
    m = KEY_RE.search(address or "")
    return m.group(1) if m else None


def test_design_4_kill9_at_random_moments_loses_nothing_acknowledged(make_daemon, upstream):
    """DESIGN principle 4, RFC 5321 §6.1: four clients send continuously while the
    upstream accepts; the daemon is SIGKILLed at 50 random moments (after a random
    3-400 ms of each incarnation's life) and restarted on the same spool; the
    clients reconnect and go on. They pause while more than 16 acknowledged
    messages are not yet upstream, so the queue (and with it "in flight") stays
    short. In the end, with everything drained:

    * every message that got 250 arrived upstream at least once, with its text
      intact;
    * duplicates are bounded by what was in flight at the kills.

    How "in flight at kill k" is counted (a message may be in flight at several
    kills; each message has a unique envelope sender ``c<t>-<i>@client.example``,
    subject and Message-ID, so it is recognised in the daemon's log and upstream):

    * **being received**: its client had sent DATA and had no final reply when
      kill k broke the connection; plus
    * **accepted, not confirmed delivered**: the daemon had logged
      ``event=received`` for it in an incarnation up to and including k (always
      the case for a message that got 250), or it was being received at an
      earlier kill and nevertheless arrived upstream (so it had been committed),
      and by the end of incarnation k's log it was not *confirmed delivered*.
      Confirmed delivered = an ``event=delivered`` line for it followed, later in
      the same incarnation's log, by an ``event=received`` line (a received line
      is only written after a group commit, and the group commit covers every
      record written before it, including the delivery outcome: DESIGN
      principle 5); or its last delivered line of the whole run lies in an
      incarnation up to and including k (it was not sent again after that kill:
      a resent message is logged delivered again at the latest by the final
      incarnation, which drains everything). A delivered line alone is not
      enough: it is logged before the outcome record is synced.

    Asserted: for every message, extra copies upstream <= the number of kills at
    which it was in flight; hence the total number of duplicates <= the sum over
    the kills of the messages in flight.
    """
    seed = int(os.environ.get(SEED_ENV) or DEFAULT_SEED)
    print(f"crash test seed={seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    tag = f"[seed {seed}; replay with {SEED_ENV}={seed}]"

    daemon = make_daemon(upstream.port)
    port = daemon.port
    lock = threading.Lock()
    sent: dict[str, Sent] = {}
    stop = threading.Event()
    client_failures = []
    # acknowledged messages not seen upstream yet, kept up to date incrementally
    flow = {"scanned": 0, "arrived": set(), "waiting": set()}

    def backlog():
        with lock:
            fresh = upstream.messages[flow["scanned"]:]
            flow["scanned"] += len(fresh)
            for got in fresh:
                key = key_of(got.mail_from)
                flow["arrived"].add(key)
                flow["waiting"].discard(key)
            return len(flow["waiting"])

    def client(t):
        crng = random.Random(f"{seed}-client-{t}")
        i = 0
        try:
            while not stop.is_set():
                try:
                    c = RawClient("127.0.0.1", port, timeout=10)
                except OSError:
                    time.sleep(0.01)        # the daemon is being restarted: reconnect
                    continue
                try:
                    if c.reply()[0] != 220 or c.cmd("EHLO client.example")[0] != 250:
                        continue
                    while not stop.is_set():
                        while backlog() > BACKLOG and not stop.is_set():
                            time.sleep(0.005)
                        key = f"c{t}-{i}"
                        i += 1
                        m = Sent(key, make_message(f"crash {key}", msgid=f"{key}.{seed}",
                                                   body=filler(crng.randint(200, 6000), key)))
                        with lock:
                            sent[key] = m
                        if not transact(c, m):
                            break
                except (OSError, EOFError):
                    pass                    # the daemon died under us: the reconnect loop goes on
                finally:
                    c.close()
        except Exception as e:              # a bug in the test itself: report it
            client_failures.append(repr(e))

    def transact(c, m):
        """Sends ``m``; True when the connection can go on. A broken connection
        leaves m.outcome "lost" at the stage it had reached."""
        m.outcome = "lost"
        code, texts = c.cmd(f"MAIL FROM:<{m.key}@client.example>")
        if code == 250:
            m.stage = "RCPT"
            code, texts = c.cmd("RCPT TO:<ops@example.com>")
        if code == 250:
            m.stage = "DATA"
            m.data_at = time.monotonic()
            code, texts = c.cmd("DATA")
            if code == 354:
                c.send(m.data + b".\r\n")
                code, texts = c.reply()
        m.stage = "done"
        m.reply = (code, texts)
        if code == 250:
            m.outcome = "acked"
            with lock:
                if m.key not in flow["arrived"]:
                    flow["waiting"].add(m.key)
            return True
        m.outcome = "refused"
        return c.cmd("RSET")[0] == 250

    def acked():
        with lock:
            return {k for k, m in sent.items() if m.outcome == "acked"}

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(CLIENTS)]
    for th in threads:
        th.start()
    incarnation_logs = []   # log lines of each killed incarnation, in order
    kill_times = []         # monotonic time right after each kill was reaped
    try:
        wait_until(lambda: len(acked()) >= 20, what="20 acknowledged messages before the first kill")
        for k in range(KILLS):
            time.sleep(rng.uniform(0.003, 0.4))    # a random moment in this incarnation's life
            daemon.kill9()
            kill_times.append(time.monotonic())
            incarnation_logs.append(daemon.log_lines())
            daemon.start()
        # The last incarnation lives on: let it take some more mail under load.
        n = len(acked())
        wait_until(lambda: len(acked()) >= n + 20, what="20 more acknowledged messages after the last restart")
    finally:
        stop.set()
        for th in threads:
            th.join(15)
    assert not any(th.is_alive() for th in threads), "a client thread hung"
    assert not client_failures, client_failures

    with lock:
        messages = dict(sent)
    promised = {k for k, m in messages.items() if m.outcome == "acked"}
    refused = {k: m.reply for k, m in messages.items() if m.outcome == "refused"}

    def arrived():
        return collections.Counter(key_of(m.mail_from) for m in upstream.messages)

    # Drained: every acknowledged message upstream, then nothing more for longer
    # than the retry maximum (2 s), so late (re)deliveries have shown up.
    wait_until(lambda: promised <= set(arrived()), timeout=40,
               what=lambda: f"every acknowledged message upstream {tag} "
                    f"(missing {len(promised - set(arrived()))}: {sorted(promised - set(arrived()))[:10]})")
    last = {"count": -1, "since": time.monotonic()}

    def quiet():
        n = upstream.count()
        if n != last["count"]:
            last["count"], last["since"] = n, time.monotonic()
        return time.monotonic() - last["since"] >= 2.5
    wait_until(quiet, timeout=40, what="the upstream getting no more messages for 2.5 s")

    copies = arrived()
    assert None not in copies, f"a message upstream that no client sent {tag}"

    # -- what was in flight at each kill (see the docstring)
    final_log = daemon.log_lines()
    last_delivered = {}     # message -> the incarnation of its last delivered line
    for k, lines in enumerate(incarnation_logs + [final_log]):
        for line in lines:
            if "event=delivered" in line:
                last_delivered[key_of(parse_log_line(line).get("from"))] = k
    being_received = [set() for _ in range(KILLS)]
    for key, m in messages.items():
        if m.outcome == "lost" and m.stage == "DATA":
            k = next((j for j, t in enumerate(kill_times) if m.data_at < t), None)
            assert k is not None, f"{key} lost its connection after the last kill {tag}"
            being_received[k].add(key)
    received_upto, confirmed_upto = set(), set()
    committed_earlier = set()   # being received at an earlier kill, yet arrived upstream
    in_flight_at = []           # one set per kill
    for k, lines in enumerate(incarnation_logs):
        pending = set()
        for line in lines:
            if "event=delivered" in line:
                pending.add(key_of(parse_log_line(line).get("from")))
            elif "event=received" in line:
                received_upto.add(key_of(parse_log_line(line).get("from")))
                confirmed_upto |= pending
                pending = set()
        confirmed_upto |= {key for key in pending if last_delivered[key] == k}
        accepted = received_upto | committed_earlier
        in_flight_at.append((accepted - confirmed_upto) | being_received[k])
        committed_earlier |= {key for key in being_received[k] if copies[key]}

    budget = collections.Counter()
    for flying in in_flight_at:
        budget.update(flying)
    extra = {key: n - 1 for key, n in copies.items() if n > 1}
    in_flight_total = sum(len(f) for f in in_flight_at)
    duplicates = sum(extra.values())
    print(f"crash test seed={seed}: {KILLS} kills, {len(messages)} messages sent, {len(promised)} acknowledged, "
          f"{len(refused)} refused, {sum(copies.values())} deliveries upstream, {duplicates} duplicate(s), "
          f"{in_flight_total} in flight over the kills (per kill: {[len(f) for f in in_flight_at]}), "
          f"duplicated: {sorted(extra)[:20]}")

    # -- the promises
    missing = promised - set(copies)
    assert not missing, f"acknowledged but never delivered {tag}: {sorted(missing)}"
    bad_5xx = {k: r for k, r in refused.items() if r[0] >= 500}
    assert not bad_5xx, f"permanent refusals under load {tag}: {bad_5xx}"
    damaged = sorted({key_of(m.mail_from) for m in upstream.messages if m.body != messages[key_of(m.mail_from)].data})
    assert not damaged, f"messages arrived altered {tag}: {damaged[:10]}"
    over = {k: (n, budget[k]) for k, n in extra.items() if n > budget[k]}
    assert not over, (f"duplicates beyond what was in flight {tag} (message: (extra copies, kills in flight)): "
                      f"{dict(sorted(over.items())[:20])}")
    assert duplicates <= in_flight_total, (duplicates, in_flight_total, tag)
    assert daemon.running, daemon.log_text()


# --------------------------------------------------------------------------------
# 2. full disk


def test_design_4_full_disk_refused_452_4_3_1_then_drains_and_accepts_again(tmpfs_spool, make_daemon,
                                                                           stopped_upstream):
    """DESIGN principle 4 (a full disk loses nothing acknowledged) and `[spool]`
    (452 4.3.1 when there is no room): the spool is a 4 MiB tmpfs, far below
    `max_size = 64M`, so the file system fills first. With the upstream down,
    ~100 KB messages are sent until the daemon refuses: the refusal is 452 4.3.1
    (at MAIL or at the end of DATA), never a 5xx, never a dropped connection,
    never a crash. Then the upstream starts: the queue drains, space comes back,
    a new message is accepted within a bounded wait and delivered; every message
    that got 250 arrives exactly once."""
    upstream = stopped_upstream
    daemon = make_daemon(upstream.port, spool__max_size="64M", spool__segment_size="256K")
    accepted, refusal = [], None
    with RawClient("127.0.0.1", daemon.port, timeout=15) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        for i in range(80):          # 80 x 100 KB is twice the file system
            subject = f"fill {i}"
            try:
                stage, code, texts = send_raw(c, "sender@client.example",
                                              make_message(subject, body=filler(100_000, subject)))
            except (EOFError, OSError) as e:
                pytest.fail(f"connection dropped without a reply while filling the disk, message {i} "
                            f"({len(accepted)} accepted): {e!r}\n{daemon.log_text()}")
            if code == 250:
                accepted.append(subject)
                continue
            refusal = (stage, code, texts)
            break
        assert refusal is not None, f"a 4 MiB file system took {len(accepted)} x 100 KB without a refusal"
        assert refusal[0] in ("MAIL", "END") and is_452_4_3_1(*refusal[1:]), \
            f"full disk answered {refusal} (expected 452 4.3.1 at MAIL or at the end of DATA)\n{daemon.log_text()}"
        st = os.statvfs(tmpfs_spool)
        print(f"full disk: {len(accepted)} x 100 KB accepted, then {refusal}; "
              f"{st.f_bavail * st.f_frsize} bytes free")
        assert st.f_bavail * st.f_frsize < 512 * 1024, "the refusal came before the file system was full"
        assert daemon.running, f"postern died on a full disk:\n{daemon.log_text()}"
        # The session goes on after the refusal.
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    assert len(accepted) >= 20, accepted   # ~38 fit in 4 MiB

    upstream.start()
    wait_until(lambda: set(accepted) <= set(subjects(upstream)), timeout=30,
               what=lambda: f"every accepted message upstream (missing "
                    f"{sorted(set(accepted) - set(subjects(upstream)))[:10]})")

    def accepted_again():
        with RawClient("127.0.0.1", daemon.port, timeout=15) as c:
            assert c.reply()[0] == 220
            assert c.cmd("EHLO client.example")[0] == 250
            stage, code, texts = send_raw(c, "sender@client.example", make_message("disk has room again"))
            if code == 250:
                return True
            assert is_452_4_3_1(code, texts), (stage, code, texts)
            return False
    wait_until(accepted_again, timeout=30, interval=0.5,
               what="a new message accepted once the queue drained")
    upstream.wait_for_match(lambda m: m.header("Subject") == "disk has room again")
    # Retry max is 2 s: a second copy of anything would show within that.
    expected = {s: 1 for s in accepted + ["disk has room again"]}
    hold_for(lambda: subjects(upstream) == expected, 2.5,
             what=lambda: "every accepted message upstream exactly once")
    assert daemon.running


# --------------------------------------------------------------------------------
# 3. quota (max_size)


def test_design_spool_max_size_quota_452_4_3_1_at_mail_then_drains(make_daemon, stopped_upstream, workdir):
    """DESIGN `[spool] max_size` ("beyond it new mail gets 452 4.3.1, nothing is
    lost"): with `max_size = 256K`, `segment_size = 64K` and the upstream down,
    ~20 KB messages are accepted until the segments reach max_size; then MAIL gets
    452 4.3.1. When the upstream comes back, the queue on disk is delivered
    exactly once and mail is accepted again."""
    upstream = stopped_upstream
    daemon = make_daemon(upstream.port, spool__max_size="256K", spool__segment_size="64K")
    spool = workdir / "spool"
    accepted, refusal = [], None
    with RawClient("127.0.0.1", daemon.port, timeout=15) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        for i in range(40):          # 40 x 20 KB is three times max_size
            subject = f"quota {i}"
            before = spool_bytes(spool)
            stage, code, texts = send_raw(c, "sender@client.example",
                                          make_message(subject, body=filler(20_000, subject)))
            if code == 250:
                accepted.append(subject)
                continue
            refusal = (stage, code, texts, before)
            break
        assert refusal is not None, f"max_size 256K took {len(accepted)} x 20 KB without a refusal"
        stage, code, texts, before = refusal
        print(f"quota: {len(accepted)} x 20 KB accepted, then {refusal[:3]} at {before} bytes of segments")
        assert stage == "MAIL" and is_452_4_3_1(code, texts), \
            f"over max_size got {refusal[:3]} (expected 452 4.3.1 at MAIL)\n{daemon.log_text()}"
        assert before >= 256 * 1024, f"refused at {before} bytes of segments, under max_size"
        # Still refused while nothing drains; the session is usable.
        assert c.cmd("RSET")[0] == 250
        code, texts = c.cmd("MAIL FROM:<sender@client.example>")
        assert is_452_4_3_1(code, texts), (code, texts)
        assert c.cmd("QUIT")[0] == 221
    # Under max_size every ~20 KB message was accepted.
    assert len(accepted) >= (256 * 1024) // 21_000, accepted

    upstream.start()
    wait_until(lambda: set(accepted) <= set(subjects(upstream)), timeout=30,
               what=lambda: f"the queue on disk delivered (missing "
                    f"{sorted(set(accepted) - set(subjects(upstream)))[:10]})")

    def accepted_again():
        with RawClient("127.0.0.1", daemon.port, timeout=15) as c:
            assert c.reply()[0] == 220
            assert c.cmd("EHLO client.example")[0] == 250
            stage, code, texts = send_raw(c, "sender@client.example", make_message("under quota again"))
            if code == 250:
                return True
            assert is_452_4_3_1(code, texts), (stage, code, texts)
            return False
    wait_until(accepted_again, timeout=20, interval=0.2, what="mail accepted again after the queue drained")
    upstream.wait_for_match(lambda m: m.header("Subject") == "under quota again")
    expected = {s: 1 for s in accepted + ["under quota again"]}
    hold_for(lambda: subjects(upstream) == expected, 2.5, what="every accepted message upstream exactly once")
    assert spool_bytes(spool) < 256 * 1024


# --------------------------------------------------------------------------------
# 4. nothing written while idle

IDLE_WINDOW = 6.0
TRACED = "write,pwrite64,pwritev,pwritev2,writev,fdatasync,fsync,ftruncate,truncate,fallocate," \
         "unlink,unlinkat,rename,renameat,renameat2,open,openat,creat"
WRITES = {"write", "pwrite64", "pwritev", "pwritev2", "writev"}
FORBIDDEN = {"fdatasync", "fsync", "ftruncate", "truncate", "fallocate", "unlink", "unlinkat",
             "rename", "renameat", "renameat2", "creat"}
CALL_RE = re.compile(r"^(?:\[pid\s+)?(?:\d+\]?\s+)?(\w+)\((.*)$")


@pytest.fixture(scope="module")
def strace_bin():
    if shutil.which("strace") is None:
        subprocess.run([str(REPO / "Tests" / "tools" / "ensure-debs"), "strace"], check=True)
    path = shutil.which("strace")
    assert path, "strace could not be installed"
    return path


def trace_idle(strace_bin, daemon, workdir, seconds=IDLE_WINDOW):
    """Attaches strace to the daemon for ``seconds``; returns the traced calls
    as (name, arguments) and the raw trace text."""
    out, err = workdir / "strace.out", workdir / "strace.err"
    with open(err, "wb") as errf:
        tracer = subprocess.Popen(
            [strace_bin, "-f", "-s", "80", "-e", f"trace={TRACED}", "--seccomp-bpf",
             "-p", str(daemon.pid), "-o", str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    try:
        wait_until(lambda: "attached" in err.read_text() or tracer.poll() is not None, timeout=10,
                   what="strace attaching to postern")
        assert tracer.poll() is None, f"strace exited: {err.read_text()}"
        # A deliberate observation window: nothing must happen in it.
        hold_for(lambda: tracer.poll() is None and daemon.running, seconds,
                 what="strace and postern running")
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)     # detach
        try:
            tracer.wait(10)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
    text = out.read_text(errors="replace")
    calls = []
    for line in text.splitlines():
        m = CALL_RE.match(line.strip())
        if m:
            calls.append((m.group(1), m.group(2)))
    return calls, text


def idle_violations(calls):
    bad = []
    for name, args in calls:
        if name in WRITES:
            fd = args.split(",", 1)[0].strip()
            if fd != "2":
                bad.append(f"{name}({args[:100]}")
        elif name in FORBIDDEN:
            bad.append(f"{name}({args[:100]}")
        elif name in ("open", "openat"):
            if re.search(r"O_CREAT|O_WRONLY|O_RDWR|O_TRUNC|O_APPEND", args):
                bad.append(f"{name}({args[:100]}")
    return bad


@pytest.mark.board
def test_design_1_5_nothing_written_while_idle_with_queued_mail(strace_bin, make_daemon, stopped_upstream,
                                                                workdir):
    """DESIGN principles 1 and 5: with 5 messages queued and the upstream down
    (retry every 1-2 s), an idle daemon only retries: for ~6 s strace sees no
    write/pwrite/pwritev except log lines to stderr (fd 2), no fdatasync, fsync,
    ftruncate or unlink, and no file opened for writing or created."""
    daemon = make_daemon(stopped_upstream.port, retry__initial="1s", retry__max="2s")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        for i in range(5):
            assert s.sendmail("sender@client.example", ["ops@example.com"], make_message(f"idle {i}")) == {}
    daemon.wait_for_log("event=deferred")
    deferred_before = len(daemon.events("deferred"))
    calls, text = trace_idle(strace_bin, daemon, workdir)
    print(f"idle with a queue: {len(calls)} traced calls: {collections.Counter(n for n, _ in calls)}")
    retries = len(daemon.events("deferred")) - deferred_before
    assert retries >= 2, f"only {retries} retries in {IDLE_WINDOW}s: the test did not see the retry path"
    assert any(name == "write" and args.startswith("2,") for name, args in calls), \
        f"strace saw none of the retry log lines: was it attached?\n{text[:2000]}"
    bad = idle_violations(calls)
    assert not bad, f"writes while idle with a queue ({retries} retries):\n" + "\n".join(bad[:30])
    assert stopped_upstream.count() == 0


@pytest.mark.board
def test_design_1_5_nothing_written_while_idle_with_empty_queue(strace_bin, make_daemon, upstream, workdir):
    """DESIGN principles 1 and 5: once the queue has been delivered (the upstream
    connection is left to close after its idle hold), the daemon writes nothing
    at all for ~6 s: no write/pwrite/pwritev except to stderr, no sync, no
    truncate, no unlink, no file opened for writing."""
    daemon = make_daemon(upstream.port, retry__initial="1s", retry__max="2s")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=15) as s:
        for i in range(5):
            assert s.sendmail("sender@client.example", ["ops@example.com"], make_message(f"drained {i}")) == {}
    upstream.wait_for(5)
    wait_until(lambda: len(daemon.events("delivered")) >= 5, what="5 delivered events")
    # The outcome records are written and synced just after the delivered log
    # lines: wait until the daemon's write-family syscall count stops moving.
    io = Path(f"/proc/{daemon.pid}/io")
    last = {"syscw": None, "since": time.monotonic()}

    def settled():
        n = re.search(r"syscw:\s*(\d+)", io.read_text()).group(1)
        if n != last["syscw"]:
            last["syscw"], last["since"] = n, time.monotonic()
        return time.monotonic() - last["since"] >= 0.5
    wait_until(settled, timeout=10, what="postern's writes settling after the deliveries")
    calls, text = trace_idle(strace_bin, daemon, workdir)
    print(f"idle with an empty queue: {len(calls)} traced calls: {collections.Counter(n for n, _ in calls)}")
    bad = idle_violations(calls)
    assert not bad, "writes while idle with an empty queue:\n" + "\n".join(bad[:30])
    assert upstream.count() == 5


def test_issue3_4_stuck_message_does_not_keep_old_segments(make_daemon, upstream):
    """Issue 3 item 4: a message stuck for days (its recipient deferred on every
    try) must not hold the segments written after it. With 64 KiB segments and
    ~1.2 MB of mail delivered around it, the spool stays within twice the live
    text plus a few segments, and the stuck message survives a restart."""
    upstream.reply_to_rcpt("stuck@example.com", *(["451 4.2.0 mailbox busy"] * 10000))
    daemon = make_daemon(upstream.port, spool__segment_size="64K", spool__max_size="64M",
                         retry__initial="1s", retry__max="1s")
    send_one(daemon.port, "stuck", rcpt=("stuck@example.com",))
    wait_until(lambda: upstream.rcpt_attempts("stuck@example.com") >= 1, what="a first try of the stuck message")
    body = ("x" * 76 + "\r\n") * 50      # 4 KB
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        for i in range(300):
            s.sendmail("sender@client.example", ["ops@example.com"], make_message(f"flow {i}", body=body))
    upstream.wait_for(300)
    spool = daemon.workdir / "spool"

    def spool_bytes():
        return sum(p.stat().st_size for p in spool.glob("*.seg"))
    # Delivered segments go as the flow continues; the bound holds at the end.
    wait_until(lambda: spool_bytes() <= 2 * 8 * 1024 + 4 * 64 * 1024,
               what=lambda: f"a bounded spool (now {spool_bytes()} bytes in {len(list(spool.glob('*.seg')))} segments)")
    assert daemon.find("compacting the spool"), daemon.log_text()
    assert daemon.stop() == 0
    daemon.start()
    r = subprocess.run([POSTERN_BIN, "queue", "--json", "--config", str(daemon.config_path)],
                       capture_output=True, text=True, timeout=30)
    doc = json.loads(r.stdout)
    assert [m["recipients"][0]["address"] for m in doc["messages"]] == ["stuck@example.com"], r.stdout


def zero_tail(path: Path) -> tuple[int, int]:
    """(where the last byte that is not zero ends, the file's size)."""
    data = path.read_bytes()
    return len(data.rstrip(b"\0")), len(data)


@pytest.mark.board
def test_issue11_zero_filled_room_is_the_end_of_the_records_across_restarts(make_daemon, stopped_upstream):
    """Issue 11 (flash wear; "Zero-filled room" in SpoolCodec.swift): small
    messages leave at most 64 KiB of zeros after the active segment's records,
    which the next records overwrite. After a clean stop and after kill -9, the
    recovery scan reads the room as the end of the records: no warning, every
    message queued. A byte that is not zero in the room is reported where it is
    (a warning naming the segment and offset), and the messages before it are
    still delivered, each once."""
    upstream = stopped_upstream
    daemon = make_daemon(upstream.port, retry__initial="300s", retry__max="600s")
    subjects_sent = [f"room {i}" for i in range(5)]
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        for subject in subjects_sent:
            s.sendmail("sender@client.example", ["ops@example.com"], make_message(subject))
    spool = daemon.workdir / "spool"
    segment = max(spool.glob("*.seg"))
    end, size = zero_tail(segment)
    assert 0 < size - end <= 64 * 1024, f"{segment.name}: records end at {end}, file is {size} bytes"

    for how in ("stop", "kill9"):
        if how == "stop":
            assert daemon.stop() == 0
        else:
            daemon.kill9()
        daemon.start()
        recovered = daemon.wait_for_log("spool recovered")[-1]
        assert "queued=5 " in recovered + " ", recovered
        assert not daemon.find("spool scan stopped early"), daemon.log_text()

    assert daemon.stop() == 0
    with open(segment, "r+b") as f:
        f.seek(end + 1000)
        f.write(b"\x07")
    daemon.start()
    warning = daemon.wait_for_log("spool scan stopped early")[0]
    assert f"{segment.name}:{end + 1000} bytes after the zero-filled end of the records" in warning, warning
    assert "queued=5 " in daemon.wait_for_log("spool recovered")[-1] + " "
    upstream.start()
    assert daemon.stop() == 0
    daemon.start()      # delivers at start, without waiting out the retry
    upstream.wait_for(5)
    expected = {s: 1 for s in subjects_sent}
    hold_for(lambda: subjects(upstream) == expected, 1.0, what="every message upstream exactly once")
