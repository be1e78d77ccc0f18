//! One registry's HTTP client: every request strata makes to it goes through [`Client::send`],
//! which authorizes it, follows redirects (never carrying `Authorization` to another host:
//! blob storage redirects are normal), and retries what is worth retrying — connection
//! errors, 5xx and 429 — with exponential backoff and jitter, honouring `Retry-After`, a
//! bounded number of times. [`BlobReader`] resumes a blob cut mid-stream with `Range`.

use super::Options;
use super::auth::{Auth, Challenge};
use crate::error::{Error, Result};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::http::{self, HeaderMap, Response};

/// A response whose body has not been read.
pub type Reply = Response<ureq::Body>;

/// What a request sends.
pub enum Body<'a> {
    /// Nothing.
    Empty,
    /// Bytes in memory (a manifest, a chunk of an upload).
    Bytes(&'a [u8]),
    /// A stream of known length, opened anew for each attempt (a blob read from the store).
    Stream {
        /// Opens the stream from its start.
        open: &'a (dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync),
        /// Its length, sent as `Content-Length`.
        len: u64,
    },
}

/// A request to the registry.
pub struct Request<'a> {
    /// `GET`, `HEAD`, `PUT`, …
    pub method: &'static str,
    /// A path under the registry (`/v2/…`) or, for an upload location, a whole URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body<'a>,
    /// The token scope it needs (`repository:NAME:pull`).
    pub scope: String,
}

impl<'a> Request<'a> {
    /// A request without a body.
    pub fn new(method: &'static str, url: String, scope: String) -> Request<'a> {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Body::Empty,
            scope,
        }
    }

    /// With a header.
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }

    /// With a body.
    pub fn body(mut self, b: Body<'a>) -> Self {
        self.body = b;
        self
    }
}

/// The pull scope of a repository.
pub fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The push scope of a repository (pushing needs pull too: `HEAD` of blobs, mounts).
pub fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// Longest `Retry-After` waited for; a registry asking for more is an error.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A registry's client.
pub struct Client {
    /// The registry as references name it.
    pub registry: String,
    /// `https://HOST` or, insecure, maybe `http://HOST`.
    base: String,
    agent: ureq::Agent,
    auth: Auth,
    retries: u32,
    backoff: Duration,
    transfers: Option<Arc<dyn super::Transfers>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({} at {})", self.registry, self.base)
    }
}

