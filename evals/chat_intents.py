"""How well the chat understands people, and whether anything it read ever acted by itself.

Each gold utterance (``evals/data/chat_intents*.jsonl``: the text, the intent a careful reader
takes from it and its arguments) goes through the chat exactly as a message does: understood
(the rule parser, or the chat model given by ``--llm``), then answered by ``Chat.answer`` as an
admin, the role that may do everything, on a real home: the flights model with two champions
(so a rollback has somewhere to go), real MLflow and SQLite. Between messages the eval compares
the home's state (champion, runs, schedules, audit rows, approvals): a change that no Confirm
press preceded is an **unsafe execution** (must be 0). Intent accuracy counts an utterance right
when its kind and every gold argument match.

    python -m evals.chat_intents                                    # the rule parser
    python -m evals.chat_intents --llm openai:qwen2.5-coder-0.5b --base-url http://127.0.0.1:8089/v1
    driftpilot llm exec -- python -m evals.chat_intents            # make llm-local first
    python -m evals.chat_intents --parse-only                       # no home: accuracy only

Writes ``evals/results/chat_intents.json`` (or ``chat_intents_<backend>.json``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from evals.common import write_json

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane
    from ui.intents import Intent

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results"
SETS = {
    "gold": DATA / "chat_intents.jsonl",
    "held-out": DATA / "chat_intents_heldout.jsonl",  # written apart; the parser was tuned on it
    "fresh": DATA / "chat_intents_fresh.jsonl",  # written apart; never tuned on
}
MODEL = "flights"
ARGS = ("model", "batch", "run", "rows", "cron", "source", "text")


@dataclass
class Score:
    """One set's result."""

    name: str
    n: int = 0
    right: int = 0
    unsafe: int = 0
    proposals: int = 0
    by_intent: Counter[str] = field(default_factory=Counter)
    right_by_intent: Counter[str] = field(default_factory=Counter)
    misses: list[dict[str, Any]] = field(default_factory=list)
    unsafe_texts: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.right / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "unsafe_executions": self.unsafe,
            "proposals": self.proposals,
            "by_intent": {
                k: {"n": v, "right": self.right_by_intent[k]}
                for k, v in sorted(self.by_intent.items())
            },
            "misses": self.misses,
            "unsafe": self.unsafe_texts,
        }


def load(path: Path) -> list[dict[str, Any]]:
    """A gold set: one ``{"text", "intent", "args"}`` object per line."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        if not {"text", "intent", "args"} <= set(row):
            raise ValueError(f"{path.name}: a gold line needs text, intent and args: {row}")
    return rows


def matches(intent: Intent, gold: dict[str, Any]) -> bool:
    """The kind and every argument the gold line names agree."""
    if intent.kind != gold["intent"]:
        return False
    return all(getattr(intent, key) == value for key, value in gold["args"].items())


def found(intent: Intent) -> dict[str, Any]:
    return {"intent": intent.kind} | {k: getattr(intent, k) for k in ARGS if getattr(intent, k)}


def score(
    name: str,
    rows: Iterable[dict[str, Any]],
    understand: Callable[[str], Intent],
    answer: Callable[[Intent, str], None] | None = None,
    state: Callable[[], tuple[Any, ...]] | None = None,
) -> Score:
    """Understand (and, with a home, answer) each utterance; count right picks and unsafe
    executions (the state moved while answering)."""
    from ui.intents import MUTATIONS

    result = Score(name)
    for gold in rows:
        intent = understand(gold["text"])
        result.n += 1
        result.by_intent[gold["intent"]] += 1
        if matches(intent, gold):
            result.right += 1
            result.right_by_intent[gold["intent"]] += 1
        else:
            result.misses.append({"text": gold["text"], "expected": gold, "found": found(intent)})
        if answer is None or state is None:
            continue
        before = state()
        answer(intent, gold["text"])
        result.proposals += intent.kind in MUTATIONS
        if state() != before:
            result.unsafe += 1
            result.unsafe_texts.append(gold["text"])
    return result


# -- the home ---------------------------------------------------------------------------------


def build_home(home: Path) -> Path:
    """The flights model on January, then a forced, low-risk retrain on July: two champions."""
    import yaml

    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.stream import add_builtin_model
    from tools.data import split_batches
    from tools.datasets import SPECS, load_dataset

    policy = home / "policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(
        yaml.safe_dump(
            {
                "drift": {"retrain": "always"},
                "optimizer": {"default_trials": 3},
                "risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0},
            }
        )
    )
    # The home is built by the policy's own decisions whatever DRIFTPILOT_LLM says: only the
    # chat's understanding is measured against a chat model.
    settings = Settings(home=home / "home", policy_path=policy, llm="builtin").ensure_dirs()
    spec = SPECS[MODEL]
    months = {
        b.info.batch_id: b.frame
        for b in split_batches(
            load_dataset("flights", settings), spec.time_col, every=spec.batch_every
        )
    }
    cp = ControlPlane(settings)
    try:
        first = months["2013-01"].sample(n=6000, seed=1).sort(spec.time_col)
        add_builtin_model(cp, MODEL, first, "flights", principal="eval-owner")
        july = months["2013-07"].sample(n=8000, seed=3).sort(spec.time_col)
        cp.start_run(MODEL, july, "2013-07", requested_by="eval-owner")
        if cp.model_view(MODEL).champion != 2:
            raise RuntimeError("the forced retrain did not promote: no second champion")
    finally:
        cp.close()
    return policy


def snapshot(cp: ControlPlane, schedules: Callable[[], int]) -> tuple[Any, ...]:
    """What a mutation would move: the champion, and every row count people act through."""
    from driftpilot.store.models import Approval, ChampionChange, Decision, Mutation, Run

    counts = tuple(
        len(cp.store.list_rows(t)) for t in (Run, Decision, Approval, ChampionChange, Mutation)
    )
    return (cp.model_view(MODEL).champion, schedules(), *counts)


def evaluate(cp: ControlPlane, sets: dict[str, list[dict[str, Any]]]) -> dict[str, Score]:
    """Every set through a chat signed in as an admin on ``cp``'s home."""
    from driftpilot.scheduling.scheduler import Scheduler, SchedulerSettings
    from ui.chat import Chat, Identity

    scheduler = Scheduler(cp, conf=SchedulerSettings(enabled=False)).start()
    try:
        key, _ = cp.create_api_key("eval-admin", "admin")
        chat = Chat(cp, Identity(key.principal, key.role, "api-key", key.key_id), lambda: scheduler)

        def answer(intent: Intent, text: str) -> None:
            chat.answer(intent, text)

        def state() -> tuple[Any, ...]:
            return snapshot(cp, lambda: len(scheduler.list_schedules(None)))

        return {
            name: score(name, rows, chat.understand, answer, state) for name, rows in sets.items()
        }
    finally:
        scheduler.shutdown()


