//! "No panic in any log": the agents' and controllers' logs, read before each restart (a
//! restart starts its log afresh) and at every check.

use std::collections::BTreeSet;
use std::path::Path;

/// Panic lines found so far, each reported once.
#[derive(Default)]
pub struct Logs {
    seen: BTreeSet<String>,
    /// Lines not yet reported as violations.
    pub new: Vec<String>,
}

impl Logs {
    /// Read `path` for panics (`panicked at`, as Rust prints them).
    pub fn scan(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked at")) {
            let key = format!("{}: {line}", path.display());
            if self.seen.insert(key.clone()) {
                self.new.push(key);
            }
        }
    }
}
