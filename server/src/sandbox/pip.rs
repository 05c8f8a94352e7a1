//! The one pip install of user packages (a training job's sdists and wheels, a custom prediction
//! routine's): `pip install --no-deps --target STAGING PACKAGES` with the runtime Python, in the
//! caller's [`Cell`] (so `setup.py`, which building an sdist runs, is user code confined like any
//! other), into a staging folder that is sealed (root's and read-only) when the server is root,
//! before it becomes the environment; later programs import it but cannot change it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{hand_over, seal, Cell, SandboxError};

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum PipError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cannot run {python} -m pip: {source}")]
    Start {
        python: String,
        #[source]
        source: std::io::Error,
    },
    /// pip failed; its last lines on stderr.
    #[error("pip install failed with exit code {code}: {last_lines}")]
    Failed { code: i32, last_lines: String },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pip command that installs `packages` into `staging` in `cell` (which must be allowed to
/// write `staging` and read the packages). Output is piped.
pub fn command(
    cell: &Cell,
    python: &Path,
    staging: &Path,
    packages: &[PathBuf],
) -> Result<std::process::Command, PipError> {
    let mut command = cell.command(python)?;
    command
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--no-deps",
            "--no-build-isolation",
            "--target",
        ])
        .arg(staging)
        .args(packages)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    Ok(command)
}

/// pip's outcome from its exit status and stderr: its last non-empty lines when it failed.
pub fn outcome(output: &std::process::Output) -> Result<(), PipError> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(8).collect();
    Err(PipError::Failed {
        code: output.status.code().unwrap_or(-1),
        last_lines: last.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Installs `packages` into `target` once (a `target` holding `.complete` is used as it is),
/// through a staging folder next to it, handed to the cell's identity for pip and sealed after.
/// Blocks.
pub fn install_once(cell: &Cell, python: &Path, packages: &[PathBuf], target: &Path) -> Result<(), PipError> {
    if packages.is_empty() || target.join(".complete").exists() {
        return Ok(());
    }
    let staging = target.with_extension("installing");
    let _ = std::fs::remove_dir_all(&staging);
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| PipError::Io { action, path, source }
    };
    std::fs::create_dir(&staging).map_err(io("create", &staging))?;
    if let Some(id) = cell.identity() {
        hand_over(&staging, id).map_err(SandboxError::from)?;
    }
    let cell = cell.clone().write(&staging);
    let cell = packages.iter().fold(cell, |cell, p| cell.read(p));
    let output = command(&cell, python, &staging, packages)?
        .output()
        .map_err(|source| PipError::Start { python: python.display().to_string(), source })?;
    if let Err(e) = outcome(&output) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if cell.identity().is_some() {
        if let Err(e) = seal(&staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(SandboxError::from(e).into());
        }
    }
    let _ = std::fs::remove_dir_all(target);
    std::fs::rename(&staging, target)
        .and_then(|()| std::fs::write(target.join(".complete"), b""))
        .map_err(io("keep the installed packages in", target))
}
