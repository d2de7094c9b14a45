"""Windows of the inference log end to end, over real HTTP: February flights logged to a
``driftpilot serve`` subprocess (a copy of the session's trained flights home) close into
windows of 300 rows, each a run (trigger ``window``) that decides; labels posted later by
row id, in two parts, are attached to the window's batch and re-score its champion.

And a kill -9 inside closing (a child process killed with the transaction open, then after
it committed and before the run was made, then after the run was made and before the window
recorded it): no row is lost or in two windows, and the window is driven again into exactly
one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import Table, bindparam, select, update

from driftpilot.core.settings import Settings
from driftpilot.inference.log import append
from driftpilot.inference.windows import Windows
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import now
from driftpilot.store.models import InferenceRow, InferenceWindow, ManagedModel, Run
from tests.conftest import TrainedHomes, db_env, plane_on_copy
from tests.integration.test_api_http import (
    LIMITS,
    STOPPED,
    Server,
    assert_problem,
    wait_run,
)
from tests.rows import model_without_champion, window_of_rows
from tools import registry
from tools.datasets import FLIGHTS

pytestmark = pytest.mark.integration

TARGET = FLIGHTS.target
WINDOW = 300
DECIDED = {"completed", "waiting_approval"}


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, trained_homes: TrainedHomes
) -> Iterator[ControlPlane]:
    """A copy of the session's trained flights home (champion v1 on January flights)."""
    yield from plane_on_copy(tmp_path_factory, trained_homes, "windows")


@pytest.fixture(scope="module")
def server(plane: ControlPlane) -> Iterator[Server]:
    assert plane.settings.home is not None
    srv = Server(home=plane.settings.home, env={})
    for who, role in [("olga", "operator"), ("vic", "viewer")]:
        srv.keys[who] = plane.create_api_key(who, role)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv.env = {
        **env,
        "DRIFTPILOT_HOME": str(plane.settings.home),
        "DRIFTPILOT_INFERENCE_TICK_S": "0.2",
        **LIMITS,
        **db_env(),
    }
    srv.start()
    yield srv
    # The module's last test leaves its windows' runs executing, which a graceful stop waits
    # for (8-17 s) though nothing reads them; the killed API's run children exit on their own
    # (driftpilot.execution.processes.ORPHAN_POLL_S), as after the kills the tests make.
    srv.kill()


