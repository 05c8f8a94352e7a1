//! Who a sandboxed program runs as, and which folders it may write (moved here from the
//! executor: the serving module's workers use it too).
//!
//! A trainer is code a user submitted: it must not be able to change the server (its binary,
//! libtorch, its Python environment, the database and storage under the data dir) or another
//! project's files. When the server runs as root, every project's replicas, and the pip install of
//! its packages, run as a uid of their own, `replica_uid_base + n` (n numbers the projects in the
//! order their first program ran, on whichever node: the numbers are rows of the database's
//! `project_uids`, allocated once, so every node runs a project as the same uid), with the group of the
//! `replica_user` account, which start-up creates when it is missing. A uid per project, not one
//! for all: processes of one uid may signal and trace each other and write each other's files, so
//! one shared uid would let project A's trainer change project B's running job or cached packages.
//!
//! The folders follow from that: what the server writes (the job's folder, `job.log`,
//! `metrics.jsonl`, installed package environments) is root's and not writable by others; what a
//! replica writes (its own working folder, a job dir Anneal creates for it) is its project's uid's,
//! mode 0700. Every walk that changes ownership is safe against a replica swapping entries for
//! symlinks while it runs (see [`hand_over_tree`] and [`seal`]).
//!
//! Without root, replicas run as the server's user and the isolation is only what the OS gives
//! that user.
//!
//! Every failure here is an [`IsolationError`]: a file-system step on a path, a path refused
//! because a replica could redirect it, or the replica users' set-up. Its text is written for the
//! job's owner or the operator (it becomes a job's `errorMessage` or a start-up error).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::process::Command;

/// Why isolating a job's replicas, or setting isolation up at start, failed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A file-system step on `path` failed.
    #[error("cannot {}: {source}", .action.on(.path))]
    Io {
        action: Action,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `path` is not one the server may use as root: a replica could have planted it or could
    /// redirect it.
    #[error("{}", .reason.explain(.path))]
    Refused { path: PathBuf, reason: Refusal },
    /// The replica users could not be set up.
    #[error(transparent)]
    Users(#[from] ReplicaUsersError),
}

impl IsolationError {
    /// An [`IsolationError::Io`] of `action` on `path`.
    fn io(action: Action, path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io { action, path: path.to_path_buf(), source }
    }

    fn refused(path: &Path, reason: Refusal) -> Self {
        Self::Refused { path: path.to_path_buf(), reason }
    }
}

/// The file-system step an [`IsolationError::Io`] failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    /// Canonicalizing the data dir (its path is not shown: the operator named it).
    ReadDataDir,
    Create,
    CreateJobDir,
    Write,
    SetMode,
    /// Making a database file readable by root only.
    MakePrivate,
    /// Adding search permission for others.
    LetReplicasReach,
    /// Giving a folder or tree to a replica's uid ([`hand_over`], [`hand_over_tree`]).
    GiveToReplicaUser,
    /// Making a replica-written tree root's and read-only ([`seal`]).
    Seal,
}

impl Action {
    /// What the server could not do, naming `path`: the text after "cannot ".
    fn on(self, path: &Path) -> String {
        let path = path.display();
        match self {
            Self::Read => format!("read {path}"),
            Self::ReadDataDir => "read the data dir".to_owned(),
            Self::Create => format!("create {path}"),
            Self::CreateJobDir => format!("create the job dir {path}"),
            Self::Write => format!("write {path}"),
            Self::SetMode => format!("set the mode of {path}"),
            Self::MakePrivate => format!("make {path} private"),
            Self::LetReplicasReach => format!("let replicas reach {path}"),
            Self::GiveToReplicaUser => format!("give {path} to the replica user"),
            Self::Seal => format!("seal {path}"),
        }
    }
}

