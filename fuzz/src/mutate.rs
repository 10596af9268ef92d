//! Seeded byte mutations in the manner of AFL's havoc stage: bit flips, interesting values
//! (sizes that overflow, negative and huge numbers) written as bytes, little-endian integers
//! or text tokens, insertions, deletions, duplicated and spliced ranges, stacked 1–8 deep.

/// splitmix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Integers that break size arithmetic.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
    1 << 40,
    3 << 30,
];

/// Text that changes what a parser sees: structure, numbers at the edges, special floats.
const TOKENS: &[&str] = &[
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
    "//",
    "/*",
    "*/",
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "-Infinity",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "4294967296",
    "99999999999",
    "null",
    "true",
    "false",
    "id:",
    "nodes:",
    "links:",
    "version:",
    "kind:",
    "params:",
    "\u{0}",
    "\u{feff}",
    "é",
    "🎨",
];

/// Applies 1–8 stacked mutations to a copy of `input`; `others` are splice partners. The
/// result is at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        match rng.below(11) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next_u64() as u8;
            }
            3 => {
                // An interesting integer, little-endian, 2/4/8 bytes wide (header sizes).
                let width = [2usize, 4, 8][rng.below(3)];
                if out.len() >= width {
                    let i = rng.below(out.len() - width + 1);
                    let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                    out[i..i + width].copy_from_slice(&v[..width]);
                }
            }
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let i = rng.below(out.len() + 1);
                out.splice(i..i, token.iter().copied());
            }
            5 => {
                // A number in the text replaced by an interesting one.
                if let Some((start, end)) = find_number(rng, &out) {
                    let v = INTERESTING[rng.below(INTERESTING.len())];
                    let text = if rng.chance(3) {
                        format!("-{v}")
                    } else {
                        v.to_string()
                    };
                    out.splice(start..end, text.bytes());
                }
            }
            6 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = 1 + rng.below((out.len() - start).min(64));
                out.drain(start..start + len);
            }
            7 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = 1 + rng.below((out.len() - start).min(256));
                let copy = out[start..start + len].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, copy);
            }
            8 if !others.is_empty() => {
                // Splice: this input's head with another's tail.
                let other = &others[rng.below(others.len())];
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            9 if !out.is_empty() => {
                out.truncate(rng.below(out.len()));
            }
            _ => {
                let n = 1 + rng.below(16);
                let at = rng.below(out.len() + 1);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out.truncate(max_len);
    out
}

/// A random run of ASCII digits in `bytes`, as `(start, end)`.
fn find_number(rng: &mut Rng, bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.is_empty() {
        return None;
    }
    let from = rng.below(bytes.len());
    let start = (from..bytes.len())
        .chain(0..from)
        .find(|&i| bytes[i].is_ascii_digit())?;
    let end = (start..bytes.len())
        .find(|&i| !bytes[i].is_ascii_digit())
        .unwrap_or(bytes.len());
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants_and_they_differ() {
        let input = b"(version: 1, nodes: [(id: 12, kind: \"Sampler\")])".to_vec();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &input, &[], 4096))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        let mutants = run(2);
        let changed = mutants.iter().filter(|m| **m != input).count();
        assert!(changed > 40, "{changed} of 50 changed");
        assert!(mutants.iter().all(|m| m.len() <= 4096));
    }
}
