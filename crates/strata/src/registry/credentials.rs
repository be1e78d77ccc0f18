//! Credentials for a registry, found where users keep them.
//!
//! In order: `--creds USER[:PASS]`; `--authfile FILE` alone when given; else
//! `$REGISTRY_AUTH_FILE`, podman's `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, then Docker's `$DOCKER_CONFIG/config.json` (or
//! `~/.docker/config.json`) — containers-auth.json(5)'s order. In one file a `credHelpers`
//! entry for the host wins, then an `auths` entry (`auth` is base64 `user:pass`;
//! `identitytoken` is an OAuth refresh token), then the `credsStore` helper — Docker's own
//! precedence (rancher-desktop #2321 is what happens otherwise). A helper is the program
//! `docker-credential-NAME` on `PATH`, asked with `get` and the server on stdin.
//!
//! (The `docker_credential` crate reads only Docker's file and cannot be pointed at an
//! `--authfile`, which skopeo users rely on; the format is small enough to read here.)

use super::name::{DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_AUTH_KEY};
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a registry is logged in with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (sent as Basic, or to a token server).
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken {
        /// The user it belongs to, when known (for messages).
        user: Option<String>,
        /// The token.
        token: String,
    },
    /// A registry token used as it is (`Authorization: Bearer …` passed through by a
    /// service in front of the registry).
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    // Never print a secret, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.user().unwrap_or("<token>"))
    }
}

impl Credential {
    /// The user name, for messages.
    pub fn user(&self) -> Option<&str> {
        match self {
            Credential::Basic { user, .. } => Some(user),
            Credential::IdentityToken { user, .. } => user.as_deref(),
            Credential::Bearer(_) => None,
        }
    }

    /// `--creds USER[:PASS]` (skopeo's spelling: without a password, an empty one).
    pub fn from_flag(s: &str) -> Result<Credential> {
        let (user, password) = s.split_once(':').unwrap_or((s, ""));
        if user.is_empty() {
            return Err(Error::Usage("--creds: expected USER[:PASSWORD]".into()));
        }
        Ok(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

/// Where to look, as the command line set it.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    /// `--creds`.
    pub creds: Option<Credential>,
    /// `--authfile`: the only file read when set.
    pub authfile: Option<PathBuf>,
    /// Read no file at all: only `creds` (a service acting with its clients' credentials
    /// must never fall back to its own).
    pub no_files: bool,
}

impl Lookup {
    /// The credential for `registry` (as references name it: `docker.io`, `host:port`), or
    /// none (anonymous). A file that cannot be parsed, or a helper that fails other than by
    /// "not found", is an error naming it.
    pub fn find(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = &self.creds {
            return Ok(Some(c.clone()));
        }
        if self.no_files {
            return Ok(None);
        }
        let files = match &self.authfile {
            Some(f) => vec![f.clone()],
            None => default_files(),
        };
        for f in files {
            if self.authfile.is_none() && !f.is_file() {
                continue;
            }
            if let Some(c) = from_file(&f, registry)? {
                tracing::debug!("credentials for {registry} from {}", f.display());
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

fn default_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut v = Vec::new();
    v.extend(env("REGISTRY_AUTH_FILE"));
    if let Some(x) = env("XDG_RUNTIME_DIR") {
        v.push(x.join("containers/auth.json"));
    }
    if let Some(h) = &home {
        v.push(h.join(".config/containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(d) => v.push(d.join("config.json")),
        None => v.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    v
}

/// The keys a registry's entry may be stored under: Docker Hub has had several names.
fn keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        vec![
            DOCKER_HUB_AUTH_KEY.to_string(),
            DOCKER_HUB.to_string(),
            "index.docker.io".to_string(),
            DOCKER_HUB_API.to_string(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// An `auths` key names `registry` when, without a scheme and a path, it is the host.
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    keys(registry).iter().any(|want| {
        let w = want.strip_prefix("https://").unwrap_or(want);
        host == w.split('/').next().unwrap_or(w)
    })
}

/// The credential for `registry` in one auth file.
pub fn from_file(path: &Path, registry: &str) -> Result<Option<Credential>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    from_json(&bytes, &path.display().to_string(), registry)
}

/// The credential for `registry` in an auth file's bytes (`shown` names it in errors).
pub fn from_json(bytes: &[u8], shown: &str, registry: &str) -> Result<Option<Credential>> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Format(format!("{shown}: bad JSON: {e}")))?;
    let helper_for = doc
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| key_matches(k, registry))
                .and_then(|(_, v)| v.as_str())
        });
    if let Some(h) = helper_for {
        return helper(h, registry);
    }
    if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
        // An exact key first (`host`), then any spelling of it (`https://host/v1/`).
        let entry = keys(registry)
            .iter()
            .find_map(|k| auths.get(k))
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| key_matches(k, registry))
                    .map(|(_, v)| v)
            });
        if let Some(e) = entry
            && let Some(c) = from_entry(e, &format!("{shown}: auths entry for {registry}"))?
        {
            return Ok(Some(c));
        }
    }
    if let Some(store) = doc.get("credsStore").and_then(Value::as_str) {
        return helper(store, registry);
    }
    Ok(None)
}

