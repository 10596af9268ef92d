//! A diffusers `scheduler_config.json`: read leniently (Python's non-strict JSON), kept as its
//! fields, and read field by field, with each class's defaults, by the scheduler being built.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest scheduler config read (real ones are a few hundred bytes; `trained_betas` of
/// 1000 floats is about 25 KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where the built-in config comes from, as errors name it.
const DIT_DEFAULT_ORIGIN: &str = "built-in DiT scheduler config";

/// Bare non-finite tokens Python's `json` writes (`-Infinity` first: it contains `Infinity`).
const NON_FINITE_TOKENS: [(&str, f64); 3] = [
    ("-Infinity", f64::NEG_INFINITY),
    ("Infinity", f64::INFINITY),
    ("NaN", f64::NAN),
];

/// What a bare non-finite token becomes before serde_json parses the text: a string no decoded
/// string of the original text may start with (checked, so it is never misread).
const NON_FINITE_MARK: &str = "\u{1}cachedit-non-finite:";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerConfigError {
    /// The file itself: missing, too large, not a regular file, not JSON, not an object.
    #[error("{origin}: {message}")]
    File { origin: String, message: String },
    /// One field has a value this app does not implement or that has the wrong type.
    #[error("{origin}: field `{field}` = {value}: {message}")]
    Field {
        origin: String,
        field: String,
        value: String,
        message: String,
    },
    /// The config is fine but cannot run this many steps (diffusers raises too).
    #[error("{origin}: {message}")]
    Steps { origin: String, message: String },
}

/// A scheduler config: the fields of a diffusers `scheduler_config.json` (or DiT's, built in)
/// and where it came from. Which fields count, and their defaults, is up to the scheduler
/// class that is built from it, as `SomeScheduler.from_config(config)` in diffusers.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    fields: BTreeMap<String, Value>,
    origin: String,
    source: Option<PathBuf>,
}

impl Default for SchedulerConfig {
    /// DiT's scheduler config (facebook/DiT-XL-2-256): diffusers' defaults with
    /// `clip_sample: false`. Built-in models and plain checkpoints sample with it.
    fn default() -> Self {
        SchedulerConfig::dit_default()
    }
}

impl SchedulerConfig {
    /// DiT's scheduler config; see [`Default`].
    pub fn dit_default() -> Self {
        let mut fields = BTreeMap::new();
        fields.insert("clip_sample".to_string(), Value::Bool(false));
        SchedulerConfig {
            fields,
            origin: DIT_DEFAULT_ORIGIN.to_string(),
            source: None,
        }
    }

