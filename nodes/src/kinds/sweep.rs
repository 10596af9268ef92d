//! Sweep: one base step-cache config (the CacheDit Advanced Config params) and up to two axes,
//! each a param name and a list of values; every combination becomes a cell of the same
//! comparison Compare makes (shared reference, same noise, rotating rounds).

use crate::compare::Cell;
use crate::document::Value;
use crate::exec::context::NodeContext;
use crate::kinds::cache_config::{config_from_params, CacheDitConfig};
use crate::kinds::compare::{compare_cells, sample_params};
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamKind, ParamSpec, Params, PortSpec,
    PortType,
};
use std::sync::Arc;

/// The second axis's choices: "none" (off), then every param an axis can sweep.
const AXIS_2: &[&str] = &[
    "none",
    "residual_diff_threshold",
    "Fn_compute_blocks",
    "Bn_compute_blocks",
    "warmup",
    "skip_interval",
    "max_continuous_cached_steps",
    "max_cached_steps",
    "strategy",
    "taylorseer",
    "taylorseer_order",
    "scm_policy",
    "noise_scale",
];

/// The params an axis can sweep.
pub const SWEEPABLE: &[&str] = AXIS_2.split_at(1).1;

/// The most cells one sweep makes (values of axis 1 × values of axis 2).
pub const MAX_CELLS: usize = 16;

pub struct Sweep;

