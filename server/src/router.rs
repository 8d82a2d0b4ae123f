//! The route table: templates with typed parameters, compiled once into a matchit
//! tree and never mutated afterwards (so lookups take no lock).
//!
//! Template syntax: `/users/{id}`, typed `{id:int}`, `{id:float}`, `{id:uuid}`,
//! `{slug:re(^[a-z-]+$)}`, and a trailing catch-all `{rest:path}` (or `{*rest}`).
//!
//! A catch-all is *safe* by default: a value that could climb out of a directory
//! when joined to one (a `.`/`..` segment, an empty segment such as a leading `/`
//! or `//`, a backslash, NUL or a drive prefix like `C:`, also when hidden behind
//! one or two rounds of percent-encoding: `%2e%2e/`, `..%2f`, `%252e%252e`) does
//! not match, so the request is a 404. `{rest:path(unsafe)}` opts out and passes
//! the decoded value through as it is (proxies, custom resolvers).
//! matchit only knows untyped parameters, so every parameter is renamed to its
//! position (`{p0}`); routes with the same shape share one matchit entry and are
//! told apart by their constraints, in registration order. A failed constraint is
//! a 404, as if the path did not exist.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::Method;
use regex::Regex;

use crate::error::{Error, Result};

/// A parameter constraint.
#[derive(Debug, Clone)]
enum Constraint {
    Any,
    Int,
    Float,
    Uuid,
    Regex(Regex),
    /// A catch-all whose value is safe to join to a directory.
    SafePath,
}

impl Constraint {
    fn check(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Int => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
            }
            Self::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
            Self::Uuid => uuid::Uuid::try_parse(value).is_ok(),
            Self::Regex(re) => re.is_match(value),
            Self::SafePath => is_safe_relative_path(value),
        }
    }
}

/// How many extra rounds of percent-decoding are looked through: an application
/// (or a proxy behind it) that decodes once more must not see `..` either.
const EXTRA_DECODE_ROUNDS: usize = 2;

/// `value` (already percent-decoded once) is a relative path that stays below the
/// directory it is joined to, at this and the next decoding rounds.
pub fn is_safe_relative_path(value: &str) -> bool {
    let mut current = std::borrow::Cow::Borrowed(value);
    for _ in 0..=EXTRA_DECODE_ROUNDS {
        if !plain_relative(&current) {
            return false;
        }
        if !current.contains('%') {
            return true;
        }
        let next = percent_encoding::percent_decode_str(&current).decode_utf8_lossy();
        if next == current {
            return true;
        }
        current = std::borrow::Cow::Owned(next.into_owned());
    }
    // Still changing after every round: nobody legitimate encodes that deep.
    !current.contains('%')
}

/// One decoding round: no NUL or backslash, no `.`/`..` segment, no empty segment
/// (a leading `/`, or `//`) except a trailing `/`, no drive letter.
fn plain_relative(v: &str) -> bool {
    if v.is_empty() || v.contains(['\0', '\\']) {
        return false;
    }
    let body = v.strip_suffix('/').unwrap_or(v);
    let mut segments = body.split('/');
    if let Some(first) = segments.clone().next() {
        let b = first.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return false;
        }
    }
    segments.all(|s| !s.is_empty() && s != "." && s != "..")
}

/// What a route leads to, plus what the data plane needs to know about it.
#[derive(Debug)]
pub struct Route<T> {
    /// The template as registered (`/users/{id:int}`): the metrics/tracing label.
    pub template: Arc<str>,
    /// Parameter names in path order.
    pub param_names: Vec<Arc<str>>,
    /// Whatever the endpoint needs (for Python: the handler index).
    pub target: T,
}

struct Candidate<T> {
    constraints: Vec<Constraint>,
    param_names: Vec<Arc<str>>,
    methods: Vec<(Method, Arc<Route<T>>)>,
    /// The WebSocket route of this path. A GET carrying `Upgrade: websocket` goes to it;
    /// another GET goes to the plain GET route when there is one (so `ws://host/graphql` and
    /// `http://host/graphql` are one URL, as GraphQL clients expect), else to it as well (it
    /// answers 426).
    websocket: Option<Arc<Route<T>>>,
}

impl<T> Candidate<T> {
    fn allow(&self) -> BTreeSet<String> {
        let mut allow: BTreeSet<String> = self.methods.iter().map(|(m, _)| m.as_str().to_owned()).collect();
        if self.websocket.is_some() {
            allow.insert("GET".into());
        }
        allow
    }

