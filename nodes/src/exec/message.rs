//! Error text for people: one line, without the backtraces that `RUST_BACKTRACE` makes
//! candle attach to its errors, and a panic's payload as a sentence.

/// `text` up to the first line that belongs to a backtrace, its lines joined with spaces.
pub fn one_line(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let frame = t
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && line.starts_with(' ');
        if t.starts_with("stack backtrace:")
            || frame
            || (line.starts_with(' ') && t.starts_with("at "))
        {
            break;
        }
        if !t.is_empty() {
            kept.push(t);
        }
    }
    kept.join(" ")
}

/// What a panic said (`panic!` with a string or a formatted message), or a placeholder.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backtrace_is_cut_and_the_rest_is_one_line() {
        let text = "cannot find tensor pos_embed\nstack backtrace:\n   0: candle_core::error::Error::bt\n             at /src/error.rs:10:5\n   1: main";
        assert_eq!(one_line(text), "cannot find tensor pos_embed");
        // std's Backtrace Display has no header line: frames alone end the message too.
        let bare = "shape mismatch [2, 3]\n   0: candle_core::tensor::Tensor::reshape\n             at x.rs:1";
        assert_eq!(one_line(bare), "shape mismatch [2, 3]");
        assert_eq!(one_line("first\nsecond line"), "first second line");
        assert_eq!(
            one_line("Sampler #2: steps: 0 is too few"),
            "Sampler #2: steps: 0 is too few"
        );
    }

    #[test]
    fn panic_payloads_become_text() {
        let caught = std::panic::catch_unwind(|| panic!("index {} out of range", 4)).unwrap_err();
        assert_eq!(panic_text(caught.as_ref()), "index 4 out of range");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_text(caught.as_ref()), "(no message)");
    }
}
