"""Starting the API: the bind rule and uvicorn (``driftpilot serve``).

The embedded default binds to loopback. Any other address is reachable by other machines, so
the server refuses it until at least one live API key exists: without one, nobody could use
the API there, and an empty key table usually means a forgotten set-up step.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import TYPE_CHECKING

from driftpilot.core.errors import ConfigError

if TYPE_CHECKING:
    from driftpilot.core.settings import ApiSettings
    from driftpilot.runs.plane import ControlPlane

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or 'localhost') only accepts connections from this machine.
    Any other name, ``0.0.0.0`` and ``::`` are not loopback."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(plane: ControlPlane, host: str) -> None:
    """Refuse a non-loopback ``host`` while no live API key exists.

    Raises:
        ConfigError: a non-loopback bind without a live API key.
    """
    if is_loopback(host):
        return
    if not any(not key.revoked for key in plane.list_api_keys()):
        raise ConfigError(
            f"refusing to listen on {host}: a non-loopback address needs at least one API key "
            "(create one with `driftpilot keys create --name NAME --role admin`)"
        )


def serve(
    host: str,
    port: int,
    *,
    plane: ControlPlane | None = None,
    conf: ApiSettings | None = None,
    log_level: str = "info",
) -> None:
    """Check the bind, then run the API with uvicorn until interrupted (the app's lifespan
    recovers what a dead process left, and drains the run executor on shutdown)."""
    import uvicorn

    from api.app import create_app
    from driftpilot.runs.plane import ControlPlane

    cp = plane or ControlPlane()
    check_bind(cp, host)
    if not any(not key.revoked for key in cp.list_api_keys()):
        logging.getLogger(__name__).warning(
            "no API keys yet: every endpoint but /healthz and /readyz answers 401; create one "
            "with `driftpilot keys create --name NAME --role ROLE`"
        )
    # The GIL's switch interval is the executor's to set: 1 ms where runs execute in this
    # process (driftpilot.execution.inprocess), untouched where workers run them.
    # The app owns the plane it was given here: it closes it on shutdown.
    conf = conf or cp.settings.api
    app = create_app(cp, conf, own_plane=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        timeout_keep_alive=conf.keep_alive_s,
        # uvicorn trusts X-Forwarded-For from loopback by default: any local process could then
        # pose as a fresh address to the guessing limits. Trust a proxy only when told to.
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", ""),
    )
