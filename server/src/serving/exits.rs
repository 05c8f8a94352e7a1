//! What a model's worker process (Python's or TorchScript's) leaves to explain its end: the last
//! lines it wrote on stderr, kept by a thread that also logs every line, and its exit status.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines of a worker's stderr kept to explain its exit.
const LINES: usize = 12;

/// The last lines of a worker's stderr.
#[derive(Clone, Default)]
pub(super) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Reads `stderr` on a thread of its own until it closes: logs each line for `version` and
    /// keeps the last ones.
    pub(super) fn follow(version: &str, stderr: ChildStderr) -> Self {
        let tail = Self::default();
        let (kept, version) = (tail.clone(), version.to_owned());
        let _ = std::thread::Builder::new().name("worker-stderr".into()).spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                tracing::info!(target: "anneal::model_worker", version = %version, "{line}");
                let mut lines = kept.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if lines.len() == LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        tail
    }

    /// The kept lines, each through `shown`, after a moment for the reader to take the last ones
    /// the process wrote before it ended.
    pub(super) fn lines(&self, shown: impl Fn(&str) -> String) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(50));
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|l| shown(l)).collect()
    }
}

/// Stops a worker process and everything it started: a confined one through its launcher
/// (SIGTERM, and the launcher kills its whole tree at once, `setsid` children included, before it
/// exits), an unconfined one with SIGKILL to its process group.
pub(super) fn stop(pid: u32, confined: bool) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if confined {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    } else {
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Waits for `child` (already stopped) and says how it ended.
pub(super) fn status(child: &mut Child) -> String {
    match child.wait() {
        Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => status.to_string(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}
