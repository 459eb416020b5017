//! Fuzzes the decoder of control-stream messages (`adit_api::ControlMessage::decode`),
//! which both ends apply to every CONTROL frame payload the peer sends.
//!
//! Checked: nothing panics; a decoded message re-encodes to JSON that decodes to the
//! same message; only JSON objects with a `type` are accepted.
#![no_main]

use adit_api::ControlMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ControlMessage::decode(data) else {
        return;
    };
    // Only a JSON object naming its type is a message.
    let value: serde_json::Value = serde_json::from_slice(data).expect("a decoded message is JSON");
    assert!(
        value.get("type").is_some_and(serde_json::Value::is_string),
        "decoded a message without a `type`: {value}"
    );
    let wire = message.encode();
    assert!(!wire.is_empty(), "a decoded message encodes to nothing");
    let again = ControlMessage::decode(&wire).expect("an encoded message decodes");
    assert_eq!(again, message, "decode(encode(m)) != m");
});
