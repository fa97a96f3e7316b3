// The office dashboard. Every rule lives in the node: this page sends what was typed and shows
// what the node answers, including its refusals, word for word.

import { ApiError, get, post } from "./api.js";
import { balance, field, h, localDate, money, setDateFormat, table, today, when } from "./dom.js";

const app = { state: null, status: null, screen: null, offices: [], ledgers: [] };
const typeLabel = value => app.state.voucher_types.find(t => t.value === value)?.label || value;

const SCREENS = {
  status: { title: "Status", build: statusScreen },
  vouchers: { title: "Vouchers", build: vouchersScreen },
  daybook: { title: "Day book", build: () => reportScreen("day-book") },
  ledger: { title: "Ledger", build: () => reportScreen("ledger") },
  trial: { title: "Trial balance", build: () => reportScreen("trial-balance") },
  balance: { title: "Balance sheet", build: () => reportScreen("balance-sheet") },
  pl: { title: "Profit & loss", build: () => reportScreen("profit-loss") },
  interoffice: { title: "Inter-office", build: interOfficeScreen },
  audit: { title: "Audit trail", build: auditScreen },
  settings: { title: "Sync settings", build: settingsScreen },
  registration: { title: "Registration", build: registrationScreen },
};

// ---------------------------------------------------------------- shell

async function start() {
  app.state = await get("/api/state");
  setDateFormat(app.state.date_format);
  listen();
  if (!app.state.ready) return show(setupScreen());
  const id = app.state.identity;
  document.getElementById("office").textContent =
    `${id.company} · ${id.office} (${id.file_type}) · Registration ID ${id.registration_id}`;
  document.title = `${id.office} · ${id.company} · p2psync`;
  const nav = document.getElementById("nav");
  nav.replaceChildren(...Object.entries(SCREENS).map(([key, s]) =>
    h("button", { "data-screen": key, onclick: () => { location.hash = key; } }, s.title)));
  window.addEventListener("hashchange", route);
  await route();
}

async function route() {
  const key = SCREENS[location.hash.slice(1)] ? location.hash.slice(1) : "status";
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.screen === key);
  await Promise.all([loadOffices(), loadLedgers()]);
  show(SCREENS[key].build());
}

function show(screen) {
  app.screen = screen;
  document.getElementById("main").replaceChildren(screen.element);
  screen.refresh?.();
}

function listen() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  events.onerror = () => { live.textContent = "node not reachable"; live.className = "live off"; };
  events.addEventListener("state", () => {
    if (app.state && !app.state.ready) location.reload();
  });
  events.addEventListener("books", async () => {
    await Promise.all([loadOffices(), loadLedgers()]);
    app.screen?.refresh?.();
  });
  events.addEventListener("status", event => {
    app.status = JSON.parse(event.data);
    app.screen?.onStatus?.(app.status);
  });
}

async function loadOffices() { app.offices = await get("/api/offices"); }
async function loadLedgers() {
  app.ledgers = await get("/api/ledgers");
  let list = document.getElementById("ledger-names");
  if (!list) document.body.append(list = h("datalist", { id: "ledger-names" }));
  list.replaceChildren(...app.ledgers.map(l => h("option", { value: l.name })));
}

// A button's action: shows the node's answer (or refusal) in `box`, never throws.
async function act(box, action, done = "") {
  box.replaceChildren();
  try {
    const result = await action();
    if (done) box.replaceChildren(h("div", { class: "notice" }, typeof done === "function" ? done(result) : done));
    return result;
  } catch (error) {
    box.replaceChildren(h("div", { class: "error", role: "alert" },
      error instanceof ApiError ? error.message : `cannot reach the node: ${error.message}`));
    return undefined;
  }
}

function officeSelect(id, withConsolidated = true) {
  return h("select", { id },
    withConsolidated ? h("option", { value: "" }, "Consolidated") : null,
    app.offices.map(o => h("option", { value: o.code }, `${o.code} - ${o.name}`)));
}

// ---------------------------------------------------------------- setting up

