"""The audit trail and audit exports: every change kept and shown with who, when and what changed;
an export an auditor verifies in a process with no home and no company keys, that rebuilds the head
office's trial balance exactly, and that fails with one clear line on any altered byte."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import draft, exchange, sync
from procs import cli, environment, here, here_json, make_org, voucher_args
from test_dashboard_browser import browser  # noqa: F401  (the fixture)

from p2psync.books.posting import financial_year
from p2psync.canonical import dumps, loads
from p2psync.node import audit, audit_export, registrar
from p2psync.node.audit_export import AuditError
from p2psync.node.office import Node

DAY = financial_year(dt.date.today())[0] + dt.timedelta(days=4)
LATER = DAY + dt.timedelta(days=35)


def test_the_trail_lists_posts_amendments_cancellations_and_masters(trio: list[Node]) -> None:
    head, br1, _br2 = trio
    head.set_opening("Cash", "5,000")
    head.set_opening("Cash", "7,500")
    first = br1.post(draft("payment", DAY.isoformat(), {"Rent": "100"}, {"Cash": "100"}, "rent"))
    br1.amend(first.number, draft("payment", (DAY + dt.timedelta(days=1)).isoformat(), {"Rent": "150"},
                                  {"Cash": "150"}, "rent, corrected"))
    second = br1.post(draft("receipt", DAY.isoformat(), {"Cash": "900"}, {"Sales": "900"}))
    sync(head, br1)
    head.cancel(second.number, "entered twice")
    sync(head, br1)

    for node in (head, br1):  # every office shows the same changes, its own and received ones
        rows = audit.trail(node, audit.Scope())
        vouchers = [(r["subject"], r["action"], r["office"]) for r in rows if r["record"] == "voucher"]
        assert vouchers == [(first.number, "post", "BR1"), (first.number, "amend", "BR1"),
                            (second.number, "post", "BR1"), (second.number, "cancel", "HO")]
    rows = audit.trail(head, audit.Scope(voucher=first.number))
    amend = rows[1]
    assert amend["node"] == br1.identity.node_id[:16] and amend["origin"] == "received"
    assert amend["before"]["date"] == DAY.isoformat() and amend["before"]["narration"] == "rent"
    assert amend["after"]["date"] == (DAY + dt.timedelta(days=1)).isoformat()
    assert amend["changes"] == [f"date {DAY} -> {DAY + dt.timedelta(days=1)}",
                                "narration 'rent' -> 'rent, corrected'", "Cr Cash 100.00 -> 150.00",
                                "Dr Rent 100.00 -> 150.00"]
    cancel = audit.trail(head, audit.Scope(voucher=second.number))[-1]
    assert (cancel["office"], cancel["reason"], cancel["origin"]) == ("HO", "entered twice", "made here")

    masters = [r for r in audit.trail(head, audit.Scope(office="HO")) if r["record"] != "voucher"]
    openings = [(r["action"], r["before"] and r["before"]["text"], r["after"]["text"])
                for r in masters if r["record"] == "opening"]
    assert openings == [("create", None, "5,000.00 Dr"), ("change", "5,000.00 Dr", "7,500.00 Dr")]
    assert {r["subject"] for r in masters if r["record"] == "ledger"} >= {"Cash", "Rent", "Sales"}
    assert {r["subject"] for r in masters if r["record"] == "office"} == {"HO"}
    assert {r["subject"] for r in audit.trail(head, audit.Scope()) if r["record"] == "office"} == {"HO", "BR1", "BR2"}
    # a period chooses vouchers by date
    assert not [r for r in audit.trail(head, audit.Scope(start=LATER)) if r["record"] == "voucher"]


# ---------------------------------------------------------------- export and verify, through the CLI


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head office and BR1 with posts, an amendment, a cancellation and openings, exchanged."""
    base = tmp_path_factory.mktemp("audit")
    ho, br1 = make_org(base, ("BR1",))
    here(ho, "ledger", "add", "Petty Cash", "--group", "Cash-in-Hand", "--opening", "2,000")
    number = json.loads(here(br1, *voucher_args("payment", DAY.isoformat(), "Rent", "Cash", "1,200", "april rent")))
    here(br1, *voucher_args("receipt", LATER.isoformat(), "Cash", "Sales", "40,000", "may sales"))
    exchange(ho, br1)
    here(ho, "voucher", "amend", number["number"], "--date", DAY.isoformat(), "--narration", "april rent", "--dr", "Rent=1,250", "--cr", "Cash=1,250", "--json")
    cancelled = json.loads(here(ho, *voucher_args("journal", DAY.isoformat(), "Rent", "Capital", "10")))
    here(ho, "voucher", "cancel", cancelled["number"], "--reason", "wrong ledger")
    exchange(ho, br1)
    return base