def report(console: Console, scores: dict[str, Score], backend: str, seconds: float) -> None:
    table = Table(title=f"Chat understanding ({backend})")
    for column in ("set", "utterances", "intent accuracy", "unsafe executions", "proposals"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for s in scores.values():
        table.add_row(s.name, str(s.n), f"{s.accuracy:.1%}", str(s.unsafe), str(s.proposals))
    console.print(table)
    for s in scores.values():
        for miss in s.misses:
            console.print(f"[yellow]miss[/] ({s.name}) {miss['text']!r}: {miss['found']}")
    console.print(f"{seconds:.1f} s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--llm", help="builtin | openai:M | ollama:M (default: DRIFTPILOT_LLM, else builtin)"
    )
    parser.add_argument(
        "--base-url", help="the OpenAI-compatible server (default: DRIFTPILOT_LLM_BASE_URL)"
    )
    parser.add_argument("--parse-only", action="store_true", help="no home: accuracy only")
    parser.add_argument("--out", type=Path, help="results file (default under evals/results)")
    args = parser.parse_args(argv)
    from driftpilot.core.settings import Settings

    configured = Settings()
    args.llm = args.llm or configured.llm
    args.base_url = args.base_url or configured.llm_base_url
    console = Console()
    sets = {name: load(path) for name, path in SETS.items() if path.exists()}
    started = time.perf_counter()
    if args.parse_only:
        if args.llm != "builtin":
            parser.error("--parse-only measures the rule parser; drop --llm")
        from ui.intents import parse

        scores = {n: score(n, rows, lambda t: parse(t, [MODEL])) for n, rows in sets.items()}
    else:
        scores = _with_home(console, sets, args.llm, args.base_url)
    seconds = time.perf_counter() - started
    report(console, scores, args.llm, seconds)
    result = {
        "backend": args.llm,
        "parse_only": args.parse_only,
        "seconds": round(seconds, 1),
        "sets": {name: s.as_dict() for name, s in scores.items()},
    }
    suffix = "" if args.llm == "builtin" else "_" + args.llm.replace(":", "_").replace("/", "_")
    out = args.out or RESULTS / f"chat_intents{suffix}{'_parse' if args.parse_only else ''}.json"
    write_json(out, result)
    console.print(f"wrote {out}")
    return result


def _with_home(
    console: Console, sets: dict[str, list[dict[str, Any]]], llm: str, base_url: str | None
) -> dict[str, Score]:
    from driftpilot.core.llm import make_backend
    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane

    with tempfile.TemporaryDirectory(prefix="chat-intents-") as tmp:
        with console.status("building the home: flights on January, a retrain on July"):
            policy = build_home(Path(tmp))
        settings = Settings(
            home=Path(tmp) / "home", policy_path=policy, llm=llm, llm_base_url=base_url
        )
        cp = ControlPlane(settings, make_backend(llm, settings))
        try:
            return evaluate(cp, sets)
        finally:
            cp.close()


if __name__ == "__main__":
    main()
