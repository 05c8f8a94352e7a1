//! `anneal auth`: log the CLI in with a token (`login`, `logout`, `whoami`) and manage tokens
//! (`token create|list|revoke`, admin).

use std::io::BufRead;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::args::ClientOptions;
use super::http::{Client, ClientError};
use super::output;
use crate::config::{client_token, client_token_file, ClientConfig};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Check a token with the server and keep it for later commands (in the CLI's config dir,
    /// readable by you only). Without --token it is read from stdin.
    Login,
    /// Forget the kept token.
    Logout,
    /// Show the token the CLI uses: its id, name, role and projects.
    Whoami,
    /// Manage tokens (admin role).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once on stdout.
    Create {
        /// What the token is for, e.g. `ci` or `alice`.
        #[arg(long)]
        name: String,
        /// admin, developer, viewer or predictor.
        #[arg(long)]
        role: String,
        /// Comma-separated project ids [default: every project the caller's token reaches].
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
    },
    /// List the tokens you manage.
    List,
    /// Revoke a token at once (it stops working and its console sessions end).
    Revoke {
        /// The token's id (the `ID` column of `anneal auth token list`).
        id: String,
    },
}

/// Runs an `anneal auth` command.
pub fn auth(options: &ClientOptions, command: AuthCommand) -> ExitCode {
    let (settings, runtime) = match super::prepare(options) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let format = options.format.unwrap_or_default();
    let outcome = runtime.block_on(async move {
        match command {
            AuthCommand::Login => login(&settings.endpoint, options.token.clone(), options.quiet).await,
            AuthCommand::Logout => logout(options.quiet),
            AuthCommand::Whoami => {
                let client = client(&settings, options)?;
                output::resource(format, &client.get_v1("/tokens/self").await?);
                Ok(())
            }
            AuthCommand::Token(command) => {
                let client = client(&settings, options)?;
                token(&client, command, format, options.quiet).await
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}

fn client(settings: &ClientConfig, options: &ClientOptions) -> Result<Client, ClientError> {
    let token = client_token(options.token.as_deref(), &settings.endpoint);
    if token.is_none() {
        return Err(ClientError("no token: run `anneal auth login`, or pass --token / set ANNEAL_TOKEN".to_owned()));
    }
    Client::new(&settings.endpoint, &settings.project, token.as_deref())
}

async fn login(endpoint: &str, token: Option<String>, quiet: bool) -> Result<(), ClientError> {
    let token = match token {
        Some(token) => token,
        None => {
            if !quiet {
                eprintln!("Paste the token and press Enter:");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| ClientError(format!("cannot read the token from stdin: {e}")))?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(ClientError("no token given".into()));
    }
    let me = Client::new(endpoint, "", Some(&token))?.get_v1("/tokens/self").await?;
    let file = client_token_file().ok_or_else(|| ClientError("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    crate::auth::write_token_file(&file, &token)
        .map_err(|e| ClientError(format!("cannot write {}: {e}", file.display())))?;
    if !quiet {
        eprintln!(
            "Logged in as {} ({}) at {endpoint}; the token is kept in {}.",
            me["name"].as_str().unwrap_or("?"),
            me["role"].as_str().unwrap_or("?"),
            file.display()
        );
    }
    Ok(())
}

fn logout(quiet: bool) -> Result<(), ClientError> {
    let Some(file) = client_token_file() else { return Ok(()) };
    match std::fs::remove_file(&file) {
        Ok(()) if !quiet => eprintln!("Removed {}.", file.display()),
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClientError(format!("cannot remove {}: {e}", file.display()))),
    }
    Ok(())
}

async fn token(client: &Client, command: TokenCommand, format: output::Format, quiet: bool) -> Result<(), ClientError> {
    match command {
        TokenCommand::Create { name, role, projects } => {
            let created = client.post_v1("/tokens", &json!({"name": name, "role": role, "projects": projects})).await?;
            match format {
                output::Format::Table => {
                    println!("{}", created["token"].as_str().unwrap_or_default());
                    if !quiet {
                        eprintln!(
                            "Created token {} ({}, projects {}). It is shown only now: keep it safe.",
                            created["id"].as_str().unwrap_or("?"),
                            created["role"].as_str().unwrap_or("?"),
                            list(&created["projects"])
                        );
                    }
                }
                other => output::resource(other, &created),
            }
        }
        TokenCommand::List => {
            let answer = client.get_v1("/tokens").await?;
            let mut tokens: Vec<Value> = answer["tokens"].as_array().cloned().unwrap_or_default();
            for token in &mut tokens {
                token["projectList"] = Value::String(list(&token["projects"]));
            }
            output::table(
                format,
                &tokens,
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("ROLE", "role"),
                    ("PROJECTS", "projectList"),
                    ("CREATED", "createTime"),
                    ("REVOKED", "revokeTime"),
                ],
            );
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.delete_v1(&format!("/tokens/{id}")).await?;
            if !quiet {
                eprintln!("Revoked token [{}].", revoked["id"].as_str().unwrap_or(&id));
            }
        }
    }
    Ok(())
}

fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}
