//! The WAL envelope decoder against outside data: any bytes a role can emit with
//! `pg_logical_emit_message` under the outbox prefix. Generated envelopes round-trip; generated
//! and mutated bytes never panic and either decode to a message or say what is wrong with them;
//! and every input in the fuzz corpus (`fuzz/corpus/wal_envelope`, grown by `cargo fuzz run
//! wal_envelope`) is decoded again here, so what the fuzzer once found stays fixed.

use bytes::Bytes;
use proptest::prelude::*;
use txoutbox_core::NewMessage;
use txoutbox_postgres_wal::{decode_envelope, encode_envelope};
use uuid::Uuid;

fn message() -> impl Strategy<Value = NewMessage> {
    (
        any::<u128>(),
        "[a-zA-Z0-9._-]{1,40}",
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        proptest::collection::vec(("[a-z-]{1,10}", "\\PC{0,20}"), 0..4),
    )
        .prop_map(|(id, topic, key, payload, headers)| {
            let mut seen = std::collections::BTreeSet::new();
            NewMessage {
                message_id: Uuid::from_u128(id),
                topic,
                key,
                payload,
                headers: headers
                    .into_iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .collect(),
                strategy: Default::default(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_encoded_message_decodes_to_itself(m in message()) {
        let decoded = decode_envelope(&Bytes::from(encode_envelope(&m))).unwrap();
        prop_assert_eq!(decoded.message_id, m.message_id);
        prop_assert_eq!(&*decoded.topic, m.topic.as_str());
        prop_assert_eq!(decoded.key.as_deref(), m.key.as_deref());
        prop_assert_eq!(decoded.payload.as_deref(), m.payload.as_deref());
        prop_assert_eq!(decoded.headers, m.headers);
    }

    #[test]
    fn any_bytes_decode_or_say_what_is_wrong(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(&bytes);
    }

    #[test]
    fn a_damaged_envelope_decodes_or_says_what_is_wrong(
        m in message(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = encode_envelope(&m);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        check(&bytes[..keep]);
        check(&bytes);
    }
}

/// Decodes `bytes`: a message with a non-empty topic, or a reason (never a panic, never an
/// empty reason).
fn check(bytes: &[u8]) {
    match decode_envelope(&Bytes::copy_from_slice(bytes)) {
        Ok(envelope) => assert!(!envelope.topic.is_empty()),
        Err(reason) => assert!(!reason.is_empty()),
    }
}

#[test]
fn every_input_of_the_fuzz_corpus_decodes_or_says_what_is_wrong() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wal_envelope");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&corpus).expect("the fuzz corpus") {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no inputs in {}", corpus.display());
}

#[test]
fn every_input_of_the_headers_corpus_gives_headers_or_a_reason() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/headers");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&corpus).expect("the fuzz corpus") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            match txoutbox_core::headers_from_json(Some(text)) {
                Ok(headers) => {
                    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
                    names.sort_unstable();
                    names.dedup();
                    assert_eq!(names.len(), headers.len(), "one value per name");
                }
                Err(reason) => assert!(!reason.is_empty()),
            }
        }
        inputs += 1;
    }
    assert!(inputs > 0, "no inputs in {}", corpus.display());
}
