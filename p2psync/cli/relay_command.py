"""``p2psync relay``: run the untrusted relay that stores and forwards sealed entries for any
organisation whose members reach it (no per-organisation setup), or only for those its operator
admits (``--allow-org``), on a SQLite file or, for several relay processes behind one address, on a
shared PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Sequence
from pathlib import Path

import click

from p2psync.cli.context import home_option
from p2psync.errors import InvalidInput
from p2psync.node.home import resolve_home
from p2psync.relay import server
from p2psync.relay.allowed import AllowedOrgs, parse_list, parse_org
from p2psync.relay.server import DAY, MIB, Limits

DEFAULT_PORT = 8471
DB_NAME = "relay.db"
ORG_ID = re.compile(r"[0-9a-f]{64}")


@click.command("relay")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--db", "db", default=None, metavar="PATH|URL",
              help=f"The relay's database: a SQLite file (default: {DB_NAME} in --home), or a "
                   "postgresql://user:password@host/dbname URL shared by several relay processes.")
@click.option("--quota", "quota_mib", default=Limits.quota_bytes / MIB, show_default=True,
              type=click.FloatRange(min=0, min_open=True), metavar="MIB",
              help="Storage each organisation may use at the relay, in MiB.")
@click.option("--org-quota", "org_quotas", multiple=True, metavar="ORG=MIB",
              help="Another quota for one organisation (its 64-hex id, as shown by the metrics); repeatable.")
@click.option("--retention", "retention_days", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="DAYS", help="How long entries wait for members that have not fetched them "
                                   "(default: keep them).")
@click.option("--org-retention", "org_retentions", multiple=True, metavar="ORG=DAYS",
              help="Another retention for one organisation ('forever' to keep its entries); repeatable.")
@click.option("--metrics", "metrics", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (keep it off the public network).")
@click.option("--allow-org", "allow_orgs", multiple=True, metavar="ORG",
              help="Serve only this organisation: its Registration ID (XXXX-XXXX-XXXX-XXXX, printed by "
                   "'p2psync init') or 64-hex id; repeatable. Members and enrollments of any other are "
                   "refused. Without --allow-org or --allow-orgs-file every organisation is served.")
@click.option("--allow-orgs-file", "allow_file", default=None, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve only the organisations listed in this file, one per line as for --allow-org "
                   "('#' starts a comment); read at start, with any --allow-org.")
@home_option
def relay_cmd(home: str | None, host: str, port: int, db: str | None, quota_mib: float, org_quotas: tuple[str, ...],
              retention_days: float | None, org_retentions: tuple[str, ...], metrics: str | None,
              allow_orgs: tuple[str, ...], allow_file: Path | None) -> None:
    """Run a relay until stopped (Ctrl-C or SIGTERM); prints the address it listens on.

    It serves every organisation whose members reach it, unless --allow-org or --allow-orgs-file
    names the ones it serves."""
    location = db if db and "://" in db else Path(db).expanduser() if db else resolve_home(home) / DB_NAME
    limits = Limits(
        quota_bytes=int(quota_mib * MIB),
        org_quota_bytes={org: int(mib * MIB) for org, mib in _per_org(org_quotas, "--org-quota").items()
                         if mib is not None},
        retention_seconds=None if retention_days is None else retention_days * DAY,
        org_retention_seconds={org: None if days is None else days * DAY
                               for org, days in _per_org(org_retentions, "--org-retention").items()},
        allowed_orgs=_allowed(allow_orgs, allow_file))
    asyncio.run(_serve(location, host, port, limits, _address(metrics) if metrics else None))


def _per_org(values: Sequence[str], option: str) -> dict[str, float | None]:
    """ORG=NUMBER settings (NUMBER may be 'forever' for retention), checked."""
    out: dict[str, float | None] = {}
    for value in values:
        org, _, number = value.partition("=")
        org = org.strip().lower()
        if not ORG_ID.fullmatch(org):
            raise click.BadParameter(f"{value!r}: the organisation must be its 64-character hex id", param_hint=option)
        if number.strip() == "forever" and option == "--org-retention":
            out[org] = None
            continue
        try:
            amount = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: give ORG=NUMBER", param_hint=option) from None
        if not amount > 0:
            raise click.BadParameter(f"{value!r}: the number must be above 0", param_hint=option)
        out[org] = amount
    return out


def _allowed(values: Sequence[str], path: Path | None) -> AllowedOrgs | None:
    """The organisations to serve, checked; None (serve every one) when neither option was given."""
    if not values and path is None:
        return None
    orgs = []
    for value in values:
        try:
            orgs.append(parse_org(value))
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), param_hint="--allow-org") from None
    if path is not None:
        orgs += _allowed_file(path)
    return AllowedOrgs.of(orgs)


def _allowed_file(path: Path) -> list[str]:
    """The organisations listed in `path`; an empty list is refused, as it would serve nobody."""
    try:
        orgs = parse_list(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="--allow-orgs-file") from None
    except InvalidInput as exc:
        raise click.BadParameter(f"{path} {exc}", param_hint="--allow-orgs-file") from None
    if not orgs:
        raise click.BadParameter(f"{path} lists no organisation; the relay would serve nobody",
                                 param_hint="--allow-orgs-file")
    return orgs


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value!r}: give HOST:PORT, e.g. 127.0.0.1:9471", param_hint="--metrics")
    return host.strip("[]"), int(port)


async def _serve(location: str | Path, host: str, port: int, limits: Limits, metrics: tuple[str, int] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    def ready(url: str, metrics_url: str | None) -> None:
        click.echo(f"relay listening on {url}")
        if metrics_url:
            click.echo(f"metrics on {metrics_url}")

    await server.run(location, host, port, stop, on_ready=ready, limits=limits, metrics=metrics)

