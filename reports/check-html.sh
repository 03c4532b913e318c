#!/usr/bin/env bash
# Renders an HTML report in headless Chromium (Debian's `chromium` package)
# and fails on any console message (a script error, a blocked or failed load),
# on a page that does not parse into the expected number of charts, or on any
# attempt to reach the network. Optionally writes a full-page screenshot.
#
# Usage:
#   reports/check-html.sh REPORT.html [SCREENSHOT.png]
#   reports/check-html.sh --self-test     # proves the check catches a console error
#
# Needs root to install chromium when it is missing (apt-get install -y chromium).
set -euo pipefail

die() { echo "check-html: $*" >&2; exit 2; }

find_chromium() {
    for c in chromium chromium-browser; do
        if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
    done
    return 1
}

CHROMIUM=$(find_chromium || true)
if [ -z "$CHROMIUM" ]; then
    echo "check-html: installing chromium (apt-get)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || die "cannot install chromium; install Debian's chromium package"
    CHROMIUM=$(find_chromium) || die "chromium not found after installing it"
fi

# Runs chromium on FILE; extra args follow. Output: the DOM on stdout, logs in $LOG.
run_chromium() {
    local file=$1; shift
    local profile
    profile=$(mktemp -d)
    # Every host name resolves to nothing: a page that tries the network logs an error.
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --disable-extensions \
        --user-data-dir="$profile" --host-resolver-rules="MAP * ~NOTFOUND" \
        --enable-logging=stderr --v=0 "$@" "file://$file" 2>"$LOG"
    local rc=$?
    rm -rf "$profile"
    return $rc
}

# Console messages, failed loads and uncaught errors in the log.
console_errors() {
    grep -E "CONSOLE|Uncaught|Failed to load resource|net::ERR_" "$LOG" || true
}

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

if [ "${1:-}" = "--self-test" ]; then
    page=$(mktemp --suffix=.html)
    printf '<!DOCTYPE html><html><body><p>x</p><script>console.error("boom")</script></body></html>' >"$page"
    run_chromium "$page" --dump-dom >/dev/null || true
    rm -f "$page"
    if [ -n "$(console_errors)" ]; then
        echo "check-html: self-test ok (a console error is detected)"
        exit 0
    fi
    cat "$LOG" >&2
    die "self-test failed: console.error was not detected in chromium's log"
fi

[ $# -ge 1 ] || die "usage: $0 REPORT.html [SCREENSHOT.png] | --self-test"
REPORT=$(realpath "$1")
[ -f "$REPORT" ] || die "$1 does not exist"

expected_svgs=$(grep -o '<svg ' "$REPORT" | wc -l)
dom=$(run_chromium "$REPORT" --dump-dom) || { cat "$LOG" >&2; die "chromium failed on $REPORT"; }
errors=$(console_errors)
if [ -n "$errors" ]; then
    echo "$errors" >&2
    echo "check-html: FAIL: console errors while rendering $REPORT" >&2
    exit 1
fi
parsed_svgs=$(grep -o '<svg ' <<<"$dom" | wc -l)
if [ "$parsed_svgs" -ne "$expected_svgs" ]; then
    die "FAIL: the file has $expected_svgs charts but chromium's DOM has $parsed_svgs"
fi
if [ $# -ge 2 ]; then
    shot=$(realpath -m "$2")
    run_chromium "$REPORT" --screenshot="$shot" --window-size=1280,3000 --hide-scrollbars >/dev/null \
        || { cat "$LOG" >&2; die "screenshot failed"; }
    errors=$(console_errors)
    [ -z "$errors" ] || { echo "$errors" >&2; echo "check-html: FAIL: console errors" >&2; exit 1; }
    echo "check-html: screenshot $shot"
fi
echo "check-html: ok: $REPORT rendered in $($CHROMIUM --version 2>/dev/null | head -1) with no console message; $parsed_svgs charts in the DOM"
