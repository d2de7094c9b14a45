"""One client process of the inference load test (``evals.inference_load`` starts several):
it logs rows through ``driftpilot.client`` at a fixed rate and writes one JSON line per
acknowledged request.

Open loop: request ``i`` is due at ``start_at + i * interval`` whether or not earlier ones
were answered; a late request goes at once. Its rows are ``request_rows`` rows of the pool
(a Parquet file of flights rows with the champion's predictions) from this client's offset
on, each with a fresh row id (``row_id``), so a client's acknowledged ids are the ranges its
lines name. A request that fails for any reason but a 4xx is sent again with the same rows
and ids (safe: rows are idempotent by row id) until ``give_up_s`` passed; a 4xx is a bug of
the harness or the server, written down and not retried.

    python -m evals.inference_load_client --url URL --key KEY --model flights --client 0
        --pool pool.parquet --offset 0 --rate 250 --seconds 600 --start-at EPOCH --out c0.ndjson
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import IO, Any

import polars as pl

RETRY_PAUSE_S = 0.5


def row_id(client: int, seq: int) -> str:
    """The row id of a client's ``seq``-th row (unique across clients and runs of a load)."""
    return f"c{client}-{seq:09d}"


def request_rows(
    pool: list[dict[str, Any]], client: int, offset: int, first: int, n: int
) -> list[dict[str, Any]]:
    """Rows ``first .. first + n - 1`` of a client: pool rows from ``offset`` on (cycling),
    each with its row id."""
    size = len(pool)
    return [
        {**pool[(offset + seq) % size], "row_id": row_id(client, seq)}
        for seq in range(first, first + n)
    ]


class Retries(logging.Handler):
    """Counts the client's own retries (it logs a warning before each) and keeps the last
    reasons: a request's attempts are its retries plus one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.reasons = [*self.reasons[-2:], record.getMessage()[:300]]

    def take(self) -> tuple[int, list[str]]:
        """The retries and reasons since the last call; starts counting again."""
        out = (self.count, self.reasons)
        self.count, self.reasons = 0, []
        return out


def send(
    client: Any, model: str, rows: list[dict[str, Any]], give_up_s: float
) -> tuple[dict[str, Any], int, list[str]]:
    """``client.log(model, rows)`` until acknowledged: the client retries a failure that may
    pass a few times itself; once it gives up, the same rows go again (their ids make it
    idempotent) until ``give_up_s`` passed. Returns (the answer, the calls it took, the errors
    the failed calls raised).

    Raises:
        ClientError: the server refused the rows (not retryable: a 4xx other than 429).
        RuntimeError: not acknowledged within ``give_up_s`` (the last error chained).
    """
    from driftpilot.client import ClientError

    started = time.monotonic()
    errors: list[str] = []
    while True:
        try:
            return client.log(model, rows), len(errors) + 1, errors
        except ClientError as exc:
            if not exc.retryable:
                raise
            errors.append(f"{exc}"[:300])
            if time.monotonic() - started > give_up_s:
                raise RuntimeError(f"not acknowledged in {give_up_s} s: {errors[-1]}") from exc
            time.sleep(RETRY_PAUSE_S)


def one_request(
    client: Any, args: argparse.Namespace, rows: list[dict[str, Any]], retries: Retries
) -> dict[str, Any]:
    """Send ``rows`` until acknowledged; the request's line: when it was sent, acknowledged
    (or its error), its latency (retries included), calls, the client's own retries."""
    from driftpilot.client import ClientError

    retries.take()
    line: dict[str, Any] = {"n": len(rows), "sent": time.time()}
    t0 = time.perf_counter()
    try:
        answer, calls, errors = send(client, args.model, rows, args.give_up_s)
    except (ClientError, RuntimeError) as exc:
        line["error"] = f"{type(exc).__name__}: {exc}"[:500]
    else:
        line |= {
            "ack": time.time(),
            "latency_ms": (time.perf_counter() - t0) * 1000,
            "calls": calls,
            "accepted": answer.get("accepted"),
            "duplicates": answer.get("duplicates"),
        }
        if errors:
            line["errors"] = errors[:3]
    line["retries"], reasons = retries.take()
    if reasons:
        line["retry_reasons"] = reasons
    return line


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Log at ``args.rate`` rows/s for ``args.seconds``; one line per request. Returns the
    number of requests not acknowledged."""
    from driftpilot.client import Client

    pool = pl.read_parquet(args.pool).to_dicts()
    interval = args.request_rows / args.rate
    count = int(args.seconds / interval)
    failed = 0
    retries = Retries()
    logging.getLogger("driftpilot.client").addHandler(retries)
    client = Client(args.url, args.key, timeout=args.timeout)
    try:
        for i in range(count):
            due = args.start_at + i * interval
            time.sleep(max(0.0, due - time.time()))
            first = i * args.request_rows
            rows = request_rows(pool, args.client, args.offset, first, args.request_rows)
            line = one_request(client, args, rows, retries)
            failed += "error" in line
            out.write(json.dumps({"i": i, "due": due, "first": first, **line}) + "\n")
            out.flush()
    finally:
        client.close()
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--client", type=int, required=True)
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--rate", type=float, required=True, help="Rows per second.")
    parser.add_argument("--request-rows", type=int, default=125)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--start-at", type=float, required=True, help="Epoch seconds.")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--give-up-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with args.out.open("w") as out:
        failed = run(args, out)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
