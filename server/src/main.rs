//! The `anneal` binary: a thin shim over [`anneal::cli::main`].

fn main() -> std::process::ExitCode {
    anneal::cli::main()
}
