#!/usr/bin/python3
"""Throughput against Postfix (`make bench`; run as root).

Postfix's own load generator, smtp-source, sends into Postfix's smtp-sink, on
127.0.0.1 only, one message per connection (smtp-source's default), three ways:

- baseline: smtp-source -> smtp-sink, no relay;
- postern:  smtp-source -> build/postern -> smtp-sink;
- postfix:  smtp-source -> a private Postfix null client -> smtp-sink.

Workloads: 2000 x 2 KB over 4 sessions, 500 x 100 KB over 2, 20 x 5 MB over 1.
Per relay and workload, the median of --runs runs (default 3) of:

- accepted msg/s: messages / (source start -> smtp-source done: every message
  got its 250 to DATA);
- end-to-end msg/s: messages / (source start -> smtp-sink has received them
  all: its own counter, `smtp-sink -c`, read from its output as it is written);
- CPU ms per message: the relay's CPU time from the source's start until the
  relay is idle again (its CPU time stops growing), over the messages. Read
  from a private cgroup v2 directory per relay (cpu.stat usage_usec), which
  holds every process of the relay, Postfix's master and all its children;
  without cgroup v2 from /proc: the process's utime+stime plus cutime+cstime
  (children that ended) plus its live descendants';
- fsync per message: fsync + fdatasync + sync_file_range + syncfs calls, plus
  the fsync requests submitted through io_uring (Postern's default; the
  io_uring_enter calls are given beside them), counted by `strace -f` in a SEPARATE
  counting run of the same workload (strace slows the relay, so it never touches
  the timed figures), over the same window; the relay is started under strace,
  so every child process is counted too;
- peak RSS: the largest sum, over the sampled moments (every 0.1 s), of VmHWM of
  every live process of the relay (for Postern one process, so its VmHWM; for
  Postfix every daemon process, which counts each process's shared pages of libc
  and Postfix's libraries again); and, from the counting run, the peak sum of
  Pss (/proc/PID/smaps_rollup), which shares those pages out fairly.

Each figure also as a ratio to Postfix's and to the baseline's of the same run
(the baseline's CPU figure is smtp-source's and smtp-sink's own; syncs and RSS
have no baseline).

Beside it, smtp-sink over each end-to-end run, from its /proc/PID/schedstat:
its time on a CPU per message, the share of the run it was on one (busy), and
its time ready to run but waiting for a CPU (the relay and smtp-source held
both). With the sink as busy as in the baseline, a relay already passes the
messages on as fast as the sink takes them.

Then Postern's delivery alone (--no-drain skips it): each workload's messages
spooled while nothing listens on the upstream port, then smtp-sink started there
and `postern flush`: delivered msg/s (and ×B), Postern's and smtp-sink's CPU per
message over that window, and the share of it smtp-sink spent on a CPU. When
that share is near 100%, the sink is what bounds delivery, and with it the
end-to-end rate of any relay (issue 11: the 5 MB row).

Then the slowed-sync rows: build/tools/slow_sync.so (Tests/tools/slow_sync.c)
preloaded into the relay makes every fsync/fdatasync/syncfs (and waiting
sync_file_range) sleep SLOW_SYNC_MS (10) ms after the real call, as on an SD
card: 1000 x 2 KB x 4 sessions, 2000 x 2 KB x 16 sessions, 200 x 100 KB x 4
sessions, Postern (with `sync = helper`: io_uring's fsyncs run in the kernel,
out of the shim's reach) and Postfix side by side, msg/s and syncs per message (from
the shim's own count of the timed runs, and from strace in a counting run under
the shim). The shim is checked to be loaded in every relay process (its
mapping in /proc/PID/maps) and to have seen the syncs.

Last, issue 11's targets, each with this run's figure and whether it held in
it: a summary for the reader (the exit status never depends on a figure).

Output: build/bench/relay.jsonl (a JSON line per run and per median), the same
median lines on stdout prefixed "relay-bench-json: ", and a Markdown table,
printed and written to build/bench/relay.md. The exit status is non-zero only
when the benchmark itself failed (a process did not start, a count was wrong),
never for a figure.

    relay_bench.py [--runs 3] [--quick] [--slow-ms 10] [--no-slow] [--no-count]
                   [--scratch-dir /var/tmp] [--out-dir build/bench]

The private Postfix: its own config_directory, queue_directory and
data_directory under the scratch directory (on the same file system as
Postern's spool), its own master.cf (smtpd on a free loopback port, no chroot,
no local delivery), started with `postfix -c DIR start-fg` as root (a
non-default configuration directory needs alternate_config_directories in the
default main.cf only for unprivileged set-gid commands, postdrop and postqueue,
which this never runs); the system's /etc/postfix is only read (dynamicmaps.cf,
postfix-files) and never started. Needs smtp-source, smtp-sink and postfix
(package postfix) and strace: `make bench` installs them
(Tests/tools/ensure-postfix) without starting the system's Postfix.
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "build", "postern"))
SHIM = os.path.join(ROOT, "build", "tools", "slow_sync.so")

SYNC_CALLS = ["fsync", "fdatasync", "sync_file_range", "syncfs"]
COUNTED_CALLS = SYNC_CALLS + ["io_uring_enter", "io_uring_setup"]
SENDER, RECIPIENT, HELO = "bench@example.com", "ops@example.com", "bench.example"

KB, MB = 1024, 1024 * 1024
WORKLOADS = [("2 KB", 2 * KB, 2000, 4), ("100 KB", 100 * KB, 500, 2), ("5 MB", 5 * MB, 20, 1)]
QUICK_WORKLOADS = [("2 KB", 2 * KB, 300, 4), ("100 KB", 100 * KB, 60, 2), ("5 MB", 5 * MB, 4, 1)]
SLOW_WORKLOADS = [("2 KB", 2 * KB, 1000, 4), ("2 KB", 2 * KB, 2000, 16), ("100 KB", 100 * KB, 200, 4)]
QUICK_SLOW_WORKLOADS = [("2 KB", 2 * KB, 200, 4), ("2 KB", 2 * KB, 300, 16), ("100 KB", 100 * KB, 40, 4)]

SAMPLE_SECONDS = 0.1


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.05):
    """A bounded poll: `predicate` until true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def proc_status(pid):
    """{key: value} of /proc/PID/status, or None once the process is gone."""
    text = read(f"/proc/{pid}/status")
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def kb(value):
    return int(value.split()[0]) if value else 0


TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None; a zombie counts as gone."""
    text = read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def all_pids():
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def descendants(root):
    """`root` and every live process below it."""
    parent = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            parent[pid] = st[0]
    out, frontier = [], [root] if root in parent else []
    while frontier:
        p = frontier.pop()
        out.append(p)
        frontier.extend(c for c, pp in parent.items() if pp == p)
    return out


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def comm(pid):
    return (read(f"/proc/{pid}/comm", "?") or "?").strip()


# --- process groups: a cgroup v2 directory each, or the process tree -------------


def cgroup2_root():
    """Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    hybrid system), or None."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    return None


