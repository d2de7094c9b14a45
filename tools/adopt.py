"""Adopt a model DriftPilot did not train: an MLflow model, loaded as a pyfunc, checked
against a labelled reference and scored the way every DriftPilot model scores.

Where the model comes from (``fetch``): ``models:/name@alias``, ``models:/name/3`` or
``runs:/ID/path`` on any MLflow tracking server, or a local MLflow model directory. The source
server is reached through an explicit client and explicit URIs only: MLflow's process-wide
tracking and registry URIs (DriftPilot's own registry) are never changed, so a concurrent run
cannot log into the owner's server.

What it takes (``check_inputs``): the input signature's columns, each checked against the
reference (missing, extra or retyped columns are named together in one ``SchemaError``);
without a signature the caller names them (numeric and categorical).

How it scores (``AdoptedModel.predict_scores``, the shape ``tools.metrics`` reads):

- a classifier gives probabilities where its flavour can: ``predict_proba`` of an sklearn
  estimator or pipeline, a LightGBM / XGBoost / CatBoost classifier; or its pyfunc's
  ``predict`` returns them (a LightGBM or XGBoost booster, a custom model returning a
  probability array or a frame with a column per class);
- otherwise it is label-only: its scores are its predicted labels (binary 0/1, multiclass
  one-hot), which only the metrics that need no probabilities read (F1, macro F1);
- a regression scores its predictions.

The way is chosen once, on the reference, and kept in the model's ``AdoptedSpec``: a batch
on which a probability model happens to say only 0 and 1 is still read as probabilities.

In DriftPilot's registry the adopted model is a pyfunc (``tools._pyfunc.AdoptedPyfunc``) that
carries the owner's MLflow model directory unchanged as an artifact and loads it with its own
flavour, so ``tools.registry`` loads it back as an ``AdoptedModel`` like any champion.
MLflow is imported lazily.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, ModelError, RegistryError, SchemaError
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import METRICS, PRIMARY, Task, metrics_for
from tools import registry
from tools.metrics import class_list, encode_labels

# How an adopted model's scores are read (chosen once, on the reference).
Output = Literal[
    "native_proba",  # the flavour's predict_proba, columns in its classes_ order
    "proba_frame",  # the pyfunc returns a frame with a probability column per class
    "proba_array",  # the pyfunc returns probabilities: (n,) P(1) or (n, k) in classes order
    "labels",  # the pyfunc returns labels: label-only
    "predictions",  # a regression's numbers
]
NATIVE_FLAVOURS = ("sklearn", "lightgbm", "xgboost", "catboost")
SOURCE_ARTIFACT = "source_model"  # the owner's model directory inside DriftPilot's version
_NUMERIC_TYPES = {"integer", "long", "float", "double"}
_WHOLE_TYPES = {"integer", "long"}
_POLARS_OF = {
    "integer": pl.Int32,
    "long": pl.Int64,
    "float": pl.Float32,
    "double": pl.Float64,
    "string": pl.String,
    "boolean": pl.Boolean,
}


class AdoptedSpec(BaseModel):
    """What DriftPilot knows of an adopted model: its columns, task and how it scores."""

    task: Task
    target: str
    numeric: list[str] = Field(description="Numeric inputs (drift is measured per column).")
    categorical: list[str] = Field(description="Categorical inputs.")
    inputs: dict[str, str] = Field(
        description="Every input in the order the model takes them, with the MLflow type it is "
        "given as (double, long, string, ...)."
    )
    flavour: str = Field(description="The MLflow flavour it was saved with (sklearn, ...).")
    output: Output
    classes: list[Any] = Field(
        default_factory=list, description="Multiclass: the labels of the score columns."
    )
    columns: list[int] = Field(
        default_factory=list,
        description="native_proba, proba_frame: the output's columns of ``classes`` (binary: "
        "the column of class 1).",
    )

    @property
    def features(self) -> list[str]:
        return list(self.inputs)


@dataclass
class AdoptedModel:
    """An adopted MLflow model that scores Polars frames like a ``TrainedModel``."""

    spec: AdoptedSpec
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    native: Any = None  # the flavour's own model when its predict_proba is used
    report: None = None  # it was not trained here: no training report

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def classes(self) -> list[Any]:
        return self.spec.classes

    @property
    def family(self) -> str:
        return f"adopted:{self.spec.flavour}"

    @property
    def label_only(self) -> bool:
        return self.spec.output == "labels"

    def encode(self, labels: Any) -> np.ndarray:
        return encode_labels(labels, self.task, self.classes)

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """Binary P(1) ``(n,)`` (0/1 if label-only), multiclass ``(n, k)`` in ``classes``
        order (one-hot if label-only), regression predictions ``(n,)``."""
        x = model_input(frame, self.spec.inputs)
        out = self.spec.output
        if out == "native_proba":
            proba = np.asarray(self.native.predict_proba(x), dtype=float)
            return _pick(proba, self.spec.columns, self.task)
        raw = self.pyfunc.predict(x)
        if out == "proba_frame":
            return _pick(np.asarray(raw, dtype=float), self.spec.columns, self.task)
        if out == "labels":
            return _label_scores(_flat(raw), self.task, self.classes)
        values = np.asarray(raw, dtype=float)
        return values if out == "proba_array" and values.ndim == 2 else _flat(values)


def _pick(proba: np.ndarray, columns: list[int], task: Task) -> np.ndarray:
    """The probability columns of ``classes`` (binary: P(1) only)."""
    chosen = proba[:, columns]
    return chosen[:, 0] if task == "binary" else chosen


def _flat(raw: Any) -> np.ndarray:
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim != 1:
        raise ModelError(f"the model returned shape {values.shape}, expected one value per row")
    return values


def _label_scores(labels: np.ndarray, task: Task, classes: list[Any]) -> np.ndarray:
    """Labels as scores: binary 0/1, multiclass one-hot (an unknown label: all zeros)."""
    if task == "binary":
        return encode_labels(labels, "binary").astype(float)
    index = encode_labels(labels, "multiclass", classes)
    onehot = np.zeros((len(index), len(classes)))
    known = index >= 0
    onehot[np.flatnonzero(known), index[known]] = 1.0
    return onehot


def model_input(frame: pl.DataFrame, inputs: dict[str, str]) -> Any:
    """The pandas frame the model is given: its inputs, in its order, as its types."""
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise SchemaError(f"cannot score: columns {missing} are missing")
    return frame.select(
        [pl.col(c).cast(_POLARS_OF[t]) if t in _POLARS_OF else pl.col(c) for c, t in inputs.items()]
    ).to_pandas()


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class Source:
    """Where an adopted model came from (its lineage)."""

    uri: str
    tracking_uri: str | None  # None: a local directory
    registered_model: str | None
    version: str | None
    run_id: str | None

    def lineage(self) -> dict[str, Any]:
        return {
            "source_uri": self.uri,
            "tracking_uri": redact(self.tracking_uri) if self.tracking_uri else None,
            "registered_model": self.registered_model,
            "source_version": self.version,
            "source_run_id": self.run_id,
        }


def redact(uri: str) -> str:
    """A URI without the credentials it may carry (user:password@host)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUN = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")


