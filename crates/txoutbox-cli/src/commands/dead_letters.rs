//! `txoutbox dead-letters list | replay | purge`.

use txoutbox_core::{DeadLetter, DeadLetterFilter, DeadLetters};

use crate::cli::{DeadLettersCommand, FilterArgs};
use crate::database::{Create, Database};
use crate::error::CliError;
use crate::target::Target;
use crate::with_store;

/// Runs a dead-letter action.
pub(crate) async fn run(target: &Target, command: &DeadLettersCommand) -> Result<(), CliError> {
    if let DeadLettersCommand::Purge { filter, all } = command
        && !all
        && filter_of(filter)? == DeadLetterFilter::all()
    {
        return Err(CliError::usage(
            "refusing to purge every dead letter: narrow it with --topic, --id, --from-id/--to-id or \
             --older-than, or pass --all",
        ));
    }
    let database = Database::connect(target, Create::Never, 1).await?;
    with_store!(&database, store => act(&store, command).await)
}

async fn act(store: &impl DeadLetters, command: &DeadLettersCommand) -> Result<(), CliError> {
    match command {
        DeadLettersCommand::List { filter, limit, json } => {
            let dead = store.list_dead(&filter_of(filter)?, *limit).await?;
            if *json {
                let rows: Vec<_> = dead.iter().map(to_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_table(&dead);
            }
        }
        DeadLettersCommand::Replay { filter } => {
            let n = store.replay_dead(&filter_of(filter)?).await?;
            println!("replayed {n} dead letters: they are pending again and the relay will send them");
        }
        DeadLettersCommand::Purge { filter, .. } => {
            let n = store.purge_dead(&filter_of(filter)?).await?;
            println!("purged {n} dead letters");
        }
    }
    Ok(())
}

/// The store filter from the flags.
fn filter_of(args: &FilterArgs) -> Result<DeadLetterFilter, CliError> {
    let mut filter = DeadLetterFilter::all();
    if let Some(topic) = &args.topic {
        filter = filter.topic(topic.clone());
    }
    match (args.id, args.from_id, args.to_id) {
        (Some(id), _, _) => filter = filter.ids(id..=id),
        (None, None, None) => {}
        (None, from, to) => {
            let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
            if from > to {
                return Err(CliError::usage(format!("--from-id {from} is above --to-id {to}")));
            }
            filter = filter.ids(from..=to);
        }
    }
    if let Some(age) = args.older_than {
        filter = filter.created_before(txoutbox_core::ago(age));
    }
    Ok(filter)
}

fn key_text(key: Option<&[u8]>) -> String {
    key.map_or_else(|| "-".to_owned(), |k| String::from_utf8_lossy(k).into_owned())
}

fn to_json(dead: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": dead.id,
        "message_id": dead.message_id,
        "topic": dead.topic,
        "key": dead.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": dead.headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "payload_bytes": dead.payload_len,
        "created_at": dead.created_at,
        "attempts": dead.attempts,
        "last_error": dead.last_error,
    })
}

fn print_table(dead: &[DeadLetter]) {
    if dead.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:>10}  {:<24}  {:<16}  {:>8}  {:<20}  LAST ERROR",
        "ID", "TOPIC", "KEY", "ATTEMPTS", "CREATED"
    );
    for d in dead {
        println!(
            "{:>10}  {:<24}  {:<16}  {:>8}  {:<20}  {}",
            d.id,
            d.topic,
            key_text(d.key.as_deref()),
            d.attempts,
            d.created_at.format("%Y-%m-%d %H:%M:%S"),
            d.last_error.as_deref().unwrap_or("-")
        );
    }
}
