"""The built-in GDELT model end to end on recorded-format exports served over real HTTP on
loopback: the reference from the newest exports of the lists, the model trained on it, and a
``{"gdelt": {}}`` schedule every 15 minutes whose firing runs the next export to a decision
(the real scheduler, its tick thread, a clock the test moves)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import GdeltSource, Payload, Scheduler, ScheduleSpec
from driftpilot.scheduling.sources import Sources
from driftpilot.store.models import BatchRecord, Run
from tests.fixtures.gdelt import publish_series, series_stamps
from tests.waiting import Clock, wait_for
from tools.data import split_batches
from tools.datasets import GDELT, load_dataset
from tools.gdelt import fetch_list_tail
from tools.gdelt_model import LEAKING, REFERENCE_EXPORTS

pytestmark = pytest.mark.integration
STAMPS = series_stamps("20261207030000", REFERENCE_EXPORTS + 1)  # the last one comes later
DONE = {"completed", "failed", "waiting_approval"}


class Feed(ThreadingHTTPServer):
    """A static GDELT mirror; with ``ranges``, it answers a suffix Range as GDELT's server
    does (206 and the tail), and records the ranges asked for."""

    ranges = True
    asked: list[str]


class FeedHandler(SimpleHTTPRequestHandler):
    server: Feed

    def do_GET(self) -> None:
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not (self.server.ranges and wanted.startswith("bytes=-") and path.is_file()):
            super().do_GET()
            return
        self.server.asked.append(wanted)
        body = path.read_bytes()
        start = max(0, len(body) - int(wanted.removeprefix("bytes=-")))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[tuple[Feed, str, Path]]:
    root = tmp_path / "www" / "gdeltv2"
    root.mkdir(parents=True)
    httpd = Feed(("127.0.0.1", 0), functools.partial(FeedHandler, directory=str(root.parent)))
    httpd.asked = []
    base = f"http://127.0.0.1:{httpd.server_address[1]}/gdeltv2/"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, base, root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def plane(
    feed: tuple[Feed, str, Path], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    monkeypatch.setenv("DRIFTPILOT_SCHEDULER_GDELT_BASE_URL", feed[1])
    monkeypatch.setenv("DRIFTPILOT_SCHEDULER_GDELT_TIMEOUT_S", "5")
    monkeypatch.setenv("DRIFTPILOT_LEASE_TTL_S", "5")
    cp = ControlPlane(request.getfixturevalue("settings"))  # built after the variables above
    yield cp
    cp.close()
    get_settings.cache_clear()


def test_the_list_tail_is_the_newest_entries_with_or_without_range(
    feed: tuple[Feed, str, Path],
) -> None:
    httpd, base, root = feed
    publish_series(root, base, STAMPS[:6], n_rows=5)
    whole = fetch_list_tail(base, tail_bytes=10_000_000)
    assert len(whole) == 18 and httpd.asked == ["bytes=-10000000"]  # from byte 0: every line
    last_four = sum(len(x) + 1 for x in (root / "masterfilelist.txt").read_text().splitlines()[-4:])
    ranged = fetch_list_tail(base, tail_bytes=last_four + 7)  # 4 lines and a cut one
    assert [e.url for e in ranged] == [e.url for e in whole[-4:]]
    httpd.ranges = False  # a server that ignores Range: the whole list, streamed, tail kept
    plain = fetch_list_tail(base, tail_bytes=last_four + 7)
    assert [e.url for e in plain] == [e.url for e in whole[-4:]]
    assert len(httpd.asked) == 2


def test_a_gdelt_model_is_trained_on_the_newest_exports_and_a_15_minute_schedule_runs_it(
    feed: tuple[Feed, str, Path], plane: ControlPlane
) -> None:
    httpd, base, root = feed
    publish_series(root, base, STAMPS[:-1], n_rows=500)
    reference = load_dataset("gdelt", plane.settings)
    assert httpd.asked, "the master list's tail is read, not the whole list"
    assert reference.height == 500 * REFERENCE_EXPORTS
    times = reference["event_time"].unique().sort().dt.strftime("%Y%m%d%H%M%S").to_list()
    assert times == STAMPS[:-1]
    # What `model add gdelt --dataset gdelt --initial 2026-12-07T04` trains on: an hour.
    batches = {
        b.info.batch_id: b.frame for b in split_batches(reference, GDELT.time_col, every="hour")
    }
    assert list(batches) == ["2026-12-07T03", "2026-12-07T04"]
    view = plane.add_model(
        "gdelt",
        batches["2026-12-07T04"],
        target=GDELT.target,
        time_col=GDELT.time_col,
        numeric=GDELT.numeric,
        categorical=GDELT.categorical,
        source="gdelt",
        principal="gus",
    )
    assert view.task == "binary" and view.metric == "roc_auc"
    assert not set(view.features) & set(LEAKING)
    # Actors and tone carry the relation: learnable without the codes that leak the label.
    assert view.baseline is not None and view.baseline > 0.8, view

    # Before GDELT publishes the next window, its newest export is in the champion's window:
    # nothing new to judge, and nothing downloaded.
    sources = Sources(plane, [], plane.settings.scheduler)
    payload = Payload(model="gdelt", source=GdeltSource())
    assert sources.pick(payload, set()) is None

    publish_series(root, base, STAMPS, n_rows=500)  # GDELT publishes the next window
    clock = Clock()
    spec = ScheduleSpec(
        schedule="*/15 * * * *", payload=Payload(model="gdelt", source=GdeltSource())
    )
    with Scheduler(plane, clock=clock) as sched:
        cron = sched.create(spec, "gus")
        assert cron.next_run_date is not None
        due = datetime.fromisoformat(cron.next_run_date)
        assert due.minute % 15 == 0 and due.second == 0
        clock.move_to(due + timedelta(seconds=1))  # the quarter hour comes: the tick fires
        sched.wake()
        firing = wait_for(lambda: sched.firings(cron.cron_id), 30, "the quarter hour's firing")[0]
        assert firing.outcome == "fired", firing
        assert firing.batch_id == f"gdelt-{STAMPS[-1]}" and firing.run_id is not None

        def done() -> Run | None:
            row = plane.store.get(Run, firing.run_id or "")
            return row if row.status in DONE else None

        run = wait_for(done, 180, "the scheduled GDELT run")
    assert run.trigger == "schedule" and run.status in ("completed", "waiting_approval")
    assert run.outcome, run.summary  # decided
    filed = plane.store.list_rows(BatchRecord, BatchRecord.run_id == run.id)
    assert [(b.status, b.n_rows) for b in filed] == [("accepted", 500)], [
        (b.reason, run.outcome) for b in filed
    ]
    batch = pl.read_parquet(filed[0].path)
    assert batch["conflict"].null_count() == 0  # labelled on arrival: scored, not estimated
    assert batch["event_time"].unique().to_list() == [
        datetime.strptime(STAMPS[-1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    ]
