"""What an installation needs (Deploy/): the systemd units, sysusers.d and
tmpfiles.d entries, the journal catalog, the example configuration, the man
pages, `make install` and `make deb`.

The package is never installed on this machine: it conflicts with every other
mail transport agent, so apt would remove the one this machine has. Every test
that installs it does so in a throwaway Debian 12 root (`debian_root`): a base
made once with `debootstrap --variant=minbase bookworm` under build/ and kept
while its recipe does not change (a stamp), under an overlay whose writable
layer is a tmpfs, so each use starts from the same base and leaves nothing
behind. This needs root (mount, chroot) and Debian's mirror the first time.
test_mta_package.py uses the same roots.
"""

import contextlib
import functools
import gzip
import hashlib
import inspect
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ARCH, EMULATED, POSTERN_BIN, REPO, TARGET

DEPLOY = REPO / "Deploy"
BUILT_BIN = REPO / "build" / "postern"

MESSAGE_IDS_SWIFT = REPO / "Sources" / "PosternCore" / "MessageIDs.swift"


def run(args, timeout=120, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def make(*targets_and_vars, timeout=300, expect_ok=True):
    """Runs make in the repository, without the variables of an outer make (so
    `make check` running this suite does not leak its command line in). The
    binary is packaged as built (`-o build/postern`): it is never rebuilt under
    the feet of the other tests of the suite."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                                                             "DESTDIR", "PREFIX", "SENDMAIL_LINKS")}
    assert BUILT_BIN.is_file(), "build/postern is missing: make build"
    res = run(["make", "--no-print-directory", "-o", "build/postern", *targets_and_vars], timeout=timeout,
              cwd=REPO, env=env)
    if expect_ok:
        assert res.returncode == 0, \
            f"make {' '.join(targets_and_vars)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed (make check installs it)")


def message_ids() -> dict:
    """name -> MESSAGE_ID, from the daemon's own source."""
    ids = dict(re.findall(r'static let (\w+) = "([0-9a-f]{32})"', MESSAGE_IDS_SWIFT.read_text()))
    assert len(ids) >= 12, ids
    return ids


def built_version() -> str:
    res = run([POSTERN_BIN if EMULATED else str(BUILT_BIN), "version"])
    assert res.returncode == 0, res
    return res.stdout.split()[1]


def unit_settings(path: Path) -> dict:
    """section.key -> [values] of a unit file (keys may repeat)."""
    out, section = {}, ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k.strip()}", []).append(v.strip())
    return out


# --------------------------------------------------------------------------------
# the files in Deploy/ themselves


def test_service_unit_matches_what_the_daemon_does():
    u = unit_settings(DEPLOY / "postern.service")
    one = {k: v[-1] for k, v in u.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.ExecStart"] == "/usr/sbin/postern run --config /etc/postern/postern.conf"
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Service.WatchdogSec"] == "30s"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.User"] == one["Service.Group"] == "postern"
    assert one["Service.RuntimeDirectory"] == "postern"
    assert one["Service.ReadWritePaths"] == "/var/spool/postern"
    # Socket-activated by default: no capability at all.
    assert u["Service.CapabilityBoundingSet"] == [""]
    assert "Service.AmbientCapabilities" not in u
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    # The daemon reads the clock-synchronised flag with adjtimex(2) (glibc: the
    # clock_adjtime system call): it must stay allowed, and ProtectClock= would
    # block it.
    allowed = " ".join(u["Service.SystemCallFilter"]).split()
    assert "@system-service" in allowed and "clock_adjtime" in allowed and "adjtimex" in allowed
    assert "Service.ProtectClock" not in u
    assert one["Service.MemoryMax"] == "64M"
    assert one["Install.WantedBy"] == "multi-user.target"
    assert one["Install.Also"] == "postern.socket"


def test_socket_unit_passes_loopback_port_25_and_the_submission_socket():
    u = unit_settings(DEPLOY / "postern.socket")
    # The daemon tells the unix socket (sendmail's) from the TCP ones by its family.
    assert u["Socket.ListenStream"] == ["127.0.0.1:25", "[::1]:25", "/run/postern/submit"]
    assert u["Socket.SocketMode"] == ["0666"]
    assert u["Socket.FileDescriptorName"] == ["smtp"]
    assert u.get("Socket.Accept", ["no"]) == ["no"]
    assert u["Install.WantedBy"] == ["sockets.target"]


