//! Plaid webhook verification (`Plaid-Verification`, an ES256 JWT over the body's SHA-256).
//! Three kinds of input, by the first byte: a header and a body of the fuzzer's own (never
//! verified: it cannot sign with our key); a body signed with a key the verifier holds
//! (verified, and the same signature refused for the body with one byte changed); and that
//! signed header with the fuzzer's bytes spliced in (never verified unless it still decodes to
//! the same token). No input panics or hangs.
#![no_main]

use std::sync::{Arc, OnceLock};

use bankgraph::emulator::webhooks::SigningKey;
use bankgraph::plaid::webhook::{KeyShelf, StoredKey};
use bankgraph::plaid::{PlaidClient, PlaidClientConfig, WebhookRejection, WebhookVerifier};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

struct Shelf(StoredKey);

#[async_trait::async_trait]
impl KeyShelf for Shelf {
    async fn load(&self) -> anyhow::Result<Vec<StoredKey>> {
        Ok(vec![self.0.clone()])
    }
    async fn save(&self, _: &StoredKey) -> anyhow::Result<()> {
        Ok(())
    }
    async fn forget(&self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    verifier: WebhookVerifier,
    key: SigningKey,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let now = chrono::Utc::now();
        let key = SigningKey::generate(now.timestamp()).expect("key");
        // Plaid is out of reach: a kid the verifier does not hold is never found.
        let config = PlaidClientConfig::new(
            "http://127.0.0.1:9".parse().expect("url"),
            "fuzz",
            secrecy::SecretString::from("fuzz-secret".to_string()),
        );
        let plaid = {
            let _guard = runtime.enter();
            PlaidClient::new(config).expect("client")
        };
        let shelf = Arc::new(Shelf(StoredKey { jwk: key.jwk.clone(), fetched_at: now }));
        let verifier = WebhookVerifier::new(plaid).with_shelf(shelf);
        assert_eq!(runtime.block_on(verifier.load()).expect("load"), 1);
        Harness { runtime, verifier, key }
    })
}

fn verify(h: &Harness, header: &[u8], body: &[u8]) -> Option<Result<String, WebhookRejection>> {
    let value = HeaderValue::from_bytes(header).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert("plaid-verification", value);
    Some(h.runtime.block_on(h.verifier.verify(&headers, body)).map(|v| v.kid))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let h = harness();
    match mode % 3 {
        0 => {
            let (header, body) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            if let Some(answer) = verify(h, header, body) {
                assert!(answer.is_err(), "a header the fuzzer wrote verified: {:?}", String::from_utf8_lossy(header));
            }
        }
        1 => {
            let signed = h.key.sign(rest, chrono::Utc::now().timestamp()).expect("sign");
            let answer = verify(h, signed.as_bytes(), rest).expect("a JWT is a header value");
            assert_eq!(answer.as_deref().ok(), Some(h.key.jwk.kid.as_str()), "{answer:?}");
            if let Some((first, tail)) = rest.split_first() {
                let changed: Vec<u8> = std::iter::once(first ^ 1).chain(tail.iter().copied()).collect();
                let answer = verify(h, signed.as_bytes(), &changed).expect("a JWT is a header value");
                assert!(matches!(answer, Err(WebhookRejection::BodyMismatch)), "{answer:?}");
            }
        }
        _ => {
            let body = b"{\"webhook_type\":\"TRANSACTIONS\",\"webhook_code\":\"SYNC_UPDATES_AVAILABLE\"}";
            let signed = h.key.sign(body, chrono::Utc::now().timestamp()).expect("sign");
            let Some((&at, spliced)) = rest.split_first() else { return };
            let at = usize::from(at) * signed.len() / 256;
            let mut header = signed.as_bytes()[..at].to_vec();
            header.extend_from_slice(spliced);
            header.extend_from_slice(&signed.as_bytes()[at..]);
            if let Some(Ok(_)) = verify(h, &header, body) {
                // Only a text that still reads as the signed token may verify.
                let same = std::str::from_utf8(&header).ok().is_some_and(|t| decodes_as(t, &signed));
                assert!(same, "a tampered header verified: {:?}", String::from_utf8_lossy(&header));
            }
        }
    }
});

/// Whether `text` is the JWT `signed` with each part's base64 read leniently (trailing bits).
fn decodes_as(text: &str, signed: &str) -> bool {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let parts = |t: &str| t.split('.').map(|p| engine.decode(p.trim()).ok()).collect::<Vec<_>>();
    parts(text) == parts(signed)
}
