//! Format upgrades: every older `.ron` workflow version is brought up to [`FORMAT_VERSION`] here.

use super::GraphError;
use crate::document::{Workflow, FORMAT_VERSION};

/// Upgrades a freshly parsed workflow to [`FORMAT_VERSION`].
///
/// Version 0 (an explicit `version: 0`) is read as version 1. A version newer than this build
/// knows is refused with [`GraphError::NewerVersion`]. Future migrations go in the loop below,
/// one step per version.
pub fn upgrade(mut wf: Workflow, source_name: &str) -> Result<Workflow, GraphError> {
    if wf.version > FORMAT_VERSION {
        return Err(GraphError::NewerVersion {
            source_name: source_name.to_string(),
            found: wf.version,
            supported: FORMAT_VERSION,
        });
    }
    if wf.version == 0 {
        wf.version = 1;
    }
    while wf.version < FORMAT_VERSION {
        // One arm per step, e.g. `1 => wf = v1_to_v2(wf)`.
        wf.version += 1;
    }
    Ok(wf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_zero_becomes_current() {
        let wf = Workflow {
            version: 0,
            ..Workflow::default()
        };
        let wf = upgrade(wf, "a.ron").unwrap();
        assert_eq!(wf.version, FORMAT_VERSION);
    }

    #[test]
    fn current_version_is_unchanged() {
        let wf = Workflow::default();
        assert_eq!(upgrade(wf.clone(), "a.ron").unwrap(), wf);
    }

    #[test]
    fn newer_version_is_refused() {
        let wf = Workflow {
            version: FORMAT_VERSION + 1,
            ..Workflow::default()
        };
        match upgrade(wf, "new.ron") {
            Err(GraphError::NewerVersion {
                source_name,
                found,
                supported,
            }) => {
                assert_eq!(source_name, "new.ron");
                assert_eq!(found, FORMAT_VERSION + 1);
                assert_eq!(supported, FORMAT_VERSION);
            }
            other => panic!("expected NewerVersion, got {other:?}"),
        }
    }

    #[test]
    fn newer_version_message_names_file() {
        let wf = Workflow {
            version: 99,
            ..Workflow::default()
        };
        let msg = upgrade(wf, "new.ron").unwrap_err().to_string();
        assert!(msg.contains("new.ron") && msg.contains("99"), "{msg}");
    }
}
