//! The command line's calls to a running frugal's admin API (`frugal usage --admin`).
//! Plain HTTP to an operator-given URL; not used by the server.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn call(
    method: http::Method,
    url: &str,
    body: Option<String>,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
        let resp = client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text =
            String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned();
        if !status.is_success() {
            bail!("{url} answered {status}: {text}");
        }
        Ok(text)
    })
}

pub fn get(url: &str) -> anyhow::Result<String> {
    call(http::Method::GET, url, None, None)
}

/// PUTs JSON, with the ingest bearer token if given.
pub fn put_json(url: &str, body: &str, token: Option<&str>) -> anyhow::Result<String> {
    call(http::Method::PUT, url, Some(body.to_string()), token)
}