class Group:
    """The processes of one relay (or of the load generator). With cgroup v2, a
    directory of its own that each started command joins before it runs (every
    child inherits it): its members and its CPU time (cpu.stat usage_usec, kept by the
    kernel for every cgroup, with or without the cpu controller). Without, the
    tree below the first process, and /proc's times."""

    def __init__(self, parent, name):
        self.path = None
        self.root_pid = None
        self.reaped = 0.0  # without a cgroup: CPU of members that ended outside the tree (smtp-source)
        if parent is not None:
            path = os.path.join(parent, name)
            try:
                os.mkdir(path)
                self.path = path
            except OSError as e:
                print(f"warning: cannot create the cgroup {path} ({e}); using /proc", file=sys.stderr)

    def wrap(self, cmd):
        """`cmd` made to join the cgroup before it runs: a shell writes its own
        pid to cgroup.procs and execs it (the same process, so Popen's pid is
        the command's). Not preexec_fn: this script has threads running."""
        if self.path is None:
            return cmd
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', os.path.join(self.path, "cgroup.procs")] + cmd

    def pids(self):
        if self.path is not None:
            text = read(os.path.join(self.path, "cgroup.procs"), "")
            return [int(x) for x in text.split()]
        return descendants(self.root_pid) if self.root_pid else []

    def cpu_seconds(self):
        if self.path is not None:
            for line in read(os.path.join(self.path, "cpu.stat"), "").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            raise BenchError(f"no usage_usec in {self.path}/cpu.stat")
        # The root's own time and its reaped children's, plus every live
        # descendant's own time and its reaped children's.
        total = self.reaped
        for pid in descendants(self.root_pid) if self.root_pid else []:
            st = proc_stat(pid)
            if st:
                total += st[1] + st[2]
        return total

    def method(self):
        return "cgroup v2 cpu.stat usage_usec" if self.path else "/proc utime+stime+cutime+cstime of the tree"

    def kill_all(self):
        """SIGKILL to every process still in the group (all started here)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self):
        if self.path is None:
            return
        try:
            wait_for(lambda: not self.pids(), 10, f"{self.path} to empty")
            os.rmdir(self.path)
        except (OSError, BenchError) as e:
            print(f"warning: cannot remove {self.path}: {e}", file=sys.stderr)


class Sampler(threading.Thread):
    """Every SAMPLE_SECONDS: the sum of VmHWM (and, when asked, of Pss) over the
    group's live processes that `include` accepts; keeps the largest. Notes each
    process's name and, with check_shim, whether the slow-sync shim is mapped in
    it: decided once the dynamic loader is done with it (libc is mapped; the
    preloaded library comes before it), so a process caught between exec and
    the loader's work is looked at again at the next sample."""

    def __init__(self, group, include, pss=False, check_shim=False):
        super().__init__(daemon=True)
        self.group, self.include, self.pss, self.check_shim = group, include, pss, check_shim
        self.stop_event = threading.Event()
        self.peak_hwm_kb = 0
        self.peak_pss_kb = 0
        self.seen = {}  # pid -> [name, shim mapped: True, False or None (not decided yet)], or None if excluded
        self.samples = 0

    def shim_state(self, pid):
        maps = read(f"/proc/{pid}/maps", "") or ""
        if "slow_sync.so" in maps:
            return True
        return False if "/libc.so" in maps else None

    def sample(self):
        hwm = pss = 0
        for pid in self.group.pids():
            if pid not in self.seen:
                if not self.include(pid):
                    self.seen[pid] = None
                    continue
                self.seen[pid] = [comm(pid), None]
            entry = self.seen[pid]
            if entry is None:
                continue
            if self.check_shim and entry[1] is None:
                entry[1] = self.shim_state(pid)
                entry[0] = comm(pid)
            st = proc_status(pid)
            if st is None:
                continue
            hwm += kb(st.get("VmHWM"))
            if self.pss:
                for line in (read(f"/proc/{pid}/smaps_rollup", "") or "").splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        self.peak_hwm_kb = max(self.peak_hwm_kb, hwm)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.samples += 1

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_SECONDS)

    def finish(self):
        self.stop_event.set()
        self.join(10)
        self.sample()
        return self

    def processes(self):
        """{pid: (name, shim mapped)} of the included processes."""
        return {pid: tuple(v) for pid, v in self.seen.items() if v is not None}


def settle(group, what, quiet=0.002, window=0.5, timeout=20):
    """Until the group's CPU time grew less than `quiet` s over `window` s (a
    bounded poll); returns the time then. Not settling is not a failure."""
    deadline = time.monotonic() + timeout
    last = group.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = group.cpu_seconds()
        if now - last < quiet:
            return True
        last = now
    print(f"  note: {what} still used CPU after {timeout} s", file=sys.stderr)
    return False


# --- strace output ------------------------------------------------------------------

STRACE_LINE = re.compile(r"^(?:\d+\s+)?(\d+\.\d+)\s+([a-z0-9_]+)\(")


STRACE_RESUMED = re.compile(r"^(?:\d+\s+)?(\d+\.\d+)\s+<\.\.\. ([a-z0-9_]+) resumed>")
STRACE_DURATION = re.compile(r"<(\d+\.\d+)>\s*$")
# io_uring_enter(fd, to_submit, ...): Postern's first ring (its io_uring_setup
# comes first) runs only IORING_OP_FSYNC requests, so there to_submit is a count
# of syncs; its second ring runs only the segments' IORING_OP_UNLINKAT.
STRACE_URING_SUBMIT = re.compile(r"io_uring_enter\((\d+), (\d+),")
STRACE_URING_SETUP = re.compile(r"io_uring_setup\(.*\) = (\d+)")


def strace_counts(path, t0, t1):
    """({call: count} of the calls that started in [t0, t1], [durations in
    seconds of the sync calls among them]). A call interrupted by another
    process's line is counted at its start ("<unfinished ...>") and timed at
    its end ("<... fdatasync resumed>", which carries the -T duration).
    "io_uring_sqes" counts the requests the io_uring_enter calls submitted to
    the first ring the relay set up (Postern's syncs' ring, opened at start,
    before anything else), "io_uring_unlinks" those to any other (Postern's
    second ring unlinks finished segments)."""
    out = {c: 0 for c in COUNTED_CALLS}
    out["io_uring_sqes"] = 0
    out["io_uring_unlinks"] = 0
    durations = []
    sync_ring = None
    with open(path, errors="replace") as f:
        for line in f:
            setup = STRACE_URING_SETUP.search(line)
            if setup and sync_ring is None:
                sync_ring = setup.group(1)
            m = STRACE_LINE.match(line) or STRACE_RESUMED.match(line)
            if not m or not t0 <= float(m.group(1)) <= t1 or m.group(2) not in out:
                continue
            if STRACE_LINE.match(line):
                out[m.group(2)] += 1
                u = STRACE_URING_SUBMIT.search(line)
                if u:
                    which = "io_uring_sqes" if sync_ring in (None, u.group(1)) else "io_uring_unlinks"
                    out[which] += int(u.group(2))
            d = STRACE_DURATION.search(line)
            if d and m.group(2) in SYNC_CALLS and "<unfinished" not in line:
                durations.append(float(d.group(1)))
    return out, durations


