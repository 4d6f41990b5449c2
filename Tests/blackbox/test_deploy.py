"""What an installation needs (Deploy/): the systemd units, sysusers.d and
tmpfiles.d entries, the journal catalog, the example configuration, the man
pages, `make install` and `make deb`.

The package test installs build/postern_*.deb on this machine with apt-get and
purges it afterwards (CI runs on a throwaway machine as root; so does a
developer). It leaves the machine as it found it except for the system user
`postern`, which a purge keeps as Debian does for every system user. It refuses
to touch a `postern` package that it did not install itself, and cleans up after
a previous run that stopped midway (it leaves a marker file while its package is
installed).
"""

import gzip
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import POSTERN_BIN, REPO

DEPLOY = REPO / "Deploy"
BUILT_BIN = REPO / "build" / "postern"
# Left while the test's package is installed; see the module docstring.
MARKER = Path("/var/tmp/postern-test_deploy.installed")

MESSAGE_IDS_SWIFT = REPO / "Sources" / "PosternCore" / "MessageIDs.swift"


def run(args, timeout=120, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def make(*targets_and_vars, timeout=300):
    """Runs make in the repository, without the variables of an outer make (so
    `make check` running this suite does not leak its command line in). The
    binary is packaged as built (`-o build/postern`): it is never rebuilt under
    the feet of the other tests of the suite."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                                                             "DESTDIR", "PREFIX")}
    assert BUILT_BIN.is_file(), "build/postern is missing: make build"
    res = run(["make", "--no-print-directory", "-o", "build/postern", *targets_and_vars], timeout=timeout,
              cwd=REPO, env=env)
    assert res.returncode == 0, f"make {' '.join(targets_and_vars)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
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
    res = run([str(BUILT_BIN), "version"])
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


def test_socket_unit_passes_loopback_port_25_as_smtp():
    u = unit_settings(DEPLOY / "postern.socket")
    assert u["Socket.ListenStream"] == ["127.0.0.1:25", "[::1]:25"]
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
    for key in keys + ["envelope_from", "rewrite_from", "username", "password_file", "password_command",
                       "fingerprint", "client_cert", "client_key", "ca_file"]:
        assert re.search(rf"^#?{key} = ", text, re.MULTILINE), f"{key} is not in Deploy/postern.conf"
    # The settings of features not implemented yet are refused by the parser;
    # make sure none is set (they may be mentioned in comments).
    for key in ("tls_cert", "tls_key", "auth_users"):
        assert not re.search(rf"^\s*{key}\s*=", text, re.MULTILINE), key
    assert not re.search(r"^\s*\[(aliases|notify)\]", text, re.MULTILINE)


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
        files = {"/" + str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
        assert files == set(expected), files ^ set(expected)
        for path, mode in expected.items():
            assert _mode(d / path.lstrip("/")) == mode, path

        assert (d / f"{prefix}/sbin/postern".lstrip("/")).read_bytes() == BUILT_BIN.read_bytes()
        service = (d / f"{unitdir}/postern.service".lstrip("/")).read_text()
        assert f"ExecStart={prefix}/sbin/postern run --config /etc/postern/postern.conf\n" in service
        assert (d / "etc/postern/postern.conf").read_text() == (DEPLOY / "postern.conf").read_text()
        with gzip.open(d / f"{prefix}/share/man/man8/postern.8.gz".lstrip("/"), "rt") as f:
            assert f.read() == (DEPLOY / "postern.8").read_text()

        # The sysusers and tmpfiles entries work in that root: the user, then the
        # spool owned by it, mode 0700.
        if shutil.which("systemd-sysusers") and prefix == "/usr":
            res = run(["systemd-sysusers", f"--root={d}", "postern.conf"])
            assert res.returncode == 0, res
            passwd = (d / "etc/passwd").read_text()
            m = re.search(r"^postern:x:(\d+):(\d+):[^:]*:/var/spool/postern:/usr/sbin/nologin$", passwd, re.MULTILINE)
            assert m, passwd
            res = run(["systemd-tmpfiles", f"--root={d}", "--create", "postern.conf"])
            assert res.returncode == 0, res
            st = (d / "var/spool/postern").stat()
            assert (st.st_uid, st.st_gid) == (int(m[1]), int(m[2]))
            assert _mode(d / "var/spool/postern") == 0o700

        # A second install keeps an edited configuration.
        (d / "etc/postern/postern.conf").write_text("# edited\n")
        make("install", f"DESTDIR={d}", f"PREFIX={prefix}")
        assert (d / "etc/postern/postern.conf").read_text() == "# edited\n"


# --------------------------------------------------------------------------------
# make deb, and the package installed on this machine


@pytest.fixture(scope="module")
def deb():
    need("dpkg-deb", "dpkg-shlibdeps")
    make("deb")
    version = built_version()
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    path = REPO / "build" / f"postern_{version}_{arch}.deb"
    assert path.is_file(), sorted(p.name for p in (REPO / "build").glob("*.deb"))
    return path, version, arch


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
    assert {"libc6", "libssl3", "libsystemd0"} <= set(depends), fields["Depends"]
    # No /usr/sbin/sendmail yet, so no claim to be an MTA.
    assert "Provides" not in fields and "Conflicts" not in fields
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info.stdout, re.MULTILINE), script
    contents = run(["dpkg-deb", "--contents", str(path)])
    assert contents.returncode == 0, contents
    entries = {}
    for line in contents.stdout.splitlines():
        perms, owner, _size, _date, _time, name = line.split(None, 5)
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
    files = {n for n, (p, _) in entries.items() if not p.startswith("d")}
    assert files == set(expected), files ^ set(expected)
    for name, perms in expected.items():
        assert entries[name] == (perms, "root/root"), (name, entries[name])
    assert all(p == "drwxr-xr-x" and o == "root/root" for p, o in entries.values() if p.startswith("d"))

    with tempfile.TemporaryDirectory(prefix="pctl-") as tmp:
        res = run(["dpkg-deb", "--control", str(path), tmp])
        assert res.returncode == 0, res
        assert Path(tmp, "conffiles").read_text().split() == ["/etc/postern/postern.conf"]
        for script in ("postinst", "prerm", "postrm"):
            assert _mode(Path(tmp, script)) == 0o755
            assert run(["sh", "-n", str(Path(tmp, script))]).returncode == 0


def _apt(*args):
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", *args], timeout=300, env=env,
               stdin=subprocess.DEVNULL)


def _installed_status():
    res = run(["dpkg-query", "-W", "-f=${Status}", "postern"])
    return res.stdout if res.returncode == 0 else ""


def _known_to_dpkg():
    return _installed_status() not in ("", "unknown ok not-installed")


def _purge():
    if _known_to_dpkg():    # installed, or its configuration left after a remove
        res = _apt("purge", "postern")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    MARKER.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def installed(deb):
    """The package installed on this machine with apt-get, purged afterwards."""
    if os.geteuid() != 0:
        pytest.skip("installing the package needs root")
    need("apt-get", "dpkg-query")
    if _known_to_dpkg():
        if not MARKER.exists():
            pytest.skip(f"a postern package this test did not install is on this machine ({_installed_status()}); "
                        "not touching it")
        _purge()    # what a run that stopped midway left
    MARKER.write_text("installed by Tests/blackbox/test_deploy.py; purge postern if it is still here\n")
    path, version, _ = deb
    try:
        res = _apt("install", str(path))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        yield version
    finally:
        _purge()


def test_deb_installs_user_spool_catalog_and_config(installed):
    res = run(["/usr/sbin/postern", "version"])
    assert res.returncode == 0 and res.stdout == f"postern {installed}\n", res

    pw = run(["getent", "passwd", "postern"])
    assert pw.returncode == 0, pw
    name, _, uid, gid, _gecos, home, shell = pw.stdout.strip().split(":")
    assert (home, shell) == ("/var/spool/postern", "/usr/sbin/nologin")
    st = os.stat("/var/spool/postern")
    assert (st.st_uid, st.st_gid) == (int(uid), int(gid))
    assert stat.S_IMODE(st.st_mode) == 0o700

    res = run(["/usr/sbin/postern", "check-config", "--config", "/etc/postern/postern.conf"])
    assert res.returncode == 0, res

    listed = run(["journalctl", "--list-catalog"]).stdout
    for name, mid in message_ids().items():
        assert re.search(rf"^{mid} postern: ", listed, re.MULTILINE), f"{name} ({mid}) is not in the catalog"

    assert run(["man", "-w", "postern"]).stdout.strip() == "/usr/share/man/man8/postern.8.gz"
    assert run(["man", "-w", "5", "postern.conf"]).stdout.strip() == "/usr/share/man/man5/postern.conf.5.gz"


def test_units_verify_silently(installed):
    """systemd-analyze verify checks that ExecStart's binary and the
    Documentation= man pages exist, so it runs with the package installed: on
    the installed units and on Deploy/'s own."""
    need("systemd-analyze")
    for units in (["/lib/systemd/system/postern.service", "/lib/systemd/system/postern.socket"],
                  [str(DEPLOY / "postern.service"), str(DEPLOY / "postern.socket")]):
        res = run(["systemd-analyze", "verify", *units])
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), units


