"""What ``Client`` returns for a request split in several: counts summed, and what each
request did (a labels answer's ``windows``) kept, request after request. The HTTP seam is a
subclass's ``post``: the server side is tested over real HTTP in
tests/integration/test_client.py."""

from __future__ import annotations

from typing import Any

from driftpilot.client import Client


class Answering(Client):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "key", batch_rows=2)
        self.sent: list[list[dict[str, Any]]] = []

    def post(self, path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.append(rows)
        number = len(self.sent)
        return {
            "model": "m",
            "accepted": len(rows),
            "duplicates": 0,
            "rows": len(rows),
            "windows": [{"number": number, "outcome": "attached"}],
        }


def test_a_split_labels_request_sums_counts_and_keeps_every_window() -> None:
    client = Answering()
    with client:
        answer = client.label("m", [{"row_id": str(i), "y": i % 2} for i in range(5)])
    assert [len(rows) for rows in client.sent] == [2, 2, 1]
    assert (answer["accepted"], answer["rows"]) == (5, 5)
    assert [w["number"] for w in answer["windows"]] == [1, 2, 3]
    assert "model" not in answer  # a string is no count
