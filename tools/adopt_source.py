"""Where an adopted model comes from: ``models:/name@alias``, ``models:/name/3`` or
``runs:/ID/path`` on any MLflow tracking server, or a local MLflow model directory.

The source server is reached through an explicit client and explicit URIs only: MLflow's
process-wide tracking and registry URIs (DriftPilot's own registry) are never changed, so a
concurrent run cannot log into the owner's server. MLflow is imported lazily.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftpilot.core.errors import ConfigError, RegistryError


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
# A run id is MLflow's hex id; the artifact path is plain names: no '..', no quotes (it goes
# into a search filter and onto the run's artifact location).
_RUN = re.compile(r"^runs:/(?P<run>[0-9a-f]{32})/(?P<path>[A-Za-z0-9_./-]+)$")


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
    _check_form(uri)  # before any client: a malformed URI touches no store
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


def _check_form(uri: str) -> None:
    """A ``models:/`` or ``runs:/`` URI of the accepted forms, or a ConfigError saying them."""
    run = _RUN.match(uri)
    if run is None and not (_ALIAS.match(uri) or _VERSION.match(uri)):
        raise ConfigError(
            f"model URI {uri!r}: give models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/PATH or a local MLflow model directory"
        )
    if run is not None and ".." in run["path"].split("/"):
        raise ConfigError(f"{uri!r}: an artifact path may not climb out of its run ('..')")


def _resolve(client: Any, uri: str, tracking_uri: str) -> tuple[Source, str]:
    """The source of a ``models:/`` or ``runs:/`` URI and the artifact URI to download."""
    if found := _ALIAS.match(uri):
        mv = client.get_model_version_by_alias(found["name"], found["alias"])
    elif found := _VERSION.match(uri):
        mv = client.get_model_version(found["name"], found["version"])
    else:
        found = _RUN.match(uri)
        assert found is not None  # _check_form let only the three forms through
        run_id, path = found["run"], found["path"].strip("/")
        return Source(uri, tracking_uri, None, None, run_id), _run_model_location(
            client, run_id, path
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