@pytest.fixture(scope="module")
def feb(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """650 February flights in time order, each with a row id."""
    rows = months["2013-02"].sample(n=650, seed=11, shuffle=True).sort("time_hour")
    return rows.with_row_index("n").with_columns(pl.format("f{}", pl.col("n")).alias("row_id"))


def logged(rows: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows as a service logs them: features, event time, prediction, no label."""
    out = []
    columns = ["row_id", FLIGHTS.time_col, *FLIGHTS.numeric, *FLIGHTS.categorical]
    for row in rows.select(columns).to_dicts():
        when = row[FLIGHTS.time_col]
        assert isinstance(when, datetime)
        row[FLIGHTS.time_col] = when.isoformat()
        row["prediction"] = int(row["sched_dep_time"] > 1500)  # what the service answered
        out.append(row)
    return out


def wait_windows(client: httpx.Client, count: int, timeout: float = 60) -> dict[str, Any]:
    """The windows view once ``count`` windows have their run."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.get("/models/flights/windows").json()
        if len([w for w in view["windows"] if w["run_id"]]) >= count:
            return dict(view)
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_logged_rows_close_into_windows_whose_runs_decide(
    server: Server, plane: ControlPlane, feb: pl.DataFrame
) -> None:
    with server.client("vic") as viewer:
        assert_problem(viewer.put("/models/flights/window", json={"rows": WINDOW}), 403)
        assert viewer.get("/models/flights/windows").json()["windows"] == []
    with server.client() as nobody:
        assert_problem(nobody.get("/models/flights/windows"), 401)
    with server.client("olga") as olga:
        assert_problem(olga.put("/models/nope/window", json={"rows": WINDOW}), 404, "nope")
        assert olga.put("/models/flights/window", json={"rows": 5}).status_code == 422
        assert olga.put("/models/flights/window", json={}).status_code == 422
        set_to = olga.put("/models/flights/window", json={"rows": WINDOW, "minutes": 600})
        assert set_to.status_code == 200, set_to.text
        assert set_to.json()["setting"] == {"rows": WINDOW, "minutes": 600.0}
        rows = logged(feb)
        for start in range(0, len(rows), 100):  # a service's requests of 100 rows
            done = olga.post("/models/flights/inferences", json=rows[start : start + 100])
            assert done.status_code == 200, done.text
        view = wait_windows(olga, 2)
        assert view["open_rows"] == 50
        assert [(w["number"], w["n_rows"], w["reason"]) for w in view["windows"]] == [
            (2, WINDOW, "rows"),
            (1, WINDOW, "rows"),
        ]
        for window in view["windows"]:
            wait_run(olga, window["run_id"], STOPPED, timeout=300)
            run = plane.get_run(window["run_id"])
            assert run.status in DECIDED, run
            assert run.trigger == "window" and run.batch_id == f"window-{window['number']}"
            assert run.metadata["window"] == window["number"]
            assert run.summary["ingestion"]["action"] == "accept", run.summary["ingestion"]
            assert run.summary["drift"]["champion_version"] == 1
        # Every logged row is in exactly one window, in arrival order.
        first, second = view["windows"][1], view["windows"][0]
        assert first["last_id"] < second["first_id"]


def test_labels_posted_later_re_score_the_windows_champion(
    server: Server, plane: ControlPlane, feb: pl.DataFrame
) -> None:
    windows = Windows(plane).windows("flights").windows
    first = next(w for w in windows if w.number == 1)
    ids = [r for r, n in window_of_rows(plane.store, "flights").items() if n == 1]
    truth = {r["row_id"]: r[TARGET] for r in feb.select("row_id", TARGET).to_dicts()}
    labels = [{"row_id": r, TARGET: truth[r]} for r in ids]
    url = "/models/flights/inferences/labels"
    with server.client("vic") as viewer:
        assert_problem(viewer.post(url, json=labels[:5]), 403)
    with server.client("olga") as olga:
        unknown = olga.post(url, json=[*labels[:3], {"row_id": "nope", TARGET: 1}])
        assert_problem(unknown, 422, "unknown row id 'nope'")
        bad = olga.post(url, json=[{"row_id": ids[0], TARGET: 7}])
        assert_problem(bad, 422, "0/1")
        half = olga.post(url, json=labels[:150])
        assert half.status_code == 200, half.text
        body = half.json()
        assert (body["accepted"], body["duplicates"], body["open_rows"]) == (150, 0, 0)
        [part] = body["windows"]
        assert part["number"] == 1 and part["outcome"] == "attached", part
        assert part["rows_labelled"] == 150
        ndjson = "\n".join(json.dumps(label) for label in labels[140:])
        rest = olga.post(
            url, content=ndjson, headers={"Content-Type": "application/x-ndjson"}
        ).json()
        assert (rest["accepted"], rest["duplicates"]) == (150, 10)
        [whole] = rest["windows"]
        assert whole["outcome"] == "attached" and whole["rows_labelled"] == WINDOW
        flipped = [{"row_id": ids[0], TARGET: 1 - truth[ids[0]]}]
        assert_problem(olga.post(url, json=flipped), 409, "another label")
        again = olga.post(url, json=labels[:10]).json()
        assert (again["accepted"], again["duplicates"]) == (0, 10)
    # The realised score is the champion's ROC AUC on the window's 300 rows, computed here.
    rows = feb.filter(pl.col("row_id").is_in(ids))
    scorer = registry.load_version("flights", 1, plane.settings)
    expected = roc_auc_score(rows[TARGET].to_numpy(), scorer.predict_scores(rows))
    assert whole["realised_score"] == pytest.approx(float(expected), abs=1e-9)
    assert part["realised_score"] != whole["realised_score"]  # scored again on more labels
    run = plane.get_run(first.run_id or "")
    filed = pl.read_parquet(run.summary["ingestion"]["path"])
    by_id = dict(zip(filed["row_id"].to_list(), filed[TARGET].to_list(), strict=True))
    assert all(by_id[r] == truth[r] for r in ids)
    assert plane.verify().ok


def test_labels_stored_but_not_attached_before_a_kill_9_are_attached_after_restart(
    server: Server, plane: ControlPlane, feb: pl.DataFrame
) -> None:
    """A labels request that met the window's run in flight stored its labels, answered
    ``busy`` or ``waiting`` and marked the window for its windower; the server is then killed
    (-9), the mark lost. The restarted server's windower attaches them."""
    second = next(w for w in Windows(plane).windows("flights").windows if w.number == 2)
    assert second.run_id is not None
    truth = dict(feb.select("row_id", TARGET).iter_rows())
    table = cast(Table, InferenceRow.__table__)
    in_second = [r for r, n in window_of_rows(plane.store, "flights").items() if n == 2]
    with plane.store.session() as session:  # as _store left them: labelled, not attached
        session.execute(
            update(table)
            .where(table.c.model == "flights", table.c.row_id == bindparam("rid"))
            .values(label=bindparam("value"), labelled_at=now()),
            [{"rid": r, "value": json.dumps(truth[r])} for r in in_second],
        )
    server.restart()
    deadline = time.monotonic() + 60
    while (done := plane.store.effect(second.run_id, f"inference:labels:{WINDOW}")) is None:
        assert time.monotonic() < deadline, "the windower did not attach the late labels"
        time.sleep(0.3)
    assert done["outcome"] == "attached" and done["rows_labelled"] == WINDOW, done
    run = plane.get_run(second.run_id)
    filed = pl.read_parquet(run.summary["ingestion"]["path"])
    assert filed[TARGET].null_count() == 0
    assert all(truth[r] == y for r, y in filed.select("row_id", TARGET).iter_rows())


# -- kill -9 inside closing ----------------------------------------------------------------------

CHILD = """
import os, signal, sys
from driftpilot.core.settings import Settings
from driftpilot.inference import windows as w
from driftpilot.runs.plane import ControlPlane

where = sys.argv[2]
plane = ControlPlane(Settings(home=sys.argv[1]))

def die():
    print("dying", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

if where == "in-transaction":
    close_in = w.Windows._close_in
    def killed(self, *args, **kwargs):
        close_in(self, *args, **kwargs)  # the window inserted, not committed
        die()
    w.Windows._close_in = killed
elif where == "before-run":
    w.Windows.drive = lambda self, window: die()
elif where == "before-recorded":
    submit = w.Windows._submit
    def made(self, window, run_id):
        submit(self, window, run_id)  # the run is committed; the window does not name it
        die()
    w.Windows._submit = made
w.Windows(plane).tick()
print("survived", flush=True)
"""


def kill_inside(home: Path, where: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), where],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DRIFTPILOT_HOME": str(home)},
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "dying" in done.stdout and "survived" not in done.stdout


def placement(cp: ControlPlane) -> tuple[dict[int | None, int], list[InferenceWindow]]:
    with cp.store.reading() as session:
        windows = list(session.scalars(select(InferenceWindow).order_by(InferenceWindow.number)))
    counts: dict[int | None, int] = {}
    for n in window_of_rows(cp.store, "m").values():
        counts[n] = counts.get(n, 0) + 1
    return counts, windows


def test_a_kill_9_inside_closing_loses_no_row_and_the_window_is_driven_again(
    settings: Settings,
) -> None:
    assert settings.home is not None
    cp = ControlPlane(settings)
    try:
        cp.store.add_all([model_without_champion("m")])
        with cp.store.session() as session:
            model = session.get(ManagedModel, "m")
            assert model is not None
            model.windowing = json.dumps({"rows": 10, "minutes": None})
        rows = [
            {"row_id": f"r{i}", "t": "2026-03-01T11:00:00Z", "x": float(i), "prediction": i % 2}
            for i in range(25)
        ]
        assert append(cp.store, "m", rows, max_rows=100).accepted == 25

        kill_inside(settings.home, "in-transaction")
        counts, windows = placement(cp)
        assert counts == {None: 25} and windows == []  # rolled back: every row still open

        kill_inside(settings.home, "before-run")
        counts, windows = placement(cp)
        assert counts == {1: 10, 2: 10, None: 5}  # both due windows closed, no run made
        assert [(w.number, w.run_id) for w in windows] == [(1, None), (2, None)]
        assert cp.store.list_rows(Run) == []

        kill_inside(settings.home, "before-recorded")
        counts, windows = placement(cp)
        assert counts == {1: 10, 2: 10, None: 5}
        assert len(cp.store.list_rows(Run)) == 1  # window 1's run made, then the kill
        assert [w.run_id for w in windows] == [None, None]

        # The restart's first tick: both windows driven, window 1 finds the run it had.
        handed: list[str] = []
        made = Windows(cp, execute=handed.append).tick()
        counts, windows = placement(cp)
        assert counts == {1: 10, 2: 10, None: 5}
        assert [w.run_id for w in windows] == made == handed
        runs = cp.store.list_rows(Run)
        assert sorted(r.id for r in runs) == sorted(made) and len(runs) == 2
        assert {r.trigger for r in runs} == {"window"}
        assert Windows(cp).tick() == []  # nothing left to drive or close
        assert cp.store.verify().ok
        frames = [pl.read_parquet(json.loads(r.summary)["input"]["batch"]["path"]) for r in runs]
        assert sorted(np.concatenate([f["x"].to_numpy() for f in frames]).tolist()) == [
            float(i) for i in range(20)
        ]
    finally:
        cp.close()


def test_a_kill_9_of_the_api_while_rows_are_logged_loses_no_acknowledged_row(
    server: Server, plane: ControlPlane, feb: pl.DataFrame
) -> None:
    """Three services log while the API is killed (-9) and started again on the same home:
    every row acknowledged before, during or after is stored once, and sending everything
    again (a client's retry) writes nothing twice."""
    rows = [{**row, "row_id": f"k{row['row_id']}"} for row in logged(feb)]
    acknowledged: list[str] = []
    lock = threading.Lock()

    def send(part: list[dict[str, Any]]) -> None:
        with server.client("olga") as client:
            for i in range(0, len(part), 25):
                chunk = part[i : i + 25]
                try:
                    answer = client.post("/models/flights/inferences", json=chunk, timeout=10)
                except httpx.HTTPError:  # no answer: not acknowledged, may or may not be in
                    continue
                if answer.status_code == 200:
                    with lock:
                        acknowledged.extend(r["row_id"] for r in chunk)
                time.sleep(0.02)

    threads = [threading.Thread(target=send, args=(rows[k::3],)) for k in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 150:
        assert time.monotonic() < deadline, "no rows acknowledged before the kill"
        time.sleep(0.01)
    before = len(acknowledged)
    server.restart()  # kill -9, then a new server on the same home
    for thread in threads:
        thread.join()
    assert before < len(rows)  # the kill came while rows were still being logged

    def stored() -> dict[str, int | None]:
        return {
            r: n for r, n in window_of_rows(plane.store, "flights").items() if r.startswith("kf")
        }

    assert set(acknowledged) <= set(stored())  # no acknowledged row lost
    with server.client("olga") as client:  # the services send everything again
        again = client.post("/models/flights/inferences", json=rows, timeout=60).json()
    assert again["rows"] == len(rows)
    assert again["duplicates"] >= len(set(acknowledged)), again
    assert again["accepted"] + again["duplicates"] == len(rows)
    final = stored()
    assert len(final) == len(rows)  # one row per id: none doubled
