"""Alert bodies, URL redaction, webhook validation and the retry backoff."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftpilot.alerts.webhooks import (
    EVENT_KINDS,
    AlertSettings,
    WebhookSpec,
    backoff,
    json_body,
    redact_url,
    slack_body,
)
from driftpilot.runs.plane import PlaneEvent


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "https://hooks.slack.com/…",
        ),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("https://user:pw@example.org/a#frag", "https://example.org/…"),
        ("https://example.org", "https://example.org"),
        ("http://[::1]:9000/x/y", "http://[::1]:9000/…"),
        # The first path segment can be the secret itself.
        ("https://api.telegram.org/botSECRET123:AAH/sendMessage", "https://api.telegram.org/…"),
        ("https://ntfy.sh/mysecrettopic", "https://ntfy.sh/…"),
    ],
)
def test_redaction_keeps_no_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("SECRET", "token=abc", "pw", "frag", "B000", "mysecrettopic", "sendMessage"):
        if secret in url:
            assert secret not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "http:///nohost",
        "http://exa mple.org/x",
        "http://example.org:99999/x",
        "javascript:alert(1)",
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(ValidationError):
        WebhookSpec(url=url)


def test_events_default_to_all_and_unknown_ones_are_refused() -> None:
    assert WebhookSpec(url="https://example.org/h").events == list(EVENT_KINDS)
    assert WebhookSpec(
        url="https://example.org/h", events=["rollback", "promotion", "rollback"]
    ).events == [
        "promotion",
        "rollback",
    ]
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", events=["coffee"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", events=[])
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", format="teams")  # type: ignore[arg-type]


def test_json_and_slack_bodies() -> None:
    event = PlaneEvent(
        kind="rollback", model="flights", run_id="rb-1", detail={"from": 3, "to": 2, "by": "cy"}
    )
    body = json_body(event)
    assert body["event"] == "rollback" and body["model"] == "flights" and body["run_id"] == "rb-1"
    assert body["detail"] == {"from": 3, "to": 2, "by": "cy"}
    assert "v3 -> v2 by cy" in body["text"]
    slack = slack_body(event)
    assert set(slack) == {"text", "blocks"} and slack["text"] == body["text"]
    assert [b["type"] for b in slack["blocks"]] == ["section", "section"]
    assert all(f["type"] == "mrkdwn" for f in slack["blocks"][1]["fields"])
    waiting = PlaneEvent(
        kind="approval_waiting", model="m", run_id="r", detail={"request": {"description": "ok?"}}
    )
    assert json_body(waiting)["text"].endswith("waits for approval (run r): ok?")


def test_backoff_doubles_and_is_bounded() -> None:
    conf = AlertSettings(backoff_s=0.5, max_backoff_s=3.0)
    assert [backoff(a, conf) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValidationError):
        AlertSettings(retries=11)
