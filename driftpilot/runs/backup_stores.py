"""The databases of a home, as a backup copies them, and the rewriting of a restored home's
paths.

A home's databases (each named by a URL in ``Settings``): the audit store (``db_url``), the
LangGraph checkpoints (``checkpoint_url``: on PostgreSQL the audit's own database), MLflow's
tracking store and registry, and Optuna's storage. One database named by several roles is
copied once. A SQLite file is copied with SQLite's online backup API (a consistent copy while
other connections read and write); a PostgreSQL database with ``pg_dump`` (custom format, one
snapshot) and restored with ``pg_restore``; an MLflow server (http) is not a file of the home
and is not copied.

Restoring at another path: MLflow keeps absolute ``file:`` artifact URIs, the audit keeps
batch and window paths, and a waiting run's checkpointed state names its batch files. Every
text cell (but the hash-chained tables', whose hashes cover them) and every checkpoint blob
naming the source home is rewritten to the target's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from driftpilot.core.errors import BackupError
from driftpilot.core.settings import Settings, is_postgres, libpq_url
from driftpilot.store.models import CHAINED

ROLES = ("audit", "checkpoints", "mlflow", "mlflow_registry", "optuna")
# Tables whose rows are not rewritten: the hash-chained ones (a rewrite breaks their hashes),
# Alembic's, and procrastinate's queue (job arguments hold ids, and its triggers react to
# updates).
KEEP = {m.__tablename__ for m in CHAINED} | {"alembic_version"}
_TEXT_TYPES = ("text", "character varying")
_JSON_TYPES = ("json", "jsonb")
Pairs = list[tuple[str, str]]  # (source path, target path), longest first


@dataclasses.dataclass(frozen=True)
class Store:
    """One role's database: ``kind`` sqlite | postgresql | external (not copied)."""

    role: str
    url: str
    kind: str

    @property
    def path(self) -> Path:
        """The file of a SQLite store."""
        return Path(self.url.split(":///", 1)[1])


def role_urls(settings: Settings) -> dict[str, str]:
    """The URL of each role's database in ``settings``."""
    return {
        "audit": settings.db_url,
        "checkpoints": settings.checkpoint_url,
        "mlflow": settings.mlflow_tracking_uri,
        "mlflow_registry": settings.mlflow_registry_uri,
        "optuna": settings.optuna_storage,
    }


def kind_of(url: str) -> str:
    """sqlite (a local file), postgresql, or external (an MLflow server, anything else)."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return "sqlite"
    return "postgresql" if is_postgres(url) else "external"


def identity(url: str) -> tuple[str, ...]:
    """What makes two URLs one database (a file's path; a server's host, port and name)."""
    kind = kind_of(url)
    if kind == "sqlite":
        return (kind, str(Path(url.removeprefix("sqlite:///")).resolve()))
    if kind == "postgresql":
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return (kind, str(parsed.host), str(parsed.port or 5432), str(parsed.database))
    return (kind, url)


def stores(settings: Settings) -> tuple[list[Store], dict[str, str]]:
    """The distinct databases of ``settings``, and for each role the role whose copy holds
    it (itself, or the first role naming the same database)."""
    distinct: dict[tuple[str, ...], str] = {}
    found: list[Store] = []
    holder: dict[str, str] = {}
    for role, url in role_urls(settings).items():
        key = identity(url)
        if key not in distinct:
            distinct[key] = role
            found.append(Store(role, url, kind_of(url)))
        holder[role] = distinct[key]
    return found, holder


# -- copying ------------------------------------------------------------------------------------


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API: pages copied
    under a read transaction, restarted if a writer changes them)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def pg_dump(url: str, target: Path) -> None:
    """``pg_dump --format=custom`` of the database at ``url`` into ``target`` (one snapshot)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _pg("pg_dump", url, ["--format=custom", "--no-owner", "--no-privileges", f"--file={target}"])


def pg_restore(dump: Path, url: str) -> None:
    """Restore a ``pg_dump`` file into the empty database at ``url``, in one transaction.

    Raises:
        BackupError: the database is not empty, or pg_restore failed.
    """
    refuse_non_empty_pg(url)
    _pg(
        "pg_restore",
        url,
        ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", str(dump)],
    )


