#!/usr/bin/env bash
# Opening day at Sharma Traders: a head office with one branch, opening balances, the first
# vouchers of April 2026 (one of every type), an amendment, a cancellation, two imports and the
# reports. Everything happens in a temporary home that is removed at the end (KEEP=1 keeps it).
#
#   bash examples/opening-day.sh
#   P2PSYNC="python -m p2psync" bash examples/opening-day.sh
set -euo pipefail

read -r -a P2PSYNC_CMD <<< "${P2PSYNC:-p2psync}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "Books kept in $WORK/head-office"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi

# Every command below works on this office's home (the same as passing --home each time).
export P2PSYNC_HOME="$WORK/head-office"

p2p() { "${P2PSYNC_CMD[@]}" "$@"; }
step() { printf '\n==> %s\n' "$*"; }
# The voucher number from the --json output of voucher post/amend/cancel.
number_of() { sed -n 's/^  "number": "\([^"]*\)",$/\1/p'; }

step "Create the head office and the branch master"
p2p init --head-office --company "Sharma Traders Pvt Ltd" --office HO --name "Mumbai Head Office"
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
p2p settings --books-begin 01-04-2025 >/dev/null
p2p branch add BR1 "Pune Branch"
p2p branch list

step "A sub-group for Mumbai customers"
p2p group add "Mumbai Debtors" --under "Sundry Debtors"

step "Ledgers with the head office's opening balances (1 April 2026)"
# No side given: the group's usual side (assets Dr; capital, liabilities Cr).
p2p ledger add "Cash"                    --group "Cash-in-Hand"      --opening "35,000"
p2p ledger add "HDFC Bank"               --group "Bank Accounts"     --opening "4,50,000"
p2p ledger add "Furniture & Fixtures"    --group "Fixed Assets"      --opening "65,000"
p2p ledger add "Mehta Stores"            --group "Sundry Debtors"    --opening "75,000"
p2p ledger add "Capital - Ramesh Sharma" --group "Capital Account"   --opening "6,00,000"
p2p ledger add "Gupta Suppliers"         --group "Sundry Creditors"  --opening "40,000 Cr"
# Branch / Divisions is a liability group, so the head office's side is given explicitly.
p2p ledger add "Pune Branch A/c"         --group "Branch / Divisions" --opening "15,000 Dr"
# Ledgers without an opening balance.
p2p ledger add "Kumar Electricals"       --group "Mumbai Debtors"
p2p ledger add "Sales"                   --group "Sales Accounts"
p2p ledger add "Purchases"               --group "Purchase Accounts"
p2p ledger add "Output GST"              --group "Duties & Taxes"
p2p ledger add "Input GST"               --group "Duties & Taxes"
p2p ledger add "Freight Inward"          --group "Direct Expenses"
p2p ledger add "Rent"                    --group "Indirect Expenses"
p2p ledger add "Electricity"             --group "Indirect Expenses"
p2p ledger add "Salaries"                --group "Indirect Expenses"
p2p ledger add "Depreciation"            --group "Indirect Expenses"
p2p ledger add "Interest Received"       --group "Indirect Incomes"

step "The Pune branch's own opening balances, set from the head office"
p2p ledger opening "Cash" "15,000" --office BR1
p2p ledger opening "Pune Branch A/c" "15,000 Cr" --office BR1
p2p ledger list

step "One voucher of each type"
p2p voucher post --type sales --date 2026-04-01 \
    --dr "Mehta Stores=59,000" --cr "Sales=50,000" --cr "Output GST=9,000" \
    --narration "Invoice MUM/001"
p2p voucher post --type purchase --date 02-04-2026 \
    --dr "Purchases=30,000" --dr "Input GST=5,400" --cr "Gupta Suppliers=35,400" \
    --narration "Bill GS/778"
p2p voucher post --type receipt --date 03/04/2026 \
    --dr "HDFC Bank=75,000" --cr "Mehta Stores=75,000" \
    --narration "Cheque 104512 against opening balance"
