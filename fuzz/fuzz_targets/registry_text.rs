#![no_main]
//! What a registry or a user hands the registry client as text: an image name, a
//! `WWW-Authenticate` challenge and an auth file (split at NUL). No panic; a name that
//! parses prints as one that parses to the same; no credential helper is run (the fuzzed
//! file may name one: helper names are cut to letters, and none of them exists).
use libfuzzer_sys::fuzz_target;
use strata::registry::auth::Challenge;
use strata::registry::credentials::from_json;
use strata::registry::name::ImageName;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    let challenge = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    let auth = parts.next().unwrap_or_default();
    if let Ok(n) = ImageName::parse(&name) {
        let again = ImageName::parse(&n.to_string()).expect("a printed name parses");
        assert_eq!(again.registry, n.registry);
        assert_eq!(again.repository, n.repository);
        assert_eq!(again.digest, n.digest);
    }
    let _ = Challenge::parse(&challenge);
    // Helpers would run programs: only look at files without credHelpers/credsStore.
    if !auth.windows(4).any(|w| w == b"cred") {
        let _ = from_json(auth, "fuzzed", "registry.example:5000");
        let _ = from_json(auth, "fuzzed", "docker.io");
    }
});
