//! Helpers for taskfleet's integration tests: locating and running the real `taskfleet`
//! binary, writing workflow files, and waiting for conditions with a deadline.

pub mod fleet;
pub mod kafka;
pub mod postgres;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `taskfleet` binary built next to the test binary (`target/<profile>/taskfleet`), or
/// the one named by `TASKFLEET_BIN`.
pub fn taskfleet_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TASKFLEET_BIN") {
        return PathBuf::from(path);
    }
    let test_exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join("taskfleet");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p taskfleet-cli`",
        bin.display()
    );
    bin
}

/// A `taskfleet` command with logging kept quiet.
pub fn taskfleet() -> Command {
    let mut command = Command::new(taskfleet_bin());
    command.env_remove("TASKFLEET_LOG").env("RUST_BACKTRACE", "0");
    command
}

/// Runs `taskfleet ARGS` to completion.
pub fn run_taskfleet(args: &[&str]) -> Output {
    taskfleet().args(args).output().expect("taskfleet starts")
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path.to_str().expect("utf-8 temp path").to_string()
}

/// Waits until `condition` holds, panicking with `what` after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON report printed by `taskfleet run --json`.
pub fn json_report(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not a JSON report ({error}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The report's entry for task `id`.
pub fn task_report<'r>(report: &'r serde_json::Value, id: &str) -> &'r serde_json::Value {
    report["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|task| task["id"] == id))
        .unwrap_or_else(|| panic!("no task `{id}` in report {report:#}"))
}

/// Whether a process with this pid exists.
pub fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
}

/// `GET path` of the HTTP server at `address` (host:port): the status code and the JSON body
/// (`Null` when the body is not JSON, or `0` and `Null` when nothing answers).
pub fn http_get(address: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get_text(address, path);
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// `GET path` on `address` (`host:port`): the status code and the body as text (chunked
/// bodies are not decoded; 0 and empty when the server cannot be reached).
pub fn http_get_text(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // HTTP/1.0: the body comes whole, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (code, body.to_string())
}
