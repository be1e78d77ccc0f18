//! `strata serve`: squashed images and layer listings over HTTP, in front of a registry —
//! the server side of two seeds (Quay's squashed-image endpoint, docker-registry's per-layer
//! `files` and `diff`), done exactly: a squash is computed once per (manifest digest,
//! options) into a result file and served from it with its exact `Content-Length`; listings
//! are the CLI's JSON documents. Access is the registry's: every request is answered with the
//! client's own credentials upstream (the manifest is fetched with them each time, also when
//! the result is on disk), never the server's unless `--mirror-creds` says so.
//!
//! Routes: `GET /v2/<name>/squash/<ref>` (`from`, `last`, `format`, `tag`),
//! `/c1/squash/<namespace>/<repository>/<tag>` (Quay's path), `/v2/<name>/flatten/<ref>`
//! (`Accept-Encoding: gzip|zstd`), `/v2/<name>/files/<ref>[?layer=N]`,
//! `/v2/<name>/diff/<ref>[?against=<name2>:<ref2>]`, `/v2/<name>/waste/<ref>`, `/healthz`,
//! `/metrics`.

pub mod clients;
pub mod metrics;
pub mod results;
pub mod route;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use erased::Json;
use metrics::{Metrics, RouteStatus};
use results::{Found, Results};
use route::{Op, Target};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata::blob::BlobStore;
use strata::image::Image;
use strata::registry::credentials::Credential;
use tokio::sync::Semaphore;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The registry: `http://HOST:PORT` (plain HTTP), `https://HOST[:PORT]` or `HOST[:PORT]` (TLS).
    pub registry: String,
    /// Verify the registry's TLS certificate.
    pub tls_verify: bool,
    /// CA and client certificates for the registry (containers' `certs.d` layout).
    pub cert_dir: Option<PathBuf>,
    /// Where blobs, listings and results are kept.
    pub cache_dir: PathBuf,
    /// Computations at once; more requests that need one get 503.
    pub workers: usize,
    /// How long a request may wait for its result.
    pub request_timeout: Duration,
    /// Size cap of the result files.
    pub result_cache_size: u64,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Credentials used when a client sends none (a public mirror); never otherwise.
    pub mirror_creds: Option<String>,
    /// Push each squash result to the registry under a tag derived from its key, and look
    /// there before computing one (replicas share results through the registry).
    pub publish: bool,
}

struct App {
    cfg: Config,
    /// `HOST[:PORT]` of the registry.
    host: String,
    plain_http: bool,
    store: Arc<BlobStore>,
    listings: strata::listing::Cache,
    results: Arc<Results>,
    workers: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Each credential's registry clients (ping, connections, tokens), for a few minutes.
    clients: clients::ClientCache,
}

/// The router of the service over `cfg`.
pub fn router(cfg: Config) -> anyhow::Result<axum::Router> {
    let (plain_http, host) = match cfg.registry.split_once("://") {
        Some(("http", h)) => (true, h.trim_end_matches('/').to_string()),
        Some(("https", h)) => (false, h.trim_end_matches('/').to_string()),
        Some((s, _)) => anyhow::bail!(
            "--registry {}: scheme {s} is not http or https",
            cfg.registry
        ),
        None => (false, cfg.registry.trim_end_matches('/').to_string()),
    };
    strata::registry::name::ImageName::parse(&format!("{host}/x"))
        .map_err(|e| anyhow::anyhow!("--registry {}: {e}", cfg.registry))?;
    let results = Arc::new(Results::new(
        cfg.cache_dir.join("results"),
        cfg.result_cache_size,
    ));
    let mut metrics = Metrics::new();
    metrics.register_running(results.running.clone());
    let store = Arc::new(BlobStore::new(
        cfg.cache_dir.join("blobs"),
        strata::blob::DEFAULT_STORE_CAP,
    ));
    let app = Arc::new(App {
        host,
        plain_http,
        store,
        listings: strata::listing::Cache::new(Some(cfg.cache_dir.clone()), true),
        results,
        workers: Arc::new(Semaphore::new(cfg.workers.max(1))),
        metrics: Arc::new(metrics),
        clients: clients::ClientCache::new(clients::KEEP, clients::MAX),
        cfg,
    });
    Ok(axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_route))
        .route("/v2/{*rest}", get(v2_route))
        .route("/c1/squash/{*rest}", get(quay_route))
        .with_state(app))
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting and let in-flight
/// requests finish for `cfg.shutdown_grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = cfg.shutdown_grace;
    let app = router(cfg)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    let mut server = server;
    tokio::select! {
        r = &mut server => { r??; }
        _ = rx => {
            tracing::info!("shutting down: draining for up to {}s", grace.as_secs());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => { r??; }
                Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
            }
        }
    }
    Ok(())
}

