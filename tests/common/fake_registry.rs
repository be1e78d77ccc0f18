//! A small registry inside the tests, for the faults a real one does not make on demand:
//! tokens that expire, 429s, streams cut mid-blob, redirects to another host, wrong bytes,
//! stalls. It speaks enough of the distribution API for strata's pulls and pushes, and logs
//! every request (method, path, Authorization, Range) for the tests to assert on.

use base64::Engine;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
    pub status: u16,
}

#[derive(Default)]
pub struct Faults {
    /// Bearer auth: tokens from `/token` (Basic `user:pass` required there when set).
    pub bearer: Option<Option<(String, String)>>,
    /// Each token is good for this many registry requests, then 401 (an expiry mid-transfer).
    pub token_uses: Option<usize>,
    /// Answer the first N blob GETs with 429 and `Retry-After: 1`.
    pub too_many: usize,
    /// Cut the first GET of every blob after this many bytes (the headers promise all).
    pub cut_at: Option<usize>,
    /// Redirect blob GETs to this base URL (`http://HOST:PORT`), which serves `/b/DIGEST`.
    pub redirect_to: Option<String>,
    /// Serve blobs with their last byte flipped.
    pub corrupt: bool,
    /// Sleep this long before answering a blob GET.
    pub stall: Option<Duration>,
    /// Answer uploads' PATCH with 500 once, after taking half of the chunk.
    pub fail_patch_once: bool,
    /// The refresh token `/token` accepts in an OAuth2 POST (an identity token).
    pub refresh_token: Option<String>,
    /// Send blob bodies 16 KiB at a time, this long apart (a slow registry).
    pub trickle: Option<Duration>,
    /// Answer 403 (DENIED) for everything under this repository.
    pub forbid: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub manifests: HashMap<(String, String), (String, Vec<u8>)>,
    pub blobs: HashMap<String, Vec<u8>>,
    /// Which repository has which blob (what `HEAD` and mounts go by, as in distribution).
    pub links: std::collections::HashSet<(String, String)>,
    uploads: HashMap<String, Vec<u8>>,
    pub log: Vec<Logged>,
    pub faults: Faults,
    tokens: HashMap<String, usize>,
    next: usize,
    cut_done: std::collections::HashSet<String>,
}

pub struct Fake {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

pub fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", super::sha256_hex(b))
}

impl Fake {
    pub fn start(faults: Faults) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            faults,
            ..Default::default()
        }));
        let st = state.clone();
        let me = addr.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                let me = me.clone();
                std::thread::spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve(conn, &st, &me)
                    }));
                    if r.is_err() {
                        eprintln!("FAKE REGISTRY: a connection handler panicked");
                    }
                });
            }
        });
        Fake { addr, state }
    }

    /// Store an image: layer blobs, a config, a manifest of `media_type` under `repo:tag`.
    /// Returns the manifest's digest.
    pub fn put_image(
        &self,
        repo: &str,
        tag: &str,
        config: &[u8],
        layers: &[Vec<u8>],
        docker: bool,
    ) -> String {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mt, cfg_mt, layer_mt) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": layer_mt, "digest": digest_of(l), "size": l.len()}))
            .collect();
        for l in layers {
            st.blobs.insert(digest_of(l), l.clone());
            st.links.insert((repo.into(), digest_of(l)));
        }
        st.blobs.insert(digest_of(config), config.to_vec());
        st.links.insert((repo.into(), digest_of(config)));
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cfg_mt, "digest": digest_of(config), "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let d = digest_of(&m);
        st.manifests
            .insert((repo.into(), tag.into()), (mt.into(), m.clone()));
        st.manifests
            .insert((repo.into(), d.clone()), (mt.into(), m));
        d
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .clone()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.method == method && l.path.starts_with(path_prefix))
            .count()
    }
}

struct Req {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_req(r: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        target,
        headers,
        body,
    })
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut: Option<usize>,
}

fn resp(status: u16) -> Resp {
    Resp {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        cut: None,
    }
}