function setupScreen() {
  const headBox = h("div"), joinBox = h("div");
  const company = h("input", { id: "setup-company" }), code = h("input", { id: "setup-office", value: "HO" });
  const name = h("input", { id: "setup-name", value: "Head Office" });
  const openBooks = h("input", { type: "checkbox", id: "setup-open-books" });  // else the default read scopes
  const invite = h("input", { id: "join-code", autocomplete: "off" }), via = h("input", { id: "join-via", placeholder: "wss://HOST:8470 (blank: find it on the LAN)" });
  const element = h("div", {},
    h("h2", {}, "Set up this office"),
    h("div", { class: "cards" },
      h("section", { class: "card" }, h("h3", {}, "Head office: create the organisation"),
        field("Company name", company), field("Office code", code), field("Office name", name),
        field("Every office reads every office's books (else each branch reads only its own)", openBooks),
        h("div", { class: "actions" }, h("button", { class: "primary", id: "create-head", onclick: () =>
          act(headBox, () => post("/api/setup/head", { company: company.value, office: code.value, name: name.value,
            open_books: openBooks.checked }),
            r => `Created ${r.company}. Registration ID ${r.registration_id}.`) }, "Create")), headBox),
      h("section", { class: "card" }, h("h3", {}, "Branch office: join with a one-time code"),
        field("One-time code from the head office", invite), field("Head office address", via),
        h("div", { class: "actions" }, h("button", { class: "primary", id: "join", onclick: () =>
          act(joinBox, () => post("/api/setup/join", { code: invite.value, via: via.value || null }),
            r => `Joined ${r.company} as ${r.office}. Registration ID ${r.registration_id}.`) }, "Join")), joinBox)));
  return { element };
}

// ---------------------------------------------------------------- status

function statusScreen() {
  const box = h("div"), body = h("div", { id: "status-body" }), settleBox = h("div", { id: "settle-notice" });
  const element = h("div", {}, h("h2", {}, "Status"),
    h("div", { class: "actions" },
      h("button", { class: "primary", id: "sync-now", onclick: () => act(box, () => post("/api/sync"), r => r.message) }, "Sync now"),
      h("button", { class: "plain", id: "restart", onclick: () => act(box, () => post("/api/restart"), r => r.message) }, "Restart")),
    box, body);
  const render = async data => {
    const conflicts = await get("/api/conflicts");
    const node = data.node;
    body.replaceChildren(h("div", {},
      node.revoked ? h("p", { class: "error", id: "revoked" }, node.revoked_notice) : null, // first: nothing else works
      node.catching_up ? h("p", { class: "error", id: "catching-up" }, node.catching_up_notice) : null,
      h("p", {}, `Node ${node.running ? "running" : "not running"} in ${node.mode} mode`,
        node.mode === "auto" ? `, full reconcile every ${node.interval_minutes} min` : "",
        `. Policy version ${node.policy_version}, sync after ${node.sync_after || "(no date)"}`,
        node.lock_until ? `, books locked up to ${node.lock_until}.` : "."),
      h("h3", {}, "Peers and relays"),
      table(["Address", "Kind", "Office", "Status", "Last sync", "Sent (vouchers)", "Received (vouchers)", "Backlog", "Last error"],
        data.peers.map(p => h("tr", { "data-office": p.office, "data-peer": p.peer },
          h("td", { title: p.peer }, p.address || p.peer.slice(0, 16)), h("td", {}, p.kind), h("td", {}, p.office),
          h("td", { class: p.online ? "online status" : "offline status" }, linkStatus(p)),
          h("td", {}, when(p.last_sync)), h("td", { class: "num" }, p.sent_vouchers),
          h("td", { class: "num" }, p.received_vouchers), h("td", { class: "num" }, p.backlog),
          h("td", { class: "last-error", title: p.last_error_detail || null }, p.last_error))),
        { id: "peers", empty: "No peer or relay yet." }),
      data.waiting_entries ? h("p", {}, `${data.waiting_entries} received entries wait for earlier ones.`) : null,
      h("h3", {}, "Failed to import (quarantine)"),
      table(["Received", "Document", "Author", "Seq", "Reason"],
        data.quarantined.map(q => [when(q.at), q.document, String(q.author).slice(0, 16), q.seq, q.reason]),
        { id: "quarantine", empty: "Nothing refused." }),
      h("h3", {}, "Conflicts"),
      settleBox,
      conflictList(conflicts, settleBox, async () => render(await get("/api/status"))),
      h("h3", {}, "Sync log"),
      table(["At", "Peer", "Office", "Direction", "Vouchers"],
        data.sync_log.map(r => [when(r.at), r.peer.slice(0, 24), r.office, r.direction, r.vouchers]),
        { id: "sync-log", numeric: [4], empty: "Nothing exchanged yet." })));
  };
  return {
    element,
    refresh: async () => render(app.status || await get("/api/status")),
    onStatus: render,
  };
}

