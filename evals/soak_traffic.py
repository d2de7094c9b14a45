"""The soak's clients (``evals.soak``): a few threads sending mixed API traffic, and the ledger
of what they sent and what the API answered.

Each thread loops over weighted actions until stopped: create a run on a built-in dataset
batch (``POST /runs``), on an uploaded CSV (``POST /runs/upload``) or on a Parquet file
written under the home's inbox (``POST /runs`` with a ``path``), approve or reject what waits
(``GET /approvals``, ``POST /approvals/{id}``), read the audit (``GET /audit``) and runs
(``GET /runs/{id}``), and fire the schedule (``POST /schedules/{id}/run``). Every run a
client asks for carries ``metadata.soak_id`` (unique per request, never retried under the same
id), so the store's runs can be matched to requests whose answer was lost (a killed API).
New runs wait while ``max_open`` runs the ledger knows of are not seen ended: the workers set
the pace, not the clients.

Every answer is recorded (route template, status or ``transport-error``, latency); any 5xx
that is not a 503 problem+json with a Retry-After is kept as a violation.
"""

from __future__ import annotations

import io
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl

ENDED = ("success", "error")
PROBLEM = "application/problem+json"
# (action, weight): reads dominate, as on a real API; a run action only fires under max_open.
ACTIONS = (
    ("dataset_run", 3),
    ("upload_run", 2),
    ("path_run", 1),
    ("approve", 3),
    ("audit", 4),
    ("read_run", 4),
    ("fire_schedule", 1),
)


@dataclass
class Sent:
    """One acknowledged or attempted run request."""

    soak_id: str
    route: str
    status: int | str
    run_id: str | None = None
    last_seen: str | None = None


@dataclass
class Ledger:
    """What the clients sent and saw; thread-safe."""

    runs: dict[str, Sent] = field(default_factory=dict)  # by soak_id
    answers: list[tuple[str, int | str, float, float]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    client_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, route: str, status: int | str, ms: float) -> None:
        with self.lock:
            self.answers.append((route, status, ms, time.time()))

    def open_runs(self) -> list[str]:
        with self.lock:
            return [s.run_id for s in self.runs.values() if s.run_id and s.last_seen not in ENDED]

    def seen(self, run_id: str, status: str) -> None:
        with self.lock:
            for sent in self.runs.values():
                if sent.run_id == run_id:
                    sent.last_seen = status