def test_reinstall_keeps_an_edited_config(installed, deb):
    conf = Path("/etc/postern/postern.conf")
    edited = conf.read_text().replace("host = smtp.example.com", "host = 127.0.0.1")
    assert edited != conf.read_text()
    conf.write_text(edited)
    # The postinst's upgrade path (configure with the old version) runs too.
    res = _apt("install", "--reinstall", str(deb[0]))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert conf.read_text() == edited
    assert stat.S_IMODE(os.stat("/var/spool/postern").st_mode) == 0o700


def test_purge_leaves_nothing_but_the_user(installed):
    # Runs last in this file (pytest keeps the file's order): the fixture's own
    # purge then finds nothing to do.
    Path("/var/spool/postern/leftover").write_text("x")
    _purge()
    assert not _known_to_dpkg(), _installed_status()
    for p in ("/usr/sbin/postern", "/etc/postern", "/var/spool/postern", "/lib/systemd/system/postern.service",
              "/lib/systemd/system/postern.socket", "/usr/lib/systemd/catalog/postern.catalog"):
        assert not os.path.lexists(p), p
    # deb-systemd-helper's record of the units' [Install] links is gone too.
    for state in ("/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/systemd/deb-systemd-helper-masked"):
        assert not list(Path(state).rglob("postern*")), state
    listed = run(["journalctl", "--list-catalog"]).stdout
    assert " postern: " not in listed
    # The system user stays, as Debian leaves every system user.
    assert run(["getent", "passwd", "postern"]).returncode == 0