def fetch(uri: str, tracking_uri: str, dst: Path) -> tuple[Path, Source]:
    """The model directory of ``uri`` on this machine (downloaded into ``dst`` unless it is
    a local directory) and where it came from.

    Raises:
        ConfigError: a URI of none of the four forms.
        RegistryError: the server does not know the model, version, alias or run.
    """
    local = Path(uri.removeprefix("file://")) if uri.startswith(("file://", "/", ".")) else None
    if local is None and "://" not in uri and ":/" not in uri:
        local = Path(uri)
    if local is not None:
        if not (local / "MLmodel").is_file():
            raise ConfigError(f"{uri} is not an MLflow model directory (it has no MLmodel file)")
        return local.resolve(), _local_source(local)
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        source, artifact_uri = _resolve(client, uri, tracking_uri)
        path = download_artifacts(
            artifact_uri=artifact_uri,
            dst_path=str(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except ConfigError:
        raise
    except Exception as exc:  # MlflowException, and the HTTP client's or a store's own errors
        raise RegistryError(f"cannot fetch {uri} from {redact(tracking_uri)}: {exc}") from exc
    if not (Path(path) / "MLmodel").is_file():
        raise ConfigError(f"{uri} is not an MLflow model (no MLmodel file in {path})")
    return Path(path), source


def _resolve(client: Any, uri: str, tracking_uri: str) -> tuple[Source, str]:
    """The source of a ``models:/`` or ``runs:/`` URI and the artifact URI to download."""
    if found := _ALIAS.match(uri):
        mv = client.get_model_version_by_alias(found["name"], found["alias"])
    elif found := _VERSION.match(uri):
        mv = client.get_model_version(found["name"], found["version"])
    elif found := _RUN.match(uri):
        run_id, path = found["run"], found["path"].strip("/")
        return Source(uri, tracking_uri, None, None, run_id), _run_model_location(
            client, run_id, path
        )
    else:
        raise ConfigError(
            f"model URI {uri!r}: give models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/PATH or a local MLflow model directory"
        )
    download = client.get_model_version_download_uri(mv.name, mv.version)
    return Source(uri, tracking_uri, mv.name, str(mv.version), mv.run_id), download


def _run_model_location(client: Any, run_id: str, path: str) -> str:
    """Where ``runs:/ID/path`` keeps its model: MLflow 3 logs a model of a run as a logged
    model of its own (``name=path``); an older one under the run's artifacts."""
    run = client.get_run(run_id)
    logged = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{path}'",
    )
    if logged:
        return str(logged[0].artifact_location)
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"


def _local_source(path: Path) -> Source:
    import yaml

    meta = yaml.safe_load((path / "MLmodel").read_text()) or {}
    return Source(str(path.resolve()), None, None, None, meta.get("run_id"))


# --------------------------------------------------------------------------- checking


def flavour_of(pyfunc: Any) -> str:
    """The MLflow flavour the model was saved with (python_function for a custom model)."""
    flavours = pyfunc.metadata.flavors
    own = [f for f in flavours if f != "python_function"]
    return own[0] if own else "python_function"


def signature_inputs(pyfunc: Any) -> dict[str, str] | None:
    """The columns the signature names, with their MLflow types; None without a column
    signature. A column the signature marks optional (MLflow does when the logged example
    had missing values) is still an input: the reference must hold it.

    Raises:
        SchemaError: a tensor signature (the model takes arrays, not named columns).
    """
    schema = pyfunc.metadata.get_input_schema()
    if schema is None:
        return None
    if schema.is_tensor_spec():
        raise SchemaError(
            "the model's signature takes tensors, not named columns; DriftPilot adopts models "
            "that take a table"
        )
    if not schema.has_input_names():
        return None
    return {str(c.name): _type_name(c.type) for c in schema.inputs}


def _type_name(kind: Any) -> str:
    return str(getattr(kind, "name", kind))


def _compatible(mlflow_type: str, dtype: pl.DataType) -> bool:
    if mlflow_type in _WHOLE_TYPES:
        return dtype.is_integer()
    if mlflow_type in _NUMERIC_TYPES:
        return dtype.is_numeric()
    if mlflow_type == "string":
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    if mlflow_type == "boolean":
        return dtype == pl.Boolean
    if mlflow_type == "datetime":
        return dtype.is_temporal()
    return False


def check_inputs(
    reference: pl.DataFrame,
    target: str,
    signature: dict[str, str] | None,
    numeric: list[str],
    categorical: list[str],
) -> tuple[dict[str, str], list[str], list[str]]:
    """The model's inputs (column -> MLflow type), numeric and categorical ones.

    With a signature, its columns are the inputs (``numeric``/``categorical``, if given, must
    name the same set and say which are categorical); without one, ``numeric`` and
    ``categorical`` name them.

    Raises:
        SchemaError: columns the model takes and the reference lacks, columns named that the
            model does not take, columns of another type, the target among the inputs, or no
            signature and no columns named: all named in one message.
    """
    named = [*numeric, *categorical]
    if signature is None:
        if not named:
            raise SchemaError(
                "the model has no input signature: name its input columns with --numeric "
                "and --categorical"
            )
        inputs = {c: "double" for c in numeric} | {c: "string" for c in categorical}
    else:
        inputs = signature
    problems = _mismatches(reference, target, inputs, named, signature is not None)
    if problems:
        raise SchemaError(
            "the model's inputs do not match the reference: " + "; ".join(problems) + ". "
            "Nothing was registered."
        )
    if named:
        return (
            inputs,
            [c for c in numeric if c in inputs],
            [c for c in categorical if c in inputs],
        )
    cats = [c for c, t in inputs.items() if t in ("string", "boolean")]
    return inputs, [c for c in inputs if c not in cats], cats


def _mismatches(
    reference: pl.DataFrame,
    target: str,
    inputs: dict[str, str],
    named: list[str],
    signed: bool,
) -> list[str]:
    schema = reference.schema
    missing = [c for c in inputs if c not in schema]
    extra = [c for c in named if c not in inputs] if signed else []
    unnamed = [c for c in inputs if c not in named and c in schema] if signed and named else []
    retyped = [
        f"{c} (model: {t}, reference: {schema[c]})"
        for c, t in inputs.items()
        if c in schema and not _compatible(t, schema[c])
    ]
    problems = []
    if missing:
        problems.append(
            f"missing columns {missing} (the model takes them, the reference lacks them)"
        )
    if extra:
        problems.append(f"extra columns {extra} (named as features, the model does not take them)")
    if unnamed:
        problems.append(f"columns {unnamed} are inputs of the model but named in neither list")
    if retyped:
        problems.append(f"retyped columns {retyped}")
    if target in inputs:
        problems.append(f"the target {target!r} is one of the model's inputs")
    return problems


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class Scoring:
    """How an adopted model scores, as found on the reference."""

    output: Output
    classes: list[Any]
    columns: list[int]
    native: Any
    how: str  # in words, for the adoption note


def choose_scoring(
    pyfunc: Any, native: Any, x: Any, task: Task, labels: pl.Series, flavour: str
) -> Scoring:
    """How the model's scores are read (see the module docstring), tried on the reference's
    inputs ``x``.

    Raises:
        ModelError: the model's output fits no reading of the task.
    """
    if task == "regression":
        return Scoring("predictions", [], [], None, f"predictions of its {flavour} pyfunc")
    if native is not None and hasattr(native, "predict_proba") and hasattr(native, "classes_"):
        classes = [_plain(c) for c in np.asarray(native.classes_).tolist()]
        columns, kept = _class_columns(classes, task)
        return Scoring(
            "native_proba", kept, columns, native, f"probabilities of {flavour} predict_proba"
        )
    raw = pyfunc.predict(x)
    return _read_output(raw, task, labels, flavour)


def _read_output(raw: Any, task: Task, labels: pl.Series, flavour: str) -> Scoring:
    import pandas as pd

    known = class_list(labels)
    if isinstance(raw, pd.DataFrame) and raw.shape[1] > 1:
        named = [_label_like(c, known) for c in raw.columns.tolist()]
        columns, kept = _class_columns(named, task)
        return Scoring("proba_frame", kept, columns, None, "probability columns of its pyfunc")
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] > 1:
        if not np.issubdtype(values.dtype, np.number):
            raise ModelError(f"the model returned a {values.shape} array of {values.dtype}")
        if task == "binary" and values.shape[1] == 2:
            return Scoring("proba_frame", [], [1], None, "P(1), column 1 of its pyfunc's output")
        if task == "binary" or values.shape[1] != len(known):
            raise ModelError(
                f"the model returned {values.shape[1]} score columns; the reference holds "
                f"{len(known)} classes {known}"
            )
        how = "probability columns of its pyfunc, in the sorted order of the labels"
        return Scoring("proba_array", known, [], None, how)
    flat = _flat(values)
    if task == "binary" and np.issubdtype(flat.dtype, np.floating):
        outside = (flat < 0) | (flat > 1)
        if outside.any():
            raise ModelError(
                "a binary model must return P(1) or 0/1 labels; "
                f"{int(outside.sum())} predictions lie outside [0, 1]"
            )
        if not np.isin(flat, (0.0, 1.0)).all():
            return Scoring("proba_array", [], [], None, "P(1) from its pyfunc")
    return _labels_scoring(flat, task, known, flavour)