    /// The route for `method`; `upgrade`: the request asks for a WebSocket upgrade.
    fn pick(&self, method: &Method, upgrade: bool) -> Option<&Arc<Route<T>>> {
        let direct = self.methods.iter().find(|(x, _)| x == method).map(|(_, r)| r);
        let ws = self.websocket.as_ref().filter(|_| *method == Method::GET);
        if upgrade {
            ws.or(direct)
        } else {
            direct.or(ws)
        }
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// A route matched; `params` pairs names with percent-decoded values.
    Found {
        route: &'a Arc<Route<T>>,
        params: Vec<(Arc<str>, String)>,
        via_get: bool,
    },
    /// The path exists but not for this method; the sorted `Allow` list.
    MethodNotAllowed { allow: Vec<String> },
    /// The path exists; this is an automatic OPTIONS answer with `Allow`.
    Options { allow: Vec<String> },
    /// No route, or no constraint matched.
    NotFound,
    /// A parameter is not valid percent-encoded UTF-8.
    BadPath,
}

/// Collects routes; [`RouterBuilder::build`] freezes them.
pub struct RouterBuilder<T> {
    shapes: Vec<(String, Vec<Candidate<T>>)>,
}

impl<T> Default for RouterBuilder<T> {
    fn default() -> Self {
        Self { shapes: Vec::new() }
    }
}

/// Parsed template: the matchit pattern, names and constraints.
struct Parsed {
    pattern: String,
    names: Vec<Arc<str>>,
    constraints: Vec<Constraint>,
}

fn route_err(path: &str, reason: impl Into<String>) -> Error {
    Error::Route {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn parse_template(path: &str) -> Result<Parsed> {
    if !path.starts_with('/') {
        return Err(route_err(path, "must start with `/`"));
    }
    let mut pattern = String::with_capacity(path.len());
    let mut names = Vec::new();
    let mut constraints = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'}' {
            return Err(route_err(path, "unbalanced `}`"));
        }
        if c != b'{' {
            // Copy one UTF-8 char.
            let ch = path[i..].chars().next().ok_or_else(|| route_err(path, "bad UTF-8"))?;
            pattern.push(ch);
            i += ch.len_utf8();
            continue;
        }
        // Find the matching `}`, allowing braces nested inside `re(...)`.
        let mut depth = 0usize;
        let mut end = None;
        for (j, b) in bytes.iter().enumerate().skip(i) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| route_err(path, "unbalanced `{`"))?;
        let inner = &path[i + 1..end];
        let (name, kind) = match inner.split_once(':') {
            Some((n, k)) => (n.trim(), Some(k.trim())),
            None => (inner.trim(), None),
        };
        let (name, catch_all) = match name.strip_prefix('*') {
            Some(n) => (n, true),
            None => (name, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(route_err(path, format!("bad parameter name `{name}`")));
        }
        let idx = names.len();
        let (constraint, catch_all) = match kind {
            None | Some("str" | "string") => (Constraint::Any, catch_all),
            Some("path") => (Constraint::SafePath, true),
            Some("path(unsafe)") => (Constraint::Any, true),
            Some("int") => (Constraint::Int, catch_all),
            Some("float") => (Constraint::Float, catch_all),
            Some("uuid") => (Constraint::Uuid, catch_all),
            Some(k) if k.starts_with("re(") && k.ends_with(')') => {
                let re = Regex::new(&k[3..k.len() - 1])
                    .map_err(|e| route_err(path, format!("bad regex for `{name}`: {e}")))?;
                (Constraint::Regex(re), catch_all)
            }
            Some(k) => return Err(route_err(path, format!("unknown parameter type `{k}`"))),
        };
        // `{*rest}` is the same safe catch-all as `{rest:path}`; only `path(unsafe)` opts out.
        let constraint = match constraint {
            Constraint::Any if catch_all && kind != Some("path(unsafe)") => Constraint::SafePath,
            c => c,
        };
        if catch_all {
            if end + 1 != path.len() {
                return Err(route_err(path, "a catch-all parameter must end the path"));
            }
            pattern.push_str(&format!("{{*p{idx}}}"));
        } else {
            pattern.push_str(&format!("{{p{idx}}}"));
        }
        if names.iter().any(|n: &Arc<str>| &**n == name) {
            return Err(route_err(path, format!("parameter `{name}` appears twice")));
        }
        names.push(Arc::from(name));
        constraints.push(constraint);
        i = end + 1;
    }
    Ok(Parsed {
        pattern,
        names,
        constraints,
    })
}

impl<T> RouterBuilder<T> {
    /// Start an empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `methods` on `path`. Registering the same method twice on the same
    /// template is an error.
    pub fn add(&mut self, methods: &[Method], path: &str, target: T) -> Result<()>
    where
        T: Clone,
    {
        let (route, cand) = self.candidate(path, target)?;
        for m in methods {
            if cand.methods.iter().any(|(x, _)| x == m) {
                return Err(route_err(path, format!("{m} is already registered")));
            }
            cand.methods.push((m.clone(), route.clone()));
        }
        Ok(())
    }

    /// Register the WebSocket route of `path`: GET upgrades go to it, even when the path
    /// also has a plain GET route (see [`Router::lookup_upgrade`]).
    pub fn add_websocket(&mut self, path: &str, target: T) -> Result<()> {
        let (route, cand) = self.candidate(path, target)?;
        if cand.websocket.is_some() {
            return Err(route_err(path, "a WebSocket route is already registered"));
        }
        cand.websocket = Some(route);
        Ok(())
    }

    /// The route for `path` and the candidate (same template) it joins.
    fn candidate(&mut self, path: &str, target: T) -> Result<(Arc<Route<T>>, &mut Candidate<T>)> {
        let parsed = parse_template(path)?;
        let route = Arc::new(Route {
            template: Arc::from(path),
            param_names: parsed.names.clone(),
            target,
        });
        let idx = match self.shapes.iter().position(|(p, _)| *p == parsed.pattern) {
            Some(i) => i,
            None => {
                self.shapes.push((parsed.pattern.clone(), Vec::new()));
                self.shapes.len() - 1
            }
        };
        let candidates = &mut self.shapes[idx].1;
        // Same template text (names + constraints) → same candidate, merged methods.
        let existing = candidates.iter().position(|c| {
            c.param_names == parsed.names
                && c.constraints.len() == parsed.constraints.len()
                && c.constraints
                    .iter()
                    .zip(&parsed.constraints)
                    .all(|(a, b)| same_constraint(a, b))
        });
        let cand = match existing {
            Some(i) => &mut candidates[i],
            None => {
                candidates.push(Candidate {
                    constraints: parsed.constraints,
                    param_names: parsed.names,
                    methods: Vec::new(),
                    websocket: None,
                });
                let last = candidates.len() - 1;
                &mut candidates[last]
            }
        };
        Ok((route, cand))
    }

    /// Freeze into a lookup structure.
    pub fn build(self) -> Result<Router<T>> {
        let mut tree = matchit::Router::new();
        let mut entries = Vec::with_capacity(self.shapes.len());
        for (i, (pattern, candidates)) in self.shapes.into_iter().enumerate() {
            tree.insert(pattern.clone(), i)
                .map_err(|e| route_err(&pattern, e.to_string()))?;
            entries.push(candidates);
        }
        Ok(Router { tree, entries })
    }
}

fn same_constraint(a: &Constraint, b: &Constraint) -> bool {
    match (a, b) {
        (Constraint::Regex(x), Constraint::Regex(y)) => x.as_str() == y.as_str(),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// An immutable, compiled route table.
pub struct Router<T> {
    tree: matchit::Router<usize>,
    entries: Vec<Vec<Candidate<T>>>,
}

impl<T> Router<T> {
    /// Every registered route as (methods, template), for listings (`cello routes`).
    pub fn routes(&self) -> Vec<(Vec<String>, Arc<str>)> {
        let mut out = Vec::new();
        for candidates in &self.entries {
            for c in candidates {
                if let Some((_, r)) = c.methods.first() {
                    out.push((
                        c.methods.iter().map(|(m, _)| m.to_string()).collect(),
                        r.template.clone(),
                    ));
                }
                if let Some(r) = &c.websocket {
                    out.push((vec![Method::GET.to_string()], r.template.clone()));
                }
            }
        }
        out
    }

    /// Find the route for `method` and the raw (still percent-encoded) `path`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_, T> {
        self.lookup_upgrade(method, path, false)
    }

    /// [`Router::lookup`] for a request that may ask for a WebSocket upgrade (`upgrade`):
    /// then a GET goes to the path's WebSocket route before its plain GET route.
    pub fn lookup_upgrade(&self, method: &Method, path: &str, upgrade: bool) -> Lookup<'_, T> {
        let Ok(m) = self.tree.at(path) else {
            return Lookup::NotFound;
        };
        let candidates = &self.entries[*m.value];
        // Decode the values once; raw matchit order is path order (p0, p1, ...).
        let mut raw: Vec<(usize, &str)> = m
            .params
            .iter()
            .filter_map(|(k, v)| k.strip_prefix('p').and_then(|n| n.parse().ok()).map(|n: usize| (n, v)))
            .collect();
        raw.sort_unstable_by_key(|(n, _)| *n);
        let mut values = Vec::with_capacity(raw.len());
        for (_, v) in raw {
            match percent_encoding::percent_decode_str(v).decode_utf8() {
                Ok(s) => values.push(s.into_owned()),
                Err(_) => return Lookup::BadPath,
            }
        }
        let mut allow: BTreeSet<String> = BTreeSet::new();
        for cand in candidates {
            if !cand.constraints.iter().zip(&values).all(|(c, v)| c.check(v)) {
                continue;
            }
            let direct = cand.pick(method, upgrade);
            let via_get = if direct.is_none() && *method == Method::HEAD {
                cand.pick(&Method::GET, false)
            } else {
                None
            };
            if let Some(route) = direct.or(via_get) {
                let params = cand.param_names.iter().cloned().zip(values).collect();
                return Lookup::Found {
                    route,
                    params,
                    via_get: via_get.is_some(),
                };
            }
            allow.extend(cand.allow());
        }
        if allow.is_empty() {
            return Lookup::NotFound;
        }
        if allow.contains("GET") {
            allow.insert("HEAD".into());
        }
        allow.insert("OPTIONS".into());
        let allow: Vec<String> = allow.into_iter().collect();
        if *method == Method::OPTIONS {
            Lookup::Options { allow }
        } else {
            Lookup::MethodNotAllowed { allow }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<u32> {
        let mut b = RouterBuilder::new();
        b.add(&[Method::GET], "/", 0).unwrap();
        b.add(&[Method::GET, Method::POST], "/users", 1).unwrap();
        b.add(&[Method::GET], "/users/{id:int}", 2).unwrap();
        b.add(&[Method::DELETE], "/users/{id:int}", 3).unwrap();
        b.add(&[Method::GET], "/users/{name:re(^[a-z-]{2,}$)}", 4).unwrap();
        b.add(&[Method::GET], "/items/{id:uuid}", 5).unwrap();
        b.add(&[Method::GET], "/files/{rest:path}", 6).unwrap();
        b.add(&[Method::GET], "/users/me", 7).unwrap();
        b.build().unwrap()
    }

    fn found(r: &Router<u32>, m: Method, p: &str) -> (u32, Vec<(String, String)>) {
        match r.lookup(&m, p) {
            Lookup::Found { route, params, .. } => (
                route.target,
                params.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ),
            other => panic!("{m} {p}: {other:?}"),
        }
    }

    #[test]
    fn typed_constraints_pick_the_right_route() {
        let r = router();
        assert_eq!(
            found(&r, Method::GET, "/users/42"),
            (2, vec![("id".into(), "42".into())])
        );
        assert_eq!(found(&r, Method::GET, "/users/ann-lee").0, 4);
        assert_eq!(found(&r, Method::GET, "/users/me").0, 7);
        assert!(matches!(r.lookup(&Method::GET, "/users/A1"), Lookup::NotFound));
        assert_eq!(
            found(&r, Method::GET, "/items/67e55044-10b1-426f-9247-bb680e5fe0c8").0,
            5
        );
        assert!(matches!(r.lookup(&Method::GET, "/items/nope"), Lookup::NotFound));
    }

    #[test]
    fn catch_all_and_decoding() {
        let r = router();
        assert_eq!(found(&r, Method::GET, "/files/a/b%20c.txt").1[0].1, "a/b c.txt");
        assert!(matches!(r.lookup(&Method::GET, "/files/%ff"), Lookup::BadPath));
    }

    #[test]
    fn head_falls_back_to_get_and_405_lists_allow() {
        let r = router();
        assert!(matches!(
            r.lookup(&Method::HEAD, "/users"),
            Lookup::Found { via_get: true, .. }
        ));
        match r.lookup(&Method::PUT, "/users/5") {
            Lookup::MethodNotAllowed { allow } => assert_eq!(allow, ["DELETE", "GET", "HEAD", "OPTIONS"]),
            other => panic!("{other:?}"),
        }
        match r.lookup(&Method::OPTIONS, "/users") {
            Lookup::Options { allow } => assert_eq!(allow, ["GET", "HEAD", "OPTIONS", "POST"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.lookup(&Method::GET, "/nope"), Lookup::NotFound));
    }

    #[test]
    fn bad_templates_are_rejected() {
        let mut b: RouterBuilder<u32> = RouterBuilder::new();
        assert!(b.add(&[Method::GET], "no-slash", 0).is_err());
        assert!(b.add(&[Method::GET], "/a/{x", 0).is_err());
        assert!(b.add(&[Method::GET], "/a/{x:bogus}", 0).is_err());
        assert!(b.add(&[Method::GET], "/a/{x:re([)}", 0).is_err());
        assert!(b.add(&[Method::GET], "/a/{x}/{x}", 0).is_err());
        b.add(&[Method::GET], "/dup", 0).unwrap();
        assert!(b.add(&[Method::GET], "/dup", 1).is_err());
    }

    #[test]
    fn catch_all_refuses_traversal_unless_opted_out() {
        let mut b = RouterBuilder::new();
        b.add(&[Method::GET], "/static/{rest:path}", 0).unwrap();
        b.add(&[Method::GET], "/star/{*rest}", 1).unwrap();
        b.add(&[Method::GET], "/raw/{rest:path(unsafe)}", 2).unwrap();
        let r = b.build().unwrap();
        for bad in [
            "../secret.txt",
            "a/../../etc/passwd",
            "%2e%2e/secret.txt",
            "%2E%2E%2Fsecret.txt",
            "..%2fsecret.txt",
            "..%5csecret.txt",
            "%252e%252e/secret.txt",
            "%25252e%25252e/secret.txt",
            "/etc/passwd",
            "%2fetc/passwd",
            "a//b",
            "./a",
            "a/./b",
            "a%00.txt",
            "C:/windows",
            "..",
        ] {
            for prefix in ["/static/", "/star/"] {
                let p = format!("{prefix}{bad}");
                assert!(matches!(r.lookup(&Method::GET, &p), Lookup::NotFound), "{p} matched");
            }
            assert_eq!(found(&r, Method::GET, &format!("/raw/{bad}")).0, 2, "/raw/{bad}");
        }
        for good in [
            "a.txt",
            "dir/",
            "a/b/c.txt",
            "..a/b..",
            ".hidden",
            "100%25.txt",
            "a%20b",
        ] {
            assert_eq!(found(&r, Method::GET, &format!("/static/{good}")).0, 0, "{good}");
            assert_eq!(found(&r, Method::GET, &format!("/star/{good}")).0, 1, "{good}");
        }
    }

    #[test]
    fn websocket_and_http_share_a_path() {
        let mut b = RouterBuilder::new();
        b.add(&[Method::GET, Method::POST], "/graphql", 0).unwrap();
        b.add_websocket("/graphql", 1).unwrap();
        b.add_websocket("/only-ws", 2).unwrap();
        assert!(b.add_websocket("/graphql", 3).is_err());
        let r = b.build().unwrap();
        let pick = |m: Method, p: &str, up: bool| match r.lookup_upgrade(&m, p, up) {
            Lookup::Found { route, .. } => route.target,
            other => panic!("{m} {p}: {other:?}"),
        };
        assert_eq!(pick(Method::GET, "/graphql", true), 1);
        assert_eq!(pick(Method::GET, "/graphql", false), 0);
        assert_eq!(pick(Method::POST, "/graphql", true), 0);
        assert_eq!(pick(Method::HEAD, "/graphql", false), 0);
        // A WebSocket-only path still gets plain GETs (its endpoint answers 426).
        assert_eq!(pick(Method::GET, "/only-ws", false), 2);
        assert_eq!(pick(Method::GET, "/only-ws", true), 2);
        match r.lookup(&Method::POST, "/only-ws") {
            Lookup::MethodNotAllowed { allow } => assert_eq!(allow, ["GET", "HEAD", "OPTIONS"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.routes().len(), 3);
    }

    #[test]
    fn int_constraint_edges() {
        let c = Constraint::Int;
        assert!(c.check("0") && c.check("-12"));
        assert!(!c.check("") && !c.check("-") && !c.check("1.5") && !c.check("99999999999999999999"));
    }
}
