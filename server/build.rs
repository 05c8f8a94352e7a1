//! Gives the `anneal` binary (and the package's test binaries) an rpath to the libtorch that
//! torch-sys linked, so `anneal` starts without `LD_LIBRARY_PATH`.
//!
//! torch-sys finds libtorch either through `LIBTORCH` or, with `LIBTORCH_USE_PYTORCH`, through the
//! Python on `PATH` (`python` inside a virtual environment, `python3` otherwise). This script asks
//! the same Python (`$VIRTUAL_ENV/bin/python` when a virtual environment is active), so the rpath
//! names the libraries the binary was linked against. It does not watch `PATH` itself: a change of
//! `PATH` alone would otherwise recompile the server crate.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    match torch_lib_dir() {
        Ok(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display()),
        Err(why) => println!("cargo:warning=no rpath to libtorch ({why}); set LD_LIBRARY_PATH to run anneal"),
    }
}

fn torch_lib_dir() -> Result<PathBuf, String> {
    if let Ok(libtorch) = env::var("LIBTORCH") {
        return Ok(PathBuf::from(libtorch).join("lib"));
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        return Err("neither LIBTORCH nor LIBTORCH_USE_PYTORCH is set".into());
    }
    let python = match env::var_os("VIRTUAL_ENV") {
        Some(venv) => PathBuf::from(venv).join("bin/python"),
        None => PathBuf::from("python3"),
    };
    let output = Command::new(&python)
        .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} cannot import torch: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if dir.join("libtorch_cpu.so").exists() || dir.join("libtorch_cpu.dylib").exists() {
        Ok(dir)
    } else {
        Err(format!("{} holds no libtorch_cpu", dir.display()))
    }
}
