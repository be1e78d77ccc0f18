//! `docker-daemon:NAME[:TAG]` and `docker-daemon:sha256:ID` — images in a running Docker (or
//! podman) engine, over its Engine API at `$DOCKER_HOST` (`unix://PATH`, default
//! `/var/run/docker.sock`; `tcp://HOST:PORT`, over TLS with client certificates when
//! `DOCKER_TLS_VERIFY` is set). Both directions:
//!
//! - **Source.** The image's metadata comes from `GET /images/{name}/json` (its id — the config
//!   digest — and its layers' diff_ids); its content from `GET /images/{name}/get`, a `docker
//!   save` tar streamed once. `docker save` does not send layers in stacking order, and the
//!   merge reads the top layer first, so each layer member is spooled into the [`BlobStore`] as
//!   it passes, hashed on the way and kept under its digest (its diff_id: the layers are
//!   uncompressed); the small members (config, manifest) stay in memory. A second run whose
//!   config and layers are all in the store does not ask the daemon for the content at all.
//! - **Destination.** `-o docker-daemon:NAME[:TAG]` streams a docker-archive as the chunked body
//!   of `POST /images/load` — no temp file of the output — and reads the daemon's JSON message
//!   stream after it: the endpoint answers 200 even when the load fails, with an `errorDetail`.

use super::{Image, Layer, diff_ids, parse_json};
use crate::blob::{Blob, BlobStore};
use crate::error::{Error, Result};
use crate::sink::{Destination, Format, ImageWriter, Tagged, Target, write_image_to};
use crate::tarstream::{EntryType, TarReader};
use crate::transport::{OpenOptions, Transport};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

/// The highest Engine API version strata speaks (Docker 20.10); the daemon's, if lower, wins.
const API_MAX: (u32, u32) = (1, 41);
/// Members of a `docker save` stream up to this size are kept in memory; larger ones are
/// spooled into the blob store.
const SMALL_MEMBER: u64 = 1 << 20;
/// All small members together (configs, manifests, repositories) held at most; layer members
/// go to the blob store whatever their size.
const SMALL_TOTAL: u64 = 64 << 20;
/// Response headers and JSON message lines read at most.
const MAX_LINE: usize = 1 << 20;

/// The `docker-daemon:` transport.
pub struct DockerDaemon;

impl Transport for DockerDaemon {
    fn name(&self) -> &'static str {
        "docker-daemon"
    }

    fn open(&self, spec: &str, shown: &str, opts: &OpenOptions) -> Result<Image> {
        let engine = Engine::from_env()?;
        let name = image_name(spec)?;
        engine.open_image(&name, shown, &opts.store)
    }
}

impl Destination for DockerDaemon {
    fn name(&self) -> &'static str {
        "docker-daemon"
    }

    fn format(&self) -> Format {
        Format::DockerArchive
    }

    fn write(
        &self,
        spec: &str,
        t: &Target<'_>,
        go: &mut dyn FnMut(&mut dyn ImageWriter) -> Result<()>,
    ) -> Result<Option<String>> {
        let tag = image_name(spec)?;
        if tag.starts_with("sha256:") {
            return Err(Error::Usage(format!(
                "docker-daemon:{spec}: an image is loaded under a name (NAME:TAG), not an id"
            )));
        }
        let engine = Engine::from_env()?;
        engine.load(&tag, t, go)?;
        Ok(None)
    }
}

/// `NAME[:TAG]` with Docker's default tag, or `sha256:ID`.
fn image_name(spec: &str) -> Result<String> {
    if spec.is_empty() {
        return Err(Error::Usage(
            "docker-daemon: needs an image: docker-daemon:NAME[:TAG] or docker-daemon:sha256:ID"
                .into(),
        ));
    }
    if let Some(hex) = spec.strip_prefix("sha256:") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "docker-daemon:{spec}: an image id is sha256: and 64 hex digits"
            )));
        }
        return Ok(spec.to_string());
    }
    // A tag is what follows the last colon after the last slash (a registry port is not one).
    let last = spec.rsplit('/').next().unwrap_or(spec);
    if spec.contains('@') || last.contains(':') {
        Ok(spec.to_string())
    } else {
        Ok(format!("{spec}:latest"))
    }
}