def strace_cmd(path):
    # --seccomp-bpf: only the counted calls stop the tracee; -f follows every
    # fork (Postfix's master spawns its daemons, a helper process of Postern).
    # -T: each call's duration, for the median sync time.
    return ["strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-e", "trace=" + ",".join(COUNTED_CALLS), "-o", path, "--"]


# --- smtp-sink and smtp-source --------------------------------------------------------


class Sink:
    """smtp-sink on a free loopback port with its running counters (-c) on a
    pipe: a reader thread keeps the last `mesg=` count and when it was read."""

    COUNTER = re.compile(rb"mesg=(\d+)\r")

    def __init__(self, group, workdir, port=None):
        self.port = port or free_port()
        self.count = 0
        self.reached = {}  # count -> time.time() it was first read
        self.cond = threading.Condition()
        self.errlog = open(os.path.join(workdir, f"sink-{self.port}.err"), "w")
        self.proc = subprocess.Popen(
            group.wrap(["smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{self.port}", "1024"]),
            stdout=subprocess.PIPE, stderr=self.errlog, stdin=subprocess.DEVNULL, start_new_session=True)
        if group.root_pid is None:
            group.root_pid = self.proc.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(lambda: self._alive() and accepts(self.port), 10, "smtp-sink to listen")

    def schedstat(self):
        """smtp-sink's time on a CPU and its time runnable but waiting for one,
        in seconds (/proc/PID/schedstat: the scheduler's own nanosecond sums;
        Popen's pid is smtp-sink's, which serves every session in one process)."""
        text = read(f"/proc/{self.proc.pid}/schedstat")
        if not text:
            return None
        oncpu, waiting = text.split()[:2]
        return int(oncpu) / 1e9, int(waiting) / 1e9

    def _alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"smtp-sink exited ({self.proc.returncode})")
        return True

    def _read(self):
        fd = self.proc.stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.time()
            tail = (tail + chunk)[-64:]
            counts = self.COUNTER.findall(tail)
            if counts:
                n = int(counts[-1])
                with self.cond:
                    if n != self.count:
                        self.count = n
                        self.reached.setdefault(n, now)
                        self.cond.notify_all()

    def wait_count(self, n, timeout):
        """The time the sink's count first reached n (a bounded wait)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"smtp-sink got {self.count} of {n} messages in {timeout:.0f} s")
                self.cond.wait(min(left, 1.0))
            return min(t for c, t in self.reached.items() if c >= n)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(5)
        self.errlog.close()


def run_source(group, port, size, count, sessions, workdir, timeout):
    """smtp-source: `count` messages of `size` bytes of payload over `sessions`
    parallel sessions, one message per connection. (start, end) wall times."""
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, "-M", HELO, f"127.0.0.1:{port}"]
    errpath = os.path.join(workdir, f"source-{port}.err")
    with open(errpath, "w") as err:
        # Only smtp-source is reaped between these two (the other children are
        # waited for when they are stopped): its CPU time, for a group without cgroup.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        proc = subprocess.Popen(group.wrap(cmd), stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise BenchError(f"smtp-source did not finish in {timeout:.0f} s")
        t1 = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if group.path is None:
        group.reaped += (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if rc != 0:
        raise BenchError(f"smtp-source failed ({rc}): {read(errpath, '').strip()[-1000:]}")
    return t0, t1


# --- the relays -------------------------------------------------------------------------


class Postern:
    name = "postern"

    def __init__(self, workdir, tag, upstream_port, env, strace_path=None, sync=None):
        self.dir = os.path.join(workdir, f"postern-{tag}")
        os.mkdir(self.dir)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "postern.conf")
        # The shim slows the sync calls it sees; io_uring's fsyncs run in the
        # kernel's own workers, where no LD_PRELOAD reaches, so the slowed runs
        # use the helper processes (sync = helper), the path the shim can slow.
        if "LD_PRELOAD" in env:
            sync = "helper"
        sync = f"sync = {sync}\n" if sync else ""
        with open(self.conf, "w") as f:
            # max_connections: twice the most sessions of any workload (16),
            # so a closing connection never makes a new one wait for a slot.
            f.write(f"[receiver]\nlisten = 127.0.0.1:{self.port}\nhostname = postern-bench.localdomain\n"
                    f"allow_clients = 127.0.0.0/8\nallow_recipients = *\nmax_message_size = 64M\n"
                    f"max_connections = 32\n"
                    f"[spool]\ndir = {self.dir}/spool\nmax_size = 1G\n{sync}"
                    f"[upstream]\nhost = 127.0.0.1\nport = {upstream_port}\ntls = none\n"
                    f"[retry]\ninitial = 1s\nmax = 2s\n"
                    f"[control]\nsocket = {self.dir}/control.sock\n[local]\nsocket = {self.dir}/submit.sock\n")
        self.group = Group(workdir_cgroup(), f"postern-{tag}")
        self.logpath = os.path.join(self.dir, "postern.log")
        self.log = open(self.logpath, "w")
        self.real_bin = os.path.realpath(BIN)
        cmd = (strace_cmd(strace_path) if strace_path else []) + [BIN, "run", "--config", self.conf, "--log", "stderr"]
        self.proc = subprocess.Popen(self.group.wrap(cmd), stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                     start_new_session=True, cwd=self.dir)
        self.group.root_pid = self.proc.pid

        def ready():
            if self.proc.poll() is not None:
                raise BenchError(f"postern exited ({self.proc.returncode}); see {self.logpath}:\n"
                                 + (read(self.logpath, "") or "")[-2000:])
            return accepts(self.port)
        wait_for(ready, 30, "postern to listen")

    def include(self, pid):
        return exe(pid) == self.real_bin

    def main_pid(self):
        for pid in self.group.pids():
            if self.include(pid):
                return pid
        return None

    def proc_cpu(self, pid):
        st = proc_stat(pid) if pid else None
        return st[1] if st else None

    def stop(self):
        if self.proc.poll() is None:
            pid = self.main_pid() or self.proc.pid
            try:
                os.kill(pid, signal.SIGTERM)
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.proc.poll() is None:
            self.group.kill_all()
            self.proc.wait(10)
        self.log.close()
        self.group.remove()


POSTFIX_SERVICES = """\
# Only what a null client that relays needs; no chroot (the default in Postfix
# 3.x), no local delivery, no TLS.
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postconf_default(name):
    return subprocess.run(["postconf", "-dh", name], check=True, capture_output=True, text=True).stdout.strip()


