//! `taskfleet token new`: a new API token, and the line that lets a scheduler accept it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use taskfleet_scheduler::api::auth::{new_token, Scope};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token, then the line to append to the scheduler's tokens file (which
    /// keeps only its hash).
    New {
        /// `read` (look), or `write` (also submit and cancel).
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
        /// Who holds it, shown in the tokens file (A-Z a-z 0-9 . _ @ -).
        #[arg(long, default_value = "token")]
        name: String,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::New { scope, name } => {
            let scope = Scope::parse(&scope).ok_or_else(|| anyhow::anyhow!("the scope is read or write"))?;
            let (token, line) = new_token(&name, scope).map_err(anyhow::Error::msg)?;
            super::write_stdout(&format!("{token}\n{line}\n"))?;
            eprintln!(
                "give the first line to the client (TASKFLEET_TOKEN); append the second to the scheduler's \
                 tokens file (--api-tokens), which it reads again on SIGHUP or change"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