def refuse_non_empty_pg(url: str) -> None:
    """Raises BackupError when the database at ``url`` has tables (or cannot be reached)."""
    import psycopg

    try:
        tables = _pg_tables(url)
    except psycopg.Error as exc:
        raise BackupError(f"cannot reach the target database {_safe(url)}: {exc}") from exc
    if tables > 0:
        raise BackupError(
            f"the target database {_safe(url)} is not empty ({tables} tables): restore needs an "
            "empty database (CREATE DATABASE ... TEMPLATE template0)"
        )


def _pg_tables(url: str) -> int:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return int(row[0]) if row else 0


def _pg(tool: str, url: str, args: list[str]) -> None:
    """Run a PostgreSQL client tool on ``url``; its password goes by the environment, not
    the command line (which other users of the machine can read)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(libpq_url(url))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    dbname = parsed.set(password=None).render_as_string(hide_password=False)
    done = subprocess.run(
        [str(pg_bin(tool)), *args, f"--dbname={dbname}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(
            f"{tool} of {_safe(url)} failed ({done.returncode}): {done.stderr[-800:]}"
        )


def pg_bin(tool: str) -> Path:
    """The newest ``tool`` (pg_dump, pg_restore): ``$DRIFTPILOT_PG_BIN``, Debian's
    ``/usr/lib/postgresql/<major>/bin``, then the PATH. The newest, because pg_dump refuses
    a server newer than itself.

    Raises:
        BackupError: the tool is not installed.
    """
    folders = [Path(os.environ["DRIFTPILOT_PG_BIN"])] if os.environ.get("DRIFTPILOT_PG_BIN") else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    folders += sorted(versions, key=lambda p: -int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in folders:
        if (folder / tool).is_file():
            return folder / tool
    found = shutil.which(tool)
    if found is None:
        raise BackupError(f"{tool} is not installed (apt-get install postgresql-client)")
    return Path(found)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- rewriting the source's paths ---------------------------------------------------------------


def swap_text(text: str, pairs: Pairs) -> str:
    """``text`` with every source path (exact, or followed by '/') replaced by its target."""
    for old, new in pairs:
        if text == old:
            return new
        text = text.replace(old + "/", new + "/")
    return text


def rewrite_sqlite(file: Path, pairs: Pairs, keep: set[str] = KEEP) -> None:
    """Rewrite the source paths in every text cell of a SQLite database (tables in ``keep``
    excepted), and in its LangGraph checkpoint blobs if it holds them."""
    with closing(sqlite3.connect(file)) as conn, conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in (t for t in tables if t not in keep):
            for column in [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]:
                for old, new in pairs:
                    conn.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old + "/", new + "/", old + "/"),
                    )
                    conn.execute(
                        f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (new, old)
                    )
        if {"checkpoints", "writes"} <= set(tables):
            for table, column in (("checkpoints", "checkpoint"), ("writes", "value")):
                _rewrite_blobs_sqlite(conn, table, column, pairs)


def _rewrite_blobs_sqlite(conn: Any, table: str, column: str, pairs: Pairs) -> None:
    for old, _ in pairs:
        rows = conn.execute(
            f"SELECT rowid, type, {column} FROM {table} WHERE instr({column}, ?) > 0",
            (old.encode(),),
        ).fetchall()
        for rowid, kind, blob in rows:
            new_kind, new_blob = swap_blob(kind, blob, pairs, table)
            conn.execute(
                f"UPDATE {table} SET type = ?, {column} = ? WHERE rowid = ?",
                (new_kind, new_blob, rowid),
            )


def rewrite_postgres(url: str, pairs: Pairs, keep: set[str] = KEEP) -> None:
    """Rewrite the source paths in every text and JSON column of a PostgreSQL database's
    tables (``keep`` and procrastinate's excepted), and in its LangGraph checkpoint blobs."""
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type = ANY(%s)",
            (list(_TEXT_TYPES + _JSON_TYPES),),
        ).fetchall()
        for table, column, data_type in columns:
            if table in keep or table.startswith("procrastinate"):
                continue
            try:
                _rewrite_pg_column(conn, table, column, data_type in _JSON_TYPES, pairs)
            except psycopg.errors.StringDataRightTruncation as exc:
                raise BackupError(
                    f"{table}.{column} cannot hold the target's path (longer than its type "
                    "allows): restore into a home with a shorter path"
                ) from exc
        present = {t for (t, _, _) in columns}
        for table in ("checkpoint_blobs", "checkpoint_writes"):
            if table in present:
                _rewrite_blobs_pg(conn, table, pairs)


