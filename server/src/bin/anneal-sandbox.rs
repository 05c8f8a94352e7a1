//! `anneal-sandbox`: the sandbox's launcher on its own (see `anneal::sandbox::launcher`). The
//! server starts every user program through it; it is the same source as `anneal sandbox-exec`,
//! compiled into a binary that links nothing of the server (no libtorch to load), so a sandboxed
//! program starts 0.3–0.5 s sooner.

// The server's own copy uses `probe`; this binary only launches.
#[allow(dead_code)]
#[path = "../sandbox/launcher.rs"]
mod launcher;

fn main() -> std::process::ExitCode {
    launcher::main(std::env::args_os().skip(1))
}