impl Client {
    /// A client for `registry` (`docker.io`, `host:port`) reached at `host`: its credential
    /// looked up, TLS set, and its `/v2/` pinged (which says how it authenticates, and, with
    /// `--tls-verify=false`, whether it speaks TLS at all).
    pub fn connect(registry: &str, host: &str, opts: &Options) -> Result<Client> {
        let credential = opts.lookup.find(registry)?;
        let verify = opts.tls_verify;
        let tls = super::tls::config(host, opts.cert_dir.as_deref(), verify)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .timeout_connect(Some(opts.timeout))
            .timeout_per_read(Some(opts.timeout))
            .timeout_per_write(Some(opts.timeout))
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if opts.plain_http { "http" } else { "https" };
        let mut client = Client {
            registry: registry.to_string(),
            base: format!("{scheme}://{host}"),
            agent,
            auth: Auth::new(registry, credential),
            retries: opts.retries,
            backoff: opts.backoff,
            transfers: opts.transfers.clone(),
        };
        let ping = client.ping();
        let ping = match ping {
            // Insecure registries may speak plain HTTP (skopeo's fallback).
            Err(e) if !verify && is_transport_error(&e) => {
                tracing::debug!("{registry}: https failed ({e}); trying http");
                client.base = format!("http://{host}");
                client.ping()
            }
            other => other,
        };
        let resp = ping.map_err(|e| match e {
            Error::Io { source, .. } if verify && looks_like_tls(&source) => Error::Auth(format!(
                "{registry}: TLS failed: {source} (give its CA with --cert-dir DIR, or --tls-verify=false)"
            )),
            other => other,
        })?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 => {
                if let Some(c) =
                    header(resp.headers(), "www-authenticate").and_then(Challenge::parse)
                {
                    client.auth.set_challenge(c);
                }
            }
            404 => {
                return Err(Error::NotFound(format!(
                    "{registry}: not a registry (GET /v2/ answered 404)"
                )));
            }
            s => {
                return Err(Error::Format(format!("{registry}: GET /v2/ answered {s}")));
            }
        }
        tracing::debug!("{registry}: at {}", client.base);
        Ok(client)
    }

    fn ping(&self) -> Result<Reply> {
        // Not through `send`: a 401 here is information, not a failure.
        self.attempt_loop("GET /v2/", |_| {
            let req = http::Request::get(format!("{}/v2/", self.base))
                .body(ureq::SendBody::none())
                .map_err(io::Error::other)?;
            self.agent.run(req).map_err(|e| self.ureq_io(e))
        })
    }

    /// Whether the registry was reached over plain HTTP.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The authorization state (its error messages name the user).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Send `req`: authorized, redirects followed, retried on connection errors, 5xx and 429.
    /// The response is returned whatever its status otherwise (404 is the caller's to judge);
    /// a 401 that new credentials cannot fix is an [`Error::Auth`], a 403 too.
    pub fn send(&self, req: &Request<'_>) -> Result<Reply> {
        let what = format!("{} {}", req.method, path_of(&req.url));
        let mut auth_rounds = 0;
        let mut attempt = 0u32;
        loop {
            let authorization = if req.scope.is_empty() {
                None
            } else {
                self.auth.header(&self.agent, &req.scope)?
            };
            let result = self.once(req, authorization.as_deref());
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    if proxy_failure(&e).is_some_and(ProxyFailed::refused) {
                        return Err(self.refused_by_proxy(&what, e));
                    }
                    if attempt < self.retries {
                        let wait = self.delay(attempt, None);
                        tracing::warn!(
                            "{}: {what}: {e}; retrying in {:.1}s",
                            self.registry,
                            wait.as_secs_f64()
                        );
                        std::thread::sleep(wait);
                        attempt += 1;
                        continue;
                    }
                    return Err(Error::Io {
                        context: format!(
                            "{}: {what} (after {} attempts)",
                            self.registry,
                            attempt + 1
                        ),
                        source: e,
                    });
                }
            };
            let status = resp.status().as_u16();
            match status {
                401 if auth_rounds < 2 => {
                    auth_rounds += 1;
                    self.auth.unauthorized(
                        header(resp.headers(), "www-authenticate"),
                        &req.scope,
                        authorization.is_some(),
                    )?;
                }
                401 => return Err(self.auth.denied()),
                403 => {
                    return Err(Error::Denied(format!(
                        "{}: {what}: access denied to {} ({})",
                        self.registry,
                        self.auth.who(),
                        error_text(resp)
                    )));
                }
                429 | 500 | 502 | 503 | 504 => {
                    if let Some(t) = &self.transfers {
                        t.answered(status);
                    }
                    let after = header(resp.headers(), "retry-after").and_then(parse_retry_after);
                    if let Some(a) = after
                        && a > MAX_RETRY_AFTER
                    {
                        return Err(Error::Io {
                            context: format!("{}: {what}", self.registry),
                            source: io::Error::other(format!(
                                "answered {status} and asks to retry after {}s",
                                a.as_secs()
                            )),
                        });
                    }
                    if attempt >= self.retries {
                        return Err(Error::Io {
                            context: format!(
                                "{}: {what} (after {} attempts)",
                                self.registry,
                                attempt + 1
                            ),
                            source: io::Error::other(format!(
                                "answered {status}: {}",
                                error_text(resp)
                            )),
                        });
                    }
                    let wait = self.delay(attempt, after);
                    tracing::warn!(
                        "{}: {what}: answered {status}; retrying in {:.1}s",
                        self.registry,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// One attempt, with redirects followed: `Authorization` only to the registry's host.
    fn once(&self, req: &Request<'_>, authorization: Option<&str>) -> io::Result<Reply> {
        let mut url = self.url(&req.url);
        let mut method = req.method;
        for _ in 0..=MAX_REDIRECTS {
            let same_host = authority(&url) == authority(&self.base);
            let mut b = http::Request::builder().method(method).uri(&url);
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            if same_host && let Some(a) = authorization {
                b = b.header("Authorization", a);
            }
            let resp = match (&req.body, method) {
                (_, "GET" | "HEAD") | (Body::Empty, _) => {
                    let r = b.body(ureq::SendBody::none()).map_err(io::Error::other)?;
                    self.agent.run(r)
                }
                (Body::Bytes(bytes), _) => {
                    let r = b
                        .header("Content-Length", bytes.len())
                        .body(ureq::SendBody::from_owned_reader(io::Cursor::new(
                            bytes.to_vec(),
                        )))
                        .map_err(io::Error::other)?;
                    self.agent.run(r)
                }
                (Body::Stream { open, len }, _) => {
                    let r = b
                        .header("Content-Length", *len)
                        .body(ureq::SendBody::from_owned_reader(open()?))
                        .map_err(io::Error::other)?;
                    self.agent.run(r)
                }
            }
            .map_err(|e| self.ureq_io(e))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308)
                && let Some(loc) = header(resp.headers(), "location")
            {
                url = resolve(&url, loc);
                if status == 303 {
                    method = "GET";
                }
                tracing::debug!("{}: redirected to {}", self.registry, authority(&url));
                continue;
            }
            return Ok(resp);
        }
        Err(io::Error::other(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// An HTTP error as an I/O one; a failed proxy tunnel names the proxy (from the
    /// environment: `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, less `NO_PROXY`).
    fn ureq_io(&self, e: ureq::Error) -> io::Error {
        match e {
            ureq::Error::ConnectProxyFailed(reason) => {
                io::Error::other(ProxyFailed::of(&self.agent, reason))
            }
            other => ureq_io(other),
        }
    }

    /// The absolute URL of a path, or the URL itself.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// The wait before retry number `attempt` (0-based): exponential with jitter, or what
    /// `Retry-After` says when longer.
    fn delay(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let exp = self.backoff.saturating_mul(1u32 << attempt.min(6));
        let exp = exp.min(Duration::from_secs(10));
        // Jitter: 50–100 % of the step, so clients cut at once do not come back at once.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let frac = 0.5 + f64::from(nanos % 1000) / 2000.0;
        let wait = exp.mul_f64(frac);
        after.map_or(wait, |a| a.max(wait))
    }

    fn attempt_loop(
        &self,
        what: &str,
        mut f: impl FnMut(u32) -> io::Result<Reply>,
    ) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            match f(attempt) {
                Ok(r) => return Ok(r),
                Err(e) if proxy_failure(&e).is_some_and(ProxyFailed::refused) => {
                    return Err(self.refused_by_proxy(what, e));
                }
                Err(e) if attempt < self.retries && !looks_like_tls(&e) => {
                    std::thread::sleep(self.delay(attempt, None));
                    attempt += 1;
                    tracing::debug!("{}: {what}: {e}; retrying", self.registry);
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("{}: {what}", self.registry),
                        source: e,
                    });
                }
            }
        }
    }

    /// A proxy that refused the tunnel (a 4xx to `CONNECT`, 407: its credentials): not
    /// retried, asking again gets the same answer. An I/O error, not an auth one: the
    /// proxy is this side's setting, not the registry's verdict on the credentials (a
    /// service in front of the registry answers it with 502, not 401).
    fn refused_by_proxy(&self, what: &str, e: io::Error) -> Error {
        Error::Io {
            context: format!("{}: {what}", self.registry),
            source: e,
        }
    }

    /// A progress report for a transfer of `what`, when progress is shown.
    pub fn transfer(
        &self,
        direction: super::Direction,
        what: String,
        total: Option<u64>,
    ) -> Option<Box<dyn super::Transfer>> {
        self.transfers
            .as_ref()
            .map(|t| t.start(direction, what, total))
    }

    /// A reader of a blob of `repo`, resumed with `Range` where a stream is cut; `size`,
    /// when known, bounds it (a registry sending more is an error, not a full disk).
    pub fn blob_reader(
        self: &Arc<Self>,
        repo: &str,
        digest: &str,
        size: Option<u64>,
    ) -> BlobReader {
        BlobReader {
            client: self.clone(),
            url: format!("/v2/{repo}/blobs/{digest}"),
            scope: pull(repo),
            digest: digest.to_string(),
            size,
            pos: 0,
            body: None,
            cuts: 0,
            started: None,
            progress: None,
        }
    }

    /// A reader of a blob at a foreign URL (`urls` of a non-distributable layer): the same
    /// resume and retry, no registry credentials.
    pub fn foreign_reader(
        self: &Arc<Self>,
        url: &str,
        digest: &str,
        size: Option<u64>,
    ) -> BlobReader {
        BlobReader {
            scope: String::new(),
            url: url.to_string(),
            ..self.blob_reader("", digest, size)
        }
    }
}