fn from_entry(e: &Value, what: &str) -> Result<Option<Credential>> {
    let user_pass = match e
        .get("auth")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| Error::Format(format!("{what}: \"auth\" is not base64")))?;
            let s = String::from_utf8(raw)
                .map_err(|_| Error::Format(format!("{what}: \"auth\" is not UTF-8")))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| Error::Format(format!("{what}: \"auth\" is not user:password")))?;
            Some((u.to_string(), p.to_string()))
        }
        None => None,
    };
    if let Some(token) = e
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(Some(Credential::IdentityToken {
            user: user_pass.map(|(u, _)| u),
            token: token.to_string(),
        }));
    }
    Ok(user_pass.map(|(user, password)| Credential::Basic { user, password }))
}

/// Ask `docker-credential-NAME get` for `registry`'s credential.
fn helper(name: &str, registry: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{name}");
    // Helpers store Docker Hub under its historical key.
    let server = if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    };
    let fail = |why: String| Error::Auth(format!("{program} get {server}: {why}"));
    // A helper is a program on PATH, never a path.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(fail(
            "not a credential helper name (letters, digits, '-', '_', '.')".into(),
        ));
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it ({e}); is it on PATH?")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's "not found" answer is no credential, not an error.
        let said = format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!(
            "{} ({})",
            out.status,
            said.lines().next().unwrap_or("")
        )));
    }
    let v: Value =
        serde_json::from_str(&stdout).map_err(|e| fail(format!("answered with bad JSON: {e}")))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    Ok(Some(if user == "<token>" {
        Credential::IdentityToken {
            user: None,
            token: secret.to_string(),
        }
    } else {
        Credential::Basic {
            user: user.to_string(),
            password: secret.to_string(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn file(json: &Value) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.to_string().as_bytes()).unwrap();
        f
    }

    #[test]
    fn auths_entries_by_any_spelling_of_the_host() {
        let f = file(&serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "http://reg.example:5000/v1/": {"auth": b64("me:secret:with:colons")},
            "tok.example": {"auth": b64("u:"), "identitytoken": "refresh-me"},
        }}));
        let get = |r| from_file(f.path(), r).unwrap();
        assert_eq!(
            get("docker.io"),
            Some(Credential::Basic {
                user: "hub".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            get("reg.example:5000"),
            Some(Credential::Basic {
                user: "me".into(),
                password: "secret:with:colons".into()
            })
        );
        assert_eq!(
            get("tok.example"),
            Some(Credential::IdentityToken {
                user: Some("u".into()),
                token: "refresh-me".into()
            })
        );
        assert_eq!(get("other.example"), None);
        assert_eq!(get("reg.example"), None, "the port is part of the host");
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{not json").unwrap();
        let e = from_file(f.path(), "x.io").unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("bad JSON"),
            "{e}"
        );
        let f = file(&serde_json::json!({"auths": {"x.io": {"auth": "%%%"}}}));
        let e = from_file(f.path(), "x.io").unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn creds_flag() {
        assert_eq!(
            Credential::from_flag("a:b:c").unwrap(),
            Credential::Basic {
                user: "a".into(),
                password: "b:c".into()
            }
        );
        assert!(Credential::from_flag(":x").is_err());
        assert_eq!(
            format!("{:?}", Credential::from_flag("u:secret").unwrap()),
            "Credential(u)"
        );
    }
}
