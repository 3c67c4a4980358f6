//! HTTP-mode containers on the private containerd, and a plain loopback HTTP client for them.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::{Containerd, WASMEDGE_RUNTIME};

/// A running HTTP-mode container on the host network, answering on 127.0.0.1:`port`.
pub struct HttpContainer {
    pub id: String,
    pub port: u16,
}

impl HttpContainer {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Reply {
        request("GET", &self.url(path), None)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        request("POST", &self.url(path), Some(body))
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        request(method, &self.url(path), body)
    }

    /// Polls `/ready` until it answers 200; the statuses seen before, in order (deduplicated).
    pub fn wait_ready(&self, timeout: Duration) -> Result<Vec<u16>, Vec<u16>> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<u16> = vec![];
        while Instant::now() < deadline {
            let status = request("GET", &self.url("/ready"), None).status;
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if status == 200 {
                return Ok(seen);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(seen)
    }
}

/// Status and body of a response; status 0 when there was no HTTP response at all.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent()
    })
}

/// One request to a loopback URL (tests never address anything else).
pub fn request(method: &str, url: &str, body: Option<&str>) -> Reply {
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "tests only talk to loopback: {url}"
    );
    let result = match (method, body) {
        ("GET", _) => agent().get(url).call(),
        ("POST", b) => agent().post(url).send(b.unwrap_or("")),
        ("PUT", b) => agent().put(url).send(b.unwrap_or("")),
        ("DELETE", _) => agent().delete(url).call(),
        (other, _) => panic!("method {other} not supported by the test client"),
    };
    match result {
        Ok(mut response) => Reply {
            status: response.status().as_u16(),
            body: response.body_mut().read_to_string().unwrap_or_default(),
        },
        Err(e) => Reply {
            status: 0,
            body: e.to_string(),
        },
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Containerd {
    /// `ctr run -d --net-host` of `image` in HTTP mode on a free port, with extra annotations
    /// (`key=value`). Does not wait for readiness.
    pub fn start_http(
        &self,
        image: &str,
        id: &str,
        annotations: &[&str],
        args: &[&str],
    ) -> HttpContainer {
        let port = free_port();
        let cgroup = self.cgroup_of(id);
        let port_annotation = format!("wasmedge.io/http-port={port}");
        let mut all = vec![
            "run",
            "-d",
            "--net-host",
            "--runtime",
            WASMEDGE_RUNTIME,
            "--cgroup",
            cgroup.as_str(),
        ];
        all.extend([
            "--annotation",
            "wasmedge.io/mode=http",
            "--annotation",
            port_annotation.as_str(),
        ]);
        for a in annotations {
            all.extend(["--annotation", a]);
        }
        all.push(image);
        all.push(id);
        all.extend_from_slice(args);
        self.ctr_ok(&all);
        HttpContainer {
            id: id.to_string(),
            port,
        }
    }

    /// Waits until `ctr task ls` shows the task in `status` (RUNNING, STOPPED).
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let out = self.ctr_ok(&["task", "ls"]);
            if out
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends `signal`, waits for the task to stop, deletes task and container; returns what
    /// `ctr task delete` printed (it carries the exit status).
    pub fn stop_task(&self, id: &str, signal: &str, timeout: Duration) -> String {
        self.ctr_ok(&["task", "kill", "-s", signal, id]);
        assert!(
            self.wait_task_status(id, "STOPPED", timeout),
            "{id} did not stop within {timeout:?} of {signal}"
        );
        let out = self.ctr(&["task", "delete", id]);
        self.ctr_ok(&["container", "rm", id]);
        // containerd 2.x's ctr logs deprecations of the host (cgroup v1) on every call.
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .lines()
        .filter(|l| !l.contains("msg=\"DEPRECATION"))
        .collect::<Vec<_>>()
        .join("\n")
    }
}
