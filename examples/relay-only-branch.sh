#!/usr/bin/env bash
# A branch that reaches the head office only through a relay. The Goa branch (BR1) sits behind a
# mobile internet connection; neither office can connect to the other directly. Both connect out to
# a relay on a server, which stores and forwards their changes, encrypted end to end: the relay
# cannot read a single amount, ledger name or narration, and the script checks that.
#
# Even registration goes through the relay. Here the relay, like the two offices, runs on this
# computer (127.0.0.1). On a real server it runs as `p2psync relay --host 0.0.0.0 --port 8471`
# behind a web server that adds TLS, and the offices use its wss:// address (see
# docs/operations.md).
#
#   bash examples/relay-only-branch.sh
#   P2PSYNC="python3 -m p2psync" bash examples/relay-only-branch.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

step "Start the relay (on a server, reachable by every office)"
start_relay
RELAY_URL="$URL"
say "The relay is listening on $RELAY_URL"

step "At the head office: create the company, the Goa branch and the ledgers; name the relay"
# --open-books: every office reads every office's books, so that their trial balances can be compared
# (by default a branch reads the masters and its own books; docs/user-guide.md, Who reads which books).
at HO init --head-office --open-books --company "Konkan Cashews Pvt Ltd" --name "Mangaluru Head Office"
# The books kept here begin with FY 2025-26: an earlier date is refused as a typo, however many
# years later this runs (without it, eight financial years back from today are accepted).
at HO settings --books-begin 01-04-2025 >/dev/null
at HO branch add BR1 "Goa Branch"
at HO ledger add "Cash" --group "Cash-in-Hand" --opening "25,000"
at HO ledger add "Capital" --group "Capital Account" --opening "25,000"
at HO ledger add "Sales" --group "Sales Accounts"
# Signed by the head office: every office, including ones that join later, learns the relay from it.
at HO settings --relay "$RELAY_URL"

step "Start the head office's node: no LAN discovery, no direct peers, only the relay"
start_node HO --no-mdns
head_office_on_relay() { [[ "$(at HO status --json)" == *'"online": true'* ]]; }
wait_until "the head office to connect to the relay" head_office_on_relay
say "The head office's node is running and connected to the relay"

step "Register the Goa branch through the relay"
# The one-time code is read out over the phone. The branch sends its registration to the relay,
# which passes it to the head office's node (connected to it) and the answer back: sealed with the
# code, so the relay learns nothing from it.
at BR1 join "$(invite_code BR1)" --via "$RELAY_URL"
at BR1 settings --books-begin 01-04-2025 >/dev/null

step "Start the Goa branch's node with no LAN discovery and no --peer: its only way out is the relay"
start_node BR1 --no-mdns
wait_until "the Goa branch to receive the ledgers through the relay" has_ledgers BR1 3
ok "the company details reached Goa through the relay"

step "Both offices post a voucher"
SECRET_NARRATION="Cashew kernels W240 to Calangute beach stall"
at BR1 voucher post --type sales --date 2026-04-06 --dr "Cash=18,400" --cr "Sales=18,400" \
    --narration "$SECRET_NARRATION"
at HO voucher post --type receipt --date 2026-04-06 --dr "Cash=5,000" --cr "Sales=5,000" \
    --narration "Counter sale at Mangaluru"

step "Wait for both offices to hold both vouchers, through the relay"
# Debit: Cash 25,000 + 18,400 + 5,000 = 48,400; credit: Capital 25,000 + Sales 23,400.
wait_until "the head office and Goa to agree" same_books "48400.00" HO BR1
ok "the head office and the Goa branch show the same trial balance, 48,400.00 on each side"

step "The Goa branch's status: its only link is the relay"
at BR1 status
STATUS="$(at BR1 status --json)"
[[ "$STATUS" == *'"kind": "relay"'* ]] || fail "the Goa branch shows no relay link"
[[ "$STATUS" != *'"kind": "node"'* ]] || fail "the Goa branch linked to an office directly"
ok "Goa exchanged everything through the relay and never linked to the head office directly"

step "What the relay stored: ciphertext only"
for WORD in "$SECRET_NARRATION" "Calangute" "Konkan Cashews" "Goa Branch" "Sales"; do
    if grep -qF "$WORD" "$WORK"/relay.db*; then
        fail "the relay's database contains '$WORD' in clear"
    fi
done
ok "the relay's database holds no narration, company, office or ledger name in clear"
