"""Dependencies of the routes: the façade, the run executor, and who is calling.

The ones that only read the app's state are ``async``: FastAPI runs a sync dependency in its
thread pool, a hop that costs a fraction of a millisecond of CPU per request
(``evals/bench_api.py``). ``caller`` queries the database, so it stays sync, and so does
``require``'s check (routes also call it directly). ``Viewer``, ``Operator``, ... take the
bare ``Secret`` (async) and ``authorize`` in one sync dependency: one hop, not two. The hot
read route (``GET /audit``) reads on the loop on SQLite (``read_store``, ``ReadingViewer``).

The principal comes from the API key (``X-Api-Key: <secret>`` or ``Authorization: Bearer
<secret>``), never from the request body. Roles include the ones below them:
viewer < operator < approver < admin. Unknown and revoked keys are limited per client address
and per key id (``driftpilot.runs.keys``, ``driftpilot.store.throttle``): 429 with
Retry-After while locked. A right key's request reads the key and the locks in one query and
writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from driftpilot.core.identity import Role, has_role
from driftpilot.core.settings import ApiSettings
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.runs.keys import Admission, needs_writing
from driftpilot.runs.plane import ApiKeyView, ControlPlane
from driftpilot.store.throttle import Subject, address_subject

_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key's secret.")
_bearer = HTTPBearer(auto_error=False, description="An API key's secret as a bearer token.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="driftpilot"'}
T = TypeVar("T")


async def plane(request: Request) -> ControlPlane:
    """The app's service façade."""
    cp: ControlPlane = request.app.state.plane
    return cp


async def executor(request: Request) -> RunExecutor:
    """The app's background run executor."""
    ex: RunExecutor = request.app.state.executor
    return ex


async def api_settings(request: Request) -> ApiSettings:
    conf: ApiSettings = request.app.state.api_settings
    return conf


Plane = Annotated[ControlPlane, Depends(plane)]
Executor = Annotated[RunExecutor, Depends(executor)]
Conf = Annotated[ApiSettings, Depends(api_settings)]