/// Why a path was refused ([`IsolationError::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A folder to hand over is something else (a file, a symlink).
    NotAFolder,
    /// A server folder is not a real folder owned by root.
    NotRootsFolder,
    /// The job dir is the data dir, directly in it, or inside its `storage/` folder.
    JobDirInDataDir {
        data_dir: PathBuf,
    },
    JobDirNotAFolder,
    /// A folder on the way to the job dir became a symlink after the path was checked.
    JobDirThroughSymlink,
    /// The job dir would be created in `folder`, which is not root's or which others may write.
    JobDirInOpenFolder {
        folder: PathBuf,
    },
    OutputThroughSymlink,
    OutputNotAFolder,
    /// The output path lies in `folder`, which is not root's or which others may write.
    OutputInOpenFolder {
        folder: PathBuf,
    },
}

impl Refusal {
    /// The refusal of `path`, with what to do instead where there is something.
    fn explain(&self, path: &Path) -> String {
        let shown = path.display();
        match self {
            Self::NotAFolder => format!("{shown} is not a folder"),
            Self::NotRootsFolder => {
                format!("{shown} is not a folder of root's; remove it and submit the job again")
            }
            Self::JobDirInDataDir { data_dir } => format!(
                "the job dir {shown} must not be the data dir, directly in it, or inside its storage/ folder: use a subfolder such as {}/outputs/<job>",
                data_dir.display()
            ),
            Self::JobDirNotAFolder => format!("the job dir {shown} exists and is not a folder"),
            Self::JobDirThroughSymlink => {
                format!("the job dir {shown} is reached through a symlink that changed since it was checked")
            }
            Self::JobDirInOpenFolder { folder } => format!(
                "the job dir {shown} would be created in {}, which is not root's alone (another job's folder?); choose a job dir elsewhere",
                folder.display()
            ),
            Self::OutputThroughSymlink => format!(
                "the output path {shown} is reached through a symlink; name the folder it leads to, outside any job dir"
            ),
            Self::OutputNotAFolder => format!("the output path {shown} is not a folder"),
            Self::OutputInOpenFolder { folder } => format!(
                "the output path {shown} must lie in folders only root may change while the server runs as root, and {} is not (a job dir?); choose an output path elsewhere",
                folder.display()
            ),
        }
    }
}

/// Why the replica users (the `replica_user` account and the uids above `replica_uid_base`)
/// could not be set up or numbered.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaUsersError {
    #[error("replica_user '{user}' is not a user name")]
    NotAUserName { user: String },
    #[error("replica_user '{user}' is root or in root's group; name an unprivileged user")]
    Privileged { user: String },
    #[error("replica_uid_base {base} is a system uid; use one above 65535")]
    SystemUidBase { base: u32 },
    /// `useradd` could not be started.
    #[error("cannot run useradd to create the replica user '{user}': {source}; create an unprivileged user and name it in replica_user")]
    Useradd {
        user: String,
        #[source]
        source: std::io::Error,
    },
    /// `useradd` ran but the user still does not exist; `useradd` is what it wrote to stderr.
    #[error("cannot create the replica user '{user}' (useradd: {useradd}); create an unprivileged user and name it in replica_user")]
    NotCreated { user: String, useradd: String },
    /// The database could not read or allocate a project's number.
    #[error("cannot read or allocate the sandbox identity of project '{project}' in the database: {message}")]
    Registry { project: String, message: String },
    /// Every uid from `replica_uid_base + 1` up to `u32::MAX - 1` is taken.
    #[error("no replica uid left above replica_uid_base {base}")]
    UidsExhausted { base: u32 },
}

/// The uid and gid one project's replicas run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// `USER` and `LOGNAME` of its processes: `<replica_user>-<n>`, one name per project, so
    /// tools that key caches by user name (`/tmp/torchinductor_<user>`) do not share them.
    pub name: String,
}

impl Identity {
    /// Makes `command` run as this identity, with `home` as its `HOME` and `home/tmp` as its
    /// `TMPDIR`. The standard library drops every supplementary group when root sets a uid.
    pub fn apply(&self, command: &mut Command, home: &Path) {
        command
            .uid(self.uid)
            .gid(self.gid)
            .env("HOME", home)
            .env("TMPDIR", home.join("tmp"))
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
    }

