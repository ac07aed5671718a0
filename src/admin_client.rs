//! The command line's calls to a running frugal's admin API (`frugal usage`): plain HTTP
//! to an operator-given URL, or to the one a running frugal wrote in its data directory.
//! Not used by the server.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long the CLI waits for an answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn call(
    method: http::Method,
    url: &str,
    body: Option<String>,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Printed without any `user:password@` it may carry.
    let shown = crate::forwarder::redacted(url);
    rt.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = http::Request::builder().method(method).uri(url);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("{shown} did not answer within {TIMEOUT:?}"))?
            .with_context(|| format!("cannot reach {shown}"))?;
        let status = resp.status();
        let text =
            String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
        if !status.is_success() {
            bail!("{shown} answered {status}: {text}");
        }
        Ok(text)
    })
}

/// GETs a URL's body.
pub fn get(url: &str) -> anyhow::Result<String> {
    call(http::Method::GET, url, None, None)
}

/// PUTs JSON, with the ingest bearer token if given.
pub fn put_json(url: &str, body: &str, token: Option<&str>) -> anyhow::Result<String> {
    call(http::Method::PUT, url, Some(body.to_string()), token)
}

/// Where a frugal using `data_dir` may be answering: the address it wrote there when it
/// started, then the policy's own admin address (a wildcard read as loopback).
pub fn candidates(data_dir: &std::path::Path, listen: std::net::SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(a) = std::fs::read_to_string(data_dir.join(crate::admin::ADDRESS_FILE)) {
        out.push(format!("http://{}", a.trim()));
    }
    let policy_url = format!("http://{}", crate::admin::local_address(listen));
    if !out.contains(&policy_url) {
        out.push(policy_url);
    }
    out
}