def _labels_scoring(flat: np.ndarray, task: Task, known: list[Any], flavour: str) -> Scoring:
    said = sorted({_plain(v) for v in flat.tolist()}, key=lambda v: (str(type(v)), v))
    if task == "binary":
        if not set(said) <= {0, 1}:
            raise ModelError(f"a binary model must predict 0/1 labels; it predicted {said[:5]}")
        return Scoring("labels", [], [], None, f"labels of its {flavour} pyfunc (no probabilities)")
    strange = [v for v in said if v not in known]
    if len(strange) > len(said) // 2:
        raise ModelError(
            f"the model predicted {said[:5]}..., not the reference's labels {known}: is it a "
            "multiclass model? Give --task"
        )
    classes = sorted({*known, *said}, key=lambda v: (str(type(v)), v))
    return Scoring(
        "labels", classes, [], None, f"labels of its {flavour} pyfunc (no probabilities)"
    )


def _class_columns(classes: list[Any], task: Task) -> tuple[list[int], list[Any]]:
    """The probability columns to keep and the classes they stand for (binary: class 1)."""
    if task == "binary":
        if 1 not in classes:
            raise ModelError(f"the classifier's classes are {classes}, none of them is 1")
        return [classes.index(1)], []
    # A reference label that is none of the classes counts against the model (encode: -1).
    return list(range(len(classes))), classes


