"""CHUNKING (RFC 3030): messages in BDAT chunks are received, kept and relayed
faithfully (with DATA: we offer no BINARYMIME, so the text is lines), and the
bytes of a refused BDAT never become commands.

The client here is a raw socket: it sends exactly the bytes RFC 3030 §4.2's
pipelined example shows, and what a hostile client would.
"""
import socket

from conftest import make_message


def converse(port, data: bytes, timeout=10):
    """Sends ``data`` at once (pipelined) after the greeting; returns every reply
    line until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220 ")
    s.sendall(data)
    lines = []
    while True:
        line = f.readline()
        if not line:
            break
        lines.append(line.decode().rstrip("\r\n"))
    s.close()
    return lines


def final_codes(lines):
    return [l[:3] for l in lines if len(l) > 3 and l[3] == " "]


ENVELOPE = b"EHLO chunker.example\r\nMAIL FROM:<cam@lan.example>\r\nRCPT TO:<ops@example.com>\r\n"


def test_rfc3030_4_2_pipelined_chunks_relayed_byte_for_byte(daemon, upstream):
    """RFC 3030 §4.2: three pipelined BDAT chunks, the last with LAST, each
    answered 250; the upstream gets the text exactly as sent (chunk boundaries
    in the middle of a line and of a CRLF, a line that starts with a dot)."""
    msg = make_message("bdat", msgid="bdat-1", body=b"line one\r\n.starts with a dot\r\n..two dots\r\nlast\r\n")
    cuts = [0, 37, len(msg) - 7, len(msg)]       # the second cut falls inside the final CRLF's line
    data = ENVELOPE
    for i in range(3):
        chunk = msg[cuts[i]:cuts[i + 1]]
        data += b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if i == 2 else b"") + chunk
    lines = converse(daemon.port, data + b"QUIT\r\n")
    assert final_codes(lines) == ["250", "250", "250", "250", "250", "250", "221"], lines
    assert any("CHUNKING" in l for l in lines)
    m = upstream.wait_for_match(lambda m: b"bdat-1@" in m.content)[0]
    assert m.content.endswith(msg), m.content[-200:]


def test_rfc3030_bdat_bare_lf_text_is_relayed_as_crlf_lines(daemon, upstream):
    """Bare LF in BDAT text is stored and relayed as CRLF, like DATA's (RFC 5321
    §2.3.8); an unfinished last line gets its CRLF."""
    body = b"Subject: lf\nMessage-ID: <bdat-lf@x>\n\nalarm 1\nalarm 2"
    lines = converse(daemon.port, ENVELOPE + b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n")
    assert final_codes(lines)[-2:] == ["250", "221"], lines
    m = upstream.wait_for_match(lambda m: b"bdat-lf@" in m.content)[0]
    assert m.content.endswith(b"Subject: lf\r\nMessage-ID: <bdat-lf@x>\r\n\r\nalarm 1\r\nalarm 2\r\n"), m.content


def test_rfc3030_refused_bdat_bytes_are_not_commands(daemon, upstream):
    """A BDAT refused (no recipient yet) still has its bytes read and thrown
    away: a transaction hidden in them is never executed (SMTP smuggling through
    CHUNKING)."""
    inner = (b"\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\n"
             b"Subject: smuggled\r\nMessage-ID: <bdat-smuggled@x>\r\n\r\nowned\r\n.\r\n")
    data = (b"EHLO x\r\nMAIL FROM:<a@lan.example>\r\nBDAT %d LAST\r\n" % len(inner) + inner
            + b"NOOP\r\nQUIT\r\n")
    lines = converse(daemon.port, data)
    assert final_codes(lines) == ["250", "250", "503", "250", "221"], lines
    # A well-formed message after it proves the upstream is reachable; the
    # smuggled one never arrives.
    ok = make_message("after", msgid="bdat-after")
    converse(daemon.port, ENVELOPE + b"BDAT %d LAST\r\n" % len(ok) + ok + b"QUIT\r\n")
    upstream.wait_for_match(lambda m: b"bdat-after@" in m.content)
    assert not [m for m in upstream.messages if b"bdat-smuggled" in m.content]


def test_rfc3030_bdat_without_a_size_closes_with_421(daemon):
    """A BDAT whose size cannot be read leaves no way to find the chunk's end:
    501 5.5.4, then 421 and close, rather than read its text as commands."""
    lines = converse(daemon.port, ENVELOPE + b"BDAT lots LAST\r\nMAIL FROM:<evil@x.example>\r\n")
    assert final_codes(lines)[-2:] == ["501", "421"], lines


def test_rfc1870_bdat_over_the_size_limit_is_552_and_the_session_goes_on(make_daemon, upstream):
    """RFC 3030 §2 / RFC 1870: a chunk past max_message_size is read, answered
    552 5.3.4, and the session can send another message."""
    d = make_daemon(upstream.port, receiver__max_message_size="2K")
    big = b"x" * 3000
    ok = make_message("small", msgid="bdat-small")
    lines = converse(d.port, ENVELOPE + b"BDAT %d LAST\r\n" % len(big) + big
                     + b"MAIL FROM:<cam@lan.example>\r\nRCPT TO:<ops@example.com>\r\n"
                     + b"BDAT %d LAST\r\n" % len(ok) + ok + b"QUIT\r\n")
    codes = final_codes(lines)
    assert codes[3] == "552" and codes[-2:] == ["250", "221"], lines
    assert any(l.startswith("552 5.3.4") for l in lines)
    upstream.wait_for_match(lambda m: b"bdat-small@" in m.content)
