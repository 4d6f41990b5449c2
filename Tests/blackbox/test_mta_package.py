"""Postern as the system's mail transport agent in the Debian package (issue 9,
item 5): what apt plans and does on a Debian 12 system with the package
installed, in a throwaway root (test_deploy.py's `debian_root`; never on this
machine, whose own MTA apt would remove).

Programs that send mail depend on "default-mta | mail-transport-agent"
(bsd-mailx) or recommend it (mdadm). With Postern installed the dependency is
met, so `apt install bsd-mailx smartmontools mdadm` must plan no other MTA;
without it apt picks exim4, which shows that the check below sees an MTA
when one is planned. Installing Postern over another MTA removes that one, as
Debian's MTA packages do to each other (Policy §7.6.2: Provides, Conflicts and
Replaces the virtual package mail-transport-agent).
"""

import re
from types import SimpleNamespace

import pytest

from test_deploy import _mta_links, deb, debian_root  # noqa: F401 (deb is a fixture)

# The MTA packages of Debian 12 by name, beside whatever the root's apt lists
# say provides mail-transport-agent or default-mta (both are checked).
KNOWN_MTAS = {"postfix", "exim4", "exim4-base", "exim4-config", "exim4-daemon-light", "exim4-daemon-heavy",
              "nullmailer", "dma", "msmtp-mta", "sendmail", "sendmail-bin", "opensmtpd", "courier-mta",
              "ssmtp", "esmtp-run", "masqmail", "citadel-mta", "lsb-invalid-mta"}
MAIL_PROGRAMS = (("bsd-mailx",), ("smartmontools", "mdadm"), ("bsd-mailx", "smartmontools", "mdadm"))


def _planned(plan: str, action: str) -> set:
    """Package names of one action (Inst, Remv, Conf) in `apt-get -s` output."""
    return set(re.findall(rf"^{action} (\S+)", plan, re.MULTILINE))


def _simulate(root, *packages) -> str:
    # Recommends on, as apt's default is (mdadm only recommends an MTA).
    return root.apt("-o", "APT::Install-Recommends=true", "-s", "install", *packages)


def _providers(root, virtual: str) -> set:
    """The packages the root's apt lists say provide a virtual package."""
    out = root.ok("apt-cache", "showpkg", virtual)
    section = out.partition("Reverse Provides:")[2]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def mta(deb):  # noqa: F811
    """One root taken through what the tests look at: the plans without
    Postern, nullmailer installed, the plan for Postern over it, then Postern
    really installed."""
    path, version, _ = deb
    with debian_root("mta") as root:
        ns = SimpleNamespace(root=root, version=version)
        ns.mtas = KNOWN_MTAS | _providers(root, "mail-transport-agent") | _providers(root, "default-mta")
        ns.plans_without_postern = {p: _simulate(root, *p) for p in MAIL_PROGRAMS}
        root.apt("--no-download", "install", "nullmailer")    # from the base's cache
        ns.nullmailer_sendmail = root.ok("dpkg", "-S", "/usr/sbin/sendmail").strip()
        ns.deb = root.put(path)
        ns.plan_over_nullmailer = root.apt("-s", "install", ns.deb)
        ns.install_over_nullmailer = root.apt("install", ns.deb)
        yield ns


def test_the_root_knows_the_mtas(mta):
    """The lists the plans come from name the MTAs (else the checks below
    would find none however wrong the package were)."""
    assert {"postfix", "exim4-daemon-light", "nullmailer", "dma", "msmtp-mta"} <= mta.mtas


def test_without_postern_bsd_mailx_pulls_in_exim4(mta):
    plan = mta.plans_without_postern[("bsd-mailx",)]
    assert "exim4-daemon-light" in _planned(plan, "Inst"), plan
    assert _planned(plan, "Inst") & mta.mtas