def _label_like(column: Any, known: list[Any]) -> Any:
    """A frame's column name as the label it stands for ('1' -> 1 when labels are numbers)."""
    for label in known:
        if str(label) == str(column):
            return label
    return _plain(column)


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value (JSON-able, comparable with Polars' labels)."""
    out = value.item() if isinstance(value, np.generic) else value
    if isinstance(out, bool):
        return int(out)
    if isinstance(out, float) and out.is_integer():
        return int(out)
    return out


def load_native(path: Path, flavour: str) -> Any:
    """The flavour's own model (for predict_proba), or None when its flavour has none or
    its library is not installed here."""
    if flavour not in NATIVE_FLAVOURS:
        return None
    import importlib

    try:
        module = importlib.import_module(f"mlflow.{flavour}")
    except ImportError:  # the flavour's library (e.g. xgboost) is not installed
        return None
    return module.load_model(str(path))


def metrics_of(task: Task, label_only: bool) -> tuple[list[str], list[str]]:
    """The task's metrics the model can be measured by, and those it cannot (label-only:
    the ones that need probabilities)."""
    names = metrics_for(task)
    usable = [n for n in names if not (label_only and METRICS[n].needs_probabilities)]
    return usable, [n for n in names if n not in usable]


def primary_metric(task: Task, usable: list[str]) -> str:
    """The task's primary metric, or the first one the model can be measured by."""
    return PRIMARY[task] if PRIMARY[task] in usable else usable[0]


# --------------------------------------------------------------------------- loading


def open_model(path: Path, spec: AdoptedSpec) -> AdoptedModel:
    """An adopted model from its MLflow directory and the spec found when it was adopted
    (what ``tools._pyfunc.AdoptedPyfunc`` does when DriftPilot loads it back)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    native = load_native(path, spec.flavour) if spec.output == "native_proba" else None
    return AdoptedModel(spec=spec, pyfunc=pyfunc, native=native)


@dataclass(frozen=True)
class Loaded:
    """A fetched, checked model with its scores on the reference."""

    model: AdoptedModel
    path: Path
    source: Source
    how: str


def load(
    uri: str,
    tracking_uri: str,
    reference: pl.DataFrame,
    *,
    target: str,
    task: Task,
    numeric: list[str],
    categorical: list[str],
    dst: Path,
) -> Loaded:
    """Fetch ``uri``, check its inputs against ``reference`` and find how it scores.

    Raises:
        ConfigError, RegistryError: see ``fetch``.
        SchemaError: see ``check_inputs``.
        ModelError: the model fails on the reference, or its output fits no reading of the task.
    """
    import mlflow.pyfunc

    path, source = fetch(uri, tracking_uri, dst)
    try:
        pyfunc = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:  # MLflow and the flavour's library raise their own
        raise ModelError(f"cannot load {uri} as a pyfunc: {type(exc).__name__}: {exc}") from exc
    inputs, num, cat = check_inputs(
        reference, target, signature_inputs(pyfunc), numeric, categorical
    )
    flavour = flavour_of(pyfunc)
    x = model_input(reference, inputs)
    native = load_native(path, flavour) if task != "regression" else None
    try:
        scoring = choose_scoring(pyfunc, native, x, task, reference[target], flavour)
    except ModelError:
        raise
    except Exception as exc:  # the owner's code: any error is the model failing
        raise ModelError(f"the model fails on the reference: {type(exc).__name__}: {exc}") from exc
    spec = AdoptedSpec(
        task=task,
        target=target,
        numeric=num,
        categorical=cat,
        inputs=inputs,
        flavour=flavour,
        output=scoring.output,
        classes=scoring.classes,
        columns=scoring.columns,
    )
    model = AdoptedModel(spec, pyfunc, scoring.native)
    return Loaded(model=model, path=path, source=source, how=scoring.how)


# --------------------------------------------------------------------------- registering


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

    client = registry._client(settings)
    family = loaded.model.family
    tags = {**request.tags, registry.KEY_TAG: request.key, registry.FAMILY_TAG: family}
    try:
        with mlflow.start_run(
            experiment_id=registry._experiment_id(client, request.name, settings), tags=tags
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