impl Resp {
    fn h(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn body(mut self, b: Vec<u8>) -> Self {
        self.body = b;
        self
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>, me: &str) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    // A TLS hello on this plain-HTTP server: answer as real servers do (Go's says 400).
    if r.fill_buf().is_ok_and(|b| b.first() == Some(&0x16)) {
        let _ = w.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        );
        return;
    }
    while let Some(req) = read_req(&mut r) {
        let stall = {
            let s = st.lock().unwrap_or_else(|p| p.into_inner());
            s.faults
                .stall
                .filter(|_| req.method == "GET" && req.target.contains("/blobs/sha256"))
        };
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        let out = handle(&req, st, me);
        {
            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
            s.log.push(Logged {
                method: req.method.clone(),
                path: req.target.clone(),
                authorization: req.headers.get("authorization").cloned(),
                range: req.headers.get("range").cloned(),
                status: out.status,
            });
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            out.status,
            out.body.len()
        );
        for (k, v) in &out.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        if req.method == "HEAD" {
            continue;
        }
        match out.cut {
            Some(n) => {
                let _ = w.write_all(&out.body[..n.min(out.body.len())]);
                let _ = w.flush();
                let _ = w.shutdown(std::net::Shutdown::Both);
                return;
            }
            None => {
                let trickle = st
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .faults
                    .trickle
                    .filter(|_| req.target.contains("/blobs/sha256"));
                match trickle {
                    Some(pause) => {
                        for piece in out.body.chunks(16 << 10) {
                            if w.write_all(piece).and_then(|()| w.flush()).is_err() {
                                return;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                    None => {
                        if w.write_all(&out.body).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn unauthorized(me: &str, scope: &str) -> Resp {
    resp(401).h(
        "WWW-Authenticate",
        format!("Bearer realm=\"http://{me}/token\",service=\"fake\",scope=\"{scope}\""),
    )
}

fn handle(req: &Req, st: &Mutex<State>, me: &str) -> Resp {
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    // The redirect target: no auth of its own, and it must never be sent any.
    if let Some(d) = path.strip_prefix("/b/") {
        return match s.blobs.get(d) {
            Some(b) => resp(200).body(b.clone()),
            None => resp(404),
        };
    }
    if path == "/token" {
        let Some(need) = s.faults.bearer.clone() else {
            return resp(404);
        };
        // OAuth2: a refresh token posted as a form (distribution's oauth.md).
        if req.method == "POST" {
            let form = String::from_utf8_lossy(&req.body).to_string();
            let refresh = form
                .split('&')
                .find_map(|kv| kv.strip_prefix("refresh_token="))
                .unwrap_or("")
                .to_string();
            let grant = form.contains("grant_type=refresh_token");
            if !grant || s.faults.refresh_token.as_deref() != Some(refresh.as_str()) {
                return resp(401);
            }
            s.next += 1;
            let t = format!("tok{}", s.next);
            s.tokens.insert(t.clone(), 0);
            return resp(200).body(
                serde_json::to_vec(&serde_json::json!({"access_token": t, "expires_in": 300, "refresh_token": refresh}))
                    .unwrap(),
            );
        }
        if let Some((u, p)) = need {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if req.headers.get("authorization") != Some(&want) {
                return resp(401);
            }
        }
        s.next += 1;
        let t = format!("tok{}", s.next);
        s.tokens.insert(t.clone(), 0);
        return resp(200).body(
            serde_json::to_vec(&serde_json::json!({"token": t, "expires_in": 300})).unwrap(),
        );
    }
    if s.faults.bearer.is_some() {
        let scope = scope_of(path, &req.method);
        let tok = req
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_string);
        let uses = s.faults.token_uses;
        match tok.and_then(|t| s.tokens.get_mut(&t).map(|n| (t.clone(), n))) {
            Some((_, n)) => {
                *n += 1;
                if uses.is_some_and(|u| *n > u) {
                    return unauthorized(me, &scope);
                }
            }
            None => return unauthorized(me, &scope),
        }
    }
    if path == "/v2/" {
        return resp(200);
    }
    if let Some(repo) = &s.faults.forbid
        && path.starts_with(&format!("/v2/{repo}/"))
    {
        return resp(403).body(
            br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#.to_vec(),
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return resp(404);
    };
    if let Some(i) = rest.find("/manifests/") {
        let (repo, reference) = (&rest[..i], &rest[i + "/manifests/".len()..]);
        if req.method == "PUT" {
            let mt = req.headers.get("content-type").cloned().unwrap_or_default();
            let d = digest_of(&req.body);
            s.manifests.insert(
                (repo.into(), reference.into()),
                (mt.clone(), req.body.clone()),
            );
            s.manifests
                .insert((repo.into(), d.clone()), (mt, req.body.clone()));
            return resp(201).h("Docker-Content-Digest", d);
        }
        return match s.manifests.get(&(repo.to_string(), reference.to_string())) {
            Some((mt, b)) => resp(200)
                .h("Content-Type", mt.clone())
                .h("Docker-Content-Digest", digest_of(b))
                .body(b.clone()),
            None => resp(404).body(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_vec(),
            ),
        };
    }
    if let Some(i) = rest.find("/blobs/uploads/") {
        let id = &rest[i + "/blobs/uploads/".len()..];
        let repo = &rest[..i];
        match req.method.as_str() {
            "POST" => {
                let param = |k: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(k))
                        .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
                };
                if let (Some(d), Some(from)) = (param("mount="), param("from="))
                    && s.links.contains(&(from, d.clone()))
                {
                    s.links.insert((repo.to_string(), d.clone()));
                    return resp(201)
                        .h("Location", format!("/v2/{repo}/blobs/{d}"))
                        .h("Docker-Content-Digest", d);
                }
                s.next += 1;
                let id = format!("u{}", s.next);
                s.uploads.insert(id.clone(), Vec::new());
                return resp(202).h("Location", format!("/v2/{repo}/blobs/uploads/{id}"));
            }
            "PATCH" => {
                let fail = std::mem::take(&mut s.faults.fail_patch_once);
                let Some(u) = s.uploads.get_mut(id) else {
                    return resp(404);
                };
                let start: usize = req
                    .headers
                    .get("content-range")
                    .and_then(|r| r.split('-').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u.len());
                if start != u.len() {
                    return resp(416);
                }
                if fail {
                    let half = req.body.len() / 2;
                    u.extend_from_slice(&req.body[..half]);
                    return resp(500);
                }
                u.extend_from_slice(&req.body);
                let end = u.len().saturating_sub(1);
                return resp(202)
                    .h("Location", format!("/v2/{repo}/blobs/uploads/{id}"))
                    .h("Range", format!("0-{end}"));
            }
            "GET" => {
                let Some(u) = s.uploads.get(id) else {
                    return resp(404);
                };
                let end = u.len().saturating_sub(1);
                return resp(204)
                    .h("Location", format!("/v2/{repo}/blobs/uploads/{id}"))
                    .h("Range", format!("0-{end}"));
            }
            "PUT" => {
                let Some(mut u) = s.uploads.remove(id) else {
                    return resp(404);
                };
                u.extend_from_slice(&req.body);
                let want = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("digest="))
                    .unwrap_or("")
                    .replace("%3A", ":");
                if digest_of(&u) != want {
                    return resp(400).body(br#"{"errors":[{"code":"DIGEST_INVALID","message":"digest did not match"}]}"#.to_vec());
                }
                s.blobs.insert(want.clone(), u);
                s.links.insert((repo.to_string(), want.clone()));
                return resp(201).h("Docker-Content-Digest", want);
            }
            _ => return resp(405),
        }
    }
    if let Some(i) = rest.find("/blobs/") {
        let d = rest[i + "/blobs/".len()..].to_string();
        let Some(mut b) = s.blobs.get(&d).cloned() else {
            return resp(404);
        };
        if req.method == "HEAD" {
            let repo = &rest[..i];
            if !s.links.contains(&(repo.to_string(), d.clone())) {
                return resp(404);
            }
            return resp(200).h("Docker-Content-Digest", d);
        }
        if s.faults.too_many > 0 {
            s.faults.too_many -= 1;
            return resp(429).h("Retry-After", "1");
        }
        if let Some(base) = &s.faults.redirect_to {
            return resp(307).h("Location", format!("{base}/b/{d}"));
        }
        if s.faults.corrupt
            && let Some(last) = b.last_mut()
        {
            *last ^= 0xff;
        }
        let mut start = 0;
        let mut r = resp(200);
        if let Some(range) = req.headers.get("range") {
            start = range
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap_or(0);
            r = resp(206).h(
                "Content-Range",
                format!("bytes {start}-{}/{}", b.len() - 1, b.len()),
            );
        }
        let cut_at = s.faults.cut_at;
        let cut = match cut_at {
            Some(n) if start == 0 && s.cut_done.insert(d.clone()) => Some(n),
            _ => None,
        };
        let mut r = r.h("Docker-Content-Digest", d).body(b[start..].to_vec());
        r.cut = cut;
        return r;
    }
    resp(404)
}

fn scope_of(path: &str, method: &str) -> String {
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let repo = ["/manifests/", "/blobs/"]
        .iter()
        .find_map(|k| rest.find(k).map(|i| &rest[..i]))
        .unwrap_or("");
    let actions = if method == "GET" || method == "HEAD" {
        "pull"
    } else {
        "pull,push"
    };
    format!("repository:{repo}:{actions}")
}
