"""The C layouts the Swift code assumes, proved on each target (issue 10 item 1).

The board binaries are Embedded Swift compiled for a bare-metal triple that reads
glibc's headers through clang, while the C helpers are compiled by Debian's gcc
and both are linked against Debian's glibc: two compilers that could disagree on
a struct's padding, a type's width or a macro's value without either saying so.

`postern abi` prints, as the Swift compiler saw them when the binary under test
was built, the size, alignment and field offsets of every C struct the Swift
code creates or reads, the widths of the C types it passes and the value of
every C constant it uses. Tests/tools/abi_facts.c prints the same names from
the C side; here it is compiled by the target's gcc with the flags of the
Makefile's board objects and run beside the binary (under qemu-user on the
boards). Both outputs must be identical, and abi_facts.c must list every C
constant, every `cl_*` struct and every libc struct and field that the Swift
sources mention. On armv7, where those layouts are the _FILE_OFFSET_BITS=64 and
_TIME_BITS=64 ones, the binary must also call glibc's 64-bit entry points.

Every test is marked `board`: `make board-check ARCH=aarch64|armv7` runs them
against the board binary, natively they check build/postern.
"""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ARCH, POSTERN_BIN, REPO, TARGET

pytestmark = pytest.mark.board

FACTS_C = REPO / "Tests" / "tools" / "abi_facts.c"
INCLUDE = REPO / "Sources" / "CLibc" / "include"
HEADERS = sorted(INCLUDE.glob("*.h")) + [REPO / "Sources" / "CSystemd" / "shim.h"]
SWIFT_SOURCES = sorted((REPO / "Sources").rglob("*.swift"))
# The flags of the Makefile's board C objects ($(BOARD_DIR)/c/%.o); abi_facts.c
# defines _GNU_SOURCE itself, as every helper in Sources/CLibc does.
C_DEFINES = ["-D_FILE_OFFSET_BITS=64", "-D_TIME_BITS=64", "-I", str(INCLUDE)]
C_FLAGS = ["-O2", "-Wall", "-Werror", "-D_FORTIFY_SOURCE=2", *C_DEFINES]
# What the probe programs below include: what the Swift code imports (CLibc's
# clibc.h, which includes the other cl_*.h, and CSystemd's sd-daemon.h).
C_PRELUDE = '#define _GNU_SOURCE\n#include "clibc.h"\n#include <systemd/sd-daemon.h>\n'
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def parse_facts(text, who):
    """`name value` lines -> [(name, value)] in order; every line must be one."""
    facts, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([a-z]+\.[A-Za-z0-9_.]+) (-?[0-9]+)", line)
        assert m, f"{who}, line {n}: not `name value`: {line!r}"
        assert m.group(1) not in seen, f"{who}, line {n}: {m.group(1)} printed twice"
        seen.add(m.group(1))
        facts.append((m.group(1), int(m.group(2))))
    assert facts, f"{who} printed nothing"
    return facts


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory):
    """abi_facts.c compiled by the target's gcc and run on the target."""
    exe = tmp_path_factory.mktemp("abi") / "abi_facts"
    res = run([TARGET["cc"], *C_FLAGS, str(FACTS_C), "-o", str(exe)])
    assert res.returncode == 0, f"{TARGET['cc']} failed:\n{res.stderr}"
    res = run([*TARGET["run"], str(exe)])
    assert res.returncode == 0 and not res.stderr, res
    return parse_facts(res.stdout, f"abi_facts ({TARGET['cc']})")


@pytest.fixture(scope="module")
def swift_facts():
    """`postern abi` of the binary under test."""
    res = run([POSTERN_BIN, "abi"])
    assert res.returncode == 0 and not res.stderr, res
    return parse_facts(res.stdout, f"postern abi ({ARCH})")


def test_swift_and_c_agree_on_every_fact(c_facts, swift_facts):
    c, s = dict(c_facts), dict(swift_facts)
    problems = [f"only in abi_facts.c (postern abi lacks it): {name} {c[name]}" for name in c if name not in s]
    problems += [f"only in postern abi (abi_facts.c lacks it): {name} {s[name]}" for name in s if name not in c]
    problems += [f"{name}: C {c[name]}, Swift {s[name]}" for name in c if name in s and c[name] != s[name]]
    if not problems and [n for n, _ in c_facts] != [n for n, _ in swift_facts]:
        problems.append("same facts in a different order: keep ABIReport.swift in the order of abi_facts.c")
    assert not problems, (f"{ARCH}: {len(problems)} of {len(c.keys() | s.keys())} facts differ between "
                          f"the target's C compiler and the Swift compiler:\n  " + "\n  ".join(problems))
    print(f"{ARCH}: {len(c)} facts agree")


