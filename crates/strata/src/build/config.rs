//! The image config of a built image: the base's (or `--config FILE`'s, or an empty one),
//! changed by the flags the way a Dockerfile's instructions change it, with `rootfs` and
//! `history` extended by the new layers.

use crate::error::{Error, Result};
use serde_json::{Map, Value, json};

/// What the config flags ask for. `None`/empty means "keep what the base has".
#[derive(Clone, Debug, Default)]
pub struct ConfigChanges {
    /// A full config: an image config (with `config`, `architecture`…) or just the
    /// container part (`Env`, `Cmd`…). Applied before the flags.
    pub config_file: Option<Value>,
    /// New `Entrypoint` (empty: none); also clears an inherited `Cmd`, as in a Dockerfile.
    pub entrypoint: Option<Vec<String>>,
    /// New `Cmd` (empty: none).
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries set in `Env`, replacing ones of the same key.
    pub env: Vec<String>,
    /// New `WorkingDir`; a relative one is taken from the current one, as WORKDIR does.
    pub workdir: Option<String>,
    /// New `User`.
    pub user: Option<String>,
    /// `KEY=VALUE` entries added to `Labels`.
    pub labels: Vec<String>,
    /// Ports added to `ExposedPorts` (`80`, `80/tcp`, `53/udp`).
    pub expose: Vec<String>,
    /// Absolute paths added to `Volumes`.
    pub volumes: Vec<String>,
    /// New `StopSignal`.
    pub stop_signal: Option<String>,
    /// New `architecture` (drops the base's `variant` unless one is given too).
    pub arch: Option<String>,
    /// New `os`.
    pub os: Option<String>,
    /// New `variant`.
    pub variant: Option<String>,
}

/// `["a", "b"]` as JSON (exec form), anything else as a Dockerfile's shell form:
/// `["/bin/sh", "-c", STRING]`; an empty string clears.
pub fn parse_command(s: &str, flag: &str) -> Result<Vec<String>> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t)
            .map_err(|e| Error::Usage(format!("{flag} {s:?}: not a JSON list of strings: {e}")));
    }
    if t.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

/// A path cleaned as Docker cleans WORKDIR: `.` and empty components dropped, `..` applied.
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The architecture name images use for the machine strata runs on.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    }
}

fn object<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.into(), json!({}));
    }
    match m.get_mut(key) {
        Some(Value::Object(o)) => o,
        _ => unreachable!("just inserted an object"),
    }
}

fn key_value<'a>(kv: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Error::Usage(format!("{flag} {kv:?}: expected KEY=VALUE"))),
    }
}

/// `80`, `80/tcp`, `53/udp` → `80/tcp`, `53/udp`.
fn port(p: &str) -> Result<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok = num.parse::<u16>().is_ok_and(|n| n > 0) && matches!(proto, "tcp" | "udp" | "sctp");
    if !ok {
        return Err(Error::Usage(format!(
            "--expose {p:?}: expected PORT or PORT/tcp|udp|sctp"
        )));
    }
    Ok(format!("{num}/{proto}"))
}

