#!/usr/bin/env bash
# A branch laptop is stolen. The Nagpur branch (BR2) keeps its books on a laptop, which disappears
# one evening. The head office revokes it: from that moment the laptop cannot exchange anything
# with the organisation, and nothing entered on it later gets into anyone's books. The vouchers it
# sent before the theft stay. A replacement machine is registered with a new one-time code and
# carries on with the same branch's books.
#
#   bash examples/lost-laptop.sh
#   P2PSYNC="python3 -m p2psync" bash examples/lost-laptop.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "Set up: the head office, the Nagpur branch and three ledgers"
# --open-books: every office reads every office's books, so that their trial balances can be compared
# (by default a branch reads the masters and its own books; docs/user-guide.md, Who reads which books).
at HO init --head-office --open-books --company "Vidarbha Traders Pvt Ltd" --name "Head Office" >/dev/null
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
at HO settings --books-begin 01-04-2025 >/dev/null
at HO branch add BR2 "Nagpur Branch"
at HO ledger add "Cash" --group "Cash-in-Hand" --opening "30,000"
at HO ledger add "Capital" --group "Capital Account" --opening "30,000"
at HO ledger add "Sales" --group "Sales Accounts"
start_node HO --no-mdns
HO_URL="$URL"

step "The Nagpur laptop is registered as BR2 and posts a sale"
# This laptop's books are kept in the folder "old-laptop"; its office is BR2.
at OLD-LAPTOP join "$(invite_code BR2)" --via "$HO_URL"
at OLD-LAPTOP settings --books-begin 01-04-2025 >/dev/null
start_node OLD-LAPTOP --no-mdns --peer "$HO_URL"
wait_until "the laptop to receive the ledgers" has_ledgers OLD-LAPTOP 3
at OLD-LAPTOP voucher post --type sales --date 2026-04-08 --dr "Cash=7,500" --cr "Sales=7,500" \
    --narration "Cash sale before the theft"
# Debit: Cash 37,500; credit: Capital 30,000 + Sales 7,500.
wait_until "the head office to receive the laptop's sale" same_books "37500.00" HO OLD-LAPTOP
ok "the head office has Nagpur's sale BR2/SAL/00001"

step "The laptop is stolen: the head office revokes BR2's machine"
at HO revoke BR2
say "The head office issued a new key; the laptop cannot read anything written from now on."
laptop_refused() { [[ "$(at OLD-LAPTOP status --json)" == *revoked* ]]; }
wait_until "the head office to cut the laptop off" laptop_refused
ok "the head office dropped the laptop's link and refuses it"

step "Whoever has the laptop tries to enter a voucher on it"
# The laptop was handed the policy that revokes it when the head office cut it off: it knows.
if REFUSAL="$(at OLD-LAPTOP voucher post --type sales --date 2026-04-09 --dr "Cash=99,000" --cr "Sales=99,000" \
    --narration "Entered on the stolen laptop" 2>&1 >/dev/null)"; then
    fail "the stolen laptop could still record a voucher"
fi
say "$REFUSAL"
[[ "$REFUSAL" == *revoked* ]] || fail "the refusal does not say the laptop is revoked"
ok "refused: the laptop records nothing more"
say "Trying to sync with the head office anyway:"
if REFUSAL="$(at OLD-LAPTOP sync --peer "$HO_URL" 2>&1 >/dev/null)"; then
    fail "the stolen laptop could still sync"
fi
say "$REFUSAL"
[[ "$REFUSAL" == *revoked* ]] || fail "the refusal does not say the laptop is revoked"
ok "refused: the laptop is revoked"

step "The laptop's status shows the head office refusing it"
at OLD-LAPTOP status

step "What the head office shows"
at HO quarantine
LIST="$(at HO voucher list --office BR2)"
printf '%s\n' "$LIST"
[[ "$LIST" == *"Cash sale before the theft"* ]] || fail "the sale made before the theft is missing"
[[ "$LIST" != *"stolen laptop"* ]] || fail "the voucher entered after the theft got in"
ok "Nagpur's sale from before the theft stays; the voucher entered after it never got in"

step "A replacement machine for Nagpur registers with a new one-time code"
at NEW-LAPTOP join "$(invite_code BR2)" --via "$HO_URL"
at NEW-LAPTOP settings --books-begin 01-04-2025 >/dev/null
start_node NEW-LAPTOP --no-mdns --peer "$HO_URL"
# The head office's total is unchanged since the theft: still 37,500.00.
wait_until "the new machine to receive Nagpur's books" same_books "37500.00" HO NEW-LAPTOP
ok "the new machine has the company's books, including BR2/SAL/00001 from the old laptop"
# The new machine numbers in a series of its own (BR2/SAL/2-00001), so its vouchers can never take a
# number the lost laptop used, even had it posted before receiving them.
POSTED="$(at NEW-LAPTOP voucher post --type sales --date 2026-04-10 --dr "Cash=4,000" --cr "Sales=4,000" \
    --narration "First sale on the replacement machine")"
printf '%s\n' "$POSTED"
[[ "$POSTED" == *"BR2/SAL/2-00001"* ]] || fail "the new machine did not number in its own series"
wait_until "the head office to receive it" same_books "41500.00" HO NEW-LAPTOP
ok "the head office accepts Nagpur's vouchers from the new machine: both show 41,500.00 on each side"