def test_installing_postern_removes_the_installed_mta(mta):
    """Conflicts + Replaces mail-transport-agent: apt removes nullmailer (its
    configuration stays, as after any removal) and Postern takes over
    /usr/sbin/sendmail."""
    assert mta.nullmailer_sendmail == "nullmailer: /usr/sbin/sendmail"
    plan = mta.plan_over_nullmailer
    assert _planned(plan, "Remv") == {"nullmailer"}, plan
    assert _planned(plan, "Inst") == {"postern"}, plan
    root = mta.root
    assert root.status("nullmailer") == "deinstall ok config-files", mta.install_over_nullmailer
    assert root.status("postern") == "install ok installed"
    assert root.ok("/usr/sbin/postern", "version") == f"postern {mta.version}\n"


def test_sendmail_mailq_newaliases_are_links_to_postern(mta):
    root = mta.root
    for link, text in _mta_links("/usr").items():
        assert root.path(link).is_symlink(), link
        assert root.ok("readlink", link).strip() == text, link
        target = "/usr/share/man/man8/postern.8.gz" if link.endswith(".gz") else "/usr/sbin/postern"
        assert root.ok("readlink", "-f", link).strip() == target, link
        assert root.ok("dpkg", "-S", link).strip() == f"postern: {link}", link
    # man follows the link to the page it shows.
    for name in ("sendmail", "mailq", "newaliases"):
        assert root.ok("man", "-w", name).strip() == "/usr/share/man/man8/postern.8.gz", name


@pytest.mark.parametrize("packages", MAIL_PROGRAMS, ids=lambda p: "+".join(p))
def test_mail_programs_plan_no_other_mta(mta, packages):
    """Issue 9 item 5: `apt install bsd-mailx smartmontools mdadm` on a board
    with Postern pulls in no other MTA, and does not remove Postern."""
    plan = _simulate(mta.root, *packages)
    installs = _planned(plan, "Inst")
    assert set(packages) <= installs, plan    # the plan is a real one
    assert not installs & mta.mtas, plan
    assert not [p for p in installs if re.match(r"(exim4|postfix|sendmail)", p)], plan
    assert not _planned(plan, "Remv"), plan
    # Without Postern the same request did plan an MTA (bsd-mailx and mdadm
    # each need one; smartmontools alone does not).
    assert _planned(mta.plans_without_postern[packages], "Inst") & mta.mtas


def test_another_mta_would_replace_postern(mta):
    """The conflict works both ways: installing nullmailer plans Postern's
    removal."""
    plan = _simulate(mta.root, "nullmailer")
    assert _planned(plan, "Remv") == {"postern"}, plan
    assert _planned(plan, "Inst") == {"nullmailer"}, plan


def test_installed_sendmail_drops_mail_while_the_daemon_is_stopped(mta):
    """The installed binary as cron would call it, in a root where no daemon
    runs: /usr/sbin/sendmail stores the message in the package's drop directory
    (mode 3733, made by the postinst) and exits 0, for root and for an ordinary
    user alike; that user cannot list the directory. newaliases exits 0."""
    root = mta.root
    root.ok("useradd", "--no-create-home", "--shell", "/bin/sh", "pmuser")
    assert root.run("newaliases").returncode == 0
    drop = root.path("/var/spool/postern/maildrop")
    assert oct(drop.stat().st_mode & 0o7777) == "0o3733"
    res = root.run("sh", "-c", "printf 'Subject: smartd\\n\\nsda failing\\n' | /usr/sbin/sendmail -i root")
    assert res.returncode == 0, res.stderr
    res = root.run("su", "-s", "/bin/sh", "pmuser", "-c",
                   "printf 'Subject: job\\n\\nout\\n' | /usr/sbin/sendmail -FCronDaemon -i -B8BITMIME -oem pmuser"
                   " && ! ls /var/spool/postern/maildrop")
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted(p for p in drop.iterdir() if p.name.startswith("m."))
    assert len(files) == 2, list(drop.iterdir())
    owners = {root.ok("stat", "-c", "%U %G %a", f"/var/spool/postern/maildrop/{p.name}").strip() for p in files}
    assert owners == {"root postern 640", "pmuser postern 640"}, owners
