//! Registry authorization: Basic, and Bearer tokens from the `WWW-Authenticate` challenge.
//!
//! Docker's token protocol (distribution `docs/spec/auth/token.md`, `oauth.md`): a registry
//! answers 401 with `Bearer realm="URL",service="S",scope="repository:NAME:pull"`; the client
//! asks the realm for a token for that service and scope (with Basic credentials, or an OAuth2
//! refresh token posted as a form) and retries with `Authorization: Bearer TOKEN`. Tokens are
//! kept per scope until they expire; a 401 on a request that carried one means it expired
//! (or was revoked) early: it is dropped and fetched again, once.

use super::credentials::Credential;
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The service the token is for.
        service: Option<String>,
        /// The scope the registry asked for, when it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parse a challenge header (`auth-scheme 1*SP auth-param *("," auth-param)`, RFC 7235),
    /// quoted values with `\` escapes. `None` for a scheme strata does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if name.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            value = value.trim().to_string();
        }
        out.push((name.trim().to_string(), value));
    }
    out
}

struct Token {
    value: String,
    expires: Instant,
}

#[derive(Default)]
struct State {
    /// What the registry asked for last (from the ping or a 401).
    challenge: Option<Challenge>,
    /// Bearer tokens by the scope strata asked for.
    tokens: HashMap<String, Token>,
    /// A refresh token the token server handed out, which replaces the identity token.
    refresh: Option<String>,
}

/// The authorization state of one registry, shared by every request to it.
pub struct Auth {
    registry: String,
    credential: Option<Credential>,
    state: Mutex<State>,
}

/// Tokens are dropped this long before they say they expire (clock skew, a slow request).
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// What distribution's token spec says a token without `expires_in` lasts.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

