//! `strata inspect`: what an image is, without reading its layers.

use crate::error::Result;
use crate::image::{Image, short_digest};
use serde::Serialize;
use serde_json::Value;

/// What `inspect` shows of an image: from its manifest and config only (serialised as is
/// for `--json`).
#[derive(Serialize)]
pub struct Report {
    /// The image reference as given.
    pub reference: String,
    /// The name of the transport that opened it.
    pub transport: String,
    /// The image's tags, as its source lists them.
    pub tags: Vec<String>,
    /// The digest of the manifest, when there is one.
    pub manifest_digest: Option<String>,
    /// The digest of the config blob, when known.
    pub config_digest: Option<String>,
    /// The config's `os` (empty strings count as missing, here and below).
    pub os: Option<String>,
    /// The config's `architecture`.
    pub architecture: Option<String>,
    /// The config's `variant` (`v8`, …).
    pub variant: Option<String>,
    /// The config's `created` time, as written there.
    pub created: Option<String>,
    /// The runtime config's `Entrypoint`, as JSON (absent when null).
    pub entrypoint: Option<Value>,
    /// The runtime config's `Cmd`, as JSON (absent when null).
    pub cmd: Option<Value>,
    /// The runtime config's `Env` (`KEY=value` strings).
    pub env: Vec<String>,
    /// The runtime config's `WorkingDir`.
    pub working_dir: Option<String>,
    /// The runtime config's `User`.
    pub user: Option<String>,
    /// The runtime config's `Labels`.
    pub labels: serde_json::Map<String, Value>,
    /// The keys of the runtime config's `ExposedPorts` (`80/tcp`, …).
    pub exposed_ports: Vec<String>,
    /// The keys of the runtime config's `Volumes`.
    pub volumes: Vec<String>,
    /// One report per layer, bottom first.
    pub layers: Vec<LayerReport>,
    /// History entries that made no layer (ENV, CMD, …), with the layer they sit above.
    pub empty_history: Vec<EmptyHistory>,
}

/// One layer in a [`Report`].
#[derive(Serialize)]
pub struct LayerReport {
    /// The layer's index in the image (0 is the bottom layer).
    pub index: usize,
    /// The digest of the stored blob, when known.
    pub digest: Option<String>,
    /// The digest of the uncompressed tar (from the config's `rootfs.diff_ids`), when known.
    pub diff_id: Option<String>,
    /// The layer's media type, when the manifest gives one.
    pub media_type: Option<String>,
    /// Bytes as stored (compressed size for compressed blobs).
    pub size: u64,
    /// Uncompressed size, when the stored blob is the tar itself.
    pub uncompressed_size: Option<u64>,
    /// The compression's name (see `Compression::name`): by magic bytes for a local blob, by
    /// media type for one not read yet.
    pub compression: String,
    /// The `created_by` of the history entry that made this layer.
    pub created_by: Option<String>,
}

/// A history entry that made no layer (`empty_layer: true`).
#[derive(Serialize)]
pub struct EmptyHistory {
    /// Index of the layer below this entry (None: before the first layer).
    pub after_layer: Option<usize>,
    /// The entry's `created_by` (the build step).
    pub created_by: Option<String>,
}