    /// Creates `home` and `home/tmp` (if missing) for [`Identity::apply`], owned by this identity;
    /// `tmp` first, so that `home` is still root's while root works in it.
    pub fn make_home(&self, home: &Path) -> Result<(), IsolationError> {
        let tmp = home.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(IsolationError::io(Action::Create, &tmp))?;
        hand_over(&tmp, self)?;
        hand_over(home, self)
    }
}

/// How replicas are kept apart from the server and from each other; one per server.
#[derive(Debug, Default)]
pub struct Isolation {
    /// `None`: the server is not root, and replicas run as its user.
    users: Option<ReplicaUsers>,
}

#[derive(Debug)]
struct ReplicaUsers {
    /// The `replica_user` account's name and group.
    name: String,
    gid: u32,
    base: u32,
    /// The numbers' home (`project_uids`), and the ones this node has read from it (a
    /// project's number never changes).
    store: crate::store::Store,
    ids: Mutex<BTreeMap<String, u32>>,
}

impl Isolation {
    /// No isolation: replicas run as the server's user.
    pub fn off() -> Self {
        Self::default()
    }

    /// Sets isolation up at start. As root: creates `replica_user` when missing, lets others
    /// search (not list) the data dir and the storage root so replicas reach their folders, makes
    /// the database files readable by root only, and makes the runtime Python reachable for
    /// replicas. Not root: nothing to do.
    pub async fn set_up(
        config: &super::SandboxSettings,
        python_paths: &[PathBuf],
        store: &crate::store::Store,
    ) -> Result<Self, IsolationError> {
        if !running_as_root() {
            tracing::info!("the server does not run as root: replicas run as its user, isolated only as far as the OS isolates that user");
            return Ok(Self::off());
        }
        let (uid, gid) = ensure_user(&config.replica_user).await?;
        if uid == 0 || gid == 0 {
            return Err(ReplicaUsersError::Privileged { user: config.replica_user.clone() }.into());
        }
        if config.replica_uid_base < 1000 {
            return Err(ReplicaUsersError::SystemUidBase { base: config.replica_uid_base }.into());
        }
        let data_dir =
            config.data_dir.canonicalize().map_err(IsolationError::io(Action::ReadDataDir, &config.data_dir))?;
        reach(&data_dir, "so replicas can reach their folders in the data dir");
        grant_search(&config.storage_root)?;
        // A PostgreSQL store has no file here.
        if let Some(db) = &config.database_path {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let file = PathBuf::from(format!("{}{suffix}", db.display()));
                if file.exists() {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                        .map_err(IsolationError::io(Action::MakePrivate, &file))?;
                }
            }
        }
        // Numbers a node allocated before the database kept them stay the projects' own.
        let legacy = read_ids(&config.storage_root.join("replica-ids"));
        if !legacy.is_empty() {
            let numbers: Vec<(String, i64)> = legacy.iter().map(|(p, n)| (p.clone(), i64::from(*n))).collect();
            store.import_project_uids(&numbers).await.map_err(|e| ReplicaUsersError::Registry {
                project: "(storage/replica-ids)".into(),
                message: e.to_string(),
            })?;
        }
        let users = ReplicaUsers {
            name: config.replica_user.clone(),
            gid,
            base: config.replica_uid_base,
            store: store.clone(),
            ids: Mutex::new(BTreeMap::new()),
        };
        let probe = Identity { uid: users.base, gid, name: users.name.clone() };
        reach_python(&config.python, python_paths, &probe).await;
        tracing::info!(
            replica_user = %users.name,
            gid,
            uid_base = users.base,
            "replicas run as a uid of their own per project (replica_uid_base + n) with the replica user's group"
        );
        Ok(Self { users: Some(users) })
    }

    /// Whether replicas run as other users than the server's.
    pub fn is_on(&self) -> bool {
        self.users.is_some()
    }

    /// The identity `project`'s programs run as (numbered the first time any node ran one), or
    /// `None` when isolation is off.
    pub async fn identity(&self, project: &str) -> Result<Option<Identity>, IsolationError> {
        let Some(users) = &self.users else { return Ok(None) };
        let n = users.number(project).await?;
        let uid = users
            .base
            .checked_add(n)
            .filter(|uid| *uid < u32::MAX)
            .ok_or(ReplicaUsersError::UidsExhausted { base: users.base })?;
        Ok(Some(Identity { uid, gid: users.gid, name: format!("{}-{n}", users.name) }))
    }
}

