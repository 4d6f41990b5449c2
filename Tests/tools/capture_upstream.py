#!/usr/bin/python3
"""A capture upstream for `make run`: an aiosmtpd SMTP receiver on loopback that
prints every message it is given, so you can watch Postern forward mail.

    capture_upstream.py [--host 127.0.0.1] [--port 2526]
"""
import argparse
import signal
import sys

from aiosmtpd.controller import Controller


class Printer:
    async def handle_DATA(self, server, session, envelope):
        text = envelope.original_content.decode("utf-8", "replace")
        print(f"=== message from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)} "
              f"({len(envelope.original_content)} bytes)", flush=True)
        print(text.rstrip("\r\n").replace("\r\n", "\n"), flush=True)
        print("=== end", flush=True)
        return "250 2.0.0 Ok: captured"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2526)
    args = ap.parse_args()
    controller = Controller(Printer(), hostname=args.host, port=args.port)
    controller.start()
    print(f"capture upstream listening on {args.host}:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()

if __name__ == "__main__":
    main()