/// Where the daemon listens.
#[derive(Clone, Debug)]
enum Host {
    Unix(PathBuf),
    Tcp(String),
    /// `tcp://` with `DOCKER_TLS_VERIFY`: TLS, the daemon checked against `ca.pem` and this
    /// client known by `cert.pem`/`key.pem`, all in the certificate directory.
    Tls {
        addr: String,
        certs: PathBuf,
    },
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) | Host::Tls { addr: a, .. } => write!(f, "tcp://{a}"),
        }
    }
}

/// A connection to the daemon.
enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl Conn {
    /// Close both directions (the other side sees the request end, unfinished).
    fn shutdown(&mut self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tls(s) => s.get_ref().shutdown(std::net::Shutdown::Both),
        };
    }
}

/// Whether a body error is the connection's (an output error whose cause is the socket),
/// rather than the image's.
fn socket_failed(e: &Error) -> bool {
    matches!(e, Error::Output { source, .. } if matches!(
        source.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    ))
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A response: status, headers (names lowercased), and the body as a stream.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Box<dyn BufRead + Send>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (for error messages), at most `MAX_LINE` bytes.
    fn text(self) -> String {
        let mut s = String::new();
        let _ = self.body.take(MAX_LINE as u64).read_to_string(&mut s);
        s
    }

    /// The body as text, at most `MAX_LINE` bytes, a read error being an error (a verdict
    /// read from a cut answer is no verdict).
    fn text_checked(self) -> io::Result<String> {
        let mut v = Vec::new();
        self.body.take(MAX_LINE as u64).read_to_end(&mut v)?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// The daemon's error message: `{"message": …}` in the body, else the body.
    fn message(self) -> String {
        let status = self.status;
        let text = self.text();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        if msg.is_empty() {
            format!("HTTP {status}")
        } else {
            msg
        }
    }
}

/// Writes a request body (called once, into the chunked stream).
type BodyWriter<'a> = dyn FnMut(&mut dyn Write) -> Result<()> + 'a;

/// A client of one daemon's Engine API.
struct Engine {
    host: Host,
    /// The path prefix of the negotiated API version (`/v1.41`).
    prefix: String,
}

impl Engine {
    /// The daemon `$DOCKER_HOST` names, its API version negotiated with `/_ping`.
    fn from_env() -> Result<Engine> {
        let host = match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => parse_host(&h)?,
            _ => Host::Unix(PathBuf::from("/var/run/docker.sock")),
        };
        let host = match host {
            Host::Tcp(addr) if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) => {
                let certs = std::env::var_os("DOCKER_CERT_PATH")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
                    .unwrap_or_else(|| PathBuf::from(".docker"));
                Host::Tls { addr, certs }
            }
            h => h,
        };
        let mut e = Engine {
            host,
            prefix: String::new(),
        };
        let r = e.request("GET", "/_ping", None)?;
        if r.status != 200 {
            let status = r.status;
            return Err(Error::Format(format!(
                "the Docker daemon at {}: /_ping answered {status}: {}",
                e.host,
                r.message()
            )));
        }
        let theirs = r.header("api-version").and_then(parse_version);
        let (maj, min) = match theirs {
            Some(v) if v < API_MAX => v,
            _ => API_MAX,
        };
        e.prefix = format!("/v{maj}.{min}");
        Ok(e)
    }

    fn connect(&self) -> Result<Conn> {
        let r = match &self.host {
            Host::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
            Host::Tcp(a) => std::net::TcpStream::connect(a).map(Conn::Tcp),
            Host::Tls { addr, certs } => {
                let config = tls_config(certs)?;
                let name = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(
                    name.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                )
                .map_err(|e| Error::Usage(format!("DOCKER_HOST={}: {e}", self.host)))?;
                std::net::TcpStream::connect(addr).and_then(|tcp| {
                    let c =
                        rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
                    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(c, tcp))))
                })
            }
        };
        r.map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => Error::Auth(format!(
                "cannot reach the Docker daemon at {}: permission denied on the socket (is this user in the docker group?)",
                self.host
            )),
            _ => Error::io(format!("cannot reach the Docker daemon at {}", self.host), e),
        })
    }

    /// One request (`Connection: close`); `body` streams a chunked request body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&mut BodyWriter<'_>>,
    ) -> Result<Response> {
        let mut conn = self.connect()?;
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: strata/{}\r\nConnection: close\r\n{}\r\n",
            self.prefix,
            env!("CARGO_PKG_VERSION"),
            if body.is_some() {
                "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n"
            } else {
                ""
            }
        );
        let sent = conn.write_all(head.as_bytes());
        let mut write_error = sent.err().map(|e| Error::output(self.during(path), e));
        if write_error.is_none()
            && let Some(body) = body
        {
            let mut chunked = Chunked {
                out: BufWriter::with_capacity(256 * 1024, &mut conn),
            };
            let sent = match body(&mut chunked) {
                Ok(()) => chunked
                    .finish()
                    .map_err(|e| Error::output(self.during(path), e)),
                // The socket failed: the daemon may have closed it to say why — read that.
                Err(e) if socket_failed(&e) => Err(e),
                // The image could not be produced: the daemon waits for more that will never
                // come. Hang up (it discards the partial load) and say what failed.
                Err(e) => {
                    drop(chunked);
                    conn.shutdown();
                    return Err(e);
                }
            };
            if let Err(e) = sent {
                write_error = Some(e);
            }
        }
        match read_response(conn) {
            Ok(r) if write_error.is_none() || r.status != 200 => Ok(r),
            Ok(r) => {
                // 200, but the body was cut: the message stream may still tell.
                let text = r.text();
                match load_error(&text) {
                    Some(m) => Err(daemon_refused(m)),
                    None => Err(write_error.unwrap_or(Error::Stopped)),
                }
            }
            Err(e) => Err(write_error.unwrap_or(Error::io(self.during(path), e))),
        }
    }

    fn during(&self, path: &str) -> String {
        format!("the Docker daemon at {}: {path}", self.host)
    }

    /// The image's inspect document, or a not-found error.
    fn inspect(&self, name: &str) -> Result<Value> {
        let path = format!("/images/{}/json", escape(name));
        let r = self.request("GET", &path, None)?;
        match r.status {
            200 => parse_json(r.text().as_bytes(), &format!("{path} of {}", self.host)),
            404 => Err(Error::NotFound(format!(
                "docker-daemon:{name}: no such image in the daemon at {}",
                self.host
            ))),
            s => Err(Error::Format(format!(
                "the Docker daemon at {}: {path} answered {s}: {}",
                self.host,
                r.message()
            ))),
        }
    }

    fn open_image(&self, name: &str, shown: &str, store: &BlobStore) -> Result<Image> {
        let info = self.inspect(name)?;
        let id = info
            .get("Id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Format(format!("{shown}: the daemon gave no image Id")))?
            .to_string();
        let layers: Vec<String> = super::strings(info.pointer("/RootFS/Layers"));
        let tags: Vec<String> = super::strings(info.get("RepoTags"));
        // Everything already kept from an earlier run: no need for the content.
        let kept = store.get(&id).and_then(|c| {
            let regions: Option<Vec<_>> = layers.iter().map(|d| store.get(d)).collect();
            Some((c, regions?))
        });
        let (config_raw, regions) = match kept {
            Some((c, regions)) => {
                let raw = c
                    .read_all()
                    .map_err(|e| Error::io(format!("{shown}: reading the kept config"), e))?;
                (raw, regions)
            }
            None => self.save(name, shown, &id, store)?,
        };
        let config = parse_json(&config_raw, &format!("{shown}: config"))?;
        let ids = diff_ids(&config);
        if ids.len() != regions.len() {
            return Err(Error::Format(format!(
                "{shown}: config lists {} diff_ids but the image has {} layers",
                ids.len(),
                regions.len()
            )));
        }
        let layers = ids
            .into_iter()
            .zip(regions)
            .enumerate()
            .map(|(i, (diff_id, region))| Layer {
                index: i,
                location: format!("{shown}: layer {diff_id}"),
                blob: Blob::local(region),
                media_type: Some("application/vnd.docker.image.rootfs.diff.tar".into()),
                digest: Some(diff_id.clone()),
                diff_id: Some(diff_id),
                urls: Vec::new(),
            })
            .collect();
        Ok(Image {
            reference: shown.to_string(),
            transport: "docker-daemon",
            tags: match name.starts_with("sha256:") {
                true => tags,
                false => vec![name.to_string()],
            },
            config_raw,
            config,
            config_digest: Some(id),
            manifest_digest: None,
            manifest_raw: None,
            layers,
            _spool: None,
        })
    }

    /// Stream `docker save` of the image once: layers into the store under their digest,
    /// small members in memory; then find the config and the layers by `manifest.json`.
    fn save(
        &self,
        name: &str,
        shown: &str,
        id: &str,
        store: &BlobStore,
    ) -> Result<(Vec<u8>, Vec<crate::image::FileRegion>)> {
        let path = format!("/images/{}/get", escape(name));
        let r = self.request("GET", &path, None)?;
        if r.status != 200 {
            return Err(Error::Format(format!(
                "the Docker daemon at {}: {}",
                self.host,
                {
                    let status = r.status;
                    format!("{path} answered {status}: {}", r.message())
                }
            )));
        }
        let bad = |e: crate::tarstream::TarError| Error::Layer {
            layer: format!("{shown}: the docker save stream"),
            message: e.to_string(),
        };
        let mut small: HashMap<String, Vec<u8>> = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let mut small_total = 0u64;
        let mut spooled: HashMap<String, (String, crate::image::FileRegion)> = HashMap::new();
        let mut rd = TarReader::new(r.body);
        while let Some(h) = rd.next_entry().map_err(bad)? {
            let member = crate::pathname::normalize(h.path)
                .map(|p| String::from_utf8_lossy(crate::pathname::trim_dir(&p)).into_owned())
                .unwrap_or_else(|_| String::from_utf8_lossy(h.path).into_owned());
            if matches!(h.kind, EntryType::Symlink | EntryType::HardLink) {
                // Docker before 25 writes a layer twice in one image (the same diff_id) as a
                // symlink `<id>/layer.tar -> ../<other>/layer.tar`: resolved after the stream.
                let dir = crate::pathname::split_parent(member.as_bytes()).0.to_vec();
                let mut target = if h.kind == EntryType::Symlink && !dir.is_empty() {
                    let mut t = dir;
                    t.push(b'/');
                    t
                } else {
                    Vec::new()
                };
                target.extend_from_slice(h.link);
                if let Ok(t) = crate::pathname::normalize(&target) {
                    links.push((member, String::from_utf8_lossy(&t).into_owned()));
                }
                continue;
            }
            if h.kind != EntryType::Regular {
                continue;
            }
            // Layers go to the store whatever their size; only small documents stay in memory.
            let layer_like = member.ends_with(".tar") || member.starts_with("blobs/");
            if h.size <= SMALL_MEMBER && !layer_like {
                small_total = small_total.saturating_add(h.size);
                if small_total > SMALL_TOTAL {
                    return Err(Error::Format(format!(
                        "{shown}: the docker save stream has more than {SMALL_TOTAL} bytes of small members"
                    )));
                }
                let mut v = Vec::with_capacity(h.size as usize);
                rd.copy_data(&mut v).map_err(bad)?;
                small.insert(member, v);
            } else {
                let (digest, region) = store
                    .put_with(&mut |w| {
                        rd.copy_data(w)
                            .map_err(|e| io::Error::other(format!("the docker save stream: {e}")))
                    })
                    .map_err(|e| Error::io(format!("{shown}: spooling {member}"), e))?;
                spooled.insert(member, (digest, region));
            }
        }
        for (name, target) in links {
            if let Some(s) = spooled.get(&target).cloned() {
                spooled.insert(name, s);
            } else if let Some(b) = small.get(&target).cloned() {
                small.insert(name, b);
            }
        }
        let manifest = small.get("manifest.json").ok_or_else(|| {
            Error::Format(format!(
                "{shown}: the docker save stream has no manifest.json"
            ))
        })?;
        let manifest = parse_json(manifest, &format!("{shown}: manifest.json"))?;
        let item = manifest
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::Format(format!("{shown}: manifest.json lists no image")))?;
        let config_name = item
            .get("Config")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Format(format!("{shown}: manifest.json has no Config")))?;
        let config_raw = match small.remove(config_name) {
            Some(c) => c,
            None => match spooled.get(config_name) {
                Some((_, region)) => region
                    .read_all()
                    .map_err(|e| Error::io(format!("{shown}: reading the config"), e))?,
                None => {
                    return Err(Error::Format(format!(
                        "{shown}: the docker save stream lacks its config {config_name}"
                    )));
                }
            },
        };
        super::verify_blob(&config_raw, id, &format!("{shown}: config"))?;
        let mut regions = Vec::new();
        let names = item
            .get("Layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for n in names {
            let n = n.as_str().unwrap_or_default();
            let region = match spooled.get(n) {
                Some((_, region)) => region.clone(),
                None => {
                    let bytes = small.get(n).ok_or_else(|| {
                        Error::Format(format!("{shown}: the docker save stream lacks layer {n}"))
                    })?;
                    store
                        .put(&mut &bytes[..])
                        .map_err(|e| Error::io(format!("{shown}: spooling {n}"), e))?
                        .1
                }
            };
            regions.push(region);
        }
        // Kept for the next run, which then needs only the metadata.
        let _ = store.put(&mut &config_raw[..]);
        Ok((config_raw, regions))
    }

    /// `POST /images/load` of the docker-archive `go` writes, tagged `tag`.
    fn load(
        &self,
        tag: &str,
        t: &Target<'_>,
        go: &mut dyn FnMut(&mut dyn ImageWriter) -> Result<()>,
    ) -> Result<()> {
        let t = Target {
            format: Format::DockerArchive,
            path: None,
            ..*t
        };
        let mut body = |w: &mut dyn Write| {
            write_image_to(&t, w, |iw| {
                let mut tagged = Tagged {
                    inner: iw,
                    tag: tag.to_string(),
                };
                go(&mut tagged)
            })
        };
        let r = self.request("POST", "/images/load", Some(&mut body))?;
        if r.status != 200 {
            return Err(daemon_refused(r.message()));
        }
        let text = r
            .text_checked()
            .map_err(|e| Error::output("the Docker daemon's answer to the load was cut", e))?;
        if let Some(m) = load_error(&text) {
            return Err(daemon_refused(m));
        }
        // Success is said, not assumed: Docker and podman both stream "Loaded image…".
        if !text.contains("Loaded image") {
            return Err(daemon_refused(format!(
                "its answer does not say it loaded the image: {:?}",
                text.trim()
            )));
        }
        for line in text.lines() {
            if let Some(s) = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("stream").and_then(Value::as_str).map(str::to_string))
            {
                tracing::info!("docker-daemon: {}", s.trim());
            }
        }
        Ok(())
    }
}