def test_example_config_is_valid_and_sets_every_key():
    conf = DEPLOY / "postern.conf"
    res = run([POSTERN_BIN, "check-config", "--config", str(conf)])
    assert res.returncode == 0, res.stderr
    # Every key check-config prints (the effective settings, every default filled
    # in) is in the example, set (or, for those without a default, commented out).
    keys = re.findall(r"^(\w+) = ", res.stdout, re.MULTILINE)
    text = conf.read_text()
    for key in keys + ["envelope_from", "rewrite_from", "rewrite_to", "username", "password_file", "password_command",
                       "fingerprint", "client_cert", "client_key", "ca_file", "drop_dir", "postmaster",
                       "tls_cert", "tls_key", "tls_min_version", "require_tls", "listen_tls", "auth_users"]:
        assert re.search(rf"^#?{key} = ", text, re.MULTILINE), f"{key} is not in Deploy/postern.conf"
    for section in ("local", "aliases", "notify"):
        assert re.search(rf"^\[{section}\]", text, re.MULTILINE), f"[{section}] is not in Deploy/postern.conf"


def test_man_pages_render_without_warnings():
    need("man")
    for page in ("postern.8", "postern.conf.5"):
        res = run(["man", "--warnings", "-l", str(DEPLOY / page)], env={**os.environ, "MANWIDTH": "80"})
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", f"{page}:\n{res.stderr}"
        assert "POSTERN" in res.stdout


def test_man_pages_cover_every_config_key_and_message_id():
    res = run([POSTERN_BIN, "check-config", "--config", str(DEPLOY / "postern.conf")])
    keys = set(re.findall(r"^(\w+) = ", res.stdout, re.MULTILINE)) | {"envelope_from"}
    conf5 = (DEPLOY / "postern.conf.5").read_text()
    for key in keys:
        assert re.search(rf"^\.BR {key} ", conf5, re.MULTILINE), f"{key} is not described in postern.conf.5"
    man8 = (DEPLOY / "postern.8").read_text()
    for name, mid in message_ids().items():
        assert mid in man8, f"MESSAGE_ID {name} ({mid}) is not in postern.8"


def test_catalog_has_every_message_id_and_compiles():
    need("journalctl")
    ids = message_ids()
    text = (DEPLOY / "postern.catalog").read_text()
    entries = re.findall(r"^-- ([0-9a-f]{32})$", text, re.MULTILINE)
    assert sorted(entries) == sorted(ids.values())
    with tempfile.TemporaryDirectory(prefix="pcat-") as root:
        catdir = Path(root, "usr/lib/systemd/catalog")
        catdir.mkdir(parents=True)
        shutil.copy(DEPLOY / "postern.catalog", catdir)
        res = run(["journalctl", f"--root={root}", "--update-catalog"])
        assert res.returncode == 0 and res.stderr == "", res
        res = run(["journalctl", f"--root={root}", "--list-catalog"])
        assert res.returncode == 0, res
        listed = dict(line.split(" ", 1) for line in res.stdout.splitlines())
        assert sorted(listed) == sorted(ids.values())
        assert all(v.startswith("postern: ") for v in listed.values()), listed


# --------------------------------------------------------------------------------
# make install


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _mta_links(prefix: str) -> dict:
    """The links that make Postern the system's MTA: path -> link text (relative,
    as Debian ships links, Policy §10.5). /usr/lib/sendmail, the historical path,
    only with PREFIX=/usr (see the Makefile)."""
    links = {
        f"{prefix}/sbin/sendmail": "postern",
        f"{prefix}/bin/mailq": "../sbin/postern",
        f"{prefix}/bin/newaliases": "../sbin/postern",
        f"{prefix}/share/man/man8/sendmail.8.gz": "postern.8.gz",
        f"{prefix}/share/man/man8/mailq.8.gz": "postern.8.gz",
        f"{prefix}/share/man/man8/newaliases.8.gz": "postern.8.gz",
    }
    if prefix == "/usr":
        links["/usr/lib/sendmail"] = "../sbin/postern"
    return links


