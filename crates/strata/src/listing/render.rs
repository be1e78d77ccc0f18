//! Text renderings of the listing reports, and the `waste --ci` thresholds.

use super::{Change, EntryKind, FileEntry, TreeDiff, WasteReport};
use crate::error::{Error, Result};
use crate::inspect::human;

/// `diff A B` as text: one line per added (`+`), removed (`-`) and modified (`~`) path, then
/// the summary.
pub fn render_tree_diff(d: &TreeDiff) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for c in &d.added {
        let _ = writeln!(s, "+ {:<7} {:>12} {}", c.kind, c.size, c.path);
    }
    for c in &d.removed {
        let _ = writeln!(s, "- {:<7} {:>12} {}", c.kind, c.size, c.path);
    }
    for c in &d.modified {
        let what = c.what.as_ref().map(|w| w.join(", ")).unwrap_or_default();
        let _ = writeln!(s, "~ {:<7} {:>12} {} ({what})", c.kind, c.size, c.path);
    }
    let m = &d.summary;
    let _ = writeln!(
        s,
        "{} added ({} bytes), {} removed ({} bytes), {} modified; files: {} bytes in A, {} bytes in B; {} shared layers read once",
        m.added,
        m.added_bytes,
        m.removed,
        m.removed_bytes,
        m.modified,
        m.size_a,
        m.size_b,
        m.shared_layers
    );
    s
}

/// A ratio as a percentage rounded *down* to two decimals, so that a value just under a
/// threshold is never shown as above it ("100.00% is below 99.99%").
fn percent_down(ratio: f64) -> String {
    format!("{:.2}", (ratio * 10_000.0).floor() / 100.0)
}

/// `waste` as text: the totals, the efficiency, then the top wasted paths.
pub fn render_waste(w: &WasteReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Total file bytes:  {}", human(w.total_bytes));
    let _ = writeln!(
        s,
        "Wasted bytes:      {} ({} of them identical re-additions)",
        human(w.wasted_bytes),
        human(w.duplicate_bytes)
    );
    let _ = writeln!(s, "Efficiency:        {}%", percent_down(w.efficiency));
    if !w.top.is_empty() {
        let _ = writeln!(s, "Top wasted paths:");
        for t in &w.top {
            let layers: Vec<String> = t.layers.iter().map(|l| l.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:>10}  {}  (layers {})",
                human(t.wasted_bytes),
                t.path,
                layers.join(", ")
            );
        }
    }
    s
}

fn mode_string(kind: EntryKind, mode: u32) -> String {
    let t = match kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Hardlink => 'h',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
        EntryKind::Fifo => 'p',
        _ => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        let special = match i {
            2 if mode & 0o4000 != 0 => Some('s'),
            5 if mode & 0o2000 != 0 => Some('s'),
            8 if mode & 0o1000 != 0 => Some('t'),
            _ => None,
        };
        s.push(match (special, mode & bit != 0) {
            (Some(c), true) => c,
            (Some(c), false) => c.to_ascii_uppercase(),
            (None, true) => c,
            (None, false) => '-',
        });
    }
    s
}

/// A layer's heading: `layer N (short digest)`, by its digest, else its diff_id.
pub fn layer_title(index: usize, digest: &Option<String>, diff_id: &Option<String>) -> String {
    let id = digest
        .as_deref()
        .or(diff_id.as_deref())
        .map(crate::image::short_digest)
        .unwrap_or("-");
    format!("layer {index} ({id})")
}

/// The title line of one layer's `files` table.
pub fn files_title(
    index: usize,
    digest: &Option<String>,
    diff_id: &Option<String>,
    count: u64,
) -> String {
    format!("{}: {count} entries\n", layer_title(index, digest, diff_id))
}

/// One entry's line of a `files` table.
pub fn file_line(e: &FileEntry) -> String {
    if e.deleted {
        let what = if e.kind == EntryKind::Opaque {
            "opaque directory"
        } else {
            "deleted"
        };
        return format!("  {what:<38} {}\n", e.path);
    }
    let link = match (&e.link, e.kind) {
        (Some(l), EntryKind::Hardlink) => format!(
            " link to /{}",
            l.trim_start_matches("./").trim_start_matches('/')
        ),
        (Some(l), _) => format!(" -> {l}"),
        _ => String::new(),
    };
    format!(
        "  {} {:>5}/{:<5} {:>12} {}{}\n",
        mode_string(e.kind, e.mode),
        e.uid,
        e.gid,
        e.size,
        e.path,
        link
    )
}

