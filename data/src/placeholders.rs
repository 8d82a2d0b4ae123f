//! Placeholders: `$1..$n` and `?` are accepted on every backend and rewritten to the
//! backend's own form. Quoted strings, quoted identifiers, comments and PostgreSQL
//! dollar-quoted bodies are copied untouched.

use crate::error::Error;

/// The placeholder style of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// PostgreSQL: `$n`.
    Dollar,
    /// SQLite: `?n` (numbered, so `$2 ... $1` and reuse keep their meaning).
    QuestionNumbered,
    /// MySQL: bare `?` in order; the parameters are reordered to match.
    Question,
}

/// A statement rewritten for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub sql: String,
    /// For [`Style::Question`]: which parameter (0-based) each `?` binds, in order.
    /// Empty means "the parameters in their own order".
    pub order: Vec<usize>,
    /// How many parameters the statement takes.
    pub params: usize,
}

/// Rewrite `sql` for `style`; mixing `$n` and `?` in one statement is an error.
pub fn translate(sql: &str, style: Style) -> Result<Translated, Error> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut order = Vec::new();
    let mut max_dollar = 0usize;
    let mut questions = 0usize;
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        // A doubled quote is an escaped one.
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    if b[i] == b'\\' && q != b'"' && style == Style::Question {
                        i += 1; // MySQL backslash escapes
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                let start = i;
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j > i + 1 && !ident_char_before(b, start) {
                    let n: usize = sql[i + 1..j]
                        .parse()
                        .map_err(|_| Error::Param(format!("bad placeholder {}", &sql[i..j])))?;
                    if n == 0 {
                        return Err(Error::Param("placeholders start at $1".into()));
                    }
                    max_dollar = max_dollar.max(n);
                    out.push_str(&sql[last..start]);
                    match style {
                        Style::Dollar => out.push_str(&sql[start..j]),
                        Style::QuestionNumbered => {
                            out.push('?');
                            out.push_str(&sql[start + 1..j]);
                        }
                        Style::Question => {
                            out.push('?');
                            order.push(n - 1);
                        }
                    }
                    last = j;
                    i = j;
                } else if let Some(end) = dollar_quote_end(sql, i) {
                    i = end;
                } else {
                    i += 1;
                }
            }
            b'?' => {
                // `?|`, `?&` and `??` are PostgreSQL JSONB operators, not placeholders.
                let next = b.get(i + 1).copied();
                if style == Style::Dollar && matches!(next, Some(b'|' | b'&' | b'?')) {
                    i += 2;
                    continue;
                }
                questions += 1;
                out.push_str(&sql[last..i]);
                match style {
                    Style::Dollar => {
                        out.push('$');
                        out.push_str(&questions.to_string());
                    }
                    Style::QuestionNumbered => {
                        out.push('?');
                        out.push_str(&questions.to_string());
                    }
                    Style::Question => {
                        out.push('?');
                        order.push(questions - 1);
                    }
                }
                i += 1;
                last = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[last.min(sql.len())..]);
    if max_dollar > 0 && questions > 0 {
        return Err(Error::Param("do not mix $n and ? placeholders in one statement".into()));
    }
    let params = max_dollar.max(questions);
    if style != Style::Question || order.iter().enumerate().all(|(k, &v)| k == v) && order.len() == params {
        order.clear();
    }
    Ok(Translated {
        sql: out,
        order,
        params,
    })
}

fn ident_char_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `$tag$ ... $tag$` starting at `i`: the index after the closing tag.
fn dollar_quote_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    if j >= b.len() || b[j] != b'$' {
        return None;
    }
    let tag = &sql[i..=j];
    let body = j + 1;
    sql[body..].find(tag).map(|k| body + k + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_to_question_reorders() {
        let t = translate("SELECT $2, $1, $2", Style::Question).unwrap();
        assert_eq!(t.sql, "SELECT ?, ?, ?");
        assert_eq!(t.order, vec![1, 0, 1]);
        assert_eq!(t.params, 2);
    }

    #[test]
    fn question_to_dollar_and_numbered() {
        let t = translate("SELECT * FROM t WHERE a = ? AND b = ?", Style::Dollar).unwrap();
        assert_eq!(t.sql, "SELECT * FROM t WHERE a = $1 AND b = $2");
        let t = translate("SELECT $1 || $1", Style::QuestionNumbered).unwrap();
        assert_eq!(t.sql, "SELECT ?1 || ?1");
        assert_eq!(t.params, 1);
    }

    #[test]
    fn literals_comments_and_dollar_quotes_untouched() {
        let sql = "SELECT '$1 ?', \"a?\" -- $3 ?\n, $$ body $1 $$, $1 /* ? */";
        let t = translate(sql, Style::Question).unwrap();
        assert_eq!(t.sql, "SELECT '$1 ?', \"a?\" -- $3 ?\n, $$ body $1 $$, ? /* ? */");
        assert_eq!(t.params, 1);
        let t = translate("SELECT 'it''s ?', ?", Style::Dollar).unwrap();
        assert_eq!(t.sql, "SELECT 'it''s ?', $1");
    }

    #[test]
    fn jsonb_operators_and_mixing() {
        let t = translate("SELECT j ?| $1 FROM t", Style::Dollar).unwrap();
        assert_eq!(t.sql, "SELECT j ?| $1 FROM t");
        assert!(translate("SELECT $1, ?", Style::Dollar).is_err());
        assert!(translate("SELECT $0", Style::Dollar).is_err());
    }
}
