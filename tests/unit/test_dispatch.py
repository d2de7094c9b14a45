"""The one busy-model rule (``BusyRetry``) and the inline dispatcher, without a database."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from driftpilot.core.errors import ModelBusy
from driftpilot.execution.dispatch import BusyRetry


class Busy:
    """Raises ModelBusy ``times`` times, then answers."""

    def __init__(self, times: int) -> None:
        self.left, self.calls = times, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise ModelBusy("model 'flights' is busy")
        return "done"


def test_the_backoff_doubles_up_to_its_cap() -> None:
    rule = BusyRetry(first_s=0.5, max_s=2.0)
    assert [rule.delay(a) for a in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert rule.delay(10_000) == 2.0  # no overflow however long it waits
    assert not rule.gives_up(1e9, 50)  # no deadline: waits as long as it takes


def test_a_busy_model_is_retried_until_it_answers() -> None:
    call = Busy(3)
    started = time.monotonic()
    assert BusyRetry(first_s=0.01, max_s=0.02).call(call) == "done"
    assert call.calls == 4 and time.monotonic() - started < 2


def test_at_the_deadline_the_last_model_busy_is_raised() -> None:
    call = Busy(1000)
    started = time.monotonic()
    with pytest.raises(ModelBusy):
        BusyRetry(first_s=0.05, max_s=0.05, deadline_s=0.2).call(call)
    assert 0.1 <= time.monotonic() - started < 2 and 3 <= call.calls <= 6
    with pytest.raises(ModelBusy):  # no deadline to wait for: one attempt
        BusyRetry(deadline_s=0).call(Busy(1))


def test_a_stop_ends_the_wait_and_other_errors_are_not_retried() -> None:
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(ModelBusy):
        BusyRetry(first_s=0.05, max_s=0.05).call(Busy(10_000), stop=stop)

    def broken() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        BusyRetry(first_s=0.01).call(broken)


def test_procrastinate_retries_only_a_busy_model_by_the_same_rule() -> None:
    strategy = BusyRetry(first_s=1, max_s=4, deadline_s=10).procrastinate()
    job: Any = SimpleNamespace(attempts=1)
    decision = strategy.get_retry_decision(exception=ModelBusy("busy"), job=job)
    assert decision is not None and decision.retry_at is not None
    assert strategy.get_retry_decision(exception=RuntimeError("boom"), job=job) is None
    late: Any = SimpleNamespace(attempts=4)  # waited 1 + 2 + 4 + 4 = 11 s > 10 s
    assert strategy.get_retry_decision(exception=ModelBusy("busy"), job=late) is None
