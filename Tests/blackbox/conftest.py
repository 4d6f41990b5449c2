"""Fixtures for Postern's black-box suite.

The suite runs the built daemon (``$POSTERN_BIN``, else ``<repo>/build/postern``)
on loopback against real SMTP peers that no one here wrote: Python's ``smtplib``
and ``swaks`` as clients, an ``aiosmtpd`` receiver as the upstream.

Everything here synchronises by bounded polling (``wait_until``); nothing relies
on a bare sleep.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP

REPO = Path(__file__).resolve().parents[2]
POSTERN_BIN = os.environ.get("POSTERN_BIN") or str(REPO / "build" / "postern")

# The architecture of the binary under test. `make board-check ARCH=aarch64|armv7`
# runs the tests marked `board` with POSTERN_ARCH set and POSTERN_BIN pointing at
# build/<arch>/postern-qemu, a script that runs the board binary under qemu-user.
ARCH = os.environ.get("POSTERN_ARCH", "x86_64")
# Per architecture: the C compiler for test programs that must run beside the
# binary (same libc, same headers), and the command prefix that runs them.
# "deb" is Debian's name of the architecture, "elf" the ELF header's e_machine.
TARGETS = {
    "x86_64": {"cc": "gcc", "run": [], "gnu": "x86_64-linux-gnu", "deb": "amd64", "elf": 62},
    "aarch64": {"cc": "aarch64-linux-gnu-gcc", "gnu": "aarch64-linux-gnu", "deb": "arm64", "elf": 183,
                "run": ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]},
    "armv7": {"cc": "arm-linux-gnueabihf-gcc", "gnu": "arm-linux-gnueabihf", "deb": "armhf", "elf": 40,
              "run": ["qemu-arm-static", "-L", "/usr/arm-linux-gnueabihf"]},
}
TARGET = TARGETS[ARCH]
EMULATED = ARCH != "x86_64"

# Bounds for every wait in the suite.
DEFAULT_TIMEOUT = 20.0
POLL_INTERVAL = 0.05


# --------------------------------------------------------------------------------
# generic helpers


def children(pid):
    """Pids whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(entry))
    return out


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=POLL_INTERVAL, what="condition"):
    """Polls ``predicate`` until it returns a truthy value (returned) or fails the
    test. ``what`` (a string, or a callable giving one at failure time) says what
    was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def hold_for(predicate, duration, interval=POLL_INTERVAL, what="condition"):
    """Asserts ``predicate`` stays true for ``duration`` seconds (used to show that
    something does *not* happen, e.g. a duplicate delivery)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(interval)
    assert predicate(), f"{what} stopped holding"


