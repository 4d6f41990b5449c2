#!/usr/bin/python3
"""Footprint and idle cost of the board binaries, measured inside real ARM
kernels (issue 10, items 4 and 5; `make bench-board`).

x86_64 runs natively. aarch64 and armv7 run in a full-system VM
(qemu-system-aarch64 -M virt -cpu cortex-a53, qemu-system-arm -M virt -cpu
cortex-a15, one CPU, 512 MiB) booting Debian 12's own kernels
(linux-image-*-arm64, linux-image-*-armmp). qemu-user figures would include the
emulator's memory; inside the VM /proc/PID/* is what a board pays.

The VM gets an initramfs built here (busybox-static of the target, benchtool =
Tests/bench/board/benchtool.c built static, measure.sh, and the kernel's
virtio_mmio, virtio_blk and squashfs modules) and a read-only squashfs on a
virtio disk holding postern, the shared libraries its loader lists (from the
multiarch directories) and the loader, mounted so that /lib is its /lib. Not
the initramfs: its files are tmpfs (shmem) pages, which are always dirty, so
the text of postern and of every library would count as Private_Dirty. From the
disk they are clean page cache, as from a board's SD card. The spool is on a
tmpfs (in the VM; /dev/shm natively): no device write is counted here
(Tests/bench/flash_wear.py does that).

What is measured, per architecture (Tests/bench/board/measure.sh does it):
1. the size of the stripped binary;
2. the idle daemon (listening, empty queue, SETTLE s after it listens): VmRSS,
   VmHWM, smaps_rollup (Private_Dirty, Private_Clean, Shared_*), and smaps split
   per mapping (the binary's relro/.data/.bss, [heap], [stack], anon, each library);
3. relaying 4 concurrent sessions of 2 KB messages (200 by default), then one
   20 MB message: VmHWM (reset with clear_refs before each) and the largest
   Private_Dirty sampled every 50 ms; all waited for at the sink;
4. idle cost over IDLE_SECONDS (60): voluntary context switches (wake-ups) and
   /proc/PID/io wchar/syscw, once without and once with the watchdog
   (WATCHDOG_USEC from postern.service's WatchdogSec, NOTIFY_SOCKET read by
   benchtool notify, which counts the WATCHDOG=1 pings).

Prints a Markdown table, one JSON line per architecture, and the per-mapping
breakdown. Everything fetched or built is cached under --work
(default build/bench-board). The VM talks to nothing: loopback only, no network
device at all.
"""
import argparse
import gzip
import json
import os
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "Tests", "bench", "board")
ENSURE_DEBS = os.path.join(ROOT, "Tests", "tools", "ensure-debs")

ARCHES = {
    "x86_64": dict(gcc="gcc", strip="strip", bin="postern"),
    "aarch64": dict(gcc="aarch64-linux-gnu-gcc", strip="aarch64-linux-gnu-strip", bin="aarch64/postern",
                    debarch="arm64", flavour="arm64", triple="aarch64-linux-gnu",
                    loader="/lib/ld-linux-aarch64.so.1", qemu_user="qemu-aarch64-static",
                    qemu=["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53"]),
    "armv7": dict(gcc="arm-linux-gnueabihf-gcc", strip="arm-linux-gnueabihf-strip", bin="armv7/postern",
                  debarch="armhf", flavour="armmp", triple="arm-linux-gnueabihf",
                  loader="/lib/ld-linux-armhf.so.3", qemu_user="qemu-arm-static",
                  # highmem=off: the non-LPAE armmp kernel cannot reach devices above 4 GiB.
                  qemu=["qemu-system-arm", "-M", "virt,highmem=off", "-cpu", "cortex-a15"]),
}

# What the bench needs from Debian (Tests/tools/ensure-debs installs the missing ones).
DEBS = ["qemu-system-arm", "qemu-user-static", "squashfs-tools", "gcc", "libc6-dev",
        "gcc-aarch64-linux-gnu", "gcc-arm-linux-gnueabihf", "libc6-dev:arm64", "libc6-dev:armhf",
        "libssl3:arm64", "libsystemd0:arm64", "libssl3:armhf", "libsystemd0:armhf"]

