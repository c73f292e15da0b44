"""Email rendering: subjects, parts, escaping, header safety, durations, links."""

from __future__ import annotations

import pytest
from jobtracker_common.models import RunStatus
from notifier.events import snapshot
from notifier.render import header_safe, human_duration, render_digest, render_event

from tests.support.notifier import make_run

DASH = "https://dash.example.com"


def test_failed_email_has_subject_text_and_html_with_the_run_facts() -> None:
    # Given a failed run of "backup" on core-sw-01
    run = make_run(RunStatus.FAILED, attempt=2, retry={"max_attempts": 3})
    # When it is rendered with a dashboard URL
    email = render_event("failed", snapshot(run), product="NetRaven", dashboard_url=DASH)
    # Then the subject follows the product convention and both parts carry the facts
    assert email.subject == "NetRaven Job Failed: backup on core-sw-01"
    for part in (email.text, email.html):
        for fact in ("backup", "demo", "core-sw-01", "failed", "2026-03-02 10:00:01 UTC", "1 min 35 s"):
            assert fact in part
        assert "DeviceUnreachable" in part and "ssh: connection refused" in part
        assert f"{DASH}/runs/{run.run_id}" in part
    assert "Attempt:   2 of 3" in email.text


def test_completed_email_shows_the_result_and_no_link_without_a_dashboard() -> None:
    email = render_event(
        "completed", snapshot(make_run(RunStatus.COMPLETED)), product="Acme", dashboard_url=None
    )
    assert email.subject == "Acme Job Completed: backup on core-sw-01"
    assert "bytes: 4096" in email.text
    assert "/runs/" not in email.text and "href" not in email.html


@pytest.mark.parametrize(
    ("kind", "title"),
    [("timed_out", "Job Timed Out"), ("retrying", "Job Retrying"), ("recovered", "Job Recovered")],
)
def test_every_event_kind_has_its_own_subject(kind: str, title: str) -> None:
    status = {"timed_out": RunStatus.TIMED_OUT, "retrying": RunStatus.RETRYING}.get(kind, RunStatus.COMPLETED)
    run = make_run(status, target=None, previous_status=RunStatus.FAILED)
    email = render_event(kind, snapshot(run), product="NetRaven", dashboard_url=None)
    assert email.subject == f"NetRaven {title}: backup"


def test_user_strings_are_escaped_in_html_and_flattened_in_the_subject() -> None:
    # Given hostile strings in every user-controlled field
    run = make_run(
        RunStatus.FAILED,
        job_name="<b>x</b>\r\nBcc: evil@example.com",
        target='"><img src=x onerror=alert(1)>',
        error={"type": "<i>T</i>", "message": "<script>alert(1)</script>"},
    )
    # When rendered
    email = render_event("failed", snapshot(run), product="NetRaven\r\nX-Injected: 1", dashboard_url=None)
    # Then the subject is one line, and no markup survives in the HTML part
    assert "\r" not in email.subject and "\n" not in email.subject
    assert "<b>" not in email.html and "<script>" not in email.html and "<img" not in email.html
    assert "&lt;b&gt;x&lt;/b&gt;" in email.html and "&lt;script&gt;" in email.html
    # And the plain-text part keeps user text literal (text is not a header; job name one line)
    assert "Job:       <b>x</b> Bcc: evil@example.com" in email.text


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("a\r\nBcc: x", "a Bcc: x"),
        ("a\u2028b\x00c\x85d", "a b c d"),
        ("zero\u200bwidth", "zero width"),
        ("x" * 300, "x" * 199 + "…"),
    ],
)
def test_header_safe_removes_every_line_break_and_control(raw: str, safe: str) -> None:
    assert header_safe(raw) == safe


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "—"),
        (450, "450 ms"),
        (1_500, "1.5 s"),
        (95_000, "1 min 35 s"),
        (3_723_000, "1 h 2 min"),
        (90_061_000, "1 d 1 h"),
    ],
)
def test_durations_read_like_a_human_wrote_them(ms: int | None, text: str) -> None:
    assert human_duration(ms) == text


def test_digest_lists_every_entry_and_counts_by_event() -> None:
    entries = [
        {"kind": "failed", "payload": snapshot(make_run(RunStatus.FAILED, job_name=f"job-{i}"))}
        for i in range(3)
    ] + [{"kind": "completed", "payload": snapshot(make_run(RunStatus.COMPLETED, job_name="<ok>"))}]
    email = render_digest(
        entries, product="NetRaven", dashboard_url=DASH, period_label="hourly, 2026-03-02 10:00 UTC"
    )
    assert email.subject == "NetRaven Job Digest (hourly, 2026-03-02 10:00 UTC): 4 updates"
    assert "Job Failed: 3" in email.text and "Job Completed: 1" in email.text
    assert all(f"job-{i}" in email.html for i in range(3))
    assert "&lt;ok&gt;" in email.html and "<ok>" not in email.html
