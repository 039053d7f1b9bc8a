//! The WAL envelope decoder on any bytes: it must never panic, and a message it accepts must
//! survive being encoded and decoded again unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use txoutbox_core::NewMessage;
use txoutbox_postgres_wal::{decode_envelope, encode_envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode_envelope(&Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(!envelope.topic.is_empty());
    let again = NewMessage {
        message_id: envelope.message_id,
        topic: envelope.topic.to_string(),
        key: envelope.key.as_deref().map(<[u8]>::to_vec),
        payload: envelope.payload.as_deref().map(<[u8]>::to_vec),
        headers: envelope.headers.clone(),
        strategy: Default::default(),
    };
    let round = decode_envelope(&Bytes::from(encode_envelope(&again))).expect("an encoded envelope decodes");
    assert_eq!(round, envelope);
});
