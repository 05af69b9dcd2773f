#!/usr/bin/env python3
"""Local SMTP sink for the swiftchat development and test stacks.

Listens on loopback and keeps every accepted message as an RFC 5322 ``.eml`` file (the
raw DATA bytes, unchanged) in a folder, so that a developer or a test can open the
verification link a Worker sent. Nothing is relayed anywhere.

File names are ``<epoch-ms>-<counter>.eml`` (13-digit milliseconds, 6-digit counter), so
a plain sort is arrival order. Each file is written under a hidden temporary name and
renamed into place, so a reader never sees a half-written message.

Any recipient in the domain ``reject.test`` is refused with
``550 5.1.1 mailbox unavailable``: tests use it to make an email task fail on purpose.

A message to the domain ``slow.test`` is answered only after SLOW_SECONDS: the sink first
appends the recipients to ``.attempts/<recipient>`` in the folder (one line per DATA), so a
test can kill the Worker while it waits for the answer. A message whose client went away
during the wait is not stored (no 250 was ever sent for it).

Run with the project's venv (aiosmtpd):
    .venv/bin/python scripts/smtp_sink.py --host 127.0.0.1 --port 2525 --maildir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

REJECTED_DOMAIN = "reject.test"
REJECT_REPLY = "550 5.1.1 mailbox unavailable"
SLOW_DOMAIN = "slow.test"
SLOW_SECONDS = 5.0

log = logging.getLogger("smtp-sink")


class MaildirSink:
    """aiosmtpd handler: refuses reject.test recipients, stores everything else."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].strip().rstrip(">").lower()
        if domain == REJECTED_DOMAIN:
            log.info("refused RCPT %s", address)
            return REJECT_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:  # only when decode_data=True, which this sink does not use
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
        slow = [a for a in envelope.rcpt_tos if a.rpartition("@")[2].strip(">").lower() == SLOW_DOMAIN]
        if slow:
            attempts = self.maildir / ".attempts"
            attempts.mkdir(exist_ok=True)
            for address in slow:
                with open(attempts / address.strip("<>").lower(), "a") as handle:
                    handle.write(f"{time.time():.3f}\n")
            await asyncio.sleep(SLOW_SECONDS)
            if server.transport is None or server.transport.is_closing():
                log.info("client left during the slow DATA for %s: not stored", ",".join(slow))
                return "451 4.3.0 client went away"
        path = self.store(raw)
        log.info("stored %s from=%s to=%s bytes=%d", path.name, envelope.mail_from,
                 ",".join(envelope.rcpt_tos), len(raw))
        return "250 OK: queued as " + path.stem

    def store(self, raw: bytes) -> Path:
        name = f"{int(time.time() * 1000):013d}-{next(self.counter):06d}.eml"
        final = self.maildir / name
        temp = self.maildir / f".{name}.{os.getpid()}.tmp"
        with open(temp, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        return final


async def serve(host: str, port: int, maildir: Path) -> None:
    maildir.mkdir(parents=True, exist_ok=True)
    handler = MaildirSink(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="swiftchat-smtp-sink", ident="swiftchat SMTP sink",
                     enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024),
        host=host, port=port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d, saving to %s", host, port, maildir)
    await stop.wait()
    server.close()
    await server.wait_closed()
    log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO; this sink logs each stored or refused message.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.maildir.resolve()))


if __name__ == "__main__":
    main()