/// One line of a layer's `diff`: `+` created, `~` changed (and what), `-` deleted. A path
/// the layer wrote again with nothing compared different (only times or other PAX records,
/// such as `atime`) is `rewritten` — JSON's empty `what`.
pub fn change_line(sign: char, c: &Change) -> String {
    let tail = match c.what.as_deref() {
        Some([]) => " (rewritten)".to_string(),
        Some(w) => format!(" ({})", w.join(", ")),
        None => String::new(),
    };
    format!("  {sign} {:<7} {:>12} {}{tail}\n", c.kind, c.size, c.path)
}

/// A size like `5000`, `20MB`, `1.5GiB`, in bytes (`k`, `m`, `g` are powers of 1000; `kib`,
/// `mib`, `gib` of 1024); `None` when it is not one.
pub fn parse_bytes(s: &str) -> Option<f64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

/// Check `waste --ci` thresholds before any layer is read: a bad value, a percentage outside
/// 0–100, or a threshold without `--ci` (it would be silently ignored) is an error, and so is
/// `--ci` with no threshold to check.
pub fn check_ci_flags(
    ci: bool,
    max_wasted: Option<&str>,
    min_efficiency: Option<&str>,
) -> Result<()> {
    if !ci {
        if max_wasted.is_some() || min_efficiency.is_some() {
            return Err(Error::Usage(
                "--max-wasted and --min-efficiency apply only with --ci".into(),
            ));
        }
        return Ok(());
    }
    if max_wasted.is_none() && min_efficiency.is_none() {
        return Err(Error::Usage(
            "--ci needs a threshold: --max-wasted BYTES|PCT and/or --min-efficiency PCT".into(),
        ));
    }
    let pct_ok = |p: f64| (0.0..=100.0).contains(&p);
    if let Some(m) = max_wasted {
        let ok = match m.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().is_some_and(pct_ok),
            None => parse_bytes(m).is_some_and(|b| b >= 0.0),
        };
        if !ok {
            return Err(Error::Usage(format!(
                "--max-wasted {m:?}: expected bytes (20MB, 1GiB) or a percentage from 0 to 100 (10%)"
            )));
        }
    }
    if let Some(e) = min_efficiency {
        let ok = e
            .trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .is_some_and(pct_ok);
        if !ok {
            return Err(Error::Usage(format!(
                "--min-efficiency {e:?}: expected a percentage from 0 to 100, like 95"
            )));
        }
    }
    Ok(())
}

/// The `--ci` thresholds a report crosses (empty: it passes).
pub fn ci_failures(
    w: &WasteReport,
    max_wasted: Option<&str>,
    min_efficiency: Option<&str>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(m) = max_wasted {
        let limit = match m.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .map(|p| p / 100.0 * w.total_bytes as f64),
            None => parse_bytes(m),
        }
        .ok_or_else(|| {
            Error::Usage(format!(
                "--max-wasted {m:?}: expected bytes (20MB, 1GiB) or a percentage (10%)"
            ))
        })?;
        if w.wasted_bytes as f64 > limit {
            out.push(format!("{} wasted bytes exceed {m}", w.wasted_bytes));
        }
    }
    if let Some(e) = min_efficiency {
        let pct: f64 = e.trim().trim_end_matches('%').parse().map_err(|_| {
            Error::Usage(format!(
                "--min-efficiency {e:?}: expected a percentage like 95"
            ))
        })?;
        if w.efficiency * 100.0 < pct {
            out.push(format!(
                "efficiency {}% is below {pct}%",
                percent_down(w.efficiency)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_units_and_percentages_that_do_not_contradict_a_threshold() {
        assert_eq!(human(184), "184 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(665 << 20), "665.0 MiB");
        // 99.9999 % shown as 100.00 % beside "is below 99.9999 %" would contradict itself.
        assert_eq!(percent_down(0.999_999), "99.99");
        assert_eq!(percent_down(1.0), "100.00");
        let w = WasteReport {
            image: "x".into(),
            wasted_bytes: 1,
            duplicate_bytes: 0,
            total_bytes: 1_000_000,
            efficiency: 0.999_999,
            top: vec![],
        };
        let f = ci_failures(&w, None, Some("99.99999")).unwrap();
        assert_eq!(f, vec!["efficiency 99.99% is below 99.99999%".to_string()]);
    }
}
