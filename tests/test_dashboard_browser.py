"""The dashboard as an office uses it: headless Chromium driving the pages of real ``p2psync``
processes. A head office is created and a branch registered through the pages; a voucher refused
and then posted at the branch appears in the head office's day book without a reload; a sync-after
date set at the head office shows at the branch; a branch that stops shows Offline.

With ``DASHBOARD_SCREENSHOTS=DIR`` the test also saves a picture of each screen there
(``scripts/screenshots`` refreshes the ones in ``docs/dashboard``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import exchange
from outside import require
from procs import Fleet, begin_books_here, cli, here, make_org, post_here, wait_converged
from test_links_status import post_many

from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.web.server import DashboardServer
from p2psync.web.state import Dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Every wait for the page; each normally ends within a second or two.
WAIT_MS = 45_000
VIEWPORT = {"width": 1060, "height": 680}

pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        require("the Python package playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        require(f"Chromium is not installed at {CHROMIUM} (Debian package chromium)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, url: str, zone: str = "Asia/Kolkata") -> Any:
    """A page of its own (own cookies) signed in through an address the node printed (each works once)."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-IN", timezone_id=zone)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(url)
    return page


def shot(page: Any, name: str) -> None:
    where = os.environ.get("DASHBOARD_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def screen(page: Any, name: str) -> None:
    page.click(f"nav button[data-screen={name}]")
    page.wait_for_selector(f"nav button.active[data-screen={name}]")


def fill_voucher(page: Any, kind: str, date: str, narration: str, lines: list[tuple[str, str, str]]) -> None:
    page.select_option("#voucher-type", kind)
    page.fill("#voucher-date", date)
    page.fill("#voucher-narration", narration)
    rows = page.locator("#voucher-form tbody tr")
    for i, (side, ledger, amount) in enumerate(lines):
        if i >= rows.count():
            page.click("#add-line")
        row = rows.nth(i)
        row.locator(".line-side").select_option(side)
        row.locator(".line-ledger").fill(ledger)
        row.locator(".line-amount").fill(amount)


def test_two_offices_work_through_their_dashboards(tmp_path: Path, fleet: Fleet, browser: Any) -> None:
    from playwright.sync_api import expect

    ho_home, br_home = tmp_path / "HO", tmp_path / "BR1"

    # the head office creates the organisation from its page
    ho = fleet.start(ho_home, command="dashboard")
    ho_page = open_page(browser, ho.dashboard_url)
    ho_page.fill("#setup-company", "Acme Traders")
    shot(ho_page, "setup")
    ho_page.click("#create-head")
    ho_page.wait_for_selector("nav button[data-screen=registration]")  # the page reloads as the node starts
    ho.wait_serving()
    begin_books_here(ho_home)
    asked = cli(ho_home, "dashboard").stdout  # asked of the running node: a fresh one-time address
    assert asked.startswith(f"Dashboard: {ho.dashboard_url.split('?')[0]}?ticket=") and ho.dashboard_url not in asked
    again = open_page(browser, asked.removeprefix("Dashboard: ").strip())
    again.wait_for_selector("nav button[data-screen=registration]")
    used = open_page(browser, ho.dashboard_url)  # the address printed at start, already opened once
    expect(used.locator("body")).to_contain_text("not (or no longer) valid")
    again.context.close()
    used.context.close()
    for name, group in (("Cash", "Cash-in-Hand"), ("Sales", "Sales Accounts"), ("Capital", "Capital Account")):
        here(ho_home, "ledger", "add", name, "--group", group)  # made with the commands while the node runs
    screen(ho_page, "ledger")
    ho_page.fill("#ledger-name", "Rent")  # and one from the page
    ho_page.select_option("#ledger-group", "Indirect Expenses")
    ho_page.click("#add-ledger")
    expect(ho_page.locator("#ledger-form .notice")).to_have_text("Created ledger Rent under Indirect Expenses")
    expect(ho_page.locator("#report-ledger option")).to_have_count(4)

    # branch master and a one-time code
    screen(ho_page, "registration")
    ho_page.fill("#branch-code", "BR1")
    ho_page.fill("#branch-name", "Surat Branch")
    ho_page.click("#add-branch")
    expect(ho_page.locator("#branches")).to_contain_text("Surat Branch")
    ho_page.select_option("#invite-office", "BR1")
    ho_page.click("#make-invite")
    code = ho_page.locator("#invite-code").inner_text()
    shot(ho_page, "registration")

    # the branch joins with it from its own page, before it has a node
    br = fleet.start(br_home, command="dashboard", peers=(ho.url,))
    br_page = open_page(browser, br.dashboard_url)
    br_page.fill("#join-code", "x" + code)
    br_page.fill("#join-via", ho.url)
    br_page.click("#join")
    expect(br_page.locator("[role=alert]")).to_contain_text("invite code")  # a mistyped code: the node's words
    br_page.fill("#join-code", code)
    br_page.click("#join")
    br_page.wait_for_selector("nav button[data-screen=vouchers]")
    br.wait_serving()
    begin_books_here(br_home)
    expect(br_page.locator("#office")).to_contain_text("BR1 (Branch Office)")

    # the head office watches its day book while the branch posts
    screen(ho_page, "daybook")
    ho_page.evaluate("window.notReloaded = true")
    screen(br_page, "vouchers")
    expect(br_page.locator("#ledger-names option")).to_have_count(4)  # the head office's ledgers have arrived
    fill_voucher(br_page, "receipt", "2026-04-05", "Counter sale at Surat",
                 [("Dr", "Cash", "1,500"), ("Cr", "Sales", "1,400")])
    br_page.click("#voucher-submit")
    expect(br_page.locator("[role=alert]")).to_have_text("debits (1500.00) do not equal credits (1400.00)")
    shot(br_page, "voucher-refused")
    br_page.locator("#voucher-form tbody tr").nth(1).locator(".line-amount").fill("1,500")
    br_page.click("#voucher-submit")
    expect(br_page.locator("#voucher-list")).to_contain_text("BR1/RCT/")
    expect(ho_page.locator("#day-book")).to_contain_text("Counter sale at Surat")
    assert ho_page.evaluate("window.notReloaded") is True
    shot(ho_page, "day-book")

    # amend and cancel at the branch; the head office sees both
    fill_voucher(br_page, "payment", "2026-04-06", "Shop rent", [("Dr", "Rent", "9,000"), ("Cr", "Cash", "9,000")])
    br_page.click("#voucher-submit")
    rent = br_page.locator("#voucher-list tr", has_text="Shop rent")
    rent.locator("button", has_text="Amend").click()
    expect(br_page.locator("#voucher-form h3")).to_contain_text("Amend BR1/PMT/")
    for i in (0, 1):
        br_page.locator("#voucher-form tbody tr").nth(i).locator(".line-amount").fill("900")
    br_page.click("#voucher-submit")
    expect(rent).to_contain_text("amended")
    expect(rent).to_contain_text("900.00")
    sale = br_page.locator("#voucher-list tr", has_text="Counter sale")
    sale.locator("button", has_text="Cancel").click()
    br_page.fill("#cancel-reason", "entered at the wrong branch")
    br_page.click("#cancel-submit")
    expect(sale).to_contain_text("cancelled")
    shot(br_page, "vouchers")
    expect(ho_page.locator("#day-book")).to_contain_text("Shop rent")
    expect(ho_page.locator("#day-book tr", has_text="Counter sale")).to_contain_text("(cancelled)")
    screen(ho_page, "trial")
    expect(ho_page.locator("#trial-balance tr.total")).to_contain_text("900.00")
    shot(ho_page, "trial-balance")
    screen(ho_page, "balance")
    expect(ho_page.locator("#balance-sheet")).to_contain_text("Profit & Loss A/c")
    shot(ho_page, "balance-sheet")
    screen(ho_page, "ledger")
    ho_page.select_option("#report-ledger", "Cash")
    expect(ho_page.locator("#ledger-statement")).to_contain_text("900.00 Cr")
    shot(ho_page, "ledger")

    # the sync-after date: set at the head office, shown at the branch
    screen(br_page, "settings")
    expect(br_page.locator("#sync-after")).to_have_text("(no date)")
    screen(ho_page, "settings")
    ho_page.fill("#sync-after", "2026-04-01")
    ho_page.click("#apply")
    shot(ho_page, "settings")
    expect(br_page.locator("#sync-after")).to_have_text("2026-04-01")
    expect(br_page.locator("#file-type")).to_have_text("Branch Office")
    shot(br_page, "settings-branch")

    # status: the branch online, then offline once it stops
    screen(ho_page, "status")
    branch_row = ho_page.locator("#peers tr[data-office=BR1]")
    expect(branch_row.locator(".status")).to_have_text("Online")
    expect(branch_row).not_to_contain_text("never")
    shot(ho_page, "status")
    ho_page.click("#restart")
    expect(ho_page.locator(".notice")).to_have_text("Restarted every link.")
    expect(branch_row.locator(".status")).to_have_text("Online")  # the branch links again
    br.stop()
    expect(branch_row.locator(".status")).to_have_text("Offline")
    assert ho_page.evaluate("window.notReloaded") is True
    assert ho_page.errors == [] and br_page.errors == []


def today_in(zone: str) -> str:
    return dt.datetime.now(ZoneInfo(zone)).date().isoformat()


def test_a_branch_dashboard_offers_what_the_branch_may_do_in_its_own_time(tmp_path: Path, fleet: Fleet,
                                                                            browser: Any) -> None:
    """Amend and Cancel only on the branch's own vouchers; no ledger group chosen for the user; the
    voucher date is the computer's date, not the UTC date (between them, the two zones below differ
    from UTC's date at every hour of the day); counts in vouchers and times the office's way."""
    from playwright.sync_api import expect

    ho_home, br_home = make_org(tmp_path, ("BR1",))
    ho = fleet.start(ho_home)
    theirs = post_here(ho_home, "receipt", "2026-04-01", "Cash", "Sales", "10.00", "posted at HO")
    br = fleet.start(br_home, peers=(ho.url,), dashboard=True)
    mine = post_here(br_home, "receipt", "2026-04-02", "Cash", "Sales", "20.00", "posted at BR1")
    wait_converged(ho_home, br_home)

    page = open_page(browser, br.dashboard_url)
    screen(page, "vouchers")
    expect(page.locator(f"#voucher-list tr[data-number='{mine}'] button")).to_have_count(2)
    expect(page.locator(f"#voucher-list tr[data-number='{theirs}'] td").first).to_have_text("01-04-2026")
    expect(page.locator(f"#voucher-list tr[data-number='{theirs}'] button")).to_have_count(0)
    expect(page.locator("#voucher-date")).to_have_value(today_in("Asia/Kolkata"))
    screen(page, "ledger")
    expect(page.locator("#ledger-group option").nth(1)).to_be_attached()
    assert page.locator("#ledger-group").input_value() == ""
    screen(page, "status")
    head_row = page.locator("#peers tr[data-office=HO]")
    expect(head_row.locator("td").nth(6)).to_have_text("1")  # received: one voucher (HO's)
    expect(page.locator("#sync-log th").first).to_have_text("At")
    expect(page.locator("#sync-log tbody td").first).to_have_text(re.compile(r"^\d\d-\d\d-\d{4} \d\d:\d\d:\d\d$"))
    assert not page.errors
    page.context.close()

    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11
        address = cli(br_home, "dashboard").stdout.removeprefix("Dashboard: ").strip()
        there = open_page(browser, address, zone)
        screen(there, "vouchers")
        expect(there.locator("#voucher-date")).to_have_value(today_in(zone))
        there.context.close()


def test_a_conflict_shows_each_version_and_why_one_won(tmp_path: Path, fleet: Fleet, browser: Any) -> None:
    """The head office cancels a branch voucher while the branch amends it: the Status screen lists the
    voucher with both versions (action, office, amount, narration or reason), which one is current and
    why, instead of two revision ids."""
    ho_home, br_home = make_org(tmp_path, ("BR1",))
    number = post_here(br_home, "payment", "2026-04-05", "Rent", "Cash", "500.00", "shop rent")
    exchange(ho_home, br_home)
    here(ho_home, "voucher", "cancel", number, "--reason", "paid twice")
    here(br_home, "voucher", "amend", number, "--date", "2026-04-05", "--dr", "Rent=450", "--cr", "Cash=450",
         "--narration", "rent, corrected")
    exchange(ho_home, br_home)
    ho = fleet.start(ho_home, dashboard=True)
    page = open_page(browser, ho.dashboard_url)
    screen(page, "status")
    from playwright.sync_api import expect

    conflict = page.locator(f"#conflicts .conflict[data-number='{number}']")
    expect(conflict).to_contain_text("a cancellation always wins over an amendment")
    rows = conflict.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("current")
    expect(rows.nth(0)).to_contain_text("cancel")
    expect(rows.nth(0)).to_contain_text("paid twice")
    expect(rows.nth(1)).to_contain_text("lost")
    expect(rows.nth(1)).to_contain_text("BR1")
    expect(rows.nth(1)).to_contain_text("450.00")
    expect(rows.nth(1)).to_contain_text("rent, corrected")
    assert not page.errors


def _cancelled_while_amended(ho_home: Path, br_home: Path, amount: str, narration: str) -> str:
    """A BR1 voucher cancelled at the head office while BR1 amends it; both offices hold both."""
    number = post_here(br_home, "payment", "2026-04-05", "Rent", "Cash", "500.00", narration)
    exchange(ho_home, br_home)
    here(ho_home, "voucher", "cancel", number, "--reason", "paid twice")
    here(br_home, "voucher", "amend", number, "--date", "2026-04-05", "--dr", f"Rent={amount}", "--cr",
         f"Cash={amount}", "--narration", f"{narration}, corrected")
    exchange(ho_home, br_home)
    return number


def test_a_branch_settles_its_conflicts_from_the_status_screen(tmp_path: Path, fleet: Fleet, browser: Any) -> None:
    """Two of BR1's vouchers were cancelled at the head office while BR1 amended them. At BR1 one
    keeps its cancellation, the other comes back as a new voucher; the conflict list empties and the
    vouchers show what happened. The head office may keep the cancellation but cannot put a branch's
    voucher back in the branch's series, so it is offered that only."""
    from playwright.sync_api import expect

    from p2psync.node import views

    ho_home, br_home = make_org(tmp_path, ("BR1",))
    kept = _cancelled_while_amended(ho_home, br_home, "450", "shop rent")
    restored = _cancelled_while_amended(ho_home, br_home, "320", "godown rent")
    head = Node.open(ho_home)
    try:
        assert {tuple(v["settle"] for v in c["versions"]) for c in views.conflicts(head)} == {
            ("keep-cancellation", None)}
    finally:
        head.close()

    br = fleet.start(br_home, dashboard=True)
    page = open_page(browser, br.dashboard_url)
    screen(page, "status")
    first = page.locator(f"#conflicts .conflict[data-number='{kept}']")
    first.locator("button", has_text="Keep the cancellation").click()
    expect(page.locator("#settle-notice")).to_have_text(f"Settled {kept}: it stays cancelled.")
    expect(first).to_have_count(0)
    second = page.locator(f"#conflicts .conflict[data-number='{restored}']")
    expect(second.locator("button")).to_have_count(2)  # keep the cancellation, or restore the amendment
    amendment = second.locator("tr", has_text="godown rent, corrected")
    amendment.locator("button", has_text="Restore as a new voucher").click()
    expect(page.locator("#settle-notice")).to_contain_text("Posted BR1/PMT/")
    expect(page.locator("#conflicts")).to_have_text("No conflicts.")

    screen(page, "vouchers")
    status_of = 6  # the Status column: cancelled, conflict, amended or empty
    for number in (kept, restored):
        expect(page.locator(f"#voucher-list tr[data-number='{number}'] td").nth(status_of)).to_have_text("cancelled")
    comeback = page.locator("#voucher-list tr", has_text=f"restores {restored}")
    expect(comeback).to_contain_text("320.00")
    expect(comeback.locator("td").nth(status_of)).to_have_text("")
    expect(comeback.locator("button")).to_have_count(2)  # a voucher of its own again: Amend, Cancel
    assert not page.errors


def test_a_revoked_branch_says_so_first_and_what_to_do(tmp_path: Path, fleet: Fleet, browser: Any) -> None:
    from playwright.sync_api import expect

    from p2psync.node import registrar

    ho_home, br_home = make_org(tmp_path, ("BR1",))
    head, branch = Node.open(ho_home), Node.open(br_home)
    try:
        registrar.revoke(head, "BR1")
        branch.adopt_policy(head.policy_blob())
    finally:
        head.close()
        branch.close()
    br = fleet.start(br_home, dashboard=True)
    page = open_page(browser, br.dashboard_url)
    screen(page, "status")
    notice = page.locator("#status-body > div > :first-child")
    expect(notice).to_have_id("revoked")
    expect(notice).to_contain_text("This node was revoked by the head office")
    expect(notice).to_contain_text("'p2psync invite BR1'")
    expect(notice).to_contain_text("('p2psync join CODE') in a new, empty home")
    assert not page.errors


class HeldFirstSync(NodeRuntime):
    """A runtime that takes a peer's first batch of entries and holds the next until `release` is set:
    a first sync stopped part way, for as long as the test looks at it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.batches = 0

    async def receive(self, blobs: list[bytes], docs: list[str]) -> tuple[int, int, Any]:
        self.batches += 1
        if self.batches > 1:
            await self.release.wait()
        return await super().receive(blobs, docs)


async def released(runtime: HeldFirstSync) -> None:
    runtime.release.set()


@contextmanager
def dashboard_here(runtime: NodeRuntime) -> Iterator[tuple[str, Callable[[Any], Any]]]:
    """`runtime` and a dashboard over it in an event loop of their own on a thread (the browser's
    driver has this thread's): the sign-in address, and a function running a coroutine there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(WAIT_MS / 1000)

    async def no_setup(_node: Node) -> NodeRuntime:
        raise AssertionError("the office is set up")

    async def start() -> tuple[DashboardServer, str]:
        await runtime.start()
        dashboard = Dashboard(runtime.node.home, no_setup)
        dashboard.attach(runtime)
        server = DashboardServer(dashboard, "127.0.0.1", 0)
        return server, await server.start()

    server, url = run(start())
    try:
        yield url, run
    finally:
        run(server.stop())
        run(runtime.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_a_first_sync_shows_its_progress_in_percent_and_vouchers(tmp_path: Path, fleet: Fleet, browser: Any) -> None:
    """BR1's first sync of more entries than one batch holds, stopped after the first batch: its page
    shows the percent and vouchers that status reports, and Online once the rest arrives."""
    from playwright.sync_api import expect

    ho_home, br_home = make_org(tmp_path, ("BR1",))
    post_many(ho_home, 520)
    head = fleet.start(ho_home)
    node = Node.open(br_home)
    runtime = HeldFirstSync(node, host="127.0.0.1", port=0, peers=(head.url,), mdns=False)
    try:
        with dashboard_here(runtime) as (url, run):
            page = open_page(browser, url)
            screen(page, "status")
            shown = page.locator("#peers tr[data-office=HO] .status")
            expect(shown).to_have_text(re.compile(r"^Receiving \d+% \([\d,]+ vouchers\)$"))
            (peer,) = [p for p in run(runtime.status())["peers"] if p["office"] == "HO"]
            progress = peer["progress"]
            assert 0 < progress["percent"] < 100 and 0 < progress["vouchers"] < 520, progress
            expect(shown).to_have_text(f"Receiving {progress['percent']}% ({progress['vouchers']:,} vouchers)")
            run(released(runtime))
            expect(shown).to_have_text("Online")
            assert not page.errors
    finally:
        node.close()