@dataclass
class Traffic:
    """Client threads over the API at ``url`` (``set_url`` when the API moves)."""

    url: str
    keys: dict[str, str]  # role -> secret: operator, approver, viewer
    models: list[str]
    months: dict[str, pl.DataFrame]
    inbox: Path
    schedule_id: str
    max_open: int = 6
    clients: int = 3
    seed: int = 7
    ledger: Ledger = field(default_factory=Ledger)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.clients):
            thread = threading.Thread(target=self._loop, args=(i,), name=f"soak-client-{i}")
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _loop(self, index: int) -> None:
        rng = random.Random(self.seed + index)
        names, weights = zip(*ACTIONS, strict=True)
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                action = rng.choices(names, weights)[0]
                creates = action.endswith("_run") and action != "read_run"
                if creates and len(self.ledger.open_runs()) >= self.max_open:
                    action = "read_run"
                try:
                    getattr(self, action)(http, rng)
                except Exception as exc:  # a harness bug: recorded and reported, thread goes on
                    with self.ledger.lock:
                        self.ledger.client_errors.append(f"{action}: {exc!r}"[:300])
                self.stop.wait(rng.uniform(0.2, 0.8))

    # -- one request ---------------------------------------------------------------------

    def call(
        self, http: httpx.Client, method: str, route: str, path: str, role: str, **kw: Any
    ) -> httpx.Response | None:
        """Send one request as ``role``; record its answer; None on a transport error."""
        started = time.perf_counter()
        try:
            response = http.request(
                method, self.url + path, headers={"X-Api-Key": self.keys[role]}, **kw
            )
        except httpx.TransportError as exc:
            self.ledger.answer(route, f"transport:{type(exc).__name__}", _ms(started))
            return None
        self.ledger.answer(route, response.status_code, _ms(started))
        if response.status_code >= 500:
            self._check_5xx(route, response)
        return response

    def _check_5xx(self, route: str, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "")
        retry = response.headers.get("retry-after", "")
        if response.status_code == 503 and kind.startswith(PROBLEM) and retry.isdigit():
            return
        with self.ledger.lock:
            self.ledger.violations.append(
                {
                    "route": route,
                    "status": response.status_code,
                    "content_type": kind,
                    "retry_after": retry,
                    "body": response.text[:300],
                    "at": time.time(),
                }
            )

    # -- actions -------------------------------------------------------------------------

    def _batch(self, rng: random.Random, rows: int = 1500) -> pl.DataFrame:
        month = self.months[f"2013-{rng.randint(2, 12):02d}"]
        return month.sample(n=rows, seed=rng.randrange(2**31)).sort("time_hour")

    def _sent(self, soak_id: str, route: str, response: httpx.Response | None) -> None:
        status: int | str = "transport-error" if response is None else response.status_code
        run_id = None
        if response is not None and response.status_code == 202:
            run_id = response.json()["run_id"]
        with self.ledger.lock:
            self.ledger.runs[soak_id] = Sent(soak_id, route, status, run_id)

    def dataset_run(self, http: httpx.Client, rng: random.Random) -> None:
        soak_id = uuid.uuid4().hex
        batch = {
            "dataset": f"flights:2013-{rng.randint(2, 12):02d}",
            "max_rows": 1500,
            "seed": rng.randrange(2**31),
        }
        body = {
            "model": rng.choice(self.models),
            "input": {"batch": batch},
            "metadata": {"soak_id": soak_id},
            "multitask_strategy": "enqueue",
        }
        self._sent(
            soak_id,
            "POST /runs",
            self.call(http, "POST", "POST /runs", "/runs", "operator", json=body),
        )

    def upload_run(self, http: httpx.Client, rng: random.Random) -> None:
        soak_id = uuid.uuid4().hex
        buf = io.BytesIO()
        self._batch(rng).write_csv(buf)
        form = {
            "model": rng.choice(self.models),
            "metadata": f'{{"soak_id": "{soak_id}"}}',
            "multitask_strategy": "enqueue",
        }
        files = {"file": (f"up-{soak_id[:8]}.csv", buf.getvalue(), "text/csv")}
        response = self.call(
            http, "POST", "POST /runs/upload", "/runs/upload", "operator", data=form, files=files
        )
        self._sent(soak_id, "POST /runs/upload", response)

    def path_run(self, http: httpx.Client, rng: random.Random) -> None:
        """Write a batch file under the inbox (on the home's small disk), then run it."""
        soak_id = uuid.uuid4().hex
        name = f"in-{soak_id[:12]}.parquet"
        try:
            self._batch(rng).write_parquet(self.inbox / name)
        except (OSError, pl.exceptions.ComputeError) as exc:
            # The disk-full fault: the client's own write fails first (Polars says ENOSPC in
            # a ComputeError); the partial file goes, as a real uploader's would.
            (self.inbox / name).unlink(missing_ok=True)
            self.ledger.answer("write inbox file", f"failed:{type(exc).__name__}", 0.0)
            return
        body = {
            "model": rng.choice(self.models),
            "input": {"batch": {"path": name}},
            "metadata": {"soak_id": soak_id},
            "multitask_strategy": "enqueue",
        }
        response = self.call(http, "POST", "POST /runs (path)", "/runs", "operator", json=body)
        self._sent(soak_id, "POST /runs (path)", response)

    def approve(self, http: httpx.Client, rng: random.Random) -> None:
        response = self.call(http, "GET", "GET /approvals", "/approvals", "viewer")
        if response is None or response.status_code != 200 or not response.json():
            return
        waiting = rng.choice(response.json())
        decision = "reject" if rng.random() < 0.2 else "approve"
        body = {"decision": decision, "comment": "soak"}
        path = f"/approvals/{waiting['run_id']}"
        answer = self.call(http, "POST", "POST /approvals/{id}", path, "approver", json=body)
        if answer is not None and answer.status_code == 202:
            with self.ledger.lock:
                self.ledger.decisions[decision] += 1

    def audit(self, http: httpx.Client, rng: random.Random) -> None:
        params: dict[str, Any] = {"limit": 50}
        opened = self.ledger.open_runs()
        if opened and rng.random() < 0.5:
            params["run_id"] = rng.choice(opened)
        self.call(http, "GET", "GET /audit", "/audit", "viewer", params=params)

    def read_run(self, http: httpx.Client, rng: random.Random) -> None:
        opened = self.ledger.open_runs()
        if not opened:
            return
        run_id = rng.choice(opened)
        response = self.call(http, "GET", "GET /runs/{id}", f"/runs/{run_id}", "viewer")
        if response is not None and response.status_code == 200:
            self.ledger.seen(run_id, response.json()["status"])

    def fire_schedule(self, http: httpx.Client, rng: random.Random) -> None:
        path = f"/schedules/{self.schedule_id}/run"
        self.call(http, "POST", "POST /schedules/{id}/run", path, "operator")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def summarize(ledger: Ledger) -> dict[str, Any]:
    """Requests by route and status, and p50/p99 latency (ms) per route of answered requests
    (transport errors have no latency worth a percentile)."""
    by_status: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    for route, status, ms, _ in ledger.answers:
        by_status[route][str(status)] += 1
        if isinstance(status, int):
            latencies[route].append(ms)
    totals: Counter[str] = Counter()
    for counts in by_status.values():
        totals.update(counts)
    return {
        "requests": len(ledger.answers),
        "by_status": dict(sorted(totals.items())),
        "by_route": {r: dict(sorted(c.items())) for r, c in sorted(by_status.items())},
        "latency_ms": {r: _percentiles(v) for r, v in sorted(latencies.items())},
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 1)}
