"""The chat without a browser: sign-in (API keys and password users), roles read again at every
action, refusals, charts, and where Chainlit's files and the session secret go."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftpilot.core.errors import ConfigError, InvalidPrincipal
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane, RunView
from driftpilot.store.users import add_user, check_password, hash_password, list_users, verify_user
from ui import charts, health, launch
from ui.chat import Chat, Identity, current_role, sign_in
from ui.intents import parse
from ui.markup import plain


@pytest.fixture
def cp(settings: Settings) -> Iterator[ControlPlane]:
    plane = ControlPlane(settings)
    yield plane
    plane.close()


def test_passwords_are_salted_scrypt_and_checked_exactly() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two and one.startswith("scrypt$16384$8$1$")  # a fresh salt each time
    assert check_password("correct horse", one) and check_password("correct horse", two)
    assert not check_password("correct horse ", one)
    assert not check_password("correct horse", "md5$abc") and not check_password("x", "garbage")


def test_password_users_follow_the_identity_rule(cp: ControlPlane) -> None:
    made = add_user(cp.store, " Ann ", "approver", "ann-password-1")
    assert (made.name, made.role) == ("ann", "approver")
    assert verify_user(cp.store, "\uff21\uff2e\uff2e", "ann-password-1") is not None
    assert verify_user(cp.store, "ann", "ann-password-2") is None
    assert verify_user(cp.store, "nobody", "ann-password-1") is None
    assert verify_user(cp.store, "ann\u200b", "ann-password-1") is None
    with pytest.raises(ConfigError, match="already exists"):
        add_user(cp.store, "ANN", "viewer", "another-password")
    with pytest.raises(ConfigError, match="at least 8"):
        add_user(cp.store, "bob", "viewer", "short")
    with pytest.raises(ConfigError, match="unknown role"):
        add_user(cp.store, "bob", "god", "long-enough")
    with pytest.raises(InvalidPrincipal):
        add_user(cp.store, "bob\u200b", "viewer", "long-enough")
    assert [u.name for u in list_users(cp.store)] == ["ann"]


def test_sign_in_with_a_key_takes_its_principal_whatever_the_user_name(cp: ControlPlane) -> None:
    _, secret = cp.create_api_key("Olga", "operator")
    who = sign_in(cp, "admin", secret)
    assert who == Identity("olga", "operator", "api-key", who.key_id if who else None)
    assert sign_in(cp, "olga", "dp_not_a_key") is None
    add_user(cp.store, "pat", "viewer", "pat-password-1")
    assert sign_in(cp, " PAT", "pat-password-1") == Identity("pat", "viewer", "password")
    assert sign_in(cp, "pat", secret[:-1]) is None


def test_the_role_is_read_again_before_every_action(cp: ControlPlane) -> None:
    key, secret = cp.create_api_key("olga", "operator")
    who = sign_in(cp, "olga", secret)
    assert who is not None and current_role(cp, who) == "operator"
    chat = Chat(cp, who)
    assert "You act as **olga** (operator)" in chat.answer(parse("/help")).text
    cp.revoke_api_key(key.key_id)
    assert current_role(cp, who) is None
    refused = chat.answer(parse("/runs"))
    assert refused.text.startswith("**Refused:**") and "no longer valid" in refused.text


def test_roles_bound_what_the_chat_does(cp: ControlPlane) -> None:
    add_user(cp.store, "vic", "viewer", "vic-password-1")
    who = sign_in(cp, "vic", "vic-password-1")
    assert who is not None
    chat = Chat(cp, who)
    for message, what, role in [
        ("/run flights flights:2013-07", "start a run", "operator"),
        ("/rollback flights", "roll back a champion", "approver"),  # the policy's rollback_role
        ("/schedule flights 0 * * * * flights", "schedule runs", "operator"),
    ]:
        answer = plain(chat.answer(parse(message)).text)
        assert f"'vic' has the viewer role; to {what} you need the {role} role" in answer
    assert chat.answer(parse("/runs")).text == "No runs yet."
    assert chat.answer(parse("what is pending?")).text == "Nothing is waiting for a person."


def test_errors_and_unknown_requests_get_helpful_answers(cp: ControlPlane) -> None:
    _, secret = cp.create_api_key("ann", "admin")
    who = sign_in(cp, "ann", secret)
    assert who is not None
    chat = Chat(cp, who)
    unknown = plain(chat.answer(parse("tell me a joke")).text)
    assert "I did not understand “tell me a joke”, and did nothing" in unknown
    assert "/run MODEL" in unknown
    assert "no model 'nope'" in plain(chat.answer(parse("/run nope flights:2013-07")).text)
    assert "no run match" in plain(chat.answer(parse("/audit abcdef")).text)
    assert chat.answer(parse("/run flights")).text.startswith("Usage: `/run MODEL")


def test_drift_chart_shows_every_feature_with_its_threshold() -> None:
    evidence = {
        "drift_share": 0.5,
        "n_tested": 2,
        "columns": [
            {
                "column": "temp",
                "method": "wasserstein",
                "score": 0.4,
                "threshold": 0.1,
                "drifted": True,
            },
            {
                "column": "dest",
                "method": "jensenshannon",
                "score": 0.02,
                "threshold": 0.1,
                "drifted": False,
            },
        ],
    }
    figure = charts.drift_figure(evidence, "2013-07")
    bars, marks = figure.data
    assert list(bars.x) == ["temp", "dest"] and list(bars.y) == [0.4, 0.02]
    assert list(marks.y) == [0.1, 0.1]
    assert list(bars.marker.color) == [charts.DRIFTED, charts.STABLE]
    assert "50% of 2 features drifted" in figure.layout.title.text
    assert charts.drift_figure({"columns": []}, "x") is None
    effects = {
        "weighted_share": 0.42,
        "shifted_columns": [
            {
                "column": "temp",
                "measure": "wasserstein",
                "value": 1.7,
                "threshold": 0.5,
                "material": True,
                "importance": 0.3,
            },
            {
                "column": "dest",
                "measure": "psi",
                "value": 0.01,
                "threshold": 0.2,
                "material": False,
                "importance": 0.1,
            },
        ],
    }
    shifted = charts.drift_figure(effects, "2013-08")
    bars, marks = shifted.data
    assert list(bars.y) == [1.7, 0.01] and list(marks.y) == [0.5, 0.2]
    assert list(bars.marker.color) == [charts.DRIFTED, charts.STABLE]
    assert "42% of the champion's importance shifted" in shifted.layout.title.text


def test_history_chart_has_a_point_per_scored_batch() -> None:
    def view(batch: str, drift: dict[str, object], evaluation: dict[str, object] | None) -> RunView:
        return RunView(
            run_id=f"run-{batch}",
            model="flights",
            batch_id=batch,
            status="completed",
            outcome="promoted" if evaluation else "no_action",
            requested_by="ann",
            created_at="2026-01-01T00:00:00+00:00",
            summary={"drift": drift, "evaluation": evaluation},
        )

    views = [
        view("2013-02", {"roc_auc": 0.70, "champion_version": 1}, None),
        view("2013-03", {"champion_version": 1}, None),  # quarantined: no score
        view("2013-04", {"roc_auc": 0.66, "champion_version": 1}, {"challenger": 0.72}),
    ]
    points = charts.history_points(views)
    assert [(p["batch"], p["champion"], p["challenger"]) for p in points] == [
        ("2013-02", 0.70, None),
        ("2013-04", 0.66, 0.72),
    ]
    changes = [{"run_id": "run-2013-04", "action": "promote", "version": 2}]
    figure = charts.history_figure("flights", views, changes)
    assert [a.text for a in figure.layout.annotations] == ["promote v2"]


def test_the_trend_names_each_models_metric_and_its_direction() -> None:
    """The health card's trend shows the model's own metric with its interval and direction:
    a regression's RMSE, and a run recorded before models had a task (keys named after ROC
    AUC) as the ROC AUC it was."""

    def view(batch: str, drift: dict[str, object]) -> RunView:
        return RunView(
            run_id=f"run-{batch}",
            model="delays",
            batch_id=batch,
            status="completed",
            outcome="no_action",
            requested_by="ann",
            created_at="2026-01-01T00:00:00+00:00",
            summary={"drift": drift},
        )

    newest_first = [
        view(
            "2013-03",
            {"weighted_share": 0.1, "metric": "rmse", "score": 38.21},
        ),
        view(
            "2013-02",
            {
                "weighted_share": 0.25,
                "metric": "rmse",
                "higher_is_better": False,
                "score": 41.5,
                "score_low": 39.8,
                "score_high": 43.02,
            },
        ),
        view(
            "2013-01",
            {"weighted_share": 0.0, "roc_auc": 0.7, "roc_auc_low": 0.68, "roc_auc_high": 0.72},
        ),
    ]
    lines = [plain(line) for line in health._trends(newest_first)]
    assert lines[1:] == [
        "2013-01: drift 0%, ROC AUC 0.7000 [0.6800, 0.7200] (higher is better)",
        "2013-02: drift 25%, RMSE 41.5 [39.8, 43.02] (lower is better)",
        "2013-03: drift 10%, RMSE 38.21 (lower is better)",
    ]


def test_chainlit_files_and_the_session_secret_live_under_the_home(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    env = launch.chainlit_env(settings, {})
    root = Path(env["CHAINLIT_APP_ROOT"])
    assert root == settings.home / "ui"
    config = (root / ".chainlit" / "config.toml").read_text()
    assert 'name = "DriftPilot"' in config and "@CHAINLIT_VERSION@" not in config
    secret_file = root / "auth-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert env["CHAINLIT_AUTH_SECRET"] == secret_file.read_text().strip()
    assert len(env["CHAINLIT_AUTH_SECRET"]) >= 40
    assert launch.chainlit_env(settings, {})["CHAINLIT_AUTH_SECRET"] == env["CHAINLIT_AUTH_SECRET"]
    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", "from-the-environment")
    assert launch.auth_secret(settings) == "from-the-environment"
    assert os.listdir(cwd) == []  # nothing written into the working directory
    argv = launch.command("127.0.0.1", 8123)
    assert argv[1:3] == ["run", str(launch.APP)] and "--headless" in argv
