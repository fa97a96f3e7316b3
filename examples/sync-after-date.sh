#!/usr/bin/env bash
# Moving the sync-after date at the start of a new financial year. The head office of Gujarat Silk
# Mills syncs vouchers dated from 1 April 2025. When FY 2025-26 is closed it moves the date to
# 1 April 2026: the new date reaches the Surat branch with the next exchange, and from then on a
# voucher the branch dates before it (a late entry for the closed year) stays in the branch's own
# books and is never sent. Vouchers already exchanged stay where they are.
#
#   bash examples/sync-after-date.sh
#   P2PSYNC="python3 -m p2psync" bash examples/sync-after-date.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "Set up: the head office syncs vouchers dated from 1 April 2025; the Surat branch joins"
# --open-books: every office reads every office's books, so that their trial balances can be compared
# (by default a branch reads the masters and its own books; docs/user-guide.md, Who reads which books).
at HO init --head-office --open-books --company "Gujarat Silk Mills Pvt Ltd" --name "Ahmedabad Head Office" >/dev/null
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
at HO settings --books-begin 01-04-2025 >/dev/null
at HO branch add BR1 "Surat Branch"
at HO ledger add "Cash" --group "Cash-in-Hand" --opening "40,000"
at HO ledger add "Capital" --group "Capital Account" --opening "40,000"
at HO ledger add "Sales" --group "Sales Accounts"
at HO settings --sync-after 01-04-2025 >/dev/null
start_node HO --no-mdns
HO_URL="$URL"
at BR1 join "$(invite_code BR1)" --via "$HO_URL"
at BR1 settings --books-begin 01-04-2025 >/dev/null
start_node BR1 --no-mdns --peer "$HO_URL"
wait_until "Surat to receive the ledgers" has_ledgers BR1 3

step "Surat posts a sale in March 2026 (in FY 2025-26, so it is exchanged)"
at BR1 voucher post --type sales --date 25-03-2026 --dr "Cash=6,000" --cr "Sales=6,000" \
    --narration "Saree lot sold for cash"
# Debit: Cash 46,000; credit: Capital 40,000 + Sales 6,000.
wait_until "the head office to receive it" same_books "46000.00" HO BR1
ok "the head office has Surat's March sale"

step "FY 2025-26 is closed: the head office moves the sync-after date to 1 April 2026"
at HO settings --sync-after 01-04-2026 >/dev/null
branch_has_new_date() {
    SETTINGS="$(at BR1 settings)"
    [[ "$SETTINGS" == *2026-04-01* ]]
}
wait_until "the new date to reach Surat" branch_has_new_date
ok "Surat's settings now show the sync-after date 2026-04-01, signed by the head office:"
printf '%s\n' "$SETTINGS"

step "Surat posts a late entry for the closed year, and an April sale"
at BR1 voucher post --type sales --date 31-03-2026 --dr "Cash=1,200" --cr "Sales=1,200" \
    --narration "Late entry: cash sale of 31 March"
at BR1 voucher post --type sales --date 02-04-2026 --dr "Cash=3,000" --cr "Sales=3,000" \
    --narration "First sale of FY 2026-27"

step "The April sale reaches the head office; the late March entry stays in Surat's books"
head_office_has() { [[ "$(total_of HO)" == "$1" ]]; }
# Debit: Cash 40,000 + 6,000 + 3,000; credit: Capital 40,000 + Sales 9,000.
wait_until "the head office to receive the April sale" head_office_has "49000.00"
AT_SURAT="$(at BR1 voucher list)"
AT_HO="$(at HO voucher list --office BR1)"
say "Surat's vouchers, at Surat:"
printf '%s\n' "$AT_SURAT"
say "Surat's vouchers, at the head office:"
printf '%s\n' "$AT_HO"
[[ "$AT_SURAT" == *"Late entry"* ]] || fail "the late entry is missing from Surat's own books"
[[ "$AT_HO" == *"Saree lot sold for cash"* ]] || fail "the March sale exchanged earlier is gone from the head office"
[[ "$AT_HO" == *"First sale of FY 2026-27"* ]] || fail "the April sale did not reach the head office"
[[ "$AT_HO" != *"Late entry"* ]] || fail "the late entry dated before the sync-after date was sent"
ok "the head office has Surat's March and April sales (49,000.00 on each side of its trial balance)"
ok "the late entry of 31 March stays in Surat's own books only"