/// A blob's bytes from the registry, resumed by `Range` after a cut, a bounded number of
/// times. The digest is checked by whoever reads it (the blob store's tee).
pub struct BlobReader {
    client: Arc<Client>,
    url: String,
    scope: String,
    digest: String,
    size: Option<u64>,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    cuts: u32,
    started: Option<Instant>,
    progress: Option<Box<dyn super::Transfer>>,
}

impl BlobReader {
    fn open(&mut self) -> io::Result<()> {
        let mut req = Request::new("GET", self.url.clone(), self.scope.clone());
        if self.pos > 0 {
            req = req.header("Range", format!("bytes={}-", self.pos));
        }
        let resp = self.client.send(&req).map_err(io::Error::other)?;
        let status = resp.status().as_u16();
        match (status, self.pos) {
            (200, 0) => {}
            (206, p) => {
                let start = header(resp.headers(), "content-range")
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(p) {
                    return Err(io::Error::other(format!(
                        "asked to resume at byte {p}, the registry answered {:?}",
                        header(resp.headers(), "content-range")
                    )));
                }
            }
            (200, p) => {
                // No range support: the whole blob again, the part already had skipped.
                let mut body = resp.into_body().into_reader();
                io::copy(&mut (&mut body).take(p), &mut io::sink())?;
                self.body = Some(body);
                return Ok(());
            }
            (404, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("blob {} is not in the registry (404)", self.digest),
                ));
            }
            (s, _) => {
                return Err(io::Error::other(format!(
                    "GET blob {} answered {s}: {}",
                    self.digest,
                    error_text(resp)
                )));
            }
        }
        if self.pos == 0
            && let Some(d) = header(resp.headers(), "docker-content-digest")
            && crate::digest::parse(d).is_some()
            && d != self.digest
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the registry says blob {} is {d} (Docker-Content-Digest)",
                    self.digest
                ),
            ));
        }
        self.body = Some(resp.into_body().into_reader());
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                if self.started.is_none() {
                    self.started = Some(Instant::now());
                    let what = format!("↓ {}", crate::image::short_digest(&self.digest));
                    self.progress =
                        self.client
                            .transfer(super::Direction::Download, what, self.size);
                }
                self.open()?;
            }
            let Some(body) = self.body.as_mut() else {
                return Err(io::Error::other("no body"));
            };
            let want = match self.size {
                // One byte past the size, to see a registry that sends too much.
                Some(s) => {
                    (buf.len() as u64).min(s.saturating_sub(self.pos).saturating_add(1)) as usize
                }
                None => buf.len(),
            };
            match body.read(&mut buf[..want.max(1)]) {
                Ok(0) => {
                    if let Some(s) = self.size
                        && self.pos < s
                    {
                        // Cut cleanly before the end (a proxy closing): resume.
                        self.cut(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("ended at byte {} of {s}", self.pos),
                        ))?;
                        continue;
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    self.pos += n as u64;
                    if let Some(p) = self.progress.as_mut() {
                        p.advance(n as u64);
                    }
                    if let Some(s) = self.size
                        && self.pos > s
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "blob {} is longer than its descriptor's {s} bytes",
                                self.digest
                            ),
                        ));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.cut(e)?,
            }
        }
    }
}

