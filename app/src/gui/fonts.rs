//! The editor's fonts: egui's defaults plus a symbol fallback (arrows, shapes, dingbats) cut
//! from DejaVu Sans, so that "→", "✕" and "▶" draw, and a thicker underscore that does not
//! vanish when the canvas is zoomed out (both made by `tools/make_symbol_font.sh`).

/// DejaVu Sans, only its symbol ranges (Bitstream Vera licence, `assets/fonts/`).
const SYMBOLS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-symbols.ttf");
const SYMBOLS_NAME: &str = "dejavu-symbols";
/// One glyph, `_`, 0.09 em thick (egui's Ubuntu Light draws it 0.056 em thick: under a pixel
/// once the canvas scales the text down).
const UNDERSCORE: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-underscore.ttf");
const UNDERSCORE_NAME: &str = "dejavu-underscore";

/// egui's default fonts with the symbol font as the last fallback of both families.
pub fn definitions() -> egui::FontDefinitions {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        SYMBOLS_NAME.to_string(),
        std::sync::Arc::new(egui::FontData::from_static(SYMBOLS)),
    );
    fonts.font_data.insert(
        UNDERSCORE_NAME.to_string(),
        std::sync::Arc::new(egui::FontData::from_static(UNDERSCORE)),
    );
    fonts
        .families
        .entry(egui::FontFamily::Proportional)
        .or_default()
        .insert(0, UNDERSCORE_NAME.to_string());
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
