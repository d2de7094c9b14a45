"""A small client of DriftPilot's inference log, for the service that serves a model.

The one line a service adds::

    logger = Logger("http://driftpilot:8000", api_key, "flights")   # once, at start
    logger.log({"row_id": rid, "time_hour": t, **features, "prediction": p, "probabilities": q})
    logger.close()                                                   # at shutdown: flushes

``Logger`` buffers rows and sends them from a background thread (every ``flush_rows`` rows
or ``flush_s`` seconds); ``Client.log`` sends a frame or rows at once, split into requests of
at most ``batch_rows``. Both retry what may pass later (connection errors, timeouts, 5xx, 429,
honouring Retry-After) with backoff: safe, because rows are idempotent by row id (a retried
request writes nothing twice). A refusal (4xx: a bad row, a row id logged with other content)
is a ``ClientError`` carrying the server's problem detail. ``Client.log`` raises it (a request
is all or nothing); the Logger sets aside only the rows the refusal names, sends the others
again, and raises the refused rows at ``close`` (``LoggerError``), never dropping them silently.

Only the standard library at import; httpx (and polars/pandas, when given a frame) are used
lazily.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Refusals of some rows of a request, not of the request itself (as a 403 or a 404 is): the
# other rows pass once the refused ones are out of it.
ROW_REFUSALS = frozenset({409, 413, 422})
Row = dict[str, Any]


class ClientError(Exception):
    """A request DriftPilot refused (``status`` 4xx, ``problem`` its problem+json body) or
    that did not pass within the retries (``status`` 5xx/429, or None: no answer)."""

    def __init__(self, message: str, status: int | None = None, problem: Any = None) -> None:
        super().__init__(message)
        self.status, self.problem = status, problem
        self.retry_after: float | None = None  # seconds the server asked to wait, if it did
        # Client.log/label: the refused request's first row, as an index of the rows given (the
        # problem's row numbers count from it).
        self.first_row: int | None = None

    @property
    def retryable(self) -> bool:
        """Whether the same request may pass later (no answer, 5xx, 429)."""
        return self.status is None or self.status in RETRY_STATUSES


class LoggerError(ClientError):
    """Rows a Logger could not deliver by its ``close``: ``rows`` (the refused ones first, then
    those not sent in time, each in order), ``reasons`` (why, one per row: the server's reason
    for a refused row), and ``errors`` (the last errors, ``status``/``problem`` the last's)."""

    def __init__(
        self, rows: list[Row], errors: list[ClientError], reasons: list[str] | None = None
    ) -> None:
        last = errors[-1] if errors else None
        super().__init__(
            f"{len(rows)} logged rows were not delivered: {last}",
            last.status if last else None,
            last.problem if last else None,
        )
        self.rows, self.errors = rows, errors
        self.reasons = reasons if reasons is not None else [str(last)] * len(rows)


class Client:
    """DriftPilot's inference log over HTTP, with an operator's API key.

    Args:
        url: the API's base URL.
        api_key: an API key's secret (role operator or above).
        timeout: seconds per HTTP request.
        batch_rows: most rows per request (the server's limit is larger).
        retries: tries after the first for a retryable failure.
        backoff_s: the first wait between tries (doubled each time, with jitter).
        max_backoff_s: the longest wait (and the most of a Retry-After honoured).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        batch_rows: int = 500,
        retries: int = 5,
        backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
    ) -> None:
        import httpx

        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.batch_rows, self.retries = batch_rows, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers={"X-Api-Key": api_key}, timeout=timeout
        )

    def log(self, model: str, rows: Any) -> dict[str, int]:
        """Log predictions of ``model``: a polars or pandas frame, a row (dict), or rows.
        Returns the sums of the answers: ``accepted``, ``duplicates``, ``rows``.

        Requests go in order; each is all or nothing. If one fails, those before it are
        logged, it and those after it are not: calling ``log`` again with the same rows is
        safe (they count as duplicates). A refusal names its bad rows (a 422's ``errors[].row``
        count from the request's first row, ``first_row``; a 409's ``row_ids``): drop them and
        call again, or log through a ``Logger``, which does so itself.

        Raises:
            ClientError: a refusal (4xx, with the server's problem and ``first_row``), or a
                failure that lasted through the retries.
        """
        return self._send(f"/models/{model}/inferences", as_rows(rows))

    def label(self, model: str, rows: Any) -> dict[str, Any]:
        """Post labels that came later: rows of ``row_id`` and the model's target. Returns the
        sums of the answers' counts and, under ``windows``, what the labels did to each closed
        window (attached: its champion's realised score beside the estimate made without
        them), request after request.

        Raises:
            ClientError: as ``log``.
        """
        return self._send(f"/models/{model}/inferences/labels", as_rows(rows))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, path: str, rows: list[Row]) -> dict[str, Any]:
        totals: dict[str, Any] = {}
        start = 0
        while start < len(rows):
            chunk = rows[start : start + self.batch_rows]
            try:
                answer = self.post(path, chunk)
            except ClientError as exc:
                limit = row_limit(exc)
                if limit is None or limit >= len(chunk):
                    exc.first_row = start
                    raise
                self.batch_rows = limit  # the server's, smaller: kept for the next requests
                continue
            for key, value in answer.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
                elif isinstance(value, list):  # what each request did (labels: its windows)
                    totals.setdefault(key, []).extend(value)
            start += len(chunk)
        return totals

    def post(self, path: str, rows: list[Row]) -> dict[str, Any]:
        """One request of ``rows``, tried again while its failure may pass.

        Raises:
            ClientError: a refusal, or the last retryable failure once the retries are spent.
        """
        import httpx

        body = json.dumps(rows, default=_json_default, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            try:
                try:
                    response = self._http.post(path, content=body, headers=headers)
                except httpx.TransportError as exc:  # no answer: it may pass, like a 503
                    raise ClientError(f"no answer from DriftPilot: {exc!r}") from exc
                return self._answer(response)
            except ClientError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                wait = self._wait(attempt, exc)
                log.warning("DriftPilot %s: %s; trying again in %.2f s", path, exc, wait)
                time.sleep(wait)
        raise AssertionError("unreachable: the last try returns or raises")

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code < 300:
            answer: dict[str, Any] = response.json()
            return answer
        problem: Any
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:500]}
        detail = problem.get("detail", "") if isinstance(problem, dict) else str(problem)
        error = ClientError(f"HTTP {response.status_code}: {detail}", response.status_code, problem)
        error.retry_after = _retry_after(response.headers.get("Retry-After"))
        raise error

    def _wait(self, attempt: int, error: ClientError) -> float:
        told = error.retry_after
        if told is not None:
            return min(told, self.max_backoff_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: clients that failed together spread


def row_limit(error: ClientError) -> int | None:
    """The rows per request a 413 says the server takes (None: another error)."""
    problem = error.problem
    limit = problem.get("limit") if error.status == 413 and isinstance(problem, dict) else None
    return limit if isinstance(limit, int) and limit >= 1 else None


def refused_rows(rows: list[Row], error: ClientError) -> dict[int, str]:
    """The rows of a refused request that its problem names, {index in ``rows``: reason}: a
    422's ``errors[].row`` (0-based in the request), a 409's ``row_ids``. Empty when it names
    none of them. Either lists its first 20 only (a 422's ``count`` says how many there were):
    the others are named when the rest is sent again."""
    problem = error.problem if isinstance(error.problem, dict) else {}
    named: dict[int, str] = {}
    if error.status == 422:
        for item in problem.get("errors") or []:
            row = item.get("row") if isinstance(item, dict) else None
            if isinstance(row, int) and not isinstance(row, bool) and 0 <= row < len(rows):
                column = item.get("column")
                where = f"column {column!r}: " if column else ""
                named.setdefault(row, f"HTTP 422: {where}{item.get('reason')}")
    elif error.status == 409:
        ids = {str(i) for i in problem.get("row_ids") or []}
        for i, row in enumerate(rows):
            row_id = _wire_id(row.get("row_id"))
            if row_id in ids:
                named[i] = f"HTTP 409: row id {row_id!r} is logged already with other content"
    return named


def unsendable_rows(rows: list[Row]) -> dict[int, str]:
    """The rows that are not JSON, {index in ``rows``: reason}."""
    named: dict[int, str] = {}
    for i, row in enumerate(rows):
        try:
            json.dumps(row, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            named[i] = f"cannot be sent: {exc}"
    return named


def _wire_id(value: Any) -> Any:
    """A row id as the server names it (an integer id becomes its text)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def as_rows(rows: Any) -> list[Row]:
    """Rows as JSON-ready dicts: from a polars or pandas frame, one dict, or an iterable of
    dicts. Instants become ISO 8601 text; a NaN becomes null (pandas' missing value)."""
    if isinstance(rows, Mapping):
        records: Iterable[Mapping[str, Any]] = [rows]
    elif hasattr(rows, "to_dicts"):  # polars
        records = rows.to_dicts()
    elif hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas
        records = rows.to_dict("records")
    else:
        records = rows
    return [{str(k): _plain(v) for k, v in record.items()} for record in records]


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # a numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return value
        return _plain(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"a logged value of type {type(value).__name__} is not JSON")


class Logger:
    """Logs a service's predictions in the background: ``log`` only buffers (no I/O on the
    caller's path); a thread sends the buffer every ``flush_rows`` rows or ``flush_s``
    seconds. A send that fails for a while is retried (the rows stay buffered, in order). Of a
    refused request (a bad row, a row id logged with other content), only the rows the refusal
    names are kept aside, with its reason, and logged; the others are sent again. A refusal
    that names no row of the request (a body too large) is narrowed by halving the requests
    until the row is alone (then halving is undone as requests pass). A refusal of every row
    (403, 404) keeps the request aside. ``close`` (or leaving the ``with``) flushes what is
    left and raises ``LoggerError`` with every row not delivered and why.

    Args:
        url, api_key: as ``Client``'s.
        model: the managed model the rows are predictions of.
        flush_rows: rows that trigger a send (and most rows per request).
        flush_s: the longest a row waits before it is sent.
        max_buffer_rows: most rows held while the server is unreachable; beyond, ``log``
            raises ``ClientError`` rather than grow without bound.
        client: a ``Client`` to send with (default: a new one; closed by ``close``).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        model: str,
        *,
        flush_rows: int = 500,
        flush_s: float = 1.0,
        max_buffer_rows: int = 100_000,
        timeout: float = 30.0,
        client: Client | None = None,
    ) -> None:
        self.model, self.flush_rows, self.flush_s = model, flush_rows, flush_s
        self.max_buffer_rows = max_buffer_rows
        # The thread's own retries are its loop's: one request try per turn, so that close()
        # is never stuck behind a long backoff.
        self._client = client or Client(
            url, api_key, timeout=timeout, batch_rows=flush_rows, retries=0
        )
        self._buffer: list[Row] = []
        self._refused: list[tuple[Row, str]] = []  # (row, why it was refused)
        self._span = flush_rows  # most rows per request while a refusal is narrowed
        self._errors: list[ClientError] = []
        self._since: float | None = None  # when the oldest buffered row came
        self._retry_at = 0.0  # no send before this (time.monotonic()) after a failure
        self._failures = 0
        self._closing = False
        self._close_by = math.inf  # close(): the thread stops trying then
        self.sent = 0  # rows acknowledged (accepted or duplicates)
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"driftpilot-logger-{model}", daemon=True
        )
        self._thread.start()

    def log(self, rows: Any) -> None:
        """Buffer a row (dict), rows or a frame; returns at once.

        Raises:
            ClientError: the logger is closed, or its buffer is full (the server has been
                unreachable for ``max_buffer_rows`` rows).
        """
        new = as_rows(rows)
        with self._cond:
            if self._closing:
                raise ClientError("the logger is closed")
            if len(self._buffer) + len(new) > self.max_buffer_rows:
                raise ClientError(
                    f"the logger holds {len(self._buffer)} rows it could not send yet (the "
                    f"limit is {self.max_buffer_rows}); last error: "
                    f"{self._errors[-1] if self._errors else None}"
                )
            self._buffer.extend(new)
            if self._since is None:
                self._since = time.monotonic()
            if len(self._buffer) >= self.flush_rows:
                self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered row was sent (True) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._retry_at = 0.0
            self._cond.notify()
            while self._buffer and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.1)
            return not self._buffer

    def close(self, timeout: float = 30.0) -> None:
        """Send what is buffered (trying for up to ``timeout`` s), stop the thread.

        Raises:
            LoggerError: rows refused by the server or not sent in time (all of them kept in
                the error, in order).
        """
        with self._cond:
            self._closing = True
            self._retry_at = 0.0
            self._close_by = time.monotonic() + timeout
            self._cond.notify()
        self._thread.join()
        self._client.close()
        errors = self._errors or [ClientError("not sent before close")]
        left = [row for row, _ in self._refused] + self._buffer
        reasons = [why for _, why in self._refused]
        reasons += [f"not sent before close: {errors[-1]}"] * len(self._buffer)
        if left:
            raise LoggerError(left, errors, reasons)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closing and (not self._buffer or self._past_close()):
                        return
                    self._cond.wait(self._sleep())
                batch = self._buffer[: self._request_rows()]
            self._send(batch)

    def _request_rows(self) -> int:
        """Most rows of the next request (under the lock)."""
        return min(self.flush_rows, self._client.batch_rows, self._span)

    def _due(self) -> bool:
        """Whether a send is due now (called under the lock)."""
        if not self._buffer or time.monotonic() < self._retry_at:
            return False
        if self._closing:
            return not self._past_close()
        full = len(self._buffer) >= self._request_rows()
        return full or (self._since is not None and time.monotonic() - self._since >= self.flush_s)

    def _past_close(self) -> bool:
        return time.monotonic() >= self._close_by

    def _sleep(self) -> float:
        now = time.monotonic()
        waits = [self.flush_s]
        if self._retry_at > now:
            waits.append(self._retry_at - now)
        elif self._since is not None:
            waits.append(max(0.0, self._since + self.flush_s - now))
        if self._closing:
            waits.append(max(0.0, self._close_by - now))
        return max(0.001, min(waits))

    def _send(self, batch: list[Row]) -> None:
        """One request of the buffer's head: on success drop it from the buffer; a refusal
        sets its refused rows aside; a failure that may pass leaves it, and waits before the
        next try."""
        try:
            answer = self._client.post(f"/models/{self.model}/inferences", batch)
        except (TypeError, ValueError) as exc:  # a value that is not JSON: it never will be
            error = ClientError(f"rows that cannot be sent: {exc}")
            self._set_aside(batch, unsendable_rows(batch), error)
            return
        except ClientError as exc:
            self._refused_request(batch, exc)
            return
        with self._cond:
            self._failures = 0
            self._span = min(self.flush_rows, self._span * 2)
            self.sent += int(answer.get("accepted", 0)) + int(answer.get("duplicates", 0))
            self._drop(len(batch))
            self._cond.notify_all()

    def _refused_request(self, batch: list[Row], exc: ClientError) -> None:
        """A request that did not pass: tried again later if it may pass, in smaller requests
        if the server takes fewer rows, else its refused rows are set aside."""
        limit = row_limit(exc)
        if exc.retryable:
            self._failed(exc)
        elif limit is not None and limit < len(batch):
            with self._cond:
                self._client.batch_rows = limit  # sent again at once, in smaller requests
        elif exc.status not in ROW_REFUSALS:  # a refusal of the request: no row of it passes
            self._set_aside(batch, {}, exc)
        elif named := refused_rows(batch, exc):
            self._set_aside(batch, named, exc)
        elif len(batch) == 1:
            self._set_aside(batch, {0: str(exc)}, exc)
        else:
            with self._cond:
                # A halving per refusal: a refused row costs about log2(flush_rows) requests.
                self._span = len(batch) // 2
                self._errors = [*self._errors[-9:], exc]  # close's reason, if it comes first
                log.warning("DriftPilot refused %d rows, naming none: %s", len(batch), exc)
                self._cond.notify_all()

    def _failed(self, exc: ClientError) -> None:
        """A send that may pass later: tried again after a backoff."""
        with self._cond:
            self._errors = [*self._errors[-9:], exc]
            self._failures += 1
            wait = exc.retry_after or min(0.25 * 2 ** min(self._failures, 7), 30.0)
            self._retry_at = time.monotonic() + wait
            log.warning("DriftPilot logger: %s; trying again in %.2f s", exc, wait)
            self._cond.notify_all()

    def _set_aside(self, batch: list[Row], named: dict[int, str], exc: ClientError) -> None:
        """Rows of the buffer's head ``batch`` that will not pass as they are, {index: reason}
        (none named: all of them, for ``exc``): kept aside (raised by ``close``) and logged;
        the others stay at the buffer's head, sent again."""
        named = named or dict.fromkeys(range(len(batch)), str(exc))
        with self._cond:
            self._errors = [*self._errors[-9:], exc]
            log.error(
                "DriftPilot refused %d of %d logged rows, kept aside: %s",
                len(named),
                len(batch),
                exc,
            )
            self._refused.extend((batch[i], named[i]) for i in sorted(named))
            self._buffer[: len(batch)] = [r for i, r in enumerate(batch) if i not in named]
            if not self._buffer:
                self._since = None
            self._cond.notify_all()

    def _drop(self, n: int) -> None:
        """Remove the buffer's first ``n`` rows (under the lock)."""
        del self._buffer[:n]
        self._since = time.monotonic() if self._buffer else None
