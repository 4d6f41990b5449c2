#!/usr/bin/python3
"""Flash wear of the release binary's spool (`make bench-flash`; run as root).

Puts the spool on a fresh ext4 file system (journal on, data=ordered; mounted
noatime as Raspberry Pi OS mounts its root) on a loop device, relays mail through
build/postern to an aiosmtpd upstream on loopback, and reports what reached the
device, read from the loop device's own counters (/sys/block/loopN/stat, field 7:
sectors written, 512 bytes each; Documentation/block/stat.rst), after `sync`:

- per scenario (2 KB and 100 KB messages, 4 concurrent clients; 5 MB
  messages, 1 client, each message larger than a 4 MiB segment): device bytes
  written per relayed message and the ratio to the message's size, and the
  daemon's fdatasync/fsync calls per message (counted by strace, in the
  daemon's sync helpers: `sync = helper`, because strace cannot tell io_uring's
  fsync requests from its fdatasync ones; the syncs, and so the bytes, are
  the same whichever runs them);
- the same messages split into a receive-only phase (upstream down) and a
  delivery-only phase (upstream back), to show which side the syncs come from;
- idle windows, with the queue stuck (upstream down, 20 messages spooled, the
  daemon retrying every 1-2 s) and with an empty queue: device bytes written and
  the daemon's writing syscalls (writes to fd 2, the log, are not counted).

The figures are the result: the exit status is non-zero only when the benchmark
itself failed, not when a target is missed.

    flash_wear.py [--idle-seconds 60] [--small-count 2000] [--large-count 400]
                  [--huge-count 20] [--clients 4] [--no-split] [--image-dir /var/tmp]

POSTERN_BIN selects the binary (default <repo>/build/postern). Needs strace,
e2fsprogs and util-linux (`make bench-flash` installs them).
"""
import argparse
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

from aiosmtpd.controller import Controller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "postern"))

SECTOR = 512
# Syscalls counted in the throughput scenarios (as few as possible: with
# --seccomp-bpf only these stop the daemon).
SYNC_CALLS = ["fdatasync", "fsync"]
# Syscalls watched in the idle windows: everything that can change a file, plus
# connect to show that the daemon really retried during the window.
IDLE_CALLS = ["fdatasync", "fsync", "sync_file_range", "syncfs", "write", "writev", "pwrite64", "pwritev",
              "pwritev2", "ftruncate", "fallocate", "openat", "unlink", "unlinkat", "rename", "renameat",
              "renameat2", "mkdir", "mkdirat", "connect"]
WRITE_CALLS = {"write", "writev", "pwrite64", "pwritev", "pwritev2"}
SYNC_FAMILY = {"fdatasync", "fsync", "sync_file_range", "syncfs"}


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout}s waiting for {what}")


