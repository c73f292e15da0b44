"""Every email SES accepted, written once as an `.eml` file to the outbox folder.

moto keeps sent mail in its SES backend (SESv2 sends go through the same backend); when moto
runs in this process the outbox reads it there. Against another endpoint it asks LocalStack's
`/_aws/ses` or moto's `/moto-api/data.json`, whichever answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("jobtracker.local")


@dataclass(frozen=True)
class SentMail:
    message_id: str
    raw: str | None = None
    source: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None

    def to_eml(self, sent_at: datetime) -> bytes:
        if self.raw is not None:
            return self.raw.encode()
        message = EmailMessage()
        message["From"] = self.source
        message["To"] = ", ".join(self.to)
        if self.cc:
            message["Cc"] = ", ".join(self.cc)
        message["Subject"] = self.subject
        message["Date"] = format_datetime(sent_at)
        message["Message-ID"] = f"<{self.message_id}@local.ses>"
        if self.text is not None:
            message.set_content(self.text)
            if self.html is not None:
                message.add_alternative(self.html, subtype="html")
        else:
            message.set_content(self.html or "", subtype="html")
        return bytes(message)


MailSource = Callable[[], list[SentMail]]


def in_process_moto(account: str, region: str) -> MailSource:
    """Mail sent since the previous read: moto's list only grows, and converting all of it on
    every poll would make the outbox slower the longer the stack runs."""
    read_so_far = [0]

    def read() -> list[SentMail]:
        from moto.ses.models import ses_backends

        sent = ses_backends[account][region].sent_messages
        if len(sent) < read_so_far[0]:  # the backend was reset
            read_so_far[0] = 0
        new = list(sent[read_so_far[0] :])
        read_so_far[0] += len(new)
        out = []
        for message in new:
            raw = getattr(message, "raw_data", None)
            if raw is not None:
                out.append(SentMail(message.id, raw=raw))
                continue
            destinations = getattr(message, "destinations", {}) or {}
            body = getattr(message, "body", "") or ""
            # moto keeps only one body part of a simple send: HTML when there was HTML.
            looks_html = "<html" in body.lower() or "</p>" in body.lower() or "</div>" in body.lower()
            out.append(
                SentMail(
                    message.id,
                    source=message.source,
                    to=tuple(destinations.get("ToAddresses", [])),
                    cc=tuple(destinations.get("CcAddresses", [])),
                    subject=getattr(message, "subject", ""),
                    text=None if looks_html else body,
                    html=body if looks_html else None,
                )
            )
        return out

    return read


def over_http(endpoint: str) -> MailSource:
    def localstack() -> list[SentMail]:
        with urllib.request.urlopen(f"{endpoint}/_aws/ses", timeout=5) as response:  # noqa: S310
            data = json.load(response)
        out = []
        for m in data.get("messages", []):
            if m.get("RawData"):
                out.append(SentMail(m["Id"], raw=m["RawData"]))
                continue
            body = m.get("Body", {})
            out.append(
                SentMail(
                    m["Id"],
                    source=m.get("Source", ""),
                    to=tuple(m.get("Destination", {}).get("ToAddresses", [])),
                    subject=m.get("Subject", ""),
                    text=body.get("text_part"),
                    html=body.get("html_part"),
                )
            )
        return out

    cache: dict[str, Any] = {"at": 0.0, "mail": []}

    def moto() -> list[SentMail]:
        # data.json dumps every moto model (all table items too): at most once a second.
        if time.monotonic() - cache["at"] < 1.0:
            return list(cache["mail"])
        cache["at"] = time.monotonic()
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:  # noqa: S310
            data = json.load(response)
        out = []
        for kind in ("Message", "RawMessage"):
            for m in data.get("ses", {}).get(kind, []):
                if "raw_data" in m:
                    out.append(SentMail(m["id"], raw=m["raw_data"]))
                else:
                    dest = m.get("destinations", {})
                    out.append(
                        SentMail(
                            m["id"],
                            source=m.get("source", ""),
                            to=tuple(dest.get("ToAddresses", [])),
                            subject=m.get("subject", ""),
                            text=m.get("body"),
                        )
                    )
        cache["mail"] = out
        return out

    chosen: list[MailSource] = []

    def read() -> list[SentMail]:
        if chosen:
            return chosen[0]()
        for candidate in (localstack, moto):
            try:
                result = candidate()
            except Exception as exc:
                log.debug("outbox source %s unavailable: %s", candidate.__name__, exc)
                continue
            chosen.append(candidate)
            return result
        return []

    return read


class Outbox:
    def __init__(self, directory: Path, source: MailSource, *, poll_interval: float = 0.5) -> None:
        self.directory = directory
        self._source = source
        self.poll_interval = poll_interval
        self._written: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for existing in directory.glob("*.eml"):
            self._written.add(existing.stem.split("-", 1)[-1])

    def poll(self) -> list[Path]:
        written = []
        for mail in self._source():
            if mail.message_id in self._written:
                continue
            now = datetime.now(UTC)
            path = self.directory / f"{now.strftime('%Y%m%dT%H%M%S%f')}-{mail.message_id}.eml"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(mail.to_eml(now))
            tmp.rename(path)  # atomic: a reader never sees half a message
            self._written.add(mail.message_id)
            written.append(path)
            log.info("email to %s: %s -> %s", ", ".join(mail.to) or "(raw)", mail.subject, path.name)
        return written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("outbox poll failed")
            self._stop.wait(self.poll_interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