fn str_at(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The report of an image, from its manifest and config (no layer is read; a local blob's
/// first bytes are, to tell its compression).
pub fn report(img: &Image) -> Result<Report> {
    let c = &img.config;
    // Old v1 configs (`<id>/json`) keep the runtime config under `config` too.
    let cfg = c.get("config").cloned().unwrap_or(Value::Null);
    let mut layers = Vec::new();
    let mut empty_history = Vec::new();
    let mut hist_by_layer: Vec<Option<String>> = vec![None; img.layers.len()];
    let mut next_layer = 0usize;
    for h in img.history() {
        let created_by = h
            .get("created_by")
            .and_then(Value::as_str)
            .map(str::to_string);
        if h.get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            empty_history.push(EmptyHistory {
                after_layer: next_layer.checked_sub(1),
                created_by,
            });
        } else {
            if next_layer < hist_by_layer.len() {
                hist_by_layer[next_layer] = created_by;
            }
            next_layer += 1;
        }
    }
    for l in &img.layers {
        // A local blob tells its compression by its first bytes; a streamed one is not read
        // for this, its media type says.
        let comp = match l.blob.region() {
            Some(r) => {
                let mut head = [0u8; 6];
                let n = r.file.read_at_region(&mut head, r.offset, r.len);
                crate::compression::Compression::detect(&head[..n])
            }
            None => l
                .media_type
                .as_deref()
                .map(crate::compression::Compression::of_media_type)
                .unwrap_or(crate::compression::Compression::None),
        };
        layers.push(LayerReport {
            index: l.index,
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            media_type: l.media_type.clone(),
            size: l.stored_size(),
            uncompressed_size: (comp == crate::compression::Compression::None)
                .then_some(l.stored_size()),
            compression: comp.name().to_string(),
            created_by: hist_by_layer[l.index].clone(),
        });
    }
    Ok(Report {
        reference: img.reference.clone(),
        transport: img.transport.to_string(),
        tags: img.tags.clone(),
        manifest_digest: img.manifest_digest.clone(),
        config_digest: img.config_digest.clone(),
        os: str_at(c, "/os"),
        architecture: str_at(c, "/architecture"),
        variant: str_at(c, "/variant"),
        created: str_at(c, "/created"),
        entrypoint: cfg.get("Entrypoint").filter(|v| !v.is_null()).cloned(),
        cmd: cfg.get("Cmd").filter(|v| !v.is_null()).cloned(),
        env: crate::image::strings(cfg.get("Env")),
        working_dir: str_at(&cfg, "/WorkingDir"),
        user: str_at(&cfg, "/User"),
        labels: cfg
            .get("Labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        exposed_ports: keys(&cfg, "ExposedPorts"),
        volumes: keys(&cfg, "Volumes"),
        layers,
        empty_history,
    })
}

/// The keys of an object-valued config field (`ExposedPorts`, `Volumes`).
fn keys(cfg: &Value, field: &str) -> Vec<String> {
    cfg.get(field)
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

trait ReadHead {
    fn read_at_region(&self, buf: &mut [u8], offset: u64, len: u64) -> usize;
}

impl ReadHead for std::fs::File {
    fn read_at_region(&self, buf: &mut [u8], offset: u64, len: u64) -> usize {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min(len as usize);
        self.read_at(&mut buf[..want], offset).unwrap_or(0)
    }
}

/// Bytes for people: `184 B`, `1.5 KiB`, `665.3 MiB` (JSON keeps exact bytes).
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The report as the text `inspect` prints: one field a line, then a table of the layers
/// with the history entries that made none.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let json = |o: &Option<Value>| {
        o.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(s, "Image:       {} ({})", r.reference, r.transport);
    let _ = writeln!(
        s,
        "Tags:        {}",
        if r.tags.is_empty() {
            "-".into()
        } else {
            r.tags.join(", ")
        }
    );
    if let Some(d) = &r.manifest_digest {
        let _ = writeln!(s, "Manifest:    {d}");
    }
    let _ = writeln!(s, "Config:      {}", opt(&r.config_digest));
    let mut plat = format!("{}/{}", opt(&r.os), opt(&r.architecture));
    if let Some(v) = &r.variant {
        plat.push('/');
        plat.push_str(v);
    }
    let _ = writeln!(s, "Platform:    {plat}");
    let _ = writeln!(s, "Created:     {}", opt(&r.created));
    let _ = writeln!(s, "Entrypoint:  {}", json(&r.entrypoint));
    let _ = writeln!(s, "Cmd:         {}", json(&r.cmd));
    let _ = writeln!(s, "WorkingDir:  {}", opt(&r.working_dir));
    let _ = writeln!(s, "User:        {}", opt(&r.user));
    let _ = writeln!(s, "Env:");
    for e in &r.env {
        let _ = writeln!(s, "  {e}");
    }
    if !r.labels.is_empty() {
        let _ = writeln!(s, "Labels:");
        for (k, v) in &r.labels {
            let _ = writeln!(s, "  {k}={}", v.as_str().unwrap_or(&v.to_string()));
        }
    }
    if !r.exposed_ports.is_empty() {
        let _ = writeln!(s, "Ports:       {}", r.exposed_ports.join(" "));
    }
    if !r.volumes.is_empty() {
        let _ = writeln!(s, "Volumes:     {}", r.volumes.join(" "));
    }
    let total: u64 = r.layers.iter().map(|l| l.size).sum();
    let _ = writeln!(s, "Layers ({}, {} stored):", r.layers.len(), human(total));
    let _ = writeln!(
        s,
        "  {:>3}  {:<19}  {:<19}  {:>10}  {:>10}  {:<5}  CREATED BY",
        "#", "DIGEST", "DIFF_ID", "SIZE", "TAR SIZE", "COMP"
    );
    let empty_before =
        |i: Option<usize>| r.empty_history.iter().filter(move |e| e.after_layer == i);
    for e in empty_before(None) {
        let _ = writeln!(
            s,
            "  {:>3}  {:<52}  (no layer) {}",
            "-",
            "",
            opt(&e.created_by)
        );
    }
    for l in &r.layers {
        let d = l.digest.as_deref().map(short_digest).unwrap_or("-");
        let di = l.diff_id.as_deref().map(short_digest).unwrap_or("-");
        let unc = l.uncompressed_size.map(human).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            s,
            "  {:>3}  {:<19}  {:<19}  {:>10}  {:>10}  {:<5}  {}",
            l.index,
            d,
            di,
            human(l.size),
            unc,
            l.compression,
            opt(&l.created_by)
        );
        for e in empty_before(Some(l.index)) {
            let _ = writeln!(
                s,
                "  {:>3}  {:<52}  (no layer) {}",
                "-",
                "",
                opt(&e.created_by)
            );
        }
    }
    s
}
