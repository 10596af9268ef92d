#!/usr/bin/env bash
# Takes docs/editor.png: the real editor window under Xvfb, with a workflow opened and run.
#   tools/editor_screenshot.sh [workflow.ron] [out.png]
# CACHEDIT_SCREENSHOT_KEYS="c" presses those keys (xdotool names) once the run is done, e.g.
# "c" opens the comparison view (docs/compare_view.png).
# Needs: xvfb xauth imagemagick x11-utils xdotool (and a Vulkan or GL driver from Mesa).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKFLOW=${1:-workflows/default.ron}
OUT=${2:-docs/editor.png}
BIN=${CACHEDIT_BIN:-target/debug/cachedit}
WAIT=${CACHEDIT_SCREENSHOT_WAIT:-40}
[ -x "$BIN" ] || { echo "build first: cargo build -p cachedit ($BIN missing)" >&2; exit 1; }
DISP=:${CACHEDIT_DISPLAY:-77}
Xvfb "$DISP" -screen 0 1400x860x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
APP=""
CONFIG=$(mktemp -d)
OUTDIR=$(mktemp -d)
cleanup() {
    [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
    rm -rf "$CONFIG" "$OUTDIR"
}
trap cleanup EXIT
export DISPLAY=$DISP
up=""
for _ in $(seq 300); do
    if xdpyinfo >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
done
[ -n "$up" ] || { echo "Xvfb did not start on $DISP" >&2; exit 1; }
# A fresh settings folder: no recovery prompt, the dark theme; images go to a temp folder.
CACHEDIT_CONFIG_DIR=$CONFIG CACHEDIT_OUTPUT_DIR=$OUTDIR "$BIN" edit "$WORKFLOW" --run &
APP=$!
for _ in $(seq 120); do
    xdotool search --name "CacheDiT Studio" >/dev/null 2>&1 && break
    sleep 0.5
done
# Keep the pointer off the nodes (no hover popups in the picture).
xdotool mousemove 1399 859 >/dev/null 2>&1 || true
# Let the run finish and the window settle.
sleep "$WAIT"
if [ -n "${CACHEDIT_SCREENSHOT_KEYS:-}" ]; then
    WINDOW=$(xdotool search --name "CacheDiT Studio" | head -1)
    for key in $CACHEDIT_SCREENSHOT_KEYS; do
        xdotool windowfocus --sync "$WINDOW" key "$key" >/dev/null 2>&1 || true
        sleep 1
    done
    xdotool mousemove 1399 859 >/dev/null 2>&1 || true
    sleep 2
fi
mkdir -p "$(dirname "$OUT")"
import -window root "$OUT"
echo "wrote $OUT"
