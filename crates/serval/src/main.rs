//! `serval`, the one binary: the server and the command line that talks to it.
//!
//! Owns: argument parsing, output formats (table/json/yaml), finding the server
//! (`server.json`, `SERVAL_API`/`SERVAL_TOKEN`), and the one mapping of errors to exit codes.
//! `anyhow` is used here and nowhere else.

mod client;
mod commands;
mod log;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the data plane and event delivery allocate and free
/// many small buffers per request on several threads, where glibc's allocator showed up as
/// a fifth of the server's CPU time in delivery profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version and the git commit of this build, as `serval version` and `--version` print it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SERVAL_GIT_COMMIT"), ")");

/// A self-hosted serverless platform: deploy a command, get a URL that scales from zero.
#[derive(Parser)]
#[command(name = "serval", version = VERSION, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: commands::Command,
}

/// Writes the completion script of the whole command line for `shell` to stdout.
pub fn print_completion(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "serval", &mut std::io::stdout());
}

/// Options shared by every command.
#[derive(clap::Args, Clone)]
pub struct Global {
    /// Data directory of the server (holds serval.db, token and server.json).
    #[arg(long, global = true, env = "SERVAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// API address of a running server (default: read from DATA_DIR/server.json).
    #[arg(long, global = true, env = "SERVAL_API")]
    pub api: Option<String>,
    /// Bearer token for the API (default: read from DATA_DIR/server.json).
    #[arg(long, global = true, env = "SERVAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Global {
    /// `--data-dir`, else `$XDG_DATA_HOME/serval`, else `~/.local/share/serval`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(x).join("serval");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/serval")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli.command, cli.global)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the outermost message plus its causes.
            let causes: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `serval X --help` explains every flag and positional of every command; clap's own
    /// `--help` and `--version` aside.
    #[test]
    fn every_argument_has_help() {
        fn without_help(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if id != "help" && id != "version" && help.trim().is_empty() {
                    found.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                without_help(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut found = Vec::new();
        without_help(&Cli::command(), "serval", &mut found);
        assert!(found.is_empty(), "arguments without help text:\n{}", found.join("\n"));
    }
}
