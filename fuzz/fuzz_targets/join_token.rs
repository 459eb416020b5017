//! Fuzzes join-token parsing (`JoinToken::parse`, which the agent applies to the
//! operator's `--token` and the server to an enrolment body) and CA pins
//! (`CaPin::from_str`), plus the join-secret check the server runs on the parsed secret.
//!
//! Checked: nothing panics; an accepted token has the documented shape (12 lowercase
//! hex id, 43-character base64url secret), prints as it was given (the pin's hex in
//! lowercase) and survives `to_token_string` → `parse` unchanged; its secret verifies
//! against its own hash and not against another's; an accepted pin prints in a form
//! that parses back to the same pin.
#![no_main]

use adit_pki::{hash_secret, verify_secret, CaPin, JoinToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(token) = JoinToken::parse(&text) {
        assert_eq!(token.id.len(), 12);
        assert!(token
            .id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(token.secret.expose().len(), 43);
        let printed = token.to_token_string();
        // Printed as given, except that the pin's hex is printed in lowercase.
        let (given_head, given_pin) = text.trim().rsplit_once('.').expect("four parts");
        let (head, pin) = printed.expose().rsplit_once('.').expect("four parts");
        assert_eq!(head, given_head, "a token is printed as it was given");
        assert_eq!(pin, given_pin.to_ascii_lowercase());
        let again = JoinToken::parse(printed.expose()).expect("a printed token parses");
        assert_eq!(again, token);
        let hash = hash_secret(token.secret.expose());
        assert!(verify_secret(token.secret.expose(), &hash));
        assert!(!verify_secret(token.secret.expose(), &hash_secret("other")));
    }

    if let Ok(pin) = text.parse::<CaPin>() {
        assert_eq!(
            pin.to_string()
                .parse::<CaPin>()
                .expect("printed pin parses"),
            pin
        );
        assert_eq!(pin.to_hex().parse::<CaPin>().expect("hex pin parses"), pin);
    }

    // The server compares a presented secret with a stored hash; neither may panic it.
    let _ = verify_secret(&text, &text);
});
