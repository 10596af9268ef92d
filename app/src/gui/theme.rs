//! Design tokens: the dark and light themes (`themes/*.ron`), the only place a colour is built.

use cachedit_nodes::registry::PortType;
use egui::Color32;
use serde::{Deserialize, Serialize};

/// A colour as written in a theme file: `(r, g, b, a)`, not premultiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rgba(pub [u8; 4]);

impl Default for Rgba {
    fn default() -> Self {
        Rgba([128, 128, 128, 255])
    }
}

impl Rgba {
    #[allow(clippy::disallowed_methods)] // the one place colours are built
    pub fn color(self) -> Color32 {
        let [r, g, b, a] = self.0;
        Color32::from_rgba_unmultiplied(r, g, b, a)
    }
}

/// Named colours of the editor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Colors {
    pub background: Rgba,
    pub panel: Rgba,
    pub canvas: Rgba,
    pub canvas_grid: Rgba,
    pub node: Rgba,
    pub node_header: Rgba,
    pub widget: Rgba,
    pub widget_hover: Rgba,
    pub widget_active: Rgba,
    pub text: Rgba,
    pub text_weak: Rgba,
    pub accent: Rgba,
    pub selection: Rgba,
    pub error: Rgba,
    pub warning: Rgba,
    pub ok: Rgba,
    pub running: Rgba,
    /// Step timeline: a call that ran every block.
    pub computed: Rgba,
    /// Step timeline: a call that reused the cached residual.
    pub reused: Rgba,
    /// Step timeline: a compute inside the warmup window.
    pub warmup: Rgba,
    /// Step timeline: a compute a guard imposed (last step, limits).
    pub forced: Rgba,
    /// Step timeline: a step not run yet.
    pub pending: Rgba,
    /// Schedule preview: a step the residual indicator decides at run time.
    pub undecided: Rgba,
    pub diff_line: Rgba,
    pub threshold_line: Rgba,
    pub time_bar: Rgba,
    pub shadow: Rgba,
}

/// Pin (and wire) colours per port type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PinColors {
    pub model: Rgba,
    pub cache_config: Rgba,
    pub image: Rgba,
    pub run_stats: Rgba,
}

/// Sizes, in points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spacing {
    pub item_spacing: [f32; 2],
    pub button_padding: [f32; 2],
    pub node_rounding: f32,
    pub node_padding: f32,
    /// Width and height of one step-timeline cell.
    pub timeline_cell: [f32; 2],
    /// Size of the plots in the Detailed Stats node.
    pub plot_size: [f32; 2],
}

impl Default for Spacing {
    fn default() -> Self {
        Spacing {
            item_spacing: [8.0, 5.0],
            button_padding: [6.0, 3.0],
            node_rounding: 6.0,
            node_padding: 8.0,
            timeline_cell: [9.0, 12.0],
            plot_size: [340.0, 110.0],
        }
    }
}

/// A whole theme file. Fields left out take their defaults (not `Theme::default`, which is
/// itself read from a file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Theme {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dark: bool,
    #[serde(default)]
    pub colors: Colors,
    #[serde(default)]
    pub pins: PinColors,
    #[serde(default)]
    pub spacing: Spacing,
}

impl Default for Theme {
    fn default() -> Self {
        Theme::builtin("dark").unwrap_or(Theme {
            name: "dark".into(),
            dark: true,
            colors: Colors::default(),
            pins: PinColors::default(),
            spacing: Spacing::default(),
        })
    }
}

/// The theme files shipped in `themes/`, compiled in.
pub const THEMES: &[(&str, &str)] = &[
    ("dark", include_str!("../../../themes/dark.ron")),
    ("light", include_str!("../../../themes/light.ron")),
];

impl Theme {
    /// Parses theme text; errors name the source and the line and column.
    pub fn parse(text: &str, source: &str) -> Result<Theme, String> {
        ron::from_str(text).map_err(|e| {
            format!(
                "{source}:{}:{}: {}",
                e.span.start.line, e.span.start.col, e.code
            )
        })
    }

    /// A built-in theme by name (`dark`, `light`).
    pub fn builtin(name: &str) -> Result<Theme, String> {
        let (_, text) = THEMES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("unknown theme {name:?}"))?;
        Theme::parse(text, &format!("themes/{name}.ron"))
    }

    pub fn pin(&self, ty: PortType) -> Color32 {
        match ty {
            PortType::Model => self.pins.model,
            PortType::CacheConfig => self.pins.cache_config,
            PortType::Image => self.pins.image,
            // A comparison is statistics too: it shares their colour.
            PortType::RunStats | PortType::Comparison => self.pins.run_stats,
        }
        .color()
    }

    /// Installs the theme's colours and spacing into egui's style.
    pub fn apply(&self, ctx: &egui::Context) {
        let c = &self.colors;
        let mut visuals = if self.dark {
            egui::Visuals::dark()
        } else {
            egui::Visuals::light()
        };
        visuals.override_text_color = Some(c.text.color());
        visuals.panel_fill = c.panel.color();
        visuals.window_fill = c.panel.color();
        visuals.extreme_bg_color = c.background.color();
        visuals.faint_bg_color = c.node.color();
        visuals.code_bg_color = c.widget.color();
        visuals.hyperlink_color = c.accent.color();
        visuals.error_fg_color = c.error.color();
        visuals.warn_fg_color = c.warning.color();
        visuals.selection.bg_fill = c.selection.color();
        visuals.selection.stroke.color = c.accent.color();
        visuals.window_shadow.color = c.shadow.color();
        visuals.popup_shadow.color = c.shadow.color();
        visuals.window_stroke.color = c.widget_hover.color();
        for (w, fill) in [
            (&mut visuals.widgets.noninteractive, c.node),
            (&mut visuals.widgets.inactive, c.widget),
            (&mut visuals.widgets.hovered, c.widget_hover),
            (&mut visuals.widgets.active, c.widget_active),
            (&mut visuals.widgets.open, c.widget_hover),
        ] {
            w.bg_fill = fill.color();
            w.weak_bg_fill = fill.color();
            w.fg_stroke.color = c.text.color();
        }
        visuals.widgets.noninteractive.bg_stroke.color = c.widget.color();
        let spacing = self.spacing.clone();
        ctx.all_styles_mut(move |style| {
            style.visuals = visuals.clone();
            style.spacing.item_spacing = spacing.item_spacing.into();
            style.spacing.button_padding = spacing.button_padding.into();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_themes_parse_and_set_every_token() {
        for (name, text) in THEMES {
            let theme = Theme::parse(text, name).expect("theme parses");
            assert_eq!(theme.name, *name);
            // A token left out would silently take the grey default.
            let text_tokens = text.matches(": (").count();
            assert!(text_tokens >= 36, "{name}: only {text_tokens} tokens");
            assert_ne!(theme.colors.reused, Rgba::default(), "{name}");
        }
    }

    #[test]
    fn a_broken_theme_names_line_and_column() {
        let err = Theme::parse("(\n  name: 3,\n)", "t.ron").expect_err("bad");
        assert!(err.starts_with("t.ron:2:"), "{err}");
    }
}
