//! Fixtures built in code: layer tars, docker-archive and OCI images, a reference model of
//! how a layer stack applies to a directory, and a reader that turns a flattened tar into the
//! same comparable tree.
#![allow(dead_code)]

pub mod docker;
pub mod fake_registry;
pub mod model;
pub mod registry;
pub mod stacks;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Builds one layer tar entry by entry, with full control over names (raw bytes).
#[derive(Default, Clone)]
pub struct LayerBuilder {
    out: Vec<u8>,
}

pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append an entry with a raw name (no checks: tests need `../` and friends).
    pub fn raw(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        data: &[u8],
        meta: &Meta,
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut pax_records: Vec<(String, Vec<u8>)> = pax
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        let mut h = tar::Header::new_ustar();
        if name.len() > 100 {
            pax_records.push(("path".into(), name.to_vec()));
        } else {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        if link.len() > 100 {
            pax_records.push(("linkpath".into(), link.to_vec()));
        } else {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(data.len() as u64);
        h.set_cksum();
        if !pax_records.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax_records {
                let base = k.len() + v.len() + 3;
                let mut len = base + 1;
                while len != base + len.to_string().len() {
                    len = base + len.to_string().len();
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let mut ph = tar::Header::new_ustar();
            ph.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_size(body.len() as u64);
            ph.set_mode(0o644);
            ph.set_cksum();
            self.out.extend_from_slice(ph.as_bytes());
            self.out.extend_from_slice(&body);
            pad(&mut self.out);
        }
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        pad(&mut self.out);
        self
    }

    pub fn file(&mut self, path: &str, data: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Regular,
            b"",
            data.as_bytes(),
            &Meta::default(),
            &[],
        )
    }
    pub fn file_meta(&mut self, path: &str, data: &[u8], meta: &Meta) -> &mut Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Regular,
            b"",
            data,
            meta,
            &[],
        )
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.dir_mode(path, 0o755)
    }
    pub fn dir_mode(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut p = path.to_string();
        if !p.ends_with('/') {
            p.push('/');
        }
        self.raw(
            p.as_bytes(),
            tar::EntryType::Directory,
            b"",
            b"",
            &Meta {
                mode,
                ..Meta::default()
            },
            &[],
        )
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            b"",
            &Meta {
                mode: 0o777,
                ..Meta::default()
            },
            &[],
        )
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            b"",
            &Meta::default(),
            &[],
        )
    }
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Fifo,
            b"",
            b"",
            &Meta::default(),
            &[],
        )
    }
    /// `.wh.NAME` beside `path`.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, base) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        self.file(&format!("{dir}.wh.{base}"), "")
    }
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let d = dir.trim_end_matches('/');
        self.file(&format!("{d}/.wh..wh..opq"), "")
    }
    /// The tar, with its end-of-archive marker.
    pub fn build(&self) -> Vec<u8> {
        let mut v = self.out.clone();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

fn pad(v: &mut Vec<u8>) {
    let r = v.len() % 512;
    if r != 0 {
        v.resize(v.len() + 512 - r, 0);
    }
}

/// A tar of named members (an outer archive).
pub fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn config_json(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let history: Vec<serde_json::Value> = (0..layers.len())
        .map(|i| serde_json::json!({"created_by": format!("layer {i}")}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .unwrap()
}

/// A `docker save`-style archive (manifest.json layout) of uncompressed layers.
pub fn docker_archive(layers: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let config = config_json(layers);
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut members = vec![];
    let mut names = vec![];
    for l in layers {
        let name = format!("{}/layer.tar", sha256_hex(l));
        names.push(name.clone());
        members.push((name, l.clone()));
    }
    members.push((config_name.clone(), config));
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": names}]);
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    archive(&members)
}

pub fn write_docker_archive(dir: &Path, layers: &[Vec<u8>]) -> std::path::PathBuf {
    let p = dir.join("image.tar");
    std::fs::write(&p, docker_archive(layers, "test:latest")).unwrap();
    p
}

#[derive(Clone, Copy)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
    Xz,
}

pub fn compress(data: &[u8], c: Comp) -> (Vec<u8>, &'static str) {
    match c {
        Comp::None => (data.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(data, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        Comp::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar",
            )
        }
    }
}

/// The files of an OCI layout: path → bytes.
pub fn oci_layout_files(layers: &[Vec<u8>], comp: Comp, tag: &str) -> BTreeMap<String, Vec<u8>> {
    let blobs: Vec<(Vec<u8>, &str)> = layers.iter().map(|l| compress(l, comp)).collect();
    oci_layout_from_blobs(&blobs, &config_json(layers), tag)
}

/// An OCI layout from ready-made layer blobs (possibly broken on purpose) and a config.
pub fn oci_layout_from_blobs(
    blobs: &[(Vec<u8>, &str)],
    config: &[u8],
    tag: &str,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let cfg_hex = sha256_hex(config);
    let mut descs = vec![];
    for (blob, mt) in blobs {
        let hex = sha256_hex(blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": format!("sha256:{hex}"), "size": blob.len()}));
        files.insert(format!("blobs/sha256/{hex}"), blob.clone());
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cfg_hex}"), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m_hex = sha256_hex(&manifest);
    files.insert(format!("blobs/sha256/{cfg_hex}"), config.to_vec());
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{m_hex}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))
    .unwrap();
    files.insert(format!("blobs/sha256/{m_hex}"), manifest);
    files.insert("index.json".into(), index);
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files
}

pub fn write_files(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

pub fn write_oci_dir(dir: &Path, layers: &[Vec<u8>], comp: Comp) -> std::path::PathBuf {
    let root = dir.join("layout");
    write_files(&root, &oci_layout_files(layers, comp, "v1"));
    root
}

pub fn write_oci_archive(dir: &Path, layers: &[Vec<u8>], comp: Comp) -> std::path::PathBuf {
    let members: Vec<(String, Vec<u8>)> =
        oci_layout_files(layers, comp, "v1").into_iter().collect();
    let p = dir.join("oci.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    p
}

/// Flatten through the library, returning the output tar.
pub fn flatten_ref(reference: &str) -> Result<Vec<u8>, strata::Error> {
    let r = strata::reference::Reference::parse(reference)?;
    let img = r.open(&Default::default())?;
    let mut out = Vec::new();
    strata::merge::flatten(
        &img.layers,
        &mut out,
        &strata::merge::MergeOptions {
            verify: true,
            progress: None,
            cancel: Default::default(),
        },
    )?;
    Ok(out)
}

/// Flatten a stack of layer tars given as a docker-archive.
pub fn flatten_layers(layers: &[Vec<u8>]) -> Result<Vec<u8>, strata::Error> {
    let dir = tempfile::tempdir().unwrap();
    let p = write_docker_archive(dir.path(), layers);
    flatten_ref(&format!("docker-archive:{}", p.display()))
}

/// The paths of a JSON list of entries or changes (`[{"path": "/a", …}, …]`), without the
/// leading slash (as the model names them), in the order listed.
pub fn listed_paths(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .map(|c| {
            c["path"]
                .as_str()
                .expect("a path")
                .trim_start_matches('/')
                .to_string()
        })
        .collect()
}

pub fn strata_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}