/// The new config: `base` (the `--from` image's config, if any) changed by `ch`, with the new
/// layers' `diff_ids` appended and one history entry per new layer.
pub fn build_config(
    base: Option<&Value>,
    ch: &ConfigChanges,
    base_layers: usize,
    new_diff_ids: &[String],
    new_history: &[String],
    created: &str,
) -> Result<Vec<u8>> {
    let mut cfg: Map<String, Value> = match base {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(Error::Format(
                "the base image's config is not a JSON object".into(),
            ));
        }
        None => Map::new(),
    };
    // Legacy v1 fields that describe one layer, not the image.
    for k in [
        "id",
        "parent",
        "Size",
        "layer_id",
        "throwaway",
        "container",
        "container_config",
        "docker_version",
    ] {
        cfg.remove(k);
    }
    let mut diff_ids: Vec<Value> = cfg
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut history: Vec<Value> = cfg
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(file) = &ch.config_file {
        let Value::Object(f) = file else {
            return Err(Error::Usage("--config: expected a JSON object".into()));
        };
        let is_image_config = ["config", "architecture", "os", "rootfs", "history"]
            .iter()
            .any(|k| f.contains_key(*k));
        if is_image_config {
            for (k, v) in f {
                // The layers decide rootfs and history.
                if k != "rootfs" && k != "history" {
                    cfg.insert(k.clone(), v.clone());
                }
            }
        } else {
            cfg.insert("config".into(), file.clone());
        }
    }
    if ch.arch.is_some() && ch.variant.is_none() {
        // A new architecture: the base's variant (v8 of arm64…) no longer applies.
        cfg.remove("variant");
    }
    let arch = ch
        .arch
        .clone()
        .or_else(|| {
            cfg.get("architecture")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| host_arch().to_string());
    cfg.insert("architecture".into(), json!(arch));
    let os = ch
        .os
        .clone()
        .or_else(|| cfg.get("os").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "linux".into());
    cfg.insert("os".into(), json!(os));
    if let Some(v) = &ch.variant {
        cfg.insert("variant".into(), json!(v));
    }
    cfg.insert("created".into(), json!(created));

    let cmd_from_file = ch
        .config_file
        .as_ref()
        .is_some_and(|f| f.get("Cmd").is_some() || f.pointer("/config/Cmd").is_some());
    let c = object(&mut cfg, "config");
    if let Some(ep) = &ch.entrypoint {
        c.insert(
            "Entrypoint".into(),
            if ep.is_empty() {
                Value::Null
            } else {
                json!(ep)
            },
        );
        // As in a Dockerfile: a new ENTRYPOINT drops the CMD inherited from the base.
        if ch.cmd.is_none() && !cmd_from_file {
            c.insert("Cmd".into(), Value::Null);
        }
    }
    if let Some(cmd) = &ch.cmd {
        c.insert(
            "Cmd".into(),
            if cmd.is_empty() {
                Value::Null
            } else {
                json!(cmd)
            },
        );
    }
    if !ch.env.is_empty() {
        let mut env: Vec<String> = crate::image::strings(c.get("Env"));
        for kv in &ch.env {
            let (k, _) = key_value(kv, "--env")?;
            let prefix = format!("{k}=");
            match env.iter_mut().find(|e| e.starts_with(&prefix)) {
                Some(slot) => *slot = kv.clone(),
                None => env.push(kv.clone()),
            }
        }
        c.insert("Env".into(), json!(env));
    }
    if let Some(w) = &ch.workdir {
        let w = if w.starts_with('/') {
            clean_abs(w)
        } else {
            // Relative, as WORKDIR: against the base's.
            let cur = c.get("WorkingDir").and_then(Value::as_str).unwrap_or("/");
            clean_abs(&format!("{cur}/{w}"))
        };
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &ch.user {
        c.insert("User".into(), json!(u));
    }
    if let Some(s) = &ch.stop_signal {
        c.insert("StopSignal".into(), json!(s));
    }
    if !ch.labels.is_empty() {
        let labels = object(c, "Labels");
        for kv in &ch.labels {
            let (k, v) = key_value(kv, "--label")?;
            labels.insert(k.into(), json!(v));
        }
    }
    if !ch.expose.is_empty() {
        let ports = object(c, "ExposedPorts");
        for p in &ch.expose {
            ports.insert(port(p)?, json!({}));
        }
    }
    if !ch.volumes.is_empty() {
        let vols = object(c, "Volumes");
        for v in &ch.volumes {
            if !v.starts_with('/') {
                return Err(Error::Usage(format!(
                    "--volume {v:?}: not an absolute path"
                )));
            }
            vols.insert(v.clone(), json!({}));
        }
    }

    // History must have one non-empty entry per base layer; invent plain ones if it does not.
    let non_empty = history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .count();
    if non_empty != base_layers || diff_ids.len() != base_layers {
        history = (0..base_layers)
            .map(|i| json!({"created_by": format!("layer {i} of the base image")}))
            .collect();
    }
    if diff_ids.len() != base_layers {
        return Err(Error::Format(format!(
            "the base image's config lists {} diff_ids for {base_layers} layers",
            diff_ids.len()
        )));
    }
    for (d, h) in new_diff_ids.iter().zip(new_history) {
        diff_ids.push(json!(d));
        history.push(json!({"created": created, "created_by": h, "comment": "strata build"}));
    }
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    cfg.insert("history".into(), Value::Array(history));
    serde_json::to_vec(&Value::Object(cfg)).map_err(|e| Error::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base: Option<&Value>, ch: &ConfigChanges, base_layers: usize) -> Value {
        let b = build_config(
            base,
            ch,
            base_layers,
            &["sha256:new".into()],
            &["strata build x".into()],
            "1970-01-01T00:00:01Z",
        )
        .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn flags_change_the_base_like_dockerfile_instructions() {
        let base = json!({
            "architecture": "arm64", "os": "linux",
            "config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": null, "WorkingDir": "/srv",
                       "Labels": {"keep": "yes"}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:base"]},
            "history": [{"created_by": "base"}, {"created_by": "ENV", "empty_layer": true}],
        });
        let ch = ConfigChanges {
            env: vec!["A=2".into(), "B=3".into()],
            entrypoint: Some(vec!["/app".into()]),
            workdir: Some("./sub/../sub2/".into()),
            labels: vec!["new=1".into()],
            expose: vec!["80".into(), "53/udp".into()],
            ..Default::default()
        };
        let c = cfg(Some(&base), &ch, 1);
        assert_eq!(c["architecture"], "arm64");
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(c["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(c["config"]["Cmd"], Value::Null);
        assert_eq!(c["config"]["WorkingDir"], "/srv/sub2");
        assert_eq!(c["config"]["Labels"], json!({"keep": "yes", "new": "1"}));
        assert_eq!(
            c["config"]["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}})
        );
        assert_eq!(
            c["rootfs"]["diff_ids"],
            json!(["sha256:base", "sha256:new"])
        );
        assert_eq!(c["history"].as_array().unwrap().len(), 3);
        assert_eq!(c["history"][2]["created_by"], "strata build x");
    }

    #[test]
    fn an_empty_build_gets_a_minimal_config() {
        let c = cfg(
            None,
            &ConfigChanges {
                cmd: Some(vec!["/bin/sh".into()]),
                ..Default::default()
            },
            0,
        );
        assert_eq!(c["os"], "linux");
        assert_eq!(c["architecture"], host_arch());
        assert_eq!(c["config"]["Cmd"], json!(["/bin/sh"]));
        assert_eq!(c["created"], "1970-01-01T00:00:01Z");
    }

    #[test]
    fn config_file_container_part_or_whole() {
        let part = json!({"Env": ["X=1"], "User": "nobody"});
        let c = cfg(
            None,
            &ConfigChanges {
                config_file: Some(part),
                user: Some("1000".into()),
                ..Default::default()
            },
            0,
        );
        assert_eq!(c["config"]["Env"], json!(["X=1"]));
        assert_eq!(c["config"]["User"], "1000");
        let whole = json!({"architecture": "riscv64", "config": {"Cmd": ["x"]}, "rootfs": {"diff_ids": ["bogus"]}});
        let c = cfg(
            None,
            &ConfigChanges {
                config_file: Some(whole),
                ..Default::default()
            },
            0,
        );
        assert_eq!(c["architecture"], "riscv64");
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:new"]));
    }

    #[test]
    fn entrypoint_keeps_a_cmd_given_in_the_config_file_and_arch_drops_the_variant() {
        let base = json!({"architecture": "arm64", "variant": "v8", "config": {"Cmd": ["base"]},
                          "rootfs": {"type": "layers", "diff_ids": []}});
        let ch = ConfigChanges {
            config_file: Some(json!({"Cmd": ["from-file"]})),
            entrypoint: Some(vec!["/e".into()]),
            arch: Some("amd64".into()),
            ..Default::default()
        };
        let c = cfg(Some(&base), &ch, 0);
        assert_eq!(c["config"]["Cmd"], json!(["from-file"]));
        assert_eq!(c["architecture"], "amd64");
        assert!(c.get("variant").is_none());
    }

    #[test]
    fn bad_flags_are_refused() {
        for ch in [
            ConfigChanges {
                env: vec!["NOVALUE".into()],
                ..Default::default()
            },
            ConfigChanges {
                expose: vec!["http".into()],
                ..Default::default()
            },
            ConfigChanges {
                volumes: vec!["data".into()],
                ..Default::default()
            },
            ConfigChanges {
                labels: vec!["=x".into()],
                ..Default::default()
            },
        ] {
            assert!(build_config(None, &ch, 0, &[], &[], "x").is_err());
        }
        assert_eq!(
            parse_command(r#"["a b", "c"]"#, "--cmd").unwrap(),
            ["a b", "c"]
        );
        assert_eq!(
            parse_command("echo 'a b'", "--cmd").unwrap(),
            ["/bin/sh", "-c", "echo 'a b'"]
        );
        assert!(parse_command("", "--cmd").unwrap().is_empty());
        assert!(parse_command("[1]", "--cmd").is_err());
    }
}
