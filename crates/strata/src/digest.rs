//! Content digests, `ALGORITHM:HEX` (OCI image-spec `descriptor.md` § Digests): parsed
//! strictly — a registered algorithm (sha256, sha512) with exactly its length of lowercase hex,
//! so a digest is never a path — and every algorithm accepted is one strata can verify.

use sha2::{Digest, Sha256, Sha512};

/// The digest algorithms strata reads and verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256: 64 hex digits.
    Sha256,
    /// SHA-512: 128 hex digits.
    Sha512,
}

impl Algorithm {
    /// The name in a digest (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// `ALGORITHM:HEX` split, when it is a digest strata accepts.
pub fn parse(digest: &str) -> Option<(Algorithm, &str)> {
    let (alg, hex) = digest.split_once(':')?;
    let alg = match alg {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    let ok =
        hex.len() == alg.hex_len() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some((alg, hex))
}

/// A running hash in one of the [`Algorithm`]s.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A hasher of `alg`.
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// A hasher for checking `digest`, when strata accepts it.
    pub fn for_digest(digest: &str) -> Option<Hasher> {
        parse(digest).map(|(alg, _)| Hasher::new(alg))
    }

    /// Add bytes.
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    /// The digest, as `ALGORITHM:HEX`.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Check that `want` is the digest of what `h` hashed (`what` names it in the message).
pub fn check(h: Hasher, want: &str, what: &str) -> Result<(), String> {
    let got = h.finish();
    if got != want {
        return Err(format!(
            "{what} digest mismatch: expected {want}, got {got}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_algorithms_of_their_exact_length() {
        let h64 = "a".repeat(64);
        assert_eq!(
            parse(&format!("sha256:{h64}")),
            Some((Algorithm::Sha256, h64.as_str()))
        );
        assert!(parse(&format!("sha512:{}", "0".repeat(128))).is_some());
        assert!(parse(&format!("sha512:{h64}")).is_none(), "wrong length");
        assert!(
            parse(&format!("sha256:{}", "A".repeat(64))).is_none(),
            "uppercase"
        );
        assert!(parse("../../x:evil").is_none());
        assert!(parse(&format!("md5:{}", "a".repeat(32))).is_none());
        assert!(parse(&format!("sha256:../{}", "a".repeat(61))).is_none());
    }

    #[test]
    fn sha512_is_verified_too() {
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        let d = h.clone().finish();
        assert!(check(h, &d, "blob").is_ok());
        let mut other = Hasher::for_digest(&d).unwrap();
        other.update(b"abd");
        assert!(
            check(other, &d, "blob")
                .unwrap_err()
                .contains("digest mismatch")
        );
    }
}
