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

# A font with one glyph, a low line 0.09 em thick (Ubuntu Light's is 0.056 em, under one
# pixel at 14 px): first in the editor's proportional family, so that the underscores of
# param names still cover a pixel when the canvas is zoomed below 100 % and egui scales the
# text's mesh down instead of laying it out again.
under=app/assets/fonts/DejaVuSans-underscore.ttf
pyftsubset "$src" --unicodes="U+005F" --layout-features='' --no-hinting \
    --desubroutinize --output-file="$under"
python3 - "$under" <<'PY'
import sys
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont

path = sys.argv[1]
font = TTFont(path)
upm = font["head"].unitsPerEm
name = font.getBestCmap()[ord("_")]
width = font["hmtx"][name][0]
bottom, top = round(-0.17 * upm), round(-0.08 * upm)
pen = TTGlyphPen(font.getGlyphSet())
pen.moveTo((0, bottom))
pen.lineTo((0, top))
pen.lineTo((width, top))
pen.lineTo((width, bottom))
pen.closePath()
font["glyf"][name] = pen.glyph()
font["hmtx"][name] = (width, 0)
font.save(path)
PY
echo "wrote $under ($(stat -c %s "$under") bytes)"