impl ReplicaUsers {
    /// `project`'s number: the one this node read before, else the database's (allocated there
    /// the first time any node asks).
    async fn number(&self, project: &str) -> Result<u32, ReplicaUsersError> {
        let known = self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(project).copied();
        if let Some(n) = known {
            return Ok(n);
        }
        let (taken, base) = (passwd_uids(), self.base);
        // A number whose uid is an account of this host is skipped; one past the last uid ends
        // the search (and fails in `identity`).
        let usable = |n: i64| match u32::try_from(n).ok().and_then(|n| base.checked_add(n)) {
            Some(uid) => uid == u32::MAX || !taken.contains(&uid),
            None => true,
        };
        let n = self
            .store
            .project_uid(project, usable)
            .await
            .map_err(|e| ReplicaUsersError::Registry { project: project.to_owned(), message: e.to_string() })?;
        let n = u32::try_from(n).map_err(|_| ReplicaUsersError::UidsExhausted { base })?;
        self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(project.to_owned(), n);
        Ok(n)
    }
}

/// Whether this process's effective uid is 0 (read from `/proc/self/status`: the workspace
/// forbids `unsafe`, and nix's `user` feature is not enabled).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The uid and gid of `user`, creating it as a system account (no home, no login shell) when it
/// does not exist. Creating it here, rather than asking the operator first, keeps a root start
/// (CI, a container) working with nothing set up by hand; a second server racing to create it
/// finds it on the second look.
async fn ensure_user(user: &str) -> Result<(u32, u32), ReplicaUsersError> {
    if user.is_empty() || user.starts_with('-') || user.contains(char::is_whitespace) {
        return Err(ReplicaUsersError::NotAUserName { user: user.to_owned() });
    }
    if let Some(ids) = lookup(user).await {
        return Ok(ids);
    }
    let shell = ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]
        .into_iter()
        .find(|s| Path::new(s).exists())
        .unwrap_or("/bin/false");
    let created = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", shell, user])
        .output()
        .await
        .map_err(|source| ReplicaUsersError::Useradd { user: user.to_owned(), source })?;
    if let Some(ids) = lookup(user).await {
        if created.status.success() {
            tracing::info!(replica_user = user, uid = ids.0, gid = ids.1, "created the replica user");
        }
        return Ok(ids);
    }
    Err(ReplicaUsersError::NotCreated {
        user: user.to_owned(),
        useradd: String::from_utf8_lossy(&created.stderr).trim().to_owned(),
    })
}

/// `id -u` and `id -g` of `user`, through the system's user database.
async fn lookup(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &'static str| async move {
        let out = Command::new("id").arg(flag).arg("--").arg(user).output().await.ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok()
    };
    Some((id("-u").await?, id("-g").await?))
}

/// The uids of `/etc/passwd`, which replica uids must not reuse.
fn passwd_uids() -> std::collections::HashSet<u32> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(':').nth(2)?.parse().ok())
        .collect()
}

fn read_ids(registry: &Path) -> BTreeMap<String, u32> {
    std::fs::read_to_string(registry)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (n, project) = line.split_once(' ')?;
            Some((project.to_owned(), n.parse().ok()?))
        })
        .collect()
}

/// Adds search permission for others to `dir` (never read: they can reach a path they know, not
/// list the folder).
fn grant_search(dir: &Path) -> Result<(), IsolationError> {
    let meta = std::fs::metadata(dir).map_err(IsolationError::io(Action::Read, dir))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(IsolationError::io(Action::LetReplicasReach, dir))?;
    }
    Ok(())
}

