"""An adopted model in DriftPilot's registry: logged as a run of the model's experiment, the
owner's MLflow model directory carried unchanged inside DriftPilot's pyfunc
(``tools._pyfunc.AdoptedPyfunc``), then registered as a version. MLflow is imported lazily.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import RegistryError
from driftpilot.core.settings import Settings
from tools import registry

if TYPE_CHECKING:
    from tools.adopt import Loaded

SOURCE_ARTIFACT = "source_model"  # the owner's model directory inside DriftPilot's version


def log(
    loaded: Loaded, request: registry.RegisterRequest, settings: Settings
) -> registry.LoggedModel:
    """Log the adopted model into DriftPilot's tracking server as a run of the model's
    experiment: the owner's model directory, unchanged, inside DriftPilot's pyfunc.

    Idempotent per ``request.key``, as ``registry.log_model``.

    Raises:
        RegistryError: MLflow rejected the run.
    """
    existing = registry.find_logged(request.name, request.key, settings)
    if existing is not None:
        return existing
    import mlflow

    client = registry.mlflow_client(settings)
    family = loaded.model.family
    tags = {**request.tags, registry.KEY_TAG: request.key, registry.FAMILY_TAG: family}
    try:
        with mlflow.start_run(
            experiment_id=registry.experiment_id(client, request.name, settings), tags=tags
        ) as run:
            mlflow.log_params({k: str(v)[:6000] for k, v in request.params.items()})
            mlflow.log_metrics(request.metrics)
            info = _log_pyfunc(mlflow, loaded)
            mlflow.set_tags(
                {registry.MODEL_ID_TAG: info.model_id or "", registry.MODEL_URI_TAG: info.model_uri}
            )
    except Exception as exc:  # MLflow raises MlflowException, OSError, SQLAlchemy errors
        raise RegistryError(f"could not log the adopted {request.name!r}: {exc}") from exc
    return registry.LoggedModel(
        name=request.name,
        key=request.key,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        model_id=info.model_id,
        family=family,
    )


def _log_pyfunc(mlflow: Any, loaded: Loaded) -> Any:
    from tools._pyfunc import AdoptedPyfunc

    requirements = [f"{pkg}=={package_version(pkg)}" for pkg in ("mlflow", "polars", "pandas")]
    source_reqs = loaded.path / "requirements.txt"
    if source_reqs.is_file():  # what the owner's model needs, as they logged it
        requirements += [
            line.strip()
            for line in source_reqs.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-")) and not line.startswith("mlflow")
        ]
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)  # its CloudPickle notice is expected: our own class
    try:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=AdoptedPyfunc(loaded.model.spec.model_dump_json()),
            artifacts={SOURCE_ARTIFACT: str(loaded.path)},
            pip_requirements=requirements,
        )
    finally:
        pyfunc_logger.setLevel(level)


def register(
    loaded: Loaded, request: registry.RegisterRequest, settings: Settings
) -> registry.ModelVersionInfo:
    """Log (``log``) and register the adopted model as a version of ``request.name``;
    idempotent per ``request.key``."""
    existing = registry.find_by_key(request.name, request.key, settings)
    if existing is not None:
        return existing
    return registry.register_model(log(loaded, request, settings), request, settings)


def version_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """The lineage as MLflow tags of the registered version (``driftpilot.adopted.*``)."""
    return {
        f"driftpilot.adopted.{k}": v if isinstance(v, str) else json.dumps(v)
        for k, v in lineage.items()
        if v is not None
    }