// Each conflict as an accountant compares it: a voucher's standing versions (what, where, when, how
// much), which one is current and why; ledger and group clashes by name. Where this office may settle
// a voucher's conflict, each version it may keep has a button (`p2psync conflicts resolve`); the node
// decides which (`settle` of each version), so a branch is offered nothing on another office's voucher.
function conflictList(conflicts, box, settled) {
  if (!conflicts.length) return h("p", { id: "conflicts", class: "muted" }, "No conflicts.");
  const vouchers = new Map(conflicts.filter(c => c.kind === "voucher").map(c => [c.number, c])); // one per voucher
  return h("div", { id: "conflicts" },
    ...conflicts.filter(c => c.kind !== "voucher").map(c =>
      h("p", { class: "conflict" }, `${c.kind} ${c.subject}: ${c.winner} is in force; ${c.loser} is kept apart.`)),
    ...[...vouchers.values()].map(c => h("div", { class: "conflict", "data-number": c.number },
      h("p", {}, `Voucher ${c.number}: ${c.why ? "kept version wins because " + c.why : "versions stand side by side"}.`),
      table(["", "Action", "Office", "Made", "Date", "Amount", "Narration or reason", ""],
        c.versions.map(v => h("tr", { "data-revision": v.revision },
          ...[v.current ? "current" : "lost", v.action, v.made_at_office, when(v.at), localDate(v.date)].map(t => h("td", {}, t)),
          h("td", { class: "num" }, money(v.amount, false)), h("td", {}, v.reason || v.narration),
          h("td", {}, settleButton(c, v, box, settled))))))));
}

// The button that keeps version `v` of conflicted voucher `c`, if this office may.
function settleButton(c, v, box, settled) {
  if (!v.settle) return null;
  const cancelled = c.versions.some(x => x.current && x.action === "cancel");
  const label = v.settle === "keep-cancellation" ? "Keep the cancellation"
    : cancelled ? "Restore as a new voucher" : "Keep this version";
  const body = { number: c.number, keep: v.settle, version: v.settle === "restore" ? v.revision : undefined };
  return h("button", { class: "plain small settle", onclick: async () => {
    if (await act(box, () => post("/api/conflicts/settle", body), settledText)) settled();
  } }, label);
}

// What settling made, in the words `p2psync conflicts resolve` prints.
function settledText(result) {
  return result.made.map(r => r.action === "post" ? `Posted ${r.number}: ${r.narration}.`
    : r.action === "cancel" ? `Settled ${result.number}: it stays cancelled.`
    : `Settled ${result.number}: the chosen version is its current one.`).join(" ");
}

// Online or Offline; while a first sync runs, how far it is (of the entries the peer had that this
// office lacked, with the vouchers received so far).
function linkStatus(p) {
  if (p.progress) return `Receiving ${p.progress.percent}% (${p.progress.vouchers.toLocaleString("en-IN")} vouchers)`;
  return p.online ? "Online" : "Offline";
}

// ---------------------------------------------------------------- vouchers

// Whether this office may amend or cancel a voucher: its own office's, or any at the head office
// (the node checks it again; the page only offers what will be accepted).
function mayChange(v) {
  const id = app.state.identity;
  return id.role === "head" || v.office === id.office;
}

function vouchersScreen() {
  const box = h("div"), list = h("div"), cancelBox = h("div");
  const filter = officeSelect("voucher-office");
  const form = voucherForm(box);
  const element = h("div", {}, h("h2", {}, "Vouchers"), form.element, cancelBox,
    h("h3", {}, "Vouchers"), h("div", { class: "row filters" }, field("Office", filter)), list);
  const refresh = async () => {
    const rows = await get("/api/vouchers", { office: filter.value });
    list.replaceChildren(table(["Date", "Number", "Type", "Office", "Narration", "Amount", "Status", ""],
      rows.map(v => h("tr", { class: v.cancelled ? "cancelled" : null, "data-number": v.number },
        h("td", {}, localDate(v.date)), h("td", {}, v.number), h("td", {}, typeLabel(v.type)), h("td", {}, v.office), h("td", {}, v.narration),
        h("td", { class: "num" }, money(v.amount)),
        h("td", {}, v.cancelled ? "cancelled" : v.conflicts ? "conflict" : v.revisions > 1 ? "amended" : ""),
        h("td", {}, v.cancelled || !mayChange(v) ? null : [
          h("button", { class: "plain small", onclick: () => form.amend(v.number) }, "Amend"), " ",
          h("button", { class: "plain small", onclick: () => cancelForm(cancelBox, v.number) }, "Cancel")]))),
      { id: "voucher-list", numeric: [5], empty: "No vouchers yet." }));
  };
  filter.addEventListener("change", refresh);
  return { element, refresh };
}

