//! Service settings as an operator meets them: secrets read from `*_FILE` variables,
//! `--dump-config` without passwords, and JSON log lines for log shippers.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use taskfleet_tests::taskfleet;

#[test]
fn secrets_come_from_files_and_dump_config_hides_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("broker-url");
    std::fs::write(&secret, "amqp://svc:hunter2@broker.internal:5672/%2f\n").unwrap();
    let output = taskfleet()
        .args(["worker", "--dump-config"])
        .env_remove("TASKFLEET_BROKER")
        .env("TASKFLEET_BROKER_FILE", &secret)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("broker = \"amqp://svc:***@broker.internal:5672/%2f\""),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");

    let both = taskfleet()
        .args(["worker", "--dump-config"])
        .env("TASKFLEET_BROKER", "amqp://a@b/%2f")
        .env("TASKFLEET_BROKER_FILE", &secret)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("set TASKFLEET_BROKER or TASKFLEET_BROKER_FILE, not both"));

    let missing = taskfleet()
        .args(["scheduler", "--dump-config"])
        .env("TASKFLEET_DB_FILE", dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("cannot read TASKFLEET_DB_FILE="), "{said}");
}

#[test]
fn log_lines_can_be_json_objects() {
    let mut scheduler = taskfleet()
        .args([
            "--log-format",
            "json",
            "scheduler",
            "--db",
            "sqlite::memory:",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--broker", "amqp://guest:guest@127.0.0.1:1/%2f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = scheduler.stderr.take().unwrap();
    let first_json = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with('{'));
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    let line = first_json.expect("a JSON log line");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"));
    assert_eq!(event["level"], "WARN", "{event}");
    assert!(event["message"].as_str().unwrap().contains("no tokens"), "{event}");
    assert_eq!(event["listen"], "127.0.0.1:0", "{event}");
    assert!(!line.contains('\u{1b}'), "no colours in JSON: {line}");
}
