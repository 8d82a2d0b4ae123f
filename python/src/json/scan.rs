//! Pure byte scans over JSON text (no Python): positions for error messages and the
//! nesting depth check. Also fuzzed (`fuzz/fuzz_targets/json_read.rs`).

/// Byte offset of the first `[`/`{` nested deeper than `max_depth` (strings skipped).
pub fn first_too_deep(input: &[u8], max_depth: usize) -> Option<usize> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &b) in input.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The byte offset of serde_json's 1-based line and 1-based byte column.
pub fn byte_offset(input: &[u8], line: usize, col: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        input
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(input.len(), |(i, _)| i + 1)
    };
    (line_start + col.saturating_sub(1)).min(input.len())
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_col(input: &[u8], at: usize) -> (usize, usize) {
    let at = at.min(input.len());
    let before = &input[..at];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    // Count characters, not bytes: UTF-8 continuation bytes do not start a character.
    let col = 1 + before[line_start..].iter().filter(|&&b| (b & 0xc0) != 0x80).count();
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::{byte_offset, first_too_deep, line_col};

    #[test]
    fn line_and_column() {
        let s = b"{\n  \"a\": 1,\n  \"b\": }\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 2), (2, 1));
        assert_eq!(line_col(s, 19), (3, 8));
        assert_eq!(line_col(s, 1000), (4, 1));
        assert_eq!(line_col("é\néx".as_bytes(), 6), (2, 3));
        assert_eq!(line_col(b"", 0), (1, 1));
    }

    #[test]
    fn serde_positions_to_offsets() {
        let s = "{\n  \"é\": 1,\n  \"b\": }\n".as_bytes();
        assert_eq!(byte_offset(s, 1, 1), 0);
        assert_eq!(byte_offset(s, 3, 8), 20);
        assert_eq!(line_col(s, byte_offset(s, 3, 8)), (3, 8));
        assert_eq!(line_col(s, byte_offset(s, 2, 7)), (2, 6));
        assert_eq!(byte_offset(s, 9, 9), s.len());
    }

    #[test]
    fn depth_scan_skips_strings() {
        assert_eq!(first_too_deep(b"[[]]", 2), None);
        assert_eq!(first_too_deep(b"[[[]]]", 2), Some(2));
        assert_eq!(first_too_deep(br#"["[[[\"[[", {"a": 1}]"#, 2), None);
        assert_eq!(first_too_deep(br#"["\\", [[]]]"#, 2), Some(8));
    }

    #[test]
    fn simd_json_error_offsets() {
        let cases: &[(&[u8], (usize, usize))] = &[
            (b"{\n  \"a\": 1,\n  \"b\": }\n", (3, 8)),
            (b"[1, 2,,]", (1, 7)),
            (b"{\"a\" 1}", (1, 6)),
        ];
        for (doc, want) in cases {
            let mut buf = doc.to_vec();
            let e = simd_json::to_tape(&mut buf).map(|_| ()).unwrap_err();
            assert_eq!(
                line_col(doc, e.index()),
                *want,
                "{e} for {:?}",
                String::from_utf8_lossy(doc)
            );
        }
    }
}