// Every change to the books, read-only: the node's audit trail (`p2psync report audit-trail`), which
// cannot be switched off.
function auditScreen() {
  const list = h("div"), filter = officeSelect("audit-office");
  const element = h("div", {}, h("h2", {}, "Audit trail"),
    h("p", { class: "muted" }, "Every post, amendment and cancellation, and every masters record, as signed by the machine that made it. It is always kept."),
    h("div", { class: "row filters" }, field("Office", filter)), list);
  const refresh = async () => {
    const data = await get("/api/audit-trail", { office: filter.value });
    list.replaceChildren(table(["When", "Office", "Node", "Record", "Action", "Subject", "Particulars"],
      data.rows.map(r => h("tr", { "data-subject": r.subject, "data-action": r.action },
        h("td", {}, when(r.at)), h("td", {}, r.office), h("td", { title: r.node }, r.node.slice(0, 8)),
        h("td", {}, r.record), h("td", {}, r.action), h("td", {}, r.subject), h("td", {}, r.summary))),
      { id: "audit-trail", empty: "No changes yet." }));
  };
  filter.addEventListener("change", refresh);
  return { element, refresh };
}

// Other offices' vouchers against this office's @ accounts (accept or dispute each), and the
// reconciliation of every pair of offices: `inter-office list` and `report inter-office`.
function interOfficeScreen() {
  const box = h("div"), waiting = h("div"), pairs = h("div"), filter = officeSelect("io-office");
  const element = h("div", {}, h("h2", {}, "Inter-office"),
    h("p", { class: "muted" }, "Accepting posts the counterpart into this office's own books with its own number; disputing records why not. Neither touches the other office's books."),
    box, h("h3", {}, "Waiting for this office"), waiting,
    h("h3", {}, "Reconciliation"), h("div", { class: "row filters" }, field("Office", filter)), pairs);
  const accept = async item => {
    if (await act(box, () => post("/api/inter-office/accept", { ref: item.ref }), r => `Accepted ${item.ref} as ${r.number}`)) refresh();
  };
  const dispute = async item => {
    const reason = prompt(`Why does this office dispute ${item.ref}?`);
    if (reason && await act(box, () => post("/api/inter-office/dispute", { ref: item.ref, reason }), `Disputed ${item.ref}`)) refresh();
  };
  const why = i => i.status === "pending" ? `${i.age_days} days old` : i.status === "disputed" ? i.reason
    : `${i.why}${i.counterpart ? ` (mirror ${i.counterpart})` : ""}`;
  const refresh = async () => {
    const data = await get("/api/inter-office", { office: filter.value });
    waiting.replaceChildren(table(["Ref", "From", "Date", "Amount", "Their side", "Status", "Particulars", ""],
      data.counterparts.map(i => h("tr", { "data-ref": i.ref, "data-status": i.status },
        h("td", {}, i.ref), h("td", {}, i.office), h("td", {}, localDate(i.date)), h("td", { class: "num" }, money(i.amount)),
        h("td", {}, i.side), h("td", {}, i.status), h("td", {}, why(i)),
        h("td", {}, i.status === "pending" && i.other === data.office ? [
          h("button", { class: "small accept", onclick: () => accept(i) }, "Accept"),
          h("button", { class: "plain small dispute", onclick: () => dispute(i) }, "Dispute")] : null))),
      { id: "io-counterparts", numeric: [3], empty: "Nothing waiting: every counterpart is accepted or disputed." }));
    pairs.replaceChildren(...data.reconciliation.pairs.map(p => {
      const [a, b] = p.offices;
      return h("div", { class: "io-pair", "data-pair": `${a}-${b}` },
        h("h4", {}, `${a} / ${b}: ${a}'s @${b} `, balance(p.balances[a]), ` · ${b}'s @${a} `, balance(p.balances[b])),
        table(["Status", "Office", "Ref", "Date", "Amount", "Counterpart", "Particulars"],
          p.items.map(i => h("tr", { "data-ref": i.ref, "data-status": i.status },
            h("td", {}, i.status), h("td", {}, i.office), h("td", {}, i.ref), h("td", {}, localDate(i.date)),
            h("td", { class: "num" }, money(i.amount)), h("td", {}, i.counterpart || ""),
            h("td", {}, i.status === "in transit" ? `${i.age_days} days ${i.why}` : (i.reason || i.why)))),
          { numeric: [4] }),
        h("p", { class: "muted" }, Object.entries(p.totals).map(([s, v]) => `${s} ${money(v, false)}`).join(" · ")));
    }));
    if (!data.reconciliation.pairs.length) pairs.replaceChildren(h("p", { class: "muted" }, "No inter-office traffic."));
  };
  filter.addEventListener("change", refresh);
  return { element, refresh };
}

