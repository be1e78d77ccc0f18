//! Shared by the fuzz targets: bytes as an in-memory file (memfd), images of fuzzed layers.

use std::io::Write;

/// The bytes as an anonymous in-memory file, for the readers that index by offset.
pub fn memfile(data: &[u8]) -> std::fs::File {
    let fd = rustix::fs::memfd_create("fuzz", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(data).unwrap();
    f
}

/// Split the input into up to 4 layer tars at `\xff\xfe\xfd\xfc` separators.
pub fn layers(data: &[u8]) -> Vec<Vec<u8>> {
    let sep = b"\xff\xfe\xfd\xfc";
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 3 {
        match rest.windows(4).position(|w| w == sep) {
            Some(i) => {
                out.push(rest[..i].to_vec());
                rest = &rest[i + 4..];
            }
            None => break,
        }
    }
    out.push(rest.to_vec());
    out
}

/// An image whose layers are these tars, as local blobs of memfds (no digests: the merge
/// itself is what is fuzzed).
pub fn image(layers: &[Vec<u8>]) -> strata::image::Image {
    let layers = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let file = memfile(l);
            strata::image::Layer {
                index: i,
                location: format!("fuzz layer {i}"),
                blob: strata::blob::Blob::local(strata::image::FileRegion {
                    file: std::sync::Arc::new(file),
                    offset: 0,
                    len: l.len() as u64,
                }),
                media_type: None,
                digest: None,
                diff_id: None,
                urls: Vec::new(),
            }
        })
        .collect();
    strata::image::Image {
        reference: "fuzz".into(),
        transport: "fuzz",
        tags: vec![],
        config_raw: b"{}".to_vec(),
        config: strata::image::parse_json(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}", "fuzz").unwrap(),
        config_digest: None,
        manifest_digest: None,
        manifest_raw: None,
        layers,
        _spool: None,
    }
}
