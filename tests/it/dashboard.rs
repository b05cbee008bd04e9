//! The dashboard in a real browser: Debian's chromium driven over WebDriver by chromedriver
//! (both installed by `scripts/test.sh`; `TASKFLEET_CHROMIUM` and `TASKFLEET_CHROMEDRIVER`
//! name others), against a live scheduler with a tokens file and a worker over RabbitMQ. It
//! signs in with a token, watches a running workflow's DAG change states without reloading,
//! cancels the workflow from its page, and leaves a screenshot of every page under
//! `target/test-output/dashboard` for people to look at.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use taskfleet_tests::fleet::{amqp_url, connect_transport, Fleet};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::Outgoing;

/// A program the test needs: `variable`, or the Debian path.
fn program(variable: &str, debian: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(debian), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it installs Debian's chromium and chromium-driver) or set {variable}",
        path.display()
    );
    path
}

/// A chromedriver on a free port of 127.0.0.1, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program("TASKFLEET_CHROMEDRIVER", "/usr/bin/chromedriver"))
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        taskfleet_tests::wait_for("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let options = serde_json::json!({
            "binary": program("TASKFLEET_CHROMIUM", "/usr/bin/chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_string(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go.
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/dashboard");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(output_dir().join(format!("{name}.png")), png).expect("save the screenshot");
}

/// The attribute `name` of the first element `css` selects, if it is there.
async fn attribute(browser: &Client, css: &str, name: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.attr(name).await.ok().flatten()
}

/// Waits until the attribute reads `want`; returns every value it read on the way.
async fn until_attribute(browser: &Client, css: &str, name: &str, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    loop {
        if let Some(value) = attribute(browser, css, name).await {
            if seen.last() != Some(&value) {
                seen.push(value.clone());
            }
            if value == want {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{css} never had {name}={want}; it read {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` selects, finding it again when the page replaced it meanwhile
/// (the parts htmx refreshes).
async fn click(browser: &Client, css: &str) {
    let mut last = None;
    for _ in 0..20 {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(error) => last = Some(error.to_string()),
            },
            Err(error) => last = Some(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot click {css}: {last:?}");
}

async fn text_of(browser: &Client) -> String {
    let body = browser.find(Locator::Css("body")).await.expect("a body");
    body.text().await.expect("its text")
}

#[test]
fn the_dashboard_follows_a_running_workflow_and_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, token) = super::api::tokens_file(dir.path());
    let mut fleet = Fleet::start(&amqp_url(), &["--api-tokens", &tokens]);
    fleet.token = Some(token.clone());
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    // `first` runs until the test opens its gate, once the page shows it running.
    let gate = dir.path().join("gate");
    let workflow = fleet.workflow(
        "dashboard.yaml",
        &format!(
            "name: dashboard\ntasks:\n  - {{id: first, run: [sh, -c, 'while [ ! -f {} ]; do sleep 0.1; done']}}\n  \
             - {{id: second, deps: [first], run: [sleep, '120']}}\n  - {{id: third, deps: [second], handler: noop}}\n",
            gate.display()
        ),
    );
    let id = fleet.submit(&workflow);
    let base = format!("http://{}", fleet.api.trim_start_matches("http://"));
    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = driver.browser().await;
        // Signed out, the workflow's page asks for a token, then comes back to it.
        browser.goto(&format!("{base}/ui/workflows/{id}")).await.unwrap();
        let field = browser
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("the sign-in page");
        screenshot(&browser, "sign-in").await;
        field.send_keys(&token).await.unwrap();
        browser
            .find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser
            .wait()
            .for_element(Locator::Css(r#"g.node[data-task-idx="0"]"#))
            .await
            .expect("the workflow's DAG");
        assert_eq!(
            browser.current_url().await.unwrap().path(),
            format!("/ui/workflows/{id}")
        );

        // The page is not reloaded: the states change as the event stream tells them.
        let node = |idx: u32| format!(r#"g.node[data-task-idx="{idx}"]"#);
        until_attribute(&browser, &node(0), "data-state", "running", Duration::from_secs(30)).await;
        let waiting = attribute(&browser, &node(1), "data-state").await;
        assert_eq!(waiting.as_deref(), Some("pending"));
        std::fs::write(&gate, "").unwrap();
        until_attribute(&browser, &node(0), "data-state", "succeeded", Duration::from_secs(30)).await;
        // Pending when the gate opened, running now: told by the stream, on the same page.
        until_attribute(&browser, &node(1), "data-state", "running", Duration::from_secs(30)).await;
        let row = attribute(&browser, r#"tr.node[data-task-idx="1"]"#, "data-state").await;
        assert_eq!(row.as_deref(), Some("running"), "the task table follows too");
        screenshot(&browser, "workflow-running").await;

        // Cancel from the page, confirming the browser's question.
        click(&browser, r#"button[data-action="cancel"]"#).await;
        browser.accept_alert().await.expect("the cancel button asks first");
        until_attribute(
            &browser,
            r#"g.node[data-task-idx="1"]"#,
            "data-state",
            "cancelled",
            Duration::from_secs(30),
        )
        .await;
        until_attribute(
            &browser,
            "#summary .summary",
            "data-state",
            "cancelled",
            Duration::from_secs(30),
        )
        .await;
        screenshot(&browser, "workflow-cancelled").await;

        browser.goto(&format!("{base}/")).await.unwrap();
        browser
            .wait()
            .for_element(Locator::Css(&format!(r#"tr[data-workflow="{id}"]"#)))
            .await
            .unwrap();
        assert!(text_of(&browser).await.contains("cancelled"));
        screenshot(&browser, "workflows").await;

        browser
            .goto(&format!("{base}/ui/workflows/{id}/tasks/first"))
            .await
            .unwrap();
        let text = text_of(&browser).await;
        assert!(text.contains("Attempt 1") && text.contains("while [ ! -f"), "{text}");
        screenshot(&browser, "task").await;

        browser.goto(&format!("{base}/ui/workers")).await.unwrap();
        browser
            .wait()
            .for_element(Locator::Css(r#"tr[data-worker="w1"]"#))
            .await
            .expect("the worker's row");
        screenshot(&browser, "workers").await;

        // Garbage on the results queue is dead-lettered by the scheduler, and the queues page
        // shows it with its reason, leaving it on the broker.
        let names = QueueNames::new(fleet.prefix.clone());
        let transport = connect_transport(&fleet.broker, &names).await.unwrap();
        transport
            .publish(vec![Outgoing::new(names.results(), &b"not a worker event"[..])])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while transport.queue_len(&names.dead_letters()).await.unwrap() == 0 {
            assert!(Instant::now() < deadline, "the garbage was never dead-lettered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.goto(&format!("{base}/ui/queues")).await.unwrap();
        browser
            .wait()
            .for_element(Locator::Css(r#"tr[data-pool="default"]"#))
            .await
            .expect("the default pool's row");
        let text = text_of(&browser).await;
        assert!(
            text.contains(&names.results()) && text.contains("not a worker event"),
            "{text}"
        );
        screenshot(&browser, "queues").await;
        assert_eq!(
            transport.queue_len(&names.dead_letters()).await.unwrap(),
            1,
            "shown, not taken"
        );
        browser.close().await.unwrap();
    });
    let status = fleet.status(&id);
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["tasks"][1]["state"], "cancelled", "{status}");
}
