"""What-if replay on real runs: real flights, real MLflow, real Optuna, the real graph with the
builtin backend (and the scripted chat model, the only fake, for --llm).

One home is built per module with three runs of 'flights', each under the policy an operator
would have set at the time:

    quiet        January flights, shipped policy            -> no_retrain:none
    waiting      June, forced retrain + high risk           -> waiting_approval
    promoted     July, forced retrain + low risk            -> promoted
    quarantined  January again, a chat model that distrusts a clean batch -> quarantined

Every test only replays, and a replay writes nothing (test_a_replay_writes_nothing holds
that), so they share the home.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.errors import PolicyViolation
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings, get_settings, is_postgres, libpq_url
from driftpilot.replay import (
    REPLAY_NODES,
    ReplayReport,
    WhatIf,
    _sealed_context,
    gather,
    replay_model,
    replay_run,
    what_if,
)
from driftpilot.runs.plane import ControlPlane
from tests.conftest import add_flights
from tests.fakes import say, scripted
from tools import registry

pytestmark = pytest.mark.integration

FORCE_RETRAIN = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 3},
    "evaluator": {"n_boot": 200},  # fewer resamples: a faster setup, the same routes
}
POLICIES: dict[str, dict[str, Any]] = {
    "shipped": {},
    "force_low": {**FORCE_RETRAIN, "risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0}},
    "force_high": {**FORCE_RETRAIN, "risk": {"min_gain_to_halfwidth": 1000.0}},
}


DISTRUST = {"action": "quarantine", "reason": "looks odd", "rationale": "distrust it"}


@dataclass
class Home:
    settings: Settings
    plane: ControlPlane
    policies: dict[str, Path]
    runs: dict[str, str]  # quiet / waiting / promoted -> run id

    def scenario(self, policy: str, llm: str | None = None) -> WhatIf:
        return what_if(self.settings, self.policies[policy], llm)


def _plane_under(mp: pytest.MonkeyPatch, policy: Path) -> ControlPlane:
    mp.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    get_settings.cache_clear()
    return ControlPlane(get_settings())


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, months: dict[str, pl.DataFrame]
) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("replay")
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIFTPILOT_HOME", str(root / "home"))
        policies = {}
        for name, body in POLICIES.items():
            policies[name] = root / f"{name}.yaml"
            policies[name].write_text(yaml.safe_dump(body))
        runs = {}
        planes = [_plane_under(mp, policies["shipped"])]
        add_flights(planes[-1], jan.head(6000).sort("time_hour"))
        runs["quiet"] = planes[-1].start_run("flights", jan.tail(3000), "jan-b").run_id
        planes.append(_plane_under(mp, policies["force_high"]))
        june = months["2013-06"].sample(n=4000, seed=3)
        runs["waiting"] = planes[-1].start_run("flights", june, "2013-06").run_id
        planes.append(_plane_under(mp, policies["force_low"]))
        july = months["2013-07"].sample(n=4000, seed=3)
        runs["promoted"] = planes[-1].start_run("flights", july, "2013-07").run_id
        planes.append(ControlPlane(get_settings(), scripted(say(DISTRUST))))
        runs["quarantined"] = planes[-1].start_run("flights", jan.slice(6000, 2000), "jan-c").run_id
        for plane in planes:
            plane.close()
        # Replays run with the shipped policy configured: each test names the one it means.
        plane = _plane_under(mp, policies["shipped"])
        assert [plane.get_run(r).outcome or plane.get_run(r).status for r in runs.values()] == [
            "no_retrain:none",
            "waiting_approval",
            "promoted",
            "quarantined",
        ]
        yield Home(plane.settings, plane, policies, runs)
        plane.close()
        get_settings.cache_clear()


def table(report: ReplayReport) -> dict[str, tuple[str | None, str | None, bool]]:
    return {s.agent: (s.original, s.replayed, s.differs) for s in report.steps}


def test_each_run_replayed_under_its_own_policy_decides_the_same(home: Home) -> None:
    for run, policy in (
        ("quiet", "shipped"),
        ("waiting", "force_high"),
        ("promoted", "force_low"),
    ):
        report = replay_run(home.plane, home.runs[run], home.scenario(policy))
        assert not any(s.differs for s in report.steps), report.steps
        assert report.replayed_outcome == report.original_outcome
        assert report.findings == [] and report.forked_from
    promoted = replay_run(home.plane, home.runs["promoted"], home.scenario("force_low"))
    assert list(table(promoted)) == [
        "ingestion",
        "drift_analyst",
        "optimizer",
        "retraining",
        "evaluator",
        "cicd",
        "promote",
    ]
    assert table(promoted)["cicd"] == ("risk:low", "risk:low", False)


def test_the_replay_decides_with_the_agents_own_decide(home: Home) -> None:
    """Each replay node rebuilds its agent's evidence from the record and calls the agent's
    own ``decide``: under the run's own policy and the builtin backend, every agent re-writes
    the very rationale it recorded in the run (the replay keeps no decision step of its own)."""
    run_id = home.runs["promoted"]
    report = replay_run(home.plane, run_id, home.scenario("force_low"))
    recorded: dict[str, str] = {}
    for row in home.plane.audit(run_id):
        if row["table"] == "decisions":
            recorded.setdefault(row["agent"], row["rationale"])
    agents = ("ingestion", "drift_analyst", "optimizer", "retraining", "evaluator", "cicd")
    replayed = {s.agent: s.rationale for s in report.steps if s.agent in agents}
    assert set(replayed) == set(agents)
    assert replayed == {agent: recorded[agent] for agent in agents}


def test_a_stricter_policy_shows_where_it_differs(home: Home) -> None:
    report = replay_run(home.plane, home.runs["promoted"], home.scenario("force_high"))
    rows = table(report)
    assert not rows["drift_analyst"][2] and rows["drift_analyst"][1].startswith("retrain")
    assert rows["evaluator"] == ("promote", "promote", False)
    assert rows["cicd"] == ("risk:low", "risk:high", True)
    assert rows["approval"] == (None, "waiting", True)  # it would have waited for a person
    assert rows["promote"] == ("promoted", None, True)
    assert (report.original_outcome, report.replayed_outcome) == ("promoted", "waiting_approval")
    assert report.findings == ["promotion would have needed approval"]
    assert "nobody answered" in (report.stopped or "")


def test_a_looser_policy_would_retrain_but_trains_nothing(home: Home) -> None:
    quiet = replay_run(home.plane, home.runs["quiet"], home.scenario("force_low"))
    rows = table(quiet)
    assert rows["drift_analyst"][0].startswith("none") and rows["drift_analyst"][1].startswith(
        "retrain"
    )
    assert rows["optimizer"] == (None, "would run: challenger unknown", True)
    assert "retraining" not in rows  # the replay stops where the evidence ends
    assert quiet.replayed_outcome == "would_retrain" and "no challenger" in (quiet.stopped or "")
    assert quiet.findings == ["would have retrained"]
    # The run that waited for a person would have promoted at once under low-risk rules.
    waiting = replay_run(home.plane, home.runs["waiting"], home.scenario("force_low"))
    assert table(waiting)["cicd"] == ("risk:high", "risk:low", True)
    assert table(waiting)["approval"] == ("waiting", None, True)
    assert (waiting.original_outcome, waiting.replayed_outcome) == ("waiting_approval", "promoted")
    assert waiting.findings == ["promotion would not have needed approval"]


def test_the_shipped_policy_would_not_have_retrained(home: Home) -> None:
    """The July run was forced to retrain (retrain: always measures no quick retrain): from
    its recorded evidence the shipped policy sees material drift, no significant drop and
    nothing measured to win back, so it would have watched."""
    report = replay_run(home.plane, home.runs["promoted"], home.scenario("shipped"))
    assert report.replayed_outcome.startswith("no_retrain:")
    assert report.findings == ["would not have retrained"]
    assert table(report)["optimizer"] == ("tune:lightgbm x3", None, True)


def test_another_llm_re_decides_from_the_recorded_evidence(home: Home) -> None:
    backend = scripted(
        say({"action": "accept", "reason": "", "rationale": "clean"}),
        say(
            {
                "action": "monitor",
                "severity": "low",
                "cited_metrics": {},
                "rationale": "watch it",
            }
        ),
    )
    scenario = WhatIf(Policy.load(home.policies["shipped"]), backend, "shipped")
    report = replay_run(home.plane, home.runs["quiet"], scenario)
    assert table(report)["drift_analyst"] == ("none (none)", "monitor (low)", True)
    assert report.replayed_outcome == "no_retrain:monitor" and report.backend.startswith("scripted")
    recorded = home.plane.get_run(home.runs["quiet"]).summary["drift"]["drift_share"]
    shown = str(backend.chat_model.seen[1][1].content)  # the analyst's evidence message
    assert f'"drift_share": {round(recorded, 4)}' in shown
    # The decision templates are narrowed to the replay policy's bounds, as the agents' own.
    prompts = [str(seen[0].content) for seen in backend.chat_model.seen]
    assert '"action": <accept | quarantine>' in prompts[0]
    assert '"action": <none | monitor>' in prompts[1]
    assert re.search(r"Names: [\w, ]*\bweighted_share\b", prompts[1])  # what it may cite


def test_a_batch_a_chat_model_quarantined_would_be_accepted_but_never_analysed(
    home: Home,
) -> None:
    run_id = home.runs["quarantined"]
    shipped = Policy.load(home.policies["shipped"])
    same = replay_run(home.plane, run_id, WhatIf(shipped, scripted(say(DISTRUST)), "shipped"))
    assert not any(s.differs for s in same.steps) and same.replayed_outcome == "quarantined"
    builtin = replay_run(home.plane, run_id, home.scenario("shipped"))
    assert table(builtin)["ingestion"] == ("quarantine", "accept", True)
    assert table(builtin)["drift_analyst"] == (None, "would run: never analysed", True)
    assert builtin.replayed_outcome == "would_accept"
    assert builtin.findings == ["would have accepted the batch"]


def test_model_last_n_sums_up_what_would_change(home: Home) -> None:
    summary = replay_model(home.plane, "flights", 10, home.scenario("force_high"))
    assert [r.run_id for r in summary.runs] == [
        home.runs["quarantined"],
        home.runs["promoted"],
        home.runs["waiting"],
        home.runs["quiet"],
    ]
    assert summary.changed == 3 and summary.skipped == {}
    assert summary.findings == {
        "would have accepted the batch": 1,
        "promotion would have needed approval": 1,
        "would have retrained": 1,
    }
    assert len(replay_model(home.plane, "flights", 1, home.scenario("force_high")).runs) == 1


def snapshot(settings: Settings) -> dict[str, Any]:
    """Everything a replay could touch: every row of every database of the home (audit,
    checkpoints, MLflow, Optuna; SQLite files or PostgreSQL databases) as text, the
    registry's versions and aliases, and the files of the home."""
    home = settings.home
    databases = {
        "audit": settings.db_url,
        "checkpoints": settings.checkpoint_url,
        "mlflow": settings.mlflow_tracking_uri,
        "optuna": settings.optuna_storage,
    }
    dumps, counts = {}, {}
    for name, url in databases.items():
        dumps[name], counts[name] = _dump(url)
    versions = [(v.version, sorted(v.aliases)) for v in registry.list_versions("flights", settings)]
    # Each file with a hash of its content: an appended checkpoint log line or a rewritten
    # report counts as a write (the databases are compared by their rows above).
    files_of_databases = {_sqlite_path(u) for u in databases.values() if not is_postgres(u)}
    files = sorted(
        (str(p.relative_to(home)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in home.rglob("*")
        if p.is_file()
        and not p.name.endswith(("-wal", "-shm", "-journal"))
        and p not in files_of_databases
    )
    return {"dumps": dumps, "counts": counts, "registry": versions, "files": files}


def _sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def _dump(url: str) -> tuple[str, dict[str, int]]:
    """Every row of every table of one database as sorted text, and the row count per table."""
    if is_postgres(url):
        with psycopg.connect(libpq_url(url)) as db:
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
            rows = {
                t: sorted(r[0] for r in db.execute(f'SELECT x::text FROM "{t}" AS x'))
                for t in tables
            }
        return json.dumps(rows), {t: len(r) for t, r in rows.items()}
    path = _sqlite_path(url)
    assert path.exists(), path
    with closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        return "\n".join(db.iterdump()), counts


def test_a_replay_writes_nothing(home: Home) -> None:
    before = snapshot(home.settings)
    assert before["counts"]["checkpoints"]["checkpoints"] > 0
    assert before["counts"]["audit"]["decisions"] > 0
    assert any("champion" in aliases for _, aliases in before["registry"])
    for run_id in home.runs.values():
        for policy in POLICIES:
            replay_run(home.plane, run_id, home.scenario(policy))
    replay_model(home.plane, "flights", 5, home.scenario("force_high"))
    cli = CliRunner()
    for args in (
        ["replay", home.runs["promoted"][:10], "--policy", str(home.policies["force_high"])],
        ["replay", "--model", "flights", "--last", "3", "--json"],
    ):
        assert cli.invoke(app, args).exit_code == 0
    after = snapshot(home.settings)
    assert after["counts"] == before["counts"]  # count for count
    assert after["registry"] == before["registry"]  # no version registered, no alias moved
    assert after["dumps"] == before["dumps"]  # row for row, byte for byte
    assert after["files"] == before["files"]
    assert home.plane.verify().ok


def test_nothing_in_a_replay_can_reach_the_audit_store(home: Home) -> None:
    ctx = _sealed_context(home.settings)
    with pytest.raises(PolicyViolation, match="must not use the audit store"):
        ctx.store.record_decision  # noqa: B018 - the attribute access itself must fail
    with pytest.raises(PolicyViolation, match="must not use the audit store"):
        ctx.model("flights")  # an agent reading the model through the store fails too
    # Every node of the control graph has a replay node: no agent of the real graph runs.
    assert set(REPLAY_NODES) == {
        "ingestion",
        "escalation",
        "drift_analyst",
        "optimizer",
        "retraining",
        "recalibrate",
        "evaluator",
        "cicd",
        "approval",
        "promote",
        "report",
    }


def test_cli_prints_the_table_and_json(home: Home) -> None:
    cli = CliRunner()
    strict = str(home.policies["force_high"])
    shown = cli.invoke(
        app, ["replay", home.runs["promoted"][:10], "--policy", strict], terminal_width=200
    )
    assert shown.exit_code == 0, shown.output
    cicd = next(line for line in shown.output.splitlines() if "cicd" in line)
    assert "risk:low" in cicd and "risk:high" in cicd and "*" in cicd
    assert "outcome: promoted -> waiting_approval (differs)" in shown.output
    data = json.loads(
        cli.invoke(app, ["replay", home.runs["quiet"], "--policy", strict, "--json"]).output
    )
    assert data["replayed_outcome"] == "would_retrain"
    assert data["findings"] == ["would have retrained"]
    many = cli.invoke(
        app, ["replay", "--model", "flights", "--last", "3", "--policy", strict], terminal_width=200
    )
    assert many.exit_code == 0, many.output
    assert "2 of 3 runs would end differently" in many.output
    assert "1 of 3 runs: promotion would have needed approval" in many.output


def test_a_bad_policy_file_is_one_clear_error_line(home: Home, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("drift:\n  retrain_shar: 0.1\n")
    done = CliRunner().invoke(app, ["replay", home.runs["quiet"], "--policy", str(typo)])
    assert done.exit_code == 1 and "Traceback" not in done.output
    errors = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "invalid policy file" in errors[0]
    assert "unknown key 'drift.retrain_shar'" in errors[0]
    running = CliRunner().invoke(app, ["replay", "--model", "nope"])
    assert running.exit_code == 1 and "no model 'nope'" in running.output


def test_a_recorded_answer_is_reused_and_promotion_still_needs_it(home: Home) -> None:
    """A run a person answered: the replay reuses that answer for the same request, and its
    promote node authorises like the real one (high risk needs an approver)."""
    ev = gather(home.plane, home.runs["waiting"])
    answered = replace(
        ev, final={**ev.final, "approval": {"decision": "approve", "approver": "bob"}}
    )
    ctx = _sealed_context(home.settings, Policy.load(home.policies["force_high"]))
    approval = REPLAY_NODES["approval"](ev.final, ctx, answered)["approval"]
    assert approval["decision"] == "approve" and "bob" in approval["replay"]["rationale"]
    state = {**ev.final, "approval": approval}
    promotion = REPLAY_NODES["promote"](state, ctx, answered)["promotion"]
    assert promotion["approved_by"] == "bob" and promotion["dry_run"]
    with pytest.raises(PolicyViolation, match="high-risk promotion refused"):
        REPLAY_NODES["promote"](ev.final, ctx, ev)  # high tier, nobody approved


def test_what_forced_a_reject_is_part_of_the_replayed_evidence(home: Home) -> None:
    """A reject the run was forced into whatever the gain (a holdout too small to judge on, a
    training defect) stays a reject in a replay under the same policy: the replay rebuilds
    the evaluator's evidence with it, not from the comparison alone."""
    ev = gather(home.plane, home.runs["promoted"])
    ctx = _sealed_context(home.settings, Policy.load(home.policies["force_low"]))
    again = REPLAY_NODES["evaluator"](ev.final, ctx, ev)["evaluation"]
    assert again["action"] == "promote"
    small = "45 labelled holdout rows (needs at least 100)"
    shown = {**ev.shown, "evaluator": {**ev.shown["evaluator"], "holdout_too_small": small}}
    evaluation = REPLAY_NODES["evaluator"](ev.final, ctx, replace(ev, shown=shown))["evaluation"]
    assert evaluation["action"] == "reject"
    assert "the holdout is too small to judge on: 45" in evaluation["replay"]["rationale"]


# What a run recorded before models had a task named its scores after ROC AUC (the keys as
# the agents then wrote them), per slice; nothing said which metric or which direction.
BEFORE_TASKS = {
    "drift": {
        "score": "roc_auc",
        "score_low": "roc_auc_low",
        "score_high": "roc_auc_high",
        "estimated_score": "estimated_roc_auc",
    },
    "evaluation": {"challenger_score": "challenger_roc_auc"},
    "retraining": {"valid_score": "valid_roc_auc"},
}
UNSAID = {"metric", "higher_is_better", "estimate_method", "valid_metric"}


def _as_before_tasks(kind: str, piece: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in piece.items() if not (kind != "evaluation" and k in UNSAID)}
    return {BEFORE_TASKS[kind].get(k, k): v for k, v in keep.items()}


def test_a_run_recorded_under_the_old_keys_replays_the_same(home: Home) -> None:
    """A run recorded before models had a task (its scores under roc_auc, estimated_roc_auc,
    challenger_roc_auc, valid_roc_auc) replays as it does under today's keys: the old keys
    are read in one place (driftpilot.runs.evidence_keys) as the ROC AUC they were."""
    from driftpilot.replay import Evidence, replay_evidence

    ev = gather(home.plane, home.runs["promoted"])

    def state(values: dict[str, Any]) -> dict[str, Any]:
        return {
            k: _as_before_tasks(k, v) if k in BEFORE_TASKS and isinstance(v, dict) else v
            for k, v in values.items()
        }

    shown = {**ev.shown}
    shown["drift_analyst"] = {
        **shown["drift_analyst"],
        "performance": _as_before_tasks("drift", shown["drift_analyst"]["performance"]),
    }
    shown["optimizer"] = {
        **shown["optimizer"],
        "drift": _as_before_tasks("drift", shown["optimizer"]["drift"]),
    }
    comparison = shown["evaluator"]  # a Comparison then had no task nor direction
    shown["evaluator"] = {
        k: v for k, v in comparison.items() if k not in ("task", "higher_is_better")
    }
    old = state(ev.final)
    assert "roc_auc" in old["drift"] and "score" not in old["drift"]
    assert "challenger_roc_auc" in old["evaluation"] and "valid_roc_auc" in old["retraining"]
    read = Evidence.from_record(
        ev.run, ev.fork_id, state(ev.fork_values), old, shown, ev.tool_results, ev.tool_args
    )
    drift = read.final["drift"]
    assert (drift["metric"], drift["higher_is_better"]) == ("roc_auc", True)
    assert drift["score"] == ev.final["drift"]["score"]
    assert read.shown["drift_analyst"]["performance"]["score"] == drift["score"]
    scenario = home.scenario("force_low")
    before = replay_evidence(home.settings, read, scenario)
    now = replay_run(home.plane, home.runs["promoted"], scenario)
    assert before.steps == now.steps and before.findings == now.findings == []
    assert before.replayed_outcome == now.replayed_outcome == "promoted"
