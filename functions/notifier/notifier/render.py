"""Email rendering: Jinja2 templates (HTML autoescaped), header-safe subjects, human durations.

Every string a user controls (job name, target, error message, result) reaches the email only
through a template: HTML parts are autoescaped, and the subject — the one header that carries
user text — has every control character (CR/LF included) replaced, so it cannot grow a header.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from jobtracker_common.timeutil import parse_iso

if TYPE_CHECKING:
    from jinja2 import Environment

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
SUBJECT_LIMIT = 200

TITLES = {
    "completed": "Job Completed",
    "failed": "Job Failed",
    "timed_out": "Job Timed Out",
    "retrying": "Job Retrying",
    "recovered": "Job Recovered",
}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def header_safe(value: str, limit: int = SUBJECT_LIMIT) -> str:
    """One line, no control characters (CR/LF/NUL/NEL/LS/PS become a space), bounded length."""
    cleaned = _CONTROL.sub(" ", unicodedata.normalize("NFC", value))
    if not cleaned.isascii():  # no ASCII character is a format character (Cf)
        cleaned = "".join(ch if unicodedata.category(ch) != "Cf" else " " for ch in cleaned)
    cleaned = re.sub(r" {2,}", " ", cleaned).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def human_duration(milliseconds: int | float | None) -> str:
    if milliseconds is None:
        return "—"
    if milliseconds < 1000:
        return f"{int(milliseconds)} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown)


def human_time(value: str | None) -> str:
    if not value:
        return "—"
    return parse_iso(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(value: Any) -> str:
    return header_safe(str(value), limit=500)


@cache
def environment() -> Environment:
    # Imported on first render (~0.1 s): records that send nothing never pay for it.
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("notifier", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Compiled once per process; without this every render stats the template file to see
        # whether it changed (it never does in a deployed function).
        auto_reload=False,
    )
    env.filters["duration"] = human_duration
    env.filters["when"] = human_time
    env.filters["one_line"] = _one_line
    return env


def subject_for(kind: str, payload: dict[str, Any], product: str) -> str:
    name = payload.get("job_name") or payload.get("job_id") or "job"
    target = payload.get("target")
    tail = f"{name} on {target}" if target else str(name)
    return header_safe(f"{product} {TITLES.get(kind, 'Job Update')}: {tail}")


def run_link(dashboard_url: str | None, run_id: str | None) -> str | None:
    if not dashboard_url or not run_id:
        return None
    return f"{dashboard_url}/runs/{run_id}"


def render_event(
    kind: str, payload: dict[str, Any], *, product: str, dashboard_url: str | None
) -> RenderedEmail:
    context = {
        "kind": kind,
        "title": TITLES.get(kind, "Job Update"),
        "product": product,
        "run": payload,
        "link": run_link(dashboard_url, payload.get("run_id")),
        "result_lines": _result_lines(payload.get("result")),
    }
    env = environment()
    return RenderedEmail(
        subject=subject_for(kind, payload, product),
        text=env.get_template("event.txt.j2").render(context),
        html=env.get_template("event.html.j2").render(context),
    )


def render_digest(
    entries: list[dict[str, Any]],
    *,
    product: str,
    dashboard_url: str | None,
    period_label: str,
    omitted: int = 0,
) -> RenderedEmail:
    rows = [
        {
            **e["payload"],
            "kind": e["kind"],
            "title": TITLES.get(e["kind"], "Job Update"),
            "link": run_link(dashboard_url, e["payload"].get("run_id")),
        }
        for e in entries
    ]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["title"]] = counts.get(row["title"], 0) + 1
    context = {
        "product": product,
        "rows": rows,
        "counts": counts,
        "period": period_label,
        "omitted": omitted,
    }
    total = len(rows) + omitted
    env = environment()
    return RenderedEmail(
        subject=header_safe(
            f"{product} Job Digest ({period_label}): {total} update{'s' if total != 1 else ''}"
        ),
        text=env.get_template("digest.txt.j2").render(context),
        html=env.get_template("digest.html.j2").render(context),
    )


def _result_lines(result: Any) -> list[tuple[str, str]]:
    if not isinstance(result, dict):
        return []
    lines = []
    for key, value in list(result.items())[:10]:
        text = str(value)
        lines.append((str(key), text if len(text) <= 300 else text[:299] + "…"))
    return lines
