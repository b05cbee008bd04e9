//! One module per `taskfleet` subcommand.

pub mod bench;
pub mod cancel;
pub mod events;
pub mod import;
pub mod list;
pub mod logs;
pub mod retry;
pub mod run;
pub mod scheduler;
pub mod simulate;
pub mod status;
pub mod submit;
pub mod token;
pub mod validate;
pub mod worker;
pub mod workers;

use std::path::Path;

use taskfleet_common::workflow::{parse_workflow, ValidateOptions, BUILTIN_HANDLERS};
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::policy::PolicyKind;

use crate::settings::{BrokerUrl, StoreUrl};

/// Reads and validates a workflow file; on problems, prints each to stderr.
pub(crate) fn load_workflow(path: &Path, options: &ValidateOptions) -> Result<(String, WorkflowSpec), LoadError> {
    let source = std::fs::read_to_string(path)
        .map_err(|error| LoadError::Unreadable(format!("cannot read {}: {error}", path.display())))?;
    match parse_workflow(&source, options) {
        Ok(spec) => Ok((source, spec)),
        Err(invalid) => {
            eprintln!("{}: {invalid}", path.display());
            Err(LoadError::Invalid)
        }
    }
}

/// Validation options for a workflow run by the built-in workers.
pub(crate) fn builtin_options(max_tasks: usize) -> ValidateOptions {
    ValidateOptions {
        known_handlers: Some(BUILTIN_HANDLERS.iter().map(|name| name.to_string()).collect()),
        max_tasks,
    }
}

/// Why a workflow file could not be used.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file could not be read.
    Unreadable(String),
    /// The workflow has problems; they were printed.
    Invalid,
}

/// The settings to run with, or `None` once printed when `--dump-config` asked only for them.
pub(crate) fn unless_dumped<T: serde::Serialize>(dump: bool, settings: T) -> anyhow::Result<Option<T>> {
    if !dump {
        return Ok(Some(settings));
    }
    write_stdout(&crate::settings::dump(&settings)?)?;
    Ok(None)
}

/// Writes data to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The default name of a service process: the host's name and the process id
/// (`<host>-<pid>`; in a container, its hostname makes it unique), or `fallback` and the id.
pub(crate) fn host_and_pid(fallback: &str) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| fallback.to_string());
    format!("{host}-{}", std::process::id())
}

/// Opens the store named by a URL: `sqlite://PATH`, `sqlite::memory:`, a plain path, or
/// `postgres://USER@HOST/DB`.
pub(crate) async fn open_store(
    url: &StoreUrl,
) -> anyhow::Result<std::sync::Arc<dyn taskfleet_scheduler::store::Store>> {
    use anyhow::Context as _;
    use taskfleet_scheduler::store::{PostgresStore, SqliteStore};
    let url = url.0.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .context("opening the PostgreSQL store")?;
        return Ok(std::sync::Arc::new(store));
    }
    let store = if url == "sqlite::memory:" {
        SqliteStore::in_memory().context("opening an in-memory store")?
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        SqliteStore::open(std::path::Path::new(path)).with_context(|| format!("opening the store {path}"))?
    };
    Ok(std::sync::Arc::new(store))
}

/// The transport to the broker at `url`: RabbitMQ for `amqp://`, Kafka for `kafka://`. It
/// connects on first use and the services retry with backoff while the broker is unreachable
/// (a fleet often starts before its broker).
pub(crate) fn broker(
    url: &BrokerUrl,
    names: &taskfleet_transport::queues::QueueNames,
) -> anyhow::Result<std::sync::Arc<dyn taskfleet_transport::Transport>> {
    use taskfleet_transport::{AmqpConfig, AmqpTransport, KafkaConfig, KafkaTransport};
    if url.0.starts_with("kafka://") {
        let config = KafkaConfig::from_url(&url.0).map_err(anyhow::Error::msg)?;
        return Ok(std::sync::Arc::new(KafkaTransport::new(config, names)?));
    }
    Ok(std::sync::Arc::new(AmqpTransport::new(
        AmqpConfig::new(url.0.clone()),
        names,
    )))
}

/// The help of a `--policy` flag, listing every policy there is.
pub(crate) fn policy_help() -> String {
    let names: Vec<&str> = PolicyKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let (last, rest) = names.split_last().expect("there are policies");
    format!("Scheduling policy: {} or {last}", rest.join(", "))
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "Cannot watch for SIGTERM; only Ctrl-C stops this process.");
                let _ = tokio::signal::ctrl_c().await;
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("Shutting down.");
        cancel.cancel();
    });
    token
}

/// The scheduler's URL from `--server` or `TASKFLEET_SERVER`, and the API token from
/// `TASKFLEET_TOKEN`.
#[derive(clap::Args)]
pub struct ServerArg {
    /// Scheduler API URL.
    #[arg(long, env = "TASKFLEET_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The API token (from `taskfleet token new`), when the scheduler has a tokens file.
    #[arg(long, env = "TASKFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl std::fmt::Debug for ServerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArg")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ServerArg {
    /// A client of this scheduler, sending the token if there is one.
    pub fn client(&self) -> crate::client::ApiClient {
        crate::client::ApiClient::new(&self.server).with_token(self.token.as_deref())
    }
}
