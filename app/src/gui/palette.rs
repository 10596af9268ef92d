//! The node palette: kinds by category with a search field; click or drag one onto the canvas.

use cachedit_nodes::registry::{KindSpec, Registry};
use egui::Ui;

/// Drag-and-drop payload: a kind dragged from the palette.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindPayload(pub String);

/// Does a kind match a (lower-case) search query by name, title, category or help?
pub fn matches(spec: &KindSpec, query: &str) -> bool {
    query.is_empty()
        || [spec.name, spec.title, spec.category, spec.help]
            .iter()
            .any(|s| s.to_lowercase().contains(query))
}

/// Draws the palette; returns the kind the user clicked.
pub fn palette(ui: &mut Ui, registry: &Registry, search: &mut String) -> Option<String> {
    let mut clicked = None;
    ui.heading("Nodes");
    ui.add(
        egui::TextEdit::singleline(search)
            .hint_text("search")
            .desired_width(f32::INFINITY),
    );
    let query = search.to_lowercase();
    let mut categories: Vec<&str> = registry.specs().map(|s| s.category).collect();
    categories.sort_unstable();
    categories.dedup();
    for category in categories {
        let specs: Vec<&KindSpec> = registry
            .specs()
            .filter(|s| s.category == category && matches(s, &query))
            .collect();
        if specs.is_empty() {
            continue;
        }
        ui.add_space(4.0);
        ui.weak(category);
        for spec in specs {
            let response = ui
                .add(egui::Button::new(spec.title).sense(egui::Sense::click_and_drag()))
                .on_hover_text(spec.help);
            if response.drag_started() {
                response.dnd_set_drag_payload(KindPayload(spec.name.to_string()));
            }
            if response.clicked() {
                clicked = Some(spec.name.to_string());
            }
        }
    }
    ui.add_space(8.0);
    ui.weak("Click to add, drag onto the canvas, or right-click the canvas.");
    clicked
}
