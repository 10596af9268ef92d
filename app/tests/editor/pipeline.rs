//! A DiT pipeline folder in the editor: `workflows/dit_pipeline.ron` runs with its VAE, the
//! Load Model node says what it loaded, the Sampler shows a VAE-decoded RGB image and the
//! Detailed Stats timeline has every step.

use super::*;

#[test]
fn the_dit_pipeline_example_runs_in_the_editor_through_its_vae() {
    let e = env();
    let mut wf = load_workflow(&repo().join("workflows/dit_pipeline.ron")).expect("example");
    // The example names the folder relative to the repository root; tests run elsewhere.
    let folder = repo().join("nodes/tests/fixtures/dit_pipeline");
    let load = wf
        .nodes
        .iter_mut()
        .find(|n| n.kind == "LoadModel")
        .expect("Load Model");
    load.params
        .insert("model".into(), Value::Text(folder.display().to_string()));
    let mut h = fitted(app_with(&e, wf));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(120));
    let _ = h.run_ok();
    let info = h
        .state()
        .runner
        .info
        .get(&NodeId(1))
        .cloned()
        .expect("Load Model's info");
    assert!(info.contains("VAE: 4 latent channels"), "{info}");
    h.get_by_label_contains("VAE: 4 latent channels");
    let stats = h
        .state()
        .runner
        .stats_for(h.state().doc.workflow(), NodeId(5))
        .cloned()
        .expect("Detailed Stats has the Sampler's stats");
    assert_eq!(stats.steps.len(), 12, "one timeline cell per step");
    assert!(stats.summary.as_ref().is_some_and(|s| s.reused_calls > 0));
    // The Sampler's image is the VAE's 16×16 RGB, not the ×8 latent preview.
    let preview = h
        .state()
        .runner
        .previews
        .get(&NodeId(3))
        .cloned()
        .expect("the Sampler's image");
    assert_eq!((preview.width, preview.height), (16, 16));
}

#[test]
fn every_method_runs_on_flux_in_the_editor_with_its_decisions_on_the_timeline() {
    let e = env();
    let mut wf = load_workflow(&repo().join("workflows/flux_methods.ron")).expect("example");
    let folder = repo().join("nodes/tests/fixtures/flux_pipeline");
    for n in wf.nodes.iter_mut().filter(|n| n.kind == "LoadModel") {
        n.params
            .insert("model".into(), Value::Text(folder.display().to_string()));
    }
    let samplers: Vec<NodeId> = wf
        .nodes
        .iter()
        .filter(|n| n.kind == "Sampler")
        .map(|n| n.id)
        .collect();
    assert_eq!(samplers.len(), 8, "one Sampler per method");
    let mut h = fitted(app_with(&e, wf));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(180));
    let _ = h.run_ok();
    let mut signatures = Vec::new();
    for id in samplers {
        let stats = h
            .state()
            .runner
            .stats_for(h.state().doc.workflow(), id)
            .cloned()
            .expect("the Sampler's stats");
        assert_eq!(stats.steps.len(), 12, "one timeline cell per step");
        let summary = stats.summary.as_ref().expect("a cache summary");
        assert!(
            stats.calls.iter().all(|c| c.step < 12),
            "{}: every call on the timeline",
            summary.signature
        );
        signatures.push(summary.signature.clone());
    }
    for prefix in [
        "FBCache",
        "TeaCache",
        "MagCache",
        "PAB",
        "FasterCache",
        "DBPrune",
        "EasyCache",
        "FastCache",
    ] {
        assert!(
            signatures.iter().any(|s| s.starts_with(prefix)),
            "{prefix} in {signatures:?}"
        );
    }
}
