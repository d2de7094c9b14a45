"""An intent left open by a run that ended (issue 20 item 7, the fault soak): the disk of
MLflow's artifacts fills during a retrain's ``log_model``. The failing run closes its intent
as ``failed`` itself (with what MLflow shows of the effect); an intent a dead process left
open on an ended run is closed by ``recover``. Either way audit verify passes again and the
model accepts new runs (before the fix: "intent ... never completed" and 409 for good)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Mutation, Run
from tests.integration.test_control_graph import FORCE_RETRAIN, LOW_RISK, merge
from tests.integration.test_governance import data, plane_for  # noqa: F401 (fixtures)
from tools import registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("mount") is None, reason="mounts a tmpfs (root)"
    ),
]
STEP = "retraining:log_model"


@contextmanager
def full_disk(folder: Path) -> Iterator[None]:
    """``folder`` on a tmpfs holding its present files with 8 KiB to spare: any model
    logged into it fails with ENOSPC, as on the soak's full disk. The folder is as it was
    afterwards (the tmpfs and what was half-written into it are dropped)."""
    saved = folder.with_name(folder.name + ".saved")
    shutil.copytree(folder, saved)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], check=True)
    try:
        shutil.copytree(saved, folder, dirs_exist_ok=True)
        stat = os.statvfs(folder)
        used_kb = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
        subprocess.run(["mount", "-o", f"remount,size={used_kb + 8}k", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        shutil.rmtree(saved)


def artifacts_of(cp: ControlPlane, name: str) -> Path:
    client = registry.mlflow_client(cp.settings)
    location = client.get_experiment_by_name(f"driftpilot/{name}").artifact_location
    return Path(urlparse(location).path)


def phases(cp: ControlPlane, run_id: str) -> list[tuple[str, str]]:
    rows = cp.store.list_rows(Mutation, Mutation.run_id == run_id, order=Mutation.id)
    return [(m.step, m.phase) for m in rows]


def test_an_intent_of_a_run_that_failed_on_a_full_disk_is_closed(
    plane_for: Any,  # noqa: F811
    data: Any,  # noqa: F811
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, LOW_RISK))
    with full_disk(artifacts_of(cp, "flights")):
        failed = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    assert failed.status == "failed", failed.summary
    assert "No space left" in json.dumps(failed.summary)
    # (a) the run saw its step fail: the intent is closed as failed, with what MLflow shows
    assert phases(cp, failed.run_id)[-2:] == [(STEP, "intent"), (STEP, "failed")]
    [closed] = cp.store.list_rows(
        Mutation, Mutation.run_id == failed.run_id, Mutation.phase == "failed"
    )
    result = json.loads(closed.result)
    assert "No space left" in result["error"]
    assert result["found"]["logged"] is None  # no completely logged run to reuse
    assert result["found"]["partial_runs"], "the half-logged MLflow run is accounted for"
    verified = cp.verify()
    assert verified.ok, verified.problems
    assert cp.recover() == []  # nothing left open

    # (b) a process that died inside the step after its run was marked failed: recover closes
    # the intent it left (the soak's case: the failing run could not write its end either)
    args = {"name": "flights", "key": f"{failed.run_id}:retraining"}
    cp.store.record_mutation(failed.run_id, STEP, "log_model", "intent", args)
    assert any("its run ended failed" in p for p in cp.verify().problems)
    [done] = cp.recover()
    assert (done.run_id, done.status) == (failed.run_id, "failed")
    assert done.did.startswith("closed the intent as failed") and "partial_runs" in done.did
    assert phases(cp, failed.run_id)[-2:] == [(STEP, "intent"), (STEP, "failed")]
    assert cp.recover() == []  # idempotent: closed once
    verified = cp.verify()
    assert verified.ok, verified.problems

    # the model accepts runs again, and this one logs its challenger
    again = cp.start_run("flights", data["october"], "2013-10", requested_by="alice")
    assert again.status == "completed", again.summary
    assert (STEP, "applied") in phases(cp, again.run_id)
    assert cp.store.get(Run, failed.run_id).status == "failed"
    verified = cp.verify()
    assert verified.ok, verified.problems

    # a version registered although its call failed (the process died before its record) is
    # accounted for by recover, not left without its register tool call
    logged = registry.find_logged("flights", f"{again.run_id}:retraining", cp.settings)
    assert logged is not None
    key = f"{failed.run_id}:cicd"
    request = registry.RegisterRequest(name="flights", key=key, tags={})
    cp.store.record_mutation(
        failed.run_id, "cicd:register", "register_model", "intent", {"name": "flights", "key": key}
    )
    made = registry.register_model(logged, request, cp.settings)
    assert f"flights v{made.version} has no register tool call" in cp.verify().problems
    [done] = cp.recover()
    assert f'"version": {made.version}' in done.did
    verified = cp.verify()
    assert verified.ok, verified.problems
    assert phases(cp, failed.run_id)[-1] == ("cicd:register", "failed")
