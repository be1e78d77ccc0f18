//! What goes into each layer: `--layer SRC[:DEST][,SRC2[:DEST2]…]` and `--layers-from FILE.json`
//! (a list of layers, each a list of `{"src", "dest"}`), resolved to sources and image paths.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One source tree and where it goes in the image.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file or directory on this machine.
    pub src: PathBuf,
    /// Image path without the leading `/` (empty for the root), normalized.
    pub dest: Vec<u8>,
    /// How the source is named in history: as it was given (on the command line or in the
    /// JSON), so the same command gives the same image wherever it runs.
    pub label: String,
}

impl Source {
    /// The image path as users write it (`/usr/local`).
    pub fn dest_shown(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.dest))
    }
}

/// The sources of one layer, in the order given.
#[derive(Clone, Debug, Default)]
pub struct LayerSpec {
    /// The sources, each placed at its destination.
    pub sources: Vec<Source>,
}

/// An absolute image path made relative and normalized: `/a//b/./c/` → `a/b/c`. `..` is
/// refused (an image path that climbs is a mistake, never a meaning), and so are `.wh.` names.
pub fn normalize_dest(dest: &str) -> Result<Vec<u8>> {
    if !dest.starts_with('/') {
        return Err(Error::Usage(format!(
            "destination {dest:?} is not absolute (image paths start with /)"
        )));
    }
    let mut parts = Vec::new();
    for c in dest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::Usage(format!("destination {dest:?} contains '..'")));
            }
            c if c.starts_with(".wh.") => {
                // Every reader would take it for a deletion (or an opaque directory).
                return Err(Error::Usage(format!(
                    "destination {dest:?}: names starting with .wh. mean deletions in image layers"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/").into_bytes())
}

fn source(src: &Path, dest: Option<&str>, label: String) -> Result<Source> {
    if src.as_os_str().is_empty() {
        return Err(Error::Usage("empty source path in --layer".into()));
    }
    let real = std::fs::canonicalize(src)
        .map_err(|e| Error::io(format!("layer source {}", src.display()), e))?;
    let dest = match dest {
        Some(d) => normalize_dest(d)?,
        // Like the seed's store paths: the tree goes where it is on this machine.
        None => normalize_dest(&real.to_string_lossy())?,
    };
    Ok(Source {
        src: src.to_path_buf(),
        dest,
        label,
    })
}

/// One `--layer` argument: sources separated by commas, each `SRC` or `SRC:DEST`. DEST is
/// what follows the last `:`; paths holding `:` or `,` can be given with `--layers-from`.
pub fn parse_layer_arg(arg: &str) -> Result<LayerSpec> {
    let mut sources = Vec::new();
    for part in arg.split(',') {
        let (src, dest) = match part.rsplit_once(':') {
            Some((s, d)) => (s, Some(d)),
            None => (part, None),
        };
        sources.push(source(Path::new(src), dest, src.to_string())?);
    }
    Ok(LayerSpec { sources })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSource {
    src: PathBuf,
    dest: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonLayers {
    List(Vec<Vec<JsonSource>>),
    Object { layers: Vec<Vec<JsonSource>> },
}

/// `--layers-from`: `[[{"src": "…", "dest": "/…"}, …], …]` (or `{"layers": that}`). Relative
/// sources are taken from the JSON file's directory, so a generator's output works from
/// anywhere.
pub fn parse_layers_json(bytes: &[u8], file: &Path) -> Result<Vec<LayerSpec>> {
    let parsed: JsonLayers = serde_json::from_slice(bytes).map_err(|e| {
        Error::Format(format!(
            "{}: expected a list of layers, each a list of {{\"src\", \"dest\"}}: {e}",
            file.display()
        ))
    })?;
    let layers = match parsed {
        JsonLayers::List(l) | JsonLayers::Object { layers: l } => l,
    };
    let base = file.parent().unwrap_or(Path::new("."));
    layers
        .into_iter()
        .enumerate()
        .map(|(i, srcs)| {
            if srcs.is_empty() {
                return Err(Error::Format(format!(
                    "{}: layer {i} has no sources",
                    file.display()
                )));
            }
            let sources = srcs
                .iter()
                .map(|s| {
                    let label = s.src.to_string_lossy().into_owned();
                    source(&base.join(&s.src), s.dest.as_deref(), label)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(LayerSpec { sources })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_normalized_and_checked() {
        assert_eq!(normalize_dest("/").unwrap(), b"");
        assert_eq!(normalize_dest("/a//b/./c/").unwrap(), b"a/b/c");
        assert!(normalize_dest("a/b").is_err());
        assert!(normalize_dest("/a/../b").is_err());
        assert!(normalize_dest("/.wh.etc/x").is_err());
        assert!(normalize_dest("/x/.wh..wh..opq").is_err());
    }

    #[test]
    fn layer_args_split_sources_and_destinations() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let spec = parse_layer_arg(&format!("{}:/app,{}", a.display(), b.display())).unwrap();
        assert_eq!(spec.sources.len(), 2);
        assert_eq!(spec.sources[0].dest, b"app");
        assert_eq!(spec.sources[0].label, a.display().to_string());
        let real_b = std::fs::canonicalize(&b).unwrap();
        assert_eq!(
            spec.sources[1].dest,
            real_b.to_string_lossy().trim_start_matches('/').as_bytes()
        );
        let missing = parse_layer_arg(&format!("{}/nope:/x", d.path().display()));
        assert!(missing.unwrap_err().to_string().contains("nope"));
        assert!(parse_layer_arg(&format!("{}:relative", a.display())).is_err());
    }

    #[test]
    fn json_layers_resolve_against_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("t")).unwrap();
        let f = d.path().join("layers.json");
        let spec = parse_layers_json(br#"[[{"src": "t", "dest": "/opt/t"}], [{"src": "t"}]]"#, &f)
            .unwrap();
        assert_eq!(spec.len(), 2);
        assert_eq!(spec[0].sources[0].dest, b"opt/t");
        assert!(parse_layers_json(br#"[[{"src": "t", "dst": "/x"}]]"#, &f).is_err());
        assert!(parse_layers_json(br#"[[]]"#, &f).is_err());
        assert!(parse_layers_json(br#"{"layers": [[{"src": "t", "dest": "/"}]]}"#, &f).is_ok());
    }
}
