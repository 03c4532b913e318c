//! What the CLI test binaries share: the `fuselab` binary run in a folder,
//! and a run folder's `summary.json`.
#![allow(dead_code)] // each test binary uses the part it needs

use std::path::Path;

use assert_cmd::Command;

/// The built `fuselab` binary, run in `dir`.
pub fn fuselab(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("fuselab").expect("the fuselab binary is built");
    c.current_dir(dir);
    c
}

/// The `summary.json` of the run folder `dir`.
pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}
