"""Registry tools: MLflow tracking and model registry for DriftPilot's managed models.

Every trained model is logged as an MLflow run (params, metrics, the model as a pyfunc with
explicit pip requirements, the drift report as an artifact): ``log_model``. A version of its
registered model is created only for a model that may serve (``register_model``): a
bootstrap champion, or a challenger that is being promoted or put to an approver. A rejected
challenger stays an MLflow run with its logged model (loadable by ``load_logged``), so the
registry lists only models that were, or were proposed as, champions. Aliases carry roles:
``champion`` (serving) and ``challenger`` (candidate). Promotion keeps a history of
champions on the registered model so that a rollback can move ``champion`` back to the
previous version.

Logging and registration are each idempotent for a caller-supplied key (stored as the run
and version tag ``driftpilot.key``): the same key returns the same run, the same version.
MLflow is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from driftpilot.core.errors import AliasNotFound, ChampionMoved, RegistryError
from driftpilot.core.settings import Settings, get_settings
from tools.calibrate import CalibratedModel
from tools.train import TrainedModel

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
KEY_TAG = "driftpilot.key"
FAMILY_TAG = "driftpilot.family"
MODEL_ID_TAG = "driftpilot.model_id"
MODEL_URI_TAG = "driftpilot.model_uri"  # set last on a run: its model was logged completely
HISTORY_TAG = "driftpilot.champion_history"
ROLLBACK_TAG = "driftpilot.last_rollback"
_REQUIREMENTS = ("lightgbm", "catboost", "polars", "pandas", "numpy", "scikit-learn", "pyarrow")


class ModelVersionInfo(BaseModel):
    """One registered version of a managed model."""

    name: str
    version: int
    run_id: str | None
    aliases: list[str] = Field(description="Aliases pointing at this version (champion, ...).")
    tags: dict[str, str]
    created_at: datetime
    source: str = Field(description="Model URI the version was registered from.")


class LoggedModel(BaseModel):
    """A model logged as an MLflow run (with its model), not necessarily registered."""

    name: str = Field(description="Registered model name it would be a version of.")
    key: str = Field(description="Idempotency key the run was logged under.")
    run_id: str = Field(description="MLflow run holding params, metrics, reports and model.")
    model_uri: str = Field(description="URI that loads the logged model (models:/m-...).")
    model_id: str | None = Field(description="MLflow 3 logged-model id (None before MLflow 3).")
    family: str


class RegisterRequest(BaseModel):
    """What to record with a new model version."""

    name: str = Field(description="Registered model name (one per managed model).")
    key: str = Field(description="Idempotency key, e.g. '<run id>:retraining'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Run parameters to log.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Run metrics to log.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags for run and version.")
    artifacts: list[str] = Field(default_factory=list, description="Files to attach (reports).")


class PromotionResult(BaseModel):
    """Where the champion alias points before and after a promotion or rollback."""

    name: str
    previous: int | None = Field(description="Champion version before (None: there was none).")
    current: int = Field(description="Champion version now.")
    changed: bool = Field(description="False when the call was a no-op (already so).")


def mlflow_client(settings: Settings) -> Any:
    """A client of DriftPilot's own tracking server and registry (and MLflow's process-wide
    URIs set to them, for the fluent ``mlflow.start_run`` a logging caller uses)."""
    import mlflow
    from mlflow import MlflowClient

    for uri in {settings.mlflow_tracking_uri, settings.mlflow_registry_uri}:
        seed_sqlite_store(uri)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_registry_uri)
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)


def seed_sqlite_store(uri: str) -> bool:
    """Give a new SQLite tracking store its tables by copying an empty, fully migrated
    database instead of letting MLflow run its ~50 schema migrations (measured 1.5-3.4 s per
    new home on 2 cores; a copy takes milliseconds). The empty database is made once per MLflow
    version in the user's cache. True when it seeded ``uri``; False when ``uri`` is not a
    SQLite file, already exists, or the cache cannot be written (MLflow then creates the
    tables itself, as it always did).

    The copy appears under its final name with a hard link, which fails if the file exists:
    a process that lost the race leaves the winner's database alone."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return False
    target = Path(uri.removeprefix("sqlite:///"))
    if target.exists():
        return False
    try:
        template = _empty_store()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(template, partial)
        _default_experiment_at(partial, Path.cwd() / "mlruns" / "0")
        try:
            os.link(partial, target)
        except FileExistsError:
            return False
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:  # a read-only cache: MLflow creates the tables, slower, same result
        log.info("MLflow store %s not seeded from the template: %s", target, exc)
        return False
    return True


