//! The plugin API: each node kind declares its ports and params and knows how to run.
//!
//! Adding a kind = one file in `kinds/` implementing [`NodeKind`] plus one line in
//! [`Registry::builtin`] (in `kinds/mod.rs`, so that the registry does not depend on the kinds).
//! The registry owns what a kind sees of a run: [`NodeContext`], [`Data`] and [`NodeError`].

pub mod context;
pub mod data;

use crate::document::Value;
pub use context::NodeContext;
pub use data::Data;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The type carried by a port; a link must join ports of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortType {
    Model,
    CacheConfig,
    Image,
    RunStats,
    /// Step-cache configs compared side by side (the Compare node's result).
    Comparison,
}

impl PortType {
    pub fn name(self) -> &'static str {
        match self {
            PortType::Model => "MODEL",
            PortType::CacheConfig => "CACHE_CONFIG",
            PortType::Image => "IMAGE",
            PortType::RunStats => "RUN_STATS",
            PortType::Comparison => "COMPARISON",
        }
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A declared input or output port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub name: &'static str,
    pub ty: PortType,
    /// Inputs only: must the port be linked for the node to run?
    pub required: bool,
    pub help: &'static str,
}

impl PortSpec {
    pub const fn required(name: &'static str, ty: PortType, help: &'static str) -> Self {
        PortSpec {
            name,
            ty,
            required: true,
            help,
        }
    }

    pub const fn optional(name: &'static str, ty: PortType, help: &'static str) -> Self {
        PortSpec {
            name,
            ty,
            required: false,
            help,
        }
    }

    pub const fn output(name: &'static str, ty: PortType, help: &'static str) -> Self {
        PortSpec::required(name, ty, help)
    }
}

/// What values a param accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamKind {
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    /// Free text (paths, names).
    Text,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
}

/// A declared param: name, type and range, default, help text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: Value,
    pub help: &'static str,
    /// An expert knob: editors may collapse it (and show it on demand).
    pub advanced: bool,
    /// The param means something only while every one of these holds (e.g. `skip_interval`
    /// only under the counter strategies); editors hide it otherwise.
    pub applies_when: Vec<AppliesWhen>,
}

/// A condition on another param of the same node: its value (a choice, or `true` / `false`
/// for a boolean) is one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliesWhen {
    pub param: &'static str,
    pub values: &'static [&'static str],
}

impl AppliesWhen {
    fn holds(&self, value: Option<&Value>) -> bool {
        let text = match value {
            Some(Value::Text(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(other) => other.to_string(),
            None => return true,
        };
        self.values.contains(&text.as_str())
    }
}

impl ParamSpec {
    pub fn int(name: &'static str, default: i64, min: i64, max: i64, help: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Int { min, max },
            default: Value::Int(default),
            help,
            advanced: false,
            applies_when: Vec::new(),
        }
    }

    pub fn float(name: &'static str, default: f64, min: f64, max: f64, help: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Float { min, max },
            default: Value::Float(default),
            help,
            advanced: false,
            applies_when: Vec::new(),
        }
    }

    pub fn boolean(name: &'static str, default: bool, help: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Bool,
            default: Value::Bool(default),
            help,
            advanced: false,
            applies_when: Vec::new(),
        }
    }

    pub fn text(name: &'static str, default: &str, help: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Text,
            default: Value::Text(default.to_string()),
            help,
            advanced: false,
            applies_when: Vec::new(),
        }
    }

    pub fn choice(
        name: &'static str,
        default: &'static str,
        options: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Choice(options),
            default: Value::Text(default.to_string()),
            help,
            advanced: false,
            applies_when: Vec::new(),
        }
    }

    /// Marks the param as an expert knob (collapsed by default in the editor).
    pub fn advanced(mut self) -> Self {
        self.advanced = true;
        self
    }

    /// Declares that the param applies only while `param` has one of `values`.
    pub fn when(mut self, param: &'static str, values: &'static [&'static str]) -> Self {
        self.applies_when.push(AppliesWhen { param, values });
        self
    }

    /// Does the param apply, given the node's values (`value_of` a param name, `None` when
    /// the node has no such param)?
    pub fn applies(&self, value_of: impl Fn(&str) -> Option<Value>) -> bool {
        self.applies_when
            .iter()
            .all(|w| w.holds(value_of(w.param).as_ref()))
    }

    /// Checks a value against this spec; `Err` is a sentence saying what is wrong.
    /// An integer is accepted where a float is declared.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        match (&self.kind, value) {
            (ParamKind::Int { min, max }, Value::Int(v)) => {
                if v < min || v > max {
                    Err(format!("{v} is out of range {min}..={max}"))
                } else {
                    Ok(value.clone())
                }
            }
            (ParamKind::Float { min, max }, Value::Float(_) | Value::Int(_)) => {
                let v = value.as_f64().unwrap_or(f64::NAN);
                if !v.is_finite() || v < *min || v > *max {
                    Err(format!("{v} is out of range {min}..={max}"))
                } else {
                    Ok(Value::Float(v))
                }
            }
            (ParamKind::Bool, Value::Bool(_)) | (ParamKind::Text, Value::Text(_)) => {
                Ok(value.clone())
            }
            (ParamKind::Choice(options), Value::Text(s)) => {
                if options.contains(&s.as_str()) {
                    Ok(value.clone())
                } else {
                    Err(format!("{s:?} is not one of {}", options.join(", ")))
                }
            }
            (kind, v) => Err(format!(
                "expected {}, found {} {v}",
                kind_name(kind),
                v.type_name()
            )),
        }
    }
}