impl BlobReader {
    /// The stream broke at `self.pos`: drop it and resume, unless that happened too often.
    fn cut(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        if self.cuts >= self.client.retries {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{}: blob {} cut at byte {} {} times, giving up: {e}",
                    self.client.registry,
                    self.digest,
                    self.pos,
                    self.cuts + 1
                ),
            ));
        }
        let wait = self.client.delay(self.cuts, None);
        tracing::warn!(
            "{}: blob {}: {e} at byte {}; resuming in {:.1}s",
            self.client.registry,
            crate::image::short_digest(&self.digest),
            self.pos,
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
        self.cuts += 1;
        Ok(())
    }
}

/// A header's value as text.
pub fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `Retry-After`: seconds, or an HTTP date (the wait until then; none once it has passed).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The registry's error document in one line (`{"errors":[{"code","message"}]}`), or the
/// start of the body.
pub fn error_text(resp: Reply) -> String {
    let mut body = resp.into_body();
    let bytes = body
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(errs) = v.get("errors").and_then(|e| e.as_array())
    {
        let parts: Vec<String> = errs
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                format!("{code}: {msg}")
                    .trim_matches([' ', ':'])
                    .to_string()
            })
            .collect();
        return parts.join("; ");
    }
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "no details".into()
    } else {
        line.chars().take(200).collect()
    }
}

fn ureq_io(e: ureq::Error) -> io::Error {
    match e {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(t) => {
            io::Error::new(io::ErrorKind::TimedOut, format!("timed out ({t})"))
        }
        other => io::Error::other(other.to_string()),
    }
}

/// A proxy (`HTTPS_PROXY`, `ALL_PROXY`…) that would not open a tunnel to the registry.
#[derive(Debug)]
pub(crate) struct ProxyFailed {
    proxy: String,
    /// What the proxy answered to `CONNECT`, when it answered.
    status: Option<u16>,
    reason: String,
}

