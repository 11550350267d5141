//! A small HTTP client for the hub's API that turns problem bodies into
//! one clear line and an exit code, and the arguments that say how to
//! reach the hub.

use crate::exit;
use clap::Args;
use muster_proto::api::Problem;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> CliError {
        CliError { code, message: message.into() }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T = ()> = Result<T, CliError>;

#[derive(Clone)]
pub struct Client {
    /// The hubs it may ask, as equals on one database; `current` answered last.
    bases: std::sync::Arc<[String]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    http: reqwest::Client,
}

/// The certificate authority to trust beside the system's, from `--ca`
/// or `MUSTER_CA` (a PEM file).
pub fn ca_from_env() -> Option<PathBuf> {
    std::env::var_os("MUSTER_CA").filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl Client {
    /// A client for the hub at `base` (`http://` on the loopback, or
    /// `https://`), trusting the system's roots and `ca` (PEM) if given.
    /// `base` may name several hubs on one database, separated by commas
    /// (as agents give their runs in `MUSTER_URL`): a request that cannot
    /// connect to one goes to the next.
    pub fn new(base: &str, token: &str, ca: Option<&std::path::Path>) -> CliResult<Client> {
        let bases: Vec<String> =
            base.split(',').map(|b| b.trim().trim_end_matches('/').to_owned()).filter(|b| !b.is_empty()).collect();
        if bases.is_empty() {
            return Err(CliError::new(exit::USAGE, "no hub URL given"));
        }
        for base in &bases {
            if !base.starts_with("http://") && !base.starts_with("https://") {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("hub URL {base:?} must start with http:// or https://"),
                ));
            }
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).use_rustls_tls();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| CliError::new(exit::USAGE, format!("cannot read the CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::new(exit::USAGE, format!("{} holds no PEM certificate: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(CliError::new(exit::USAGE, format!("{} holds no PEM certificate", ca.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| CliError::new(exit::FAILURE, format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { bases: bases.into(), current: Default::default(), token: token.trim().to_owned(), http })
    }

    /// The hub that answered last (the first given, before any did).
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> CliResult<(StatusCode, String)> {
        let first = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut turn = 0;
        let resp = loop {
            let at = (first + turn) % self.bases.len();
            let base = &self.bases[at];
            let url = format!("{base}{}{path}", muster_proto::API_PREFIX);
            let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token).timeout(timeout);
            if let Some(body) = &body {
                req = req.header("content-type", "application/json").body(body.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    self.current.store(at, std::sync::atomic::Ordering::Relaxed);
                    break resp;
                }
                // Never reached that hub: the next one may take it. A request
                // that did reach one is not sent again, since it may have acted.
                Err(e) if e.is_connect() && turn + 1 < self.bases.len() => turn += 1,
                Err(e) => return Err(unreachable(base, &e)),
            }
        };
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::new(exit::FAILURE, format!("cannot read the hub's answer: {e}")))?;
        if status.is_success() {
            return Ok((status, text));
        }
        let (detail, field) = match serde_json::from_str::<Problem>(&text) {
            Ok(p) => (p.detail, p.field),
            Err(_) => (text.trim().to_owned(), None),
        };
        let code = match status {
            StatusCode::CONFLICT if field.as_deref() == Some("deadlock") => exit::DEADLOCK,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => exit::USAGE,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::CONFLICT => exit::CONFLICT,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::AUTH,
            StatusCode::TOO_MANY_REQUESTS => exit::RATE_LIMITED,
            _ => exit::FAILURE,
        };
        Err(CliError::new(code, detail))
    }

    fn decode<T: DeserializeOwned>(text: &str) -> CliResult<T> {
        serde_json::from_str(text)
            .map_err(|e| CliError::new(exit::FAILURE, format!("unexpected answer from the hub: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        let (_, text) = self.send(Method::GET, path, None, Duration::from_secs(30)).await?;
        Self::decode(&text)
    }

    /// A GET that may be held open by the hub for up to `wait`.
    pub async fn get_waiting<T: DeserializeOwned>(&self, path: &str, wait: Duration) -> CliResult<T> {
        let (_, text) = self.send(Method::GET, path, None, wait + Duration::from_secs(30)).await?;
        Self::decode(&text)
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> CliResult<T> {
        let body = serde_json::to_string(body).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        let (_, text) = self.send(Method::PUT, path, Some(body), Duration::from_secs(30)).await?;
        Self::decode(&text)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> CliResult<T> {
        self.post_waiting(path, body, Duration::from_secs(30)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        let (_, text) = self.send(Method::DELETE, path, None, Duration::from_secs(30)).await?;
        Self::decode(&text)
    }

    /// A POST answered with no body.
    pub async fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> CliResult {
        let body = serde_json::to_string(body).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        self.send(Method::POST, path, Some(body), Duration::from_secs(30)).await.map(|_| ())
    }

    /// A POST whose work may take up to `timeout` (a backup, a compaction).
    pub async fn post_waiting<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> CliResult<T> {
        let body = serde_json::to_string(body).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        let (_, text) = self.send(Method::POST, path, Some(body), timeout).await?;
        Self::decode(&text)
    }
}

/// Why the hub at `base` could not be reached, in words that say what to do.
fn unreachable(base: &str, e: &reqwest::Error) -> CliError {
    let chain = error_chain(e);
    if chain.contains("certificate") || chain.contains("UnknownIssuer") || chain.contains("tls handshake") {
        return CliError::new(
            exit::UNREACHABLE,
            format!(
                "cannot reach the hub at {base}: its TLS certificate was refused ({chain}); trust its CA with --ca FILE or MUSTER_CA"
            ),
        );
    }
    let why = if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    CliError::new(exit::UNREACHABLE, format!("cannot reach the hub at {base} ({why}); is `muster hub` running?"))
}

/// Escapes a path segment.
pub fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// How to reach the hub.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The hub's base URL [default: http://127.0.0.1:4000].
    #[arg(long = "url", visible_alias = "hub", env = "MUSTER_URL", global = true)]
    pub url: Option<String>,
    /// An API token; defaults to the admin token in the data directory.
    #[arg(long, env = "MUSTER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The hub's data directory [default: .muster]; the CLI reads `admin.token` there.
    #[arg(long, env = "MUSTER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// A certificate authority (PEM) to trust for https:// and wss:// beside the system's.
    #[arg(long, env = "MUSTER_CA", global = true)]
    pub ca: Option<PathBuf>,
}

pub const DEFAULT_URL: &str = "http://127.0.0.1:4000";
pub const DEFAULT_DATA_DIR: &str = ".muster";

impl ConnArgs {
    pub fn client(&self) -> CliResult<Client> {
        let token = match &self.token {
            Some(t) if !t.trim().is_empty() => t.clone(),
            _ => {
                let dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                let path = dir.join("admin.token");
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::new(
                        exit::AUTH,
                        format!(
                            "no token: set MUSTER_TOKEN or --token, or run where {} is readable ({e})",
                            path.display()
                        ),
                    )
                })?
            }
        };
        Client::new(self.url.as_deref().unwrap_or(DEFAULT_URL), &token, self.ca.as_deref())
    }
}

/// An error with every cause it carries, for messages that must say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// A usage error (exit 2): the command line or the input was invalid.
pub(crate) fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::new(exit::USAGE, e.to_string())
}

/// A query string from `pairs`, each escaped.
pub(crate) fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}