/// The error a load message stream carries (`errorDetail.message`, else `error`).
fn load_error(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        v.pointer("/errorDetail/message")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn daemon_refused(message: String) -> Error {
    Error::output(
        "the Docker daemon did not load the image",
        io::Error::other(message),
    )
}

/// The TLS client of `DOCKER_CERT_PATH`: the daemon must present a certificate `ca.pem`
/// signed, and strata shows `cert.pem` with `key.pem` — Docker's layout of that directory.
fn tls_config(certs: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file = |name: &str| certs.join(name);
    let bad = |name: &str, e: rustls::pki_types::pem::Error| {
        Error::Usage(format!("DOCKER_CERT_PATH {}: {name}: {e}", certs.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(file("ca.pem")).map_err(|e| bad("ca.pem", e))? {
        roots
            .add(c.map_err(|e| bad("ca.pem", e))?)
            .map_err(|e| Error::Usage(format!("DOCKER_CERT_PATH: ca.pem: {e}")))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file("cert.pem"))
        .map_err(|e| bad("cert.pem", e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("cert.pem", e))?;
    let key = PrivateKeyDer::from_pem_file(file("key.pem")).map_err(|e| bad("key.pem", e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Usage(format!("DOCKER_CERT_PATH {}: {e}", certs.display())))?;
    Ok(std::sync::Arc::new(config))
}

/// `unix:///path` or `tcp://host:port`.
fn parse_host(h: &str) -> Result<Host> {
    if let Some(p) = h.strip_prefix("unix://") {
        return Ok(Host::Unix(PathBuf::from(p)));
    }
    if let Some(a) = h.strip_prefix("tcp://") {
        let a = a.trim_end_matches('/');
        return Ok(Host::Tcp(if a.contains(':') {
            a.to_string()
        } else {
            format!("{a}:2375")
        }));
    }
    Err(Error::Usage(format!(
        "DOCKER_HOST={h}: expected unix://PATH or tcp://HOST:PORT"
    )))
}

/// `1.41` → (1, 41).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A path segment: unreserved characters and the ones image names use, the rest
/// percent-encoded.
fn escape(name: &str) -> String {
    let mut s = String::new();
    for b in name.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b'@' => s.push(b as char),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// A daemon's answer given as bytes: its status, and its body read to the end (at most `cap`
/// bytes kept), or the error a malformed or cut answer is. What the `engine_answer` fuzz
/// target drives; not an API.
#[doc(hidden)]
pub fn read_answer(bytes: Vec<u8>, cap: u64) -> io::Result<(u16, Vec<u8>)> {
    let r = read_response(io::Cursor::new(bytes))?;
    let status = r.status;
    let mut body = Vec::new();
    r.body.take(cap).read_to_end(&mut body)?;
    Ok((status, body))
}

/// The error `docker load`'s message stream reports, if any (for the fuzz target).
#[doc(hidden)]
pub fn load_stream_error(text: &str) -> Option<String> {
    load_error(text)
}

/// Read a response's status line and headers; the body follows, chunked or not.
fn read_response<R: Read + Send + 'static>(conn: R) -> io::Result<Response> {
    let mut r = BufReader::with_capacity(64 * 1024, conn);
    let mut head = Vec::new();
    loop {
        let n = r
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection before answering",
            ));
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            break;
        }
        if head.len() > MAX_LINE {
            return Err(io::Error::other("response headers too long"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(io::Error::other("malformed HTTP response from the daemon")),
    }
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body: Box<dyn BufRead + Send> = if chunked {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            Unchunked {
                inner: r,
                left: 0,
                done: false,
            },
        ))
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Box::new(BufReader::new(r.take(len)))
    } else {
        Box::new(r)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A chunked request body: each write is one chunk.
struct Chunked<W: Write> {
    out: W,
}

impl<W: Write> Chunked<W> {
    fn finish(mut self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.out, "{:x}\r\n", buf.len())?;
        self.out.write_all(buf)?;
        self.out.write_all(b"\r\n")?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A chunked response body, decoded.
struct Unchunked<R: BufRead> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    done: bool,
}

impl<R: BufRead> Unchunked<R> {
    fn line(&mut self) -> io::Result<String> {
        let mut l = Vec::new();
        self.inner.by_ref().take(4096).read_until(b'\n', &mut l)?;
        if !l.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon's response was cut inside a chunk header",
            ));
        }
        Ok(String::from_utf8_lossy(&l).trim().to_string())
    }
}

impl<R: BufRead> Read for Unchunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::other(format!("bad chunk size {size:?} from the daemon"))
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon's response was cut inside a chunk",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let end = self.line()?;
            if !end.is_empty() {
                return Err(io::Error::other(
                    "a chunk of the daemon's response ran long",
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_docker_s_default_tag() {
        assert_eq!(image_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(image_name("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            image_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            image_name("localhost:5000/app:v2").unwrap(),
            "localhost:5000/app:v2"
        );
        let id = format!("sha256:{}", "a".repeat(64));
        assert_eq!(image_name(&id).unwrap(), id);
        assert!(image_name("sha256:abc").is_err());
        assert!(image_name("").is_err());
    }

    #[test]
    fn hosts_and_versions_parse() {
        assert!(
            matches!(parse_host("unix:///run/d.sock").unwrap(), Host::Unix(p) if p == Path::new("/run/d.sock"))
        );
        assert!(
            matches!(parse_host("tcp://10.0.0.1").unwrap(), Host::Tcp(a) if a == "10.0.0.1:2375")
        );
        assert!(parse_host("ssh://x").is_err());
        assert_eq!(parse_version("1.43"), Some((1, 43)));
        assert!(parse_version("1.43") > Some(API_MAX));
        assert_eq!(escape("a b/c:1"), "a%20b/c:1");
    }

    #[test]
    fn chunked_bodies_round_trip() {
        let mut out = Vec::new();
        {
            let mut c = Chunked { out: &mut out };
            c.write_all(b"hello ").unwrap();
            c.write_all(b"world").unwrap();
            c.finish().unwrap();
        }
        let mut r = Unchunked {
            inner: &out[..],
            left: 0,
            done: false,
        };
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let mut cut = Unchunked {
            inner: &out[..8],
            left: 0,
            done: false,
        };
        assert!(cut.read_to_string(&mut String::new()).is_err());
    }

    #[test]
    fn load_errors_are_found_in_the_message_stream() {
        let text = "{\"stream\":\"Loading layer\"}\n{\"errorDetail\":{\"message\":\"no space left\"},\"error\":\"no space left\"}\n";
        assert_eq!(load_error(text).as_deref(), Some("no space left"));
        assert_eq!(load_error("{\"stream\":\"Loaded image: a:1\\n\"}"), None);
    }
}