def _tree(d: Path) -> tuple[set, dict]:
    """The regular files under d, and its symbolic links with their text, as
    absolute paths of the installed system."""
    files = {"/" + str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.is_symlink()}
    links = {"/" + str(p.relative_to(d)): os.readlink(p) for p in d.rglob("*") if p.is_symlink()}
    return files, links


@pytest.mark.parametrize("prefix, unitdir", [("/usr", "/lib/systemd/system"),
                                             ("/usr/local", "/usr/local/lib/systemd/system")])
def test_make_install_into_destdir(prefix, unitdir):
    with tempfile.TemporaryDirectory(prefix="pinst-") as tmp:
        d = Path(tmp)
        make("install", f"DESTDIR={d}", f"PREFIX={prefix}")
        lib = f"{prefix}/lib"
        expected = {
            f"{prefix}/sbin/postern": 0o755,
            f"{unitdir}/postern.service": 0o644,
            f"{unitdir}/postern.socket": 0o644,
            f"{lib}/sysusers.d/postern.conf": 0o644,
            f"{lib}/tmpfiles.d/postern.conf": 0o644,
            f"{lib}/systemd/catalog/postern.catalog": 0o644,
            f"{prefix}/share/man/man8/postern.8.gz": 0o644,
            f"{prefix}/share/man/man5/postern.conf.5.gz": 0o644,
            "/etc/postern/postern.conf": 0o644,
        }
        files, links = _tree(d)
        assert files == set(expected), files ^ set(expected)
        for path, mode in expected.items():
            assert _mode(d / path.lstrip("/")) == mode, path
        # sendmail, mailq and newaliases are the binary (it acts on argv[0]),
        # and their man pages postern(8).
        assert links == _mta_links(prefix)
        for link in links:
            target = (d / link.lstrip("/")).resolve()
            assert target in (d / f"{prefix}/sbin/postern".lstrip("/"),
                              d / f"{prefix}/share/man/man8/postern.8.gz".lstrip("/")), link

        assert (d / f"{prefix}/sbin/postern".lstrip("/")).read_bytes() == BUILT_BIN.read_bytes()
        service = (d / f"{unitdir}/postern.service".lstrip("/")).read_text()
        assert f"ExecStart={prefix}/sbin/postern run --config /etc/postern/postern.conf\n" in service
        assert (d / "etc/postern/postern.conf").read_text() == (DEPLOY / "postern.conf").read_text()
        with gzip.open(d / f"{prefix}/share/man/man8/postern.8.gz".lstrip("/"), "rt") as f:
            assert f.read() == (DEPLOY / "postern.8").read_text()

        # The sysusers and tmpfiles entries work in that root: the user, then the
        # spool owned by it, mode 0711, and sendmail's drop directory in it,
        # 3733 (setgid and sticky, drwx-ws-wt).
        if shutil.which("systemd-sysusers") and prefix == "/usr":
            res = run(["systemd-sysusers", f"--root={d}", "postern.conf"])
            assert res.returncode == 0, res
            passwd = (d / "etc/passwd").read_text()
            m = re.search(r"^postern:x:(\d+):(\d+):[^:]*:/var/spool/postern:/usr/sbin/nologin$", passwd, re.MULTILINE)
            assert m, passwd
            res = run(["systemd-tmpfiles", f"--root={d}", "--create", "postern.conf"])
            assert res.returncode == 0, res
            for path, mode in (("var/spool/postern", 0o711), ("var/spool/postern/maildrop", 0o3733)):
                st = (d / path).stat()
                assert (st.st_uid, st.st_gid) == (int(m[1]), int(m[2])), path
                assert _mode(d / path) == mode, f"{path}: {oct(_mode(d / path))}"

        # A second install keeps an edited configuration, and replaces its own links.
        (d / "etc/postern/postern.conf").write_text("# edited\n")
        make("install", f"DESTDIR={d}", f"PREFIX={prefix}")
        assert (d / "etc/postern/postern.conf").read_text() == "# edited\n"
        assert _tree(d)[1] == _mta_links(prefix)


