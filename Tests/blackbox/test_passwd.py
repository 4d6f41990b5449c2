"""`postern passwd USER` (issue 12 item 2): adds or replaces a user in the
auth_users file with a yescrypt hash, atomically, keeping every other line.

The hashes are checked with crypt(3) as Python's `crypt` module (Debian 12's
Python 3.11) or Perl call it, not with Postern's code."""

import os
import pty
import select
import signal
import stat
import subprocess
import time
import warnings

import pytest

from conftest import POSTERN_BIN


def passwd(*args, stdin="secret pw\n", cwd=None, env=None):
    return subprocess.run([POSTERN_BIN, "passwd", *args], input=stdin.encode() if isinstance(stdin, str) else stdin,
                          capture_output=True, timeout=60, cwd=cwd, env=env)


def crypt_of(password, setting):
    """crypt(3) of another implementation than Postern's: Python's module, else Perl's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        return crypt.crypt(password, setting)
    except ImportError:
        out = subprocess.run(["perl", "-e", "print crypt($ARGV[0], $ARGV[1])", password, setting],
                             capture_output=True, text=True, check=True)
        return out.stdout


def verifies(hash_text, password):
    return crypt_of(password, hash_text) == hash_text


def entries(path):
    return dict(line.split(":", 1) for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#"))


@pytest.mark.board
def test_new_file_has_one_yescrypt_line_mode_0600_that_verifies(workdir):
    users = workdir / "auth_users"
    res = passwd("camera1", "--file", str(users))
    assert res.returncode == 0, res
    assert b"added camera1" in res.stdout
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    lines = users.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camera1:$y$"), lines
    h = entries(users)["camera1"]
    assert verifies(h, "secret pw")
    assert not verifies(h, "secret pW")
    # No temporary file is left beside it.
    assert sorted(p.name for p in workdir.iterdir()) == ["auth_users"]


def test_replace_keeps_comments_blank_lines_other_users_and_crlf(workdir):
    users = workdir / "auth_users"
    other = crypt_of("other", "$6$saltsalt$")
    original = (f"# who may AUTH\n\ngrafana:{other}\r\ncamera1:$6$old$" + "x" * 86 + "\r\n"
                f"  # indented comment\noldnas:!\n")
    users.write_bytes(original.encode())
    users.chmod(0o640)
    res = passwd("camera1", "--file", str(users), stdin="new one\n")
    assert res.returncode == 0, res
    assert b"line 4" in res.stdout
    new = users.read_bytes().decode()
    before, after = original.split("\n"), new.split("\n")
    assert len(before) == len(after)
    for i, (b, a) in enumerate(zip(before, after)):
        if i == 3:
            assert a.startswith("camera1:$y$") and a.endswith("\r"), a
            assert verifies(a[len("camera1:"):-1], "new one")
        else:
            assert a == b
    # The old file's mode is kept.
    assert stat.S_IMODE(users.stat().st_mode) == 0o640


def test_add_to_file_without_final_newline(workdir):
    users = workdir / "auth_users"
    users.write_text("grafana:*")
    res = passwd("printer", "--file", str(users))
    assert res.returncode == 0, res
    text = users.read_text()
    assert text.startswith("grafana:*\nprinter:$y$") and text.endswith("\n")
    assert verifies(entries(users)["printer"], "secret pw")


@pytest.mark.parametrize("user", ["bad:user", "with space", "caf\u00e9", "x" * 256, ""])
def test_refuses_bad_user_names(workdir, user):
    users = workdir / "auth_users"
    users.write_text("grafana:*\n")
    res = passwd(user, "--file", str(users))
    assert res.returncode == 64, res     # EX_USAGE
    assert users.read_text() == "grafana:*\n"


@pytest.mark.parametrize("stdin, why", [
    ("", b"empty"), ("\n", b"empty"), ("a\rb\n", b"line break"), ("a\nb\n", b"line break"),
    (b"a\0b\n", b"NUL"), ("x" * 256 + "\n", b"longer than 255"),
])
def test_refuses_empty_and_malformed_passwords(workdir, stdin, why):
    users = workdir / "auth_users"
    res = passwd("camera1", "--file", str(users), stdin=stdin)
    assert res.returncode == 65, res     # EX_DATAERR
    assert why in res.stderr, res.stderr
    assert not users.exists()


def test_accepts_a_255_octet_password(workdir):
    users = workdir / "auth_users"
    res = passwd("camera1", "--file", str(users), stdin="y" * 255)
    assert res.returncode == 0, res
    assert verifies(entries(users)["camera1"], "y" * 255)


def test_refuses_to_write_over_a_file_that_does_not_parse(workdir):
    users = workdir / "auth_users"
    original = "grafana:*\nbroken line without colon\n"
    users.write_text(original)
    res = passwd("camera1", "--file", str(users))
    assert res.returncode == 78, res     # EX_CONFIG
    assert b"line 2" in res.stderr, res.stderr
    assert users.read_text() == original


def test_finds_auth_users_in_the_configuration(workdir):
    conf = workdir / "postern.conf"
    conf.write_text("[receiver]\nlisten = 127.0.0.1:2525\nauth_users = users.txt   # relative to this file\n"
                    "[upstream]\nhost = 127.0.0.1\n")
    res = passwd("camera1", "--config", str(conf), cwd="/")
    assert res.returncode == 0, res
    assert verifies(entries(workdir / "users.txt")["camera1"], "secret pw")
    # POSTERN_CONFIG names the configuration too, as for the other commands.
    env = dict(os.environ, POSTERN_CONFIG=str(conf))
    res = passwd("grafana", stdin="other\n", env=env)
    assert res.returncode == 0, res
    assert set(entries(workdir / "users.txt")) == {"camera1", "grafana"}


def test_without_a_file_to_edit_asks_for_file(workdir):
    conf = workdir / "postern.conf"
    conf.write_text("[upstream]\nhost = 127.0.0.1\n")
    res = passwd("camera1", "--config", str(conf))
    assert res.returncode == 64, res
    assert b"--file" in res.stderr


def _run_on_terminal(args, typed, timeout=30):
    """Runs postern with a pseudo-terminal as standard input and output; sends
    each of `typed` after the next prompt (only once the prompt is shown: the
    terminal's input is flushed when echo is turned off). Returns (exit code,
    what was shown)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([POSTERN_BIN, *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    shown = b""
    pending = list(typed)
    answered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
            if pending and shown.endswith(b": ") and shown.count(b"assword") > answered:
                os.write(master, pending.pop(0) + b"\n")
                answered += 1
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(master)
    return code, shown


def test_terminal_reads_twice_without_echo(workdir):
    users = workdir / "auth_users"
    code, shown = _run_on_terminal(["passwd", "camera1", "--file", str(users)], [b"typed secret", b"typed secret"])
    assert code == 0, shown
    assert shown.count(b"assword") == 2, shown
    assert b"typed secret" not in shown, shown
    assert verifies(entries(users)["camera1"], "typed secret")


def test_terminal_refuses_two_different_passwords(workdir):
    users = workdir / "auth_users"
    code, shown = _run_on_terminal(["passwd", "camera1", "--file", str(users)], [b"first", b"second"])
    assert code == 65, shown
    assert b"differ" in shown
    assert not users.exists()


def test_sigint_at_the_prompt_restores_echo(workdir):
    import termios
    users = workdir / "auth_users"
    master, slave = pty.openpty()
    proc = subprocess.Popen([POSTERN_BIN, "passwd", "camera1", "--file", str(users)],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    shown = b""
    deadline = time.monotonic() + 20
    while b"Password: " not in shown and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            shown += os.read(master, 4096)
    assert termios.tcgetattr(slave)[3] & termios.ECHO == 0, "echo is off at the prompt"
    # As Ctrl-C would (the pty is not the child's controlling terminal).
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=10)
    assert code == -2, (code, shown)          # killed by SIGINT, as without the prompt
    assert termios.tcgetattr(slave)[3] & termios.ECHO, "echo is back on"
    assert not users.exists()
    os.close(slave)
    os.close(master)
