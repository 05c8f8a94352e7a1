//! The one sandbox for user code: "run this program as project P, reaching only what it needs".
//!
//! Every program Anneal starts that runs code a user wrote goes through here: training replicas
//! and tuning trials (`executor/supervise.rs`), the pip install of a job's or a routine's
//! packages ([`pip`]), Python prediction workers, online and batch (`serving/python.rs`). It sits
//! at the bottom of the server beside `storage`: `executor` and `serving` use it, it uses neither.
//!
//! A sandboxed program is started through Anneal's own binary, `anneal sandbox-exec` (the
//! [`launcher`]), which confines itself and then starts the program as its child:
//!
//! - **Files** (Landlock, with `no_new_privs`): read and execute the runtime (the system folders
//!   and the runtime Python's prefixes and import path, the data dir left out) and the folders
//!   its caller named (its packages, its model); write only its own home and the folders its
//!   caller named (its working folder, its job dir). Nothing else of the data dir: no
//!   `admin.token`, database, other projects' folders or published copies.
//! - **Processes**: Landlock's scoping keeps it from signalling, tracing or reading
//!   (`/proc/<pid>/environ`, `mem`) any process outside its sandbox, the server's included. The
//!   launcher is the subreaper of its tree: when the program ends, whatever it left behind (a
//!   `setsid` or double-forked child) is killed, and a stop request is passed to every process
//!   of the tree, then followed by SIGKILL after the grace period.
//! - **Identity**: as root, each project's programs run as a uid of their own ([`identity`]).
//! - **Environment**: none of the server's settings or secrets ([`server_secrets`]).
//!
//! Where the kernel lacks Landlock, the server refuses to run user code and says so, unless the
//! operator set `sandbox = "off"`, which is accepted only with auth off on a loopback address.

pub mod cgroup;
pub mod identity;
pub mod launcher;
pub mod pip;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cgroup::{Group, Limits};
pub use identity::{
    check_output_folder, hand_over, hand_over_tree, make_job_dir, private_file, running_as_root, seal, server_folder,
    Identity, Isolation, IsolationError,
};

/// Whether user code runs confined (`sandbox` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Confined by the kernel's Landlock; without it, user code is refused.
    #[default]
    On,
    /// Not confined (only per-project uids as root): accepted only with auth off on loopback.
    Off,
}

/// What the sandbox is set up from; built once by `server.rs` from the configuration.
#[derive(Clone, Debug)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    /// The runtime Python, whose prefixes and import path sandboxed programs may read.
    pub python: PathBuf,
    /// The data dir: nothing under it is readable unless a caller names it.
    pub data_dir: PathBuf,
    /// The storage root (it may lie outside the data dir, shared by several nodes).
    pub storage_root: PathBuf,
    /// The SQLite database file, when the store is SQLite (made readable by root only).
    pub database_path: Option<PathBuf>,
    /// As root: the account whose group sandboxed programs run in, and the base of their uids.
    pub replica_user: String,
    pub replica_uid_base: u32,
}

/// Why a program could not be sandboxed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel lacks what the sandbox needs, and the operator did not turn it off.
    #[error("user code is not run: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    #[error("cannot create a home folder for a sandboxed program: {0}")]
    Home(std::io::Error),
    #[error("cannot set the limits of a sandboxed program (control group): {0}")]
    Cgroup(std::io::Error),
}

/// The sandbox of one server.
#[derive(Debug)]
pub struct Sandbox {
    isolation: Isolation,
    /// `None`: `sandbox = "off"`.
    confinement: Option<Confinement>,
    /// Where limits are set, as root; `None`: no limits.
    cgroups: Option<cgroup::Hierarchy>,
}

#[derive(Debug)]
struct Confinement {
    /// The program that confines, and the verb it needs (`anneal sandbox-exec`, or none for
    /// `anneal-sandbox`).
    launcher: (PathBuf, Option<&'static str>),
    /// What every sandboxed program may read and execute.
    runtime: Vec<PathBuf>,
    /// Why the kernel cannot confine, when it cannot.
    unavailable: Option<String>,
}

impl Sandbox {
    /// No confinement and no identities: programs run as the server's user. For tests and tools
    /// that run no user code of others.
    pub fn off() -> Self {
        Self { isolation: Isolation::off(), confinement: None, cgroups: None }
    }