def test_facts_that_must_hold(swift_facts):
    f = dict(swift_facts)
    word = 4 if ARCH == "armv7" else 8
    # Swift's Int is the pointer's width, and so are long, size_t and ssize_t on
    # every Linux target here (ILP32 on armv7, LP64 on the others).
    for t in ("Int", "long", "pointer", "size_t", "ssize_t", "nfds_t"):
        assert f[f"type.{t}.size"] == word, (t, f[f"type.{t}.size"])
    # _FILE_OFFSET_BITS=64 and _TIME_BITS=64: offsets and times are 64 bits wide
    # everywhere, armv7 included (a spool past 2 GiB, the year 2038).
    for t in ("off_t", "time_t", "long_long", "dev_t", "ino_t"):
        assert f[f"type.{t}.size"] == 8, (t, f[f"type.{t}.size"])
    assert f["type.long_long.align"] == 8       # AAPCS: 8-byte alignment on armv7 too
    for t in ("int", "pid_t", "uid_t", "gid_t", "mode_t", "socklen_t"):
        assert f[f"type.{t}.size"] == 4, (t, f[f"type.{t}.size"])
    assert f["struct.stat.size"] > 0 and f["struct.statvfs.size"] > 0
    assert f["struct.stat.st_size.size"] == 8 and f["struct.stat.st_ino.size"] == 8
    assert f["struct.statvfs.f_bavail.size"] == 8
    assert (f["struct.pollfd.size"], f["struct.pollfd.events.size"], f["struct.pollfd.revents.size"]) == (8, 2, 2)
    assert f["struct.iovec.size"] == 2 * word
    # The resolver's record (cl_process.h): 12 bytes, then at most CL_RESOLVE_MAX
    # endpoints, in one write(2) under PIPE_BUF (4096 on Linux).
    assert f["struct.cl_ip_endpoint.size"] == 24
    assert 12 + f["const.CL_RESOLVE_MAX"] * f["struct.cl_ip_endpoint.size"] <= 4096
    # The fixed-width cl_* structs are the same on every architecture.
    assert (f["struct.cl_file_facts.size"], f["struct.cl_file_facts.nlink.offset"]) == (32, 8)
    assert (f["struct.cl_tls_peer.size"], f["struct.cl_tls_peer.not_before.offset"]) == (640, 512)
    # Swift narrows these to Int16 (pollfd.events) without a check.
    for p in ("POLLIN", "POLLOUT", "POLLERR", "POLLHUP"):
        assert 0 < f[f"const.{p}"] < 2**15
    assert f["const.EAGAIN"] == f["const.EWOULDBLOCK"] == 11


def test_abi_takes_no_arguments():
    res = run([POSTERN_BIN, "abi", "--config", "/nonexistent"])
    assert res.returncode == 64 and res.stdout == "", res     # EX_USAGE (sysexits.h)
    # a diagnostics command, not one of the usage's commands for users
    assert not re.search(r"^\s+abi\b", run([POSTERN_BIN, "help"]).stdout, re.M)


def binary_under_test():
    """The ELF file POSTERN_BIN is or runs (on the boards it is a script that
    execs qemu-user with build/<arch>/postern)."""
    path = Path(POSTERN_BIN)
    if path.read_bytes()[:4] == b"\x7fELF":
        return path
    script = path.read_text().split("\n", 1)[-1]       # not the #! line's shell
    for word in re.findall(r"(/[^\s\"']+)", script):
        p = Path(word)
        if p.is_file() and p.read_bytes()[:4] == b"\x7fELF" and not p.name.startswith("qemu-"):
            return p
    pytest.fail(f"no ELF binary in {POSTERN_BIN}")


def dynamic_symbols(path, which):
    res = run(["nm", "-D", which, str(path)])
    assert res.returncode == 0, res
    return {line.split()[-1].split("@")[0] for line in res.stdout.splitlines() if line.strip()}