function voucherForm(box) {
  const kind = h("select", { id: "voucher-type" }, app.state.voucher_types.map(t => h("option", { value: t.value }, t.label)));
  const date = h("input", { id: "voucher-date", type: "date", value: today() });
  const narration = h("input", { id: "voucher-narration" });
  const rows = h("tbody");
  const title = h("h3", {}, "Post a voucher");
  let amending = null;
  const addLine = (side = "Dr", ledger = "", amount = "") => rows.append(h("tr", {},
    h("td", {}, h("select", { class: "line-side" }, ["Dr", "Cr"].map(s => h("option", { value: s, selected: s === side }, s)))),
    h("td", {}, h("input", { class: "line-ledger", list: "ledger-names", value: ledger })),
    h("td", {}, h("input", { class: "line-amount", inputmode: "decimal", value: amount })),
    h("td", {}, h("button", { class: "plain small", onclick: e => e.target.closest("tr").remove() }, "×"))));
  const reset = () => {
    amending = null; title.textContent = "Post a voucher"; submit.textContent = "Post";
    kind.disabled = false; narration.value = ""; rows.replaceChildren(); addLine("Dr"); addLine("Cr");
  };
  const lines = () => [...rows.querySelectorAll("tr")].map(tr => ({
    side: tr.querySelector(".line-side").value, ledger: tr.querySelector(".line-ledger").value,
    amount: tr.querySelector(".line-amount").value })).filter(l => l.ledger || l.amount);
  const submit = h("button", { class: "primary", id: "voucher-submit", onclick: async () => {
    const body = { type: kind.value, date: date.value, narration: narration.value, lines: lines() };
    const rev = await act(box, () => amending ? post("/api/vouchers/amend", { ...body, number: amending })
      : post("/api/vouchers", body), r => `${amending ? "Amended" : "Posted"} ${r.number}`);
    if (rev) { reset(); app.screen?.refresh?.(); }
  } }, "Post");
  const element = h("section", { class: "card", id: "voucher-form" }, title,
    h("div", { class: "row" }, field("Type", kind), field("Date", date), h("div", { class: "grow" }, field("Narration", narration))),
    h("table", { class: "lines" }, h("thead", {}, h("tr", {}, h("th", {}, "Dr/Cr"), h("th", {}, "Ledger"), h("th", {}, "Amount"), h("th"))), rows),
    h("div", { class: "actions" }, h("button", { class: "plain", id: "add-line", onclick: () => addLine("Cr") }, "Add line"),
      submit, h("button", { class: "plain", onclick: () => { box.replaceChildren(); reset(); } }, "Clear")), box);
  reset();
  return {
    element,
    amend: async number => {
      const data = await act(box, () => get("/api/voucher", { number }));
      if (!data) return;
      const cur = data.current;
      amending = cur.number; title.textContent = `Amend ${cur.number}`; submit.textContent = "Amend";
      kind.value = cur.type; kind.disabled = true; date.value = cur.date; narration.value = cur.narration;
      rows.replaceChildren(); cur.lines.forEach(l => addLine(l.side, l.ledger, l.amount));
      element.scrollIntoView();
    },
  };
}

function cancelForm(box, number) {
  const reason = h("input", { id: "cancel-reason" }), answer = h("div");
  box.replaceChildren(h("section", { class: "card" }, h("h3", {}, `Cancel ${number}`),
    field("Reason (kept with the voucher)", reason),
    h("div", { class: "actions" },
      h("button", { class: "primary", id: "cancel-submit", onclick: async () => {
        const rev = await act(answer, () => post("/api/vouchers/cancel", { number, reason: reason.value }));
        if (rev) { box.replaceChildren(h("div", { class: "notice" }, `Cancelled ${rev.number}`)); app.screen?.refresh?.(); }
      } }, "Cancel voucher"),
      h("button", { class: "plain", onclick: () => box.replaceChildren() }, "Keep it")), answer));
  reason.focus();
}

// ---------------------------------------------------------------- reports

function reportScreen(kind) {
  const office = officeSelect("report-office");
  const from = h("input", { id: "report-from", type: "date" }), to = h("input", { id: "report-to", type: "date" });
  const ledger = h("select", { id: "report-ledger" }, app.ledgers.map(l => h("option", { value: l.name }, l.name)));
  const box = h("div"), body = h("div", { id: "report" });
  const filters = h("div", { class: "row filters" }, field("Office", office),
    kind === "ledger" ? field("Ledger", ledger) : null,
    ["trial-balance", "balance-sheet"].includes(kind) ? null : field("From", from), field(kind.includes("balance") ? "As on" : "To", to));
  const element = h("div", {}, h("h2", {}, SCREENS[location.hash.slice(1)]?.title || kind), filters, box, body,
    kind === "ledger" ? ledgerForm() : null);
  const refresh = async () => {
    if (kind === "ledger") {  // a ledger made here or at another office joins the choice
      const chosen = ledger.value;
      ledger.replaceChildren(...app.ledgers.map(l => h("option", { value: l.name }, l.name)));
      if (chosen) ledger.value = chosen;
    }
    const data = await act(box, () => get(`/api/reports/${kind}`, { office: office.value, from: from.value, to: to.value,
      ledger: kind === "ledger" ? ledger.value : "" }));
    if (data) body.replaceChildren(h("p", { class: "muted" }, `Scope: ${data.scope}`), REPORTS[kind](data));
  };
  for (const input of [office, from, to, ledger]) input.addEventListener("change", refresh);
  return { element, refresh };
}