impl ProxyFailed {
    /// The failure `reason` (ureq's) of the proxy `agent` goes through.
    pub(crate) fn of(agent: &ureq::Agent, reason: String) -> ProxyFailed {
        let proxy = match agent.config().proxy() {
            Some(p) => format!("{}:{}", p.host(), p.port()),
            None => "in the environment".into(),
        };
        ProxyFailed::new(proxy, reason)
    }

    fn new(proxy: String, reason: String) -> ProxyFailed {
        // ureq says "proxy server responded 407/407".
        let status = reason
            .strip_prefix("proxy server responded ")
            .and_then(|r| r.split('/').next())
            .and_then(|n| n.parse().ok());
        ProxyFailed {
            proxy,
            status,
            reason,
        }
    }

    /// The proxy answered with a 4xx: asking again gets the same answer (but a timeout or
    /// rate limit, 408 or 429, may pass).
    pub(crate) fn refused(&self) -> bool {
        self.status
            .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
    }
}

impl std::fmt::Display for ProxyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self
            .status
            .and_then(|s| ureq::http::StatusCode::from_u16(s).ok());
        match status {
            Some(s) => {
                write!(
                    f,
                    "the proxy {} answered {} {} to CONNECT",
                    self.proxy,
                    s.as_u16(),
                    s.canonical_reason().unwrap_or("")
                )?;
                if s.as_u16() == 407 {
                    write!(
                        f,
                        " (its credentials go in its URL, http://USER:PASSWORD@HOST:PORT)"
                    )?;
                }
                if self.refused() {
                    write!(f, "; NO_PROXY names the hosts reached directly")?;
                }
                Ok(())
            }
            None => write!(f, "the proxy {} failed: {}", self.proxy, self.reason),
        }
    }
}

impl std::error::Error for ProxyFailed {}

/// The [`ProxyFailed`] behind an error, if that is what it is.
fn proxy_failure(e: &io::Error) -> Option<&ProxyFailed> {
    e.get_ref().and_then(|i| i.downcast_ref::<ProxyFailed>())
}

fn is_transport_error(e: &Error) -> bool {
    matches!(e, Error::Io { .. })
}

fn looks_like_tls(e: &io::Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("certificate")
        || s.contains("tls")
        || s.contains("handshake")
        || s.contains("corrupt message")
}

/// `scheme://host[:port]` of a URL.
fn authority(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

fn path_of(url: &str) -> &str {
    let a = authority(url);
    let p = &url[a.len()..];
    p.split('?').next().unwrap_or(p)
}

/// A `Location` against the URL that answered with it.
fn resolve(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if loc.starts_with('/') {
        format!("{}{loc}", authority(base))
    } else {
        let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
        format!("{dir}{loc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_that_refuses_is_told_from_one_that_did_not_answer() {
        let p = ProxyFailed::new(
            "10.0.0.1:3128".into(),
            "proxy server responded 407/407".into(),
        );
        assert!(p.refused());
        assert_eq!(
            p.to_string(),
            "the proxy 10.0.0.1:3128 answered 407 Proxy Authentication Required to CONNECT \
             (its credentials go in its URL, http://USER:PASSWORD@HOST:PORT); NO_PROXY names \
             the hosts reached directly"
        );
        let e = io::Error::other(p);
        assert!(proxy_failure(&e).is_some_and(ProxyFailed::refused));
        for transient in [
            "proxy server responded 502/502",
            "proxy server did not respond",
        ] {
            let p = ProxyFailed::new("p:1".into(), transient.into());
            assert!(!p.refused(), "{transient}");
        }
        assert_eq!(
            ProxyFailed::new("p:1".into(), "proxy server did not respond".into()).to_string(),
            "the proxy p:1 failed: proxy server did not respond"
        );
        assert!(proxy_failure(&io::Error::other("other")).is_none());
    }

    #[test]
    fn urls() {
        assert_eq!(authority("https://h:5000/v2/x?y"), "https://h:5000");
        assert_eq!(authority("http://h"), "http://h");
        assert_eq!(path_of("https://h/v2/a/blobs/x?sig=1"), "/v2/a/blobs/x");
        assert_eq!(resolve("https://h/v2/a/b", "/s/x?q"), "https://h/s/x?q");
        assert_eq!(resolve("https://h/v2/a/b", "https://s3/x"), "https://s3/x");
        assert_eq!(resolve("https://h/v2/a/b", "c"), "https://h/v2/a/c");
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        // A date that has passed: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let soon = std::time::SystemTime::now() + Duration::from_secs(90);
        let d = parse_retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            d > Duration::from_secs(85) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