def test_make_install_with_sendmail_links_no_makes_no_links():
    with tempfile.TemporaryDirectory(prefix="pinst-") as tmp:
        d = Path(tmp)
        make("install", f"DESTDIR={d}", "PREFIX=/usr", "SENDMAIL_LINKS=no")
        files, links = _tree(d)
        assert links == {}
        assert "/usr/sbin/postern" in files
        assert not [f for f in files if re.search(r"sendmail|mailq|newaliases", f)], files


def test_make_install_refuses_to_replace_another_mtas_sendmail():
    """A `make install` onto a system with another MTA stops before installing
    anything rather than write over a file its package owns."""
    with tempfile.TemporaryDirectory(prefix="pinst-") as tmp:
        d = Path(tmp)
        other = d / "usr/sbin/sendmail"
        other.parent.mkdir(parents=True)
        other.write_text("#!/bin/sh\n# another MTA's sendmail\n")
        res = make("install", f"DESTDIR={d}", "PREFIX=/usr", expect_ok=False)
        assert res.returncode != 0, res.stdout
        assert f"{other} exists and is not Postern's" in res.stderr and "SENDMAIL_LINKS=no" in res.stderr, res.stderr
        assert other.read_text() == "#!/bin/sh\n# another MTA's sendmail\n"
        assert not (d / "usr/sbin/postern").exists()
        # With SENDMAIL_LINKS=no the rest installs beside it.
        make("install", f"DESTDIR={d}", "PREFIX=/usr", "SENDMAIL_LINKS=no")
        assert (d / "usr/sbin/postern").is_file() and not other.is_symlink()


# --------------------------------------------------------------------------------
# make deb


@pytest.fixture(scope="module")
def deb():
    """build/postern_<version>_<arch>.deb, (path, version, arch)."""
    return _built_deb()


@functools.cache
def _built_deb():
    """`make deb`, once per run (test_mta_package.py imports the fixture); in a
    board run (`make board-check ARCH=…`) `make deb ARCH=…`, the board's package."""
    need("dpkg-deb", "dpkg-shlibdeps")
    if EMULATED:
        make("deb", f"ARCH={ARCH}", "-o", f"build/{ARCH}/postern")
        arch = TARGET["deb"]
    else:
        make("deb")
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    version = built_version()
    path = REPO / "build" / f"postern_{version}_{arch}.deb"
    assert path.is_file(), sorted(p.name for p in (REPO / "build").glob("*.deb"))
    return path, version, arch


