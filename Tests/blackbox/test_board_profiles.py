"""The board profiles under Board/ (issue 10 item 3): each one is a valid
configuration for the binary under test, its memory budget is the one written
down next to it (budget.txt, quoted by Board/README.md), and its numbers keep
the promises the profiles' comments make.

Every test is marked `board`, so it also runs against the aarch64 and armv7
binaries under qemu-user (POSTERN_BIN is then a wrapper script): the binary is
only ever run as a command. `check-config` opens nothing but the file it is
given (it does not need /var/spool/postern, which does not exist on a test
machine), so the profiles are checked where they are, unchanged.
"""

import re
import subprocess

import pytest

from conftest import POSTERN_BIN, REPO

pytestmark = pytest.mark.board

BOARD = REPO / "Board"
FAMILIES = ["beaglebone-black", "generic-64mb", "pi-3-4-5", "pi-zero-2w"]
PROFILES = sorted(p.parent.name for p in BOARD.glob("*/postern.conf"))

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SIZE_UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB}
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# What the 64 MB board may spend on Postern's own allocations: the fixed
# buffers plus the whole queue index of a full spool.
GENERIC_64MB_BUDGET_BOUND_KIB = 1024
# RSS beside the budget: README.md's "Measured" gives 5.3 MiB idle and 9.2 MiB
# after a TLS connection (shared libraries, OpenSSL's state); rounded up.
RSS_BESIDE_BUDGET = 10 * MIB
# max_message_size and segment_size above this are refused on a 32-bit (armv7)
# board (postern.conf(5)); max_size is 64 bits everywhere.
LARGEST_SIZE_ON_32_BIT = 1 * GIB


def size(text):
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip(), re.IGNORECASE)
    assert m, f"not a size: {text!r}"
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()]


def duration(text):
    m = re.fullmatch(r"(\d+)([smhd]?)", text.strip(), re.IGNORECASE)
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * DURATION_UNITS[m.group(2).lower()]


def settings(text):
    """{(section, key): value} of the uncommented `key = value` lines of a
    configuration, with trailing comments (`   # ...`) removed."""
    out, section = {}, ""
    for line in text.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[(section, key.strip())] = value.strip()
    return out


class Checked:
    """One profile as `check-config` sees it."""

    def __init__(self, family):
        self.family = family
        self.path = BOARD / family / "postern.conf"
        self.run = subprocess.run([POSTERN_BIN, "check-config", "--config", str(self.path)],
                                  capture_output=True, text=True, timeout=60)
        out = self.run.stdout
        start = out.find("# memory budget")
        self.budget = out[start:] if start >= 0 else ""
        self.resolved = settings(out[:start] if start >= 0 else out)
        self.written = settings(self.path.read_text())
        self.budget_txt = (BOARD / family / "budget.txt").read_text()

    def number(self, pattern):
        m = re.search(pattern, self.budget)
        assert m, f"{self.family}: no {pattern!r} in the budget:\n{self.budget}"
        return int(m.group(1))

    @property
    def fixed_kib(self):
        return self.number(r"fixed total\s+(\d+) KiB")

    @property
    def index_max_kib(self):
        return self.number(r"at most (\d+) KiB if max_size were filled")


_checked = {}


def checked(family):
    if family not in _checked:
        _checked[family] = Checked(family)
    return _checked[family]


def test_every_family_has_a_profile():
    assert PROFILES == FAMILIES, f"Board/*/postern.conf: {PROFILES}"


@pytest.mark.parametrize("family", PROFILES)
def test_profile_is_valid_and_its_budget_is_the_one_written_down(family):
    c = checked(family)
    assert c.run.returncode == 0, c.run
    assert c.run.stdout.splitlines()[0] == f"# {c.path}: OK", c.run.stdout
    assert c.run.stderr == "", c.run.stderr
    assert c.budget, c.run.stdout
    assert c.budget == c.budget_txt, (
        f"Board/{family}/budget.txt differs from what check-config prints:\n{c.budget}")


