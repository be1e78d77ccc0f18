//! Platforms, and picking one image from a multi-platform index — OCI's image index and
//! Docker's manifest list use the same descriptors, so every transport shares this.

use crate::error::{Error, Result};
use serde_json::Value;

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The operating system (`linux`).
    pub os: String,
    /// The architecture, as images name it (`amd64`, `arm64`).
    pub arch: String,
    /// The CPU variant (`v7`, `v8`), when there is one.
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::Usage(format!(
                "bad platform {s:?}: expected os/arch[/variant]"
            ))),
        }
    }

    /// The platform of an index descriptor (`platform.os`, `.architecture`, `.variant`).
    pub fn of(desc: &Value) -> Option<Platform> {
        let p = desc.get("platform")?;
        Some(Platform {
            os: p.get("os")?.as_str()?.to_string(),
            arch: p.get("architecture")?.as_str()?.to_string(),
            variant: p.get("variant").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// Whether `other` is this platform (no variant asked: any variant).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.arch == other.arch
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }
}

/// The descriptor of `platform` among `descs` (each with a `platform`), or an error listing
/// what there is.
pub fn pick(descs: &[&Value], platform: &Platform, where_: &str) -> Result<Value> {
    match descs
        .iter()
        .find(|d| Platform::of(d).is_some_and(|p| platform.matches(&p)))
    {
        Some(d) => Ok((*d).clone()),
        None => {
            let list: Vec<String> = descs
                .iter()
                .filter_map(|d| Platform::of(d).map(|p| p.to_string()))
                .collect();
            Err(Error::Usage(format!(
                "{where_}: no image for platform {platform}; available: {} (use --platform)",
                list.join(", ")
            )))
        }
    }
}
