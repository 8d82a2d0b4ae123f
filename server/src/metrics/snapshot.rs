//! A serialisable copy of a process's metrics, merging across worker processes and the
//! Prometheus text exposition format.
//!
//! Workers of one server share `$CELLO_METRICS_DIR`. Each writes its snapshot to
//! `worker-<pid>.json` (tmp + rename) about once a second, on shutdown and before it
//! answers a scrape; a scrape merges its own live values with every other worker's file.
//! Files of exited workers stay, so counters never go down when a worker restarts;
//! gauges are only summed over live processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::histogram::HistogramValue;

/// Environment variable naming the directory shared by the workers of one server.
pub const METRICS_DIR_ENV: &str = cello_config::env::METRICS_DIR;

/// Metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Monotonic; summed across all workers, live or not.
    Counter,
    /// Current value; summed across live workers only.
    Gauge,
    /// Summed across all workers, live or not.
    Histogram,
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Counter or gauge.
    Number(f64),
    /// Histogram buckets.
    Histogram(HistogramValue),
}

/// A metric family: its kind, help and samples keyed by their rendered label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    /// Kind.
    pub kind: Kind,
    /// `# HELP` text.
    pub help: String,
    /// `label="value",...` → value.
    pub samples: BTreeMap<String, Value>,
}

/// All families of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The process that wrote it.
    pub pid: u32,
    /// Family name → family.
    pub families: BTreeMap<String, Family>,
}

/// Escape a label value for the text format.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Render `[(name, value)]` as `name="value",...`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out
}

impl Snapshot {
    /// Add a sample (summing into an existing one with the same labels).
    pub fn add(&mut self, name: &str, kind: Kind, help: &str, labels: String, value: Value) {
        let fam = self.families.entry(name.to_owned()).or_insert_with(|| Family {
            kind,
            help: help.to_owned(),
            samples: BTreeMap::new(),
        });
        match (fam.samples.get_mut(&labels), value) {
            (Some(Value::Number(a)), Value::Number(b)) => *a += b,
            (Some(Value::Histogram(a)), Value::Histogram(b)) => a.merge(&b),
            (Some(_), _) => {}
            (None, v) => {
                fam.samples.insert(labels, v);
            }
        }
    }

    /// Sum `other` into `self`; gauges only when `live`.
    pub fn merge(&mut self, other: &Self, live: bool) {
        for (name, fam) in &other.families {
            if fam.kind == Kind::Gauge && !live {
                continue;
            }
            for (labels, value) in &fam.samples {
                self.add(name, fam.kind, &fam.help, labels.clone(), value.clone());
            }
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for (name, fam) in &self.families {
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &fam.samples {
                match value {
                    Value::Number(v) => {
                        if labels.is_empty() {
                            let _ = writeln!(out, "{name} {}", num(*v));
                        } else {
                            let _ = writeln!(out, "{name}{{{labels}}} {}", num(*v));
                        }
                    }
                    Value::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &HistogramValue) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c;
        let le = h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// This worker's snapshot file in `dir`.
pub fn worker_file(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("worker-{pid}.json"))
}

/// Write `snap` to `worker-<pid>.json` atomically (tmp file + rename).
pub fn write_snapshot(dir: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let path = worker_file(dir, snap.pid);
    let tmp = dir.join(format!(".worker-{}.json.tmp", snap.pid));
    let text = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Whether process `pid` is alive (Linux: `/proc/<pid>` exists and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// What the supervisor reports in `supervisor.json`: `{"workers": 2, "restarts": 3}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SupervisorStats {
    /// Workers the supervisor keeps running.
    #[serde(default)]
    pub workers: u64,
    /// Workers restarted after a crash (or a rolling restart) since the server started.
    #[serde(default)]
    pub restarts: u64,
}

/// Merge `own` (live) with every other worker's snapshot in `dir`. Unreadable or
/// half-written files are skipped. Returns the merged snapshot, the number of live
/// workers found and the supervisor's stats when it wrote them.
pub fn merge_dir(dir: &Path, own: &Snapshot) -> (Snapshot, u64, Option<SupervisorStats>) {
    let mut merged = own.clone();
    let mut live = 1u64;
    let mut sup = None;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (merged, live, sup);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "supervisor.json" {
            sup = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            continue;
        }
        let Some(pid) = name
            .strip_prefix("worker-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own.pid {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(snap) = serde_json::from_slice::<Snapshot>(&bytes) else {
            continue;
        };
        let alive = pid_alive(pid);
        live += u64::from(alive);
        merged.merge(&snap, alive);
    }
    (merged, live, sup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pid: u32, counter: f64, gauge: f64) -> Snapshot {
        let mut s = Snapshot {
            pid,
            ..Snapshot::default()
        };
        s.add(
            "c_total",
            Kind::Counter,
            "c",
            labels(&[("a", "x")]),
            Value::Number(counter),
        );
        s.add("g", Kind::Gauge, "g", String::new(), Value::Number(gauge));
        s
    }

    #[test]
    fn dead_workers_keep_counters_but_not_gauges() {
        let dir = std::env::temp_dir().join(format!("cello-snap-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A pid that cannot exist (above pid_max), and our parent's, which is alive.
        write_snapshot(&dir, &snap(4_194_400, 5.0, 7.0)).unwrap();
        write_snapshot(&dir, &snap(std::os::unix::process::parent_id(), 2.0, 1.0)).unwrap();
        std::fs::write(dir.join("supervisor.json"), r#"{"workers": 2, "restarts": 1}"#).unwrap();
        std::fs::write(dir.join("worker-9.json"), "{half").unwrap();
        let own = snap(std::process::id(), 1.0, 1.0);
        let (merged, live, sup) = merge_dir(&dir, &own);
        let text = merged.render();
        assert!(text.contains("c_total{a=\"x\"} 8\n"), "{text}");
        assert!(text.contains("\ng 2\n"), "{text}");
        assert_eq!(live, 2);
        let sup = sup.unwrap();
        assert_eq!((sup.workers, sup.restarts), (2, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn histogram_rendering_is_cumulative() {
        let mut s = Snapshot::default();
        let h = HistogramValue {
            bounds: vec![0.1, 1.0],
            counts: vec![1, 2, 3],
            sum: 9.5,
            count: 6,
        };
        s.add(
            "d_seconds",
            Kind::Histogram,
            "d",
            labels(&[("r", "/a\"b")]),
            Value::Histogram(h),
        );
        let text = s.render();
        assert!(text.contains("# TYPE d_seconds histogram\n"));
        assert!(
            text.contains("d_seconds_bucket{r=\"/a\\\"b\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("d_seconds_bucket{r=\"/a\\\"b\",le=\"1\"} 3\n"), "{text}");
        assert!(
            text.contains("d_seconds_bucket{r=\"/a\\\"b\",le=\"+Inf\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("d_seconds_count{r=\"/a\\\"b\"} 6\n"), "{text}");
    }
}