impl Auth {
    /// The state for `registry` logged in with `credential` (anonymous without one).
    pub fn new(registry: &str, credential: Option<Credential>) -> Auth {
        Auth {
            registry: registry.to_string(),
            credential,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user, for messages.
    pub fn who(&self) -> String {
        match self.credential.as_ref().and_then(Credential::user) {
            Some(u) => format!("user {u:?}"),
            None if matches!(self.credential, Some(Credential::Bearer(_))) => {
                "a bearer token".into()
            }
            None if self.credential.is_some() => "an identity token".into(),
            None => "no credentials (anonymous)".into(),
        }
    }

    /// Remember what the registry's `/v2/` ping asked for, so the first request can carry it.
    pub fn set_challenge(&self, c: Challenge) {
        self.lock().challenge = Some(c);
    }

    /// The `Authorization` value for a request needing `scope`, fetching a token when the
    /// registry speaks Bearer and none is kept. `None`: send nothing.
    pub fn header(&self, agent: &ureq::Agent, scope: &str) -> Result<Option<String>> {
        if let Some(Credential::Bearer(t)) = &self.credential {
            return Ok(Some(format!("Bearer {t}")));
        }
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic()),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(t) = self.lock().tokens.get(scope)
                    && t.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self.fetch_token(agent, &realm, service.as_deref(), scope)?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A 401 came back: learn its challenge and say whether trying again can help. `sent`:
    /// the request carried an `Authorization` (so what it carried is no good now).
    pub fn unauthorized(
        &self,
        www_authenticate: Option<&str>,
        scope: &str,
        sent: bool,
    ) -> Result<()> {
        let c = www_authenticate.and_then(Challenge::parse);
        if sent && matches!(self.credential, Some(Credential::Bearer(_))) {
            return Err(self.denied());
        }
        let mut st = self.lock();
        match (&c, sent) {
            (None, _) => {
                return Err(Error::Auth(format!(
                    "{}: access denied to {} (the registry asked for no authentication strata speaks: {})",
                    self.registry,
                    self.who(),
                    www_authenticate.unwrap_or("no WWW-Authenticate header")
                )));
            }
            (Some(Challenge::Basic), true) => {
                return Err(self.denied());
            }
            (Some(Challenge::Basic), false) if self.credential.is_none() => {
                return Err(self.denied());
            }
            (Some(Challenge::Bearer { .. }), true) => {
                // The token was refused: expired or revoked early. Fetch a new one.
                st.tokens.remove(scope);
            }
            _ => {}
        }
        st.challenge = c;
        Ok(())
    }

    /// The error for a request refused with what strata sent.
    pub fn denied(&self) -> Error {
        match &self.credential {
            Some(_) => Error::Auth(format!(
                "{}: authentication failed for {} (wrong password or token, or no access)",
                self.registry,
                self.who()
            )),
            None => Error::Auth(format!(
                "{}: authentication required: no credentials (give --creds USER:PASS, --authfile, or log in with docker/podman login)",
                self.registry
            )),
        }
    }

    fn basic(&self) -> Option<String> {
        match &self.credential {
            Some(Credential::Basic { user, password }) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        }
    }

    fn fetch_token(
        &self,
        agent: &ureq::Agent,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String> {
        let refresh = {
            let st = self.lock();
            st.refresh.clone().or_else(|| match &self.credential {
                Some(Credential::IdentityToken { token, .. }) => Some(token.clone()),
                _ => None,
            })
        };
        let fail =
            |why: String| Error::Auth(format!("{}: token server {realm}: {why}", self.registry));
        let ask = || match &refresh {
            // OAuth2: the refresh token is posted (distribution `oauth.md`).
            Some(rt) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                    ("client_id", "strata"),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                agent.post(realm).send_form(form)
            }
            None => {
                let mut req = agent.get(realm);
                // Each scope its own parameter, as Docker sends them.
                for s in scope.split(' ').filter(|s| !s.is_empty()) {
                    req = req.query("scope", s);
                }
                if let Some(s) = service {
                    req = req.query("service", s);
                }
                if let Some(b) = self.basic() {
                    req = req.header("Authorization", &b);
                }
                req.call()
            }
        };
        // A connection the token server closed while it sat in the pool fails at once:
        // ask again (a few times) before calling it a failure.
        let mut tries = 0;
        let mut resp = loop {
            match ask() {
                Ok(r) => break r,
                // A proxy refusing the tunnel says the same again: no retry.
                Err(ureq::Error::ConnectProxyFailed(reason)) => {
                    let p = super::client::ProxyFailed::of(agent, reason);
                    if p.refused() || tries >= 3 {
                        return Err(Error::Io {
                            context: format!("{}: token server {realm}", self.registry),
                            source: std::io::Error::other(p),
                        });
                    }
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100 << tries));
                }
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::debug!("{}: token server {realm}: {e}; asking again", self.registry);
                    std::thread::sleep(Duration::from_millis(100 << tries));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(match &self.credential {
                Some(_) => Error::Auth(format!(
                    "{}: authentication failed for {} (the token server {realm} answered {status})",
                    self.registry,
                    self.who()
                )),
                None => fail(format!("answered {status} to an anonymous request")),
            });
        }
        if status != 200 {
            return Err(fail(format!("answered {status}")));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| fail(format!("bad JSON: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("answered without a token".into()))?
            .to_string();
        let lifetime = v
            .get("expires_in")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let mut st = self.lock();
        if let Some(rt) = v.get("refresh_token").and_then(Value::as_str) {
            st.refresh = Some(rt.to_string());
        }
        st.tokens.insert(
            scope.to_string(),
            Token {
                value: token.clone(),
                expires: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
            },
        );
        tracing::debug!(
            "{}: token for {scope}, {}s",
            self.registry,
            lifetime.as_secs()
        );
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(
                r#"bearer  scope="a:b:pull,push" , realm="http://x/t\"q",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "http://x/t\"q".into(),
                service: None,
                scope: Some("a:b:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None, "no realm");
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(
            Challenge::parse("Bearer realm=http://unquoted/t, service=s"),
            Some(Challenge::Bearer {
                realm: "http://unquoted/t".into(),
                service: Some("s".into()),
                scope: None,
            })
        );
    }
}
