"""``p2psync relay``: run the untrusted relay that stores and forwards sealed entries for any
organisation whose members reach it (no per-organisation setup)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from p2psync.cli.context import home_option
from p2psync.node.home import resolve_home
from p2psync.relay import server

DEFAULT_PORT = 8471
DB_NAME = "relay.db"


@click.command("relay")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--db", "db", default=None, metavar="PATH", type=click.Path(dir_okay=False),
              help=f"The relay's database (default: {DB_NAME} in --home).")
@home_option
def relay_cmd(home: str | None, host: str, port: int, db: str | None) -> None:
    """Run a relay until stopped (Ctrl-C or SIGTERM); prints the address it listens on."""
    path = Path(db).expanduser() if db else resolve_home(home) / DB_NAME
    asyncio.run(_serve(path, host, port))


async def _serve(path: Path, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.run(path, host, port, stop, on_ready=lambda url: click.echo(f"relay listening on {url}"))


if __name__ == "__main__":  # until the command is registered: python -m p2psync.cli.relay_command
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    relay_cmd()