// Ledger creation: name, group, and this office's opening balance ("50000" debit, "50000 Cr" credit).
function ledgerForm() {
  const box = h("div"), name = h("input", { id: "ledger-name" }), opening = h("input", { id: "ledger-opening", placeholder: "e.g. 50,000 or 50,000 Cr" });
  const group = h("select", { id: "ledger-group" });
  // No group is chosen for the user (the first in the list would be a rare one): they pick it.
  get("/api/groups").then(groups => group.replaceChildren(h("option", { value: "", selected: true }, "Choose a group"),
    ...groups.map(g => h("option", { value: g.name }, `${g.name} (${g.nature})`))));
  return h("section", { class: "card", id: "ledger-form" }, h("h3", {}, "Create a ledger"),
    h("div", { class: "row" }, h("div", { class: "grow" }, field("Name", name)), field("Under group", group), field("Opening balance here", opening)),
    h("div", { class: "actions" }, h("button", { class: "primary", id: "add-ledger", onclick: async () => {
      const made = await act(box, () => post("/api/ledgers", { name: name.value, group: group.value, opening: opening.value }),
        r => `Created ledger ${r.name} under ${r.group}`);
      if (made) { name.value = opening.value = ""; await loadLedgers(); }
    } }, "Create")), box);
}

const REPORTS = {
  "day-book": data => table(["Date", "Number", "Type", "Office", "Particulars", "Debit", "Credit"],
    data.rows.flatMap(v => [
      h("tr", { class: v.cancelled ? "cancelled" : null, "data-number": v.number },
        h("td", {}, localDate(v.date)), h("td", {}, v.number), h("td", {}, typeLabel(v.type) + (v.cancelled ? " (cancelled)" : "")),
        h("td", {}, v.office), h("td", {}, v.narration), h("td"), h("td")),
      ...v.lines.map(l => h("tr", { class: "sub" }, h("td"), h("td"), h("td"), h("td"), h("td", {}, l.ledger),
        h("td", { class: "num" }, money(l.debit)), h("td", { class: "num" }, money(l.credit))))]),
    { id: "day-book", empty: "No vouchers in this period." }),
  "ledger": data => table(["Date", "Number", "Office", "Narration", "Debit", "Credit", "Balance"], [
    ["", "", "", "Opening balance", "", "", balance(data.opening)],
    ...data.rows.map(r => [r.date, r.number, r.office, r.narration, money(r.debit), money(r.credit), balance(r.balance)]),
    h("tr", { class: "total" }, h("td"), h("td"), h("td"), h("td", {}, "Closing balance"), h("td"), h("td"),
      h("td", { class: "num" }, balance(data.closing)))], { id: "ledger-statement", numeric: [4, 5, 6] }),
  "trial-balance": data => table(["Ledger", "Group", "Debit", "Credit"], [
    ...data.rows.map(r => [r.ledger, r.group, money(r.debit), money(r.credit)]),
    h("tr", { class: "total" }, h("td", {}, "Total"), h("td"), h("td", { class: "num" }, money(data.total.debit, false)),
      h("td", { class: "num" }, money(data.total.credit, false)))], { id: "trial-balance", numeric: [2, 3] }),
  "balance-sheet": data => {
    const n = Math.max(data.liabilities.length, data.assets.length);
    const rows = Array.from({ length: n }, (_, i) => [data.liabilities[i]?.group || "", money(data.liabilities[i]?.amount),
      data.assets[i]?.group || "", money(data.assets[i]?.amount)]);
    rows.push(h("tr", { class: "total" }, h("td", {}, "Total"), h("td", { class: "num" }, money(data.total_liabilities, false)),
      h("td", {}, "Total"), h("td", { class: "num" }, money(data.total_assets, false))));
    return table(["Liabilities", "Amount", "Assets", "Amount"], rows, { id: "balance-sheet", numeric: [1, 3] });
  },
  "profit-loss": data => {
    const rows = [];
    for (const [title, key] of [["Direct incomes", "direct_incomes"], ["Direct expenses", "direct_expenses"]])
      rows.push([title, "", ""], ...data[key].map(i => ["", i.ledger, money(i.amount, false)]));
    rows.push(h("tr", { class: "total" }, h("td", {}, data.gross_profit.startsWith("-") ? "Gross loss" : "Gross profit"),
      h("td"), h("td", { class: "num" }, money(data.gross_profit.replace("-", ""), false))));
    for (const [title, key] of [["Indirect incomes", "indirect_incomes"], ["Indirect expenses", "indirect_expenses"]])
      rows.push([title, "", ""], ...data[key].map(i => ["", i.ledger, money(i.amount, false)]));
    rows.push(h("tr", { class: "total" }, h("td", {}, data.net_profit.startsWith("-") ? "Net loss" : "Net profit"),
      h("td"), h("td", { class: "num" }, money(data.net_profit.replace("-", ""), false))));
    return table(["", "Ledger", "Amount"], rows, { id: "profit-loss", numeric: [2] });
  },
};