RENT="$(p2p voucher post --type payment --date 03.04.2026 \
    --dr "Rent=25,000" --cr "HDFC Bank=25,000" \
    --narration "April office rent" --json | number_of)"
echo "Posted rent payment $RENT"
p2p voucher post --type contra --date 2026-04-04 \
    --dr "Cash=20,000" --cr "HDFC Bank=20,000" \
    --narration "Cash withdrawn for petty expenses"
p2p voucher post --type journal --date 2026-04-04 \
    --dr "Furniture & Fixtures=18,000" --cr "Gupta Suppliers=18,000" \
    --narration "Display rack bought on credit"
p2p voucher post --type credit-note --date 2026-04-05 \
    --dr "Sales=5,000" --dr "Output GST=900" --cr "Mehta Stores=5,900" \
    --narration "Goods returned against MUM/001"
p2p voucher post --type debit-note --date 2026-04-05 \
    --dr "Gupta Suppliers=3,540" --cr "Purchases=3,000" --cr "Input GST=540" \
    --narration "Damaged goods returned against GS/778"

step "A rule at work: a Journal may not touch cash or bank (this one is refused)"
if p2p voucher post --type journal --date 2026-04-05 --dr "Rent=100" --cr "Cash=100"; then
    echo "unexpected: the journal was accepted" >&2
    exit 1
fi

step "Amend the rent payment: the landlord's bill includes maintenance"
# An amendment replaces the whole voucher: date, every line and the narration.
p2p voucher amend "$RENT" --date 2026-04-03 \
    --dr "Rent=27,500" --cr "HDFC Bank=27,500" \
    --narration "April office rent incl. maintenance"

step "Cancel an electricity bill entered twice"
p2p voucher post --type payment --date 2026-04-05 \
    --dr "Electricity=4,250" --cr "Cash=4,250" --narration "BEST bill for March"
DUPLICATE="$(p2p voucher post --type payment --date 2026-04-05 \
    --dr "Electricity=4,250" --cr "Cash=4,250" --narration "BEST bill for March" --json | number_of)"
p2p voucher cancel "$DUPLICATE" --reason "Entered twice"

step "History of the amended voucher"
p2p voucher show "$RENT"
# The JSON form holds every version: the current one, then the whole history, oldest first.
p2p voucher show "$RENT" --json | grep -E '"(action|narration|amount)"'

step "Import a CSV file and a JSON file"
p2p voucher import "$HERE/vouchers.csv"
p2p voucher import "$HERE/vouchers.json"

step "A file with one bad voucher is refused whole"
cat > "$WORK/bad.csv" <<'CSV'
voucher,type,date,ledger,dr,cr,narration
1,payment,09-04-2026,Rent,500,,Tea and snacks
1,payment,09-04-2026,Cash,,500,
2,payment,09-04-2026,Staff Welfare,300,,Diwali sweets
2,payment,09-04-2026,Cash,,300,
CSV
if p2p voucher import "$WORK/bad.csv"; then
    echo "unexpected: the bad file was imported" >&2
    exit 1
fi

step "Vouchers"
p2p voucher list

step "Reports"
p2p report trial-balance
p2p report trial-balance --office BR1
p2p report ledger "HDFC Bank" --from 2026-04-03 --to 2026-04-30
p2p report day-book --from 2026-04-05 --to 2026-04-05
p2p report profit-loss --from 2026-04-01 --to 2026-04-30
p2p report balance-sheet --to 2026-04-30
p2p conflicts

step "Rebuild the report tables from the entry log: the trial balance is unchanged"
p2p report trial-balance --json > "$WORK/before.json"
p2p rebuild
p2p report trial-balance --json > "$WORK/after.json"
cmp "$WORK/before.json" "$WORK/after.json"
echo "Trial balance identical after rebuild."
