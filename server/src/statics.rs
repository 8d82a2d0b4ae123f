//! Static directories (`staticFiles` mounts): served on the I/O thread, never through Python.
//!
//! Containment is checked twice: the router's catch-all refuses any value that could climb
//! out (`..` and `.` segments at this and two further decoding rounds, backslashes, NUL,
//! absolute and drive-letter paths), and the path joined to the root is canonicalised and
//! must still be under the canonical root, so a symlink pointing outside is refused (403).
//! Dot-files (`.env`, `.git/`) are never served. Files go out through [`crate::files`]
//! (regular files only, streamed in chunks, `Range`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cello_config::StaticFilesConfig;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::ResponseBody;
use crate::problem::problem;

/// One mount: the canonical root and its settings.
#[derive(Debug)]
pub struct StaticMount {
    root: PathBuf,
    config: StaticFilesConfig,
}

/// Name of the catch-all parameter of a mount's route.
pub const PARAM: &str = "path";

impl StaticMount {
    /// Resolve the root now, so a missing directory fails the start, not each request.
    pub fn new(config: StaticFilesConfig) -> crate::Result<Self> {
        let root = std::fs::canonicalize(&config.root)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                crate::Error::Config(cello_config::Error::Invalid {
                    field: "staticFiles.root".into(),
                    reason: format!("{:?} is not a directory", config.root),
                })
            })?;
        Ok(Self { root, config })
    }

    /// The route templates of this mount: the prefix itself and everything below it.
    pub fn templates(&self) -> Vec<String> {
        let p = self.config.mount_prefix();
        if p == "/" {
            return vec!["/".into(), format!("/{{*{PARAM}}}")];
        }
        vec![p.to_owned(), format!("{p}/"), format!("{p}/{{*{PARAM}}}")]
    }
}

enum Found {
    File(PathBuf, std::fs::Metadata),
    Dir(PathBuf),
    Missing,
    Outside,
}

/// Join `rel` (decoded once, checked by the router) to the root and resolve it inside it.
fn resolve(root: &Path, rel: &str) -> io::Result<Found> {
    if !crate::router::is_safe_relative_path(rel) && !rel.is_empty() {
        return Ok(Found::Missing);
    }
    let segments: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| s.starts_with('.') || s.contains(['\0', '\\'])) {
        return Ok(Found::Missing);
    }
    let mut path = root.to_path_buf();
    path.extend(&segments);
    let real = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Found::Missing)
        }
        Err(e) => return Err(e),
    };
    if !real.starts_with(root) {
        return Ok(Found::Outside);
    }
    let meta = std::fs::metadata(&real)?;
    Ok(if meta.is_dir() {
        Found::Dir(real)
    } else if meta.is_file() {
        Found::File(real, meta)
    } else {
        Found::Missing // FIFOs, devices, sockets
    })
}

/// A regular file `name` inside `dir` that is still under `root` after resolving links.
fn regular_in(root: &Path, path: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    (real.starts_with(root) && meta.is_file()).then_some((real, meta))
}

/// Which precompressed sibling the client accepts, best first (`br`, then `gzip`).
fn accepted_encodings(headers: &HeaderMap) -> Vec<(&'static str, &'static str)> {
    let Some(v) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    let q_of = |name: &str| -> Option<f32> {
        let mut star = None;
        let mut exact = None;
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                })
                .unwrap_or(1.0);
            if coding == name || (name == "gzip" && coding == "x-gzip") {
                exact = Some(q);
            } else if coding == "*" {
                star = Some(q);
            }
        }
        exact.or(star)
    };
    // Highest q first; on a tie br (smaller) before gzip.
    let mut out: Vec<(f32, &'static str, &'static str)> = [("br", ".br"), ("gzip", ".gz")]
        .into_iter()
        .filter_map(|(name, ext)| q_of(name).filter(|q| *q > 0.0).map(|q| (q, name, ext)))
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().map(|(_, name, ext)| (name, ext)).collect()
}

fn etag_of(meta: &std::fs::Metadata, variant: &str) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}{variant}\"", meta.len(), mtime)
}

/// `If-None-Match` (weak comparison) or, without it, `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, etag: Option<&str>, meta: &std::fs::Metadata, use_lm: bool) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = etag else { return false };
        let bare = etag.trim_start_matches("W/");
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare);
    }
    if !use_lm {
        return false;
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (since, meta.modified()) {
        // HTTP dates have whole seconds.
        (Some(since), Ok(m)) => {
            let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            secs(m) <= secs(since)
        }
        _ => false,
    }
}

