//! Reading and writing workflows as `.ron` text, with located parse errors and atomic saves.
//!
//! The format (a node's `pos` is a RON tuple, `(x, y)`; `title` may be written as `"text"` or
//! `Some("text")`; fields left out take their defaults; unknown fields are ignored):
//!
//! ```ron
//! (
//!     version: 1,
//!     nodes: [
//!         (id: 1, kind: "LoadModel", pos: (40.0, 80.0), params: {"model": "dit-tiny"}),
//!         (id: 2, kind: "Sampler", pos: (320.0, 80.0), params: {"steps": 25, "guidance": 4.0}),
//!     ],
//!     links: [
//!         (from: (node: 1, port: "model"), to: (node: 2, port: "model")),
//!     ],
//! )
//! ```

use super::{migrate, GraphError};
use crate::document::Workflow;
use ron::error::Span;
use ron::extensions::Extensions;
use ron::ser::PrettyConfig;
use std::io;
use std::path::Path;

/// Parses `.ron` text into a workflow and upgrades it to the current format version.
/// `source_name` (usually the file path) names the text in error messages.
pub fn parse_workflow(text: &str, source_name: &str) -> Result<Workflow, GraphError> {
    // Editors may leave a byte-order mark; it is invisible, so columns don't count it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let options = ron::Options::default().with_default_extension(Extensions::IMPLICIT_SOME);
    let wf: Workflow = options.from_str(text).map_err(|e| {
        let (line, column) = token_start(text, &e.span);
        GraphError::Parse {
            source_name: source_name.to_string(),
            line,
            column,
            message: e.code.to_string(),
        }
    })?;
    migrate::upgrade(wf, source_name)
}

/// The 1-based line and column an error points at. ron may start a span at the blank before
/// the offending token; this moves it onto the token when the token lies within the span.
fn token_start(text: &str, span: &Span) -> (usize, usize) {
    let start = (span.start.line.max(1), span.start.col.max(1));
    let end = (span.end.line, span.end.col);
    let (mut line, mut col) = start;
    for l in text.split('\n').skip(start.0 - 1) {
        let skip = if line == start.0 { start.1 - 1 } else { 0 };
        for c in l.chars().skip(skip) {
            if (line, col) > end {
                return start;
            }
            if !c.is_whitespace() {
                return (line, col);
            }
            col += 1;
        }
        line += 1;
        col = 1;
    }
    start
}

/// The largest workflow file read (a 100,000-node workflow is about 14 MiB).
pub const MAX_WORKFLOW_BYTES: u64 = 64 << 20;

/// Reads and parses a workflow file (a regular file of at most [`MAX_WORKFLOW_BYTES`]).
pub fn load_workflow(path: &Path) -> Result<Workflow, GraphError> {
    let bytes = crate::safe_io::read_bounded(path, MAX_WORKFLOW_BYTES)
        .map_err(|source| io_error(path, source))?;
    let source_name = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // `valid` is valid UTF-8 by construction; lossy is just a panic-free way to get a str.
        let valid = String::from_utf8_lossy(valid);
        let line = 1 + valid.matches('\n').count();
        let column = 1 + valid.rsplit('\n').next().map_or(0, |l| l.chars().count());
        GraphError::Parse {
            source_name: source_name.clone(),
            line,
            column,
            message: "the file is not valid UTF-8 text".to_string(),
        }
    })?;
    parse_workflow(&text, &source_name)
}