def _empty_store() -> Path:
    """The cached empty MLflow database of the installed MLflow version (made if missing)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "driftpilot"
    template = cache / f"mlflow-empty-{package_version('mlflow')}.db"
    if template.is_file():
        return template
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    cache.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{template.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{partial}", str(cache / "mlruns"))
    store.engine.dispose()
    os.replace(partial, template)  # whole or absent: a reader never copies half a database
    return template


def _default_experiment_at(database: Path, location: Path) -> None:
    """Point MLflow's Default experiment (id 0) where MLflow itself would have put it for a
    store created here and now (``./mlruns/0``), not at the template's folder."""
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(location),)
        )


def experiment_id(client: Any, name: str, settings: Settings) -> str:
    """The id of model ``name``'s experiment (``driftpilot/<name>``), created if new."""
    experiment_name = f"driftpilot/{name}"
    found = client.get_experiment_by_name(experiment_name)
    if found is not None:
        return str(found.experiment_id)
    location = artifact_location(name, settings)
    return str(client.create_experiment(experiment_name, artifact_location=location))


def is_remote(settings: Settings) -> bool:
    """Whether the tracking URI names an MLflow server (http or https) rather than a local
    store (a SQLite file or a directory)."""
    return settings.mlflow_tracking_uri.split(":", 1)[0].lower() in ("http", "https")


def artifact_location(name: str, settings: Settings) -> str | None:
    """Where a new experiment of model ``name`` keeps its artifacts; None lets the server
    choose (its ``--artifacts-destination``, reached through its proxy).

    A local store uses ``mlflow_artifact_root`` (by default a folder under the home). With a
    tracking server, that default folder is on this machine only: the server, and every
    other process that loads the model, could not read it. So the server chooses unless
    ``mlflow_artifact_root`` was pointed somewhere else (e.g. ``s3://...``) on purpose.
    """
    root = settings.mlflow_artifact_root.rstrip("/")
    if is_remote(settings) and root == (settings.home / "mlartifacts").as_uri():
        return None
    return f"{root}/{name}"


def _info(mv: Any) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        aliases=list(mv.aliases or []),
        tags=dict(mv.tags or {}),
        source=mv.source,
        created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
    )


def find_by_key(name: str, key: str, settings: Settings | None = None) -> ModelVersionInfo | None:
    """The version registered under an idempotency key, if any."""
    client = mlflow_client(settings or get_settings())
    found = client.search_model_versions(f"name = '{name}' and tags.`{KEY_TAG}` = '{key}'")
    return _info(client.get_model_version(name, found[0].version)) if found else None


