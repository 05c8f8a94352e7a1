//! Resource limits of one sandboxed program, through a control group of its own (as root: an
//! unprivileged server cannot make control groups): memory, process count and CPU, on cgroup v2
//! or on v1's `memory`, `pids` and `cpu` hierarchies. The server creates the group, moves the
//! program's launcher into it right after starting it (the launcher waits for that before it
//! starts the program, so nothing of the program runs outside), reads after the end whether the
//! kernel killed it for memory, and removes the group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The limits of one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (resident, page cache included, as the kernel counts it).
    pub memory: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPUs' worth of time per period.
    pub cpus: Option<u32>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpus.is_some()
    }
}

/// Which control group layout this host has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: one tree at `/sys/fs/cgroup`.
    V2(PathBuf),
    /// cgroup v1: one tree per controller (`memory`, `pids`, `cpu`), the ones mounted.
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf> },
}

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "anneal";

impl Hierarchy {
    /// The layout mounted at `/sys/fs/cgroup`, when it can hold Anneal's groups.
    pub fn detect() -> Option<Self> {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").is_file() {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return None;
            }
            return Some(Self::V2(root.join(GROUP)));
        }
        let mounted = |name: &str| Some(root.join(name)).filter(|p| p.join("tasks").is_file()).map(|p| p.join(GROUP));
        let (memory, pids, cpu) = (mounted("memory"), mounted("pids"), mounted("cpu"));
        (memory.is_some() || pids.is_some()).then_some(Self::V1 { memory, pids, cpu })
    }

    /// Removes the empty groups a server that is gone left behind (one killed while its replicas
    /// ran): every group's name starts with its server's pid. Blocks.
    pub fn sweep(&self) {
        let bases: Vec<&PathBuf> = match self {
            Self::V2(base) => vec![base],
            Self::V1 { memory, pids, cpu } => [memory, pids, cpu].into_iter().flatten().collect(),
        };
        for base in bases {
            for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let Some(server) = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if Path::new(&format!("/proc/{server}")).exists() {
                    continue;
                }
                // A group that still holds processes cannot be removed; the next start tries again.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }

    /// Creates a group `name` with `limits`. Blocks.
    pub fn create(&self, name: &str, limits: Limits) -> std::io::Result<Group> {
        let mut dirs = Vec::new();
        match self {
            Self::V2(base) => {
                if !base.exists() {
                    std::fs::create_dir_all(base)?;
                    // Children of Anneal's group may use these controllers.
                    let _ = std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids +cpu");
                }
                let dir = base.join(name);
                std::fs::create_dir_all(&dir)?;
                if let Some(bytes) = limits.memory {
                    std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(pids) = limits.pids {
                    std::fs::write(dir.join("pids.max"), pids.to_string())?;
                }
                if let Some(cpus) = limits.cpus {
                    let _ = std::fs::write(dir.join("cpu.max"), format!("{} 100000", u64::from(cpus) * 100_000));
                }
                dirs.push(dir);
            }
            Self::V1 { memory, pids, cpu } => {
                if let (Some(base), Some(bytes)) = (memory, limits.memory) {
                    let dir = base.join(name);
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                    dirs.push(dir);
                }
                if let (Some(base), Some(count)) = (pids, limits.pids) {
                    let dir = base.join(name);
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join("pids.max"), count.to_string())?;
                    dirs.push(dir);
                }
                if let (Some(base), Some(cpus)) = (cpu, limits.cpus) {
                    let dir = base.join(name);
                    std::fs::create_dir_all(&dir)?;
                    let _ = std::fs::write(dir.join("cpu.cfs_period_us"), "100000");
                    let _ = std::fs::write(dir.join("cpu.cfs_quota_us"), (u64::from(cpus) * 100_000).to_string());
                    dirs.push(dir);
                }
            }
        }
        Ok(Group { dirs, v2: matches!(self, Self::V2(_)), limits })
    }
}

/// One program's control group (a folder per hierarchy on v1).
#[derive(Debug)]
pub struct Group {
    dirs: Vec<PathBuf>,
    v2: bool,
    limits: Limits,
}

impl Group {
    /// The folders `/proc/<pid>/cgroup` shows the launcher in once it was moved (relative to
    /// each hierarchy's root), for the launcher's `--cgroup` arguments.
    pub fn paths(&self) -> Vec<String> {
        self.dirs
            .iter()
            .filter_map(|dir| {
                let relative = dir.strip_prefix(ROOT).ok()?;
                // On v1, the first part is the hierarchy's mount folder.
                let inside: PathBuf = if self.v2 { relative.to_path_buf() } else { relative.iter().skip(1).collect() };
                Some(format!("/{}", inside.display()))
            })
            .collect()
    }

    /// Moves `pid` (the launcher, which waits for it) into the group.
    pub fn enter(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel killed a process of the group for memory.
    pub fn killed_for_memory(&self) -> bool {
        self.dirs.iter().any(|dir| {
            let events = if self.v2 { dir.join("memory.events") } else { dir.join("memory.oom_control") };
            std::fs::read_to_string(events).unwrap_or_default().lines().any(|line| {
                line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
            })
        })
    }

    /// The memory limit, for messages.
    pub fn memory_limit(&self) -> Option<u64> {
        self.limits.memory
    }

    /// Kills what is left in the group and removes it (waiting up to a second for its processes
    /// to go). Blocks.
    pub fn remove(&self) {
        for dir in &self.dirs {
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if pids.is_empty() || Instant::now() >= until {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Memory in GB as Cloud ML Engine writes machine sizes ("15 GB", "1.5 GB").
pub fn gigabytes(bytes: u64) -> String {
    let gb = bytes as f64 / 1e9;
    if (gb - gb.round()).abs() < 0.05 {
        format!("{:.0} GB", gb.round())
    } else {
        format!("{gb:.1} GB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_machine_types_write_them() {
        assert_eq!(gigabytes(15_000_000_000), "15 GB");
        assert_eq!(gigabytes(1_500_000_000), "1.5 GB");
    }

    #[test]
    fn group_paths_are_relative_to_each_hierarchy() {
        let v1 = Group {
            dirs: vec![
                PathBuf::from("/sys/fs/cgroup/memory/anneal/j1"),
                PathBuf::from("/sys/fs/cgroup/pids/anneal/j1"),
            ],
            v2: false,
            limits: Limits::default(),
        };
        assert_eq!(v1.paths(), vec!["/anneal/j1", "/anneal/j1"]);
        let v2 = Group { dirs: vec![PathBuf::from("/sys/fs/cgroup/anneal/j1")], v2: true, limits: Limits::default() };
        assert_eq!(v2.paths(), vec!["/anneal/j1"]);
    }
}
