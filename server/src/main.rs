//! The `anneal` binary: a thin shim over [`anneal::cli::main`], with mimalloc as its allocator
//! (glibc's malloc was a sixth of the server's CPU time at 64 connections: a request's body,
//! numbers and batch are allocated and freed on different threads).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anneal::cli::main()
}