/// Gives others search permission (o+x, never read) on `dir` and every folder above it that
/// lacks it, logging each change with `why`.
fn reach(dir: &Path, why: &str) {
    for folder in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(folder) else { continue };
        if meta.permissions().mode() & 0o001 != 0 {
            continue;
        }
        match grant_search(folder) {
            Ok(()) => {
                tracing::warn!(folder = %folder.display(), "gave others search permission (o+x, not read) on this folder {why}")
            }
            Err(e) => tracing::warn!(error = %e, "replicas may not reach {}", folder.display()),
        }
    }
}

/// Makes the runtime Python runnable by replicas: every folder on the way to its executable,
/// prefixes and import path (`paths`, [`super::python_paths`]) gets search permission for others
/// where it lacks it (a Python under `/root`, mode 0700, as pyenv installs it for root, is the
/// usual case), each one logged. Then
/// runs it once as `probe` and warns when that still fails (the server still starts: it may only
/// serve models).
async fn reach_python(python: &Path, paths: &[PathBuf], probe: &Identity) {
    if paths.is_empty() {
        return;
    }
    let mut dirs = std::collections::BTreeSet::new();
    for line in paths {
        let Some(existing) = line.ancestors().find(|a| a.exists()) else { continue };
        let Ok(canonical) = existing.canonicalize() else { continue };
        let start = if canonical.is_dir() { canonical.as_path() } else { canonical.parent().unwrap_or(Path::new("/")) };
        dirs.insert(start.to_path_buf());
    }
    for dir in dirs {
        reach(&dir, "so replicas can run the runtime Python");
    }
    let mut command = Command::new(python);
    command.args(["-c", "import encodings"]).uid(probe.uid).gid(probe.gid).env("HOME", "/");
    match command.output().await {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            python = %python.display(),
            error = %String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default(),
            "the replica user cannot run the runtime Python: training jobs will fail"
        ),
        Err(e) => {
            tracing::warn!(python = %python.display(), error = %e, "the replica user cannot run the runtime Python: training jobs will fail")
        }
    }
}

/// Gives the freshly created folder `dir` (root's, not a symlink) to `id`, mode 0700.
pub fn hand_over(dir: &Path, id: &Identity) -> Result<(), IsolationError> {
    let fail = || IsolationError::io(Action::GiveToReplicaUser, dir);
    let meta = std::fs::symlink_metadata(dir).map_err(fail())?;
    if !meta.is_dir() {
        return Err(IsolationError::refused(dir, Refusal::NotAFolder));
    }
    std::os::unix::fs::lchown(dir, Some(id.uid), Some(id.gid)).map_err(fail())?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail())
}

/// Gives a tree root created (the folder pip builds in, with its `HOME`) to `id`, children
/// before their folder: while a folder is still root's, nothing in it can be swapped, so no path
/// followed here leads out of the tree.
pub fn hand_over_tree(dir: &Path, id: &Identity) -> Result<(), IsolationError> {
    let fail = || IsolationError::io(Action::GiveToReplicaUser, dir);
    let meta = std::fs::symlink_metadata(dir).map_err(fail())?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(fail())? {
            hand_over_tree(&entry.map_err(fail())?.path(), id)?;
        }
    }
    std::os::unix::fs::lchown(dir, Some(id.uid), Some(id.gid)).map_err(fail())
}

/// Makes a tree a replica wrote (an installed package environment) root's and read-only for
/// everyone else: each entry's owner becomes root, then its mode becomes 0755 (folders and
/// executables) or 0644 (no setuid, setgid, sticky or write bit for anyone but root). A folder
/// becomes root's before its entries are visited, so a replica still running cannot swap them for
/// symlinks; symlinks themselves are left as they are (they cannot be changed once their folder
/// is root's).
pub fn seal(dir: &Path) -> Result<(), IsolationError> {
    let fail = || IsolationError::io(Action::Seal, dir);
    let meta = std::fs::symlink_metadata(dir).map_err(fail())?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, Some(0), Some(0)).map_err(fail())?;
    let mode = if meta.is_dir() || meta.mode() & 0o100 != 0 { 0o755 } else { 0o644 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(fail())?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(fail())? {
            seal(&entry.map_err(fail())?.path())?;
        }
    }
    Ok(())
}

