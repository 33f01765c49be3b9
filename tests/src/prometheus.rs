//! A real Prometheus server (Debian's `prometheus` package) scraping a target every second, and
//! its HTTP query API.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::http_get;
use crate::net::free_port;
use crate::process::{LabChild, file_tail, require_program};

/// A running Prometheus with its own temp dir; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    _dir: tempfile::TempDir,
    web_port: u16,
    _child: LabChild,
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:target_port` every second and waits (bounded)
    /// until it is ready.
    pub fn scrape(target_port: u16) -> Prometheus {
        let program = require_program(
            "prometheus",
            &[],
            "apt-get install prometheus (scripts/lib.sh does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("temp dir for prometheus");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: forwarder\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let web_port = free_port();
        let out = fs::File::create(&log).expect("prometheus log");
        let err = out.try_clone().expect("prometheus log");
        let mut cmd = Command::new(program);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let mut child = LabChild::spawn("prometheus", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.exited() {
                panic!("prometheus exited ({status}):\n{}", file_tail(&log, 30));
            }
            if matches!(http_get(web_port, "/-/ready"), Some((200, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 30 s:\n{}",
                file_tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            _dir: dir,
            web_port,
            _child: child,
        }
    }

    /// The instant vector of `query` as (labels, value) pairs; empty when the query API does
    /// not answer.
    pub fn query(&self, query: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, String)> {
        let Some((200, body)) = http_get(self.web_port, &format!("/api/v1/query?query={query}"))
        else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s["metric"].as_object()?.clone(),
                            s["value"][1].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `query` until `check` accepts its result; panics after `timeout`.
    pub fn wait_for(
        &self,
        query: &str,
        timeout: Duration,
        check: impl Fn(&[(serde_json::Map<String, serde_json::Value>, String)]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(query);
            if check(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never answered {query} as expected within {timeout:?}; last: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
