//! What the daemon's `--help` says: every command's help text, and the words in it (flags,
//! environment variables). The documentation and deployment tests compare files with these.

use std::collections::BTreeSet;
use std::process::Command;

/// Words of `text` that start with `prefix` and go on with `[a-z0-9_-]` (or upper-case for
/// variables).
pub(crate) fn words(text: &str, prefix: &str, upper: bool) -> BTreeSet<String> {
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

/// `txoutbox <args> --help`.
pub(crate) fn help(args: &[&str]) -> String {
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

/// Every command's help text, the top one and each subcommand's, recursively: (the command's
/// words after `txoutbox`, its help).
pub(crate) fn every_help() -> Vec<(String, String)> {
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

/// Every `TXOUTBOX_*` environment variable some command's `--help` names.
pub(crate) fn variables() -> BTreeSet<String> {
    every_help()
        .iter()
        .flat_map(|(_, text)| words(text, "TXOUTBOX_", true))
        .collect()
}
