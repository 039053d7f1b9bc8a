//! The operations reference (`docs/operations.md`) names what exists, and everything that exists
//! is in it: every long flag and environment variable of every `txoutbox` command's `--help` (and
//! every flag its tables name exists), and every metric the code records (`"txoutbox_…"` names
//! in the crates' sources, both ways). A flag, variable
//! or metric added without its documentation — or documented and then removed — fails here,
//! naming it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn operations_md() -> String {
    std::fs::read_to_string(workspace().join("docs/operations.md")).expect("read docs/operations.md")
}

/// Words of `text` that start with `prefix` and go on with `[a-z0-9_-]` (or upper-case for
/// variables).
fn words(text: &str, prefix: &str, upper: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at + prefix.len()..];
        let len = tail
            .find(|c: char| {
                !(c == '_'
                    || c == '-'
                    || c.is_ascii_digit()
                    || if upper {
                        c.is_ascii_uppercase()
                    } else {
                        c.is_ascii_lowercase()
                    })
            })
            .unwrap_or(tail.len());
        let word = tail[..len].trim_end_matches(['-', '_']);
        // A flag starts a word: not `foo--bar`, not a `---` rule.
        let starts_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '-'));
        if starts_word && !word.is_empty() {
            found.insert(format!("{prefix}{word}"));
        }
        rest = &tail[len..];
    }
    found
}

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_txoutbox"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run txoutbox --help");
    assert!(output.status.success(), "txoutbox {args:?} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The subcommands of a help text (the lines of its "Commands:" section).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command's help text, the top one and each subcommand's, recursively.
fn every_help() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
        found.push((path.join(" "), text));
    }
    found
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
