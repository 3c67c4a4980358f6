//! Reading the pods' own `/metrics`: the ready endpoints of the Service (EndpointSlices), one
//! plain HTTP GET each, in parallel, bounded in time and size.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HttpClient};
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use super::exposition;
use super::window::{counters_by_version, PodScrape};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BODY_BYTES: usize = 4 << 20;

/// A pod to scrape: its name (the key of its counters in the status) and metrics URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub pod: String,
    pub url: String,
}

/// The scrape of all pods: what answered, and why the others did not.
#[derive(Debug, Default)]
pub struct ScrapeResult {
    pub pods: Vec<PodScrape>,
    pub failures: Vec<String>,
}

impl ScrapeResult {
    /// Why the metrics cannot be judged this time, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        match (self.pods.is_empty(), self.failures.first()) {
            (_, Some(first)) => Some(if self.failures.len() > 1 {
                format!("{first} (and {} more pods)", self.failures.len() - 1)
            } else {
                first.clone()
            }),
            (true, None) => Some("no ready endpoints behind the Service".to_string()),
            (false, None) => None,
        }
    }
}

/// The ready endpoints of the slices, once each (a dual-stack pod is in two slices).
pub fn targets(slices: &[EndpointSlice], port: u16, path: &str) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            // The API says an unknown readiness is to be taken as ready.
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            if conditions.ready == Some(false) || conditions.terminating == Some(true) {
                continue;
            }
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let pod = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| address.clone());
            seen.insert(Target {
                pod,
                url: format!("http://{host}:{port}{path}"),
            });
        }
    }
    let mut unique: Vec<Target> = Vec::new();
    for target in seen {
        if unique.last().map(|t: &Target| &t.pod) != Some(&target.pod) {
            unique.push(target);
        }
    }
    unique
}

#[derive(Clone)]
pub struct Scraper {
    http: HttpClient<HttpConnector, Empty<Bytes>>,
}

impl Default for Scraper {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(SCRAPE_TIMEOUT));
        Scraper {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Scraper {
    /// Scrapes every ready pod of `service` in `namespace`.
    pub async fn scrape_service(
        &self,
        client: &Client,
        namespace: &str,
        service: &str,
        port: u16,
        path: &str,
    ) -> Result<ScrapeResult, kube::Error> {
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await?;
        let targets = targets(&list.items, port, path);
        let answers = futures::future::join_all(targets.iter().map(|t| self.fetch(&t.url))).await;
        let mut result = ScrapeResult::default();
        for (target, answer) in targets.into_iter().zip(answers) {
            match answer {
                Ok(text) => {
                    result.pods.push((
                        target.pod,
                        counters_by_version(&exposition::parse(&text).samples),
                    ));
                }
                Err(why) => result
                    .failures
                    .push(format!("pod {} ({}): {why}", target.pod, target.url)),
            }
        }
        Ok(result)
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let exchange = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_string())
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn endpoint(
        address: &str,
        pod: Option<&str>,
        ready: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_endpoints_once_each() {
        let v4 = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                endpoint("10.0.0.1", Some("fn-v1-a"), Some(true), None),
                endpoint("10.0.0.2", Some("fn-v2-a"), None, None),
                endpoint("10.0.0.3", Some("fn-v1-b"), Some(false), None),
                endpoint("10.0.0.4", Some("fn-v1-c"), Some(true), Some(true)),
                endpoint("10.0.0.5", None, Some(true), None),
            ]),
            ..Default::default()
        };
        let v6 = EndpointSlice {
            address_type: "IPv6".into(),
            endpoints: Some(vec![endpoint("fd00::1", Some("fn-v1-a"), Some(true), None)]),
            ..Default::default()
        };
        let urls: Vec<_> = targets(&[v4, v6], 8080, "/metrics")
            .into_iter()
            .map(|t| (t.pod, t.url))
            .collect();
        assert_eq!(
            urls,
            vec![
                (
                    "10.0.0.5".to_string(),
                    "http://10.0.0.5:8080/metrics".to_string()
                ),
                (
                    "fn-v1-a".to_string(),
                    "http://10.0.0.1:8080/metrics".to_string()
                ),
                (
                    "fn-v2-a".to_string(),
                    "http://10.0.0.2:8080/metrics".to_string()
                ),
            ]
        );
        let only_v6 = EndpointSlice {
            endpoints: Some(vec![endpoint("fd00::9", Some("p"), Some(true), None)]),
            ..Default::default()
        };
        assert_eq!(
            targets(&[only_v6], 9000, "/m")[0].url,
            "http://[fd00::9]:9000/m"
        );
    }

    #[test]
    fn unavailable_when_any_pod_failed_or_none_answered() {
        assert!(ScrapeResult::default()
            .unavailable()
            .unwrap()
            .contains("no ready endpoints"));
        let partial = ScrapeResult {
            pods: vec![("a".into(), Default::default())],
            failures: vec!["pod b: refused".into(), "pod c: refused".into()],
        };
        assert_eq!(
            partial.unavailable().unwrap(),
            "pod b: refused (and 1 more pods)"
        );
        let fine = ScrapeResult {
            pods: vec![("a".into(), Default::default())],
            failures: vec![],
        };
        assert_eq!(fine.unavailable(), None);
    }

    #[tokio::test]
    async fn fetches_over_http_and_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // First connection answers, the second never does.
            let (mut answered, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = answered.read(&mut buf).await;
            let body = "wasmedge_http_requests_total{version=\"v2\",status=\"200\"} 3\n";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            answered.write_all(reply.as_bytes()).await.unwrap();
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let scraper = Scraper::default();
        let text = scraper
            .fetch(&format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert!(text.contains("status=\"200\"} 3"));
        let started = std::time::Instant::now();
        let err = scraper
            .fetch(&format!("http://{addr}/metrics"))
            .await
            .unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