    /// Sets the sandbox up at start: the identities (as root), and what the runtime is.
    pub async fn set_up(settings: &SandboxSettings, store: &crate::store::Store) -> Result<Self, SandboxError> {
        let python_paths = python_paths(&settings.python).await;
        let isolation = Isolation::set_up(settings, &python_paths, store).await?;
        let cgroups = if isolation.is_on() { cgroup::Hierarchy::detect() } else { None };
        match &cgroups {
            Some(hierarchy) => {
                tracing::info!(?hierarchy, "replicas get memory, process and CPU limits from their machine types");
                let hierarchy = hierarchy.clone();
                let _ = tokio::task::spawn_blocking(move || hierarchy.sweep()).await;
            }
            None => tracing::warn!(
                "no control groups (not root, or none mounted): replicas run without memory, process or CPU limits"
            ),
        }
        if settings.mode == SandboxMode::Off {
            tracing::warn!(
                "sandbox = \"off\": user code (trainers, pip installs, Python models) runs unconfined, with {}",
                if isolation.is_on() { "a uid per project only" } else { "the server's own rights" }
            );
            return Ok(Self { isolation, confinement: None, cgroups });
        }
        let launcher = launcher_program().map_err(SandboxError::Home)?;
        let unavailable = launcher::probe().err();
        match &unavailable {
            Some(why) => tracing::error!(
                "{why}: training jobs and Python models will be refused; set sandbox = \"off\" to run them unconfined (only with auth off on a loopback address)"
            ),
            None => tracing::info!("user code runs sandboxed (Landlock, no_new_privs, a subreaper per program)"),
        }
        let runtime = runtime_paths(&python_paths, &[&settings.data_dir, &settings.storage_root]);
        Ok(Self { isolation, confinement: Some(Confinement { launcher, runtime, unavailable }), cgroups })
    }

    /// Whether programs run confined.
    pub fn is_confined(&self) -> bool {
        self.confinement.is_some()
    }

    /// Whether programs run as uids of their own (the server is root).
    pub fn is_isolated(&self) -> bool {
        self.isolation.is_on()
    }

    /// The identity `project`'s programs run as, or `None` when the server is not root.
    pub async fn identity(&self, project: &str) -> Result<Option<Identity>, IsolationError> {
        self.isolation.identity(project).await
    }

    /// A cell for one program of `project`, with `home` as its `HOME` (and `home/tmp` its
    /// `TMPDIR`): an existing folder, or `None` for a new temporary one, removed when the last
    /// clone of the cell goes.
    pub async fn cell(self: &Arc<Self>, project: &str, home: Option<PathBuf>) -> Result<Cell, SandboxError> {
        let identity = self.identity(project).await?;
        let made = identity.clone();
        let home = tokio::task::spawn_blocking(move || {
            let home = match home {
                Some(path) => Home::At(path),
                None => Home::Temp(Arc::new(
                    tempfile::Builder::new().prefix("anneal-cell-").tempdir().map_err(SandboxError::Home)?,
                )),
            };
            let path = home.path().to_path_buf();
            match &made {
                Some(id) => id.make_home(&path)?,
                None => std::fs::create_dir_all(path.join("tmp")).map_err(SandboxError::Home)?,
            }
            Ok::<_, SandboxError>(home)
        })
        .await
        .map_err(|e| SandboxError::Home(std::io::Error::other(e)))??;
        Ok(Cell {
            sandbox: self.clone(),
            identity,
            home,
            read: Vec::new(),
            write: Vec::new(),
            grace: Duration::ZERO,
            limits: Limits::default(),
        })
    }
}

#[derive(Clone, Debug)]
enum Home {
    At(PathBuf),
    Temp(Arc<tempfile::TempDir>),
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Self::At(path) => path,
            Self::Temp(dir) => dir.path(),
        }
    }
}

/// Where one kind of program of one project runs: who it runs as, its home, and what it may
/// reach besides the runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cell {
    sandbox: Arc<Sandbox>,
    identity: Option<Identity>,
    home: Home,
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    grace: Duration,
    limits: Limits,
}

