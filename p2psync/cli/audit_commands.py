"""The audit trail and audit exports: ``report audit-trail``, ``audit export`` and ``audit verify``.

Heavy modules (the node, the books) are imported inside the commands, so that ``p2psync --help``
and every other command start without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option

_start = click.option("--from", "start", default=None, help="First date of the period.")
_end = click.option("--to", "end", default=None, help="Last date of the period.")


def _date(text: str | None) -> Any:
    from p2psync.books.rules import parse_date

    return parse_date(text) if text else None


@click.command("audit-trail")
@click.option("--office", default=None, help="One office's vouchers and records (default: all).")
@_start
@_end
@click.option("--voucher", "number", default=None, help="Every revision of one voucher.")
@json_option
@home_option
def audit_trail_cmd(home: str | None, office: str | None, start: str | None, end: str | None,
                    number: str | None, as_json: bool) -> None:
    """Every revision of every voucher and masters record: who, when, what changed. Always kept; it
    cannot be switched off."""
    from p2psync.cli.context import open_node
    from p2psync.node import audit

    with open_node(home) as node:
        data = audit.report(node, office, start, end, number)
    if as_json:
        render.print_json(data)
        return
    show_trail(data["rows"])


def show_trail(rows: list[dict[str, Any]]) -> None:
    from p2psync.node import audit

    render.table("Audit trail", ["When (UTC)", "Office", "Node", "Record", "Action", "Subject", "Particulars"],
                 [[r["at"][:16].replace("T", " "), r["office"], r["node"][:8], r["record"], r["action"], r["subject"],
                   r["summary"]] for r in rows])
    counts = audit.summary(rows)
    render.info(", ".join(f"{n} {what}" for what, n in counts.items()) if counts else "No changes in this period.")


@click.group("audit")
def audit_cmd() -> None:
    """Audit exports: a file an auditor verifies without the company's keys."""


@audit_cmd.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_start
@_end
@json_option
@home_option
def audit_export_cmd(home: str | None, file: Path, start: str | None, end: str | None, as_json: bool) -> None:
    """Write every signed entry (up to --to), with its clear text, the certificates and the policy, to
    FILE. --from marks where the auditor's trail begins; the books up to --to are always whole."""
    from p2psync.cli.context import open_node
    from p2psync.node import audit_export

    with open_node(home) as node:
        done = audit_export.export(node, file, _date(start), _date(end))
    if as_json:
        render.print_json(done)
        return
    render.info(f"Wrote {done['entries']} signed entries of {done['documents']} documents to {file}.")
    render.info(f"Registration ID {done['registration_id']}: the auditor checks it with 'p2psync audit verify'.")
    if done["local_only"]:
        render.info(f"{done['local_only']} vouchers dated before the sync-after date are in this office's local "
                    "books only; they are never signed for sharing and are not in the export.")


@audit_cmd.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trail", is_flag=True, help="Also show the audit trail rebuilt from the file.")
@json_option
def audit_verify_cmd(file: Path, trail: bool, as_json: bool) -> None:
    """Check every signature, certificate, chain and clear-text record of an audit export, and rebuild
    its trial balance. Needs no home and none of the company's keys."""
    from p2psync.node import audit_export

    result = audit_export.verify(file, trail)
    if as_json:
        render.print_json(result)
        return
    _show_verified(result)
    if trail:
        show_trail(result["trail"])


def _show_verified(result: dict[str, Any]) -> None:
    period = result["range"]
    render.info("Verified: every signature, certificate, hash chain and clear-text record in the file checks.")
    render.info(f"Company (as the file states): {result['company']}")
    render.info(f"Registration ID: {result['registration_id']}  (compare it with the one the company gives you)")
    render.info(f"Root key fingerprint: {result['org']}")
    render.info(f"Exported by node {result['exporter']['node'][:16]} of office {result['exporter']['office']} at "
                f"{result['exported_at']}; books up to {period['to'] or 'the day of export'}, policy version "
                f"{result['policy_version']}, {result['entries']} entries by {result['authors']} nodes.")
    tb = result["trial_balance"]
    render.table(f"Trial balance ({tb['scope']}, rebuilt from the file)", ["Ledger", "Group", "Debit", "Credit"],
                 [[r["ledger"], r["group"], render.money(r["debit"]), render.money(r["credit"])] for r in tb["rows"]],
                 numeric={2, 3}, footer=["Total", "", render.money(tb["total"]["debit"], False),
                                         render.money(tb["total"]["credit"], False)])
    if result["local_only"]:
        render.info(f"The exporting office holds {result['local_only']} vouchers in local books (dated before the "
                    "sync-after date) that are not in the file: its own trial balance includes them.")
