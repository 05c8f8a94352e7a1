//! `anneal model-worker`: the process that loads one TorchScript model and runs its forward
//! passes, started by the server in the project's sandbox cell (a TorchScript model is code: it
//! can call `aten::from_file`, so the server never loads one itself). It speaks [`super::wire`]
//! on a copy of its stdin and stdout; fd 1 is pointed at stderr, so what the model prints goes
//! to the server's log instead of into the answers.
//!
//! After each answer it polls its input for up to [`SPIN`] before it blocks, as the in-process
//! worker thread did: under steady traffic the next request is picked up on a core that stayed
//! warm, and an idle worker costs nothing.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::model::LoadedModule;
use super::wire::{self, FrameError, Hello, Ready};

/// How long a worker polls for the next request after an answer before it blocks.
const SPIN: Duration = Duration::from_millis(2);

/// The largest request a worker reads: the server's own bound on a pass is far below it.
const MAX_REQUEST: usize = 1 << 30;

/// What `model-worker` was asked to do.
#[derive(Debug, PartialEq)]
struct Args {
    model_dir: PathBuf,
    threads: i32,
    cuda: bool,
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let mut parsed = Args { model_dir: PathBuf::new(), threads: 1, cuda: false };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        match flag.to_str() {
            Some("--model-dir") => parsed.model_dir = args.next().ok_or("--model-dir needs a folder")?.into(),
            Some("--threads") => {
                let value = args.next().ok_or("--threads needs a number")?;
                parsed.threads = value.to_str().and_then(|v| v.parse().ok()).ok_or("--threads needs a number")?;
            }
            Some("--cuda") => parsed.cuda = true,
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    if parsed.model_dir.as_os_str().is_empty() {
        return Err("--model-dir is required".into());
    }
    Ok(parsed)
}

/// The `anneal model-worker` command.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anneal model-worker: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<(), String> {
    let args = parse(args)?;
    let stdin = nix::unistd::dup(std::io::stdin().as_fd()).map_err(|e| format!("cannot copy stdin: {e}"))?;
    let stdout = nix::unistd::dup(std::io::stdout().as_fd()).map_err(|e| format!("cannot copy stdout: {e}"))?;
    nix::unistd::dup2_stdout(std::io::stderr().as_fd()).map_err(|e| format!("cannot point stdout at stderr: {e}"))?;
    let (mut input, mut output) = (File::from(stdin), File::from(stdout));

    tch::set_num_threads(args.threads.max(1));
    let loaded = LoadedModule::load(&args.model_dir, args.cuda);
    let hello = match &loaded {
        Ok(model) => Hello::Ready(Ready::on(model.device)),
        Err(e) => Hello::Failed { message: e.to_string() },
    };
    let text = serde_json::to_vec(&hello).map_err(|e| e.to_string())?;
    wire::write_frame(&mut output, &[&text]).map_err(|e| format!("cannot answer: {e}"))?;
    let Ok(model) = loaded else { return Ok(()) };

    let names: Vec<String> = model.signature.inputs.iter().map(|i| i.name.clone()).collect();
    let _guard = tch::no_grad_guard();
    let mut answer = Vec::new();
    loop {
        wait_for_input(&input);
        let frame = match wire::read_frame(&mut input, MAX_REQUEST) {
            Ok(frame) => frame,
            // The server closed the pipe: it no longer needs this worker.
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("cannot read a request: {e}")),
        };
        let batch = wire::decode_batch(&frame, &names).map_err(|e| e.to_string())?;
        let result = model.forward(&batch).map_err(|e| e.to_string());
        wire::encode_answer(&result, &mut answer);
        wire::write_frame(&mut output, &[&answer]).map_err(|e| format!("cannot answer: {e}"))?;
        let _ = output.flush();
    }
}

/// Polls `input` for up to [`SPIN`] (less when its core is wanted); returns when it is readable
/// or the polling is over (the read that follows then blocks).
fn wait_for_input(input: &File) {
    let mut polling = super::model::Polling::new(SPIN);
    while polling.go_on() {
        let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
            return;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_read() {
        let args = ["--model-dir", "/m", "--threads", "2", "--cuda"].map(std::ffi::OsString::from);
        assert_eq!(parse(args).expect("args"), Args { model_dir: "/m".into(), threads: 2, cuda: true });
        assert!(parse(["--threads", "x"].map(std::ffi::OsString::from)).is_err());
        assert!(parse(Vec::<std::ffi::OsString>::new()).is_err());
    }
}
