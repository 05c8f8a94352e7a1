//! Preparing a training job's packages: folders that are plain Python packages go on
//! `PYTHONPATH` as they are; sdists, wheels and project folders are installed with pip, once per
//! distinct set and project (cached by their content under `storage/envs/<project>/`, so no
//! project's trainer can change what another project imports). With an isolation identity, pip
//! runs as it, into a folder it owns, and the finished environment is sealed: root's and
//! read-only, so later replicas, of this project too, can import it but not change it.
//!
//! File-system work (hashing the packages, staging folders, sealing) runs on blocking threads.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use super::supervise::LogSender;
use super::{Identity, RunError};
use crate::names::ProjectId;
use crate::sandbox::{self as isolation, pip, Sandbox};
use crate::storage::Storage;

/// What the packages of one job are prepared with.
pub struct Packages<'a> {
    pub storage: &'a Storage,
    /// The runtime Python, which runs pip.
    pub python: &'a Path,
    pub project: &'a ProjectId,
    /// pip runs in a cell of the project's, as a trainer would.
    pub sandbox: &'a std::sync::Arc<Sandbox>,
    pub identity: Option<&'a Identity>,
}

/// The packages sorted: what goes on `PYTHONPATH` as is, and what pip installs.
struct Sorted {
    path: Vec<PathBuf>,
    installable: Vec<PathBuf>,
    /// The environment folder for `installable` (complete when it holds `.complete`).
    env: PathBuf,
    key: u64,
}

impl Packages<'_> {
    /// Installs what needs installing and returns the `PYTHONPATH` entries that make the
    /// packages importable.
    pub async fn prepare(&self, packages: &[PathBuf], log: &LogSender) -> Result<Vec<PathBuf>, RunError> {
        let sorted = {
            let (packages, envs) = (packages.to_vec(), self.storage.root().join("envs").join(self.project.as_str()));
            let isolated = self.identity.is_some();
            tokio::task::spawn_blocking(move || sort(packages, &envs, isolated)).await??
        };
        let Sorted { mut path, installable, env, key } = sorted;
        if installable.is_empty() {
            return Ok(path);
        }
        if env.join(".complete").exists() {
            let _ = log
                .send(("service".into(), format!("Using the cached environment for these packages ({key:016x}).")))
                .await;
            path.insert(0, env);
            return Ok(path);
        }
        let _ = log.send(("service".into(), "Installing the trainer packages with pip.".into())).await;
        self.install(&installable, &env, key).await?;
        path.insert(0, env);
        Ok(path)
    }

    /// Builds the environment `env` from `installable` with pip, in a staging folder renamed into
    /// place when complete (a concurrent job that finished first wins; its copy is used).
    async fn install(&self, installable: &[PathBuf], env: &Path, key: u64) -> Result<(), RunError> {
        let envs = env.parent().unwrap_or(env).to_path_buf();
        let staged = {
            let (storage, project, packages) = (self.storage.clone(), self.project.clone(), installable.to_vec());
            let isolated = self.identity.is_some();
            tokio::task::spawn_blocking(move || stage(&storage, &project, &packages, &envs, key, isolated)).await??
        };
        if let Some(id) = self.identity {
            let (tree, owner) = (staged.sources.path().to_path_buf(), id.clone());
            tokio::task::spawn_blocking(move || isolation::hand_over_tree(&tree, &owner)).await??;
            isolation::hand_over(staged.staging.path(), id)?;
            for (package, copy) in &staged.copies {
                copy_as(id, &staged.home, package, copy).await?;
            }
        }
        self.pip(&staged).await?;
        let Staged { staging, sources, .. } = staged;
        drop(sources);
        let (staging, env, isolated) = (staging.keep(), env.to_path_buf(), self.identity.is_some());
        tokio::task::spawn_blocking(move || finish(&staging, &env, isolated)).await?
    }

    /// The sandbox's one pip install ([`pip::command`]) into the staging folder, in a cell of the
    /// project's that may write only the staging and source folders; whatever it started and left
    /// behind is killed with it.
    async fn pip(&self, staged: &Staged) -> Result<(), RunError> {
        let cell = self
            .sandbox
            .cell(self.project.as_str(), Some(staged.home.clone()))
            .await?
            .write(staged.staging.path())
            .write(staged.sources.path());
        let cell = staged.targets.iter().fold(cell, |cell, target| cell.read(target));
        let mut command = Command::from(pip::command(&cell, self.python, staged.staging.path(), &staged.targets)?);
        command.kill_on_drop(true);
        let program = format!("{} -m pip", self.python.display());
        let child = command.spawn().map_err(|source| RunError::Spawn { program: program.clone(), source })?;
        let group = child.id();
        let output = child.wait_with_output().await;
        if let Some(group) = group {
            let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
        }
        let output = output.map_err(|source| RunError::Spawn { program, source })?;
        Ok(pip::outcome(&output)?)
    }
}