@pytest.mark.board
def test_deb_control_and_contents(deb):
    path, version, arch = deb
    info = run(["dpkg-deb", "--info", str(path)])
    assert info.returncode == 0, info
    fields = dict(re.findall(r"^ (\S+): (.*)$", info.stdout, re.MULTILINE))
    assert fields["Package"] == "postern"
    assert fields["Version"] == version
    assert fields["Architecture"] == arch
    assert fields["Section"] == "mail" and fields["Priority"] == "optional"
    depends = [d.split()[0] for d in fields["Depends"].split(", ")]
    # procps: the unit's ExecReload runs /bin/kill.
    assert {"libc6", "libssl3", "libsystemd0", "procps"} <= set(depends), fields["Depends"]
    # A mail transport agent as Debian's MTA packages declare it (Policy §7.5,
    # §7.6.2, §11.6): it provides the virtual package and conflicts with and
    # replaces every other provider, so installing one removes the other.
    assert fields["Provides"] == fields["Conflicts"] == fields["Replaces"] == "mail-transport-agent", fields
    assert "does not provide /usr/sbin/sendmail" not in info.stdout
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info.stdout, re.MULTILINE), script
    contents = run(["dpkg-deb", "--contents", str(path)])
    assert contents.returncode == 0, contents
    entries, links = {}, {}
    for line in contents.stdout.splitlines():
        perms, owner, _size, _date, _time, name = line.split(None, 5)
        if perms.startswith("l"):
            name, _, target = name.partition(" -> ")
            links[name.removeprefix(".")] = target
        entries[name.removeprefix(".")] = (perms, owner)
    expected = {
        "/usr/sbin/postern": "-rwxr-xr-x",
        "/lib/systemd/system/postern.service": "-rw-r--r--",
        "/lib/systemd/system/postern.socket": "-rw-r--r--",
        "/usr/lib/sysusers.d/postern.conf": "-rw-r--r--",
        "/usr/lib/tmpfiles.d/postern.conf": "-rw-r--r--",
        "/usr/lib/systemd/catalog/postern.catalog": "-rw-r--r--",
        "/etc/postern/postern.conf": "-rw-r--r--",
        "/usr/share/man/man8/postern.8.gz": "-rw-r--r--",
        "/usr/share/man/man5/postern.conf.5.gz": "-rw-r--r--",
        "/usr/share/doc/postern/copyright": "-rw-r--r--",
        "/usr/share/doc/postern/changelog.gz": "-rw-r--r--",
    }
    files = {n for n, (p, _) in entries.items() if p.startswith("-")}
    assert files == set(expected), files ^ set(expected)
    for name, perms in expected.items():
        assert entries[name] == (perms, "root/root"), (name, entries[name])
    assert links == _mta_links("/usr"), links
    assert all(entries[n] == ("lrwxrwxrwx", "root/root") for n in links)
    assert all(p == "drwxr-xr-x" and o == "root/root" for p, o in entries.values() if p.startswith("d"))
    assert set(entries) == files | set(links) | {n for n, (p, _) in entries.items() if p.startswith("d")}

    # The binary is the architecture's, and runs (under qemu-user for a board).
    with tempfile.TemporaryDirectory(prefix="pbin-") as tmp:
        assert run(["dpkg-deb", "--extract", str(path), tmp]).returncode == 0
        binary = Path(tmp, "usr/sbin/postern")
        assert int.from_bytes(binary.read_bytes()[18:20], "little") == TARGET["elf"], "ELF e_machine"
        res = run(TARGET["run"] + [str(binary), "version"])
        assert res.returncode == 0 and res.stdout == f"postern {version}\n", res

    with tempfile.TemporaryDirectory(prefix="pctl-") as tmp:
        res = run(["dpkg-deb", "--control", str(path), tmp])
        assert res.returncode == 0, res
        assert Path(tmp, "conffiles").read_text().split() == ["/etc/postern/postern.conf"]
        for script in ("postinst", "prerm", "postrm"):
            assert _mode(Path(tmp, script)) == 0o755
            assert run(["sh", "-n", str(Path(tmp, script))]).returncode == 0


# --------------------------------------------------------------------------------
# a throwaway Debian 12 root (see the module docstring)

CHROOT_DIR = REPO / "build" / "debian-chroot"
CHROOT_BASE = CHROOT_DIR / "base"
CHROOT_STAMP = CHROOT_DIR / "base.stamp"
CHROOT_SUITE = "bookworm"
# Installed in the base beyond minbase: what the package depends on (libc6 and
# libsystemd0 are already there), systemd (journalctl, systemd-analyze,
# systemd-sysusers, systemd-tmpfiles) and man-db (man -w) for the checks.
CHROOT_INCLUDE = ("libssl3", "procps", "systemd", "man-db")
# Only downloaded into the base's apt cache: another MTA, which a test installs
# and then sees replaced by Postern, without the network.
CHROOT_CACHED = ("nullmailer",)
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# A base older than this is made again: its apt lists would name packages the
# mirror has replaced since (a point release), should a test need one more.
CHROOT_MAX_AGE_DAYS = 30


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.*)$", stanza, re.MULTILINE))
            if CHROOT_SUITE in fields.get("Suites", "").split() and "Types" in fields \
                    and "deb" in fields["Types"].split() and fields.get("Enabled", "yes") != "no":
                return fields["URIs"].split()[0]
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if f.is_file():
            m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{CHROOT_SUITE}\s", f.read_text(), re.MULTILINE)
            if m:
                return m[1]
    return "http://deb.debian.org/debian"


