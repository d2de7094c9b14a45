"""What ``Client`` returns for a request split in several: counts summed, and what each
request did (a labels answer's ``windows``) kept, request after request; and how a ``Logger``
narrows a refusal to its refused rows when the refusal names only some, or none. The HTTP seam is a
subclass's ``post``: the server side is tested over real HTTP in
tests/integration/test_client.py."""

from __future__ import annotations

from typing import Any

import pytest

from driftpilot.client import Client, ClientError, Logger, LoggerError, refused_rows


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


class Refusing(Client):
    """A server that refuses the rows with ``bad`` set: as a 422 naming the first 20 of them
    (with their count), or, ``naming=False``, as a 413 that names none (a body too large)."""

    def __init__(self, naming: bool) -> None:
        super().__init__("http://127.0.0.1:9", "key", retries=0)
        self.naming, self.sizes = naming, list[int]()
        self.logged: list[dict[str, Any]] = []

    def post(self, path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.sizes.append(len(rows))
        bad = [i for i, row in enumerate(rows) if row.get("bad")]
        if bad and self.naming:
            errors = [{"row": i, "column": "x", "reason": "must be a number"} for i in bad[:20]]
            raise ClientError("HTTP 422", 422, {"errors": errors, "count": len(bad)})
        if bad:
            raise ClientError("HTTP 413: the body is too large", 413, {"detail": "too large"})
        self.logged.extend(rows)
        return {"accepted": len(rows), "duplicates": 0, "rows": len(rows)}


def refused_at_close(client: Refusing, rows: list[dict[str, Any]]) -> LoggerError:
    logger = Logger("", "", "m", flush_rows=len(rows), flush_s=0.01, client=client)
    logger.log(rows)
    with pytest.raises(LoggerError) as kept:
        logger.close()
    assert logger.sent == len(client.logged)
    return kept.value


def test_a_refusal_naming_its_first_20_rows_of_25_costs_two_refused_requests() -> None:
    client = Refusing(naming=True)
    rows = [{"row_id": str(i), "bad": i % 4 == 0} for i in range(100)]
    kept = refused_at_close(client, rows)
    assert kept.rows == [r for r in rows if r["bad"]]
    assert kept.reasons == ["HTTP 422: column 'x': must be a number"] * 25
    assert client.logged == [r for r in rows if not r["bad"]]
    assert client.sizes == [100, 80, 75]


def test_a_refusal_naming_no_row_is_narrowed_by_halving_to_the_bad_rows() -> None:
    client = Refusing(naming=False)
    rows = [{"row_id": str(i), "bad": i in (5, 40)} for i in range(64)]
    kept = refused_at_close(client, rows)
    assert kept.rows == [rows[5], rows[40]]
    assert kept.reasons == ["HTTP 413: the body is too large"] * 2
    assert client.logged == [r for r in rows if not r["bad"]]
    # About log2(64) refused requests per bad row, and as many that pass.
    assert len(client.sizes) <= 2 * 2 * (6 + 1)


def test_refused_rows_are_named_by_a_422s_row_numbers_and_a_409s_row_ids() -> None:
    rows: list[dict[str, Any]] = [{"row_id": 7}, {"row_id": "a"}, {"row_id": "b"}]
    invalid = ClientError("", 422, {"errors": [{"row": 2, "column": None, "reason": "odd"}]})
    assert refused_rows(rows, invalid) == {2: "HTTP 422: odd"}
    conflict = ClientError("", 409, {"row_ids": ["7", "b"]})
    assert refused_rows(rows, conflict) == {
        0: "HTTP 409: row id '7' is logged already with other content",
        2: "HTTP 409: row id 'b' is logged already with other content",
    }
    assert refused_rows(rows, ClientError("", 422, {"errors": [{"row": 3}]})) == {}
    assert refused_rows(rows, ClientError("", 404, {"detail": "no model"})) == {}