    /// FLUX.1's scheduler config, for a bare FLUX transformer folder: dev's (dynamic
    /// shifting) when the model embeds guidance, else schnell's (a fixed shift of 1).
    pub fn flux_default(dev: bool) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(
            "_class_name".to_string(),
            Value::String("FlowMatchEulerDiscreteScheduler".into()),
        );
        fields.insert(
            "shift".to_string(),
            Value::from(if dev { 3.0 } else { 1.0 }),
        );
        fields.insert("use_dynamic_shifting".to_string(), Value::Bool(dev));
        fields.insert("base_image_seq_len".to_string(), Value::from(256));
        fields.insert("max_image_seq_len".to_string(), Value::from(4096));
        fields.insert("base_shift".to_string(), Value::from(0.5));
        fields.insert("max_shift".to_string(), Value::from(1.15));
        SchedulerConfig {
            fields,
            origin: format!(
                "built-in FLUX.1-{} scheduler config",
                if dev { "dev" } else { "schnell" }
            ),
            source: None,
        }
    }

    /// Reads and checks `path` (see [`SchedulerConfig::parse`] and [`SchedulerConfig::check`]).
    pub fn read(path: &Path) -> Result<Self, SchedulerConfigError> {
        let origin = path.display().to_string();
        let file_error = |message: String| SchedulerConfigError::File {
            origin: origin.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| file_error(e.to_string()))?;
        if !meta.is_file() {
            return Err(file_error("not a regular file".into()));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(file_error(format!(
                "{} bytes is more than a scheduler config may have ({MAX_CONFIG_BYTES})",
                meta.len()
            )));
        }
        let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
        // The length may change between metadata and read: read no more than the cap anyway.
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| file_error(e.to_string()))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(file_error(format!(
                "more than a scheduler config may have ({MAX_CONFIG_BYTES} bytes)"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| file_error(e.to_string()))?;
        let mut config = SchedulerConfig::parse(&text, &origin)?;
        config.source = Some(path.to_path_buf());
        config.check()?;
        Ok(config)
    }

    /// Parses the text of a `scheduler_config.json` (`origin` names it in errors). Accepts the
    /// bare `NaN`, `Infinity` and `-Infinity` Python writes; drops the keys listed in
    /// `_use_default_values`, as diffusers' `from_config` does.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SchedulerConfigError> {
        let file_error = |message: String| SchedulerConfigError::File {
            origin: origin.to_string(),
            message,
        };
        let strict = mark_non_finite(text).map_err(file_error)?;
        let value: Value = serde_json::from_str(&strict).map_err(|e| file_error(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(file_error("is not a JSON object".into()));
        };
        let defaulted = defaulted_keys(&object);
        let fields = object
            .into_iter()
            .filter(|(k, _)| k != "_use_default_values" && !defaulted.contains(k))
            .collect();
        Ok(SchedulerConfig {
            fields,
            origin: origin.to_string(),
            source: None,
        })
    }

    /// The file this config was read from; `None` for the built-in one.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// How errors name this config: its path, or "built-in DiT scheduler config".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `_class_name`: the class that wrote the file (informational: the Sampler picks the class).
    pub fn class_name(&self) -> Option<&str> {
        self.fields.get("_class_name").and_then(Value::as_str)
    }

    /// Checks what can be checked before the Sampler picks the class: every field of the
    /// class that wrote the file when it is one of ours, else the fields all three share.
    pub fn check(&self) -> Result<(), SchedulerConfigError> {
        use super::SchedulerKind;
        match self.class_name().and_then(SchedulerKind::from_class_name) {
            Some(kind) => kind.check_config(self),
            None => super::table::TrainSchedule::from_config(self).map(|_| ()),
        }
    }

    fn value(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// An error about `field` (with its value as written) in this config.
    pub fn field_error(&self, field: &str, message: impl Into<String>) -> SchedulerConfigError {
        SchedulerConfigError::Field {
            origin: self.origin.clone(),
            field: field.to_string(),
            value: self.value(field).map_or("(absent)".into(), show),
            message: message.into(),
        }
    }

    /// An error about running `steps` steps with this config.
    pub fn steps_error(&self, message: impl Into<String>) -> SchedulerConfigError {
        SchedulerConfigError::Steps {
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    /// A boolean field; absent → `default`, `null` → false (Python's truthiness of `None`).
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool, SchedulerConfigError> {
        match self.value(field) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.field_error(field, "expected true or false")),
        }
    }

    /// A non-negative integer field; absent → `default`.
    pub fn usize_or(&self, field: &str, default: usize) -> Result<usize, SchedulerConfigError> {
        match self.value(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.field_error(field, "expected a non-negative integer")),
        }
    }

    /// A number field (also `Infinity`, `-Infinity`, `NaN`); absent or `null` → `None`.
    pub fn f64_opt(&self, field: &str) -> Result<Option<f64>, SchedulerConfigError> {
        match self.value(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => number(v)
                .map(Some)
                .ok_or_else(|| self.field_error(field, "expected a number")),
        }
    }

    /// A number field; absent → `default` (`null` is refused: diffusers would fail on it).
    pub fn f64_or(&self, field: &str, default: f64) -> Result<f64, SchedulerConfigError> {
        match self.value(field) {
            None => Ok(default),
            Some(v) => number(v).ok_or_else(|| self.field_error(field, "expected a number")),
        }
    }

    /// A list of numbers; absent or `null` → `None`.
    pub fn f64_list(&self, field: &str) -> Result<Option<Vec<f64>>, SchedulerConfigError> {
        match self.value(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(number)
                .collect::<Option<Vec<f64>>>()
                .map(Some)
                .ok_or_else(|| self.field_error(field, "expected a list of numbers")),
            Some(_) => Err(self.field_error(field, "expected a list of numbers")),
        }
    }

    /// A string field; absent → `None`; anything else than a string is refused.
    pub fn str_opt(&self, field: &str) -> Result<Option<&str>, SchedulerConfigError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) if !s.starts_with(NON_FINITE_MARK) => Ok(Some(s)),
            Some(_) => Err(self.field_error(field, "expected a string")),
        }
    }

    /// A string field that may be `null`; absent or `null` → `None`.
    pub fn str_or_null(&self, field: &str) -> Result<Option<&str>, SchedulerConfigError> {
        match self.value(field) {
            Some(Value::Null) => Ok(None),
            _ => self.str_opt(field),
        }
    }

    /// A string field that must be one of `choices` (name, value); absent → `default`.
    pub fn choice_or<T: Copy>(
        &self,
        field: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, SchedulerConfigError> {
        let Some(name) = self.str_opt(field)? else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let known: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.field_error(field, format!("supported here: {}", known.join(", ")))
            })
    }

    /// Refuses `field` unless it is absent, `null`, or false: a feature this app does not
    /// implement (`what` says which).
    pub fn refuse_true(&self, field: &str, what: &str) -> Result<(), SchedulerConfigError> {
        match self.bool_or(field, false) {
            Ok(false) => Ok(()),
            Ok(true) => Err(self.field_error(field, format!("{what} is not implemented"))),
            Err(e) => Err(e),
        }
    }
}