/// Makes the server's folder `dir` searchable but not listable by others (0711), after checking
/// that it is a real folder and root's, so no replica planted it.
pub fn server_folder(dir: &Path) -> Result<(), IsolationError> {
    let meta = std::fs::symlink_metadata(dir).map_err(IsolationError::io(Action::Read, dir))?;
    if !meta.is_dir() || meta.uid() != 0 {
        return Err(IsolationError::refused(dir, Refusal::NotRootsFolder));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(IsolationError::io(Action::SetMode, dir))
}

/// Creates the server-written file `path` (if missing) readable by root only.
pub fn private_file(path: &Path) -> Result<(), IsolationError> {
    let fail = || IsolationError::io(Action::Create, path);
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(fail())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail())
}

/// Creates a job dir for `id`'s replicas. Anneal gives the job dir to the replica's uid only when
/// it creates it, and creates it only inside a folder chain of root's that nobody else may write
/// (or a sticky one such as `/tmp`), so no replica can redirect the folder it is given. Inside the
/// data dir a job dir must lie in a subfolder, outside `storage/`, where the server's own folders
/// are made later (another project's packages, uploads, models). An existing job dir is left as
/// it is: the replica can write it only if it already may (a job of the same project made it).
pub fn make_job_dir(job_dir: &Path, storage_root: &Path, id: &Identity) -> Result<(), IsolationError> {
    let refused = |reason| Err(IsolationError::refused(job_dir, reason));
    let storage = storage_root.canonicalize().map_err(IsolationError::io(Action::Read, storage_root))?;
    let data_dir = storage.parent().unwrap_or(Path::new("/"));
    if job_dir.starts_with(&storage) || job_dir == data_dir || job_dir.parent() == Some(data_dir) {
        return refused(Refusal::JobDirInDataDir { data_dir: data_dir.to_path_buf() });
    }
    if let Ok(meta) = std::fs::symlink_metadata(job_dir) {
        return if meta.is_dir() { Ok(()) } else { refused(Refusal::JobDirNotAFolder) };
    }
    let existing = job_dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if existing.canonicalize().ok().as_deref() != Some(existing) {
        return refused(Refusal::JobDirThroughSymlink);
    }
    if let Some(folder) = not_root_only(existing)? {
        return refused(Refusal::JobDirInOpenFolder { folder: folder.to_path_buf() });
    }
    std::fs::create_dir_all(job_dir).map_err(IsolationError::io(Action::CreateJobDir, job_dir))?;
    hand_over(job_dir, id)
}

/// The first of `folder` and the folders above it that is not root's or that others may write
/// (a sticky folder such as `/tmp` excepted), or `None` when there is none: then no replica can
/// change what `folder` leads to.
fn not_root_only(folder: &Path) -> Result<Option<&Path>, IsolationError> {
    for folder in folder.ancestors() {
        let meta = std::fs::metadata(folder).map_err(IsolationError::io(Action::Read, folder))?;
        let writable_by_others = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if meta.uid() != 0 || writable_by_others {
            return Ok(Some(folder));
        }
    }
    Ok(None)
}

/// Checks, when the server runs as root, the folder a batch prediction job writes its shards to
/// (`dir`, as the user named it): it must be a folder of root's, or be missing (root creates it)
/// in one, reached through no symlink, with every folder above it root's and closed to others'
/// writes as [`make_job_dir`] requires. So no replica can plant a symlink that redirects root's
/// writes (a job dir is the replica's, so an output folder may not lie in one).
pub fn check_output_folder(dir: &Path) -> Result<(), IsolationError> {
    let refused = |reason| Err(IsolationError::refused(dir, reason));
    let existing = dir.ancestors().find(|a| a.symlink_metadata().is_ok()).unwrap_or(Path::new("/"));
    if existing.canonicalize().ok().as_deref() != Some(existing) {
        return refused(Refusal::OutputThroughSymlink);
    }
    if !existing.is_dir() {
        return refused(Refusal::OutputNotAFolder);
    }
    match not_root_only(existing)? {
        Some(folder) => refused(Refusal::OutputInOpenFolder { folder: folder.to_path_buf() }),
        None => Ok(()),
    }
}
