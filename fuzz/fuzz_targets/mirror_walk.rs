#![no_main]
//! `copy --all`'s walk over manifests a source hands it: the input split at NUL into
//! documents, each stored under its own digest; the first is the top one. Indexes naming each
//! other, themselves or the same child many times, lying media types, bad descriptors: no
//! panic, an end (each digest is copied once), and every manifest reaches the sink only
//! after every blob and manifest it names, none twice.
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use strata::image::registry::Manifest;
use strata::mirror::{OpenBlob, Sink, Source, manifest_of, mirror};

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", strata::image::sha256_hex(b))
}

struct Docs(BTreeMap<String, Vec<u8>>, String);

impl Source for Docs {
    fn describe(&self) -> String {
        "fuzzed".into()
    }
    fn top(&self) -> strata::Result<Manifest> {
        self.manifest(&self.1.clone())
    }
    fn manifest(&self, d: &str) -> strata::Result<Manifest> {
        let raw = self
            .0
            .get(d)
            .cloned()
            .ok_or_else(|| strata::Error::Format(format!("no {d}")))?;
        manifest_of(raw, d, "", "fuzzed")
    }
    fn blob(&self, d: &str, _: u64) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.0.get(d).cloned().unwrap_or_default())))
    }
}

#[derive(Default)]
struct Seen(HashSet<String>, usize);

impl Sink for Seen {
    fn blob(&mut self, d: &str, _: u64, _: Option<(&str, &str)>, open: &OpenBlob<'_>) -> strata::Result<()> {
        let mut v = Vec::new();
        let _ = open().map(|mut r| r.read_to_end(&mut v));
        assert!(self.0.insert(d.to_string()), "blob {d} twice");
        self.1 += 1;
        Ok(())
    }
    fn child(&mut self, m: &Manifest) -> strata::Result<()> {
        assert!(self.0.insert(m.digest.clone()), "manifest {} twice", m.digest);
        assert!(!m.media_type.is_empty(), "a manifest without a media type");
        Ok(())
    }
    fn top(&mut self, m: &Manifest) -> strata::Result<String> {
        assert!(!m.media_type.is_empty());
        Ok(m.digest.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    // `@J` in document I (J a digit, J > I) stands for document J's digest: content
    // addressing allows no cycles, but the fuzzer could never find a SHA-256 by itself.
    let docs: Vec<&[u8]> = data.split(|&b| b == 0).take(10).collect();
    let mut digests = vec![String::new(); docs.len()];
    let mut map = BTreeMap::new();
    for i in (0..docs.len()).rev() {
        let mut doc = Vec::with_capacity(docs[i].len());
        let mut k = 0;
        while k < docs[i].len() {
            let j = docs[i].get(k + 1).map(|c| c.wrapping_sub(b'0') as usize);
            match (docs[i][k], j) {
                (b'@', Some(j)) if j > i && j < docs.len() => {
                    doc.extend_from_slice(digests[j].as_bytes());
                    k += 2;
                }
                (b, _) => {
                    doc.push(b);
                    k += 1;
                }
            }
        }
        digests[i] = digest(&doc);
        map.insert(digests[i].clone(), doc);
    }
    let top = digests[0].clone();
    let src = Docs(map, top);
    let mut sink = Seen::default();
    let _ = mirror(&src, &mut sink);
    assert!(sink.1 <= 1 << 20);
});
