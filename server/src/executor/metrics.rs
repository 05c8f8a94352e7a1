//! Training metrics: the reports replicas write in the cloudml-hypertune file format (JSON lines
//! with `global_step`, `<tag>`, `timestamp`, `trial`), collected while the job runs into one
//! durable series file, `<work dir>/metrics.jsonl`, without duplicates. (hypertune rewrites its
//! file keeping the last 100 reports, so the collector must read it as the job goes.)

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One metric value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub replica: String,
    pub tag: String,
    pub step: i64,
    pub value: f64,
    /// Seconds since the Unix epoch, as reported.
    pub timestamp: f64,
    pub trial: String,
}

/// The most series (tag and replica pairs) one job keeps: a trainer picks its tags, and a
/// report past this many is dropped rather than grow every read of the job's metrics.
pub const MAX_SERIES_PER_JOB: usize = 1000;

/// Collects new reports from each replica's metrics file into `series`.
#[derive(Debug, Default)]
pub struct Collector {
    seen: HashSet<(String, String, i64, u64)>,
    series: HashSet<(String, String)>,
}

/// Keys of a hypertune line that are not metrics.
const RESERVED: &[&str] = &["global_step", "timestamp", "trial", "checkpoint_path"];

impl Collector {
    /// Reads every `(replica, file)` and appends reports not seen before to `series`.
    pub fn collect(&mut self, files: &[(String, std::path::PathBuf)], series: &Path) {
        let mut fresh = Vec::new();
        for (replica, file) in files {
            let Some(text) = read_report_file(file) else { continue };
            for line in text.lines() {
                let Ok(serde_json::Value::Object(report)) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let number = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                let step = report.get("global_step").and_then(number).unwrap_or(0.0) as i64;
                let timestamp = report.get("timestamp").and_then(number).unwrap_or(0.0);
                let trial = report
                    .get("trial")
                    .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned))
                    .unwrap_or_default();
                for (tag, value) in report.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())) {
                    let Some(value) = number(value) else { continue };
                    let key = (replica.clone(), tag.clone());
                    if !self.series.contains(&key) {
                        if self.series.len() >= MAX_SERIES_PER_JOB {
                            continue;
                        }
                        self.series.insert(key);
                    }
                    if self.seen.insert((replica.clone(), tag.clone(), step, timestamp.to_bits())) {
                        fresh.push(MetricPoint {
                            replica: replica.clone(),
                            tag: tag.clone(),
                            step,
                            value,
                            timestamp,
                            trial: trial.clone(),
                        });
                    }
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        if let Ok(mut out) = std::fs::OpenOptions::new().create(true).append(true).open(series) {
            for point in fresh {
                // One write per line: trials of a study append to the same file.
                if let Ok(line) = serde_json::to_string(&point) {
                    let _ = out.write_all(format!("{line}\n").as_bytes());
                }
            }
        }
    }
}

/// The most of a replica's metrics file read at once (hypertune keeps its last 100 reports).
const MAX_REPORT_FILE: u64 = 4 << 20;

/// Reads a replica's metrics file, which the replica controls: a symlink (which could lead the
/// server to read files the replica may not), a FIFO (which would block) or anything but a
/// regular file is not read, and at most [`MAX_REPORT_FILE`] bytes are.
fn read_report_file(file: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    if !opened.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    opened.take(MAX_REPORT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Reads a job's collected series (points of at most [`MAX_SERIES_PER_JOB`] series, in report
/// order).
pub fn read_series(series: &Path) -> std::io::Result<Vec<MetricPoint>> {
    match std::fs::read_to_string(series) {
        Ok(text) => {
            let mut kept: HashSet<(String, String)> = HashSet::new();
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str::<MetricPoint>(l).ok())
                .filter(|p| {
                    let key = (p.replica.clone(), p.tag.clone());
                    kept.contains(&key) || (kept.len() < MAX_SERIES_PER_JOB && kept.insert(key))
                })
                .collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// One series: a tag's points of one replica, in report order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub tag: String,
    pub replica: String,
    pub points: Vec<MetricPoint>,
}

/// Groups points into series in the order each series first appears; linear in the points.
pub fn group_series(points: Vec<MetricPoint>) -> Vec<Series> {
    let mut index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    let mut series: Vec<Series> = Vec::new();
    for point in points {
        let at = *index.entry((point.tag.clone(), point.replica.clone())).or_insert_with(|| {
            series.push(Series { tag: point.tag.clone(), replica: point.replica.clone(), points: Vec::new() });
            series.len() - 1
        });
        series[at].points.push(point);
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_each_report_once_across_rewrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m");
        let series = dir.path().join("series");
        let files = vec![("master-replica-0".to_string(), file.clone())];
        let mut collector = Collector::default();
        std::fs::write(
            &file,
            "{\"global_step\": \"1\", \"accuracy\": \"0.5\", \"timestamp\": 1.0, \"trial\": \"0\"}\n",
        )
        .expect("write");
        collector.collect(&files, &series);
        // hypertune rewrites the whole file with the new report appended.
        std::fs::write(&file, "{\"global_step\": \"1\", \"accuracy\": \"0.5\", \"timestamp\": 1.0, \"trial\": \"0\"}\n{\"global_step\": \"2\", \"accuracy\": \"0.75\", \"timestamp\": 2.0, \"trial\": \"0\"}\nnot json\n").expect("write");
        collector.collect(&files, &series);
        let points = read_series(&series).expect("read");
        assert_eq!(points.iter().map(|p| (p.step, p.value)).collect::<Vec<_>>(), vec![(1, 0.5), (2, 0.75)]);
        assert_eq!(points[0].tag, "accuracy");
    }

    #[test]
    fn a_job_keeps_a_bounded_number_of_series_grouped_in_linear_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, series) = (dir.path().join("m"), dir.path().join("series"));
        let tags: Vec<String> = (0..MAX_SERIES_PER_JOB + 500).map(|i| format!("\"t{i}\": {i}")).collect();
        std::fs::write(&file, format!("{{\"global_step\": 1, {}}}\n", tags.join(", "))).expect("write");
        let mut collector = Collector::default();
        collector.collect(&[("master-replica-0".into(), file)], &series);
        let points = read_series(&series).expect("read");
        assert_eq!(points.len(), MAX_SERIES_PER_JOB);
        let grouped = group_series(points);
        assert_eq!(grouped.len(), MAX_SERIES_PER_JOB);
        assert!(grouped.iter().all(|s| s.points.len() == 1));
    }
}