/// `If-Range`: the range applies only when the validator still matches.
fn range_applies(headers: &HeaderMap, etag: Option<&str>, meta: &std::fs::Metadata) -> bool {
    let Some(v) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if v.starts_with('"') {
        return etag == Some(v.trim()); // strong comparison
    }
    match (httpdate::parse_http_date(v), meta.modified()) {
        (Ok(d), Ok(m)) => httpdate::fmt_http_date(m) == httpdate::fmt_http_date(d),
        _ => false,
    }
}

/// Answer a request for `rel` below the mount.
pub async fn serve(mount: &StaticMount, method: &Method, headers: &HeaderMap, rel: String) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return problem(StatusCode::METHOD_NOT_ALLOWED, "static files answer GET and HEAD");
    }
    let root = mount.root.clone();
    let lookup_rel = rel.clone();
    let found = crate::files::blocking(move || resolve(&root, &lookup_rel)).await;
    let (path, meta) = match found {
        Ok(Found::File(p, m)) => (p, m),
        Ok(Found::Dir(dir)) => return directory(mount, dir, headers, method, &rel).await,
        Ok(Found::Missing) => return problem(StatusCode::NOT_FOUND, "file not found"),
        Ok(Found::Outside) => {
            tracing::warn!(path = %rel, "static path resolves outside the root: refused");
            return problem(StatusCode::FORBIDDEN, "the path leads outside the static root");
        }
        Err(e) => return io_problem(&e),
    };
    file(mount, path, meta, headers).await
}

fn io_problem(e: &io::Error) -> Response<ResponseBody> {
    match e.kind() {
        io::ErrorKind::PermissionDenied => problem(StatusCode::FORBIDDEN, "the file cannot be read"),
        io::ErrorKind::ResourceBusy | io::ErrorKind::TimedOut => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the file system did not answer in time",
        ),
        _ => {
            tracing::error!(error = %e, "static file lookup failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "the file could not be read")
        }
    }
}

async fn file(
    mount: &StaticMount,
    path: PathBuf,
    meta: std::fs::Metadata,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    let cfg = &mount.config;
    let content_type = mime_guess::from_path(&path).first_or_octet_stream();
    let content_type = if content_type.type_() == mime_guess::mime::TEXT && content_type.get_param("charset").is_none()
    {
        format!("{}; charset=utf-8", content_type.essence_str())
    } else {
        content_type.essence_str().to_owned()
    };
    // A precompressed sibling, when the client takes it and no range is asked for.
    let mut chosen = (path.clone(), meta, None::<&'static str>);
    if !headers.contains_key(header::RANGE) {
        let wanted = accepted_encodings(headers);
        if !wanted.is_empty() {
            let (root, p) = (mount.root.clone(), path.clone());
            let sibling = crate::files::blocking(move || {
                Ok(wanted.into_iter().find_map(|(name, ext)| {
                    let mut s = p.clone().into_os_string();
                    s.push(ext);
                    regular_in(&root, Path::new(&s)).map(|(sp, sm)| (sp, sm, name))
                }))
            })
            .await
            .ok()
            .flatten();
            if let Some((sp, sm, name)) = sibling {
                chosen = (sp, sm, Some(name));
            }
        }
    }
    let (serve_path, meta, encoding) = chosen;
    let etag = cfg
        .enable_etag
        .then(|| etag_of(&meta, encoding.map_or("", |e| if e == "br" { "-br" } else { "-gz" })));
    let decorate = |h: &mut HeaderMap| {
        if let Some(etag) = &etag {
            if let Ok(v) = HeaderValue::from_str(etag) {
                h.insert(header::ETAG, v);
            }
        }
        if !cfg.enable_last_modified {
            h.remove(header::LAST_MODIFIED);
        } else if let Ok(m) = meta.modified() {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
                h.insert(header::LAST_MODIFIED, v);
            }
        }
        if let Some(cc) = cfg.cache_control.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            h.insert(header::CACHE_CONTROL, cc);
        }
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    };
    if not_modified(headers, etag.as_deref(), &meta, cfg.enable_last_modified) {
        let mut r = Response::new(ResponseBody::Empty);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        decorate(r.headers_mut());
        r.extensions_mut().insert(crate::middleware::NotModifiedOf {
            content_type: HeaderValue::from_str(&content_type).ok(),
            len: Some(meta.len()),
            encoded: encoding.is_some(),
        });
        return r;
    }
    let range = headers
        .get(header::RANGE)
        .filter(|_| range_applies(headers, etag.as_deref(), &meta))
        .and_then(|v| v.to_str().ok());
    let mut resp = crate::files::file_response(&serve_path, Some(&content_type), None, Some(range)).await;
    if resp.status().is_success() {
        decorate(resp.headers_mut());
        if let Some(enc) = encoding {
            resp.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
    }
    resp
}

