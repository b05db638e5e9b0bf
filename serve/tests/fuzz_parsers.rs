//! Property tests of every parser that reads what a client or a configuration file sends:
//! nothing panics, whatever the bytes, and what is accepted is what was meant.

use axum::http::{HeaderMap, HeaderValue, header};
use opsplane_serve::auth::{Presented, htpasswd, presented};
use opsplane_serve::ratelimit::Limits;
use proptest::prelude::*;

fn headers(value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, value.clone());
    h.insert("x-polaris-token", value);
    Some(h)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_authorization_header_is_read_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Some(h) = headers(&value) {
            let _ = presented(&h);
            let _ = opsplane_serve::bearer::presented(&h);
        }
    }

    #[test]
    fn bearer_tokens_come_back_as_sent(token in "[A-Za-z0-9._~+/=-]{1,80}", scheme in "(?i)bearer") {
        let h = headers(format!("{scheme} {token}").as_bytes()).unwrap();
        prop_assert_eq!(presented(&h), Presented::Bearer(token.as_str()));
    }

    #[test]
    fn basic_credentials_decode_to_user_and_password(user in "[a-z][a-z0-9]{0,20}", password in "[ -~]{0,40}") {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let h = headers(format!("Basic {encoded}").as_bytes()).unwrap();
        prop_assert_eq!(presented(&h), Presented::Basic(user, password));
    }

    #[test]
    fn any_htpasswd_text_is_parsed_or_refused_naming_a_line(text in "[ -~\n]{0,300}") {
        if let Err(e) = htpasswd::parse(&text) {
            prop_assert!(e.starts_with("line "), "{}", e);
        }
    }

    #[test]
    fn any_rate_limit_rule_is_parsed_or_refused(text in "[ -~]{0,80}") {
        let _ = Limits::parse(&text);
    }
}