def test_32_bit_board_calls_the_64_bit_entry_points(swift_facts):
    """The layouts above are those of _FILE_OFFSET_BITS=64 and _TIME_BITS=64; on a
    32-bit board they only hold if the calls that take them reach glibc's 64-bit
    entry points (fstat -> __fstat64_time64, readdir -> readdir64, ...), which
    glibc's headers select by asm labels that the Swift compiler must honour as
    gcc does. So the binary imports no function by a name that glibc also
    exports in a 64-bit variant."""
    if dict(swift_facts)["type.long.size"] != 4:
        pytest.skip(f"{ARCH}: long is 64 bits, off_t and time_t are 64 bits under their plain names")
    sysroot = Path(TARGET["run"][TARGET["run"].index("-L") + 1]) if "-L" in TARGET["run"] else Path("/")
    libc = next(p for p in (sysroot / "lib" / "libc.so.6", sysroot / "lib" / TARGET["gnu"] / "libc.so.6")
                if p.exists())
    exported = dynamic_symbols(libc, "--defined-only")
    imported = dynamic_symbols(binary_under_test(), "--undefined-only")
    wide = {n: v for n in imported
            for v in (n + "64", f"__{n}64", f"__{n}_time64", f"__{n}64_time64", f"___{n}64") if v in exported}
    assert not wide, f"{ARCH}: 32-bit entry points imported (the 64-bit one exists): {wide}"
    assert {"__fstat64_time64", "readdir64", "statvfs64", "pwritev64", "__clock_gettime64"} <= imported


# --- abi_facts.c lists everything the Swift code takes from C ---------------------


def swift_code():
    """The Swift sources without comments and string literals."""
    out = []
    for path in SWIFT_SOURCES:
        s = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        s = re.sub(r'"""(?:.|\n)*?"""', '""', s)
        for line in s.split("\n"):
            line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
            out.append(re.sub(r"//.*", "", line))
    return "\n".join(out)


def c_accepts(tmp_path, names, template):
    """The names for which `template` (one declaration, `{n}` the name) compiles
    with the target's gcc after the headers the Swift code imports: one line per
    name in one file; a name whose line draws an error is not one."""
    names = sorted(n for n in names if n not in C_KEYWORDS)
    src = C_PRELUDE + "".join(template.format(n=n) + "\n" for n in names)
    first = C_PRELUDE.count("\n") + 1
    path = tmp_path / "probe.c"
    path.write_text(src)
    res = run([TARGET["cc"], "-fsyntax-only", "-fmax-errors=0", *C_DEFINES, str(path)],
              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    bad = {int(m) for m in re.findall(r"probe\.c:(\d+):\d+: error", res.stderr)}
    assert not {b for b in bad if b < first}, res.stderr   # the headers themselves compiled
    return {n for i, n in enumerate(names) if first + i not in bad}


def listed(kind):
    return set(re.findall(kind + r"\(([A-Za-z0-9_]+)", FACTS_C.read_text()))


def test_abi_facts_lists_every_c_constant_the_swift_code_uses(tmp_path):
    code = swift_code()
    candidates = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", code))
    from_c = c_accepts(tmp_path, candidates, "long long v_{n} = (long long)({n});")
    assert {"EINTR", "POLLIN", "O_CLOEXEC"} <= from_c      # the probe itself works
    missing = from_c - listed("CONST")
    assert not missing, f"C constants used by Swift but not in abi_facts.c / ABIReport.swift: {sorted(missing)}"


def test_abi_facts_lists_every_c_struct_the_swift_code_uses(tmp_path):
    code = swift_code()
    names = set(re.findall(r"\b[a-z_][A-Za-z0-9_]*\b", code))
    # libc structs named by tag in Swift (stat(), pollfd(...), [iovec], ...)
    tags = c_accepts(tmp_path, names, "unsigned long s_{n} = sizeof(struct {n});")
    assert {"stat", "pollfd"} <= tags
    # every struct the helpers' headers declare
    helpers = set()
    for h in HEADERS:
        helpers |= set(re.findall(r"typedef struct\s*\w*\s*\{[^}]*\}\s*(\w+)\s*;", h.read_text()))
    assert "cl_ip_endpoint" in helpers
    structs = {s for s in re.findall(r'STRUCT\("([^"]+)"', FACTS_C.read_text())}
    assert not (tags | helpers) - structs, f"structs not in abi_facts.c: {sorted((tags | helpers) - structs)}"
    # every field of a libc struct the Swift code reads or sets
    prefixes = {"st_": "stat", "f_": "statvfs", "iov_": "iovec"}
    fields = set(re.findall(r"\b((?:st|f|iov)_[a-z]+)\b", code))
    fields_listed = set(re.findall(r'FIELD\("([^"]+)", [^,]+, (\w+)\)', FACTS_C.read_text()))
    missing = {(prefixes[f.split("_")[0] + "_"], f) for f in fields} - fields_listed
    assert not missing, f"struct fields used by Swift but not in abi_facts.c: {sorted(missing)}"
    for field in ("fd", "events", "revents"):
        assert ("pollfd", field) in fields_listed
