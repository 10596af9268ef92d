//! Node reuse: a node's key hashes its kind, resolved params and upstream keys, so a node
//! whose key is unchanged since the last run is not run again.

use crate::document::Value;
use crate::registry::Params;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// Key of one node for this run. `upstream` is `(input port, upstream key, upstream port)`,
/// in port order.
pub fn node_key(kind: &str, params: &Params, upstream: &[(String, u64, String)]) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    for (name, value) in &params.0 {
        name.hash(&mut h);
        match value {
            Value::Bool(b) => (0u8, *b).hash(&mut h),
            Value::Int(i) => (1u8, *i).hash(&mut h),
            Value::Float(f) => (2u8, f.to_bits()).hash(&mut h),
            Value::Text(s) => (3u8, s).hash(&mut h),
        }
    }
    upstream.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Value)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn key_changes_with_kind_params_and_upstream() {
        let p = params(&[("steps", Value::Int(25))]);
        let up = vec![("model".to_string(), 7u64, "model".to_string())];
        let k = node_key("Sampler", &p, &up);
        assert_eq!(k, node_key("Sampler", &p, &up));
        assert_ne!(k, node_key("Other", &p, &up));
        assert_ne!(
            k,
            node_key("Sampler", &params(&[("steps", Value::Int(26))]), &up)
        );
        assert_ne!(
            k,
            node_key("Sampler", &params(&[("steps", Value::Float(25.0))]), &up)
        );
        let up2 = vec![("model".to_string(), 8u64, "model".to_string())];
        assert_ne!(k, node_key("Sampler", &p, &up2));
    }
}