def free_port(host="127.0.0.1"):
    """A port that nothing listens on right now (bind to port 0, then release)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def strip_first_header_field(data: bytes) -> tuple[bytes, bytes]:
    """Splits off exactly the first header field (its first line and every
    continuation line, RFC 5322 §2.2.3 folding) and returns (field, rest)."""
    end = data.index(b"\r\n") + 2
    while end < len(data) and data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\r\n", end) + 2
    return data[:end], data[end:]


def strip_received(data: bytes) -> bytes:
    """The message as the client sent it: the added Received: field removed."""
    field, rest = strip_first_header_field(data)
    assert field.lower().startswith(b"received:"), f"first header field is not Received: {field[:200]!r}"
    return rest


# --------------------------------------------------------------------------------
# the upstream: an aiosmtpd receiver with configurable per-recipient replies


class _BigLineSMTP(AioSMTP):
    # aiosmtpd refuses text lines over 1001 octets; the upstream of these tests must
    # accept whatever Postern relays (lines of 5000 octets and 1 MiB included) so the comparison
    # is about Postern, not aiosmtpd.
    line_length_limit = 1 << 24


class _BigLineController(Controller):
    def factory(self):
        return _BigLineSMTP(self.handler, **self.SMTP_kwargs)


class _XOAuth2SMTP(_BigLineSMTP):
    """Adds Google's and Microsoft's XOAUTH2 (base64 of "user=U^Aauth=Bearer T^A^A").
    A wrong token gets the base64 JSON challenge, then 535, as Gmail does."""

    async def auth_XOAUTH2(self, _, args):
        from aiosmtpd.smtp import AuthResult, LoginPassword
        import base64
        try:
            raw = base64.b64decode(args[1], validate=True)
            fields = dict(f.split(b"=", 1) for f in raw.rstrip(b"\x01").split(b"\x01"))
            user, token = fields[b"user"], fields[b"auth"].removeprefix(b"Bearer ")
        except Exception:
            await self.push("501 5.5.2 Can't decode XOAUTH2")
            return AuthResult(success=False, handled=True)
        result = self._authenticate("XOAUTH2", LoginPassword(user, token))
        if not result.success:
            await self.challenge_auth('{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}')
        return result


class _XOAuth2Controller(Controller):
    def factory(self):
        return _XOAuth2SMTP(self.handler, **self.SMTP_kwargs)


class Received:
    """One message as the upstream got it."""

    def __init__(self, mail_from, rcpt_tos, content, mail_options, peer=None, pipelined=False):
        self.mail_from = mail_from
        self.rcpt_tos = list(rcpt_tos)
        self.content = content
        self.mail_options = list(mail_options)
        self.peer = peer            # (host, port) of Postern's side: identifies the connection
        self.pipelined = pipelined  # more commands were already waiting when MAIL was read

    def __repr__(self):
        return f"<Received from={self.mail_from} to={self.rcpt_tos} {len(self.content)} bytes>"

    @property
    def body(self) -> bytes:
        return strip_received(self.content)

    def header(self, name: str):
        """The unfolded value of the first header field ``name`` (after Received)."""
        text = self.content.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        m = re.search(r"^" + re.escape(name) + r":[ \t]*(.*(?:\r\n[ \t].*)*)", text,
                      re.IGNORECASE | re.MULTILINE)
        return None if m is None else re.sub(r"\r\n[ \t]", " ", m.group(1)).strip()


class UpstreamHandler:
    def __init__(self, pipelining=False, digest_only=False):
        self.lock = threading.Lock()
        self.pipelining = pipelining
        # Keep only each message's header section, and its body's size and
        # SHA-256 (`Received.body_size`, `body_sha256`): for tests that relay
        # gigabytes, which would not fit in memory.
        self.digest_only = digest_only
        self.messages: list[Received] = []
        # recipient (lower case) -> replies for its next RCPTs, one per attempt;
        # once the list is used up, RCPT gets 250.
        self.rcpt_replies: dict[str, list[str]] = {}
        self.rcpt_attempts: dict[str, int] = {}
        # replies for the next MAIL commands / ends of data, then 250
        self.mail_replies: list[str] = []
        self.data_replies: list[str] = []
        self.ehlo_count = 0
        self.mail_count = 0
        # Postern's own failure notices (null reverse-path, RFC 3464) are kept
        # apart from the relayed mail, so counts of relayed messages stay exact.
        self.notices: list[Received] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.ehlo_count += 1
        if self.pipelining:
            responses = responses[:-1] + ["250-PIPELINING"] + responses[-1:]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Commands sent in the same write as MAIL are already buffered by now.
        envelope.pipelined = bool(getattr(server._reader, "_buffer", b""))
        with self.lock:
            # MAIL FROM:<> (a notice, or a relayed bounce) is not counted here.
            if address not in ("", "<>"):
                self.mail_count += 1
            if self.mail_replies:
                return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.lower()
        with self.lock:
            self.rcpt_attempts[key] = self.rcpt_attempts.get(key, 0) + 1
            pending = self.rcpt_replies.get(key)
            if pending:
                return pending.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.data_replies:
                reply = self.data_replies.pop(0)
                if reply == "DROP":
                    # The connection breaks after the text, before any reply.
                    server.transport.abort()
                return reply
            content = envelope.original_content
            if self.digest_only:
                body = strip_received(content)
                head = content[:content.find(b"\r\n\r\n") + 4]
                digest, size, content = hashlib.sha256(body).hexdigest(), len(body), head
                del body
                envelope.original_content = envelope.content = None
            received = Received(envelope.mail_from, envelope.rcpt_tos,
                                content, envelope.mail_options,
                                peer=session.peer, pipelined=getattr(envelope, "pipelined", False))
            if self.digest_only:
                received.body_sha256, received.body_size = digest, size
            # Whether this session was encrypted (STARTTLS or implicit TLS) and as whom.
            received.tls = bool(server._tls_protocol or server.transport.get_extra_info("ssl_object"))
            received.login = getattr(session, "auth_data", None)
            if envelope.mail_from in ("", "<>") and b"X-Postern-Queue-ID:" in envelope.original_content:
                self.notices.append(received)
            else:
                self.messages.append(received)
        return "250 2.0.0 Ok: captured"


class Upstream:
    """The smarthost: aiosmtpd on 127.0.0.1:<port>. The port is fixed at creation so
    the upstream can be stopped and started again (or start late) on the same port."""

    def __init__(self, port=None, host="127.0.0.1", pipelining=False, starttls=None, implicit=None,
                 logins=None, digest_only=False):
        """``starttls``/``implicit``: a server ssl.SSLContext offered with STARTTLS
        or wrapped around every connection. ``logins``: {user: secret} accepted by
        AUTH PLAIN, LOGIN and XOAUTH2 (the secret is the token); every other
        attempt gets 535. Each AUTH attempt is counted in ``auth_attempts``.
        ``digest_only``: keep each message's header section and its body's size
        and SHA-256 only (``Received.body_size``, ``body_sha256``)."""
        self.host = host
        self.port = port or free_port(host)
        self.handler = UpstreamHandler(pipelining=pipelining, digest_only=digest_only)
        self.controller = None
        self.starttls = starttls
        self.implicit = implicit
        self.logins = logins
        self.auth_attempts = []   # (mechanism, user, accepted)

    # -- control

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult
        user = auth_data.login.decode()
        ok = self.logins is not None and self.logins.get(user) == auth_data.password.decode()
        with self.handler.lock:
            self.auth_attempts.append((mechanism, user, ok))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def start(self):
        assert self.controller is None
        kwargs = dict(hostname=self.host, port=self.port, data_size_limit=64 * 1024 * 1024,
                      enable_SMTPUTF8=True)
        controller = _BigLineController
        if self.starttls is not None:
            kwargs["tls_context"] = self.starttls
        if self.implicit is not None:
            kwargs["ssl_context"] = self.implicit
            # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS session is one.
            kwargs["auth_require_tls"] = False
        if self.logins is not None:
            kwargs["authenticator"] = self._authenticate
            controller = _XOAuth2Controller
        self.controller = controller(self.handler, **kwargs)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def running(self):
        return self.controller is not None

    def reply_to_rcpt(self, address, *replies):
        """Gives ``address`` these RCPT replies on its next attempts, then 250."""
        with self.handler.lock:
            self.handler.rcpt_replies[address.lower()] = list(replies)

    def reply_to_mail(self, *replies):
        """Gives the next MAIL commands these replies, then 250."""
        with self.handler.lock:
            self.handler.mail_replies = list(replies)

    def reply_to_data(self, *replies):
        """Gives the next ends of data these replies (the message is not kept), then
        250. "DROP" closes the connection instead of replying."""
        with self.handler.lock:
            self.handler.data_replies = list(replies)

    @property
    def ehlo_count(self):
        with self.handler.lock:
            return self.handler.ehlo_count

    @property
    def mail_count(self):
        with self.handler.lock:
            return self.handler.mail_count

    def rcpt_attempts(self, address):
        with self.handler.lock:
            return self.handler.rcpt_attempts.get(address.lower(), 0)

    # -- what arrived

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def count(self):
        with self.handler.lock:
            return len(self.handler.messages)

    @property
    def notices(self) -> list[Received]:
        """Failure notices Postern sent (MAIL FROM:<>), apart from ``messages``."""
        with self.handler.lock:
            return list(self.handler.notices)

    def wait_for(self, n, timeout=DEFAULT_TIMEOUT):
        """Waits until at least ``n`` messages have arrived; returns them all."""
        wait_until(lambda: self.count() >= n, timeout,
                   what=lambda: f"{n} message(s) upstream (have {self.count()})")
        return self.messages

    def wait_for_match(self, predicate, timeout=DEFAULT_TIMEOUT, what="a matching message upstream"):
        def find():
            return [m for m in self.messages if predicate(m)]
        return wait_until(find, timeout, what=what)


@pytest.fixture
def upstream():
    """A running upstream; stopped at teardown."""
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture
def make_upstream():
    """``make_upstream(pipelining=False, start=True)``; all are stopped at teardown."""
    made = []

    def make(pipelining=False, start=True):
        up = Upstream(pipelining=pipelining)
        made.append(up)
        return up.start() if start else up

    yield make
    for up in made:
        up.stop()


@pytest.fixture(params=[False, True], ids=["upstream-plain", "upstream-pipelining"])
def any_upstream(request):
    """A running upstream, once without and once with PIPELINING (RFC 2920) offered."""
    up = Upstream(pipelining=request.param).start()
    yield up
    up.stop()


@pytest.fixture
def stopped_upstream():
    """An upstream whose port is reserved but where nothing listens yet."""
    up = Upstream()
    yield up
    up.stop()


# --------------------------------------------------------------------------------
# the daemon


EVENT_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line: str) -> dict:
    return {k: (v[1:-1] if v.startswith('"') else v) for k, v in EVENT_RE.findall(line)}


class Daemon:
    """One Postern process: writes its config into ``workdir``, runs it in the
    foreground with ``--log stderr``, collects its log lines."""

    def __init__(self, workdir: Path, upstream_port: int, **overrides):
        self.workdir = Path(workdir)
        self.port = overrides.pop("port", None) or free_port()
        self.listen = overrides.get("receiver__listen", f"127.0.0.1:{self.port}")
        self.settings = {
            "receiver": {
                "listen": self.listen,
                "hostname": "postern.test",
                "allow_clients": "127.0.0.0/8, ::1/128",
                "allow_recipients": "*",
                "max_message_size": "10M",
                "max_recipients": "100",
                "max_connections": "16",
                "timeout": "5m",
            },
            # Under qemu-user a forked child hangs (qemu's own fork) and there
            # is no io_uring, so the board binaries there sync in the loop;
            # natively, and on a board, the group commit's syncs run through
            # io_uring (the default, sync = auto).
            "spool": {"dir": "spool", "max_size": "64M", "segment_size": "4M",
                      **({"sync": "loop"} if EMULATED else {})},
            "upstream": {"host": "127.0.0.1", "port": str(upstream_port), "tls": "none"},
            "retry": {"initial": "1s", "max": "2s"},
            # Each daemon gets its own control socket, so tests can run side by side.
            "control": {"socket": "control.sock"},
            # ... and its own sendmail socket (the drop directory is spool/maildrop).
            "local": {"socket": "submit.sock"},
        }
        for key, value in overrides.items():
            section, name = key.split("__", 1)
            self.settings.setdefault(section, {})[name] = value
        self.config_path = self.workdir / "postern.conf"
        self.proc = None
        self.lines: list[str] = []
        self.all_lines: list[str] = []  # across restarts
        self._lock = threading.Lock()
        self._reader = None
        self.exit_codes: list[int] = []
        # Extra environment (NOTIFY_SOCKET, WATCHDOG_USEC, ...) and a command to
        # run the daemon under (systemd-socket-activate, a namespace wrapper).
        self.env: dict[str, str] = {}
        self.wrapper: list[str] = []
        self.extra_args: list[str] = []
        self.wait_listening = True

    # -- config

    def write_config(self):
        text = []
        for section, values in self.settings.items():
            # "upstream#2", "upstream#3": fallback [upstream] sections, in order.
            text.append(f"[{section.split('#')[0]}]")
            text.extend(f"{k} = {v}" for k, v in values.items())
            text.append("")
        self.config_path.write_text("\n".join(text))

    # -- lifecycle

    def start(self, timeout=DEFAULT_TIMEOUT):
        assert self.proc is None, "daemon already running"
        self.write_config()
        with self._lock:
            self.lines = []
        self.proc = subprocess.Popen(
            self.wrapper + [POSTERN_BIN, "run", "--config", str(self.config_path)]
            + (self.extra_args or ["--log", "stderr"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.workdir, env={**os.environ, **self.env})
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()

        def ready():
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                self._reader.join(5)
                pytest.fail(f"postern exited with {rc} during start:\n{self.log_text()}")
            if not self.wait_listening:
                # Logs go elsewhere (the journal): wait until the port answers.
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return True
                except OSError:
                    return False
            # "postern started" comes once every listener, the control socket and
            # the drop directory are open: a listener's own line came too early
            # for a test that goes straight to the control socket.
            return (len(self.find("msg=listening")) >= len(self.listen.split(","))
                    and bool(self.find('msg="postern started"')))
        wait_until(ready, timeout, what="postern's 'listening' line for every listen address and 'postern started'")
        return self

    def _read_stderr(self, proc):
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
                self.all_lines.append(line)

    def _reap(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            self.proc = None
            pytest.fail(f"postern did not exit within {timeout}s of SIGTERM:\n{self.log_text()}")
        self._reader.join(5)
        self.proc = None
        self.exit_codes.append(rc)
        return rc

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit code (the caller asserts on it)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        return self._reap(timeout)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        return self._reap(10.0)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- logs

    def log_lines(self, all_runs=False):
        with self._lock:
            return list(self.all_lines if all_runs else self.lines)

    def log_text(self, all_runs=True):
        return "\n".join(self.log_lines(all_runs))

    def find(self, fragment, all_runs=False):
        return [l for l in self.log_lines(all_runs) if fragment in l]

    def events(self, kind, all_runs=False):
        return [parse_log_line(l) for l in self.log_lines(all_runs) if f"event={kind} " in l + " "]

    def wait_for_log(self, fragment, count=1, timeout=DEFAULT_TIMEOUT, all_runs=False):
        return wait_until(lambda: (lambda f: f if len(f) >= count else None)(self.find(fragment, all_runs)),
                          timeout, what=f"{count} log line(s) containing {fragment!r}")

    # -- memory

    def status_kb(self, field):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


@pytest.fixture
def workdir():
    """A fresh, short temp dir per test (short so a unix socket path fits)."""
    d = Path(tempfile.mkdtemp(prefix="pbb-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked `big` (gigabytes written, minutes long) run only when the
    -m expression names them (`-m big`), never as part of a plain or a
    `-m board` run."""
    if "big" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: writes gigabytes; run with -m big")
    for item in items:
        if "big" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def make_daemon(workdir, request):
    """``make_daemon(upstream_port, **overrides)`` starts a daemon (override keys are
    ``section__key``, e.g. ``receiver__max_recipients="3"``). Every daemon still
    running at teardown is stopped with SIGTERM and must exit 0."""
    daemons = []

    def make(upstream_port, start=True, **overrides):
        d = Daemon(workdir, upstream_port, **overrides)
        daemons.append(d)
        return d.start() if start else d

    yield make
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for d in daemons:   # shown under "Captured stdout teardown"
            print(f"--- postern log ({d.config_path}) ---\n{d.log_text()}")
    failures = []
    for d in daemons:
        if d.proc is not None:
            rc = d.stop()
            if rc != 0:
                failures.append(f"postern exited {rc} on SIGTERM at teardown:\n{d.log_text()}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def daemon(make_daemon, upstream):
    """A daemon relaying to the running ``upstream``."""
    return make_daemon(upstream.port)


# --------------------------------------------------------------------------------
# clients


class RawClient:
    """A line-level SMTP client over a plain socket, for pipelining and refusals."""

    def __init__(self, host, port, timeout=10.0, family=None):
        family = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unparsed {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One (possibly multi-line) reply: (code, [texts])."""
        texts = []
        while True:
            line = self._readline()
            assert len(line) >= 3 and line[:3].isdigit(), f"malformed reply line {line!r}"
            texts.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), texts

    def cmd(self, line: str):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def at_eof(self, timeout=10.0):
        """True once the peer has closed (reads and discards anything pending)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_message(subject, body="hello\r\n", extra_headers=(), msgid=None):
    """A small CRLF message as bytes."""
    headers = [
        "From: Sender <sender@client.example>",
        "To: Ops <ops@example.com>",
        f"Subject: {subject}",
        f"Message-ID: <{msgid or subject.replace(' ', '-')}@client.example>",
        *extra_headers,
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (body.encode() if isinstance(body, str) else body)


def send_one(port, subject, rcpt=("ops@example.com",), sender="sender@client.example", host="127.0.0.1"):
    """Sends one message on its own connection; returns the bytes sent."""
    import smtplib
    msg = make_message(subject)
    with smtplib.SMTP(host, port, timeout=15) as s:
        refused = s.sendmail(sender, list(rcpt), msg)
        assert refused == {}
    return msg
