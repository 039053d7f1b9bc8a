//! `txoutbox inbox parked | replay | purge`: the records a consumer's inbox table parked.

use std::collections::BTreeSet;

use crate::cli::{InboxCommand, InboxPurgeSelection};
use crate::database::Database;
use crate::error::CliError;
use crate::inbox_table::{InboxTable, ParkedRecord, Selection};
use crate::target::Target;

/// Characters of the last error the table shows (`--json` shows all of it).
const ERROR_CHARS: usize = 80;

/// Runs an inbox action.
pub(crate) async fn run(target: &Target, command: &InboxCommand) -> Result<(), CliError> {
    let table = match command {
        InboxCommand::Parked { table, .. }
        | InboxCommand::Replay { table, .. }
        | InboxCommand::Purge { table, .. } => &table.name,
    };
    let database = Database::connect_inbox(target, table).await?;
    let inbox = InboxTable::open(database).await?;
    match command {
        InboxCommand::Parked {
            consumer,
            limit,
            json,
            ..
        } => {
            let parked = inbox.parked(consumer.as_deref(), *limit).await?;
            if *json {
                let json = serde_json::to_string(&parked)
                    .map_err(|e| CliError::runtime(format!("cannot write the records as JSON: {e}")))?;
                println!("{json}");
            } else {
                print_table(&parked, consumer.as_deref());
            }
        }
        InboxCommand::Replay { consumer, which, .. } => {
            let ids = (!which.all).then(|| distinct(&which.ids));
            let n = inbox.replay(consumer, ids.as_deref()).await?;
            println!(
                "marked {n} dead records of consumer {} for replay: the running consumer handles each \
                 once more at its next look (every 5 s unless its replay_interval says otherwise), then \
                 records it handled or parks it again with the new error{}",
                printable(consumer),
                not_found(ids.as_deref(), n, "dead", consumer)
            );
        }
        InboxCommand::Purge { consumer, which, .. } => {
            let ids = which_ids(which);
            let selection = match (&ids, which.older_than) {
                (Some(ids), _) => Selection::Ids(ids),
                (None, Some(age)) => Selection::ParkedBefore(txoutbox_core::ago(age)),
                (None, None) => Selection::All,
            };
            let n = inbox.purge(consumer, selection).await?;
            let age = which
                .older_than
                .map(|age| format!(" parked more than {} ago", humantime::format_duration(age)))
                .unwrap_or_default();
            println!(
                "purged {n} parked records of consumer {}{age}{}",
                printable(consumer),
                not_found(ids.as_deref(), n, "parked", consumer)
            );
        }
    }
    Ok(())
}

/// The ids `--id` gave, each once (none with `--all` or `--older-than`).
fn which_ids(which: &InboxPurgeSelection) -> Option<Vec<String>> {
    (!which.all && which.older_than.is_none()).then(|| distinct(&which.ids))
}

fn distinct(ids: &[String]) -> Vec<String> {
    ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

/// The note on ids that matched nothing.
fn not_found(ids: Option<&[String]>, matched: u64, what: &str, consumer: &str) -> String {
    let Some(ids) = ids else {
        return String::new();
    };
    let missing = (ids.len() as u64).saturating_sub(matched);
    if missing == 0 {
        return String::new();
    }
    format!(
        "\n{missing} of the {} ids given are not {what} records of consumer {}: `txoutbox inbox parked \
         --consumer {}` lists them",
        ids.len(),
        printable(consumer),
        printable(consumer)
    )
}

/// `text` with control characters escaped: ids, topics and errors come from other programs and
/// must not drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The first [`ERROR_CHARS`] characters of `text`, on one line, `…` when cut.
fn truncated(text: &str) -> String {
    let line = printable(text);
    let mut chars = line.chars();
    let head: String = chars.by_ref().take(ERROR_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

fn print_table(parked: &[ParkedRecord], consumer: Option<&str>) {
    if parked.is_empty() {
        match consumer {
            Some(consumer) => println!("no parked records of consumer {}", printable(consumer)),
            None => println!("no parked records"),
        }
        return;
    }
    println!(
        "{:<20}  {:<36}  {:<6}  {:<32}  {:>8}  {:<19}  LAST ERROR",
        "CONSUMER", "MESSAGE ID", "STATUS", "TOPIC/PARTITION/OFFSET", "ATTEMPTS", "RECEIVED"
    );
    for r in parked {
        println!(
            "{:<20}  {:<36}  {:<6}  {:<32}  {:>8}  {:<19}  {}",
            printable(&r.consumer),
            printable(&r.message_id),
            printable(&r.status),
            printable(&format!("{}/{}/{}", r.topic, r.partition, r.offset)),
            r.attempts,
            r.received_at
                .map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S").to_string()),
            r.last_error.as_deref().map_or_else(|| "-".to_owned(), truncated)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_to_one_line_and_control_characters_escaped() {
        assert_eq!(truncated("short"), "short");
        let long = "x".repeat(ERROR_CHARS + 5);
        assert_eq!(truncated(&long), format!("{}…", "x".repeat(ERROR_CHARS)));
        assert_eq!(printable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(
            truncated("é".repeat(ERROR_CHARS).as_str()),
            "é".repeat(ERROR_CHARS)
        );
    }

    #[test]
    fn given_ids_count_once() {
        let ids = ["b", "a", "b"].map(str::to_owned);
        assert_eq!(distinct(&ids), ["a", "b"]);
        assert_eq!(not_found(Some(&distinct(&ids)), 2, "dead", "g"), "");
        assert!(not_found(Some(&distinct(&ids)), 1, "dead", "g").contains("1 of the 2 ids"));
        assert_eq!(not_found(None, 0, "dead", "g"), "");
    }
}
