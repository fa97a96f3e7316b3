"""Branch accounting end to end, against real processes: three running offices exchange a generated
stretch of inter-office work, one of them cut off for part of it; after it rejoins, every office shows
the same reconciliation and the same consolidated statements, which eliminate exactly the matched
pairs, and an auditor with no home and no company key rebuilds the head office's trial balance from
its audit export."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from procs import Fleet, cli, environment, linked, make_org, voucher_args, wait_converged, wait_until

OFFICES = ("HO", "BR1", "BR2")
YEAR_BEGINS = dt.date(2025, 4, 1)


def posted(home: Path, *args: str) -> str:
    return str(json.loads(cli(home, *args).stdout)["number"])


def reported(home: Path, *args: str) -> dict:
    return json.loads(cli(home, "report", *args, "--json").stdout)


def auditor(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``p2psync`` as an auditor runs it: in an empty folder, with no home and no company key."""
    where.mkdir(exist_ok=True)
    env = {**environment(where), "HOME": str(where)}
    return subprocess.run([sys.executable, "-m", "p2psync", *args], capture_output=True, text=True, cwd=where,
                          env=env, timeout=120, check=False)


@pytest.mark.slow
def test_a_partitioned_stretch_of_inter_office_work_reconciles_alike_and_the_audit_export_rebuilds_it(
        tmp_path: Path, fleet: Fleet) -> None:
    homes = dict(zip(OFFICES, make_org(tmp_path, ("BR1", "BR2")), strict=True))
    head = fleet.start(homes["HO"])
    nodes = {"HO": head, **{code: fleet.start(homes[code], peers=(head.url,)) for code in ("BR1", "BR2")}}
    wait_until(lambda: linked(homes["BR1"], "HO") and linked(homes["BR2"], "HO"), "both branches to link with HO")

    rng = random.Random(20260407)
    origins: dict[str, tuple[str, str, str, str]] = {}  # number -> (its office, the other office, kind, date)
    for n in range(16):
        office, other = rng.sample(OFFICES, 2)
        amount = str(rng.randrange(100, 9000))
        day = (YEAR_BEGINS + dt.timedelta(days=rng.randrange(365))).isoformat()  # a financial year of traffic
        if n % 2:
            args, kind = voucher_args("payment", day, f"@{other}", "Bank", amount, f"sent {n}"), "payment"
        else:
            args, kind = voucher_args("journal", day, "Rent", f"@{other}", amount, f"paid {n}"), "journal"
        origins[posted(homes[office], *args)] = (office, other, kind, day)
    wait_converged(*homes.values())

    nodes["BR2"].stop()  # BR2 is cut off: what it does now, and what is done towards it, waits
    fate: dict[str, str] = {}
    for number, (office, other, _kind, _day) in sorted(origins.items()):
        roll = rng.random()
        if roll < 0.6:
            cli(homes[other], "inter-office", "accept", number, "--json")
            fate[number] = "matched"
        elif roll < 0.8:
            cli(homes[other], "inter-office", "dispute", number, "--reason", f"not ours ({number})")
            fate[number] = "disputed"
        else:
            fate[number] = "in transit"
    # one side amends a voucher the other had accepted: the two are out of step
    amended = next(n for n in sorted(origins) if fate[n] == "matched" and origins[n][2] == "payment")
    office, other, _kind, day = origins[amended]
    cli(homes[office], "voucher", "amend", amended, "--date", day, "--dr", f"@{other}=7", "--cr", "Bank=7",
        "--narration", "amended on one side", "--json")
    fate[amended] = "mismatched"
    unsent = posted(homes["BR2"], *voucher_args("payment", "2026-03-28", "@HO", "Bank", "500", "while cut off"))
    fate[unsent] = "in transit"
    assert unsent not in {i["ref"] for i in _items(reported(homes["HO"], "inter-office"))}

    nodes["BR2"].start()
    wait_until(lambda: linked(homes["BR2"], "HO"), "BR2 to link with HO again")
    wait_converged(*homes.values())

    reconciled = [reported(home, "inter-office") for home in homes.values()]
    assert reconciled[0] == reconciled[1] == reconciled[2]
    assert {i["ref"]: i["status"] for i in _items(reconciled[0])} == fate
    statements = {kind: [reported(home, kind) for home in homes.values()] for kind in ("trial-balance", "balance-sheet")}
    for kind, shown in statements.items():
        assert shown[0] == shown[1] == shown[2], kind
    tb = statements["trial-balance"][0]
    matched = sum(Decimal(i["amount"]) for i in _items(reconciled[0]) if i["status"] == "matched")
    assert Decimal(tb["inter_office"]["eliminated"]) == matched > 0
    assert not [r for r in tb["rows"] if r["ledger"].startswith("@")]
    assert tb["total"]["debit"] == tb["total"]["credit"]

    for node in nodes.values():
        node.stop()
    export = tmp_path / "ho.p2pa"
    cli(homes["HO"], "audit", "export", str(export))
    verified = auditor(tmp_path / "auditor", "audit", "verify", str(export), "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["trial_balance"] == reported(homes["HO"], "trial-balance")


def _items(report: dict) -> list[dict]:
    return [item for pair in report["pairs"] for item in pair["items"]]