/// Run the service on `listen` until SIGTERM or SIGINT.
pub fn run(listen: &str, cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
        tracing::warn!("strata serve: listening on {}", listener.local_addr()?);
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        };
        serve(listener, cfg, shutdown).await
    })
}

async fn metrics_route(State(app): State<Arc<App>>) -> Response {
    count(&app, "metrics", 200);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn v2_route(
    State(app): State<Arc<App>>,
    UrlPath(rest): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let usage = "no such route: /v2/<name>/{squash,flatten,files,diff,waste}/<reference>";
    route_or_404(app, route::parse_v2(&rest), usage, q, headers).await
}

async fn quay_route(
    State(app): State<Arc<App>>,
    UrlPath(rest): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let usage = "Quay's path is /c1/squash/<namespace>/<repository>/<tag>";
    route_or_404(app, route::parse_quay(&rest), usage, q, headers).await
}

/// Answer a parsed path, or 404 saying what paths there are.
async fn route_or_404(
    app: Arc<App>,
    target: Option<Target>,
    usage: &str,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    match target {
        Some(t) => answer(app, t, q, headers).await,
        None => {
            count(&app, "other", 404);
            error(StatusCode::NOT_FOUND, usage)
        }
    }
}

fn count(app: &App, route: &str, status: u16) {
    app.metrics
        .requests
        .get_or_create(&RouteStatus {
            route: route.to_string(),
            status,
        })
        .inc();
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": message}).to_string() + "\n";
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Counts a request in flight until dropped (with the body it serves, at the body's end).
struct InFlight(Arc<Metrics>);

impl InFlight {
    fn new(m: &Arc<Metrics>) -> InFlight {
        m.in_flight.inc();
        InFlight(m.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The client's credentials, for the registry (the error: why the header is unusable).
fn client_credential(
    headers: &HeaderMap,
    mirror: Option<&str>,
) -> Result<Option<Credential>, &'static str> {
    use base64::Engine;
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(mirror.map(Credential::from_flag).transpose().ok().flatten());
    };
    let v = v.to_str().map_err(|_| "Authorization is not text")?;
    if let Some(b) = v.strip_prefix("Basic ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| "Authorization: Basic is not base64")?;
        let s = String::from_utf8(raw).map_err(|_| "Authorization: Basic is not UTF-8")?;
        let (user, password) = s.split_once(':').unwrap_or((&s, ""));
        return Ok(Some(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }));
    }
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Ok(Some(Credential::Bearer(t.trim().to_string())));
    }
    Err("Authorization: Basic or Bearer only")
}

/// The status a library error answers with.
fn status_of(e: &strata::Error) -> StatusCode {
    use strata::error::ErrorKind;
    if matches!(e, strata::Error::Denied(_)) {
        return StatusCode::FORBIDDEN;
    }
    match e.kind() {
        ErrorKind::Auth => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Usage => StatusCode::BAD_REQUEST,
        ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Input | ErrorKind::Digest => StatusCode::BAD_GATEWAY,
        ErrorKind::Output => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: &strata::Error) -> Response {
    let status = status_of(e);
    let mut r = error(status, &e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"strata\""),
        );
    }
    r
}

/// A request's registry options: the client's credentials and nothing else — shared with
/// that credential's recent requests (their clients and tokens), never with another's.
fn registry_options(app: &App, cred: Option<Credential>) -> Arc<strata::registry::Options> {
    app.clients
        .get(cred.as_ref(), || strata::registry::Options {
            lookup: strata::registry::credentials::Lookup {
                creds: cred.clone(),
                authfile: None,
                no_files: true,
            },
            tls_verify: app.cfg.tls_verify,
            cert_dir: app.cfg.cert_dir.clone(),
            plain_http: app.plain_http,
            transfers: Some(Arc::new(metrics::Upstream(app.metrics.clone()))),
            ..Default::default()
        })
}

/// Open `name:reference` (tag or digest) at the registry with the client's credentials.
fn open(
    app: &App,
    registry: &Arc<strata::registry::Options>,
    name: &str,
    reference: &str,
) -> strata::Result<Image> {
    let sep = if strata::digest::parse(reference).is_some() {
        '@'
    } else {
        ':'
    };
    let spec = format!("//{}/{name}{sep}{reference}", app.host);
    let opts = strata::transport::OpenOptions {
        store: app.store.clone(),
        registry: registry.clone(),
        ..Default::default()
    };
    use strata::transport::Transport;
    strata::image::registry::Registry.open(&spec, &format!("docker:{spec}"), &opts)
}

async fn answer(
    app: Arc<App>,
    t: Target,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    let _in_flight = InFlight::new(&app.metrics);
    let route = t.op.name();
    let r = match tokio::time::timeout(
        app.cfg.request_timeout,
        answer_inner(app.clone(), t, q, headers),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the result took longer than the request time limit",
        ),
    };
    count(&app, route, r.status().as_u16());
    r
}

