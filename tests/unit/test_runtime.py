"""The composition root: what ``build_runtime`` wires, the order ``start`` and ``close``
follow, and that a runtime closes what it owns (and only that)."""

from __future__ import annotations

import pytest

from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import Settings, is_postgres
from driftpilot.runs.plane import ControlPlane
from driftpilot.runtime import build_runtime


def test_the_full_runtime_starts_and_closes_everything_it_made(settings: Settings) -> None:
    runtime = build_runtime(settings, recover=False)
    assert runtime.own_plane and runtime.plane.settings is settings
    assert runtime.executor is not None and runtime.scheduler is not None
    assert runtime.alerts is not None
    assert (runtime.queue is not None) == is_postgres(settings.db_url)
    with runtime:
        assert runtime.started and runtime.scheduler.running
        assert runtime.scheduler.conf.enabled == settings.scheduler.enabled
        assert runtime.scheduler.roots == [settings.home / "inbox"]
    assert not runtime.started and not runtime.scheduler.running
    runtime.close()  # twice is harmless


class CountingPlane(ControlPlane):
    """A real plane that counts its ``close`` calls."""

    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


@pytest.mark.parametrize("own", [False, True])
def test_a_given_plane_is_closed_only_when_owned(settings: Settings, own: bool) -> None:
    plane = CountingPlane(settings)
    runtime = build_runtime(plane=plane, own_plane=own, executor=False, alerts=False)
    with runtime:
        assert runtime.plane is plane and runtime.own_plane is own
        assert (runtime.executor, runtime.alerts) == (None, None)
        assert runtime.scheduler is not None
    assert plane.closed == int(own)


def test_a_managing_scheduler_does_not_fire_and_reads_the_given_roots(
    settings: Settings,
) -> None:
    roots = [settings.home / "elsewhere"]
    runtime = build_runtime(settings, executor=False, alerts=False, firing=False, roots=roots)
    with runtime:
        assert runtime.scheduler is not None and runtime.scheduler.running
        assert runtime.scheduler.conf.enabled is False
        assert runtime.scheduler.roots == roots


def test_a_worker_queue_needs_postgres(settings: Settings) -> None:
    if is_postgres(settings.db_url):
        pytest.skip("the embedded home's refusal")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        build_runtime(settings, executor=False, alerts=False, queue=True)


def test_the_apps_own_settings_choose_its_run_processes(settings: Settings) -> None:
    """``create_app(plane, conf)`` once took its run children from the plane's settings,
    whatever ``conf.run_processes`` said."""
    from api.app import create_app
    from driftpilot.core.settings import ApiSettings

    plane = ControlPlane(settings)
    try:
        assert settings.api.run_processes > 0
        here = create_app(plane, ApiSettings(run_processes=0), own_plane=False)
        assert here.state.executor.children is None
        if not is_postgres(settings.db_url):  # PostgreSQL runs go through the task queue
            conf = ApiSettings(run_processes=1)
            children = create_app(plane, conf, own_plane=False).state.executor.children
            assert children is not None and children.processes == 1
    finally:
        plane.close()
