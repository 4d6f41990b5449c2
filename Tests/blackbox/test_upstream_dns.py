"""Name resolution never stalls the loop (issue 8 item 5). The upstream's name is
looked up in a child process with a 10 s limit; meanwhile the receiver answers as
usual. The daemon runs in a private mount namespace whose /etc/resolv.conf points
at a loopback UDP socket that swallows every query, as a LAN whose DNS server is
gone, and whose /etc/hosts gives one name two addresses."""

import os
import shutil
import socket
import statistics
import time

import pytest

from conftest import RawClient, send_one, wait_until


def namespaced(d, workdir, resolv=None, hosts=None):
    """Runs daemon ``d`` with its own /etc/resolv.conf and /etc/hosts."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("this test needs root and unshare(1) for a private /etc/resolv.conf")
    mounts = []
    for name, text in (("resolv.conf", resolv), ("hosts", hosts)):
        if text is not None:
            f = workdir / name
            f.write_text(text)
            mounts.append(f"mount --bind {f} /etc/{name}")
    d.wrapper = ["unshare", "-m", "--propagation", "private", "bash", "-c",
                 " && ".join(mounts + ['exec "$@"']), "wrap"]


@pytest.fixture
def black_hole_dns():
    """A UDP socket on 127.0.0.1:53 that reads every query and answers none."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 53))
    except OSError as e:
        pytest.fail(f"cannot bind 127.0.0.1:53 for the silent name server: {e}")
    yield s
    s.close()


def test_silent_dns_does_not_stall_the_receiver(make_daemon, upstream, workdir, black_hole_dns):
    """While the lookup hangs, every NOOP is answered at once; after 10 s the
    lookup is given up with a sentence, and the message stays queued."""
    d = make_daemon(upstream.port, start=False)
    d.settings["upstream"] = {"host": "smtp.unreachable.test", "port": str(upstream.port), "tls": "none"}
    namespaced(d, workdir, resolv="nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    d.start()
    send_one(d.port, "waits for DNS")          # starts the lookup
    latencies = []
    with RawClient("127.0.0.1", d.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO probe.test")[0] == 250
        end = time.monotonic() + 5
        while time.monotonic() < end:
            t = time.monotonic()
            assert c.cmd("NOOP")[0] == 250
            latencies.append(time.monotonic() - t)
            time.sleep(0.02)
    worst, median = max(latencies), statistics.median(latencies)
    print(f"\n{len(latencies)} NOOPs during the hung lookup: median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
    assert median < 0.1 and worst < 0.5, f"the receiver stalled: median {median:.3f}s, worst {worst:.3f}s"
    line = d.wait_for_log("cannot resolve smtp.unreachable.test", timeout=20)
    assert "no answer from the name server within 10s" in line[0]
    assert upstream.mail_count == 0
    assert not d.events("failed")


def test_every_address_is_tried(make_daemon, upstream, workdir):
    """A name with an IPv6 and an IPv4 address where only IPv4 listens: the
    refused one is skipped and the other delivers."""
    d = make_daemon(upstream.port, start=False)
    d.settings["upstream"] = {"host": "dual.test", "port": str(upstream.port), "tls": "none"}
    namespaced(d, workdir, hosts="::1 dual.test\n127.0.0.1 dual.test\n")
    d.start()
    send_one(d.port, "two addresses")
    (m,) = upstream.wait_for(1)
    assert b"two addresses" in m.content


def test_unknown_name_is_said_in_words(make_daemon, upstream, workdir):
    d = make_daemon(upstream.port, start=False)
    d.settings["upstream"] = {"host": "nowhere.test", "port": str(upstream.port), "tls": "none"}
    namespaced(d, workdir, hosts="127.0.0.1 localhost\n", resolv="")
    d.start()
    send_one(d.port, "no such host")
    line = d.wait_for_log("cannot resolve nowhere.test")
    assert "level=warning event=deferred" in line[0]