LIBSYSTEMD_DEPS = ("libcap", "libgcrypt", "liblzma", "libzstd", "liblz4", "libgpg-error")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def watchdog_usec():
    """WatchdogSec= of Deploy/postern.service, in µs."""
    text = open(os.path.join(ROOT, "Deploy", "postern.service")).read()
    m = re.search(r"^WatchdogSec=(\d+)(ms|s|min)?\s*$", text, re.M)
    if not m:
        raise SystemExit("no WatchdogSec= in Deploy/postern.service")
    return int(m.group(1)) * {"ms": 1000, "s": 1000000, None: 1000000, "min": 60000000}[m.group(2)]


def wait_for_binary(path, minutes=10):
    """The lead may be rebuilding the board binaries: wait for one that is missing."""
    deadline = time.monotonic() + minutes * 60
    while not os.path.isfile(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} is missing (build it with make build / make board ARCH=...)")
        log(f"waiting for {path} to appear")
        time.sleep(5)


# ---- fetching -------------------------------------------------------------------

def apt_download(pkg, dest):
    """apt-get download PKG into dest (once); returns the .deb's path."""
    os.makedirs(dest, exist_ok=True)
    name, _, arch = pkg.partition(":")
    found = [f for f in os.listdir(dest) if f.startswith(name + "_") and f.endswith(f"_{arch}.deb")]
    if found:
        return os.path.join(dest, found[0])
    log(f"apt-get download {pkg}")
    if subprocess.run(["apt-get", "download", "-qq", pkg], cwd=dest, stderr=subprocess.DEVNULL).returncode != 0:
        run((["sudo"] if os.geteuid() else []) + ["apt-get", "update", "-qq"])
        run(["apt-get", "download", "-qq", pkg], cwd=dest)
    return apt_download(pkg, dest)


# The modules that let the VM mount a squashfs from a virtio disk (Debian builds
# all three as modules; none of them depends on another).
MODULES = ("drivers/virtio/virtio_mmio.ko", "drivers/block/virtio_blk.ko", "fs/squashfs/squashfs.ko")


def kernel(a, work):
    """Debian 12's current kernel for the arch (from the linux-image-<flavour>
    metapackage) and the MODULES: (vmlinuz, [module paths], package)."""
    out_dir = os.path.join(work, "kernel", a["debarch"])
    done = os.path.join(out_dir, "vmlinuz")
    modules = [os.path.join(out_dir, os.path.basename(m)) for m in MODULES]
    if os.path.exists(done) and all(os.path.exists(m) for m in modules):
        return done, modules, open(os.path.join(out_dir, "package")).read().strip()
    meta = f"linux-image-{a['flavour']}:{a['debarch']}"
    deps = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True).stdout
    m = re.search(r"Depends: (linux-image-6\.1\.\S+-" + a["flavour"] + r")\b", deps)
    if not m:
        raise SystemExit(f"cannot resolve {meta}: {deps!r}")
    pkg = f"{m.group(1)}:{a['debarch']}"
    deb = apt_download(pkg, os.path.join(work, "debs"))
    tmp = tempfile.mkdtemp(dir=work)
    try:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
        run(["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"]
            + [f"./lib/modules/*/kernel/{m}" for m in MODULES], stdin=tar.stdout)
        tar.wait()
        boot = os.path.join(tmp, "boot")
        vmlinuz = [f for f in os.listdir(boot) if f.startswith("vmlinuz-")][0]
        os.makedirs(out_dir, exist_ok=True)
        release = os.listdir(os.path.join(tmp, "lib", "modules"))[0]
        for m, dest in zip(MODULES, modules):
            shutil.move(os.path.join(tmp, "lib", "modules", release, "kernel", m), dest)
        shutil.move(os.path.join(boot, vmlinuz), done)
        open(os.path.join(out_dir, "package"), "w").write(f"{pkg} ({vmlinuz})\n")
    finally:
        shutil.rmtree(tmp)
    return done, modules, open(os.path.join(out_dir, "package")).read().strip()


def busybox(a, work):
    path = os.path.join(work, "busybox", a["debarch"], "busybox")
    if not os.path.exists(path):
        deb = apt_download(f"busybox-static:{a['debarch']}", os.path.join(work, "debs"))
        tmp = tempfile.mkdtemp(dir=work)
        try:
            run(["dpkg-deb", "-x", deb, tmp])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.move(os.path.join(tmp, "bin", "busybox"), path)
        finally:
            shutil.rmtree(tmp)
    return path