impl Cell {
    /// The program runs with `limits` where the host can set them ([`Cell::group`]).
    pub fn limit(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A control group `name` with the cell's limits, for one program: `None` when the cell has
    /// no limits or the host cannot set them (not root, no control groups, no confinement).
    /// Start the program with [`Cell::command_in`], then [`Group::enter`] its pid. Blocks.
    pub fn group(&self, name: &str) -> Result<Option<Group>, SandboxError> {
        let (Some(hierarchy), Some(_)) = (&self.sandbox.cgroups, &self.sandbox.confinement) else { return Ok(None) };
        if !self.limits.any() {
            return Ok(None);
        }
        hierarchy.create(name, self.limits).map(Some).map_err(SandboxError::Cgroup)
    }

    /// Lets the program read (and execute) `path` and what is under it.
    pub fn read(mut self, path: impl Into<PathBuf>) -> Self {
        self.read.push(path.into());
        self
    }

    /// Lets the program write `path` and what is under it.
    pub fn write(mut self, path: impl Into<PathBuf>) -> Self {
        self.write.push(path.into());
        self
    }

    /// After a stop request (SIGTERM), the program's tree gets SIGKILL once `grace` has passed.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Who the program runs as; `None`: the server's user.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The program's `HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A command that runs `program` in this cell: through the launcher (when confined), as the
    /// cell's identity, with its home, and without the server's secrets. Arguments added to it
    /// go to `program`.
    pub fn command(&self, program: impl AsRef<Path>) -> Result<std::process::Command, SandboxError> {
        self.command_in(program, None)
    }

    /// [`Cell::command`] for a program that runs in `group`: its launcher waits until it has been
    /// moved there ([`Group::enter`]) before it starts the program.
    pub fn command_in(
        &self,
        program: impl AsRef<Path>,
        group: Option<&Group>,
    ) -> Result<std::process::Command, SandboxError> {
        use std::os::unix::process::CommandExt;
        let program = program.as_ref();
        let mut command = match &self.sandbox.confinement {
            None => unconfined(program),
            Some(confinement) => {
                if let Some(why) = &confinement.unavailable {
                    return Err(SandboxError::Unavailable(format!(
                        "{why}; the operator can set sandbox = \"off\" to accept running it unconfined"
                    )));
                }
                let (launcher, verb) = &confinement.launcher;
                let mut command = unconfined(launcher);
                command.args(verb).args(self.launcher_args(&confinement.runtime));
                for path in group.map(Group::paths).unwrap_or_default() {
                    command.arg("--cgroup").arg(path);
                }
                command.arg("--").arg(program);
                command
            }
        };
        let home = self.home();
        command.env("HOME", home).env("TMPDIR", home.join("tmp"));
        if let Some(id) = &self.identity {
            command.uid(id.uid).gid(id.gid).env("USER", &id.name).env("LOGNAME", &id.name);
        }
        Ok(command)
    }

    /// `sandbox-exec`'s arguments before `--`.
    fn launcher_args(&self, runtime: &[PathBuf]) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut add = |flag: &str, path: &Path| {
            args.push(flag.into());
            args.push(path.as_os_str().to_owned());
        };
        for path in runtime.iter().chain(&self.read) {
            add("--read", path);
        }
        for path in std::iter::once(self.home()).chain(self.write.iter().map(PathBuf::as_path)) {
            add("--write", path);
        }
        for device in DEVICES {
            add("--write", Path::new(device));
        }
        args.push("--grace-ms".into());
        args.push(self.grace.as_millis().to_string().into());
        args
    }
}

/// The launcher: `anneal-sandbox` beside this executable (no libtorch to load), else this
/// executable itself as `anneal sandbox-exec`.
fn launcher_program() -> std::io::Result<(PathBuf, Option<&'static str>)> {
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("anneal-sandbox");
    Ok(if beside.is_file() { (beside, None) } else { (exe, Some("sandbox-exec")) })
}

/// Device files every sandboxed program may open for writing (the rest of `/dev` is read-only).
const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/shm", "/dev/tty"];

/// Folders of the system that every sandboxed program may read and execute.
const SYSTEM: [&str; 12] =
    ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys", "/dev"];

