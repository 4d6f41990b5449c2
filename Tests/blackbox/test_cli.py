"""The command line: version, check-config, signals."""

import signal
import subprocess

import pytest

from conftest import POSTERN_BIN, Daemon, free_port


def run(*args, cwd=None):
    return subprocess.run([POSTERN_BIN, *args], capture_output=True, text=True, timeout=20, cwd=cwd)


@pytest.mark.board
def test_version():
    res = run("version")
    assert res.returncode == 0, res
    assert res.stdout.startswith("postern "), res.stdout


@pytest.mark.board
def test_check_config_accepts_valid_config(workdir):
    d = Daemon(workdir, free_port())
    d.write_config()
    res = run("check-config", "--config", str(d.config_path))
    assert res.returncode == 0, res
    assert "memory budget" in res.stdout


@pytest.mark.board
def test_check_config_names_file_and_line_of_unknown_key(workdir):
    conf = workdir / "bad.conf"
    conf.write_text("[receiver]\nlisten = 127.0.0.1:2525\nno_such_key = 1\n")
    res = run("check-config", "--config", str(conf))
    assert res.returncode == 78, res      # EX_CONFIG (sysexits.h)
    assert "bad.conf:3" in res.stderr + res.stdout, res


@pytest.mark.board
def test_check_config_derives_segment_size_from_max_size(workdir):
    # Issue 7 item 5: `max_size = 2M` alone is valid; the unwritten segment_size
    # follows it, and check-config says so.
    conf = workdir / "small.conf"
    conf.write_text("[spool]\nmax_size = 2M\n[retry]\nmax = 30s\n[upstream]\nhost = 127.0.0.1\n")
    res = run("check-config", "--config", str(conf))
    assert res.returncode == 0, res
    assert "segment_size = 512K   # from max_size" in res.stdout, res.stdout
    assert "initial = 30s   # at most max" in res.stdout, res.stdout


@pytest.mark.board
def test_check_config_refuses_huge_values_without_crashing(workdir):
    # Issue 7 item 7: numbers far beyond any limit (and beyond Int64) are a
    # configuration error naming file, line and key, never a trap.
    for line in ("max_size = 99999999999999999999999G", "segment_size = 18446744073709551616",
                 "max_age = 99999999999999999999d"):
        conf = workdir / "huge.conf"
        conf.write_text(f"[upstream]\nhost = 127.0.0.1\n[spool]\n{line}\n")
        res = run("check-config", "--config", str(conf))
        assert res.returncode == 78, res
        key = line.split(" = ")[0]
        assert f"huge.conf:4: {key}:" in res.stderr, res


@pytest.mark.board
def test_sigint_exits_cleanly(make_daemon, upstream):
    d = make_daemon(upstream.port)
    d.proc.send_signal(signal.SIGINT)
    assert d._reap(10.0) == 0, d.log_text()