async fn answer_inner(
    app: Arc<App>,
    t: Target,
    q: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    let cred = match client_credential(&headers, app.cfg.mirror_creds.as_deref()) {
        Ok(c) => c,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let registry = registry_options(&app, cred);
    // The access check and the cache key at once: the manifest, fetched with the client's
    // credentials for every request.
    let img = {
        let (app, registry, name, reference) = (
            app.clone(),
            registry.clone(),
            t.name.clone(),
            t.reference.clone(),
        );
        match tokio::task::spawn_blocking(move || open(&app, &registry, &name, &reference)).await {
            Ok(Ok(img)) => Arc::new(img),
            Ok(Err(e)) => return error_response(&e),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    };
    match t.op {
        Op::Squash => squash(app, img, &q, &headers, &t.name, registry).await,
        Op::Flatten => flatten(app, img, &headers).await,
        Op::Files | Op::Diff | Op::Waste => listing(app, img, t.op, &q, registry, &headers).await,
    }
}

fn key_of(parts: &[&str]) -> String {
    hex::encode(Sha256::digest(parts.join("\n").as_bytes()))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn busy() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "every worker is busy; try again",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn squash(
    app: Arc<App>,
    img: Arc<Image>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    name: &str,
    registry: Arc<strata::registry::Options>,
) -> Response {
    use strata::sink::Format;
    let format = match q.get("format").map(String::as_str) {
        None | Some("docker-archive") => Format::DockerArchive,
        Some("oci-archive") => Format::OciArchive,
        Some(f) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("format={f}: docker-archive or oci-archive"),
            );
        }
    };
    let n = img.layers.len();
    let parse = |k: &str| q.get(k).map(|v| v.parse::<usize>());
    let from = match (parse("from"), parse("last")) {
        (Some(_), Some(_)) => {
            return error(StatusCode::BAD_REQUEST, "from and last exclude each other");
        }
        (Some(Ok(f)), None) => f,
        (None, Some(Ok(0))) => return error(StatusCode::BAD_REQUEST, "last=0 squashes nothing"),
        (None, Some(Ok(l))) => n.saturating_sub(l),
        (None, None) => 0,
        _ => return error(StatusCode::BAD_REQUEST, "from and last are layer counts"),
    };
    let tags = match q.get("tag") {
        Some(t) => match strata::reference::normalize_tag(t) {
            Ok(t) => vec![t],
            Err(e) => return error_response(&e),
        },
        None => img.tags.clone(),
    };
    let manifest = img.manifest_digest.clone().unwrap_or_default();
    let fmt = if format == Format::DockerArchive {
        "docker-archive"
    } else {
        "oci-archive"
    };
    let key = key_of(&["squash", &manifest, &from.to_string(), fmt, &tags.join(",")]);
    let etag = format!("\"{key}\"");
    if not_modified(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    // With --publish the result is also an image in the registry, under a tag derived from
    // the key: a replica that has not computed it copies it from there (byte for byte the
    // same output) instead of squashing again.
    let published = app
        .cfg
        .publish
        .then(|| format!("{name}:strata-squash-{}", &key[..32]));
    let app2 = app.clone();
    let compute = move |path: &Path, cancel: &strata::control::Cancel| -> strata::Result<()> {
        let none = strata::registry::Options::default();
        let target = strata::sink::Target {
            format,
            path: Some(path),
            force: false,
            compression: format.default_compression(),
            level: None,
            measure_first: false,
            protect: &[],
            registry: &none,
        };
        if let Some(p) = &published {
            let (pname, ptag) = p.rsplit_once(':').unwrap_or((p, "latest"));
            match open(&app2, &registry, pname, ptag) {
                Ok(pimg) => {
                    // A docker-archive names the squashed layer from the squash's inputs, which
                    // the published image no longer shows: the source image tells.
                    let key = strata::squash::squash_key(&img, from)?;
                    strata::sink::write_image(&target, |w| {
                        if format != Format::DockerArchive {
                            return strata::copy::copy(&pimg, w, &tags, None, false, cancel);
                        }
                        let mut w = strata::squash::Republished {
                            inner: w,
                            key: key.clone(),
                            top: from,
                            cancel: cancel.clone(),
                        };
                        strata::copy::copy(&pimg, &mut w, &tags, None, false, cancel)
                    })?;
                    app2.metrics.published_hits.inc();
                    return Ok(());
                }
                Err(e) if e.kind() == strata::error::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("reading the published squash {p}: {e}"),
            }
        }
        let _ahead = fetch_ahead(&img, cancel);
        let opts = strata::squash::SquashOptions {
            from,
            created: None,
            verify: true,
            progress: None,
            cancel: cancel.clone(),
        };
        strata::sink::write_image(&target, |w| strata::squash::squash(&img, &opts, w, &tags))?;
        if let Some(p) = published {
            // In the background, from the result just written (opened now: the cache may
            // remove its path later, and an open file stays readable): this request is
            // answered from the file already, and nothing is merged twice.
            let shown = format!("the squash to publish as {p}");
            let result = if format == Format::DockerArchive {
                strata::image::docker_archive::open(path, None, &shown)
            } else {
                let platform = strata::image::platform::Platform::default();
                strata::image::oci_layout::open_archive(path, None, &platform, &shown)
            };
            match result {
                Ok(result) => {
                    std::thread::spawn(move || {
                        publish(&app2, &registry, &img, from, &result, format, &tags, &p)
                    });
                }
                Err(e) => tracing::warn!("publishing {p}: reading the result: {e}"),
            }
        }
        Ok(())
    };
    serve_result(&app, &key, &etag, "application/x-tar", None, compute).await
}

/// Push `result`, the squash of `img` from layer `from`, to the registry as `name:tag`
/// (kept layers mounted, the new one gzip'd): Docker's manifest for a docker-archive result,
/// OCI's for an oci-archive one.
#[allow(clippy::too_many_arguments)]
fn publish(
    app: &App,
    registry: &Arc<strata::registry::Options>,
    img: &Image,
    from: usize,
    result: &Image,
    format: strata::sink::Format,
    tags: &[String],
    published: &str,
) {
    use strata::sink::{Destination, Format};
    let push_format = if format == Format::DockerArchive {
        Format::DockerArchive
    } else {
        Format::Oci
    };
    let target = strata::sink::Target::push(push_format, registry);
    let spec = format!("//{}/{published}", app.host);
    let r = strata::sink::registry::Registry.write(&spec, &target, &mut |w| {
        strata::squash::republish(img, from, result, w, tags).map(|_| ())
    });
    match r {
        Ok(_) => {
            app.metrics.published.inc();
            tracing::info!("published {spec}");
        }
        Err(e) => tracing::warn!("publishing {spec}: {e}"),
    }
}

async fn flatten(app: Arc<App>, img: Arc<Image>, headers: &HeaderMap) -> Response {
    use strata::compression::Compression;
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let has = |e: &str| {
        accepts
            .split(',')
            .any(|a| a.split(';').next().unwrap_or("").trim() == e)
    };
    let (compression, encoding) = if has("zstd") {
        (Compression::Zstd, Some("zstd"))
    } else if has("gzip") {
        (Compression::Gzip, Some("gzip"))
    } else {
        (Compression::None, None)
    };
    let manifest = img.manifest_digest.clone().unwrap_or_default();
    let key = key_of(&["flatten", &manifest, encoding.unwrap_or("identity")]);
    let etag = format!("\"{key}\"");
    if not_modified(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let compute = move |path: &Path, cancel: &strata::control::Cancel| -> strata::Result<()> {
        let mut sink = strata::output::Sink::create(Some(path), false)?;
        {
            let mut w = sink.writer(compression, None)?;
            let _ahead = fetch_ahead(&img, cancel);
            let opts = strata::merge::MergeOptions {
                verify: true,
                progress: None,
                cancel: cancel.clone(),
            };
            strata::merge::flatten(&img.layers, &mut w, &opts)?;
            strata::output::finish(w)?;
        }
        sink.commit()
    };
    serve_result(&app, &key, &etag, "application/x-tar", encoding, compute).await
}

/// Blobs fetched at once ahead of a computation.
const FETCH_AHEAD: usize = 4;

/// Claim `img`'s streamed blobs and fetch them ahead: every request reading one of them (this
/// one, or another request for an image sharing layers) follows that one fetch.
fn fetch_ahead(img: &Image, cancel: &strata::control::Cancel) -> strata::blob::Prefetcher {
    let blobs = img.layers.iter().map(|l| l.blob.clone()).collect();
    strata::blob::Prefetcher::claim_all(blobs, FETCH_AHEAD, cancel)
}

/// Compute (or find) the result and stream its file with its exact length.
async fn serve_result(
    app: &Arc<App>,
    key: &str,
    etag: &str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    compute: impl FnOnce(&Path, &strata::control::Cancel) -> strata::Result<()> + Send + 'static,
) -> Response {
    let workers = app.workers.clone();
    let got = app
        .results
        .get(key, move || workers.try_acquire_owned().ok(), compute)
        .await;
    let (path, found) = match got {
        Ok(x) => x,
        Err(e) if matches!(*e, strata::Error::Cancelled) => return busy(),
        Err(e) => return error_response(&e),
    };
    match found {
        Found::Hit => app.metrics.cache_hits.inc(),
        Found::Computed => app.metrics.cache_misses.inc(),
        Found::Coalesced => app.metrics.coalesced.inc(),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("opening the result: {e}"),
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the result: {e}"),
            );
        }
    };
    let body = Body::from_stream(Counted {
        inner: tokio_util::io::ReaderStream::with_capacity(file, 256 << 10),
        metrics: app.metrics.clone(),
        _in_flight: InFlight::new(&app.metrics),
    });
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    r
}

/// A result file's bytes as they go out, counted; the request stays in flight until the
/// body ends or the client goes away (the stream is dropped).
struct Counted {
    inner: tokio_util::io::ReaderStream<tokio::fs::File>,
    metrics: Arc<Metrics>,
    _in_flight: InFlight,
}

impl futures_core::Stream for Counted {
    type Item = std::io::Result<axum::body::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let p = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(b))) = &p {
            self.metrics.bytes_sent.inc_by(b.len() as u64);
        }
        p
    }
}

