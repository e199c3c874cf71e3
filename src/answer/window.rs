//! How much context a local model can read before the user gives up:
//! prefill speed, measured and kept per model, and the window it affords.
//!
//! A CPU prefills tens to hundreds of tokens per second, so a 32K window
//! would mean minutes before the first token. The window is sized so the
//! expected wait stays within a limit, at the model's prefill speed. That
//! speed is first measured by a probe (a warm-up pass, then a prompt of
//! [`PROBE_TOKENS`] in the blocks generation uses: a short probe on cold
//! weights read half the real speed), and every real prefill of at least
//! [`MIN_SAMPLE`] tokens adds a sample. The estimate is the median of the
//! last [`KEPT`] samples, so one reading taken while the machine was busy
//! neither sticks nor rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Tokens of the probe prompt.
pub const PROBE_TOKENS: usize = 512;

/// Shortest prefill that counts as a sample.
pub const MIN_SAMPLE: usize = 256;

/// Samples kept per model.
pub const KEPT: usize = 7;

/// Prefill speeds per model configuration, as kept in the user's cache.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PrefillSpeeds {
    /// Recent tokens/s samples per model key, oldest first.
    #[serde(default)]
    samples: BTreeMap<String, Vec<f64>>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl PrefillSpeeds {
    /// The speeds kept in `path` (none if it is missing or unreadable; the
    /// old format, one number per key, is read as one sample).
    pub fn load(path: &Path) -> PrefillSpeeds {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut speeds = serde_json::from_slice::<PrefillSpeeds>(&bytes)
            .ok()
            .filter(|s| !s.samples.is_empty())
            .or_else(|| {
                let old: BTreeMap<String, f64> = serde_json::from_slice(&bytes).ok()?;
                Some(PrefillSpeeds {
                    samples: old.into_iter().map(|(k, v)| (k, vec![v])).collect(),
                    path: None,
                })
            })
            .unwrap_or_default();
        speeds.path = Some(path.to_path_buf());
        speeds
    }

    /// The user's cache file (`prefill-speed.json`).
    pub fn user() -> PrefillSpeeds {
        match directories::ProjectDirs::from("", "", "shirabe") {
            Some(d) => PrefillSpeeds::load(&d.cache_dir().join("prefill-speed.json")),
            None => PrefillSpeeds::default(),
        }
    }

    /// The estimate for `key`: the median of its recent samples.
    pub fn estimate(&self, key: &str) -> Option<f64> {
        let mut v: Vec<f64> = self
            .samples
            .get(key)?
            .iter()
            .copied()
            .filter(|t| t.is_finite() && *t > 0.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Adds a sample of a prefill of `tokens` tokens at `tps` (ignored when
    /// the prefill was too short to tell) and saves.
    pub fn record(&mut self, key: &str, tokens: usize, tps: f64) {
        if tokens < MIN_SAMPLE || !tps.is_finite() || tps <= 0.0 {
            return;
        }
        let v = self.samples.entry(key.to_string()).or_default();
        v.push(tps);
        if v.len() > KEPT {
            v.drain(..v.len() - KEPT);
        }
        self.save();
    }

    fn save(&self) {
        let Some(p) = &self.path else { return };
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension("json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

/// The window (prompt + answer tokens) that a prefill at `tps` tokens/s
/// reads within `max_wait` seconds, keeping 30% for attention's growing
/// cost on long prompts; never more than `window`, never less than the
/// answer plus 256 tokens.
pub fn affordable_window(tps: f64, max_wait: f64, max_tokens: usize, window: usize) -> usize {
    let affordable = (tps * max_wait * 0.7) as usize + max_tokens;
    affordable.min(window).max(max_tokens + 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_real_prefills_and_forgets_a_busy_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("speeds.json");
        let mut s = PrefillSpeeds::load(&path);
        assert_eq!(s.estimate("m"), None);
        // A probe taken while the machine was busy.
        s.record("m", 512, 40.0);
        assert_eq!(s.estimate("m"), Some(40.0));
        // Short prefills tell nothing.
        s.record("m", 20, 500.0);
        assert_eq!(s.estimate("m"), Some(40.0));
        for _ in 0..3 {
            s.record("m", 1800, 110.0);
        }
        assert_eq!(s.estimate("m"), Some(110.0));
        // Kept on disk, a bounded history.
        for _ in 0..20 {
            s.record("m", 900, 100.0);
        }
        let again = PrefillSpeeds::load(&path);
        assert_eq!(again.estimate("m"), Some(100.0));
        assert_eq!(again.samples["m"].len(), KEPT);
        // The old format (one number per key) still reads.
        std::fs::write(&path, r#"{"m": 55.0}"#).unwrap();
        assert_eq!(PrefillSpeeds::load(&path).estimate("m"), Some(55.0));
    }

    #[test]
    fn windows_fit_the_wait() {
        assert_eq!(affordable_window(100.0, 60.0, 512, 32_768), 4712);
        assert_eq!(affordable_window(1e6, 60.0, 512, 32_768), 32_768);
        assert_eq!(affordable_window(1.0, 1.0, 512, 32_768), 768);
    }
}
