//! `anneal sandbox-exec`: the process that confines itself and then runs a user program as its
//! child (see [`crate::sandbox`]). It runs single-threaded, before any async runtime, because
//! Landlock confines the calling thread and what it starts.
//!
//! In order: it blocks the signals it handles (its child gets an empty mask back), becomes the
//! subreaper of its tree, confines itself (Landlock rules for the files, scoping for signals,
//! `no_new_privs`), starts the program, and waits:
//!
//! - the program ends: every process it left behind is killed with SIGKILL and reaped, and the
//!   launcher ends as the program did (its exit code, or the same signal);
//! - SIGTERM, SIGINT, SIGHUP or SIGQUIT arrives: it is passed to every process of the tree, and
//!   after `--grace-ms` the whole tree gets SIGKILL.
//!
//! Its own failures (bad arguments, a kernel that cannot confine, a program that cannot start)
//! print one `anneal sandbox: …` line on stderr and exit with 126 (127: the program was not found).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The Landlock ABI whose rights the sandbox asks for (older kernels give what they have:
/// Landlock's best effort; [`probe`] requires the first ABI at least).
const ABI_WANTED: ABI = ABI::V6;

/// Signals the launcher passes on to its tree.
const STOPS: [Signal; 4] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];

/// What `sandbox-exec` was asked to do.
#[derive(Debug, Default, PartialEq)]
pub struct Spec {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub grace: Duration,
    /// Control groups (`/proc/self/cgroup`'s form) the server moves this process into: the
    /// program starts only once it is in all of them.
    pub cgroups: Vec<String>,
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl Spec {
    /// Parses `--read P`, `--write P`, `--grace-ms N`, then `--`, the program and its arguments.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let mut spec = Self::default();
        loop {
            let flag = args.next().ok_or("no program given (expected `-- PROGRAM [ARGS]`)")?;
            let mut value = || args.next().ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()));
            match flag.to_str() {
                Some("--read") => spec.read.push(value()?.into()),
                Some("--write") => spec.write.push(value()?.into()),
                Some("--cgroup") => spec.cgroups.push(value()?.to_string_lossy().into_owned()),
                Some("--grace-ms") => {
                    let ms = value()?;
                    let ms = ms.to_str().and_then(|s| s.parse().ok()).ok_or("--grace-ms takes milliseconds")?;
                    spec.grace = Duration::from_millis(ms);
                }
                Some("--") => break,
                _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
            }
        }
        spec.program = args.next().ok_or("no program given after --")?;
        spec.args = args.collect();
        Ok(spec)
    }
}

/// Whether this kernel can confine a program: `Err` names what is missing.
pub fn probe() -> Result<(), String> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|ruleset| ruleset.create())
        .map(drop)
        .map_err(|e| {
            format!("this kernel cannot confine user code with Landlock (Linux 5.13 or later, with landlock in its lsm= list): {e}")
        })
}

/// The `anneal sandbox-exec` command: never returns while the program runs.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anneal sandbox: {e}");
            ExitCode::from(126)
        }
    }
}

fn run(args: impl IntoIterator<Item = OsString>) -> Result<ExitCode, String> {
    let spec = Spec::parse(args)?;
    let mut handled = SigSet::empty();
    for signal in STOPS.into_iter().chain([Signal::SIGCHLD]) {
        handled.add(signal);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot read signals: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("cannot become a subreaper: {e}"))?;
    wait_for_cgroups(&spec.cgroups)?;
    confine(&spec)?;
    let main = match start(&spec) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("anneal sandbox: cannot start {}: {e}", spec.program.to_string_lossy());
            return Ok(ExitCode::from(if e == Errno::ENOENT { 127 } else { 126 }));
        }
    };
    let mut stop_by: Option<Instant> = None;
    loop {
        if let Some(status) = reap(main) {
            kill_tree(Signal::SIGKILL);
            while waitpid(Pid::from_raw(-1), None).is_ok() {}
            return Ok(end_as(status));
        }
        if stop_by.is_some_and(|at| Instant::now() >= at) {
            kill_tree(Signal::SIGKILL);
            stop_by = None;
        }
        let timeout = match stop_by {
            Some(at) => nix::poll::PollTimeout::try_from(at.saturating_duration_since(Instant::now()))
                .unwrap_or(nix::poll::PollTimeout::MAX),
            None => nix::poll::PollTimeout::NONE,
        };
        let mut fds = [nix::poll::PollFd::new(signals.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot wait for signals: {e}")),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else { continue };
            if STOPS.contains(&signal) {
                kill_tree(signal);
                stop_by.get_or_insert_with(|| Instant::now() + spec.grace);
            }
        }
    }
}