/// Sorts the packages and fingerprints the installable ones. Blocks.
fn sort(packages: Vec<PathBuf>, envs: &Path, isolated: bool) -> Result<Sorted, RunError> {
    let mut path = Vec::new();
    let mut installable = Vec::new();
    for package in packages {
        let is_project = package.join("setup.py").exists() || package.join("pyproject.toml").exists();
        if package.is_dir() && !is_project {
            path.push(package);
        } else {
            installable.push(package);
        }
    }
    let key = fingerprint(&installable);
    if !installable.is_empty() {
        std::fs::create_dir_all(envs).map_err(RunError::io("create", envs))?;
        if isolated {
            isolation::server_folder(envs)?;
        }
    }
    Ok(Sorted { path, installable, env: envs.join(format!("{key:016x}")), key })
}

/// The folders pip works in, and what it installs.
struct Staged {
    staging: tempfile::TempDir,
    /// Copies of package folders (pip builds a folder in place; the user's stays clean).
    sources: tempfile::TempDir,
    /// `HOME` of an isolated pip.
    home: PathBuf,
    targets: Vec<PathBuf>,
    /// Folders to copy as the replica user: (package, copy).
    copies: Vec<(PathBuf, PathBuf)>,
}

/// Creates the staging folders and lists pip's targets. Blocks.
fn stage(
    storage: &Storage,
    project: &ProjectId,
    installable: &[PathBuf],
    envs: &Path,
    key: u64,
    isolated: bool,
) -> Result<Staged, RunError> {
    let fail = RunError::io("create a folder to install the packages in", envs);
    let staging = tempfile::Builder::new().prefix(&format!(".{key:016x}-")).tempdir_in(envs).map_err(fail)?;
    let sources = tempfile::Builder::new()
        .prefix(".src-")
        .tempdir_in(envs)
        .map_err(RunError::io("create a folder to install the packages in", envs))?;
    let home = sources.path().join(".home");
    std::fs::create_dir_all(home.join("tmp")).map_err(RunError::io("create", &home))?;
    let mut targets = Vec::with_capacity(installable.len());
    let mut copies = Vec::new();
    for (i, package) in installable.iter().enumerate() {
        let copy = sources.path().join(i.to_string());
        if !package.is_dir() {
            targets.push(package.clone());
        } else if isolated {
            // Copied as the replica's user, so the copy reads only what that user may (not
            // another project's job dir named as a package).
            copies.push((package.clone(), copy.clone()));
            targets.push(copy);
        } else {
            let relative = copy.strip_prefix(storage.root()).unwrap_or(&copy).to_path_buf();
            let copied =
                storage.copy_into(project, package, &relative).map_err(|e| RunError::Storage(e.to_string()))?;
            targets.push(copied);
        }
    }
    Ok(Staged { staging, sources, home, targets, copies })
}

/// `cp -R package copy` as the replica user.
async fn copy_as(id: &Identity, home: &Path, package: &Path, copy: &Path) -> Result<(), RunError> {
    let mut cp = Command::new("cp");
    cp.arg("-R").arg("--").arg(package).arg(copy).stdin(Stdio::null());
    id.apply(&mut cp, home);
    let out = cp.output().await.map_err(|source| RunError::Spawn { program: "cp".into(), source })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(RunError::CopyPackage {
        package: package.to_path_buf(),
        reason: stderr.lines().last().unwrap_or_default().to_owned(),
    })
}

/// Seals (when isolated) and completes the staged environment, then renames it into place.
/// Blocks.
fn finish(staging: &Path, env: &Path, isolated: bool) -> Result<(), RunError> {
    let done = || -> Result<(), RunError> {
        if isolated {
            isolation::seal(staging)?;
        }
        std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o755))
            .and_then(|()| std::fs::write(staging.join(".complete"), b""))
            .map_err(RunError::io("finish the package environment", staging))
    };
    if let Err(e) = done() {
        let _ = std::fs::remove_dir_all(staging);
        return Err(e);
    }
    if std::fs::rename(staging, env).is_err() {
        // Another job installed the same set meanwhile; use theirs.
        let _ = std::fs::remove_dir_all(staging);
    }
    Ok(())
}

/// A stable hash of the packages' paths, sizes and modification times (FNV-1a). Blocks.
fn fingerprint(packages: &[PathBuf]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut files = Vec::new();
    for package in packages {
        collect_files(package, &mut files);
    }
    files.sort();
    for file in files {
        feed(file.to_string_lossy().as_bytes());
        if let Ok(meta) = std::fs::metadata(&file) {
            feed(&meta.len().to_le_bytes());
            let modified =
                meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            feed(&modified.as_nanos().to_le_bytes());
        }
    }
    hash
}

/// The files that make up a package, leaving out what building it leaves behind (pip builds a
/// folder in place: `build/`, `*.egg-info/`, `__pycache__/`).
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if matches!(name.as_str(), "build" | "dist" | "__pycache__") || name.ends_with(".egg-info") {
                continue;
            }
            collect_files(&entry.path(), files);
        }
    } else {
        files.push(path.to_path_buf());
    }
}
