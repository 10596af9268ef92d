#!/usr/bin/env bash
# Writes app/assets/fonts/DejaVuSans-symbols.ttf: the symbols the editor draws that egui's
# default fonts lack (arrows, geometric shapes, dingbats, math operators, general
# punctuation; not U+25FB "◻", which egui takes for its replacement glyph), cut from
# Debian's DejaVu Sans (fonts-dejavu-core) with fonttools' pyftsubset.
#   apt-get install fonts-dejavu-core && pip install fonttools==4.55.0
#   tools/make_symbol_font.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src=${DEJAVU_SANS:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
out=app/assets/fonts/DejaVuSans-symbols.ttf
pyftsubset "$src" \
    --unicodes="U+2000-206F,U+2190-21FF,U+2200-22FF,U+2300-23FF,U+25A0-25FA,U+25FC-25FF,U+2600-26FF,U+2700-27BF,U+00B0-00BF,U+00D7,U+00F7" \
    --layout-features='' --no-hinting --desubroutinize --output-file="$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"

# The small marks, drawn heavier than egui's Ubuntu Light so that they still cover a pixel when
# the canvas is zoomed below 100 % and egui scales the text's mesh down instead of laying it
# out again: a low line 0.09 em thick (Ubuntu Light's is 0.056 em) and full stop and colon
# dots 0.14 em square (0.11 em). First in the editor's proportional family; every other
# character falls through to egui's fonts.
marks=app/assets/fonts/DejaVuSans-marks.ttf
pyftsubset "$src" --unicodes="U+005F,U+002E,U+003A" --layout-features='' --no-hinting \
    --desubroutinize --output-file="$marks"
python3 - "$marks" <<'PY'
import sys
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont

path = sys.argv[1]
font = TTFont(path)
upm = font["head"].unitsPerEm
cmap = font.getBestCmap()


def boxes(char, rects):
    """Replaces the glyph of `char` by rectangles (x0, y0, x1, y1) in em."""
    name = cmap[ord(char)]
    width = font["hmtx"][name][0]
    pen = TTGlyphPen(font.getGlyphSet())
    for x0, y0, x1, y1 in rects:
        x0, x1 = round(x0 * upm), round(x1 * upm)
        y0, y1 = round(y0 * upm), round(y1 * upm)
        # Clockwise, as TrueType outlines are.
        pen.moveTo((x0, y0))
        pen.lineTo((x0, y1))
        pen.lineTo((x1, y1))
        pen.lineTo((x1, y0))
        pen.closePath()
    font["glyf"][name] = pen.glyph()
    font["hmtx"][name] = (width, round(min(r[0] for r in rects) * upm))


advance = lambda char: font["hmtx"][cmap[ord(char)]][0] / upm
boxes("_", [(0.0, -0.17, advance("_"), -0.08)])
dot = 0.14
mid = advance(".") / 2
boxes(".", [(mid - dot / 2, 0.0, mid + dot / 2, dot)])
mid = advance(":") / 2
boxes(":", [(mid - dot / 2, 0.0, mid + dot / 2, dot), (mid - dot / 2, 0.38, mid + dot / 2, 0.38 + dot)])
font.save(path)
PY
echo "wrote $marks ($(stat -c %s "$marks") bytes)"
