// Small DOM helpers: elements are built with text nodes only (never innerHTML), so nothing a peer
// wrote (a narration, a ledger name) can run as code in this page.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Indian digit grouping of a two-place decimal string from the API ("1234567.50" -> "12,34,567.50").
export function money(text, blankZero = true) {
  if (text === undefined || text === null) return "";
  const negative = String(text).startsWith("-");
  const [whole, fraction = "00"] = String(text).replace("-", "").split(".");
  if (blankZero && /^0*$/.test(whole) && /^0*$/.test(fraction)) return "";
  const last3 = whole.slice(-3);
  const rest = whole.slice(0, -3).replace(/\B(?=(\d{2})+(?!\d))/g, ",");
  return (negative ? "-" : "") + (rest ? rest + "," : "") + last3 + "." + fraction.padEnd(2, "0");
}

// A balance as accountants write it: amount and Dr/Cr.
export function balance(text) {
  if (/^-?0*(\.0*)?$/.test(String(text))) return "0.00";
  return String(text).startsWith("-") ? money(String(text).slice(1)) + " Cr" : money(text) + " Dr";
}

export function table(columns, rows, { numeric = [], empty = "Nothing to show.", id } = {}) {
  if (!rows.length) return h("p", { class: "muted", id }, empty);
  return h("table", { id },
    h("thead", {}, h("tr", {}, columns.map((c, i) => h("th", { class: numeric.includes(i) ? "num" : null }, c)))),
    h("tbody", {}, rows.map(row => row instanceof Node ? row
      : h("tr", {}, row.map((cell, i) => h("td", { class: numeric.includes(i) ? "num" : null }, cell))))));
}

// Dates as this office writes them (its date format setting, dd-mm-yyyy unless changed); times in
// this computer's local zone. The node keeps and sends ISO in UTC; only the page converts.
let dateFormat = "dd-mm-yyyy";
export function setDateFormat(format) { if (format) dateFormat = format; }

const pad = n => String(n).padStart(2, "0");

function writeDate(year, month, day) {
  return dateFormat.replace("yyyy", year).replace("mm", pad(month)).replace("dd", pad(day));
}

// An ISO date ("2026-04-01") written the office's way; anything else is shown as it is.
export function localDate(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(text || ""));
  return m ? writeDate(m[1], Number(m[2]), Number(m[3])) : (text || "");
}

// Today's date on this computer, as a date input takes it (not the UTC date: in India that is
// yesterday's until 05:30).
export function today() {
  const d = new Date();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// A UTC timestamp from the node in local time, the date the office's way.
export function when(text) {
  if (!text) return "never";
  const moment = new Date(String(text).replace(/(\.\d{3})\d+/, "$1"));
  if (Number.isNaN(moment.getTime())) return String(text);
  return `${writeDate(moment.getFullYear(), moment.getMonth() + 1, moment.getDate())} ` +
    `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
}

export function field(labelText, input) {
  return h("div", { class: "field" }, h("label", {}, labelText, input));
}
