#!/usr/bin/env bash
# A branch that works offline for a day. The Pune branch's internet line goes down overnight, so
# its node is off all of the next day; the accountant keeps entering vouchers as usual, and so does
# the head office. When the line is back the branch starts its node again, and within seconds both
# offices hold the whole day's work of both.
#
#   bash examples/offline-branch.sh
#   P2PSYNC="python3 -m p2psync" bash examples/offline-branch.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "Set up: the head office, the Pune branch and four ledgers"
# --open-books: every office reads every office's books, so that their trial balances can be compared
# (by default a branch reads the masters and its own books; docs/user-guide.md, Who reads which books).
at HO init --head-office --open-books --company "Deccan Hardware Pvt Ltd" --name "Mumbai Head Office" >/dev/null
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
at HO settings --books-begin 01-04-2025 >/dev/null
at HO branch add BR1 "Pune Branch"
at HO ledger add "Cash" --group "Cash-in-Hand" --opening "20,000"
at HO ledger add "Capital" --group "Capital Account" --opening "20,000"
at HO ledger add "Sales" --group "Sales Accounts"
at HO ledger add "Electricity" --group "Indirect Expenses"
start_node HO --no-mdns
HO_URL="$URL"
at BR1 join "$(invite_code BR1)" --via "$HO_URL"
at BR1 settings --books-begin 01-04-2025 >/dev/null

step "Day 1: both nodes run; Pune receives the company details"
start_node BR1 --no-mdns --peer "$HO_URL"
wait_until "Pune to receive the ledgers" has_ledgers BR1 4
ok "Pune is in sync with the head office"

step "Day 1, evening: Pune's internet line goes down; its node stops"
stop_node BR1
say "Pune's node is off. Its books stay on its own computer and can be used as always."

step "Day 2: Pune enters the day's vouchers offline (imported from the day's sheet)"
cat >"$WORK/pune-day2.csv" <<'CSV'
voucher,type,date,ledger,dr,cr,narration
1,sales,07-04-2026,Cash,"4,500.00",,Cash sale: PVC pipes
1,sales,07-04-2026,Sales,,"4,500.00",
2,sales,07-04-2026,Cash,"2,250.00",,Cash sale: door hinges
2,sales,07-04-2026,Sales,,"2,250.00",
3,payment,07-04-2026,Electricity,"1,800.00",,MSEDCL bill for March
3,payment,07-04-2026,Cash,,"1,800.00",
CSV
at BR1 voucher import "$WORK/pune-day2.csv"

step "Day 2: meanwhile the head office posts a voucher of its own"
at HO voucher post --type sales --date 07-04-2026 --dr "Cash=10,000" --cr "Sales=10,000" \
    --narration "Cash sale: tile cutter"

step "Check: neither office has the other's Day 2 vouchers yet"
[[ "$(at HO voucher list --office BR1 --json)" == "[]" ]] || fail "the head office already has Pune's vouchers"
[[ "$(at BR1 voucher list --office HO --json)" == "[]" ]] || fail "Pune already has the head office's voucher"
ok "the head office holds none of Pune's vouchers, and Pune none of the head office's"

step "Day 3, morning: the line is back; Pune starts its node again (the same command as always)"
start_node BR1 --no-mdns --peer "$HO_URL"
# Debit: Cash 20,000 + 4,500 + 2,250 - 1,800 + 10,000 = 34,950 and Electricity 1,800;
# credit: Capital 20,000 and Sales 16,750.
wait_until "Pune to catch up with the head office" same_books "36750.00" HO BR1
ok "both offices show the same trial balance, 36,750.00 on each side"

step "Pune's day book for Day 2, now with the head office's voucher too"
at BR1 report day-book --from 07-04-2026 --to 07-04-2026
