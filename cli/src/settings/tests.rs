use super::*;

#[test]
fn files_override_defaults_and_flags_override_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler.toml");
    std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nlease-timeout = \"30s\"\n").unwrap();
    let mut settings: SchedulerSettings = load(Some(&path)).unwrap();
    assert_eq!(settings.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(settings.lease_timeout.to_string(), "30s");
    assert_eq!(settings.prefix.0, "taskfleet", "unset keys keep their defaults");
    set(&mut settings.listen, Some("127.0.0.1:1".parse().unwrap()));
    set(&mut settings.prefix, None);
    assert_eq!(
        (settings.listen.to_string().as_str(), settings.prefix.0.as_str()),
        ("127.0.0.1:1", "taskfleet")
    );
    // What is printed reads back as the same settings, passwords aside (printed as ***).
    let dumped: SchedulerSettings = toml::from_str(&dump(&settings).unwrap()).unwrap();
    let redacted = SchedulerSettings {
        broker: BrokerUrl(redact_url_password(&settings.broker.0)),
        ..settings.clone()
    };
    assert_eq!(dumped, redacted);

    std::fs::write(&path, "lisen = \"x\"\n").unwrap();
    let error = format!("{:#}", load::<SchedulerSettings>(Some(&path)).unwrap_err());
    assert!(error.contains("unknown field `lisen`"), "{error}");
}

#[test]
fn printed_settings_hide_passwords() {
    for (url, shown) in [
        ("amqp://svc:hunter2@broker:5672/%2f", "amqp://svc:***@broker:5672/%2f"),
        ("postgres://app:p@ss@db/taskfleet", "postgres://app:***@db/taskfleet"),
        ("postgres://app@db/taskfleet", "postgres://app@db/taskfleet"),
        ("kafka://k1:9092,k2:9092", "kafka://k1:9092,k2:9092"),
        ("sqlite://state.sqlite", "sqlite://state.sqlite"),
    ] {
        assert_eq!(redact_url_password(url), shown, "{url}");
    }
    let settings: SchedulerSettings =
        toml::from_str("broker = \"amqp://svc:hunter2@broker:5672/%2f\"\ndb = \"postgres://app:s3cret@db/tf\"")
            .unwrap();
    let printed = dump(&settings).unwrap();
    assert!(!printed.contains("hunter2") && !printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("amqp://svc:***@broker:5672/%2f"), "{printed}");
}

#[test]
fn every_value_is_checked_where_it_is_read() {
    let bad = |text: &str| format!("{:#}", toml::from_str::<SchedulerSettings>(text).unwrap_err());
    assert!(bad("lease-timeout = \"soon\"").contains("invalid duration `soon`"));
    assert!(bad("policy = \"lottery\"").contains("unknown policy `lottery`"));
    assert!(bad("max-body = \"lots\"").contains("invalid size `lots`"));
    assert!(bad("broker = \"nats://x\"").contains("unsupported broker URL `nats://x`"));
    assert!(bad("broker = \"kafka://x\"").contains("`x` in `kafka://x` is not a broker address"));
    let kafka: SchedulerSettings = toml::from_str("broker = \"kafka://k1:9092,k2:9092\"").unwrap();
    assert_eq!(kafka.broker.0, "kafka://k1:9092,k2:9092");
    assert!(bad("db = \"mysql://x\"").contains("unsupported store `mysql://x`"));
    assert!(bad("prefix = \"a b\"").contains("invalid prefix `a b`"));
    assert!(bad("listen = \"nowhere\"").contains("invalid socket address"));
    // Numbers are taken as seconds and bytes.
    let settings: SchedulerSettings = toml::from_str("lease-timeout = 30\nmax-body = 1024").unwrap();
    assert_eq!(
        (settings.lease_timeout.to_string(), settings.max_body.to_string()),
        ("30s".into(), "1Ki".into())
    );
    let zero: SchedulerSettings = toml::from_str("lease-timeout = \"0s\"").unwrap();
    assert!(zero
        .check()
        .unwrap_err()
        .to_string()
        .contains("lease-timeout must be longer than zero"));
    let worker = WorkerSettings {
        name: "w1".into(),
        ..WorkerSettings::default()
    };
    worker.check().unwrap();
}

#[test]
fn help_shows_the_defaults_declared_once() {
    #[derive(clap::Parser)]
    struct Args {
        /// How long.
        #[arg(long)]
        lease_timeout: Option<HumanDuration>,
        /// Which.
        #[arg(long)]
        policy: Option<PolicyKind>,
        /// Whether.
        #[arg(long)]
        predictive: bool,
    }
    let command = document_defaults(<Args as clap::CommandFactory>::command(), &SchedulerSettings::default());
    let help = |id: &str| {
        command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    assert_eq!(help("lease_timeout"), "How long [default: 10s]");
    assert_eq!(help("policy"), "Which [default: priority]");
    assert_eq!(help("predictive"), "Whether", "flags show no default");
}