/// The workflow as pretty `.ron` text: one line per node and per link, params sorted by
/// name, floats always written with a `.` or exponent (so `4.0` stays a float), `\n` line
/// ends, and a final newline. The same workflow always gives the same text.
pub fn to_ron_string(wf: &Workflow) -> Result<String, GraphError> {
    let config = PrettyConfig::new()
        .depth_limit(2)
        .struct_names(false)
        .new_line("\n")
        .indentor("    ");
    let mut text =
        ron::ser::to_string_pretty(wf, config).map_err(|e| GraphError::Serialize(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Saves the workflow so that a crash mid-save never leaves a broken file: the text goes to a
/// temporary file in the same folder, is flushed to disk, then renamed over `path`.
pub fn save_workflow_atomic(path: &Path, wf: &Workflow) -> Result<(), GraphError> {
    save_workflow_atomic_with_header(path, wf, "")
}

/// As [`save_workflow_atomic`], with `header` (comment lines, see [`comments_of`]) written
/// before the workflow, so that a file's leading comments survive a save.
pub fn save_workflow_atomic_with_header(
    path: &Path,
    wf: &Workflow,
    header: &str,
) -> Result<(), GraphError> {
    let mut text = header.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&to_ron_string(wf)?);
    crate::safe_io::write_atomic(path, text.as_bytes()).map_err(|source| io_error(path, source))
}

/// The comments of a `.ron` text: the leading block (comment lines before the workflow,
/// which a save keeps) and whether there are comments anywhere after it (which a save,
/// writing the document anew, drops).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    /// The text up to the end of the last leading comment, newline included; empty if none.
    pub header: String,
    /// Comments inside or after the workflow.
    pub in_body: bool,
}

/// Finds the comments of `text`, skipping string literals (RON's `//` and `/* */`, nested
/// block comments included).
pub fn comments_of(text: &str) -> Comments {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut header_end = 0;
    let mut in_header = true;
    let mut in_body = false;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            if in_header {
                header_end = end;
            } else {
                in_body = true;
            }
            i = end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut j = i;
            while j < bytes.len() {
                if bytes[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            if in_header {
                // The rest of the line the block ends on belongs to the header too.
                header_end = text[j..].find('\n').map_or(bytes.len(), |n| j + n + 1);
            } else {
                in_body = true;
            }
            i = j;
        } else if bytes[i] == b'"' {
            in_header = false;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            if !bytes[i].is_ascii_whitespace() {
                in_header = false;
            }
            i += 1;
        }
    }
    Comments {
        header: text[..header_end.min(text.len())].to_string(),
        in_body,
    }
}

fn io_error(path: &Path, source: io::Error) -> GraphError {
    GraphError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn comments_are_told_apart_header_from_body_and_strings_are_skipped() {
        let text = "// A header\n// two lines\n\n(\n    version: 1, // body\n)\n";
        let c = comments_of(text);
        assert_eq!(c.header, "// A header\n// two lines\n");
        assert!(c.in_body);
        let only_header = comments_of("/* block\n /* nested */ */\n(version: 1)\n");
        assert_eq!(only_header.header, "/* block\n /* nested */ */\n");
        assert!(!only_header.in_body);
        let in_string = comments_of(r#"(nodes: [(kind: "a // b /* c")])"#);
        assert_eq!(in_string, Comments::default());
        let escaped = comments_of(r#"(x: "q\" // still a string") // real"#);
        assert!(escaped.in_body && escaped.header.is_empty());
    }

    #[test]
    fn a_save_with_a_header_keeps_it_and_reads_back_the_same_workflow() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("wf.ron");
        let wf = parse_workflow(EXAMPLE, "t").expect("parses");
        save_workflow_atomic_with_header(&path, &wf, "// kept\n").expect("save");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("// kept\n("), "{text}");
        assert_eq!(comments_of(&text).header, "// kept\n");
        assert_eq!(load_workflow(&path).expect("load"), wf);
    }
    use crate::document::{Link, Node, NodeId, PortRef, Value, FORMAT_VERSION};

    const EXAMPLE: &str = r#"(
    version: 1,
    nodes: [
        (id: 1, kind: "LoadModel", pos: (40.0, 80.0), params: {"model": "dit-tiny", "device": "cpu"}),
        (id: 2, kind: "Sampler", pos: (320.0, 80.0), params: {"steps": 25, "guidance": 4.0, "seed": 42}),
    ],
    links: [
        (from: (node: 1, port: "model"), to: (node: 2, port: "model")),
    ],
)
"#;

    fn parse_err(text: &str) -> (usize, usize, String) {
        match parse_workflow(text, "t.ron") {
            Err(GraphError::Parse {
                source_name,
                line,
                column,
                message,
            }) => {
                assert_eq!(source_name, "t.ron");
                (line, column, message)
            }
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    fn sample() -> Workflow {
        let mut wf = Workflow::default();
        let a = wf.add_node("LoadModel", [40.0, 80.0]);
        let b = wf.add_node("Sampler", [320.5, -80.25]);
        wf.set_param(a, "model", Value::Text("dit-tiny".into()));
        wf.set_param(b, "steps", Value::Int(25));
        wf.set_param(b, "guidance", Value::Float(4.0));
        wf.set_param(b, "eta", Value::Float(0.1));
        wf.set_param(b, "big", Value::Float(1e20));
        wf.set_param(b, "tiny", Value::Float(5e-324));
        wf.set_param(b, "neg", Value::Float(-0.0));
        wf.set_param(b, "imin", Value::Int(i64::MIN));
        wf.set_param(b, "imax", Value::Int(i64::MAX));
        wf.set_param(b, "flag", Value::Bool(false));
        wf.set_param(
            b,
            "text",
            Value::Text("quote \" slash \\ nl \n é 😀".into()),
        );
        wf.nodes[1].title = Some("My \"sampler\"".into());
        wf.connect(PortRef::new(a, "model"), PortRef::new(b, "model"));
        wf
    }

    #[test]
    fn hand_written_example_parses() {
        let wf = parse_workflow(EXAMPLE, "example.ron").expect("parses");
        assert_eq!(wf.version, 1);
        assert_eq!(wf.nodes.len(), 2);
        assert_eq!(wf.nodes[0].pos, [40.0, 80.0]);
        assert_eq!(wf.nodes[0].title, None);
        let p = &wf.nodes[1].params;
        assert_eq!(p.get("steps"), Some(&Value::Int(25)));
        assert_eq!(p.get("guidance"), Some(&Value::Float(4.0)));
        assert_eq!(p.get("seed"), Some(&Value::Int(42)));
        assert_eq!(
            wf.nodes[0].params.get("device"),
            Some(&Value::Text("cpu".into()))
        );
        assert_eq!(
            wf.links,
            vec![Link {
                from: PortRef::new(NodeId(1), "model"),
                to: PortRef::new(NodeId(2), "model"),
            }]
        );
    }

    #[test]
    fn pos_as_list_is_rejected() {
        // `[f32; 2]` is a RON tuple; the list form does not parse.
        let (line, col, _) = parse_err("(nodes: [(pos: [1.0, 2.0])])");
        assert_eq!((line, col), (1, 16));
        let (line, col, _) = parse_err("(nodes: [(pos:\n\n   [1.0, 2.0])])");
        assert_eq!((line, col), (3, 4));
    }

    #[test]
    fn writer_output_is_stable_and_readable() {
        let mut wf = Workflow::default();
        let a = wf.add_node("LoadModel", [40.0, 80.0]);
        let b = wf.add_node("Sampler", [320.0, 80.0]);
        wf.set_param(b, "steps", Value::Int(25));
        wf.set_param(b, "guidance", Value::Float(4.0));
        wf.set_param(a, "model", Value::Text("dit-tiny".into()));
        wf.connect(PortRef::new(a, "model"), PortRef::new(b, "model"));
        let text = to_ron_string(&wf).expect("serialises");
        let expected = r#"(
    version: 1,
    nodes: [
        (id: 1, kind: "LoadModel", pos: (40.0, 80.0), params: {"model": "dit-tiny"}),
        (id: 2, kind: "Sampler", pos: (320.0, 80.0), params: {"guidance": 4.0, "steps": 25}),
    ],
    links: [
        (from: (node: 1, port: "model"), to: (node: 2, port: "model")),
    ],
)
"#;
        assert_eq!(text, expected);
        assert_eq!(to_ron_string(&wf).expect("again"), text);
    }

    #[test]
    fn round_trip_keeps_everything() {
        let wf = sample();
        let text = to_ron_string(&wf).expect("serialises");
        let back = parse_workflow(&text, "rt.ron").expect("parses");
        assert_eq!(back, wf);
        let p = &back.nodes[1].params;
        assert_eq!(p.get("guidance"), Some(&Value::Float(4.0)));
        assert_eq!(p.get("steps"), Some(&Value::Int(25)));
        assert_eq!(p.get("big"), Some(&Value::Float(1e20)));
        assert!(matches!(p.get("neg"), Some(Value::Float(x)) if x.is_sign_negative()));
        assert_eq!(to_ron_string(&back).expect("again"), text);
    }

    #[test]
    fn round_trip_of_default_and_empty() {
        for wf in [Workflow::default(), {
            let mut w = Workflow::default();
            w.add_node("", [0.0, 0.0]);
            w
        }] {
            let text = to_ron_string(&wf).expect("serialises");
            assert_eq!(parse_workflow(&text, "e.ron").expect("parses"), wf);
        }
    }

    #[test]
    fn missing_fields_take_defaults() {
        let wf = parse_workflow("()", "d.ron").expect("parses");
        assert_eq!(wf, Workflow::default());
        let wf = parse_workflow("(nodes: [(id: 3)])", "d.ron").expect("parses");
        assert_eq!(wf.version, FORMAT_VERSION);
        assert_eq!(
            wf.nodes,
            vec![Node {
                id: NodeId(3),
                ..Node::default()
            }]
        );
    }

    #[test]
    fn title_with_or_without_some() {
        let wf = parse_workflow(
            r#"(nodes: [(id: 1, title: "A"), (id: 2, title: Some("B"))])"#,
            "t",
        )
        .expect("parses");
        assert_eq!(wf.nodes[0].title.as_deref(), Some("A"));
        assert_eq!(wf.nodes[1].title.as_deref(), Some("B"));
    }

    #[test]
    fn comments_and_struct_names_are_accepted() {
        let text = "// saved by hand\nWorkflow( /* block */ version: 1, nodes: [Node(id: 1)])";
        let wf = parse_workflow(text, "c.ron").expect("parses");
        assert_eq!(wf.nodes.len(), 1);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert!(parse_workflow("\u{feff}()", "bom.ron").is_ok());
    }

    #[test]
    fn versions_go_through_migrate() {
        let wf = parse_workflow("(version: 0)", "v.ron").expect("parses");
        assert_eq!(wf.version, FORMAT_VERSION);
        match parse_workflow("(version: 7)", "v.ron") {
            Err(GraphError::NewerVersion { found: 7, .. }) => {}
            other => panic!("expected NewerVersion, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_for_id_is_located() {
        let (line, col, msg) = parse_err("(\n  nodes: [\n    (id: \"one\"),\n  ],\n)");
        assert_eq!((line, col), (3, 10));
        assert!(msg.contains("integer"), "{msg}");
        let (line, col, _) = parse_err("(nodes: [(id: -1)])");
        // ron points at the digits after the minus sign.
        assert_eq!((line, col), (1, 16));
    }

    #[test]
    fn unclosed_string_is_located() {
        let (line, col, msg) = parse_err("(\n  nodes: [(kind: \"Sampler)],\n)\n");
        assert_eq!((line, col), (2, 18));
        assert!(msg.contains("string"), "{msg}");
    }

    #[test]
    fn empty_and_blank_input() {
        assert_eq!(parse_err(""), (1, 1, parse_err("").2));
        let (line, _, _) = parse_err("\n\n   \n");
        assert!((1..=4).contains(&line));
    }

    #[test]
    fn message_display_has_file_line_column() {
        let err = parse_workflow("(version: \"x\")", "dir/flow.ron").expect_err("bad");
        let msg = err.to_string();
        assert!(
            msg.starts_with("dir/flow.ron:1:11: Expected integer"),
            "{msg}"
        );
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let last_paren = EXAMPLE.rfind(')').expect("has a paren");
        let lines = EXAMPLE.lines().count();
        for (cut, _) in EXAMPLE.char_indices().filter(|&(i, _)| i <= last_paren) {
            let text = &EXAMPLE[..cut];
            let (line, col, _) = parse_err(text);
            assert!(line >= 1 && line <= lines + 1, "cut {cut}: line {line}");
            let line_len = text.lines().nth(line - 1).map_or(0, |l| l.chars().count());
            assert!(col >= 1 && col <= line_len + 1, "cut {cut}: {line}:{col}");
        }
        // Cut in half: the error is at the end of what is left, or before it.
        let half = &EXAMPLE[..EXAMPLE.len() / 2];
        let (line, _, _) = parse_err(half);
        assert!(line <= half.lines().count() + 1);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        for open in ["[", "(", "{", "Some("] {
            let text = format!("(nodes: {})", open.repeat(100_000));
            let _ = parse_err(&text);
        }
    }

    #[test]
    fn random_input_never_panics() {
        const PIECES: &[&str] = &[
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"",
            "'",
            "\\",
            "\n",
            " ",
            "version",
            "nodes",
            "links",
            "id",
            "kind",
            "pos",
            "params",
            "title",
            "from",
            "to",
            "node",
            "port",
            "Some",
            "None",
            "1",
            "-3",
            "4.0",
            "1e9",
            "0x1F",
            "NaN",
            "inf",
            "true",
            "\"Sampler\"",
            "//",
            "/*",
            "*/",
            "#![enable(implicit_some)]",
            "r#\"",
            "é",
            "\u{0}",
            "_",
            "b\"",
            ".",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 40) as usize;
            let mut text = String::new();
            for _ in 0..len {
                let r = next();
                if r % 5 == 0 {
                    text.push(char::from_u32((r >> 8) as u32 % 0x11_0000).unwrap_or('?'));
                } else {
                    text.push_str(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            match parse_workflow(&text, "fuzz") {
                Ok(_) | Err(GraphError::NewerVersion { .. }) => {}
                Err(GraphError::Parse { line, column, .. }) => {
                    assert!(line >= 1 && column >= 1, "{text:?}");
                    assert!(line <= text.split('\n').count(), "{text:?}: line {line}");
                }
                Err(other) => panic!("unexpected {other:?} for {text:?}"),
            }
        }
    }

    #[test]
    fn mutated_example_never_panics() {
        let bytes = EXAMPLE.as_bytes();
        let mut state: u64 = 12345;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut b = bytes.to_vec();
            let at = (state >> 33) as usize % b.len();
            b[at] = (state >> 20) as u8;
            if let Ok(text) = String::from_utf8(b) {
                let _ = parse_workflow(&text, "mut");
            }
        }
    }

    #[test]
    fn load_missing_file_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.ron");
        let err = load_workflow(&path).expect_err("missing");
        assert!(matches!(err, GraphError::Io { .. }));
        assert!(err.to_string().contains("nope.ron"), "{err}");
    }

    #[test]
    fn load_non_utf8_is_a_located_parse_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin.ron");
        fs::write(&path, b"(\n  nodes: \xff\xfe[])").expect("write");
        match load_workflow(&path) {
            Err(GraphError::Parse {
                line,
                column,
                source_name,
                ..
            }) => {
                assert_eq!((line, column), (2, 10));
                assert!(source_name.ends_with("bin.ron"));
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flow.ron");
        let wf = sample();
        save_workflow_atomic(&path, &wf).expect("saves");
        assert_eq!(load_workflow(&path).expect("loads"), wf);

        // Overwrite with a different workflow.
        let small = Workflow::default();
        save_workflow_atomic(&path, &small).expect("saves again");
        assert_eq!(load_workflow(&path).expect("loads"), small);

        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("flow.ron")]);
    }

    #[test]
    fn save_into_missing_folder_fails_and_names_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no/such/dir/flow.ron");
        let err = save_workflow_atomic(&path, &Workflow::default()).expect_err("fails");
        assert!(matches!(err, GraphError::Io { .. }));
        assert!(err.to_string().contains("dir"), "{err}");
    }

    #[test]
    fn failed_rename_keeps_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory in the way makes the rename fail.
        let path = dir.path().join("taken.ron");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), "x").expect("write");
        let err = save_workflow_atomic(&path, &Workflow::default()).expect_err("fails");
        assert!(err.to_string().contains("taken.ron"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken.ron")]);
    }
}
