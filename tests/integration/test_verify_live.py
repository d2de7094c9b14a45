"""``audit --verify`` on a live system (issue 20's fault soak): a promotion under way, its
intent open and its run holding the lease, sits between MLflow's alias move and the audit's
record of it. Verify must not call that a break; once its run is dead it is one, and says so
(before the fix: "MLflow's champion is v2, the audit's champion history says v1" on a
healthy system whose promotion was in flight)."""

from __future__ import annotations

from typing import Any

import pytest

from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from tests.integration.test_governance import later, plane_for  # noqa: F401 (fixtures)
from tools import registry

pytestmark = pytest.mark.integration
RUN = "r-in-flight"


def test_a_promotion_in_flight_is_not_a_break_until_its_run_dies(
    plane_for: Any,  # noqa: F811
) -> None:
    cp: ControlPlane = plane_for({})
    try:
        assert cp.verify().ok
        champion = registry.current_champion("flights", cp.settings)
        assert champion is not None
        [v1] = [v for v in registry.list_versions("flights", cp.settings) if v.version == champion]
        logged = registry.find_logged("flights", v1.tags[registry.KEY_TAG], cp.settings)
        assert logged is not None
        cp.store.acquire_lease("flights", RUN, "test", get_settings().lease_ttl_s)
        key = f"{RUN}:cicd"
        cp.store.record_mutation(
            RUN, "cicd:register", "register_model", "intent", {"name": "flights", "key": key}
        )
        made = registry.register_model(
            logged, registry.RegisterRequest(name="flights", key=key, tags={}), cp.settings
        )
        registry.set_alias("flights", "champion", made.version, cp.settings)

        live = cp.verify()  # the run holds the lease: its mutation is under way
        assert live.ok, live.problems

        dead = later(cp).verify()  # its lease expired: the run died mid-way
        assert not dead.ok
        assert any(
            f"MLflow's champion is v{made.version}, the audit's champion history says "
            f"v{champion}" in p
            for p in dead.problems
        ), dead.problems
        assert any("never completed" in p for p in dead.problems), dead.problems
    finally:
        cp.close()
