#!/usr/bin/env bash
# The native file dialogs in a real window under Xvfb, through either backend rfd uses:
#   tools/native_dialog_check.sh zenity   # no D-Bus session: rfd runs zenity (the default)
#   tools/native_dialog_check.sh portal   # a private D-Bus session with xdg-desktop-portal-gtk
# Ctrl+O must show the desktop's chooser, typing a workflow's path must open it (the window
# title changes), and Ctrl+Shift+S must show the save chooser, which Esc cancels. Screenshots
# go to OUT_DIR (default: a temp folder).
# Needs: xvfb xauth imagemagick x11-utils xdotool, and zenity, or dbus xdg-desktop-portal
# xdg-desktop-portal-gtk (plus a Vulkan or GL driver from Mesa).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-zenity}
case "$MODE" in
    zenity) command -v zenity >/dev/null || { echo "zenity is not installed" >&2; exit 1; } ;;
    portal)
        [ -x /usr/libexec/xdg-desktop-portal-gtk ] ||
            { echo "xdg-desktop-portal-gtk is not installed" >&2; exit 1; }
        if [ -z "${CACHEDIT_IN_DBUS:-}" ]; then
            exec env CACHEDIT_IN_DBUS=1 dbus-run-session -- "$0" portal
        fi
        ;;
    *) echo "usage: $0 [zenity|portal]" >&2; exit 2 ;;
esac
BIN=${CACHEDIT_BIN:-target/debug/cachedit}
[ -x "$BIN" ] || { echo "build first: cargo build -p cachedit ($BIN missing)" >&2; exit 1; }
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
DISP=:${CACHEDIT_DISPLAY:-78}
Xvfb "$DISP" -screen 0 1400x860x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
APP=""
PORTALS=()
CONFIG=$(mktemp -d)
cleanup() {
    [ -n "$APP" ] && kill "$APP" 2>/dev/null || true
    for p in "${PORTALS[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -f 'zenity --no-markup' 2>/dev/null || true
    kill "$XVFB" 2>/dev/null || true
    rm -rf "$CONFIG"
}
trap cleanup EXIT
export DISPLAY=$DISP
for _ in $(seq 100); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.2; done
if [ "$MODE" = portal ]; then
    export XDG_CURRENT_DESKTOP=GNOME # the gtk backend serves GNOME
    XDG_RUNTIME_DIR=$CONFIG/runtime
    mkdir -m 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
    /usr/libexec/xdg-desktop-portal-gtk >"$OUT_DIR/portal-gtk.log" 2>&1 &
    PORTALS+=($!)
    sleep 2
    /usr/libexec/xdg-desktop-portal >"$OUT_DIR/portal.log" 2>&1 &
    PORTALS+=($!)
    sleep 2
    DIALOG_PROCESS=xdg-desktop-portal-gtk
else
    # No session bus at all (libdbus would otherwise autolaunch one through X11 where dbus-x11
    # is installed, and the portal would answer).
    export DBUS_SESSION_BUS_ADDRESS=disabled:
    DIALOG_PROCESS='zenity --no-markup'
fi
CACHEDIT_CONFIG_DIR=$CONFIG CACHEDIT_OUTPUT_DIR=$CONFIG/out "$BIN" edit >"$OUT_DIR/app.log" 2>&1 &
APP=$!
for _ in $(seq 120); do xdotool search --name "CacheDiT Studio" >/dev/null 2>&1 && break; sleep 0.5; done
sleep 4
WIN=$(xdotool search --name "CacheDiT Studio" | head -1)
dialog_window() {
    local pid
    pid=$(pgrep -n -f "$DIALOG_PROCESS") || return 1
    xdotool search --pid "$pid" 2>/dev/null | tail -1
}
xdotool windowfocus --sync "$WIN"
xdotool mousemove 700 400 click 1
xdotool key ctrl+o
sleep 5
import -window root "$OUT_DIR/1-open-dialog.png"
DW=$(dialog_window) || true
[ -n "$DW" ] || { echo "FAIL: no native open dialog came up ($MODE)" >&2; exit 1; }
if [ "$MODE" = portal ] && pgrep -f 'zenity --no-markup' >/dev/null; then
    echo "FAIL: zenity answered, not the portal" >&2
    exit 1
fi
# Ctrl+L opens a GTK chooser's location field; type the workflow's path there.
xdotool windowfocus --sync "$DW"
sleep 1
xdotool key --window "$DW" ctrl+l
sleep 0.5
xdotool type --delay 20 "$PWD/workflows/cache_adaptive.ron"
sleep 1
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
DW=$(dialog_window) || true
[ -n "$DW" ] || { echo "FAIL: no native save dialog came up ($MODE)" >&2; exit 1; }
xdotool windowfocus --sync "$DW"
xdotool key Escape
sleep 2
import -window root "$OUT_DIR/3-after-cancel.png"
echo "OK ($MODE): native open and save dialogs; screenshots in $OUT_DIR"
