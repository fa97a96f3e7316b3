#!/usr/bin/env bash
# Three offices on one office network (LAN): the Mumbai head office and its Pune and Nagpur
# branches. The head office sets up the company, registers both branches with one-time codes, and
# every office posts a voucher; within seconds all three hold the same books.
#
# Every office runs on this computer, each with its own folder and its own node listening on
# 127.0.0.1; they find each other the way offices on a real LAN do, by mDNS (zeroconf). Where a
# network blocks multicast, run with LAN=static: the branches are then told the head office's
# address with --peer instead.
#
#   bash examples/three-offices-lan.sh
#   LAN=static P2PSYNC="python3 -m p2psync" bash examples/three-offices-lan.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "At the head office: create Sharma Traders, the branch master and the ledgers"
# --open-books: every office reads every office's books, so that their trial balances can be compared
# (by default a branch reads the masters and its own books; docs/user-guide.md, Who reads which books).
CREATED="$(at HO init --head-office --open-books --company "Sharma Traders Pvt Ltd" --name "Mumbai Head Office")"
printf '%s\n' "$CREATED"
REGISTRATION_ID="$(printf '%s\n' "$CREATED" | sed -n 's/^Registration ID: //p')"
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
at HO settings --books-begin 01-04-2025 >/dev/null
at HO branch add BR1 "Pune Branch"
at HO branch add BR2 "Nagpur Branch"
at HO ledger add "Cash" --group "Cash-in-Hand" --opening "50,000"
at HO ledger add "HDFC Bank" --group "Bank Accounts" --opening "2,00,000"
at HO ledger add "Capital" --group "Capital Account" --opening "2,50,000"
at HO ledger add "Sales" --group "Sales Accounts"

step "Start the head office's node"
if [[ "${LAN:-mdns}" == static ]]; then
    MDNS=(--no-mdns)
else
    MDNS=()  # advertise and look for the other offices on the LAN
fi
start_node HO ${MDNS[@]+"${MDNS[@]}"}
HO_URL="$URL"
say "The head office is listening on $HO_URL"

step "Register the two branches with one-time codes (the head office's 'Generate OTP')"
for BRANCH in BR1 BR2; do
    CODE="$(invite_code "$BRANCH")"
    say "Code for $BRANCH, read out over the phone: $CODE"
    JOINED="$(at "$BRANCH" join "$CODE" --via "$HO_URL")"
    say "$JOINED"
    at "$BRANCH" settings --books-begin 01-04-2025 >/dev/null
    [[ "$JOINED" == *"Registration ID $REGISTRATION_ID"* ]] ||
        fail "$BRANCH did not show the head office's Registration ID $REGISTRATION_ID"
done
ok "both branches registered with Registration ID $REGISTRATION_ID"

step "Start the branches' nodes: they receive the company details (masters) from the head office"
if [[ "${LAN:-mdns}" == static ]]; then
    PEERS=(--no-mdns --peer "$HO_URL")
else
    PEERS=()  # no address given: each branch finds the other offices on the LAN
fi
start_node BR1 ${PEERS[@]+"${PEERS[@]}"}
start_node BR2 ${PEERS[@]+"${PEERS[@]}"}
branches_have_masters() { has_ledgers BR1 4 && has_ledgers BR2 4; }
wait_until "the branches to receive the ledgers" branches_have_masters
ok "Pune and Nagpur now know all 4 ledgers the head office created"

step "Each office posts its own voucher"
at HO voucher post --type contra --date 2026-04-02 --dr "HDFC Bank=20,000" --cr "Cash=20,000" \
    --narration "Cash deposited into the bank"
at BR1 voucher post --type sales --date 2026-04-03 --dr "Cash=12,500" --cr "Sales=12,500" \
    --narration "Cash sale at the Pune counter"
at BR2 voucher post --type receipt --date 2026-04-03 --dr "HDFC Bank=8,250.50" --cr "Sales=8,250.50" \
    --narration "NEFT from a Nagpur customer"

step "Wait for the offices to exchange their vouchers"
# Debit: Cash 50,000 - 20,000 + 12,500 = 42,500 and HDFC Bank 2,00,000 + 20,000 + 8,250.50 = 2,28,250.50;
# credit: Capital 2,50,000 and Sales 12,500 + 8,250.50 = 20,750.50.
EXPECTED="270750.50"
wait_until "all three offices to show the same trial balance" same_books "$EXPECTED" HO BR1 BR2
ok "HO, BR1 and BR2 show the same consolidated trial balance, 2,70,750.50 on each side"

step "The consolidated trial balance, as the Nagpur branch sees it"
at BR2 report trial-balance

step "Who the Pune branch is linked to"
at BR1 status
