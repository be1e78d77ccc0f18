//! Registry clients per client credential, shared by that credential's requests for a few
//! minutes: the registry's `/v2/` ping, its connections and its tokens (per scope, until they
//! expire) are reused instead of made again for every request. Each request still reads the
//! manifest with its own credential — the registry's access check — and a credential is
//! never answered with another's clients: the key is a hash of the whole credential.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata::registry::Options;
use strata::registry::credentials::Credential;

/// How long a credential's clients are kept after they were made.
pub const KEEP: Duration = Duration::from_secs(300);
/// Credentials kept at most (the oldest goes first).
pub const MAX: usize = 256;

/// The registry options of recent credentials.
pub struct ClientCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    keep: Duration,
    max: usize,
}

struct Entry {
    opts: Arc<Options>,
    made: Instant,
}

impl ClientCache {
    /// An empty cache keeping each credential's clients for `keep`, `max` credentials at most.
    pub fn new(keep: Duration, max: usize) -> ClientCache {
        ClientCache {
            entries: Mutex::new(HashMap::new()),
            keep,
            max: max.max(1),
        }
    }

    /// The options of `cred` (`None`: anonymous): the ones made for it recently, else new
    /// ones from `make`, kept.
    pub fn get(&self, cred: Option<&Credential>, make: impl FnOnce() -> Options) -> Arc<Options> {
        let key = key_of(cred);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| now.duration_since(e.made) < self.keep);
        if let Some(e) = entries.get(&key) {
            return e.opts.clone();
        }
        if entries.len() >= self.max
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.made).map(|(k, _)| *k)
        {
            entries.remove(&oldest);
        }
        let opts = Arc::new(make());
        entries.insert(
            key,
            Entry {
                opts: opts.clone(),
                made: now,
            },
        );
        opts
    }
}

/// A hash of every field of the credential, each length-prefixed after a tag of its kind (so
/// no two credentials share a key, and the secret itself is not the key).
fn key_of(cred: Option<&Credential>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    match cred {
        None => field(b"anonymous"),
        Some(Credential::Basic { user, password }) => {
            field(b"basic");
            field(user.as_bytes());
            field(password.as_bytes());
        }
        Some(Credential::IdentityToken { user, token }) => {
            field(b"identity");
            field(user.as_deref().unwrap_or("").as_bytes());
            field(if user.is_some() { b"1" } else { b"0" });
            field(token.as_bytes());
        }
        Some(Credential::Bearer(t)) => {
            field(b"bearer");
            field(t.as_bytes());
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Credential {
        Credential::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn a_credential_gets_its_own_clients_again_and_no_one_elses() {
        let cache = ClientCache::new(KEEP, MAX);
        let a = cache.get(Some(&basic("u", "p")), Options::default);
        assert!(Arc::ptr_eq(
            &a,
            &cache.get(Some(&basic("u", "p")), Options::default)
        ));
        for other in [
            Some(basic("u", "q")),
            Some(basic("up", "")),
            Some(basic("", "up")),
            Some(Credential::Bearer("p".into())),
            None,
        ] {
            let o = cache.get(other.as_ref(), Options::default);
            assert!(!Arc::ptr_eq(&a, &o), "{other:?}");
        }
        assert!(Arc::ptr_eq(
            &cache.get(None, Options::default),
            &cache.get(None, Options::default)
        ));
    }

    #[test]
    fn clients_are_made_again_after_a_while_and_the_oldest_go_first() {
        let cache = ClientCache::new(Duration::ZERO, MAX);
        let a = cache.get(None, Options::default);
        assert!(!Arc::ptr_eq(&a, &cache.get(None, Options::default)));
        let cache = ClientCache::new(KEEP, 2);
        let first = cache.get(Some(&basic("1", "")), Options::default);
        std::thread::sleep(Duration::from_millis(2));
        let second = cache.get(Some(&basic("2", "")), Options::default);
        std::thread::sleep(Duration::from_millis(2));
        cache.get(Some(&basic("3", "")), Options::default);
        assert!(Arc::ptr_eq(
            &second,
            &cache.get(Some(&basic("2", "")), Options::default)
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &cache.get(Some(&basic("1", "")), Options::default)
        ));
    }
}
