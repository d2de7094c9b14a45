"""The built-in GDELT 2.0 model: is an event a conflict, from who acts, where, and how the
news tells it.

A GDELT 2.0 event export (``tools.gdelt``) becomes a model frame with two derived columns,
every raw column kept:

- ``conflict`` (Int8): 1 when ``QuadClass`` is 3 or 4 (verbal or material conflict), 0 when
  it is 1 or 2 (verbal or material cooperation), null when GDELT gives no class.
- ``event_time`` (Datetime, UTC): ``DATEADDED``, when GDELT added the event: the 15-minute
  window of the export, the time a live model sees the row.

The features (``NUMERIC`` and ``CATEGORICAL``) are the actors' country, type and known-group
codes, the action's country and geo resolution, its latitude and longitude, the average tone
of the articles, the mention, source and article counts, and ``IsRootEvent``. The event's
CAMEO codes and Goldstein score are NOT features: they determine the label.
``QuadClass`` is a function of ``EventRootCode`` (01-05 verbal cooperation, 06-08 material
cooperation, 09-13 verbal conflict, 14-20 material conflict); ``EventBaseCode`` and
``EventCode`` refine the root code, so each names its root and so its class; and
``GoldsteinScale`` is a fixed score of ``EventCode`` (negative for every conflict code). A
model given any of them would learn CAMEO's lookup table, not anything about conflicts.
``LEAKING`` lists them; they stay in the frame (raw columns), never among the features.

The reference is the newest ``REFERENCE_EXPORTS`` exports listed at the settings' GDELT base
URL (``settings.scheduler.gdelt_base_url``): the tail of ``masterfilelist.txt`` plus
``lastupdate.txt``, each export downloaded once into the cache and checked against its md5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from driftpilot.core.errors import DatasetUnavailable, SchemaError

if TYPE_CHECKING:
    from driftpilot.core.settings import Settings
    from tools.gdelt import GdeltFile

TARGET = "conflict"
TIME_COL = "event_time"
CONFLICT_CLASSES = (3, 4)  # QuadClass: 3 verbal conflict, 4 material conflict
COOPERATION_CLASSES = (1, 2)  # 1 verbal cooperation, 2 material cooperation
NUMERIC = [
    "IsRootEvent",
    "NumMentions",
    "NumSources",
    "NumArticles",
    "AvgTone",
    "ActionGeo_Type",
    "ActionGeo_Lat",
    "ActionGeo_Long",
]
CATEGORICAL = [
    "Actor1CountryCode",
    "Actor1Type1Code",
    "Actor1KnownGroupCode",
    "Actor2CountryCode",
    "Actor2Type1Code",
    "Actor2KnownGroupCode",
    "ActionGeo_CountryCode",
]
# The columns that determine the label (module docstring): never features.
LEAKING = ("EventCode", "EventBaseCode", "EventRootCode", "QuadClass", "GoldsteinScale")
REFERENCE_EXPORTS = 8  # two hours of GDELT: about 10,000 events live
# Bytes of masterfilelist.txt's tail read for the reference: about 150 bytes a line, three
# lines (export, mentions, gkg) a window; room for REFERENCE_EXPORTS windows many times over.
LIST_TAIL_BYTES = 64_000


def model_frame(export: pl.DataFrame) -> pl.DataFrame:
    """A parsed GDELT 2.0 export (``tools.gdelt.parse_export``) with the model's ``conflict``
    label and ``event_time`` added, every raw column kept, rows ordered by ``event_time``
    (stable: an export's rows keep their order). Applying it twice gives the same frame.

    Raises:
        SchemaError: ``QuadClass`` or ``DATEADDED`` is missing (not a GDELT 2.0 export).
    """
    missing = [c for c in ("QuadClass", "DATEADDED") if c not in export.columns]
    if missing:
        raise SchemaError(f"not a GDELT 2.0 event export: no column {', '.join(missing)}")
    quad = pl.col("QuadClass")
    conflict = (
        pl.when(quad.is_in(CONFLICT_CLASSES))
        .then(pl.lit(1))
        .when(quad.is_in(COOPERATION_CLASSES))
        .then(pl.lit(0))
        .otherwise(pl.lit(None))
        .cast(pl.Int8)
    )
    added = (
        pl.col("DATEADDED")
        .cast(pl.String)
        .str.to_datetime("%Y%m%d%H%M%S", time_zone="UTC", strict=False)
        .cast(pl.Datetime("us", "UTC"))
    )
    framed = export.with_columns(conflict.alias(TARGET), added.alias(TIME_COL))
    return framed.sort(TIME_COL, maintain_order=True)


def newest_exports(listed: list[GdeltFile], n: int) -> list[GdeltFile]:
    """The ``n`` newest event exports among list entries (duplicates, as when a file is in
    both lists, counted once), oldest first."""
    exports = {e.url: e for e in listed if e.kind == "export"}
    return sorted(exports.values(), key=lambda e: e.timestamp)[-n:]


def reference_frame(settings: Settings, n_exports: int = REFERENCE_EXPORTS) -> pl.DataFrame:
    """The model frame of the newest ``n_exports`` GDELT 2.0 exports at
    ``settings.scheduler.gdelt_base_url``, oldest first: the rows a GDELT model is trained on.

    Raises:
        DatasetUnavailable: the lists or an export cannot be fetched, or none is listed.
        IntegrityError: an export's size or md5 differs from its list entry.
        FormatError: a list or an export is not GDELT 2.0.
    """
    from tools.gdelt import download, fetch_file_list, fetch_list_tail, parse_export

    conf = settings.scheduler
    base, timeout = conf.gdelt_base_url, conf.gdelt_timeout_s
    listed = fetch_list_tail(base, tail_bytes=LIST_TAIL_BYTES, timeout=timeout)
    # lastupdate.txt may name a window the master list does not have yet
    listed += fetch_file_list(base, timeout=timeout)
    chosen = newest_exports(listed, n_exports)
    if not chosen:
        raise DatasetUnavailable(f"no GDELT 2.0 event export is listed at {base}")
    assert settings.cache_dir is not None
    frames = [parse_export(download(e, settings.cache_dir, timeout=timeout)) for e in chosen]
    return model_frame(pl.concat(frames, how="vertical"))


__all__ = [
    "CATEGORICAL",
    "LEAKING",
    "NUMERIC",
    "REFERENCE_EXPORTS",
    "TARGET",
    "TIME_COL",
    "model_frame",
    "newest_exports",
    "reference_frame",
]
