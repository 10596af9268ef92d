#!/usr/bin/env bash
# The native file dialogs in a real window: under Xvfb with zenity (what rfd uses where there is
# no D-Bus session for the XDG portal), Ctrl+O shows the desktop's chooser in workflows/,
# accepting it opens the chosen workflow, and Ctrl+Shift+S shows the save chooser with the
# document's name filled in. Screenshots go to OUT_DIR (default: a temp folder).
#   tools/native_dialog_check.sh
# Needs: xvfb xauth imagemagick x11-utils xdotool zenity (and a Vulkan or GL driver from Mesa).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CACHEDIT_BIN:-target/debug/cachedit}
[ -x "$BIN" ] || { echo "build first: cargo build -p cachedit ($BIN missing)" >&2; exit 1; }
command -v zenity >/dev/null || { echo "zenity is not installed" >&2; exit 1; }
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
DISP=:${CACHEDIT_DISPLAY:-78}
Xvfb "$DISP" -screen 0 1400x860x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
APP=""
CONFIG=$(mktemp -d)
cleanup() {
    [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
    pkill -f 'zenity --file-selection' 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
    rm -rf "$CONFIG"
}
trap cleanup EXIT
export DISPLAY=$DISP
unset DBUS_SESSION_BUS_ADDRESS
for _ in $(seq 100); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.2; done
CACHEDIT_CONFIG_DIR=$CONFIG CACHEDIT_OUTPUT_DIR=$CONFIG/out "$BIN" edit >"$OUT_DIR/app.log" 2>&1 &
APP=$!
for _ in $(seq 120); do xdotool search --name "CacheDiT Studio" >/dev/null 2>&1 && break; sleep 0.5; done
sleep 4
WIN=$(xdotool search --name "CacheDiT Studio" | head -1)
zenity_window() {
    local pid
    pid=$(pgrep -n zenity) || return 1
    xdotool search --pid "$pid" 2>/dev/null | tail -1
}
xdotool windowfocus --sync "$WIN"
xdotool mousemove 700 400 click 1
xdotool key ctrl+o
sleep 5
import -window root "$OUT_DIR/1-open-dialog.png"
ZW=$(zenity_window) || { echo "FAIL: no native open dialog came up" >&2; exit 1; }
# The first entry of workflows/ is selected; Return opens it.
xdotool windowfocus --sync "$ZW"
xdotool key Return
sleep 4
TITLE=$(xdotool getwindowname "$WIN")
echo "after open: $TITLE"
case "$TITLE" in
    "cache_adaptive.ron"*) ;;
    *) echo "FAIL: the chosen workflow was not opened" >&2; exit 1 ;;
esac
xdotool windowfocus --sync "$WIN"
xdotool key ctrl+shift+s
sleep 4
import -window root "$OUT_DIR/2-save-dialog.png"
ZW=$(zenity_window) || { echo "FAIL: no native save dialog came up" >&2; exit 1; }
xdotool windowfocus --sync "$ZW"
xdotool key Escape
sleep 2
import -window root "$OUT_DIR/3-after-cancel.png"
echo "OK: native open and save dialogs; screenshots in $OUT_DIR"