def _mounts_under(path: Path) -> list:
    """Mount points at or under path (/proc/self/mountinfo, field 5; octal escapes)."""
    top = str(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point == top or point.startswith(top + "/"):
            points.append(point)
    return points


def _kill_processes_under(root: Path):
    """Kills what still runs inside the root (a daemon a maintainer script
    started despite policy-rc.d would keep its mounts busy)."""
    top = str(root)
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            r = os.readlink(p / "root")
        except OSError:
            continue
        if r == top or r.startswith(top + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)


def _unmount_all_under(path: Path):
    """Unmounts everything at or under path, deepest first; lazily if busy."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        if run(["umount", point]).returncode != 0:
            run(["umount", "--lazy", point])
    assert not _mounts_under(path), _mounts_under(path)


def _remove_tree(path: Path):
    """rm -rf that never descends into a mount (/proc, an overlay)."""
    _unmount_all_under(path)
    if path.exists():
        shutil.rmtree(path)


def _chroot(root: Path, *args, timeout=300, **kw):
    env = ["PATH=" + CHROOT_PATH, "LC_ALL=C.UTF-8", "HOME=/root", "DEBIAN_FRONTEND=noninteractive"]
    return run(["chroot", str(root), "/usr/bin/env", "-i", *env, *args], timeout=timeout,
               stdin=subprocess.DEVNULL, **kw)


@contextlib.contextmanager
def _proc_mounted(root: Path):
    """/proc in the root, which dpkg, apt and the maintainer scripts read; the
    device nodes are debootstrap's own in the base's /dev. Unmounted whatever
    happens."""
    try:
        res = run(["mount", "-t", "proc", "proc", str(root / "proc")])
        assert res.returncode == 0, res
        yield
    finally:
        _kill_processes_under(root)
        _unmount_all_under(root / "proc")


def _build_base(mirror: str):
    """debootstrap into base.new, then a rename: an interrupted build leaves no
    base that looks complete."""
    new = CHROOT_DIR / "base.new"
    _remove_tree(new)
    # Two stages (download and unpack, then configure) so that dpkg is told
    # in between not to sync each file it writes: the configure stage takes
    # a quarter less time, and nothing here must survive a power cut.
    res = run(["debootstrap", "--foreign", "--variant=minbase", "--include=" + ",".join(CHROOT_INCLUDE),
               CHROOT_SUITE, str(new), mirror], timeout=1800)
    assert res.returncode == 0, f"debootstrap from {mirror} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    (new / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
    res = _chroot(new, "/debootstrap/debootstrap", "--second-stage", timeout=1800)
    assert res.returncode == 0, f"debootstrap --second-stage failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    # No maintainer script may start a daemon in the root (invoke-rc.d asks
    # policy-rc.d; 101 is "action forbidden").
    policy = new / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # The package lists only (no translations); Recommends are installed, as
    # on any Debian system, which is what the MTA tests must see.
    (new / "etc/apt/apt.conf.d/90postern-tests").write_text(
        'Acquire::Languages "none";\nAPT::Install-Recommends "true";\n')
    with _proc_mounted(new):
        # debootstrap's own .debs out of the cache first; the lists, apt's
        # binary cache of them (so that each use does not remake it), and
        # the cached packages stay.
        for args in (["apt-get", "clean"], ["apt-get", "-q", "update"],
                     ["apt-get", "-q", "-y", "install", "--download-only", *CHROOT_CACHED]):
            res = _chroot(new, *args)
            assert res.returncode == 0, f"{args}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    new.rename(CHROOT_BASE)


def debian_base() -> Path:
    """The base root, built unless one with the same recipe (suite, mirror,
    packages and the code of _build_base), younger than CHROOT_MAX_AGE_DAYS,
    is there already. The tests plan from its apt lists and install from its
    cache and build/, without the network."""
    if os.geteuid() != 0:
        pytest.skip("the package tests need root (mount, chroot)")
    need("debootstrap", "chroot", "mount", "umount")
    mirror = debian_mirror()
    recipe = "\n".join([CHROOT_SUITE, mirror, *CHROOT_INCLUDE, "cached:", *CHROOT_CACHED,
                        inspect.getsource(_build_base), inspect.getsource(_chroot)])
    stamp = hashlib.sha256(recipe.encode()).hexdigest()
    if CHROOT_BASE.is_dir() and CHROOT_STAMP.is_file() and CHROOT_STAMP.read_text().strip() == stamp \
            and time.time() - CHROOT_STAMP.stat().st_mtime < CHROOT_MAX_AGE_DAYS * 86400:
        return CHROOT_BASE
    CHROOT_DIR.mkdir(parents=True, exist_ok=True)
    CHROOT_STAMP.unlink(missing_ok=True)
    _unmount_all_under(CHROOT_DIR)    # overlays of the old base a killed run left
    _remove_tree(CHROOT_BASE)
    started = time.monotonic()
    _build_base(mirror)
    CHROOT_STAMP.write_text(stamp + "\n")
    print(f"built {CHROOT_BASE} from {mirror} in {time.monotonic() - started:.0f} s")
    return CHROOT_BASE


class DebianRoot:
    """One throwaway root: the base under an overlay whose upper layer is a
    tmpfs, /proc mounted. What is done in it is gone when it closes."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def run(self, *args, timeout=300):
        return _chroot(self.root, *args, timeout=timeout)

    def ok(self, *args, timeout=300) -> str:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"{' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res.stdout

    def apt(self, *args):
        """apt-get in the root (without the network: -s plans from the base's
        lists, and what is installed is in the base's cache or a path)."""
        return self.ok("apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args)

    def put(self, host_file: Path) -> str:
        """Copies a file into the root's /tmp; returns its path there."""
        shutil.copy(host_file, self.path("/tmp"))
        return f"/tmp/{host_file.name}"

    def status(self, package: str) -> str:
        res = self.run("dpkg-query", "-W", "-f=${Status}", package)
        return res.stdout if res.returncode == 0 else ""


@contextlib.contextmanager
def debian_root(name: str):
    base = debian_base()
    top = CHROOT_DIR / f"run-{name}"
    root = top / "root"
    _remove_tree(top)    # what a killed run left (mounts included)
    top.mkdir(parents=True)
    try:
        res = run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=2g", f"postern-{name}", str(top)])
        assert res.returncode == 0, res
        for d in ("upper", "work", "root"):
            (top / d).mkdir()
        res = run(["mount", "-t", "overlay", f"postern-{name}", "-o",
                   f"lowerdir={base},upperdir={top}/upper,workdir={top}/work", str(root)])
        if res.returncode != 0:
            # No overlayfs here: a copy of the base in the tmpfs (a few seconds).
            copy = run(["cp", "-a", f"{base}/.", str(root)], timeout=600)
            assert copy.returncode == 0, (res, copy)
        with _proc_mounted(root):
            yield DebianRoot(root)
    finally:
        _kill_processes_under(root)
        _remove_tree(top)


# --------------------------------------------------------------------------------
# the package installed in a throwaway root


@pytest.fixture(scope="module")
def installed(deb):
    """The package installed with apt-get in a throwaway Debian 12 root."""
    path, version, _ = deb
    with debian_root("deploy") as root:
        root.apt("install", root.put(path))
        yield root, version


def _owner_mode(root: DebianRoot, path: str):
    st = root.path(path).lstat()
    return st.st_uid, st.st_gid, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)


def _spool_as_expected(root: DebianRoot):
    """The spool 0711 and sendmail's drop directory 3733 (setgid, sticky,
    drwx-ws-wt), both postern:postern."""
    name, _, uid, gid, _gecos, home, shell = root.ok("getent", "passwd", "postern").strip().split(":")
    assert (home, shell) == ("/var/spool/postern", "/usr/sbin/nologin")
    assert root.ok("getent", "group", "postern").split(":")[2] == gid
    ids = (int(uid), int(gid), stat.S_IFDIR)
    assert _owner_mode(root, "/var/spool/postern") == (*ids, 0o711)
    assert _owner_mode(root, "/var/spool/postern/maildrop") == (*ids, 0o3733)
    assert stat.filemode(root.path("/var/spool/postern/maildrop").stat().st_mode) == "drwx-ws-wt"


def test_deb_installs_user_spool_catalog_and_config(installed):
    root, version = installed
    assert root.ok("/usr/sbin/postern", "version") == f"postern {version}\n"
    _spool_as_expected(root)
    root.ok("/usr/sbin/postern", "check-config", "--config", "/etc/postern/postern.conf")

    listed = root.ok("journalctl", "--list-catalog")
    for name, mid in message_ids().items():
        assert re.search(rf"^{mid} postern: ", listed, re.MULTILINE), f"{name} ({mid}) is not in the catalog"

    assert root.ok("man", "-w", "postern").strip() == "/usr/share/man/man8/postern.8.gz"
    assert root.ok("man", "-w", "5", "postern.conf").strip() == "/usr/share/man/man5/postern.conf.5.gz"


def test_units_verify_silently(installed):
    """systemd-analyze verify checks that ExecStart's binary, ExecReload's
    /bin/kill and the Documentation= man pages exist, so it runs in the root
    with the package installed: on the installed units and on Deploy/'s own."""
    root, _ = installed
    root.path("/tmp/deploy").mkdir(exist_ok=True)
    for unit in ("postern.service", "postern.socket"):
        shutil.copy(DEPLOY / unit, root.path("/tmp/deploy"))
    for units in (["/lib/systemd/system/postern.service", "/lib/systemd/system/postern.socket"],
                  ["/tmp/deploy/postern.service", "/tmp/deploy/postern.socket"]):
        res = root.run("systemd-analyze", "verify", *units)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), units


