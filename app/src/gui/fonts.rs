//! The editor's fonts: egui's defaults plus a symbol fallback (arrows, shapes, dingbats) cut
//! from DejaVu Sans, so that "→", "✕" and "▶" draw, and heavier `_ . :` marks that do not
//! vanish when the canvas is zoomed out (both made by `tools/make_symbol_font.sh`).

/// DejaVu Sans, only its symbol ranges (Bitstream Vera licence, `assets/fonts/`).
const SYMBOLS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-symbols.ttf");
const SYMBOLS_NAME: &str = "dejavu-symbols";
/// Three glyphs, `_ . :`, heavier than egui's Ubuntu Light (whose low line is 0.056 em thick and
/// dots 0.11 em: under a pixel once the zoomed-out canvas scales the text down).
const MARKS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-marks.ttf");
const MARKS_NAME: &str = "dejavu-marks";

/// egui's default fonts with the symbol font as the last fallback of both families.
pub fn definitions() -> egui::FontDefinitions {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        SYMBOLS_NAME.to_string(),
        std::sync::Arc::new(egui::FontData::from_static(SYMBOLS)),
    );
    fonts.font_data.insert(
        MARKS_NAME.to_string(),
        std::sync::Arc::new(egui::FontData::from_static(MARKS)),
    );
    fonts
        .families
        .entry(egui::FontFamily::Proportional)
        .or_default()
        .insert(0, MARKS_NAME.to_string());
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push(SYMBOLS_NAME.to_string());
    }
    fonts
}

/// Installs [`definitions`] on `ctx` (once per context; egui rebuilds its atlas).
pub fn install(ctx: &egui::Context) {
    ctx.set_fonts(definitions());
}
