//! The byte-level half of the JSON writer: strings and floats, spelled as
//! `json.dumps(..., ensure_ascii=False)` and `repr(float)` spell them. Pure Rust (no
//! Python), so `fuzz/` compiles this file as is and fuzzes exactly what ships.

/// Which bytes need escaping inside a JSON string (as `json.dumps(ensure_ascii=False)`).
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Write `s` as a quoted JSON string.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            _ => buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Write a float as Python's `repr()` does (shortest round-trip digits; exponent form when
/// the decimal exponent is below -4 or above 16); non-finite values become `null`.
pub fn write_float(buf: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        buf.extend_from_slice(b"null");
        return;
    }
    if v == 0.0 {
        buf.extend_from_slice(if v.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return;
    }
    let mut rb = ryu::Buffer::new();
    let full = rb.format_finite(v).as_bytes();
    let (neg, s) = match full.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, full),
    };
    // Common case: ryu's positional form (`ddd.ddd`, `0.0ddd`) is exactly Python's repr
    // when the decimal exponent is in -4..16, i.e. no exponent and not `0.0000ddd`.
    if !s.contains(&b'e') && !s.starts_with(b"0.0000") {
        buf.extend_from_slice(full);
        return;
    }
    // ryu writes `d.ddd`, `ddd.d`, `0.000ddd` or `d.ddde[-]x`: collect the digits and the
    // position of the decimal point relative to them.
    let (mant, exp) = match s.iter().position(|&c| c == b'e') {
        Some(p) => (&s[..p], parse_exp(&s[p + 1..])),
        None => (s, 0),
    };
    let mut digits = [0u8; 40];
    let mut n = 0usize;
    let mut int_len = 0i32;
    let mut seen_point = false;
    for &c in mant {
        if c == b'.' {
            seen_point = true;
        } else if n < digits.len() {
            digits[n] = c;
            n += 1;
            if !seen_point {
                int_len += 1;
            }
        }
    }
    let mut decpt = int_len + exp;
    let mut lo = 0usize;
    while lo < n && digits[lo] == b'0' {
        lo += 1;
        decpt -= 1;
    }
    let mut hi = n;
    while hi > lo && digits[hi - 1] == b'0' {
        hi -= 1;
    }
    let d = &digits[lo..hi];
    if neg {
        buf.push(b'-');
    }
    let nd = d.len() as i32;
    if decpt <= -4 || decpt > 16 {
        buf.push(d[0]);
        if d.len() > 1 {
            buf.push(b'.');
            buf.extend_from_slice(&d[1..]);
        }
        let e = decpt - 1;
        buf.push(b'e');
        buf.push(if e < 0 { b'-' } else { b'+' });
        let ea = e.unsigned_abs();
        if ea < 10 {
            buf.push(b'0');
        }
        buf.extend_from_slice(itoa::Buffer::new().format(ea).as_bytes());
    } else if decpt <= 0 {
        buf.extend_from_slice(b"0.");
        buf.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        buf.extend_from_slice(d);
    } else if decpt >= nd {
        buf.extend_from_slice(d);
        buf.extend(std::iter::repeat_n(b'0', (decpt - nd) as usize));
        buf.extend_from_slice(b".0");
    } else {
        let p = decpt as usize;
        buf.extend_from_slice(&d[..p]);
        buf.push(b'.');
        buf.extend_from_slice(&d[p..]);
    }
}

fn parse_exp(s: &[u8]) -> i32 {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    let mut e = 0i32;
    for &c in digits {
        e = e * 10 + i32::from(c - b'0');
    }
    if neg {
        -e
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut b = Vec::new();
        write_float(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    fn s(v: &str) -> String {
        let mut b = Vec::new();
        write_str(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000123, "0.000123"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (f64::NEG_INFINITY, "null"),
            (9007199254740993.0, "9007199254740992.0"),
            (2.5, "2.5"),
            (1234.5678, "1234.5678"),
        ];
        for (v, want) in cases {
            assert_eq!(f(v), want, "{v:e}");
        }
    }

    #[test]
    fn strings_are_escaped_like_json_dumps() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("a\"b\\c\n\t"), r#""a\"b\\c\n\t""#);
        assert_eq!(s("\u{0}\u{1f}\u{8}\u{c}\r"), r#""\u0000\u001f\b\f\r""#);
        assert_eq!(s("é ✓ 中文 \u{7f} \u{2028}"), "\"é ✓ 中文 \u{7f} \u{2028}\"");
    }
}