def test_reinstall_keeps_an_edited_config_and_updates_the_spool(installed, deb):
    root, _ = installed
    conf = root.path("/etc/postern/postern.conf")
    edited = conf.read_text().replace("host = smtp.example.com", "host = 127.0.0.1")
    assert edited != conf.read_text()
    conf.write_text(edited)
    # The spool as version 0.1.0 left it: 0700 and no drop directory.
    root.ok("rmdir", "/var/spool/postern/maildrop")
    root.ok("chmod", "0700", "/var/spool/postern")
    # The postinst's upgrade path (configure with the old version) runs too.
    root.apt("install", "--reinstall", root.put(deb[0]))
    assert conf.read_text() == edited
    _spool_as_expected(root)


def test_purge_leaves_nothing_but_the_user(installed):
    # Runs last in this file (pytest keeps the file's order).
    root, _ = installed
    root.path("/var/spool/postern/leftover").write_text("x")
    root.apt("purge", "postern")
    assert root.status("postern") in ("", "unknown ok not-installed"), root.status("postern")
    for p in ("/usr/sbin/postern", "/etc/postern", "/var/spool/postern", "/lib/systemd/system/postern.service",
              "/lib/systemd/system/postern.socket", "/usr/lib/systemd/catalog/postern.catalog",
              *_mta_links("/usr")):
        assert not os.path.lexists(root.path(p)), p
    # deb-systemd-helper's record of the units' [Install] links is gone too.
    for state in ("/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/systemd/deb-systemd-helper-masked"):
        assert not list(root.path(state).rglob("postern*")), state
    assert " postern: " not in root.ok("journalctl", "--list-catalog")
    # The system user stays, as Debian leaves every system user.
    assert root.run("getent", "passwd", "postern").returncode == 0


def test_postinst_without_systemd_makes_the_same_user_and_spool(deb):
    """In a container without systemd-sysusers and systemd-tmpfiles (diverted
    away here), the postinst makes the user with useradd and the spool and its
    drop directory itself."""
    with debian_root("nosystemd") as root:
        for tool in ("systemd-sysusers", "systemd-tmpfiles"):
            path = next(p for p in root.ok("dpkg", "-L", "systemd").split() if p.endswith("/" + tool))
            root.ok("dpkg-divert", "--local", "--rename", "--divert", f"{path}.away", "--add", path)
        assert root.run("sh", "-c", "command -v systemd-sysusers || command -v systemd-tmpfiles").returncode != 0
        root.apt("install", root.put(deb[0]))
        _spool_as_expected(root)
        assert root.ok("getent", "passwd", "postern").split(":")[4] == "Postern SMTP mail forwarder"