def _rewrite_pg_column(conn: Any, table: str, column: str, is_json: bool, pairs: Pairs) -> None:
    cell = f'"{column}"::text' if is_json else f'"{column}"'
    back = "::" + ("jsonb" if is_json else "text")
    for old, new in pairs:
        swaps = [(old + "/", new + "/")] + ([(f'"{old}"', f'"{new}"')] if is_json else [])
        for before, after in swaps:
            conn.execute(
                f'UPDATE "{table}" SET "{column}" = replace({cell}, %s, %s){back} '
                f"WHERE strpos({cell}, %s) > 0",
                (before, after, before),
            )
        if not is_json:
            # replace(), not the constant: PostgreSQL casts a constant to the column's type
            # (varchar(40)) when planning, and refuses a long one though no row matches.
            conn.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", %s, %s) '
                f'WHERE "{column}" = %s',
                (old, new, old),
            )


def _rewrite_blobs_pg(conn: Any, table: str, pairs: Pairs) -> None:
    for old, _ in pairs:
        rows = conn.execute(
            f"SELECT ctid, type, blob FROM {table} WHERE position(%s::bytea in blob) > 0",
            (old.encode(),),
        ).fetchall()
        for ctid, kind, blob in rows:
            new_kind, new_blob = swap_blob(kind, bytes(blob), pairs, table)
            conn.execute(
                f"UPDATE {table} SET type = %s, blob = %s WHERE ctid = %s",
                (new_kind, new_blob, ctid),
            )


def swap_blob(kind: str, blob: bytes, pairs: Pairs, where: str) -> tuple[str, bytes]:
    """A LangGraph checkpoint value with its source paths rewritten: decoded by the saver's
    serializer, its strings rewritten, encoded again (a byte replace would break msgpack's
    lengths).

    Raises:
        BackupError: a source path is still there after the rewrite (in a value of a type
            this walk does not know): the restored run would read the source home's files.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer()
    new_kind, new_blob = serde.dumps_typed(_swap(serde.loads_typed((kind, blob)), pairs))
    left = [old for old, _ in pairs if old.encode() in new_blob]
    if left:
        raise BackupError(f"a checkpoint value in {where} still names {left[0]} after the rewrite")
    return new_kind, new_blob


def _swap(value: Any, pairs: Pairs) -> Any:
    """``value`` with its strings rewritten, through dicts, lists, tuples, sets, dataclasses
    and pydantic models (the values a control graph's state holds)."""
    if isinstance(value, str):
        return swap_text(value, pairs)
    if isinstance(value, dict):
        return {_swap(k, pairs): _swap(v, pairs) for k, v in value.items()}
    if isinstance(value, list | set | frozenset):
        return type(value)(_swap(v, pairs) for v in value)
    if isinstance(value, tuple):
        items = [_swap(v, pairs) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _swap(getattr(value, f.name), pairs) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **{k: v for k, v in changes.items() if _init(value, k)})
    if hasattr(value, "model_copy") and hasattr(value, "model_fields"):
        fields = type(value).model_fields
        return value.model_copy(update={k: _swap(getattr(value, k), pairs) for k in fields})
    return value


def _init(value: Any, name: str) -> bool:
    return any(f.name == name and f.init for f in dataclasses.fields(value))


def rewrite_files(root: Path, pairs: Pairs) -> Iterator[Path]:
    """Rewrite the source paths in the text files under ``root`` (yields each one changed).
    A binary file naming a source path is left alone: its format is not ours to edit."""
    olds = [old.encode() for old, _ in pairs]
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.is_symlink():
            continue
        data = file.read_bytes()
        if data[:16] == b"SQLite format 3\x00" or not any(old in data for old in olds):
            continue
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue
        file.write_text(swap_text(text, pairs))
        yield file
