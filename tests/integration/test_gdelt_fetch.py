"""The real GDELT fetcher against fixture files served over real HTTP on loopback."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driftpilot.core.errors import DatasetUnavailable, IntegrityError
from tests.fixtures.gdelt import write_gdelt_fixtures
from tools.gdelt import download, fetch_file_list, fetch_latest_events

pytestmark = pytest.mark.integration


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    (root / "gdeltv2").mkdir(parents=True)
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    base = f"http://127.0.0.1:{httpd.server_address[1]}/gdeltv2/"
    write_gdelt_fixtures(root / "gdeltv2", base)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base, root / "gdeltv2"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_latest_export_end_to_end(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    events = fetch_latest_events(tmp_path / "cache", base)
    assert events.height == 40
    assert (tmp_path / "cache" / "gdelt" / "20261122103000.export.CSV.zip").exists()


def test_master_list_and_md5_check(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    entries = [e for e in fetch_file_list(base, master=True) if e.kind == "export"]
    assert len(entries) == 2
    (root / entries[0].url.rsplit("/", 1)[-1]).write_bytes(
        b"X" * entries[0].size
    )  # same size, other bytes
    with pytest.raises(IntegrityError, match="md5"):
        download(entries[0], tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.zip"))  # nothing half-kept


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="cannot fetch"):
        fetch_file_list("http://127.0.0.1:9/gdeltv2/", timeout=2)