impl NodeKind for Sweep {
    fn spec(&self) -> KindSpec {
        let mut params = vec![
            ParamSpec::choice(
                "axis_1",
                "residual_diff_threshold",
                SWEEPABLE,
                "the param the first axis sweeps",
            ),
            ParamSpec::text(
                "values_1",
                "0.04, 0.08, 0.12, 0.2",
                "its values, comma-separated",
            ),
            ParamSpec::choice("axis_2", "none", AXIS_2, "the param the second axis sweeps"),
            ParamSpec::text(
                "values_2",
                "",
                "its values, comma-separated (every pair with the first axis)",
            ),
        ];
        params.extend(sample_params());
        // The base config: every knob of CacheDit Advanced Config, swept ones overridden.
        params.extend(CacheDitConfig.spec().params);
        KindSpec {
            name: "Sweep",
            title: "Sweep",
            category: "step cache",
            help: "Sweeps one or two step-cache params over lists of values from a base config \
                   (the params below the axes) and compares every combination against one \
                   uncached reference, as Compare does.",
            inputs: vec![PortSpec::required(
                "model",
                PortType::Model,
                "the DiT every cell runs on",
            )],
            outputs: vec![
                PortSpec::output(
                    "comparison",
                    PortType::Comparison,
                    "the table: one row per combination, the reference first",
                ),
                PortSpec::output(
                    "grid",
                    PortType::Image,
                    "every sample (rows) under the reference and each combination (columns)",
                ),
            ],
            params,
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let model = inputs.require("model")?.as_model("model")?.clone();
        let steps = params.int("steps")? as usize;
        let mut cells = Vec::new();
        for combo in combinations(params)? {
            let config = config_from_params(&combo)?;
            crate::cache::check_run(&config, model.model.num_blocks(), steps)?;
            cells.push(Cell {
                config: Some(Arc::new(config)),
            });
        }
        compare_cells(ctx, &model, cells, params)
    }
}

/// Every combination of the axes' values, as the base params with those values set, axis 1
/// outermost; an axis value that does not parse (or is out of range) names its axis.
pub fn combinations(params: &Params) -> Result<Vec<Params>, NodeError> {
    let specs = CacheDitConfig.spec().params;
    let axis = |n: &str| -> Result<Option<(String, Vec<Value>)>, NodeError> {
        let name = params.text(&format!("axis_{n}"))?;
        if name == "none" {
            return Ok(None);
        }
        let field = format!("values_{n}");
        let spec = specs.iter().find(|s| s.name == name).ok_or_else(|| {
            NodeError::Param(format!("axis_{n}"), format!("cannot sweep {name:?}"))
        })?;
        let values: Vec<Value> = params
            .text(&field)?
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| parse_value(spec, v))
            .collect::<Result<_, _>>()
            .map_err(|m| NodeError::Param(field.clone(), format!("{name}: {m}")))?;
        if values.is_empty() {
            return Err(NodeError::Param(field, format!("give values for {name}")));
        }
        Ok(Some((name.to_string(), values)))
    };
    let first = axis("1")?
        .ok_or_else(|| NodeError::Param("axis_1".into(), "the first axis must be set".into()))?;
    let second = axis("2")?;
    if second.as_ref().is_some_and(|(n, _)| *n == first.0) {
        return Err(NodeError::Param(
            "axis_2".into(),
            format!("{} is already the first axis", first.0),
        ));
    }
    let n = first.1.len() * second.as_ref().map_or(1, |(_, v)| v.len());
    if n > MAX_CELLS {
        return Err(NodeError::Param(
            "values_1".into(),
            format!("{n} combinations; at most {MAX_CELLS} per sweep"),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for v1 in &first.1 {
        let mut p = params.clone();
        p.0.insert(first.0.clone(), v1.clone());
        match &second {
            None => out.push(p),
            Some((name, values)) => {
                for v2 in values {
                    let mut q = p.clone();
                    q.0.insert(name.clone(), v2.clone());
                    out.push(q);
                }
            }
        }
    }
    Ok(out)
}

/// `text` as a value of the param `spec`, within its range.
fn parse_value(spec: &ParamSpec, text: &str) -> Result<Value, String> {
    match &spec.kind {
        ParamKind::Int { min, max } => {
            let v: i64 = text
                .parse()
                .map_err(|_| format!("{text:?} is not a whole number"))?;
            if v < *min || v > *max {
                return Err(format!("{v} is outside {min}..={max}"));
            }
            Ok(Value::Int(v))
        }
        ParamKind::Float { min, max } => {
            let v: f64 = text
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?;
            if !(*min..=*max).contains(&v) {
                return Err(format!("{v} is outside {min}..={max}"));
            }
            Ok(Value::Float(v))
        }
        ParamKind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        ParamKind::Choice(options) => {
            if options.contains(&text) {
                Ok(Value::Text(text.to_string()))
            } else {
                Err(format!("{text:?} is not one of {}", options.join(", ")))
            }
        }
        ParamKind::Text => Ok(Value::Text(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(overrides: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        for s in Sweep.spec().params {
            p.0.insert(s.name.to_string(), s.default.clone());
        }
        for (k, v) in overrides {
            p.0.insert(k.to_string(), Value::Text(v.to_string()));
        }
        p
    }

    #[test]
    fn param_names_do_not_collide_and_every_axis_param_exists() {
        let spec = Sweep.spec();
        let mut names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate param names");
        let config = CacheDitConfig.spec().params;
        for name in SWEEPABLE {
            assert!(config.iter().any(|p| p.name == *name), "{name}");
        }
        assert_eq!(&AXIS_2[1..], SWEEPABLE);
    }

    #[test]
    fn two_axes_expand_to_every_pair_axis_1_outermost() {
        let p = params(&[
            ("values_1", "0.04, 0.2"),
            ("axis_2", "Fn_compute_blocks"),
            ("values_2", "1, 4, 8"),
        ]);
        let combos = combinations(&p).unwrap();
        let configs: Vec<_> = combos
            .iter()
            .map(|c| config_from_params(c).unwrap())
            .collect();
        let got: Vec<(f64, usize)> = configs
            .iter()
            .map(|c| (c.db.residual_diff_threshold, c.db.fn_compute_blocks))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.04, 1),
                (0.04, 4),
                (0.04, 8),
                (0.2, 1),
                (0.2, 4),
                (0.2, 8)
            ]
        );
    }

    #[test]
    fn a_choice_axis_and_bad_values_name_the_field() {
        let p = params(&[("axis_1", "strategy"), ("values_1", "fixed, adaptive")]);
        let configs: Vec<_> = combinations(&p)
            .unwrap()
            .iter()
            .map(|c| config_from_params(c).unwrap().strategy)
            .collect();
        assert_eq!(configs.len(), 2);
        let bad = params(&[("axis_1", "warmup"), ("values_1", "2, x")]);
        match combinations(&bad) {
            Err(NodeError::Param(field, m)) => {
                assert_eq!(field, "values_1");
                assert!(m.contains("\"x\""), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let same = params(&[("axis_2", "residual_diff_threshold"), ("values_2", "0.1")]);
        assert!(matches!(combinations(&same), Err(NodeError::Param(f, _)) if f == "axis_2"));
        let many = params(&[
            ("values_1", "0.01, 0.02, 0.03, 0.04, 0.05"),
            ("axis_2", "warmup"),
            ("values_2", "1, 2, 3, 4"),
        ]);
        assert!(matches!(combinations(&many), Err(NodeError::Param(f, _)) if f == "values_1"));
    }
}