// ---------------------------------------------------------------- settings

function settingsScreen() {
  const box = h("div"), body = h("div");
  const element = h("div", {}, h("h2", {}, "Data synchronization settings"), body, box);
  const refresh = async () => {
    if (body.contains(document.activeElement) && document.activeElement !== document.body) return; // keep typing
    const s = await get("/api/settings");
    const head = s.file_type === "Head Office";
    const auto = h("input", { type: "radio", name: "mode", id: "mode-auto", value: "auto", checked: s.mode === "auto" });
    const manual = h("input", { type: "radio", name: "mode", id: "mode-manual", value: "manual", checked: s.mode === "manual" });
    const interval = h("input", { id: "interval", type: "number", min: 1, max: 1440, value: s.interval });
    const dates = h("select", { id: "date-format" },
      app.state.date_formats.map(f => h("option", { value: f, selected: f === s.date_format }, f)));
    const syncAfter = head ? h("input", { id: "sync-after", type: "date", value: s.sync_after || "" })
      : h("span", { id: "sync-after" }, s.sync_after || "(no date)");
    const lockUntil = head ? h("input", { id: "lock-until", type: "date", value: s.lock_until || "" })
      : h("span", { id: "lock-until" }, s.lock_until || "(not locked)");
    const relays = head ? h("textarea", { id: "relays", rows: 3, placeholder: "wss://relay.example.com:8471 (one a line)" }, s.relays.join("\n"))
      : h("span", { id: "relays" }, s.relays.join(", ") || "(none)");
    body.replaceChildren(h("section", { class: "card" }, h("dl", { class: "kv" },
      h("dt", {}, "File type"), h("dd", { id: "file-type" }, s.file_type),
      h("dt", {}, "Registration ID"), h("dd", {}, s.registration_id),
      h("dt", {}, "Syncing"), h("dd", {}, h("label", {}, auto, " Auto-Syncing every ", interval, " minutes"),
        h("label", {}, manual, " Manual-Syncing (only when asked: Sync now)")),
      h("dt", {}, "Sync after date"), h("dd", {}, syncAfter, head ? null : h("span", { class: "muted" }, "  (set by the head office)")),
      h("dt", {}, "Books locked up to"), h("dd", {}, lockUntil, h("span", { class: "muted" },
        head ? "  (no voucher dated on or before it may be posted, amended or cancelled; empty: unlocked)"
          : "  (set by the head office)")),
      h("dt", {}, "Relay addresses"), h("dd", {}, relays),
      h("dt", {}, "Dates written as"), h("dd", {}, dates, h("span", { class: "muted" }, "  (this office only)")),
      h("dt", {}, "Policy version"), h("dd", { id: "policy-version" }, s.policy_version)),
    h("div", { class: "actions" }, h("button", { class: "primary", id: "apply", onclick: async () => {
      const change = { mode: auto.checked ? "auto" : "manual", interval: Number(interval.value), date_format: dates.value };
      if (head) Object.assign(change, { sync_after: syncAfter.value, lock_until: lockUntil.value,
        relays: relays.value.split(/\s+/).filter(Boolean) });
      if (await act(box, () => post("/api/settings", change), "Applied.")) {
        setDateFormat(change.date_format); document.activeElement.blur(); refresh();
      }
    } }, "Apply"))));
  };
  return { element, refresh };
}

// ---------------------------------------------------------------- registration

