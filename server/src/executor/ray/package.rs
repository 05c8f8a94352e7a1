//! The working directory a job takes to Ray: one zip holding Anneal's driver
//! (`anneal_ray_driver.py`), the job's spec (`anneal_job.json`) and its packages, uploaded to the
//! head's package store (`gcs://_ray_pkg_<hash>.zip`). Ray unpacks it on every node that runs a
//! part of the job, so nothing assumes a shared disk.
//!
//! Package folders go in as they are under `packages/<i>/`: a plain Python package folder is put
//! on `PYTHONPATH`, a project folder (`setup.py` or `pyproject.toml`), an sdist or a wheel is
//! installed by each replica's actor with pip on its own node (so the user's build code runs on
//! the cluster, never on Anneal's host). Symbolic links are not followed; what building leaves in
//! a folder (`build/`, `dist/`, `__pycache__/`, `*.egg-info/`) is left out. The zip is the same
//! bytes for the same inputs (fixed times, sorted names), so its hash names its content.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

/// Anneal's driver, shipped in every job's working directory.
pub const DRIVER: &str = include_str!("../../../python/ray_driver.py");

/// The driver's file name in the working directory.
pub const DRIVER_FILE: &str = "anneal_ray_driver.py";

/// A package as the driver takes it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PackageEntry {
    /// Its folder in the working directory.
    pub path: String,
    /// Whether pip installs it (else the folder goes on `PYTHONPATH`).
    pub install: bool,
    /// The file in `path` to install (an sdist or wheel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A built working directory.
#[derive(Debug)]
pub struct Package {
    /// `_ray_pkg_<hash>.zip`.
    pub name: String,
    pub zip: Vec<u8>,
}

/// Why the working directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read the package {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot zip the job's packages for Ray: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// How `packages` appear in the working directory.
pub fn entries(packages: &[PathBuf]) -> Vec<PackageEntry> {
    packages
        .iter()
        .enumerate()
        .map(|(i, package)| {
            let path = format!("packages/{i}");
            if package.is_dir() {
                let install = package.join("setup.py").exists() || package.join("pyproject.toml").exists();
                PackageEntry { path, install, file: None }
            } else {
                let file = package.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                PackageEntry { path, install: true, file: Some(file) }
            }
        })
        .collect()
}

/// Zips the driver, `spec` and `packages` (laid out as [`entries`] says). Blocks.
pub fn build(spec: &serde_json::Value, packages: &[PathBuf]) -> Result<Package, PackageError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, package) in packages.iter().enumerate() {
        let meta = std::fs::symlink_metadata(package)
            .map_err(|source| PackageError::Read { path: package.clone(), source })?;
        if meta.is_dir() {
            collect(package, &format!("packages/{i}"), &mut files)?;
        } else if meta.is_file() {
            let name = package.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((format!("packages/{i}/{name}"), package.clone()));
        }
    }
    files.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::FileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    zip.start_file(DRIVER_FILE, options)?;
    zip.write_all(DRIVER.as_bytes()).map_err(zip::result::ZipError::Io)?;
    zip.start_file("anneal_job.json", options)?;
    zip.write_all(spec.to_string().as_bytes()).map_err(zip::result::ZipError::Io)?;
    for (name, path) in files {
        let bytes = std::fs::read(&path).map_err(|source| PackageError::Read { path: path.clone(), source })?;
        zip.start_file(name, options)?;
        zip.write_all(&bytes).map_err(zip::result::ZipError::Io)?;
    }
    let zip = zip.finish()?.into_inner();
    let hash = sha2::Sha256::digest(&zip);
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(Package { name: format!("_ray_pkg_{hex}.zip"), zip })
}

/// The regular files under `dir`, named `prefix/<relative path>`, without symbolic links and
/// build leftovers. Blocks.
fn collect(dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) -> Result<(), PackageError> {
    let read = std::fs::read_dir(dir).map_err(|source| PackageError::Read { path: dir.to_path_buf(), source })?;
    for entry in read {
        let entry = entry.map_err(|source| PackageError::Read { path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "build" | "dist" | "__pycache__") || name.ends_with(".egg-info") {
            continue;
        }
        let kind = entry.file_type().map_err(|source| PackageError::Read { path: entry.path(), source })?;
        let shown = format!("{prefix}/{name}");
        if kind.is_dir() {
            collect(&entry.path(), &shown, files)?;
        } else if kind.is_file() {
            files.push((shown, entry.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_zip_holds_the_driver_the_spec_and_the_packages_and_names_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(plain.join("trainer/__pycache__")).expect("mkdir");
        std::fs::write(plain.join("trainer/task.py"), "print('hi')\n").expect("write");
        std::fs::write(plain.join("trainer/__pycache__/task.pyc"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", plain.join("trainer/link")).expect("symlink");
        let project = dir.path().join("project");
        std::fs::create_dir_all(&project).expect("mkdir");
        std::fs::write(project.join("setup.py"), "").expect("write");
        let sdist = dir.path().join("t-1.0.tar.gz");
        std::fs::write(&sdist, "gz").expect("write");
        let packages = vec![plain, project, sdist];
        assert_eq!(
            entries(&packages),
            vec![
                PackageEntry { path: "packages/0".into(), install: false, file: None },
                PackageEntry { path: "packages/1".into(), install: true, file: None },
                PackageEntry { path: "packages/2".into(), install: true, file: Some("t-1.0.tar.gz".into()) },
            ]
        );
        let spec = serde_json::json!({"module": "trainer.task"});
        let package = build(&spec, &packages).expect("zip");
        assert!(package.name.starts_with("_ray_pkg_") && package.name.ends_with(".zip"), "{}", package.name);
        assert_eq!(build(&spec, &packages).expect("zip").name, package.name, "same inputs, same name");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(package.zip)).expect("a zip");
        let mut names: Vec<String> = archive.file_names().map(str::to_owned).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "anneal_job.json",
                DRIVER_FILE,
                "packages/0/trainer/task.py",
                "packages/1/setup.py",
                "packages/2/t-1.0.tar.gz"
            ]
        );
        let mut text = String::new();
        archive.by_name("anneal_job.json").expect("spec").read_to_string(&mut text).expect("read");
        assert_eq!(text, spec.to_string());
    }
}