fn kind_name(kind: &ParamKind) -> &'static str {
    match kind {
        ParamKind::Int { .. } => "an integer",
        ParamKind::Float { .. } => "a number",
        ParamKind::Bool => "true or false",
        ParamKind::Text => "text",
        ParamKind::Choice(_) => "one of the listed options",
    }
}

/// Everything a kind declares about itself.
#[derive(Debug, Clone)]
pub struct KindSpec {
    /// Registry name used in files, e.g. `"LoadModel"`.
    pub name: &'static str,
    /// Title shown to people, e.g. `"Load Model"`.
    pub title: &'static str,
    pub category: &'static str,
    pub help: &'static str,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    pub params: Vec<ParamSpec>,
}

impl KindSpec {
    pub fn input(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// Resolved param values of one node (defaults filled in, already checked).
#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.0.get(name) {
            Some(Value::Int(i)) => Ok(*i),
            _ => Err(NodeError::Param(
                name.to_string(),
                "expected an integer".into(),
            )),
        }
    }

    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.0.get(name) {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            _ => Err(NodeError::Param(
                name.to_string(),
                "expected a number".into(),
            )),
        }
    }

    pub fn boolean(&self, name: &str) -> Result<bool, NodeError> {
        match self.0.get(name) {
            Some(Value::Bool(b)) => Ok(*b),
            _ => Err(NodeError::Param(
                name.to_string(),
                "expected true or false".into(),
            )),
        }
    }

    pub fn text(&self, name: &str) -> Result<&str, NodeError> {
        match self.0.get(name) {
            Some(Value::Text(s)) => Ok(s),
            _ => Err(NodeError::Param(name.to_string(), "expected text".into())),
        }
    }
}

/// Input data of one node, by port name (optional ports may be absent).
#[derive(Debug, Clone, Default)]
pub struct Inputs(pub BTreeMap<String, Data>);

impl Inputs {
    pub fn get(&self, port: &str) -> Option<&Data> {
        self.0.get(port)
    }

    pub fn require(&self, port: &str) -> Result<&Data, NodeError> {
        self.0
            .get(port)
            .ok_or_else(|| NodeError::MissingInput(port.to_string()))
    }
}

/// Output data of one node, by port name.
pub type Outputs = BTreeMap<String, Data>;

/// Why a node's run failed. The executor attaches the node id.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("param `{0}`: {1}")]
    Param(String, String),
    #[error("input `{0}` is not connected")]
    MissingInput(String),
    #[error("input `{port}`: expected {expected}, got {found}")]
    InputType {
        port: String,
        expected: PortType,
        found: PortType,
    },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheConfigError),
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
    /// The node's code panicked (a bug); the run stops at this node, nothing else is harmed.
    #[error("internal error (please report it): {0}")]
    Panicked(String),
}

/// What is known of a model before it is loaded (from a built-in config or `config.json`,
/// weights not read), for the checks `validate` makes before a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub num_classes: usize,
    pub in_channels: usize,
    pub patch_size: usize,
}

/// What a node's [`NodeKind::preflight`] may look at besides its params.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreflightContext<'a> {
    /// What is known of the model linked to the node's MODEL input.
    pub model: Option<&'a ModelFacts>,
    /// The folder outputs will be written to, when the check is made for a run (`validate`
    /// alone leaves it out and creates nothing).
    pub output_dir: Option<&'a std::path::Path>,
}

/// What a node's [`NodeKind::preflight`] found: facts for the nodes downstream and problems,
/// each naming the param at fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preflight {
    /// What this node's MODEL output will be.
    pub model: Option<ModelFacts>,
    /// `(param, message)` per problem.
    pub problems: Vec<(&'static str, String)>,
}

/// A node kind: declaration plus behaviour.
pub trait NodeKind: Send + Sync {
    fn spec(&self) -> KindSpec;
    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError>;
    /// Checks that look outside the document without running anything (files that params
    /// name, a model's classes, the output folder). Cheap: no weights are read.
    fn preflight(&self, _params: &Params, _ctx: &PreflightContext) -> Preflight {
        Preflight::default()
    }
}

/// All known node kinds, by registry name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, (KindSpec, Arc<dyn NodeKind>)>,
}

impl Registry {
    pub fn register(&mut self, kind: impl NodeKind + 'static) {
        let spec = kind.spec();
        self.kinds.insert(spec.name, (spec, Arc::new(kind)));
    }

    pub fn spec(&self, name: &str) -> Option<&KindSpec> {
        self.kinds.get(name).map(|(spec, _)| spec)
    }

    pub fn kind(&self, name: &str) -> Option<Arc<dyn NodeKind>> {
        self.kinds.get(name).map(|(_, kind)| kind.clone())
    }

    /// Every kind's spec, sorted by name.
    pub fn specs(&self) -> impl Iterator<Item = &KindSpec> {
        self.kinds.values().map(|(spec, _)| spec)
    }
}
