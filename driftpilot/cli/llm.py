"""The local LLM (opt-in real-LLM tier): ``llm serve``, ``llm exec``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftpilot.cli.common import console

llm_app = typer.Typer(
    help="The local LLM: llama.cpp's llama-server with Qwen2.5-Coder-0.5B (`make llm-local`).",
    no_args_is_help=True,
)


@llm_app.command("serve")
def llm_serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Loopback TCP port.")] = 8089,
    model: Annotated[
        Path | None, typer.Option(help="A GGUF model file; default: the one in the LLM cache.")
    ] = None,
) -> None:
    """Run the local llama-server in the foreground (Ctrl-C stops it); point DriftPilot at it
    with DRIFTPILOT_LLM=openai:qwen2.5-coder-0.5b and DRIFTPILOT_LLM_BASE_URL."""
    import contextlib
    import subprocess

    from driftpilot.core.llm import LOCAL_MODEL_NAME, server_command
    from driftpilot.core.settings import get_settings

    command = server_command(get_settings(), port, model)  # ConfigError: run make llm-local
    console.print(
        f"llama-server on http://127.0.0.1:{port}/v1 - use it with\n"
        f"  DRIFTPILOT_LLM=openai:{LOCAL_MODEL_NAME} "
        f"DRIFTPILOT_LLM_BASE_URL=http://127.0.0.1:{port}/v1",
        markup=False,
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the server too: it stops
        code = subprocess.call(command)
        if code:
            raise typer.Exit(code)


@llm_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def llm_exec(
    command: Annotated[list[str], typer.Argument(help="The command to run, after --.")],
) -> None:
    """Start the local llama-server on a free loopback port, wait until it is healthy, run
    COMMAND with DRIFTPILOT_LLM and DRIFTPILOT_LLM_BASE_URL pointing at it, stop the server;
    exit with COMMAND's code (`make demo-llm` runs the demo this way)."""
    import os
    import subprocess

    from driftpilot.core.llm import LOCAL_MODEL_NAME, local_server
    from driftpilot.core.settings import get_settings

    settings = get_settings()
    log = settings.home / "llama-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with local_server(settings, log_path=log) as base_url:
        console.print(f"llama-server ready at {base_url} (log: {log})", markup=False)
        env = {
            **os.environ,
            "DRIFTPILOT_LLM": f"openai:{LOCAL_MODEL_NAME}",
            "DRIFTPILOT_LLM_BASE_URL": base_url,
        }
        code = subprocess.call(command, env=env)
    if code:
        raise typer.Exit(code)
