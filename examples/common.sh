# shellcheck shell=bash
# Shared plumbing for the multi-office examples; `source` it, do not run it.
#
# It gives every example the same habits:
#   - the p2psync command comes from $P2PSYNC (default: `p2psync` on your PATH), e.g.
#     P2PSYNC="python3 -m p2psync" bash examples/three-offices-lan.sh
#   - everything happens in a new temporary folder, removed at the end (KEEP=1 keeps it);
#   - every node and relay it starts listens on 127.0.0.1 on a port the system picks, and is
#     stopped when the script ends, whether it succeeded or not;
#   - when a step fails, the script says which one and shows the end of each node's log.
#
# Offices are named by their home folder: `at HO voucher post ...` runs `p2psync --home WORK/ho
# voucher post ...`. Waits give up after $WAIT seconds (default 60).

read -r -a P2PSYNC_CMD <<< "${P2PSYNC:-p2psync}"
WAIT="${WAIT:-60}"
WORK="$(mktemp -d)"
CURRENT_STEP="starting"

# Each office's books live in their own folder (the office's "home").
home_of() { printf '%s/%s' "$WORK" "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')"; }

# Run one p2psync command at an office: at OFFICE COMMAND [OPTIONS...]
at() {
    local home
    home="$(home_of "$1")"
    shift
    # Made beforehand (private, as p2psync makes it) so that even `init` and `join` log into it.
    [[ -d "$home" ]] || mkdir -m 700 "$home"
    "${P2PSYNC_CMD[@]}" --home "$home" "$@"
}

step() {
    CURRENT_STEP="$*"
    printf '\n==> %s\n' "$*"
}
say() { printf '    %s\n' "$*"; }
ok() { printf '    OK: %s\n' "$*"; }
fail() {
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
}

# --------------------------------------------------------------- processes

# Start a process in the background, remember it under NAME, and wait until it prints a line
# matching PATTERN; set URL to the address (ws:// or wss://) on that line.
_start() {
    local name=$1 pattern=$2
    shift 2
    local log="$WORK/$name.log" line="" before=0
    touch "$log"
    before="$(wc -l <"$log")"
    "${P2PSYNC_CMD[@]}" "$@" >>"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$WORK/$name.pid"
    local deadline=$((SECONDS + WAIT))
    # A restarted node appends to its log: look only at what this start printed.
    until line="$(tail -n "+$((before + 1))" "$log" | grep -E "$pattern" | head -n 1)" && [[ -n "$line" ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$WORK/$name.pid"
            fail "$name stopped as it started: $(tail -n 3 "$log")"
        fi
        ((SECONDS < deadline)) || fail "$name did not start within $WAIT s"
        sleep 0.2
    done
    # shellcheck disable=SC2034  # read by the scripts that source this file
    URL="$(printf '%s' "$line" | grep -oE 'wss?://[^ ,]+' | head -n 1)"
}

# start_node OFFICE [run options...]: run the office's node on 127.0.0.1; sets URL to its address.
start_node() {
    local office=$1
    shift
    _start "$office-node" 'serving on wss://' --home "$(home_of "$office")" run --host 127.0.0.1 --port 0 "$@"
}

# start_relay: run a relay on 127.0.0.1; sets URL to its address.
start_relay() {
    _start relay 'relay listening on ws://' relay --host 127.0.0.1 --port 0 --db "$WORK/relay.db"
}

# stop NAME: stop a node (OFFICE-node) or the relay the way an operator does (SIGTERM), and wait.
stop() {
    local name=$1 pid
    pid="$(cat "$WORK/$name.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] || return 0
    rm -f "$WORK/$name.pid"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
}

stop_node() { stop "$1-node"; }

_cleanup() {
    local status=$?
    local pidfile
    for pidfile in "$WORK"/*.pid; do
        [[ -e "$pidfile" ]] && stop "$(basename "$pidfile" .pid)"
    done
    if ((status != 0)); then
        printf '\nFAILED during: %s\n' "$CURRENT_STEP" >&2
        local log
        for log in "$WORK"/*.log; do
            [[ -e "$log" ]] || continue
            printf -- '--- last lines of %s\n' "$(basename "$log")" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        printf '\nEverything kept in %s (one folder per office; *.log are the processes'"'"' output)\n' "$WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------- checks

# wait_until WHAT COMMAND...: run COMMAND every second until it succeeds; fail after $WAIT s.
wait_until() {
    local what=$1 tries=0
    shift
    local deadline=$((SECONDS + WAIT))
    until "$@"; do
        ((SECONDS < deadline)) || fail "gave up after $WAIT s waiting for $what"
        tries=$((tries + 1))
        ((tries != 5)) || say "(still waiting for $what)"
        sleep 1
    done
}

# The one-time code: the last line `p2psync invite` prints.
invite_code() { at HO invite "$1" | tail -n 1; }

# has_ledgers OFFICE N: the office knows at least N ledgers (the head office's masters arrived).
has_ledgers() {
    local count
    count="$(at "$1" ledger list --json | grep -c '"name"' || true)"
    [[ "${count:-0}" -ge "$2" ]]
}

# total_of OFFICE [report options...]: the debit total of the office's trial balance (as 1234.50).
total_of() {
    local office=$1
    shift
    at "$office" report trial-balance --json "$@" | _total
}
_total() { sed -n '/"total"/,$ s/.*"debit": "\([0-9.]*\)".*/\1/p'; }

# same_books TOTAL OFFICE...: every office's consolidated trial balance is identical, line for
# line, and totals TOTAL (so the books agree and hold everything expected).
same_books() {
    local total=$1 first="" office out
    shift
    for office in "$@"; do
        out="$(at "$office" report trial-balance --json)" || return 1
        [[ "$(printf '%s' "$out" | _total)" == "$total" ]] || return 1
        if [[ -z "$first" ]]; then
            first="$out"
        elif [[ "$out" != "$first" ]]; then
            return 1
        fi
    done
}