def run(*cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def children(pid):
    """The pids whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(entry)
    return out


def sync():
    subprocess.run(["sync"], check=True)


# --- the device ------------------------------------------------------------------


class Image:
    """A sparse ext4 image on a loop device, mounted on a temporary directory.
    `close` unmounts and detaches whatever was set up, and is safe to call twice."""

    def __init__(self, workdir, size, mount_options):
        self.path = os.path.join(workdir, "flash.img")
        self.mnt = os.path.join(workdir, "mnt")
        self.size = size
        self.mount_options = mount_options
        self.dev = None
        self.mounted = False

    def open(self):
        with open(self.path, "wb") as f:
            f.truncate(self.size)
        # Default features and mount options; only the one-off initialisation of
        # inode tables and journal is done now rather than by ext4lazyinit in the
        # background after mounting (an image that has been in use long has it
        # done), so it cannot show up in the figures.
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.path)
        self.dev = run("losetup", "--find", "--show", self.path)
        os.mkdir(self.mnt)
        cmd = ["mount", "-t", "ext4"]
        if self.mount_options:
            cmd += ["-o", self.mount_options]
        run(*cmd, self.dev, self.mnt)
        self.mounted = True
        self.name = os.path.basename(self.dev)

    def options(self):
        """The mount's flags and ext4's effective journal options."""
        opts = []
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if fields[1] == self.mnt:
                    opts = fields[3].split(",")
        try:
            with open(f"/proc/fs/ext4/{self.name}/options") as f:
                opts += [o.strip() for o in f if o.startswith(("data=", "commit=", "barrier", "nobarrier"))]
        except OSError:
            pass
        features = run("dumpe2fs", "-h", self.dev).split("Filesystem features:")[1].split("\n")[0].split()
        if "has_journal" in features:
            opts.append("has_journal")
        return ",".join(dict.fromkeys(opts))

    def stat(self):
        """(sectors written, write requests, flush requests) so far."""
        with open(f"/sys/block/{self.name}/stat") as f:
            fields = [int(x) for x in f.read().split()]
        return fields[6], fields[4], (fields[15] if len(fields) > 15 else 0)

    def close(self):
        if self.mounted:
            for attempt in range(50):
                r = subprocess.run(["umount", self.mnt], stderr=subprocess.PIPE, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.2)
            else:
                print(f"warning: umount {self.mnt} failed ({r.stderr.strip()}); lazy unmount", file=sys.stderr)
                subprocess.run(["umount", "-l", self.mnt])
            self.mounted = False
        if self.dev:
            r = subprocess.run(["losetup", "-d", self.dev], stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                print(f"warning: losetup -d {self.dev} failed: {r.stderr.strip()}", file=sys.stderr)
            self.dev = None


# --- the upstream ----------------------------------------------------------------


class Counter:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 2.0.0 Ok"


class Upstream:
    """An aiosmtpd receiver that can be stopped and started again on its port.
    While stopped, the port stays bound by a socket that does not listen:
    connections are refused, and the kernel does not hand the port out as a free
    one (bind to port 0), so another program on the machine (a test suite picking
    free ports) cannot start listening there and take the stuck mail."""

    def __init__(self):
        self.port = free_port()
        self.handler = Counter()
        self.controller = None
        self.placeholder = None

    def start(self):
        if self.controller is None:
            self.release()
            self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self.controller.start()

    def stop(self, hold_port=True):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if hold_port and self.placeholder is None:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            self.placeholder = s

    def release(self):
        if self.placeholder is not None:
            self.placeholder.close()
            self.placeholder = None

    @property
    def count(self):
        return self.handler.count


# --- the daemon under strace -----------------------------------------------------


class Daemon:
    """build/postern started under strace, whose output file is complete once the
    daemon has exited. Every syscall line carries an absolute timestamp, so the
    calls of a measured window are picked out by time."""

    def __init__(self, workdir, tag, conf, port, calls, show_paths=False):
        name = re.sub(r"[^A-Za-z0-9]+", "-", tag).strip("-")
        self.trace = os.path.join(workdir, f"{name}.strace")
        self.logpath = os.path.join(workdir, f"{name}.log")
        self.port = port
        cmd = ["strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-e", "trace=" + ",".join(calls), "-o", self.trace]
        if show_paths:
            cmd += ["-y", "-s", "64"]
        cmd += ["--", BIN, "run", "--config", conf, "--log", "stderr"]
        self.log = open(self.logpath, "w")
        # A session of their own: Ctrl-C reaches only this script, which stops them.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True)
        self.pid = None

    def wait_ready(self):
        def child():
            pids = children(self.proc.pid)
            if pids:
                self.pid = int(pids[0])
            return self.pid is not None or self.proc.poll() is not None
        wait_for(child, 20, "the daemon to start under strace")

        def listening():
            if self.proc.poll() is not None:
                raise BenchError(f"postern exited ({self.proc.returncode}); see {self.logpath}:\n"
                                 + open(self.logpath).read()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 30, "postern to listen")

    def stop(self):
        """SIGTERM to postern (strace ends with it); SIGKILL to the group if stuck."""
        if self.proc.poll() is None:
            try:
                if self.pid:
                    os.kill(self.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.log.close()

    LINE = re.compile(r"^(?:\d+\s+)?(\d+\.\d+)\s+([a-z0-9_]+)\((.*)$")

    def calls(self, t0, t1):
        """[(name, the rest of the line)] of the syscalls that started in [t0, t1]."""
        out = []
        with open(self.trace, errors="replace") as f:
            for line in f:
                m = self.LINE.match(line)
                if not m:
                    continue  # "<... resumed>", signals, exits
                ts, name, rest = float(m.group(1)), m.group(2), m.group(3)
                if t0 <= ts <= t1:
                    out.append((name, rest))
        return out


# --- clients ---------------------------------------------------------------------


def make_message(size, i):
    head = (f"From: bench@example.com\r\nTo: ops@example.com\r\nSubject: flash wear {size} #{i}\r\n"
            f"Message-ID: <flash-{size}-{i}@bench.example>\r\n\r\n").encode()
    remaining = size - len(head)
    lines = []
    while remaining > 0:
        n = min(80, remaining)
        if remaining - n == 1:  # never leave a 1-byte remainder (a line needs its CRLF)
            n -= 1
        lines.append(b"x" * (n - 2) + b"\r\n")
        remaining -= n
    msg = head + b"".join(lines)
    assert len(msg) == size, (len(msg), size)
    return msg


def send_concurrently(port, size, count, clients, first_index=0):
    """`clients` threads, each sending its share over one connection."""
    errors = []
    shares = [count // clients + (1 if k < count % clients else 0) for k in range(clients)]

    def client(k, n, start):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                for j in range(n):
                    s.sendmail("bench@example.com", ["ops@example.com"], make_message(size, start + j))
        except Exception as e:  # reported by the main thread
            errors.append(f"client {k}: {e!r}")

    threads, start = [], first_index
    for k, n in enumerate(shares):
        threads.append(threading.Thread(target=client, args=(k, n, start), daemon=True))
        start += n
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError("sending failed: " + "; ".join(errors))
    return time.monotonic() - t0


def spool_snapshot(spool):
    try:
        return sorted((e.name, e.stat().st_size) for e in os.scandir(spool))
    except FileNotFoundError:
        return []


def wait_spool_idle(spool, quiet=1.0, timeout=120):
    """Until the spool directory (names and sizes) has not changed for `quiet` s."""
    deadline = time.monotonic() + timeout
    last, since = spool_snapshot(spool), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = spool_snapshot(spool)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise BenchError("the spool did not become idle")


def spool_bytes(spool):
    return sum(size for _, size in spool_snapshot(spool))


def measure_point(image):
    """sync, then (time, device counters)."""
    sync()
    return time.time(), image.stat()


# --- the parts -------------------------------------------------------------------


def write_config(workdir, port, upstream_port, spool):
    conf = os.path.join(workdir, "postern.conf")
    with open(conf, "w") as f:
        f.write(f"[receiver]\nlisten = 127.0.0.1:{port}\nmax_message_size = 25M\nmax_connections = 16\n"
                f"[spool]\ndir = {spool}\nmax_size = 512M\nsegment_size = 4M\nsync = helper\n"
                f"[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\ntls = none\n"
                f"[retry]\ninitial = 1s\nmax = 2s\n")
    return conf


def delta(a, b):
    return tuple(y - x for x, y in zip(a[1], b[1]))


DURATION = re.compile(r"<(\d+\.\d+)>\s*$")


def sync_counts(daemon, t0, t1):
    """(fdatasync calls, fsync calls, median fdatasync duration in ms)."""
    calls = daemon.calls(t0, t1)
    times = sorted(float(m.group(1)) for name, rest in calls if name == "fdatasync"
                   for m in [DURATION.search(rest)] if m)
    median = times[len(times) // 2] * 1000 if times else 0.0
    return (sum(1 for c in calls if c[0] == "fdatasync"), sum(1 for c in calls if c[0] == "fsync"), median)


def scenario(ctx, tag, size, count, clients):
    """Concurrent relay: the clients send while the daemon delivers."""
    image, upstream, spool = ctx["image"], ctx["upstream"], ctx["spool"]
    upstream.start()
    d = ctx["new_daemon"](tag, SYNC_CALLS)
    try:
        d.wait_ready()
        wait_spool_idle(spool)
        base = upstream.count
        p0 = measure_point(image)
        seconds = send_concurrently(ctx["port"], size, count, clients)
        wait_for(lambda: upstream.count - base >= count, 600, f"{count} messages upstream")
        wait_spool_idle(spool)
        p1 = measure_point(image)
    finally:
        d.stop()
    if upstream.count - base != count:
        raise BenchError(f"{tag}: upstream got {upstream.count - base} messages, expected {count}")
    sectors, writes, flushes = delta(p0, p1)
    fdatasyncs, fsyncs, sync_ms = sync_counts(d, p0[0], p1[0])
    return dict(tag=tag, size=size, count=count, bytes=sectors * SECTOR, writes=writes, flushes=flushes,
                fdatasync=fdatasyncs, fsync=fsyncs, sync_ms=sync_ms, seconds=seconds, clients=clients)


def split_scenario(ctx, tag, size, count, clients):
    """The same load in two phases: received with the upstream down, then delivered."""
    image, upstream, spool = ctx["image"], ctx["upstream"], ctx["spool"]
    upstream.stop()
    d = ctx["new_daemon"](tag, SYNC_CALLS)
    try:
        d.wait_ready()
        wait_spool_idle(spool)
        base = upstream.count
        spooled = spool_bytes(spool)
        p0 = measure_point(image)
        send_concurrently(ctx["port"], size, count, clients)
        wait_spool_idle(spool)
        p1 = measure_point(image)
        # Nothing is finished yet, so no segment was deleted: the growth is what
        # the daemon appended (records and their framing, the Received: field).
        spooled = spool_bytes(spool) - spooled
        upstream.start()
        wait_for(lambda: upstream.count - base >= count, 600, f"{count} messages upstream")
        wait_spool_idle(spool)
        p2 = measure_point(image)
    finally:
        d.stop()
    rows = []
    for phase, a, b in (("receive", p0, p1), ("deliver", p1, p2)):
        sectors, writes, flushes = delta(a, b)
        fdatasyncs, fsyncs, sync_ms = sync_counts(d, a[0], b[0])
        rows.append(dict(tag=f"{tag} {phase}", size=size, count=count, bytes=sectors * SECTOR, writes=writes,
                         flushes=flushes, fdatasync=fdatasyncs, fsync=fsyncs, sync_ms=sync_ms, seconds=None,
                         clients=clients, appended=spooled if phase == "receive" else None))
    return rows


FD_PATH = re.compile(r"^(\d+)(?:<([^>]*)>)?")
OPEN_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")


def classify_idle(calls):
    """Counts of the daemon's calls in an idle window: writes that are not to
    fd 2, syncs, calls that change a file, and connects (retries)."""
    out = dict(writes=0, syncs=0, file_changes=0, connects=0, log_writes=0, detail={})
    for name, args in calls:
        m = FD_PATH.match(args)
        fd, path = (int(m.group(1)), m.group(2) or "") if m else (None, "")
        if name == "connect":
            out["connects"] += 1
            continue
        if name in WRITE_CALLS and fd == 2:
            out["log_writes"] += 1
            continue
        if name == "openat" and not OPEN_FLAGS.search(args):
            continue
        key = name
        if name in WRITE_CALLS:
            out["writes"] += 1
            key = f"{name} {path or fd}"
        elif name in SYNC_FAMILY:
            out["syncs"] += 1
        else:
            out["file_changes"] += 1
        out["detail"][key] = out["detail"].get(key, 0) + 1
    return out


def idle_windows(ctx, seconds, stuck_count):
    image, upstream, spool = ctx["image"], ctx["upstream"], ctx["spool"]
    d = ctx["new_daemon"]("idle", IDLE_CALLS, show_paths=True)
    rows = []
    try:
        d.wait_ready()
        # 1. Stuck queue: the upstream is down, 20 messages are spooled (accepted:
        # every sendmail got its 250), the daemon retries every 1-2 s.
        upstream.stop()
        base = upstream.count
        send_concurrently(ctx["port"], 2048, stuck_count, min(ctx["clients"], stuck_count), first_index=10**6)
        wait_spool_idle(spool)
        time.sleep(3)  # a few retries before the window opens
        p0 = measure_point(image)
        print(f"  idle window with a stuck queue: {seconds:.0f} s ...", flush=True)
        time.sleep(seconds)
        p1 = measure_point(image)
        rows.append(("stuck queue (%d msgs, upstream down)" % stuck_count, p0, p1))
        # 2. Empty queue: the upstream is back, everything delivered, segments done.
        upstream.start()
        wait_for(lambda: upstream.count - base >= stuck_count, 60, "the stuck messages to be delivered")
        wait_spool_idle(spool)
        time.sleep(3)  # the idle upstream connection is closed after 2 s
        p2 = measure_point(image)
        print(f"  idle window with an empty queue: {seconds:.0f} s ...", flush=True)
        time.sleep(seconds)
        p3 = measure_point(image)
        rows.append(("empty queue", p2, p3))
    finally:
        d.stop()
    out = []
    for label, a, b in rows:
        sectors, writes, flushes = delta(a, b)
        c = classify_idle(d.calls(a[0], b[0]))
        out.append(dict(label=label, seconds=b[0] - a[0], bytes=sectors * SECTOR, dev_writes=writes,
                        flushes=flushes, **c))
    return out


def baseline(image, seconds):
    """The file system alone, no daemon: what the device sees anyway."""
    p0 = measure_point(image)
    time.sleep(seconds)
    p1 = measure_point(image)
    return delta(p0, p1)[0] * SECTOR, p1[0] - p0[0]


# --- report ----------------------------------------------------------------------


def human(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def report(info, rows, split_rows, idle, base):
    print()
    print("Postern flash wear")
    for k, v in info:
        print(f"  {k + ':':<14}{v}")
    print()
    hdr = (f"{'scenario':<22}{'msgs':>6}{'dev bytes/msg':>15}{'x size':>8}{'target':>9}{'met':>5}"
           f"{'fdatasync':>11}{'/msg':>6}{'target':>8}{'met':>5}{'fsync':>7}{'flush/msg':>11}{'writes/msg':>12}"
           f"{'sync ms':>9}{'msgs/s':>8}{'spool B/msg':>13}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows + split_rows:
        per = r["bytes"] / r["count"]
        ratio = per / r["size"]
        big = r["size"] >= 100 * 1024
        combined = r["seconds"] is not None
        t_ratio = "<= 1.5x" if big and combined else "-"
        m_ratio = ("yes" if ratio <= 1.5 else "NO") if big and combined else ""
        spm = r["fdatasync"] / r["count"]
        # Fewer than one per message needs transactions to share a sync: not with one client.
        shared = combined and r["clients"] > 1
        t_sync = "< 1" if shared else "-"
        m_sync = ("yes" if spm < 1 else "NO") if shared else ""
        rate = f"{r['count'] / r['seconds']:.0f}" if combined else ""
        appended = f"{r['appended'] / r['count']:,.0f}" if r.get("appended") is not None else ""
        print(f"{r['tag']:<22}{r['count']:>6}{per:>15,.0f}{ratio:>7.2f}x{t_ratio:>9}{m_ratio:>5}"
              f"{r['fdatasync']:>11}{spm:>6.2f}{t_sync:>8}{m_sync:>5}{r['fsync']:>7}"
              f"{r['flushes'] / r['count']:>11.2f}{r['writes'] / r['count']:>12.2f}{r['sync_ms']:>9.2f}{rate:>8}"
              f"{appended:>13}")
    print()
    print("  dev bytes/msg: sectors written to the loop device x 512 / messages, after sync;")
    print("  x size: that over the message's own size; flush/msg and writes/msg: the device's flush and")
    print("  write requests per message; sync ms: median fdatasync duration (strace -T); spool B/msg: what")
    print("  the daemon appended to its segments per message (receive rows: growth of the spool files).")
    print("  Targets (DESIGN.md principle 5): <= 1.5x for messages of 100 KB and more;")
    print("  one fdatasync per loop iteration shared by concurrent transactions, so < 1 per message")
    print("  (no target with one client: 5 MB messages also start new 4 MiB segments, each synced")
    print("  with its directory before anything in it is acknowledged).")
    if split_rows:
        print("  'receive' rows: the same load again with the upstream down (spooling only); 'deliver' rows:")
        print("  then the upstream back, the queue drained. No targets; they show where syncs and bytes come from.")
    print()
    hdr = (f"{'idle window':<38}{'seconds':>8}{'dev bytes':>11}{'target':>8}{'met':>5}{'write calls':>13}"
           f"{'syncs':>7}{'file ops':>10}{'retries':>9}{'log lines':>11}")
    print(hdr)
    print("-" * len(hdr))
    for r in idle:
        met = "yes" if r["bytes"] == 0 else "NO"
        print(f"{r['label']:<38}{r['seconds']:>8.0f}{r['bytes']:>11}{'0':>8}{met:>5}{r['writes']:>13}"
              f"{r['syncs']:>7}{r['file_changes']:>10}{r['connects']:>9}{r['log_writes']:>11}")
    print()
    print("  dev bytes: written to the loop device in the window (sync at both ends); write calls: the")
    print("  daemon's write/writev/pwrite64/pwritev(2) except to fd 2 (log lines, counted apart);")
    print("  syncs: fdatasync/fsync/syncfs/sync_file_range; file ops: openat for writing, ftruncate,")
    print("  fallocate, unlink, rename, mkdir; retries: connect(2) calls to the upstream.")
    print(f"  control, no daemon running: {base[0]} bytes written to the device in {base[1]:.0f} s.")
    for r in idle:
        if r["detail"]:
            print(f"  {r['label']}: " + ", ".join(f"{k} x{v}" for k, v in sorted(r["detail"].items())))


# --- main ------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle-seconds", type=float, default=60,
                    help="length of each idle window (the full claim is 600)")
    ap.add_argument("--small-count", type=int, default=2000, help="2 KB messages per scenario")
    ap.add_argument("--large-count", type=int, default=400, help="100 KB messages per scenario")
    ap.add_argument("--huge-count", type=int, default=20, help="5 MB messages per scenario (one client; 0: none)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent SMTP clients")
    ap.add_argument("--stuck-count", type=int, default=20, help="messages left in the stuck queue")
    ap.add_argument("--no-split", action="store_true", help="skip the receive-only/deliver-only runs")
    ap.add_argument("--image-size", type=int, default=1 << 30, help="bytes (sparse)")
    ap.add_argument("--image-dir", default="/var/tmp", help="where the image file lives (not tmpfs)")
    ap.add_argument("--mount-options", default="noatime",
                    help="ext4 mount options (Raspberry Pi OS mounts / with defaults,noatime)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        raise BenchError("needs root (losetup, mount)")
    for tool in ("strace", "mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (make bench-flash installs it)")
    if not os.access(BIN, os.X_OK):
        raise BenchError(f"no binary at {BIN} (make build, or set POSTERN_BIN)")

    # SIGTERM unwinds like Ctrl-C, through every finally below.
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    workdir = tempfile.mkdtemp(prefix="postern-flash-", dir=args.image_dir)
    image = Image(workdir, args.image_size, args.mount_options)
    upstream = Upstream()
    daemons = []
    ok = False
    try:
        image.open()
        spool = os.path.join(image.mnt, "spool")
        port = free_port()
        conf = write_config(workdir, port, upstream.port, spool)

        def new_daemon(tag, calls, show_paths=False):
            d = Daemon(workdir, tag, conf, port, calls, show_paths)
            daemons.append(d)
            return d

        ctx = dict(image=image, upstream=upstream, spool=spool, port=port, clients=args.clients,
                   new_daemon=new_daemon)
        sync()
        time.sleep(1)
        print(f"image {image.path} on {image.dev}, mounted on {image.mnt} ({image.options()})", flush=True)
        print("control: the file system alone for 5 s ...", flush=True)
        base = baseline(image, 5)
        loads = [("2 KB x %d" % args.small_count, 2 * 1024, args.small_count, args.clients),
                 ("100 KB x %d" % args.large_count, 100 * 1024, args.large_count, args.clients)]
        if args.huge_count > 0:
            loads.append(("5 MB x %d" % args.huge_count, 5 * 1024 * 1024, args.huge_count, 1))
        rows, split_rows = [], []
        for tag, size, count, clients in loads:
            print(f"scenario {tag}, {clients} client(s) ...", flush=True)
            rows.append(scenario(ctx, f"{tag}", size, count, clients))
        if not args.no_split:
            for tag, size, count, clients in loads:
                print(f"split run {tag}: receive with the upstream down, then deliver ...", flush=True)
                split_rows += split_scenario(ctx, tag, size, count, clients)
        print(f"idle windows of {args.idle_seconds:.0f} s ...", flush=True)
        idle = idle_windows(ctx, args.idle_seconds, args.stuck_count)
        info = [("binary", f"{BIN} ({os.path.getsize(BIN)} bytes)"),
                ("device", f"{image.dev}: ext4 on a {human(args.image_size)} sparse file in {args.image_dir}, "
                           f"mounted {image.options()}"),
                ("spool", "segment_size 4M, max_size 512M; retry initial 1s, max 2s"),
                ("clients", f"{args.clients} concurrent smtplib connections, each sending its share "
                            "(5 MB: one connection)"),
                ("strace", "-f --seccomp-bpf -e trace=" + ",".join(SYNC_CALLS)
                           + " (scenarios); the idle windows also trace writes, file changes and connect")]
        report(info, rows, split_rows, idle, base)
        ok = True
    except KeyboardInterrupt:
        ok = True  # nothing to diagnose: remove everything
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for d in daemons:
            try:
                d.stop()
            except Exception as e:
                print(f"warning: stopping a daemon: {e!r}", file=sys.stderr)
        try:
            upstream.stop(hold_port=False)
            upstream.release()
        except Exception as e:
            print(f"warning: stopping the upstream: {e!r}", file=sys.stderr)
        image.close()
        if image.dev is None and not image.mounted:
            if ok:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                try:
                    os.unlink(image.path)
                except OSError:
                    pass
                print(f"flash_wear: daemon logs and strace output kept in {workdir}", file=sys.stderr)
        else:
            print(f"warning: left {workdir} in place (still mounted or attached)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"flash_wear: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("flash_wear: interrupted", file=sys.stderr)
        sys.exit(130)