function registrationScreen() {
  const id = app.state.identity;
  const head = id.role === "head";
  const box = h("div"), inviteBox = h("div"), master = h("div"), scopes = h("div"), scopeBox = h("div");
  const code = h("input", { id: "branch-code", placeholder: "BR1" }), name = h("input", { id: "branch-name" });
  const scopeOffice = h("select", { id: "scope-office" }), scopeOthers = h("input", { id: "scope-offices", placeholder: "BR1, BR2" });
  const scopeAll = h("input", { type: "checkbox", id: "scope-all" });  // "*": every office, also those added later
  const offices = codes => codes.map(c => c === "*" ? "every office" : c).join(", ");
  const inviteOffice = h("select", { id: "invite-office" }), ttl = h("select", { id: "invite-ttl" },
    [["15m", "15 minutes"], ["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"]].map(([v, t]) => h("option", { value: v }, t)));
  const refresh = async () => {
    await loadOffices();
    master.replaceChildren(table(["Code", "Name", "Role"], app.offices.map(o => [o.code, o.name, o.role]), { id: "branches" }));
    const chosen = inviteOffice.value;
    inviteOffice.replaceChildren(...app.offices.filter(o => o.role !== "head").map(o => h("option", { value: o.code }, `${o.code} - ${o.name}`)));
    if (chosen) inviteOffice.value = chosen;
    const rows = await get("/api/scopes");
    const everyone = (rows.find(r => r.every_office.length) || { every_office: [] }).every_office;
    scopes.replaceChildren(table(["Office", "Reads the books of", "Granted"],
      rows.map(r => [r.office, r.all ? "every office" : r.reads.join(", "), offices(r.granted) || "-"]), { id: "scopes" }),
      everyone.length ? h("p", { class: "muted", id: "scopes-every-office" },
        `Every branch office also reads the books of ${offices(everyone)} (granted to every office).`) : "");
    const picked = scopeOffice.value;
    scopeOffice.replaceChildren(...app.offices.filter(o => o.role !== "head").map(o => h("option", { value: o.code }, `${o.code} - ${o.name}`)),
      h("option", { value: "*" }, "Every branch office"));
    if (picked) scopeOffice.value = picked;
  };
  const changeScope = how => act(scopeBox, () => post("/api/scopes", { office: scopeOffice.value,
    [how]: scopeAll.checked ? ["*"] : scopeOthers.value.split(",").map(o => o.trim()).filter(Boolean) }),
    r => `${r.office === "*" ? "Every branch office" : r.office} reads the books of ${r.all ? "every office" : r.reads.join(", ") || "its own"}`
      + (r.rotated ? ` (keys rotated to epoch ${r.key_epoch})` : "")).then(refresh);
  const element = h("div", {}, h("h2", {}, "Registration"),
    h("section", { class: "card" }, h("dl", { class: "kv" },
      h("dt", {}, "Company"), h("dd", {}, id.company), h("dt", {}, "This office"), h("dd", {}, `${id.office} (${id.file_type})`),
      h("dt", {}, "Registration ID"), h("dd", { id: "registration-id", class: "code" }, id.registration_id))),
    h("h3", {}, "Branch master"), master,
    h("h3", {}, "Read scopes"), scopes,
    head ? h("section", { class: "card" }, h("h3", {}, "Who reads which books"), field("Office", scopeOffice),
      field("Offices whose books", scopeOthers), field("Every office's books, also those added later", scopeAll),
      h("div", { class: "actions" }, h("button", { class: "primary", id: "scope-grant", onclick: () => changeScope("grant") }, "Grant"),
        h("button", { id: "scope-revoke", onclick: () => changeScope("revoke") }, "Take back")), scopeBox) : null,
    head ? h("div", { class: "cards" },
      h("section", { class: "card" }, h("h3", {}, "Add a branch"), field("Branch code", code), field("Branch name", name),
        h("div", { class: "actions" }, h("button", { class: "primary", id: "add-branch", onclick: async () => {
          if (await act(box, () => post("/api/offices", { code: code.value, name: name.value }), r => `Added branch ${r.code} (${r.name})`)) {
            code.value = name.value = ""; refresh();
          } } }, "Add branch")), box),
      h("section", { class: "card" }, h("h3", {}, "One-time code for a branch"), field("Branch", inviteOffice), field("Valid for", ttl),
        h("div", { class: "actions" }, h("button", { class: "primary", id: "make-invite", onclick: () =>
          act(inviteBox, () => post("/api/invites", { office: inviteOffice.value, ttl: ttl.value }), r =>
            h("span", {}, `Code for ${r.office} (single use, valid until ${new Date(r.expires).toLocaleString()}): `,
              h("span", { class: "code", id: "invite-code" }, r.code))) }, "Make code")), inviteBox))
      : h("p", { class: "muted" }, "Branches are added and invited at the head office."));
  return { element, refresh };
}

start().catch(error => {
  document.getElementById("main").replaceChildren(h("div", { class: "error" }, `The dashboard cannot start: ${error.message}`));
});
