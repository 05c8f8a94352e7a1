//! The client verbs of `anneal` (`jobs`, `models`, `versions`, `predict`, `operations`, `config`):
//! they talk to a server over the REST API, print tables (or `--format json|yaml`), and exit 0 on
//! success or 1 with one `error:` line (the API's message and status) on failure.

mod args;
mod auth;
mod commands;
mod http;
pub mod output;

use std::process::ExitCode;

pub use args::{
    ClientOptions, ConfigCommand, JobsCommand, ModelsCommand, OperationsCommand, PredictArgs, VersionsCommand,
};
pub use auth::{auth, AuthCommand};
pub use output::Format;

use crate::config::ClientConfig;

/// A client verb.
#[derive(Debug)]
pub enum Verb {
    Jobs(JobsCommand),
    Models(ModelsCommand),
    Versions(VersionsCommand),
    Predict(PredictArgs),
    Operations(OperationsCommand),
}

/// The settings and an async runtime for one client command, or the exit code of why not.
fn prepare(options: &ClientOptions) -> Result<(ClientConfig, tokio::runtime::Runtime), ExitCode> {
    let settings = ClientConfig::load(options.endpoint.clone(), options.project.clone()).map_err(fail)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    Ok((settings, runtime))
}

/// Runs a client verb to its exit code.
pub fn run(options: ClientOptions, verb: Verb) -> ExitCode {
    let (settings, runtime) = match prepare(&options) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async move {
        let token = crate::config::client_token(options.token.as_deref(), &settings.endpoint);
        let client = http::Client::new(&settings.endpoint, &settings.project, token.as_deref())?;
        let cx = commands::Context { client, format: options.format.unwrap_or_default(), quiet: options.quiet };
        match verb {
            Verb::Jobs(command) => commands::jobs(&cx, command).await,
            Verb::Models(command) => commands::models(&cx, command).await,
            Verb::Versions(command) => commands::versions(&cx, command).await,
            Verb::Predict(args) => commands::predict(&cx, args).await,
            Verb::Operations(command) => commands::operations(&cx, command).await,
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(e),
    }
}

/// `anneal config set|list`.
pub fn config(options: &ClientOptions, command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Set { key, value } => match ClientConfig::set(&key, &value) {
            Ok(file) => {
                if !options.quiet {
                    eprintln!("Updated [{key}] in {}.", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        ConfigCommand::List => match ClientConfig::load(options.endpoint.clone(), options.project.clone()) {
            Ok(settings) => {
                let value = serde_json::json!({"endpoint": settings.endpoint, "project": settings.project});
                output::resource(options.format.unwrap_or(Format::Yaml), &value);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

/// Prints one `error:` line; exit code 1.
fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