def find_logged(name: str, key: str, settings: Settings | None = None) -> LoggedModel | None:
    """The completely logged run of model ``name`` under an idempotency key, if any (a run
    whose logging died before its model was stored does not count)."""
    client = mlflow_client(settings or get_settings())
    experiment = client.get_experiment_by_name(f"driftpilot/{name}")
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{KEY_TAG}` = '{key}'", order_by=["start_time ASC"]
    )
    done = [r for r in runs if MODEL_URI_TAG in r.data.tags]
    return _logged(name, key, done[0]) if done else None


def _logged(name: str, key: str, run: Any) -> LoggedModel:
    tags = run.data.tags
    return LoggedModel(
        name=name,
        key=key,
        run_id=run.info.run_id,
        model_uri=tags[MODEL_URI_TAG],
        model_id=tags.get(MODEL_ID_TAG) or None,
        family=tags.get(FAMILY_TAG, ""),
    )


def log_model(
    model: TrainedModel | CalibratedModel,
    request: RegisterRequest,
    settings: Settings | None = None,
) -> LoggedModel:
    """Log a trained model (or a champion with a calibration map: ``tools.calibrate``) as an
    MLflow run of ``request.name``'s experiment, without registering a version.

    Idempotent per ``request.key``: a completely logged run with that key is returned and
    nothing is logged. Params, metrics, the training report and ``request.artifacts`` (e.g.
    the Evidently report) are attached to the run.

    Raises:
        RegistryError: MLflow rejected the run or an artifact is missing.
    """
    settings = settings or get_settings()
    existing = find_logged(request.name, request.key, settings)
    if existing is not None:
        return existing
    import mlflow

    client = mlflow_client(settings)
    tags = {**request.tags, KEY_TAG: request.key, FAMILY_TAG: model.family}
    try:
        with mlflow.start_run(
            experiment_id=experiment_id(client, request.name, settings), tags=tags
        ) as run:
            _log_run(mlflow, model, request)
            info = _log_pyfunc(mlflow, model)
            # Last: the tag marks the run as complete for find_logged.
            mlflow.set_tags({MODEL_ID_TAG: info.model_id or "", MODEL_URI_TAG: info.model_uri})
    except RegistryError:
        raise
    except Exception as exc:  # MLflow raises MlflowException, OSError, SQLAlchemy errors
        raise RegistryError(f"could not log {request.name!r}: {exc}") from exc
    return LoggedModel(
        name=request.name,
        key=request.key,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        model_id=info.model_id,
        family=model.family,
    )


def register_model(
    model: TrainedModel | LoggedModel, request: RegisterRequest, settings: Settings | None = None
) -> ModelVersionInfo:
    """Register a model as a new version of ``request.name``.

    ``model`` is either a logged run (``log_model``: a challenger registered when it is
    promoted or sent for approval; ``request.params``, ``metrics`` and ``artifacts`` are then
    ignored, the run has its own) or a trained model, which is logged first (``log_model``
    with the same key).

    Idempotent per ``request.key``: if a version with that key exists it is returned and
    nothing is logged or registered.

    Raises:
        RegistryError: MLflow rejected the run or the registration.
    """
    settings = settings or get_settings()
    existing = find_by_key(request.name, request.key, settings)
    if existing is not None:
        return existing
    logged = model if isinstance(model, LoggedModel) else log_model(model, request, settings)
    client = mlflow_client(settings)
    tags = {**request.tags, KEY_TAG: request.key, FAMILY_TAG: logged.family}
    try:
        _ensure_registered_model(client, request.name)
        # model_id: a tracking server checks that a 'models:/m-...' source names the logged
        # model it came from (the SQLite store does not).
        mv = client.create_model_version(
            request.name,
            logged.model_uri,
            run_id=logged.run_id,
            tags=tags,
            model_id=logged.model_id,
        )
        return _info(client.get_model_version(request.name, mv.version))
    except Exception as exc:  # MLflow raises MlflowException, OSError, SQLAlchemy errors
        raise RegistryError(f"could not register {request.name!r}: {exc}") from exc


def _log_run(mlflow: Any, model: TrainedModel | CalibratedModel, request: RegisterRequest) -> None:
    params = {
        **(model.report.params if model.report else {}),
        **request.params,
        "family": model.family,
        "features": ",".join(model.spec.features),
    }
    mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
    metrics = dict(request.metrics)
    if model.report is not None:
        valid = model.report.valid
        metrics["best_iteration"] = float(model.report.best_iteration)
        metrics.update({f"valid_{k}": v for k, v in valid.metrics.items() if v is not None})
        mlflow.log_dict(model.report.model_dump(mode="json"), "train_report.json")
    mlflow.log_metrics(metrics)
    for path in request.artifacts:
        if not Path(path).exists():
            raise RegistryError(f"artifact {path} does not exist")
        mlflow.log_artifact(path, artifact_path="reports")


def _log_pyfunc(mlflow: Any, model: TrainedModel | CalibratedModel) -> Any:
    # Explicit requirements: inference takes ~7 s, this takes ~0.1 s.
    requirements = [f"{pkg}=={package_version(pkg)}" for pkg in _REQUIREMENTS]
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(
        logging.ERROR
    )  # its CloudPickle notice is expected: we log our own class
    try:
        from tools._pyfunc import DriftPilotModel

        # A calibrated champion scores like a TrainedModel (predict_scores): the same wrapper.
        wrapped = DriftPilotModel(cast(TrainedModel, model))
        return mlflow.pyfunc.log_model(
            name="model", python_model=wrapped, pip_requirements=requirements
        )
    finally:
        pyfunc_logger.setLevel(level)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"driftpilot.managed": "true"})


def set_alias(
    name: str, alias: str, version: int, settings: Settings | None = None
) -> ModelVersionInfo:
    """Point an alias (e.g. 'challenger') at a version. Moving 'champion' should go through
    ``promote`` so the champion history is kept."""
    client = mlflow_client(settings or get_settings())
    try:
        client.set_registered_model_alias(name, alias, str(version))
        return _info(client.get_model_version(name, str(version)))
    except Exception as exc:
        raise RegistryError(f"cannot set alias {alias!r} of {name!r} to v{version}: {exc}") from exc


def get_alias(name: str, alias: str, settings: Settings | None = None) -> ModelVersionInfo:
    """The version an alias points at.

    Raises:
        AliasNotFound: the model does not exist or no version carries the alias.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings or get_settings())
    try:
        return _info(client.get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        raise AliasNotFound(f"model {name!r} has no version with alias {alias!r}") from exc


def load_version(name: str, version: int, settings: Settings | None = None) -> TrainedModel:
    """Load a registered version back as a TrainedModel (scores Polars frames)."""
    mlflow_client(settings or get_settings())
    return _load(f"models:/{name}/{version}")


def load_by_alias(name: str, alias: str, settings: Settings | None = None) -> TrainedModel:
    """Load the version an alias points at (e.g. the champion) as a TrainedModel.

    Raises:
        AliasNotFound: no version carries the alias.
    """
    settings = settings or get_settings()
    get_alias(name, alias, settings)  # clear error before MLflow's
    return _load(f"models:/{name}@{alias}")


def load_logged(model_uri: str, settings: Settings | None = None) -> TrainedModel:
    """Load a logged model (``LoggedModel.model_uri``, registered or not) as a TrainedModel."""
    mlflow_client(settings or get_settings())
    return _load(model_uri)


def _load(uri: str) -> TrainedModel:
    import mlflow.pyfunc

    try:
        wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as exc:
        raise RegistryError(f"cannot load {uri}: {exc}") from exc
    return wrapper.model


def list_versions(name: str, settings: Settings | None = None) -> list[ModelVersionInfo]:
    """Every version of a registered model, newest first (empty if the model is unknown)."""
    client = mlflow_client(settings or get_settings())
    found = client.search_model_versions(f"name = '{name}'")
    versions = [_info(client.get_model_version(name, mv.version)) for mv in found]
    return sorted(versions, key=lambda v: -v.version)


def champion_history(name: str, settings: Settings | None = None) -> list[int]:
    """Champion versions in the order they were promoted (last = current)."""
    client = mlflow_client(settings or get_settings())
    try:
        tags = client.get_registered_model(name).tags
    except Exception as exc:
        raise RegistryError(f"unknown registered model {name!r}: {exc}") from exc
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


_ANY = object()


def current_champion(name: str, settings: Settings | None = None) -> int | None:
    """The version the ``champion`` alias points at (None: no champion yet)."""
    try:
        return get_alias(name, CHAMPION, settings).version
    except AliasNotFound:
        return None


def promote(
    name: str, version: int, settings: Settings | None = None, *, expected: Any = _ANY
) -> PromotionResult:
    """Make ``version`` the champion, remembering the previous one for rollback.

    With ``expected`` this is a compare-and-swap: the alias moves only if the champion is
    still ``expected`` (None: no champion yet), the version the challenger was compared
    against. Idempotent: promoting the current champion again changes nothing. Risk checks
    are not made here: the policy layer decides whether a promotion may happen.

    Raises:
        ChampionMoved: the champion is no longer ``expected``.
    """
    settings = settings or get_settings()
    client = mlflow_client(settings)
    history = champion_history(name, settings)
    previous = history[-1] if history else None
    if previous == version:
        return PromotionResult(name=name, previous=previous, current=version, changed=False)
    now_champion = current_champion(name, settings)
    if now_champion == version:  # a replay: the alias moved before a crash, the history did not
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))
        return PromotionResult(name=name, previous=previous, current=version, changed=False)
    if expected is not _ANY and now_champion != expected:
        raise ChampionMoved(
            f"{name}: champion is v{now_champion}, not v{expected} that v{version} was "
            "compared against"
        )
    set_alias(name, CHAMPION, version, settings)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))
    return PromotionResult(name=name, previous=now_champion, current=version, changed=True)


def rollback(
    name: str, key: str, settings: Settings | None = None, plan: tuple[int, int] | None = None
) -> PromotionResult:
    """Move ``champion`` back to the previous champion.

    Idempotent per ``key``: a second call with the same key returns the first call's result
    without moving anything. ``plan`` = (from, to), as written in the rollback's intent,
    makes a call replayed after a crash finish that rollback instead of rolling back again.

    Raises:
        RegistryError: there is no previous champion to return to.
    """
    settings = settings or get_settings()
    client = mlflow_client(settings)
    done = client.get_registered_model(name).tags.get(ROLLBACK_TAG)
    if done is not None:
        record = json.loads(done)
        if record["key"] == key:
            return PromotionResult.model_validate({**record["result"], "changed": False})
    history = champion_history(name, settings)
    if plan is not None:
        current, previous = plan
        # The crash may have come after the history tag was shortened: shorten it once.
        remaining = history[:-1] if history[-1:] == [current] else history
    elif len(history) < 2:
        raise RegistryError(f"model {name!r} has no previous champion to roll back to")
    else:
        current, previous, remaining = history[-1], history[-2], history[:-1]
    set_alias(name, CHAMPION, previous, settings)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(remaining))
    result = PromotionResult(name=name, previous=current, current=previous, changed=True)
    client.set_registered_model_tag(
        name, ROLLBACK_TAG, json.dumps({"key": key, "result": result.model_dump()})
    )
    return result