/// A command for `program` without the server's secrets ([`server_secrets`]) and nothing else:
/// how a [`Cell`] starts its launcher, and how user code runs where Anneal does not confine it
/// (`anneal local`, a Ray shard's workers, `sandbox = "off"`).
pub fn unconfined(program: impl AsRef<Path>) -> std::process::Command {
    let mut command = std::process::Command::new(program.as_ref());
    for name in server_secrets() {
        command.env_remove(name);
    }
    command
}

/// The server's own environment variables that no process running user code inherits (trainers,
/// their pip installs, Python prediction workers): Anneal's settings (`ANNEAL_*`: a database URL
/// with its password, the Ray token, buckets with keys), the AWS credentials the server reaches
/// its buckets with, and the usual database credentials. A job whose job dir is in a bucket gets
/// that bucket's `AWS_*` variables explicitly; anything else it needs comes from its own args.
pub fn server_secrets() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let text = name.to_string_lossy();
            ["ANNEAL_", "AWS_"].iter().any(|prefix| text.starts_with(prefix))
                || ["DATABASE_URL", "PGPASSWORD", "PGPASSFILE", "RAY_AUTH_TOKEN"].contains(&text.as_ref())
        })
        .collect()
}

/// The runtime Python's executable, prefixes and import path (absolute entries only, the
/// executable as configured first): asked of it once at start, for the replica users' reach of
/// it and for what sandboxed programs may read. Empty when it cannot run.
async fn python_paths(python: &Path) -> Vec<PathBuf> {
    let script = "import sys; print('\\n'.join([sys.executable, sys.prefix, sys.base_prefix, *sys.path]))";
    match tokio::process::Command::new(python).args(["-c", script]).output().await {
        Ok(out) if out.status.success() => std::iter::once(python.to_path_buf())
            .chain(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from))
            .filter(|p| p.is_absolute())
            .collect(),
        _ => {
            tracing::warn!(python = %python.display(), "cannot run the runtime Python: training jobs and Python models will fail");
            Vec::new()
        }
    }
}

/// The folders every sandboxed program may read: the system's, and the runtime Python's
/// (`python_paths`: a file stands for its folder), each resolved through symlinks, with `hidden`
/// (the data dir, the storage root) and everything under them left out. A folder that holds a
/// hidden one is replaced by its other entries.
fn runtime_paths(python_paths: &[PathBuf], hidden: &[&Path]) -> Vec<PathBuf> {
    let hidden: Vec<PathBuf> = hidden.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf())).collect();
    let mut allowed = Vec::new();
    for root in SYSTEM.iter().map(PathBuf::from).chain(python_paths.iter().cloned()) {
        let Ok(root) = root.canonicalize() else { continue };
        let dir = if root.is_dir() { root } else { root.parent().map(Path::to_path_buf).unwrap_or(root) };
        allow_except(&dir, &hidden, &mut allowed);
    }
    allowed.sort();
    allowed.dedup();
    // A folder already under another adds nothing.
    let mut kept: Vec<PathBuf> = Vec::with_capacity(allowed.len());
    for path in allowed {
        if !kept.iter().any(|k| path.starts_with(k)) {
            kept.push(path);
        }
    }
    kept
}

/// Adds `dir` to `allowed`, or, when `dir` holds one of `hidden`, its entries that do not lead to
/// one (recursively); a `dir` inside a hidden folder adds nothing.
fn allow_except(dir: &Path, hidden: &[PathBuf], allowed: &mut Vec<PathBuf>) {
    if hidden.iter().any(|h| dir.starts_with(h)) {
        return;
    }
    if !hidden.iter().any(|h| h.starts_with(dir)) {
        allowed.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        allow_except(&entry.path(), hidden, allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_holding_the_data_dir_is_replaced_by_its_other_entries() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in ["a/data/storage", "a/b", "c"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        std::fs::write(root.path().join("a/file"), b"x").expect("write");
        let hidden = vec![root.path().join("a/data")];
        let mut allowed = Vec::new();
        allow_except(root.path(), &hidden, &mut allowed);
        allowed.sort();
        let expected: Vec<PathBuf> = ["a/b", "a/file", "c"].iter().map(|p| root.path().join(p)).collect();
        assert_eq!(allowed, expected);
        let mut inside = Vec::new();
        allow_except(&root.path().join("a/data/storage"), &hidden, &mut inside);
        assert!(inside.is_empty(), "nothing under a hidden folder: {inside:?}");
    }
}