def benchtool(arch, a, work):
    out = os.path.join(work, arch, "benchtool")
    src = os.path.join(HERE, "benchtool.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        run([a["gcc"], "-static", "-O2", "-Wall", "-Wextra", "-o", out, src])
    return out


def shared_libs(a, binary):
    """(path on this machine, path in the VM) of each library the loader maps, and the loader."""
    out = subprocess.run([a["qemu_user"], a["loader"], "--list", binary],
                         capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(0x", line)
        if m:
            libs.append(m.group(2))
    triple_dir = f"/lib/{a['triple']}/"
    for lib in libs:
        if not lib.startswith(triple_dir) and not lib.startswith("/usr" + triple_dir):
            raise SystemExit(f"{lib}: not from the multiarch directory {triple_dir}")
    return libs


# ---- the initramfs --------------------------------------------------------------

class Cpio:
    """A newc cpio archive (what the kernel unpacks as its initramfs), written
    without root: device nodes and owners are just header fields."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o755):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


# /lib and /disk/bench/postern come from a read-only squashfs on a virtio disk:
# files in the initramfs (a tmpfs) are shmem pages, always dirty, so a binary
# and libraries run from there would show their text as Private_Dirty. On the
# disk they are clean page cache, as on a board's SD card.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in virtio_mmio virtio_blk squashfs; do insmod /modules/$m.ko || echo "@@fail insmod $m"; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
mount -t squashfs -o ro /dev/vda /disk || echo "@@fail mount /dev/vda"
mkdir -p /run/bench
mount -t tmpfs -o size=256m,mode=0755 tmpfs /run/bench
ip link set lo up
echo "@@booted"
export BIN=/disk/bench/postern TOOL=/bench/benchtool WORK=/run/bench PORT=2525 UPORT=2526
export SPOOL_FS="tmpfs in the VM's RAM (/run/bench); postern and its libraries on a read-only squashfs (virtio disk)"
export SETTLE={settle} IDLE_SECONDS={idle} MESSAGES={messages} CLIENTS={clients} SMALL={small} BIG={big}
export WATCHDOG_US={watchdog}
sh /bench/measure.sh
echo "@@poweroff"
sync
poweroff -f
"""


def images(arch, a, work, binary, tool, modules, opts):
    """The initramfs (busybox, benchtool, measure.sh, the modules, /init) and the
    squashfs disk (postern, the libraries its loader lists, the loader)."""
    bb = busybox(a, work)
    libs = shared_libs(a, binary)
    stage = os.path.join(work, arch, "disk")
    shutil.rmtree(stage, ignore_errors=True)
    libdir = os.path.join(stage, "lib", a["triple"])
    os.makedirs(libdir)
    os.makedirs(os.path.join(stage, "bench"))
    for lib in libs + [a["loader"]]:
        shutil.copy(os.path.realpath(lib), os.path.join(libdir, os.path.basename(lib)))
    os.symlink(f"{a['triple']}/{os.path.basename(a['loader'])}", os.path.join(stage, a["loader"].lstrip("/")))
    shutil.copy(binary, os.path.join(stage, "bench", "postern"))
    disk = os.path.join(work, arch, "disk.squashfs")
    if os.path.exists(disk):
        os.unlink(disk)
    run(["mksquashfs", stage, disk, "-noappend", "-all-root", "-quiet"], stdout=subprocess.DEVNULL)

    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "run", "tmp", "etc", "disk", "bench", "modules"):
        c.dir(d)
    c.symlink("lib", "disk/lib")
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", open(bb, "rb").read())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    c.file("etc/group", b"root:x:0:\n", 0o644)
    for m in modules:
        c.file(f"modules/{os.path.basename(m)}", open(m, "rb").read(), 0o644)
    c.file("bench/benchtool", open(tool, "rb").read())
    c.file("bench/measure.sh", open(os.path.join(HERE, "measure.sh"), "rb").read())
    c.file("init", INIT.format(settle=opts.settle, idle=opts.idle_seconds, messages=opts.messages,
                               clients=opts.clients, small=opts.small, big=opts.big,
                               watchdog=watchdog_usec()).encode())
    rd = os.path.join(work, arch, "initramfs.cpio.gz")
    with open(rd, "wb") as f:
        f.write(gzip.compress(c.finish(), 6))
    return rd, disk, libs


# ---- running ----------------------------------------------------------------------

def read_lines(proc, deadline_s, transcript, boot_s):
    """Lines of the VM's serial console until "@@poweroff" and the VM's exit,
    bounded: boot_s for "@@booted", deadline_s in all."""
    t0 = time.monotonic()
    buf = b""
    lines = []
    booted = False
    fd = proc.stdout.fileno()
    with open(transcript, "wb") as tr:
        while True:
            elapsed = time.monotonic() - t0
            limit = deadline_s if booted else boot_s
            if elapsed > limit:
                proc.kill()
                proc.wait()
                raise SystemExit(f"the VM did not {'finish' if booted else 'boot'} within {limit} s "
                                 f"(console: {transcript})")
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            tr.write(chunk)
            tr.flush()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").rstrip("\r")
                lines.append(text)
                if text == "@@booted":
                    booted = True
                    log(f"  booted after {time.monotonic() - t0:.1f} s")
                elif text.startswith("@@fail"):
                    log(f"  {text}")
    proc.wait(timeout=60)
    return lines


def run_vm(arch, a, work, opts):
    binary = os.path.join(work, arch, "postern")
    tool = benchtool(arch, a, work)
    vmlinuz, modules, package = kernel(a, work)
    rd, disk, libs = images(arch, a, work, binary, tool, modules, opts)
    cmd = a["qemu"] + ["-smp", "1", "-m", "512", "-nodefaults", "-display", "none", "-serial", "stdio",
                       "-no-reboot", "-kernel", vmlinuz, "-initrd", rd,
                       "-drive", f"file={disk},if=none,format=raw,readonly=on,id=disk",
                       "-device", "virtio-blk-device,drive=disk",
                       "-append", "console=ttyAMA0 rdinit=/init quiet loglevel=3 panic=-1"]
    log(f"{arch}: booting {package} in {a['qemu'][0]} (1 CPU, 512 MiB, no network device)")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    budget = 2 * opts.idle_seconds + 3 * opts.settle + 1200
    lines = read_lines(proc, budget, os.path.join(work, arch, "console.log"), 600)
    return lines, dict(kernel=package, machine=" ".join(a["qemu"]), libs=[os.path.basename(l) for l in libs])


def run_native(arch, a, work, opts):
    binary = os.path.join(work, arch, "postern")
    tool = benchtool(arch, a, work)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    scratch = tempfile.mkdtemp(prefix="postern-board-", dir=shm or work)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = dict(os.environ, BIN=binary, TOOL=tool, WORK=scratch, PORT=str(ports[0]), UPORT=str(ports[1]),
               SPOOL_FS=f"tmpfs ({shm})" if shm else f"disk ({work})",
               SETTLE=str(opts.settle), IDLE_SECONDS=str(opts.idle_seconds), MESSAGES=str(opts.messages),
               CLIENTS=str(opts.clients), SMALL=str(opts.small), BIG=str(opts.big), WATCHDOG_US=str(watchdog_usec()))
    log(f"{arch}: natively, scratch {scratch}")
    budget = 2 * opts.idle_seconds + 3 * opts.settle + 600
    try:
        proc = subprocess.Popen(["/bin/sh", os.path.join(HERE, "measure.sh")], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        lines = read_lines(proc, budget, os.path.join(work, arch, "console.log"), budget)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    libs = [l.split()[2] for l in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout.splitlines()
            if " => " in l]
    return lines, dict(kernel=os.uname().release + " (this machine)", machine="native",
                       libs=[os.path.basename(l) for l in libs])


# ---- parsing ------------------------------------------------------------------------

def parse(lines):
    sections, kv, current, fails = {}, {}, None, []
    for line in lines:
        if line.startswith("@@begin "):
            current = line[8:]
            sections[current] = []
        elif line.startswith("@@end "):
            current = None
        elif current is not None:
            sections[current].append(line)
        elif line.startswith("@@kv "):
            k, _, v = line[5:].partition("=")
            kv[k] = v
        elif line.startswith("@@fail"):
            fails.append(line)
    if fails or "@@done" not in lines:
        tail = "\n".join(lines[-40:])
        raise SystemExit(f"the measurement did not complete: {fails}\n--- last lines:\n{tail}")
    return sections, kv


def fields(section_lines):
    """'Key:   123 kB' lines → {Key: 123}."""
    out = {}
    for line in section_lines:
        m = re.match(r"(\w+):\s+(-?\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def sample(section_lines):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", " ".join(section_lines))}


MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")


def mappings(section_lines):
    maps = []
    for line in section_lines:
        m = MAP_RE.match(line)
        if m:
            maps.append(dict(start=int(m.group(1), 16), end=int(m.group(2), 16), perms=m.group(3),
                             path=m.group(4).strip(), f={}))
        elif maps:
            m2 = re.match(r"(\w+):\s+(\d+) kB", line)
            if m2:
                maps[-1]["f"][m2.group(1)] = int(m2.group(2))
    return maps


def breakdown(maps, binary_name):
    """Per object: Rss, Private_Dirty split into relro (r--p file pages written by
    the loader), .data (rw-p file), .bss (the anonymous mapping right after the
    object's last file mapping), Private_Clean, Shared. [heap], [stack], the
    kernel's pages ([vdso], [vvar], [vectors], [sigpage]) and other anonymous
    mappings are rows of their own."""
    rows = {}
    order = []

    def row(name):
        if name not in rows:
            rows[name] = dict(Rss=0, Private_Dirty=0, relro=0, data=0, bss=0, other=0, Private_Clean=0, Shared=0)
            order.append(name)
        return rows[name]

    prev = None
    for m in maps:
        f = m["f"]
        path = m["path"]
        if path.startswith("/"):
            base = os.path.basename(path)
            name = f"{base} (the binary)" if base == binary_name else base
            kind = "relro" if m["perms"].startswith("r--") else "data" if m["perms"].startswith("rw") else "other"
        elif path:
            name, kind = path, "other"
        elif prev is not None and prev["path"].startswith("/") and prev["end"] == m["start"]:
            base = os.path.basename(prev["path"])
            name = f"{base} (the binary)" if base == binary_name else base
            kind = "bss"
        else:
            name, kind = "anonymous (mmap)", "other"
        r = row(name)
        r["Rss"] += f.get("Rss", 0)
        r["Private_Dirty"] += f.get("Private_Dirty", 0)
        r[kind] += f.get("Private_Dirty", 0)
        r["Private_Clean"] += f.get("Private_Clean", 0)
        r["Shared"] += f.get("Shared_Clean", 0) + f.get("Shared_Dirty", 0)
        prev = m
    return [(n, rows[n]) for n in order]


def analyse(arch, a, sections, kv, meta, binary, opts):
    def st(name):
        return fields(sections[f"{name}.status"])

    def io(name):
        return fields(sections[f"{name}.io"])

    def up(name):
        return float(sections[f"{name}.uptime"][0].split()[0])

    def per_minute(start, end):
        dt = up(end) - up(start)
        return dt, (st(end)["voluntary_ctxt_switches"] - st(start)["voluntary_ctxt_switches"]) * 60.0 / dt

    stripped = os.path.join(os.path.dirname(binary), "postern.stripped")
    run([a["strip"], "-o", stripped, binary])
    idle_roll = fields(sections["idle.smaps_rollup"])
    wd_roll = fields(sections["wd_idle.smaps_rollup"])
    dt, wake = per_minute("idle", "idle_end")
    wd_dt, wd_wake = per_minute("wd_idle", "wd_idle_end")
    small_s, big_s = sample(sections["small.sample"]), sample(sections["big.sample"])
    after_roll = fields(sections["after.smaps_rollup"])
    res = dict(
        arch=arch,
        binary_bytes=os.path.getsize(binary),
        stripped_bytes=os.path.getsize(stripped),
        idle_VmRSS_kB=st("idle")["VmRSS"],
        idle_VmHWM_kB=st("idle")["VmHWM"],
        idle_Private_Dirty_kB=idle_roll["Private_Dirty"],
        idle_Private_Clean_kB=idle_roll["Private_Clean"],
        idle_Shared_Clean_kB=idle_roll["Shared_Clean"],
        idle_Shared_Dirty_kB=idle_roll["Shared_Dirty"],
        idle_Pss_kB=idle_roll["Pss"],
        idle_smaps_Rss_kB=idle_roll["Rss"],
        small_peak_smaps_Rss_kB=small_s.get("max_smaps_Rss"),
        big_peak_smaps_Rss_kB=big_s.get("max_smaps_Rss"),
        small_peak_VmHWM_kB=st("small")["VmHWM"],
        small_peak_Private_Dirty_kB=small_s.get("max_Private_Dirty"),
        small_samples=small_s.get("samples"),
        big_peak_VmHWM_kB=st("big")["VmHWM"],
        big_peak_Private_Dirty_kB=big_s.get("max_Private_Dirty"),
        big_samples=big_s.get("samples"),
        after_VmRSS_kB=st("after")["VmRSS"],
        after_Private_Dirty_kB=after_roll["Private_Dirty"],
        idle_window_s=round(dt, 2),
        wakeups_per_min_idle=round(wake, 2),
        nonvoluntary_per_min_idle=round((st("idle_end")["nonvoluntary_ctxt_switches"]
                                         - st("idle")["nonvoluntary_ctxt_switches"]) * 60.0 / dt, 2),
        wchar_idle=io("idle_end")["wchar"] - io("idle")["wchar"],
        syscw_idle=io("idle_end")["syscw"] - io("idle")["syscw"],
        wakeups_per_min_watchdog=round(wd_wake, 2),
        watchdog_pings_per_min=round(int(kv.get("wd_pings", "0")) * 60.0 / wd_dt, 2),
        wchar_idle_watchdog=io("wd_idle_end")["wchar"] - io("wd_idle")["wchar"],
        syscw_idle_watchdog=io("wd_idle_end")["syscw"] - io("wd_idle")["syscw"],
        watchdog_usec=int(kv["watchdog_usec"]),
        wd_idle_Private_Dirty_kB=wd_roll["Private_Dirty"],
        spool=kv["spool_fs"],
        kernel=meta["kernel"],
        machine=meta["machine"],
        libs=meta["libs"],
        delivered=int(kv.get("log1_delivered", "0")),
        load_small=" ".join(sections["small.load"]),
        load_big=" ".join(sections["big.load"]),
    )
    res["breakdown_idle"] = breakdown(mappings(sections["idle.smaps"]), "postern")
    res["breakdown_after"] = breakdown(mappings(sections["after.smaps"]), "postern")
    return res


# ---- report ---------------------------------------------------------------------------

def kib(kb):
    return "—" if kb is None else f"{kb:,} kB"


def table(results):
    out = ["| arch | stripped size | idle VmRSS (smaps Rss) | idle Private_Dirty | peak VmHWM 2 KB×4 (sampled smaps Rss) "
           "| peak VmHWM 20 MB (sampled smaps Rss) "
           "| peak Private_Dirty 2 KB×4 / 20 MB | wake-ups/min idle | wake-ups/min idle, watchdog | bytes written idle "
           "(wchar/syscw; with watchdog) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(
            f"| {r['arch']} | {r['stripped_bytes']:,} B | {kib(r['idle_VmRSS_kB'])} ({kib(r['idle_smaps_Rss_kB'])}) "
            f"| {kib(r['idle_Private_Dirty_kB'])} "
            f"| {kib(r['small_peak_VmHWM_kB'])} ({kib(r['small_peak_smaps_Rss_kB'])}) "
            f"| {kib(r['big_peak_VmHWM_kB'])} ({kib(r['big_peak_smaps_Rss_kB'])}) "
            f"| {kib(r['small_peak_Private_Dirty_kB'])} / {kib(r['big_peak_Private_Dirty_kB'])} "
            f"| {r['wakeups_per_min_idle']:g} | {r['wakeups_per_min_watchdog']:g} "
            f"({r['watchdog_pings_per_min']:g} pings) "
            f"| {r['wchar_idle']} B / {r['syscw_idle']} calls; {r['wchar_idle_watchdog']} B / "
            f"{r['syscw_idle_watchdog']} calls |")
    return "\n".join(out)


def breakdown_table(rows):
    out = ["| mapping | Rss | Private_Dirty | of it relro | .data | .bss | other | Private_Clean | Shared |",
           "|---|---|---|---|---|---|---|---|---|"]
    tot = dict(Rss=0, Private_Dirty=0, relro=0, data=0, bss=0, other=0, Private_Clean=0, Shared=0)
    for name, r in sorted(rows, key=lambda x: -x[1]["Private_Dirty"]):
        label = name + (" (libsystemd's dependency)" if name.startswith(LIBSYSTEMD_DEPS) else "")
        out.append(f"| {label} | {r['Rss']} | **{r['Private_Dirty']}** | {r['relro']} | {r['data']} | {r['bss']} "
                   f"| {r['other']} | {r['Private_Clean']} | {r['Shared']} |")
        for k in tot:
            tot[k] += r[k]
    out.append(f"| total (kB) | {tot['Rss']} | **{tot['Private_Dirty']}** | {tot['relro']} | {tot['data']} "
               f"| {tot['bss']} | {tot['other']} | {tot['Private_Clean']} | {tot['Shared']} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", choices=list(ARCHES),
                   help="x86_64, aarch64 or armv7 (repeatable; default: all three)")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "build"),
                   help="where postern, aarch64/postern and armv7/postern are (default: <repo>/build)")
    p.add_argument("--work", default=os.path.join(ROOT, "build", "bench-board"),
                   help="cache of kernels, busybox, initramfs, transcripts (default: <repo>/build/bench-board)")
    p.add_argument("--idle-seconds", type=int, default=60)
    p.add_argument("--settle", type=int, default=5, help="seconds after listening before the idle snapshot")
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--small", type=int, default=2048, help="bytes per small message")
    p.add_argument("--big", type=int, default=20 * 1024 * 1024, help="bytes of the big message")
    p.add_argument("--no-install", action="store_true", help="do not run Tests/tools/ensure-debs")
    opts = p.parse_args()
    arches = opts.arch or list(ARCHES)
    work = os.path.abspath(opts.work)
    os.makedirs(work, exist_ok=True)
    if not opts.no_install:
        run([ENSURE_DEBS] + DEBS)

    results = []
    for arch in arches:
        a = ARCHES[arch]
        src = os.path.join(opts.bin_dir, a["bin"])
        wait_for_binary(src)
        os.makedirs(os.path.join(work, arch), exist_ok=True)
        binary = os.path.join(work, arch, "postern")
        shutil.copy2(src, binary)   # a rebuild during the run does not change what is measured
        # Written back now: a mapped page still dirty in the page cache counts as Private_Dirty.
        with open(binary, "rb") as f:
            os.fsync(f.fileno())
        if arch == "x86_64":
            lines, meta = run_native(arch, a, work, opts)
        else:
            lines, meta = run_vm(arch, a, work, opts)
        sections, kv = parse(lines)
        r = analyse(arch, a, sections, kv, meta, binary, opts)
        r["source"] = src
        results.append(r)
        log(f"{arch}: done")

    print(f"## Board footprint (`{' '.join(['Tests/bench/board_footprint.py'] + sys.argv[1:])}`)\n")
    print(table(results))
    print()
    for r in results:
        print(f"- {r['arch']}: {r['machine']}, kernel {r['kernel']}; spool on {r['spool']}; "
              f"{r['source']} ({r['binary_bytes']:,} B as built, {r['stripped_bytes']:,} B stripped again); "
              f"idle window {r['idle_window_s']} s, watchdog WATCHDOG_USEC={r['watchdog_usec']}; "
              f"idle VmHWM {r['idle_VmHWM_kB']} kB, Pss {r['idle_Pss_kB']} kB, Private_Clean "
              f"{r['idle_Private_Clean_kB']} kB, Shared_Clean {r['idle_Shared_Clean_kB']} kB, Shared_Dirty "
              f"{r['idle_Shared_Dirty_kB']} kB; after relaying: VmRSS {r['after_VmRSS_kB']} kB, Private_Dirty "
              f"{r['after_Private_Dirty_kB']} kB; idle with the watchdog: Private_Dirty {r['wd_idle_Private_Dirty_kB']} kB; "
              f"{r['delivered']} messages delivered to the sink; {r['load_small']}; {r['load_big']}")
    print()
    for r in results:
        compact = {k: v for k, v in r.items() if not k.startswith("breakdown")}
        print(json.dumps(compact, sort_keys=True))
    for r in results:
        print(f"\n### {r['arch']}: idle Private_Dirty per mapping (kB, /proc/PID/smaps)\n")
        print(breakdown_table(r["breakdown_idle"]))
        print(f"\n### {r['arch']}: the same after relaying (kB)\n")
        print(breakdown_table(r["breakdown_after"]))


if __name__ == "__main__":
    main()