async fn directory(
    mount: &StaticMount,
    dir: PathBuf,
    headers: &HeaderMap,
    method: &Method,
    rel: &str,
) -> Response<ResponseBody> {
    if let Some(index) = &mount.config.index_file {
        let (root, candidate) = (mount.root.clone(), dir.join(index));
        if let Ok(Some((p, m))) = crate::files::blocking(move || Ok(regular_in(&root, &candidate))).await {
            return file(mount, p, m, headers).await;
        }
    }
    if !mount.config.directory_listing {
        return problem(StatusCode::NOT_FOUND, "file not found");
    }
    let listed = crate::files::blocking(move || {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir)?.take(10_000) {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            names.push((name, is_dir));
        }
        names.sort();
        Ok(names)
    })
    .await;
    let names = match listed {
        Ok(n) => n,
        Err(e) => return io_problem(&e),
    };
    let mut base = mount.config.mount_prefix().trim_end_matches('/').to_owned();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        base.push('/');
        base.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    let title = html_escape(&format!("{}/", base));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    for (name, is_dir) in names {
        let href = format!(
            "{base}/{}{}",
            percent_encoding::utf8_percent_encode(&name, SEGMENT),
            if is_dir { "/" } else { "" }
        );
        html.push_str(&format!(
            "<li><a href=\"{}\">{}{}</a></li>\n",
            html_escape(&href),
            html_escape(&name),
            if is_dir { "/" } else { "" }
        ));
    }
    html.push_str("</ul></body></html>\n");
    let len = html.len();
    let mut r = Response::new(if method == Method::HEAD {
        ResponseBody::Empty
    } else {
        ResponseBody::full(html)
    });
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Bytes encoded in a path segment of a listing link.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_q_values() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br;q=0"));
        assert_eq!(accepted_encodings(&h), [("gzip", ".gz")]);
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("*"));
        assert_eq!(accepted_encodings(&h).len(), 2);
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br;q=0.2, gzip"));
        assert_eq!(accepted_encodings(&h), [("gzip", ".gz"), ("br", ".br")]);
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        assert!(accepted_encodings(&h).is_empty());
    }

    #[test]
    fn listing_names_are_escaped() {
        assert_eq!(html_escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }

    #[test]
    fn resolve_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("cello-static-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.join(".env"), "secret").unwrap();
        let root = std::fs::canonicalize(&dir).unwrap();
        assert!(matches!(resolve(&root, "sub/a.txt").unwrap(), Found::File(..)));
        for bad in [
            "../etc/passwd",
            "sub/../../x",
            "/etc/passwd",
            "sub\\..\\..\\x",
            ".env",
            "a\0b",
            "%2e%2e/x",
        ] {
            assert!(matches!(resolve(&root, bad).unwrap(), Found::Missing), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod served {
    use cello_config::ServerConfig;
    use http::Request;
    use http_body_util::BodyExt;

    use crate::body::RequestBody;
    use crate::builder::Server;

    #[tokio::test]
    async fn mounts_serve_files_and_refuse_escapes() {
        let dir = std::env::temp_dir().join(format!("cello-static-mount-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pub")).unwrap();
        std::fs::write(dir.join("pub/a.txt"), "a").unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        let c = ServerConfig {
            static_files: vec![cello_config::StaticFilesConfig {
                root: dir.join("pub").display().to_string(),
                ..Default::default()
            }],
            ..ServerConfig::default()
        };
        let app = Server::builder(c).build().unwrap();
        let get = |p: &str| Request::get(p).header("host", "t").body(RequestBody::empty()).unwrap();
        let resp = app.oneshot(get("/static/a.txt"), None).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("etag"));
        assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"a");
        for bad in [
            "/static/../secret",
            "/static/%2e%2e/secret",
            "/static/%252e%252e/secret",
            "/static/..%5csecret",
        ] {
            assert_eq!(app.oneshot(get(bad), None).await.status(), 404, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