/// A listing: the CLI's JSON document, computed once per (manifests, options) into a result
/// file like a squash (the layers' listings themselves come from the listing cache).
async fn listing(
    app: Arc<App>,
    img: Arc<Image>,
    op: Op,
    q: &HashMap<String, String>,
    registry: Arc<strata::registry::Options>,
    headers: &HeaderMap,
) -> Response {
    let only = match q.get("layer").map(|l| img.layer_index(l)).transpose() {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let top: usize = q.get("top").and_then(|t| t.parse().ok()).unwrap_or(20);
    // The image to compare with is opened with the client's credentials too.
    let against = match q.get("against").filter(|_| op == Op::Diff) {
        Some(other) => {
            let (app2, registry, other) = (app.clone(), registry.clone(), other.clone());
            let opened = tokio::task::spawn_blocking(move || {
                let (name, reference) = split_against(&other)?;
                open(&app2, &registry, &name, &reference)
            })
            .await;
            match opened {
                Ok(Ok(b)) => Some(Arc::new(b)),
                Ok(Err(e)) => return error_response(&e),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        None => None,
    };
    let manifest = img.manifest_digest.clone().unwrap_or_default();
    let other = against
        .as_ref()
        .and_then(|b| b.manifest_digest.clone())
        .unwrap_or_default();
    let layer = only.map(|o| o.to_string()).unwrap_or_default();
    // The reference is part of the document ("image"): part of the key too.
    let key = key_of(&[
        op.name(),
        &manifest,
        &img.reference,
        &layer,
        &top.to_string(),
        &other,
    ]);
    let etag = format!("\"{key}\"");
    if not_modified(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let app2 = app.clone();
    let compute = move |path: &Path, cancel: &strata::control::Cancel| -> strata::Result<()> {
        let cancel = cancel.clone();
        let cache = &app2.listings;
        // Only the layers whose listings are not cached are read.
        let unlisted: Vec<strata::blob::Blob> = img
            .layers
            .iter()
            .chain(against.iter().flat_map(|b| b.layers.iter()))
            .filter(|l| !cache.has(l))
            .map(|l| l.blob.clone())
            .collect();
        let _ahead = strata::blob::Prefetcher::claim_all(unlisted, FETCH_AHEAD, &cancel);
        let mut out = Vec::new();
        let read = strata::listing::Reading::new(true, cache, &cancel);
        let json = strata::listing::Style::Json;
        match (op, &against) {
            (Op::Files, _) => strata::listing::write_files(&img, only, &read, json, &mut out)?,
            (Op::Diff, Some(b)) => out = strata::listing::diff_images(&img, b, &read)?.pretty()?,
            (Op::Diff, None) => strata::listing::write_diff(&img, only, &read, json, &mut out)?,
            _ => out = strata::listing::waste(&img, top, &read)?.pretty()?,
        }
        let mut sink = strata::output::Sink::create(Some(path), false)?;
        {
            let mut w = sink.writer(strata::compression::Compression::None, None)?;
            std::io::Write::write_all(&mut w, &out)
                .map_err(|e| strata::Error::output("writing the listing", e))?;
            strata::output::finish(w)?;
        }
        sink.commit()
    };
    serve_result(&app, &key, &etag, "application/json", None, compute).await
}

/// `against=<name2>:<ref2>` (or `<name2>@<digest>`).
fn split_against(s: &str) -> strata::Result<(String, String)> {
    let bad = || strata::Error::Usage(format!("against={s}: expected NAME:TAG or NAME@DIGEST"));
    if let Some((n, d)) = s.split_once('@') {
        return Ok((n.to_string(), d.to_string()));
    }
    let (n, t) = s.rsplit_once(':').ok_or_else(bad)?;
    if n.is_empty() || t.is_empty() || t.contains('/') {
        return Err(bad());
    }
    Ok((n.to_string(), t.to_string()))
}

/// The CLI's `--json` rendering (pretty, with a final newline), for any report.
mod erased {
    pub trait Json {
        fn pretty(&self) -> strata::Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> strata::Result<Vec<u8>> {
            let mut v = serde_json::to_vec_pretty(self)
                .map_err(|e| strata::Error::Format(format!("rendering JSON: {e}")))?;
            v.push(b'\n');
            Ok(v)
        }
    }
}