async def credentials(
    key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The API key's secret the request carries (no database: async, no thread hop).

    Raises:
        Problem: 401 when the request carries none.
    """
    return _secret_or_401(key or (bearer.credentials if bearer is not None else None))


def _secret_or_401(secret: str | None) -> str:
    if not secret:
        raise Problem(
            401,
            "no API key: send it as 'X-Api-Key: <secret>' or 'Authorization: Bearer <secret>' "
            "(create one with `driftpilot keys create --name NAME --role ROLE`)",
            headers=_CHALLENGE,
        )
    return secret


Secret = Annotated[str, Depends(credentials)]


def client_address(request: Request) -> Subject:
    """The address failures of this request count against: the peer the server saw
    (``request.client.host``), never a header the client wrote. Behind a reverse proxy that is
    the proxy's, unless the server rewrites it from ``X-Forwarded-For``: ``driftpilot serve``
    lets uvicorn do so only for peers in ``FORWARDED_ALLOW_IPS`` (none by default)."""
    return address_subject(request.client.host if request.client else None)


def admission(cp: ControlPlane, secret: str, address: Subject) -> Admission:
    """The verdict on ``secret`` from ``address`` (one read of the database; call it off the
    loop but on SQLite, see ``read_store``)."""
    return cp.keys.admit(secret, address)


def settled(cp: ControlPlane, verdict: Admission) -> ApiKeyView:
    """The admitted key, once what ``verdict`` implies is recorded (a failure counted, a key
    id's failures cleared; no write for a right key with none).

    Raises:
        Problem: 429 with Retry-After while the address or the key id is locked, 401 when the
            key is unknown or revoked.
    """
    cp.keys.settle(verdict, cp.settings.auth)
    if verdict.retry_after is not None:
        raise locked(verdict.retry_after)
    if verdict.key is None:
        raise Problem(401, "unknown or revoked API key", headers=_CHALLENGE)
    return verdict.key


def locked(retry_after: int) -> Problem:
    """The answer to an attempt from a locked address or at a locked key id."""
    return Problem(
        429,
        f"too many failed attempts with an API key from this address or at this key; try "
        f"again in {retry_after} s",
        slug="too-many-attempts",
        title="Too many failed attempts",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def authenticate(cp: ControlPlane, secret: str, address: Subject) -> ApiKeyView:
    """The live API key whose secret this is, under the limits on guessing (it reads, and on
    a failure writes, the database: call it off the loop).

    Raises:
        Problem: 429 while locked, 401 when the key is unknown or revoked.
    """
    return settled(cp, admission(cp, secret, address))


def check_role(key: ApiKeyView, role: Role) -> ApiKeyView:
    """``key`` when its role is ``role`` or a higher one.

    Raises:
        Problem: 403 otherwise.
    """
    if not has_role(key.role, role):
        raise Problem(
            403,
            f"{key.principal!r} has the {key.role} role; this needs {role} or higher",
            slug="insufficient-role",
            title="Role too low",
        )
    return key


def authorize(cp: ControlPlane, secret: str, address: Subject, role: Role) -> ApiKeyView:
    """The live key of ``secret`` when its role reaches ``role``.

    Raises:
        Problem: 429 while locked, 401 unknown or revoked key, 403 role too low.
    """
    return check_role(authenticate(cp, secret, address), role)


def caller(cp: Plane, secret: Secret, request: Request) -> ApiKeyView:
    """The live API key of the request.

    Raises:
        Problem: 401 when no key is given, or the key is unknown or revoked; 429 while the
            client's address or the key id is locked.
    """
    return authenticate(cp, secret, client_address(request))


def require(role: Role) -> Callable[[ApiKeyView], ApiKeyView]:
    """A dependency admitting keys with ``role`` or a higher one (403 otherwise)."""

    def check(key: Annotated[ApiKeyView, Depends(caller)]) -> ApiKeyView:
        return check_role(key, role)

    return check


def keyed(role: Role) -> Callable[[ControlPlane, str, Request], ApiKeyView]:
    """The dependency of the routes needing ``role``: one sync function (one thread hop)
    authenticates and checks the role, where ``caller`` then ``require``'s check took two;
    at 200 requests/s each hop and its GIL hand-offs cost about as much CPU as an audit
    page's query (``evals/bench_api.py``). It runs before the body is validated: a request
    without a valid key gets 401, never 422."""

    def check(cp: Plane, secret: Secret, request: Request) -> ApiKeyView:
        return authorize(cp, secret, client_address(request), role)

    _ROLE_OF[check] = role
    return check


async def read_store(cp: ControlPlane, call: Callable[[], T]) -> T:
    """``call()``, a short read of the audit database, where it costs least: on the event
    loop for SQLite (a local read; in WAL mode a reader never waits for a writer), in a
    worker thread for a networked database (a round trip must not stall the loop). At 200
    requests/s, reads handed to the thread pool kept up to 40 threads contending for the
    GIL: each audit page took 3.6-8.7 ms of server CPU, growing as requests queued, against
    3.0 ms on the loop (``evals/bench_api.py``, same machine, same load).

    For the hot read routes only (``GET /audit``): a loop blocked on a full connection pool
    would wait for the requests that hold its connections."""
    if cp.settings.db_url.startswith("sqlite"):
        return call()
    return await run_in_threadpool(call)


def keyed_read(role: Role) -> Callable[[ControlPlane, str, Request], Awaitable[ApiKeyView]]:
    """``keyed`` for the hot read routes: the key is looked up through ``read_store``; a
    failure is counted in the thread pool (a write must not stall the loop, and a flood of
    wrong keys would otherwise make the loop write)."""

    async def check(cp: Plane, secret: Secret, request: Request) -> ApiKeyView:
        address = client_address(request)
        verdict = await read_store(cp, lambda: admission(cp, secret, address))
        if needs_writing(verdict):
            key = await run_in_threadpool(settled, cp, verdict)
        else:
            key = settled(cp, verdict)
        return check_role(key, role)

    _ROLE_OF[check] = role
    return check


# The role each of ``keyed``'s and ``keyed_read``'s checks demands, for ``refusal``.
_ROLE_OF: dict[Callable[..., object], Role] = {}


def route_role(request: Request) -> Role | None:
    """The role the request's route demands (None for an open route)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        dep = stack.pop()
        if dep.call in _ROLE_OF:
            return _ROLE_OF[dep.call]
        if dep.call is caller:
            return "viewer"
        stack.extend(dep.dependencies)
    return None


async def refusal(request: Request) -> Problem | None:
    """The 401, 403 or 429 a request whose body could not be read deserves before its 422.

    FastAPI decodes a JSON body before it solves any dependency, so a body that is not JSON
    would otherwise tell a caller without a valid key how the route parses: keys come first.
    """
    role = route_role(request)
    if role is None:
        return None
    header = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    cp: ControlPlane = request.app.state.plane
    try:
        secret = _secret_or_401(header or bearer)
        await run_in_threadpool(authorize, cp, secret, client_address(request), role)
    except Problem as refused:
        return refused
    return None


Viewer = Annotated[ApiKeyView, Depends(keyed("viewer"))]
ReadingViewer = Annotated[ApiKeyView, Depends(keyed_read("viewer"))]
Operator = Annotated[ApiKeyView, Depends(keyed("operator"))]
Approver = Annotated[ApiKeyView, Depends(keyed("approver"))]
Admin = Annotated[ApiKeyView, Depends(keyed("admin"))]