class Postfix:
    """A private Postfix null client: its own configuration, queue and data
    directories under the scratch directory, its smtpd on a free loopback port,
    relaying everything to [127.0.0.1]:<sink>. Started with `postfix -c DIR
    start-fg`, which keeps master in the foreground below this process (it does
    not detach), so the whole instance stays in its cgroup and is ours to stop."""

    name = "postfix"
    DAEMON_DIR = None

    def __init__(self, workdir, tag, upstream_port, env, strace_path=None):
        if Postfix.DAEMON_DIR is None:
            Postfix.DAEMON_DIR = postconf_default("daemon_directory")
        self.dir = os.path.join(workdir, f"postfix-{tag}")
        self.conf_dir = os.path.join(self.dir, "conf")
        for d in (self.dir, self.conf_dir, os.path.join(self.dir, "queue")):
            os.mkdir(d, 0o755)  # root-owned, as `postfix check` wants them
        self.port = free_port()
        imported = postconf_default("import_environment") + " LD_PRELOAD SLOW_SYNC_MS SLOW_SYNC_COUNT_FILE"
        main_cf = f"""\
# The private Postfix of relay_bench.py: a null client (STANDARD_CONFIGURATION_README,
# "Postfix on a null client") that relays everything to the benchmark's smtp-sink.
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
myhostname = postfix-bench.localdomain
myorigin = $myhostname
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{upstream_port}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
message_size_limit = {64 * MB}
mailbox_size_limit = 0
maillog_file = {self.dir}/maillog
# Postfix's master passes its children only these variables: the slowed-sync
# rows need LD_PRELOAD and the shim's settings to reach smtpd, cleanup, qmgr, ...
import_environment = {imported}
"""
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + POSTFIX_SERVICES)
        self.group = Group(workdir_cgroup(), f"postfix-{tag}")
        self.logpath = os.path.join(self.dir, "start.log")
        self.log = open(self.logpath, "w")
        cmd = (strace_cmd(strace_path) if strace_path else []) + ["postfix", "-c", self.conf_dir, "start-fg"]
        self.proc = subprocess.Popen(self.group.wrap(cmd), stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                     start_new_session=True)
        self.group.root_pid = self.proc.pid

        def ready():
            if self.proc.poll() is not None:
                raise BenchError(f"postfix start-fg exited ({self.proc.returncode}); see {self.logpath} and "
                                 f"{self.dir}/maillog:\n" + (read(self.logpath, "") or "")[-1000:]
                                 + (read(f"{self.dir}/maillog", "") or "")[-2000:])
            return accepts(self.port)
        wait_for(ready, 60, "the private Postfix to listen")

    def include(self, pid):
        return exe(pid).startswith(Postfix.DAEMON_DIR + "/")

    def queue_empty(self):
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(os.path.join(self.dir, "queue", sub)):
                if files:
                    return False
        return True

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(["postfix", "-c", self.conf_dir, "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.group.kill_all()
            self.proc.wait(10)
        # Daemons that were still finishing when master left.
        try:
            wait_for(lambda: not [p for p in self.group.pids() if self.include(p)], 15, "Postfix's daemons to exit")
        except BenchError:
            self.group.kill_all()
        self.log.close()
        self.group.remove()


# --- one run ------------------------------------------------------------------------------

_CGROUP_BASE = None


def workdir_cgroup():
    return _CGROUP_BASE


def one_run(ctx, relay_name, size, count, sessions, mode, slow_ms=None):
    """One measurement. mode "timed": rates, CPU and RSS; mode "count": the same
    load with the relay under strace, for its syscall counts and Pss. With
    slow_ms the relay runs with the slow-sync shim preloaded."""
    workdir = ctx["workdir"]
    ctx["serial"] += 1
    tag = f"{ctx['serial']:03d}-{relay_name}-{mode}"
    load = Group(workdir_cgroup(), f"load-{tag}")
    sink = relay = sampler = None
    env = {}
    countfile = None
    if slow_ms is not None:
        countfile = os.path.join(workdir, f"slow-{tag}.count")
        # Created here, writable by all: Postfix's daemons run as user postfix.
        fd = os.open(countfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.fchmod(fd, 0o666)
        os.close(fd)
        env = {"LD_PRELOAD": SHIM, "SLOW_SYNC_MS": str(slow_ms), "SLOW_SYNC_COUNT_FILE": countfile}
    trace = os.path.join(workdir, f"{tag}.strace") if mode == "count" else None
    timeout = 120 + count * size / (1 * MB)  # generous: 1 MB/s
    try:
        sink = Sink(load, workdir)
        target = sink.port
        if relay_name == "postern":
            relay = Postern(workdir, tag, sink.port, env, trace, sync=ctx.get("postern_sync"))
        elif relay_name == "postfix":
            relay = Postfix(workdir, tag, sink.port, env, trace)
        if relay is not None:
            target = relay.port
            settle(relay.group, f"{relay_name} before the load")
            sampler = Sampler(relay.group, relay.include, pss=(mode == "count"), check_shim=slow_ms is not None)
            sampler.start()
            cpu0 = relay.group.cpu_seconds()
            if relay_name == "postern":
                pid0 = relay.main_pid()
                own0 = relay.proc_cpu(pid0)
        base_sessions = sink.count
        shim0 = count_lines(countfile)
        load0 = load.cpu_seconds()
        sched0 = sink.schedstat()
        t0, t1 = run_source(load, target, size, count, sessions, workdir, timeout)
        t2 = sink.wait_count(base_sessions + count, timeout)
        sched1 = sink.schedstat()
        result = dict(relay=relay_name, size=size, count=count, sessions=sessions, mode=mode,
                      slow_ms=slow_ms, accepted_s=t1 - t0, e2e_s=t2 - t0,
                      accepted_rate=count / (t1 - t0), e2e_rate=count / (t2 - t0))
        if sched0 and sched1:
            # What bounds the end-to-end rate: smtp-sink on a CPU (busy), or
            # ready to run while the relay and the source held both CPUs (wait).
            result.update(e2e_sink_cpu_ms_per_msg=(sched1[0] - sched0[0]) * 1000 / count,
                          e2e_sink_wait_ms_per_msg=(sched1[1] - sched0[1]) * 1000 / count,
                          e2e_sink_busy=(sched1[0] - sched0[0]) / (t2 - t0))
        if relay is not None:
            settle(relay.group, f"{relay_name} after the load")
            if relay_name == "postfix":
                try:
                    wait_for(relay.queue_empty, 30, "Postfix's queue to empty")
                except BenchError as e:
                    print(f"  note: {e}", file=sys.stderr)
            t3 = time.time()
            shim1 = count_lines(countfile)
            cpu1 = relay.group.cpu_seconds()
            sampler.finish()
            result.update(cpu_ms_per_msg=(cpu1 - cpu0) * 1000 / count, cpu_method=relay.group.method(),
                          peak_rss_kb=sampler.peak_hwm_kb, processes=len(sampler.processes()))
            if relay_name == "postern":
                own1 = relay.proc_cpu(pid0)
                if own0 is not None and own1 is not None:
                    result["postern_proc_cpu_ms_per_msg"] = (own1 - own0) * 1000 / count
            if mode == "count":
                result["peak_pss_kb"] = sampler.peak_pss_kb
                result["peak_rss_kb_counting_run"] = result.pop("peak_rss_kb")
            if slow_ms is not None:
                procs = sampler.processes()
                # Processes that ended before the loader was done with them
                # (state None) are left out of both counts.
                result["shim_loaded"] = sum(1 for _, loaded in procs.values() if loaded is True)
                result["shim_processes"] = sum(1 for _, loaded in procs.values() if loaded is not None)
                missing = sorted({n for n, loaded in procs.values() if loaded is False})
                if missing:
                    raise BenchError(f"{relay_name}: the slow-sync shim is not loaded in {missing}")
        # The count must be exact: nothing lost, nothing twice (the source has
        # exited and the relay is idle: nothing more is on its way).
        if sink.count != base_sessions + count:
            raise BenchError(f"{relay_name}: smtp-sink counted {sink.count - base_sessions}, expected {count}")
        result["load_cpu_ms_per_msg"] = (load.cpu_seconds() - load0) * 1000 / count
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.finish()
        stop_run(relay, sink, load)
    if trace is not None:
        # Complete now that the relay (and so strace) has exited.
        calls, durations = strace_counts(trace, t0, t3)
        result["calls"] = calls
        result["sync_ms_median"] = statistics.median(durations) * 1000 if durations else None
        # The fsync requests submitted through io_uring count as syncs (they
        # are nothing else), beside the sync system calls.
        result["syncs"] = sum(calls[c] for c in SYNC_CALLS) + calls["io_uring_sqes"]
        result["fsync_per_msg"] = result["syncs"] / count
        result["io_uring_enter_per_msg"] = calls["io_uring_enter"] / count
    if countfile is not None:
        # The syncs of the measured window only (not those of the relay's start).
        lines = (read(countfile, "") or "").splitlines()[shim0:shim1]
        names = {}
        for line in lines:
            pid, _, call = line.partition(" ")
            who = procs.get(int(pid), ("?",))[0] if pid.isdigit() else "?"
            names[who] = names.get(who, 0) + 1
        result["shim_syncs"] = len(lines)
        result["shim_syncs_per_msg"] = len(lines) / count
        result["shim_syncs_by_process"] = names
        if trace is None and len(lines) == 0:
            raise BenchError(f"{relay_name}: the slow-sync shim saw no sync at all")
        if trace is not None and result["syncs"] > 0 and len(lines) == 0:
            raise BenchError(f"{relay_name}: strace saw {result['syncs']} syncs, the shim none")
    return result


def count_lines(path):
    """Lines in the shim's count file so far (0 without one)."""
    return len((read(path, "") or "").splitlines()) if path else 0


def drain_run(ctx, size, count, sessions):
    """Postern's delivery alone: the messages are spooled while nothing listens
    on its upstream port, then smtp-sink starts there and `postern flush` sends
    them. The rate runs from the sink listening until it has counted them all;
    the CPU per message is Postern's and smtp-sink's over the same window. It
    says how close the sender comes to what smtp-sink can take: the ceiling of
    the end-to-end figure, whoever relays."""
    workdir = ctx["workdir"]
    ctx["serial"] += 1
    tag = f"{ctx['serial']:03d}-postern-drain"
    load = Group(workdir_cgroup(), f"load-{tag}")
    sink = relay = None
    timeout = 120 + count * size / (1 * MB)
    try:
        port = free_port()
        relay = Postern(workdir, tag, port, {}, None, sync=ctx.get("postern_sync"))
        run_source(load, relay.port, size, count, sessions, workdir, timeout)
        settle(relay.group, "postern after spooling")
        sink = Sink(load, workdir, port=port)
        cpu0, load0, t0 = relay.group.cpu_seconds(), load.cpu_seconds(), time.time()
        r = subprocess.run([BIN, "flush", "--config", relay.conf], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"postern flush failed ({r.returncode}): {r.stderr.strip()}")
        t2 = sink.wait_count(count, timeout)
        settle(relay.group, "postern after the drain")
        cpu1, load1 = relay.group.cpu_seconds(), load.cpu_seconds()
        if sink.count != count:
            raise BenchError(f"postern drain: smtp-sink counted {sink.count}, expected {count}")
        return dict(relay="postern", size=size, count=count, sessions=sessions, mode="drain", slow_ms=None,
                    drain_s=t2 - t0, drain_rate=count / (t2 - t0),
                    cpu_ms_per_msg=(cpu1 - cpu0) * 1000 / count,
                    sink_cpu_ms_per_msg=(load1 - load0) * 1000 / count,
                    sink_busy=(load1 - load0) / (t2 - t0))
    finally:
        stop_run(relay, sink, load)


def stop_run(relay, sink, load):
    """Stops what a run started, whichever of it did start."""
    if relay is not None:
        relay.stop()
    if sink is not None:
        sink.stop()
    load.kill_all()
    load.remove()


# --- medians and the report --------------------------------------------------------------

MEDIAN_KEYS = ["accepted_rate", "e2e_rate", "cpu_ms_per_msg", "peak_rss_kb", "load_cpu_ms_per_msg",
               "postern_proc_cpu_ms_per_msg", "shim_syncs_per_msg", "drain_rate", "sink_cpu_ms_per_msg",
               "sink_busy", "e2e_sink_cpu_ms_per_msg", "e2e_sink_wait_ms_per_msg", "e2e_sink_busy"]


def median_of(runs):
    out = {k: runs[0][k] for k in ("relay", "size", "count", "sessions", "slow_ms")}
    out["runs"] = len(runs)
    for k in MEDIAN_KEYS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals)
    return out


def fmt(v, digits=0):
    """digits None: a rate, with one decimal below 100 (the 5 MB rows)."""
    if v is None:
        return "–"
    if digits is None:
        digits = 1 if v < 100 else 0
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def cell(value, digits, vs_postfix, vs_base):
    parts = []
    if vs_postfix is not None:
        parts.append(f"{vs_postfix:.2f}×P")
    if vs_base is not None:
        parts.append(f"{vs_base:.2f}×B")
    return fmt(value, digits) + (f" ({', '.join(parts)})" if parts else "")


def main_table(results):
    """results: {(label, count, sessions): {relay: merged row}}"""
    lines = ["| workload | relay | accepted msg/s | end-to-end msg/s | CPU ms/msg | syncs/msg | "
             "sync ms | io_uring_enter/msg | peak RSS kB (ΣVmHWM) | peak PSS kB (ΣPss) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (label, count, sessions), rows in results.items():
        b, pf = rows.get("baseline", {}), rows.get("postfix", {})
        for relay in ("baseline", "postern", "postfix"):
            r = rows.get(relay)
            if r is None:
                continue
            vp = (lambda k: ratio(r.get(k), pf.get(k))) if relay == "postern" else (lambda k: None)
            vb = (lambda k: ratio(r.get(k), b.get(k))) if relay != "baseline" else (lambda k: None)
            if relay == "baseline":
                cpu = cell(r.get("load_cpu_ms_per_msg"), 3, None, None) + " (load)"
                lines.append(f"| {count} × {label}, {sessions} sess. | baseline (no relay) | "
                             f"{fmt(r['accepted_rate'], None)} | {fmt(r['e2e_rate'], None)} | {cpu} | – | – | – | – | – |")
                continue
            cpu_b = ratio(r.get("cpu_ms_per_msg"), b.get("load_cpu_ms_per_msg"))
            lines.append(
                f"| {count} × {label}, {sessions} sess. | {relay} | "
                f"{cell(r.get('accepted_rate'), None, vp('accepted_rate'), vb('accepted_rate'))} | "
                f"{cell(r.get('e2e_rate'), None, vp('e2e_rate'), vb('e2e_rate'))} | "
                f"{cell(r.get('cpu_ms_per_msg'), 3, vp('cpu_ms_per_msg'), cpu_b)} | "
                f"{cell(r.get('fsync_per_msg'), 2, vp('fsync_per_msg'), None)} | "
                f"{fmt(r.get('sync_ms_median'), 2)} | "
                f"{fmt(r.get('io_uring_enter_per_msg'), 2)} | "
                f"{cell(r.get('peak_rss_kb'), 0, vp('peak_rss_kb'), None)} | "
                f"{cell(r.get('peak_pss_kb'), 0, vp('peak_pss_kb'), None)} |")
    return lines


def targets(results, slow_results):
    """Issue 11's targets, each with this run's figure and whether it held
    there; a summary for the reader, never the exit status."""
    lines = []

    def verdict(ok):
        return "held" if ok else "**missed**"

    half = []
    for (label, count, sessions), rows in results.items():
        v = ratio(rows.get("postern", {}).get("e2e_rate"), rows.get("baseline", {}).get("e2e_rate"))
        if v is not None:
            half.append(f"{label} {v:.2f}×B ({verdict(v >= 0.5)})")
    if half:
        lines.append("- every workload end to end at least half the baseline: " + ", ".join(half))
    for (label, count, sessions), rows in results.items():
        if label != "5 MB":
            continue
        pn, pf, b = rows.get("postern", {}), rows.get("postfix", {}), rows.get("baseline", {})
        e2e = ratio(pn.get("e2e_rate"), pf.get("e2e_rate"))
        cpu = ratio(pn.get("cpu_ms_per_msg"), pf.get("cpu_ms_per_msg"))
        if e2e is not None:
            lines.append(f"- 5 MB end to end at least 1.5×P: {e2e:.2f}×P ({verdict(e2e >= 1.5)})")
        if cpu is not None:
            lines.append(f"- 5 MB CPU at most half Postfix's: {cpu:.2f}×P ({verdict(cpu <= 0.5)})")
        # The end-to-end rates stop at smtp-sink's: with Postfix at a share s
        # of the baseline, 1.5×P asks Postern for 1.5·s of it.
        share = ratio(pf.get("e2e_rate"), b.get("e2e_rate"))
        if share is not None and b.get("e2e_sink_busy") is not None:
            lines.append(f"  (Postfix reached {share:.2f}×B, so 1.5×P needs {1.5 * share:.2f}×B; "
                         f"with no relay smtp-sink was on a CPU {b['e2e_sink_busy'] * 100:.0f}% of the run)")
    ahead, grouped = [], []
    for (label, count, sessions), rows in slow_results.items():
        v = ratio(rows.get("postern", {}).get("e2e_rate"), rows.get("postfix", {}).get("e2e_rate"))
        if v is not None:
            ahead.append(f"{label} × {sessions} {v:.2f}×P ({verdict(v > 1)})")
        syncs = rows.get("postern", {}).get("shim_syncs_per_msg")
        if sessions == 16 and syncs is not None:
            grouped.append(f"- at most 0.2 syncs per message with 16 sessions behind slowed syncs: {syncs:.2f} "
                           f"({verdict(syncs <= 0.2)})")
    if ahead:
        lines.append("- ahead of Postfix behind slowed syncs: " + ", ".join(ahead))
    return lines + grouped


def slow_table(results, slow_ms):
    lines = ["| workload | relay | accepted msg/s | end-to-end msg/s | syncs/msg (shim, timed runs) | "
             "syncs/msg (strace) | io_uring_enter/msg | shim loaded in (timed runs) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (label, count, sessions), rows in results.items():
        pf = rows.get("postfix", {})
        for relay in ("postern", "postfix"):
            r = rows.get(relay)
            if r is None:
                continue
            vp = (lambda k: ratio(r.get(k), pf.get(k))) if relay == "postern" else (lambda k: None)
            lines.append(
                f"| {count} × {label}, {sessions} sess., sync +{slow_ms} ms | {relay} | "
                f"{cell(r.get('accepted_rate'), None, vp('accepted_rate'), None)} | "
                f"{cell(r.get('e2e_rate'), None, vp('e2e_rate'), None)} | "
                f"{cell(r.get('shim_syncs_per_msg'), 2, vp('shim_syncs_per_msg'), None)} | "
                f"{fmt(r.get('fsync_per_msg'), 2)} | {fmt(r.get('io_uring_enter_per_msg'), 2)} | "
                f"{r.get('shim_loaded', '–')}/{r.get('shim_processes', '–')} processes |")
    return lines


def sink_table(results):
    lines = ["| workload | relay | end-to-end msg/s | smtp-sink on a CPU, ms/msg | smtp-sink busy | "
             "smtp-sink waiting for a CPU, ms/msg |",
             "|---|---|---:|---:|---:|---:|"]
    for (label, count, sessions), rows in results.items():
        b = rows.get("baseline", {})
        for relay in ("baseline", "postern", "postfix"):
            r = rows.get(relay)
            if r is None or r.get("e2e_sink_busy") is None:
                continue
            vb = ratio(r.get("e2e_rate"), b.get("e2e_rate")) if relay != "baseline" else None
            lines.append(f"| {count} × {label}, {sessions} sess. | {relay} | {cell(r['e2e_rate'], None, None, vb)} | "
                         f"{fmt(r['e2e_sink_cpu_ms_per_msg'], 2)} | {r['e2e_sink_busy']:.0%} | "
                         f"{fmt(r['e2e_sink_wait_ms_per_msg'], 2)} |")
    return lines


SINK_LEGEND = [
    "smtp-sink over each end-to-end run (medians of the timed runs), from its /proc/PID/schedstat: its time",
    "on a CPU per message, the share of the run it spent on one (busy), and its time ready to run but",
    "waiting for a CPU per message, which the relay and smtp-source held (three processes, two CPUs here).",
    "Where the sink is as busy as with no relay, the relay passes the messages on as fast as the sink takes",
    "them, and only a faster sink would raise its end-to-end rate.",
]


def drain_table(results, drains):
    lines = ["| workload | Postern delivering alone, msg/s | Postern CPU ms/msg | smtp-sink CPU ms/msg | "
             "smtp-sink busy |",
             "|---|---:|---:|---:|---:|"]
    for (label, count, sessions), d in drains.items():
        b = results.get((label, count, sessions), {}).get("baseline", {})
        lines.append(f"| {count} × {label} | {cell(d['drain_rate'], None, None, ratio(d['drain_rate'], b.get('e2e_rate')))} | "
                     f"{fmt(d['cpu_ms_per_msg'], 3)} | {fmt(d['sink_cpu_ms_per_msg'], 3)} | {d['sink_busy']:.0%} |")
    return lines


DRAIN_LEGEND = [
    "The messages of each workload spooled with nothing listening upstream, then smtp-sink started and",
    "`postern flush`: messages over the time from the sink listening until it counted them all (×B: over",
    "the baseline's end-to-end rate, smtp-source straight into smtp-sink). CPU: Postern's and smtp-sink's",
    "over that window, per message; smtp-sink busy: the share of the window smtp-sink spent on a CPU. Near",
    "100%, the sink is what limits delivery, and so every relay's end-to-end rate in the table above.",
]


def machine_info(args, cgroup_method):
    cpu = "?"
    for line in (read("/proc/cpuinfo", "") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    fs = subprocess.run(["df", "--output=fstype", args.scratch_dir], capture_output=True,
                        text=True).stdout.split()[-1]
    pf_version = postconf_default("mail_version")
    try:
        # The last commit that changed the daemon's sources (the binary is built from them).
        commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cs", "--", "Sources"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return [f"- machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}; scratch on {fs} "
            f"({args.scratch_dir}), Postern's spool and Postfix's queue side by side",
            f"- Postern: {BIN} ({os.path.getsize(BIN):,} bytes), sources of commit {commit}; Postfix {pf_version} "
            f"(Debian), smtp-source/smtp-sink from the same package",
            f"- medians of {args.runs} run(s); CPU from {cgroup_method}",
            f"- load average (1, 5, 15 min) at the start: {args.loadavg_start}; at the end: "
            f"{' '.join((read('/proc/loadavg', '') or '?').split()[:3])} (other work on the machine "
            f"makes the figures noisier)"]


LEGEND = [
    "accepted: smtp-source's start to its exit (every 250 to DATA); end-to-end: smtp-source's start until",
    "smtp-sink has counted every message. CPU: the relay's own CPU time, from the source's start until the",
    "relay is idle again, per message; the baseline row gives smtp-source's and smtp-sink's instead (\"load\"),",
    "and a relay's ×B is its CPU over that. syncs: fsync+fdatasync+sync_file_range+syncfs calls per message,",
    "counted by strace -f over the same window in a separate counting run (never in the timed runs); sync ms:",
    "their median duration there (strace -T): what the disk made each one wait, which varies on a shared disk.",
    "peak RSS: the largest sum of VmHWM over the relay's live processes, sampled every 0.1 s (Postern: one",
    "process, so its VmHWM; Postfix: master and every daemon, each counting the shared pages of libc and",
    "Postfix's libraries again); peak PSS: the largest sum of Pss over the same processes, sampled in the",
    "counting run (shared pages divided among their users). (x.xx×P): ratio to Postfix; (x.xx×B): to the",
    "baseline.",
]


# --- main -----------------------------------------------------------------------------------


def main():
    global _CGROUP_BASE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS") or 3),
                    help="timed runs per relay and workload (median)")
    ap.add_argument("--quick", action="store_true", help="one run each, fewer messages (for development)")
    ap.add_argument("--slow-ms", type=int, default=10, help="what the shim adds to each sync")
    ap.add_argument("--no-slow", action="store_true", help="skip the slowed-sync rows")
    ap.add_argument("--no-count", action="store_true", help="skip the strace counting runs")
    ap.add_argument("--no-drain", action="store_true", help="skip the rows of Postern delivering alone")
    ap.add_argument("--no-cgroup", action="store_true", help="CPU from /proc even where cgroup v2 is there")
    ap.add_argument("--scratch-dir", default="/var/tmp", help="where spool and queue live (not tmpfs)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--workload", action="append", metavar="LABEL",
                    help='run only this workload (its size label, "2 KB", "100 KB" or "5 MB"; repeatable)')
    ap.add_argument("--postern-sync", choices=["auto", "io_uring", "helper", "loop"],
                    help="Postern's [spool] sync in the unslowed runs (default: its own default, auto)")
    ap.add_argument("--relays", default="baseline,postern,postfix",
                    help="comma-separated relays to run (baseline, postern, postfix; default all)")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    args.loadavg_start = " ".join((read("/proc/loadavg", "") or "?").split()[:3])
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    slow_workloads = QUICK_SLOW_WORKLOADS if args.quick else SLOW_WORKLOADS
    if args.workload:
        labels = {w.replace(" ", "").upper() for w in args.workload}
        workloads = [w for w in workloads if w[0].replace(" ", "").upper() in labels]
        slow_workloads = [w for w in slow_workloads if w[0].replace(" ", "").upper() in labels]
    relays = [r for r in args.relays.split(",") if r]
    if not relays or any(r not in ("baseline", "postern", "postfix") for r in relays):
        raise BenchError(f"--relays: {args.relays!r} (baseline, postern, postfix)")

    if os.geteuid() != 0:
        raise BenchError("needs root (a private Postfix instance, cgroups)")
    for tool in ("smtp-source", "smtp-sink", "postfix", "postconf", "strace"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (make bench installs it: Tests/tools/ensure-postfix)")
    if not os.access(BIN, os.X_OK):
        raise BenchError(f"no binary at {BIN} (make build, or set POSTERN_BIN)")
    if not args.no_slow and not os.path.exists(SHIM):
        raise BenchError(f"no shim at {SHIM} (make build/tools/slow_sync.so)")
    others = [p for p in all_pids() if exe(p) == os.path.join(postconf_default("daemon_directory"), "master")]
    if others:
        print(f"note: Postfix master process(es) {others} already running (not ours; left alone)", file=sys.stderr)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    os.makedirs(args.out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="postern-relay-", dir=args.scratch_dir)
    os.chmod(workdir, 0o755)  # Postfix's daemons (user postfix) reach their data_directory through it
    cg_root = None if args.no_cgroup else cgroup2_root()
    if cg_root:
        base = os.path.join(cg_root, f"postern-bench-{os.getpid()}")
        try:
            os.mkdir(base)
            _CGROUP_BASE = base
        except OSError as e:
            print(f"warning: no cgroup v2 directory ({e}); CPU from /proc", file=sys.stderr)
    cgroup_method = "cgroup v2 cpu.stat usage_usec" if _CGROUP_BASE else "/proc utime+stime(+cutime+cstime) of the tree"
    jsonl_path = os.path.join(args.out_dir, "relay.jsonl")
    jsonl = open(jsonl_path, "w")
    ctx = dict(workdir=workdir, serial=0, postern_sync=args.postern_sync)
    ok = False
    started = time.monotonic()

    def emit(obj):
        jsonl.write(json.dumps(obj, sort_keys=True) + "\n")
        jsonl.flush()

    try:
        results = {}
        for label, size, count, sessions in workloads:
            key = (label, count, sessions)
            runs = {r: [] for r in ("baseline", "postern", "postfix") if r in relays}
            for i in range(args.runs):
                for relay in runs:
                    print(f"{count} x {label}, {sessions} sessions, {relay}, run {i + 1}/{args.runs} ...",
                          end=" ", flush=True)
                    r = one_run(ctx, relay, size, count, sessions, "timed")
                    print(f"{r['accepted_rate']:.0f} / {r['e2e_rate']:.0f} msg/s"
                          + (f", {r['cpu_ms_per_msg']:.3f} CPU ms/msg" if "cpu_ms_per_msg" in r else ""), flush=True)
                    emit(dict(kind="run", **r))
                    runs[relay].append(r)
            merged = {relay: median_of(rs) for relay, rs in runs.items()}
            if not args.no_count:
                for relay in [r for r in ("postern", "postfix") if r in relays]:
                    print(f"{count} x {label}, {sessions} sessions, {relay}, counting run (strace) ...",
                          end=" ", flush=True)
                    r = one_run(ctx, relay, size, count, sessions, "count")
                    print(f"{r['syncs']} syncs, {r['calls']['io_uring_enter']} io_uring_enter", flush=True)
                    emit(dict(kind="count", **r))
                    for k in ("fsync_per_msg", "io_uring_enter_per_msg", "peak_pss_kb", "calls", "syncs",
                              "sync_ms_median"):
                        merged[relay][k] = r[k]
            results[key] = merged
            for relay, m in merged.items():
                line = json.dumps(dict(kind="median", workload=f"{count} x {label} x {sessions}", **m), sort_keys=True)
                jsonl.write(line + "\n")
                print("relay-bench-json: " + line, flush=True)

        drain_results = {}
        if "postern" in relays and not args.no_drain:
            for label, size, count, sessions in workloads:
                key = (label, count, sessions)
                rs = []
                for i in range(args.runs):
                    print(f"{count} x {label}, postern delivering alone, run {i + 1}/{args.runs} ...",
                          end=" ", flush=True)
                    r = drain_run(ctx, size, count, sessions)
                    print(f"{r['drain_rate']:.1f} msg/s, smtp-sink {r['sink_cpu_ms_per_msg']:.3f} CPU ms/msg",
                          flush=True)
                    emit(dict(kind="drain-run", **r))
                    rs.append(r)
                drain_results[key] = median_of(rs)
                line = json.dumps(dict(kind="drain-median", workload=f"{count} x {label} x {sessions}",
                                       **drain_results[key]), sort_keys=True)
                jsonl.write(line + "\n")
                print("relay-bench-json: " + line, flush=True)

        slow_results = {}
        if not args.no_slow:
            for label, size, count, sessions in slow_workloads:
                key = (label, count, sessions)
                runs = {r: [] for r in ("postern", "postfix") if r in relays}
                for i in range(args.runs):
                    for relay in runs:
                        print(f"slowed sync (+{args.slow_ms} ms): {count} x {label}, {sessions} sessions, {relay}, "
                              f"run {i + 1}/{args.runs} ...", end=" ", flush=True)
                        r = one_run(ctx, relay, size, count, sessions, "timed", slow_ms=args.slow_ms)
                        print(f"{r['accepted_rate']:.0f} / {r['e2e_rate']:.0f} msg/s, "
                              f"{r['shim_syncs_per_msg']:.2f} syncs/msg", flush=True)
                        emit(dict(kind="slow-run", **r))
                        runs[relay].append(r)
                merged = {relay: median_of(rs) for relay, rs in runs.items()}
                for relay, rs in runs.items():
                    # Over all timed runs (a run with a process without the shim has failed).
                    merged[relay]["shim_loaded"] = sum(r["shim_loaded"] for r in rs)
                    merged[relay]["shim_processes"] = sum(r["shim_processes"] for r in rs)
                    merged[relay]["shim_syncs_by_process"] = rs[0]["shim_syncs_by_process"]
                if not args.no_count:
                    for relay in [r for r in ("postern", "postfix") if r in relays]:
                        print(f"slowed sync: {count} x {label}, {sessions} sessions, {relay}, counting run ...",
                              end=" ", flush=True)
                        r = one_run(ctx, relay, size, count, sessions, "count", slow_ms=args.slow_ms)
                        print(f"{r['syncs']} syncs, {r['calls']['io_uring_enter']} io_uring_enter", flush=True)
                        emit(dict(kind="slow-count", **r))
                        for k in ("fsync_per_msg", "io_uring_enter_per_msg", "calls", "syncs"):
                            merged[relay][k] = r[k]
                slow_results[key] = merged
                for relay, m in merged.items():
                    line = json.dumps(dict(kind="slow-median", workload=f"{count} x {label} x {sessions}",
                                           **m), sort_keys=True)
                    jsonl.write(line + "\n")
                    print("relay-bench-json: " + line, flush=True)

        md = ["# Postern against Postfix: relay throughput", ""] + machine_info(args, cgroup_method) + [""]
        md += main_table(results) + [""] + LEGEND + [""]
        md += ["## smtp-sink during the end-to-end runs", ""] + sink_table(results) + [""] + SINK_LEGEND + [""]
        if drain_results:
            md += ["## Postern's delivery alone", ""] + drain_table(results, drain_results) + [""]
            md += DRAIN_LEGEND + [""]
        if slow_results:
            md += [f"## Slowed sync: every fsync/fdatasync/syncfs +{args.slow_ms} ms (LD_PRELOAD slow_sync.so)", ""]
            md += slow_table(slow_results, args.slow_ms) + [""]
            md += ["syncs/msg (shim): the shim's own count of the calls it slowed, in the timed runs (median);",
                   "(strace): fsync+fdatasync+sync_file_range+syncfs in a counting run under the shim; shim loaded",
                   "in: the relay's processes whose /proc/PID/maps has slow_sync.so, of those sampled in all",
                   "timed runs (one that ended before the dynamic loader was done with it is not counted).", ""]
            for key, rows in slow_results.items():
                for relay in ("postern", "postfix"):
                    by = rows.get(relay, {}).get("shim_syncs_by_process")
                    if by:
                        md.append(f"- {key[1]} × {key[0]}, {key[2]} sess., {relay}: slowed syncs by process "
                                  + ", ".join(f"{n} {c}" for n, c in sorted(by.items())))
            md.append("")
        summary = targets(results, slow_results)
        if summary:
            md += ["## Issue 11's targets in this run", ""] + summary + [""]
        md.append(f"Total time {time.monotonic() - started:.0f} s.")
        text = "\n".join(md) + "\n"
        with open(os.path.join(args.out_dir, "relay.md"), "w") as f:
            f.write(text)
        print()
        print(text, end="")
        print(f"(written to {os.path.join(args.out_dir, 'relay.md')} and {jsonl_path})")
        ok = True
    except KeyboardInterrupt:
        ok = True
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        jsonl.close()
        if _CGROUP_BASE:
            for d in os.listdir(_CGROUP_BASE):
                p = os.path.join(_CGROUP_BASE, d)
                if os.path.isdir(p):
                    for pid in (read(os.path.join(p, "cgroup.procs"), "") or "").split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    try:
                        wait_for(lambda: not (read(os.path.join(p, "cgroup.procs"), "") or "").split(), 10, p)
                        os.rmdir(p)
                    except (OSError, BenchError):
                        pass
            try:
                os.rmdir(_CGROUP_BASE)
            except OSError as e:
                print(f"warning: cannot remove {_CGROUP_BASE}: {e}", file=sys.stderr)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"relay_bench: logs, configurations and strace output kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"relay_bench: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("relay_bench: interrupted", file=sys.stderr)
        sys.exit(130)