@pytest.mark.parametrize("family", PROFILES)
def test_profile_writes_each_tuned_key_itself(family):
    # A tuned value must be written, not left to a default that could change
    # under it; check-config must resolve it to the same value.
    c = checked(family)
    for key in [("receiver", "max_connections"), ("receiver", "max_message_size"),
                ("spool", "max_size"), ("spool", "segment_size"), ("spool", "max_age"),
                ("retry", "initial"), ("retry", "max")]:
        assert key in c.written, f"{family}: {key} is not written in the profile"
        assert c.resolved[key] == c.written[key], (key, c.resolved[key], c.written[key])


@pytest.mark.parametrize("family", PROFILES)
def test_profile_listens_on_loopback_and_names_a_placeholder_upstream(family):
    r = checked(family).resolved
    assert r[("receiver", "listen")] == "127.0.0.1:25, [::1]:25"
    assert r[("receiver", "allow_clients")] == "127.0.0.0/8, ::1/128"
    assert r[("spool", "dir")] == "/var/spool/postern"
    assert (r[("upstream", "host")], r[("upstream", "port")], r[("upstream", "tls")],
            r[("upstream", "verify")]) == ("smtp.example.com", "587", "starttls", "yes")


@pytest.mark.parametrize("family", PROFILES)
def test_spool_sizes_leave_room_to_give_space_back(family):
    r = checked(family).resolved
    max_size = size(r[("spool", "max_size")])
    # Space comes back a segment at a time: at least four segments in the spool.
    assert size(r[("spool", "segment_size")]) <= max_size // 4, r
    # One message cannot take more than a quarter of the spool.
    assert size(r[("receiver", "max_message_size")]) <= max_size // 4, r
    # Every size is one that a 32-bit board accepts too.
    assert size(r[("spool", "segment_size")]) <= LARGEST_SIZE_ON_32_BIT, r
    assert size(r[("receiver", "max_message_size")]) <= LARGEST_SIZE_ON_32_BIT, r
    assert duration(r[("retry", "initial")]) <= duration(r[("retry", "max")]), r


@pytest.mark.parametrize("family", PROFILES)
def test_worst_case_memory_fits_the_units_memory_max(family):
    c = checked(family)
    m = re.search(r"^MemoryMax=(\d+)([KMG])$", (REPO / "Deploy" / "postern.service").read_text(), re.MULTILINE)
    assert m, "MemoryMax= not found in Deploy/postern.service"
    memory_max = int(m.group(1)) * SIZE_UNITS[m.group(2)]
    worst = (c.fixed_kib + c.index_max_kib) * KIB + RSS_BESIDE_BUDGET
    assert worst <= memory_max, f"{family}: {worst / MIB:.1f} MiB > MemoryMax {memory_max / MIB:.0f} MiB"


def test_generic_64mb_budget_stays_under_its_bound():
    c = checked("generic-64mb")
    assert c.fixed_kib + c.index_max_kib < GENERIC_64MB_BUDGET_BOUND_KIB, c.budget


def test_smaller_boards_get_fewer_connections_and_smaller_spools():
    def conns(f):
        return int(checked(f).resolved[("receiver", "max_connections")])

    def spool(f):
        return size(checked(f).resolved[("spool", "max_size")])

    assert conns("generic-64mb") < conns("pi-zero-2w") <= conns("pi-3-4-5")
    assert conns("beaglebone-black") < conns("pi-3-4-5")
    assert spool("generic-64mb") < spool("beaglebone-black") < spool("pi-zero-2w") < spool("pi-3-4-5")
    assert checked("generic-64mb").fixed_kib < checked("pi-zero-2w").fixed_kib < checked("pi-3-4-5").fixed_kib


@pytest.mark.parametrize("family", PROFILES)
def test_readme_table_quotes_the_profile(family):
    # Board/README.md's table row for the family gives its max_connections,
    # max_size and fixed budget as they are.
    c = checked(family)
    rows = [line for line in (BOARD / "README.md").read_text().splitlines()
            if line.startswith(f"| `{family}`")]
    assert len(rows) == 1, f"Board/README.md: {len(rows)} table rows for {family}"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert c.resolved[("receiver", "max_connections")] in cells, cells
    assert c.resolved[("spool", "max_size")] in cells, cells
    assert f"{c.fixed_kib} KiB" in cells, cells