def auditor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``p2psync`` as an auditor runs it: in an empty directory, with no home and no company key."""
    where = tmp_path / "auditor"
    where.mkdir(exist_ok=True)
    env = environment(where)
    env["HOME"] = str(where)
    return subprocess.run([sys.executable, "-m", "p2psync", *args], capture_output=True, text=True, cwd=where,
                          env=env, timeout=120, check=False)


def test_verify_with_no_home_rebuilds_the_head_offices_trial_balance(books: Path, tmp_path: Path) -> None:
    ho = books / "HO"
    export = tmp_path / "books.p2pa"
    here(ho, "audit", "export", str(export))
    done = auditor(tmp_path, "audit", "verify", str(export), "--json", "--trail")
    assert done.returncode == 0, done.stderr
    verified = json.loads(done.stdout)
    assert verified["trial_balance"] == here_json(ho, "report", "trial-balance")
    assert verified["registration_id"] == here_json(ho, "settings")["registration_id"]
    trail = here_json(ho, "report", "audit-trail")["rows"]
    assert [(r["subject"], r["action"]) for r in verified["trail"]] == [(r["subject"], r["action"]) for r in trail]
    assert not list((tmp_path / "auditor").rglob("p2psync.db")) and not list((tmp_path / "auditor").rglob("*.pem"))
    text = auditor(tmp_path, "audit", "verify", str(export))
    assert text.returncode == 0 and "Registration ID: " + verified["registration_id"] in text.stdout
    assert "Verified" in text.stdout and text.stderr == ""

    # --to: the books as on that date, whole
    early = tmp_path / "april.p2pa"
    here(ho, "audit", "export", str(early), "--to", (LATER - dt.timedelta(days=1)).isoformat())
    as_on = json.loads(auditor(tmp_path, "audit", "verify", str(early), "--json").stdout)["trial_balance"]
    assert as_on == here_json(ho, "report", "trial-balance", "--to", (LATER - dt.timedelta(days=1)).isoformat())
    assert as_on != verified["trial_balance"]


def _flip(data: bytes, at: int) -> bytes:
    """`data` with the byte at `at` changed, to another character of the same kind (so that base64
    stays base64 and JSON text stays text: what a careful forger would do)."""
    old = data[at:at + 1]
    new = b"B" if old != b"B" else b"C"
    if old in b"0123456789":
        new = b"7" if old != b"7" else b"8"
    return data[:at] + new + data[at + 1:]


def _inside(data: bytes, needle: bytes, offset: int = 40) -> int:
    return data.index(needle) + len(needle) + offset


def test_any_altered_byte_fails_with_one_clear_line(books: Path, tmp_path: Path) -> None:
    export = tmp_path / "books.p2pa"
    here(books / "HO", "audit", "export", str(export))
    data = export.read_bytes()
    body = loads(data.split(b"\n")[1])
    first_entry = body["entries"][3]["entry"].encode()
    places = {
        "entry ciphertext": data.index(first_entry) + len(first_entry) - 120,
        "entry signature": data.index(first_entry) + len(first_entry) - 10,
        "certificate": _inside(data, b'"root_cert":"', 200),
        "policy": _inside(data, b'"policy":"', 300),
        "plaintext revision": data.index(b"april rent") + 2,
        "export signature": len(data) - 10,
        "framing (magic)": 3,
    }
    altered = {name: _flip(data, at) for name, at in places.items()}
    altered["framing (line break)"] = data.replace(b"\nsignature ", b" signature ", 1)
    altered["framing (trailing byte)"] = data + b"\n"
    altered["truncated"] = data[:-200]
    for name, bad in altered.items():
        assert bad != data, name
        path = tmp_path / f"bad-{name.split()[0]}.p2pa"
        path.write_bytes(bad)
        done = auditor(tmp_path, "audit", "verify", str(path))
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (name, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout, name


def _resigned(data: bytes, home: Path, change: Any) -> bytes:
    """The export altered by `change(body)` and signed again with the exporting node's own key: what a
    company that wants to mislead its auditor could produce. The checks below the file's signature
    must still catch it."""
    from p2psync.node.audit_export import _sign

    body = loads(data.split(b"\n")[1])
    change(body)
    node = Node.open(home)
    try:
        return _sign(dumps(body).encode(), node.trust.keys.signing)
    finally:
        node.close()


def _entry_bytes(item: dict[str, Any]) -> bytearray:
    text = item["entry"]
    return bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_resigned_export_with_altered_contents_still_fails(books: Path, tmp_path: Path) -> None:
    ho = books / "HO"
    export = tmp_path / "books.p2pa"
    here(ho, "audit", "export", str(export))
    data = export.read_bytes()
    assert audit_export.verify_bytes(_resigned(data, ho, lambda body: None))["entries"] > 0

    def plaintext(body: dict[str, Any]) -> None:
        item = next(i for i in body["entries"] if any("april rent" in r[2] for r in i["records"]))
        item["records"] = [[m, k, v.replace("april rent", "april rant")] for m, k, v in item["records"]]

    def ciphertext(body: dict[str, Any]) -> None:
        raw = _entry_bytes(body["entries"][-1])
        raw[-80] ^= 1
        body["entries"][-1]["entry"] = _b64(bytes(raw))

    def dropped(body: dict[str, Any]) -> None:
        del body["entries"][-1]

    def head(body: dict[str, Any]) -> None:
        vector = body["heads"]["masters"]
        author = next(iter(vector))
        vector[author][1] = _b64(b"\x00" * 32)

    def key(body: dict[str, Any]) -> None:  # every key the export holds (per scope: read scopes are on)
        body["epoch_keys"] = {name: _b64(b"\x01" * 32) for name in body["epoch_keys"]}

    cases = {plaintext: "is not what its signed entry holds", ciphertext: "refused: signature does not verify",
             dropped: "chain heads", head: "chain heads the export states for masters",
             key: "ciphertext fails authentication"}
    for change, reason in cases.items():
        with pytest.raises(AuditError, match=reason):
            audit_export.verify_bytes(_resigned(data, ho, change))



def test_an_entry_made_after_its_authors_revocation_is_flagged(trio: list[Node], tmp_path: Path) -> None:
    head, br1, br2 = trio
    br1.post(draft("payment", DAY.isoformat(), {"Rent": "100"}, {"Cash": "100"}))
    sync(head, br1, br2)
    registrar.revoke(head, "BR1")
    late = br1.post(draft("payment", DAY.isoformat(), {"Rent": "70"}, {"Cash": "70"}, "after revocation"))
    assert br2.receive(br1.entries(br2.vectors())).applied == 1  # BR2 has not heard of the revocation yet
    br2.adopt_policy(head.policy_blob())  # the entry stays applied there (a known limit)
    path = tmp_path / "br2.p2pa"
    audit_export.export(br2, path)
    with pytest.raises(AuditError, match=f"entry 2 of node {br1.identity.node_id[:16]} .* is refused: .*revoked"):
        audit_export.verify(path)
    assert late.number in {r["subject"] for r in audit.trail(br2, audit.Scope())}
    # the head office's own export, which never applied it, verifies
    audit_export.export(head, tmp_path / "ho.p2pa")
    assert audit_export.verify(tmp_path / "ho.p2pa")["entries"] > 0


def test_the_trail_command_refuses_what_would_show_an_empty_answer(books: Path, tmp_path: Path) -> None:
    done = cli(books / "HO", "report", "audit-trail", "--office", "XX", check=False)
    assert done.returncode == 1 and done.stderr.startswith("error: unknown office XX")
    done = cli(books / "HO", "report", "audit-trail", "--voucher", "HO/JRN/09999", check=False)
    assert done.returncode == 1 and "no voucher numbered HO/JRN/09999" in done.stderr
    missing = auditor(tmp_path, "audit", "verify", str(tmp_path / "none.p2pa"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot read")
    shutil.rmtree(tmp_path / "auditor")


# ---------------------------------------------------------------- the dashboard


@pytest.mark.slow
def test_the_dashboard_shows_the_audit_trail(tmp_path: Path, fleet: Any, browser: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect
    from test_dashboard_browser import open_page, screen

    ho_home, _br = make_org(tmp_path, ("BR1",))
    made = json.loads(here(ho_home, *voucher_args("payment", DAY.isoformat(), "Rent", "Cash", "500", "shop rent")))
    here(ho_home, "voucher", "cancel", made["number"], "--reason", "paid twice")
    ho = fleet.start(ho_home, dashboard=True)
    page = open_page(browser, ho.dashboard_url)
    screen(page, "audit")
    rows = page.locator(f"#audit-trail tr[data-subject='{made['number']}']")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("post")
    expect(rows.nth(0)).to_contain_text("shop rent")
    expect(rows.nth(1)).to_contain_text("cancelled: paid twice")
    expect(page.locator("#audit-trail tr[data-subject='Rent']")).to_contain_text("ledger Rent under Indirect Expenses")
    assert not page.errors
