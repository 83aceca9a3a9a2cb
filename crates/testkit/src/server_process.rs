//! [`ServerProcess`]: a real `serval server` child process on loopback port 0 — the one
//! harness of the end-to-end tests and the benchmarks (each passes the binary it drives:
//! the test build's or the release build's).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopping server may take before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(20);

/// A running `serval server`, found by its ready line and `server.json`; stopped gracefully
/// (SIGTERM, so that it stops its instances and containers; SIGKILL after 20 s) on drop.
pub struct ServerProcess {
    pub child: Child,
    pub binary: PathBuf,
    pub dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub api: String,
    /// `http://127.0.0.1:<port>`.
    pub gateway: String,
    pub token: String,
}

impl ServerProcess {
    /// Starts `binary server` in `dir` with `extra` server flags and `env`.
    pub fn start(binary: &Path, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start_command(Command::new(binary), binary, dir, extra, env)
    }

    /// Starts the server through `command` (the binary itself, or a wrapper that ends by
    /// running it with the arguments it is given).
    pub fn start_command(
        mut command: Command,
        binary: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let _ = std::fs::remove_file(dir.join("server.json"));
        let mut child = command
            .arg("--data-dir")
            .arg(dir)
            .args(["server", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"])
            .args(extra)
            .env("SERVAL_EXIT_WITH_PARENT", "1")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn serval server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read ready line");
        assert!(line.starts_with("serval ready:"), "unexpected first line: {line:?}");
        let text = std::fs::read_to_string(dir.join("server.json")).expect("server.json");
        let info: serde_json::Value = serde_json::from_str(&text).expect("server.json is JSON");
        let field = |key: &str| info[key].as_str().unwrap_or_else(|| panic!("server.json has no {key}")).to_string();
        ServerProcess {
            child,
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            api: field("api"),
            gateway: field("gateway"),
            token: field("token"),
        }
    }

    /// The CLI, pointed at this server through `--data-dir` as a user would.
    pub fn cli_command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--data-dir").arg(&self.dir).env_remove("SERVAL_API").env_remove("SERVAL_TOKEN");
        command
    }

    pub fn api_addr(&self) -> SocketAddr {
        socket_addr(&self.api)
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        socket_addr(&self.gateway)
    }

    /// Kills the server at once (`kill -9`).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("a socket address")
}

/// Asks a server to shut down (SIGTERM), then kills it if it has not exited within
/// `patience`.
pub fn stop_gracefully(child: &mut Child, patience: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        stop_gracefully(&mut self.child, STOP_PATIENCE);
    }
}