/// Starts the program (found on `PATH` when its name has no slash) with this process's
/// environment, folder and standard streams, and with no signal blocked and SIGPIPE at its
/// default: `std::process::Command` would hand down the signals the launcher blocks, and the
/// program could not be stopped but by SIGKILL.
fn start(spec: &Spec) -> Result<Pid, Errno> {
    use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let text = |bytes: &[u8]| CString::new(bytes).map_err(|_| Errno::EINVAL);
    let program = text(spec.program.as_bytes())?;
    let mut args = vec![program.clone()];
    for arg in &spec.args {
        args.push(text(arg.as_bytes())?);
    }
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        env.push(text(&[name.as_bytes(), b"=", value.as_bytes()].concat())?);
    }
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF)?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    attr.set_sigdefault(&defaults)?;
    posix_spawnp(&program, &PosixSpawnFileActions::init()?, &attr, &args, &env)
}

/// Waits (up to 10 s) until the server has moved this process into every group of `paths`.
fn wait_for_cgroups(paths: &[String]) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let inside = paths.iter().all(|path| own.lines().any(|line| line.rsplit(':').next() == Some(path.as_str())));
        if inside {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("the server did not move this program into its control groups {paths:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Confines this thread, and so everything it starts: Landlock's rules over the files, its
/// scoping of signals, and `no_new_privs`.
fn confine(spec: &Spec) -> Result<(), String> {
    let existing = |paths: &[PathBuf]| -> Vec<PathBuf> { paths.iter().filter(|p| p.exists()).cloned().collect() };
    // The launcher finds the program's tree in /proc, whatever its caller listed.
    let mut read = spec.read.clone();
    read.push(PathBuf::from("/proc"));
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(existing(&read), AccessFs::from_read(ABI_WANTED))))
        .and_then(|r| r.add_rules(path_beneath_rules(existing(&spec.write), AccessFs::from_all(ABI_WANTED))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("cannot confine the program: {e}"))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(
            "this kernel cannot confine user code with Landlock (Linux 5.13 or later, with landlock in its lsm= list)"
                .into(),
        );
    }
    if !status.no_new_privs {
        return Err("cannot set no_new_privs".into());
    }
    Ok(())
}

/// How the program ended.
enum Ended {
    Code(i32),
    Signal(Signal),
}

/// Reaps every child that ended; the program's end once it has.
fn reap(main: Pid) -> Option<Ended> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => ended = Some(Ended::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => ended = Some(Ended::Signal(signal)),
            Ok(WaitStatus::StillAlive) | Err(_) => return ended,
            Ok(_) => {}
        }
    }
}

/// Sends `signal` to every live process under this one; with SIGKILL, until none is left (a
/// killed process's children become this one's once it has exited). Reaps nothing: the
/// program's own end is read by [`reap`].
fn kill_tree(signal: Signal) {
    let me = Pid::this();
    for _ in 0..1000 {
        let tree = descendants(me);
        if tree.is_empty() {
            return;
        }
        for pid in &tree {
            let _ = kill(*pid, signal);
        }
        if signal != Signal::SIGKILL {
            return;
        }
        // Give the killed processes a moment to exit and hand their children over.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every live process under `root` (zombies left out), read from `/proc/<pid>/stat`.
fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((state, ppid)) = state_and_parent(&stat) {
            if state != 'Z' {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root.as_raw()];
    while let Some(pid) = next.pop() {
        for child in children.remove(&pid).unwrap_or_default() {
            found.push(Pid::from_raw(child));
            next.push(child);
        }
    }
    found
}

/// The state and the parent pid in a `/proc/<pid>/stat` line (after the command name, which may
/// hold spaces and parentheses, come the state and the parent).
fn state_and_parent(stat: &str) -> Option<(char, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Ends this process as the program ended.
fn end_as(ended: Ended) -> ExitCode {
    match ended {
        Ended::Code(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Ended::Signal(signal) => {
            let mut set = SigSet::empty();
            set.add(signal);
            // Unblocked and raised with its default action (the launcher installs no handlers;
            // SIGPIPE, which the Rust runtime ignores, falls through to the exit code).
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = nix::sys::signal::raise(signal);
            ExitCode::from(128 + (signal as i32 & 0x7f) as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_read_up_to_the_program() {
        let args = ["--read", "/usr", "--write", "/tmp/w", "--grace-ms", "1500", "--", "python", "-c", "--read"];
        let spec = Spec::parse(args.iter().map(OsString::from)).expect("spec");
        assert_eq!(spec.read, vec![PathBuf::from("/usr")]);
        assert_eq!(spec.write, vec![PathBuf::from("/tmp/w")]);
        assert_eq!(spec.grace, Duration::from_millis(1500));
        assert_eq!(spec.program, "python");
        assert_eq!(spec.args, vec![OsString::from("-c"), OsString::from("--read")]);
        assert!(Spec::parse(["--read"].iter().map(OsString::from)).is_err());
        assert!(Spec::parse(["--bogus", "x", "--", "p"].iter().map(OsString::from)).is_err());
        assert!(Spec::parse(["--"].iter().map(OsString::from)).is_err());
    }

    #[test]
    fn parents_are_read_past_command_names_with_parentheses() {
        assert_eq!(state_and_parent("42 (python (x) y) S 7 42 42 0"), Some(('S', 7)));
    }
}