/// The keys `_use_default_values` lists (diffusers wrote them but they were never set).
fn defaulted_keys(object: &Map<String, Value>) -> Vec<String> {
    object
        .get("_use_default_values")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON number, or a marked non-finite token.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let token = s.strip_prefix(NON_FINITE_MARK)?;
            NON_FINITE_TOKENS
                .iter()
                .find(|(t, _)| *t == token)
                .map(|(_, x)| *x)
        }
        _ => None,
    }
}

/// A value as written in the file (non-finite tokens bare again, long lists shortened).
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => match s.strip_prefix(NON_FINITE_MARK) {
            Some(token) => token.to_string(),
            None => Value::String(s.clone()).to_string(),
        },
        Value::Array(items) if items.len() > 4 => {
            let head: Vec<String> = items.iter().take(3).map(show).collect();
            format!("[{}, … ({} items)]", head.join(", "), items.len())
        }
        Value::Array(items) => {
            let all: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", all.join(", "))
        }
        other => other.to_string(),
    }
}

/// Rewrites the bare `NaN` / `Infinity` / `-Infinity` tokens outside strings into marked
/// strings serde_json accepts. Fails if a string of the text itself starts with the mark.
fn mark_non_finite(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let len = string_literal_len(rest);
            let literal = &rest[..len];
            // A well-formed literal decodes; a malformed one is left to serde_json to report.
            if let Ok(decoded) = serde_json::from_str::<String>(literal) {
                if decoded.starts_with(NON_FINITE_MARK) {
                    return Err("a string starts with a reserved control character".into());
                }
            }
            out.push_str(literal);
            rest = &rest[len..];
            continue;
        }
        if let Some((token, _)) = NON_FINITE_TOKENS.iter().find(|(t, _)| rest.starts_with(t)) {
            out.push_str(&Value::String(format!("{NON_FINITE_MARK}{token}")).to_string());
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// Bytes of the string literal at the start of `s` (which starts with `"`), up to and with
/// the closing quote, or all of `s` if it never closes.
fn string_literal_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_tokens_are_read_outside_strings_only() {
        let text =
            r#"{"a": -Infinity, "b": [NaN, Infinity, 1.5], "c": "NaN -Infinity \" Infinity"}"#;
        let c = SchedulerConfig::parse(text, "t.json").unwrap();
        assert_eq!(c.f64_opt("a").unwrap(), Some(f64::NEG_INFINITY));
        let b = c.f64_list("b").unwrap().unwrap();
        assert!(b[0].is_nan() && b[1] == f64::INFINITY && b[2] == 1.5);
        assert_eq!(c.str_opt("c").unwrap(), Some("NaN -Infinity \" Infinity"));
        // A marked value is a number, not a string.
        assert!(c
            .str_opt("a")
            .unwrap_err()
            .to_string()
            .contains("-Infinity"));
    }

    #[test]
    fn a_string_that_looks_like_the_mark_is_refused_not_misread() {
        let text = "{\"a\": \"\\u0001cachedit-non-finite:NaN\"}";
        let err = SchedulerConfig::parse(text, "t.json").unwrap_err();
        assert!(err.to_string().starts_with("t.json: "), "{err}");
    }

    #[test]
    fn bad_json_names_the_file() {
        let err = SchedulerConfig::parse("{\"a\": Infinit}", "x/scheduler_config.json");
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("x/scheduler_config.json"));
        let err = SchedulerConfig::parse("[1]", "y.json").unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn use_default_values_keys_count_as_absent() {
        let text =
            r#"{"steps_offset": 3, "clip_sample": true, "_use_default_values": ["steps_offset"]}"#;
        let c = SchedulerConfig::parse(text, "t.json").unwrap();
        assert_eq!(c.usize_or("steps_offset", 0).unwrap(), 0);
        assert!(c.bool_or("clip_sample", false).unwrap());
    }
}
