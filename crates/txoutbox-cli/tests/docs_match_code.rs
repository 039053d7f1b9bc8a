//! The operations reference (`docs/operations.md`) names what exists, and everything that exists
//! is in it: every long flag and environment variable of every `txoutbox` command's `--help` (and
//! every flag its tables name exists), and every metric the code records (`"txoutbox_…"` names
//! in the crates' sources, both ways). A flag, variable
//! or metric added without its documentation — or documented and then removed — fails here,
//! naming it.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::help::{every_help, words};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn operations_md() -> String {
    std::fs::read_to_string(workspace().join("docs/operations.md")).expect("read docs/operations.md")
}

#[test]
fn every_flag_and_variable_is_documented_and_every_documented_one_exists() {
    let docs = operations_md();
    let mut flags = BTreeSet::new();
    let mut variables = BTreeSet::new();
    let mut problems = Vec::new();
    for (command, text) in every_help() {
        for flag in words(&text, "--", false) {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            if !words(&docs, "--", false).contains(&flag) {
                problems.push(format!(
                    "`txoutbox {command}` has {flag}, which docs/operations.md does not name"
                ));
            }
            flags.insert(flag);
        }
        for variable in words(&text, "TXOUTBOX_", true) {
            if !docs.contains(&variable) {
                problems.push(format!(
                    "`txoutbox {command}` reads {variable}, which docs/operations.md does not name"
                ));
            }
            variables.insert(variable);
        }
    }
    // The settings and command tables (other flags on the page belong to cargo or the benchmark).
    let table_rows: String = docs
        .lines()
        .filter(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    for flag in words(&table_rows, "--", false) {
        if !flags.contains(&flag) {
            problems.push(format!(
                "docs/operations.md's tables name {flag}, which no txoutbox command has"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_metric_is_documented_and_every_documented_one_is_recorded() {
    let docs = operations_md();
    let documented: BTreeSet<String> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `txoutbox_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("txoutbox_{name}"))
        .collect();
    let mut recorded = BTreeSet::new();
    for crate_dir in std::fs::read_dir(workspace().join("crates")).expect("list crates") {
        let src = crate_dir.expect("crate dir").path().join("src");
        collect_metric_names(&src, &mut recorded);
    }
    assert!(!recorded.is_empty(), "no metric names found in the sources");
    let mut problems = Vec::new();
    for name in recorded.difference(&documented) {
        problems.push(format!(
            "the code records {name}, which docs/operations.md's table does not list"
        ));
    }
    for name in documented.difference(&recorded) {
        problems.push(format!("docs/operations.md lists {name}, which no code records"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The quoted `"txoutbox_…"` names in the Rust sources under `dir`.
fn collect_metric_names(dir: &Path, names: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_metric_names(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for word in words(&text, "\"txoutbox_", false) {
                let name = &word[1..];
                if text.contains(&format!("{word}\"")) && is_metric(&text, name) {
                    names.insert(name.to_owned());
                }
            }
        }
    }
}

/// Whether `name` is used as a metric in `text` (recorded or described through the `metrics`
/// macros), not as some other string such as a table or topic name.
fn is_metric(text: &str, name: &str) -> bool {
    let quoted = format!("\"{name}\"");
    text.match_indices(&quoted).any(|(at, _)| {
        let before = &text[..at];
        let window = &before[before.len().saturating_sub(120)..];
        ["counter!(", "gauge!(", "histogram!(", "describe_counter!(", "describe_gauge!(", "describe_histogram!("]
            .iter()
            .any(|m| window.contains(m))
            || window.trim_end().ends_with("const") // `const NAME: &str = "txoutbox_…"`
            || window.contains(": &str =")
    })
}
