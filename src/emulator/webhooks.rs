//! Webhooks signed exactly as Plaid signs them: the body is JSON with a 2-space indent, and
//! `Plaid-Verification` carries an ES256 JWT `{iat, request_body_sha256}` whose `kid` names a
//! key served by `/webhook_verification_key/get`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plaid::wire::Jwk;

/// One signing key: the private half and its public JWK.
pub struct SigningKey {
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl SigningKey {
    /// A fresh P-256 key with a random `kid`.
    pub fn generate(created_at: i64) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("could not generate a P-256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("could not load the generated P-256 key"))?;
        // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let point = pair.public_key().as_ref();
        anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected public key encoding");
        let jwk = Jwk {
            alg: "ES256".into(),
            crv: "P-256".into(),
            kid: uuid::Uuid::new_v4().to_string(),
            kty: "EC".into(),
            key_use: "sig".into(),
            x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            y: URL_SAFE_NO_PAD.encode(&point[33..65]),
            created_at,
            expired_at: None,
        };
        Ok(SigningKey { encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk })
    }

    /// The `Plaid-Verification` value for `body`, issued at `iat` (unix seconds).
    pub fn sign(&self, body: &[u8], iat: i64) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iat: i64,
            request_body_sha256: &'a str,
        }
        let digest = hex::encode(Sha256::digest(body));
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.jwk.kid.clone());
        header.typ = Some("JWT".into());
        Ok(jsonwebtoken::encode(&header, &Claims { iat, request_body_sha256: &digest }, &self.encoding)?)
    }
}

/// Serialises a webhook body the way Plaid does: JSON with a 2-space indent.
pub fn body_bytes(value: &serde_json::Value) -> Vec<u8> {
    // serde_json's pretty printer indents with two spaces.
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Plaid gives up on a receiver after 10 s.
    pub timeout: Duration,
    /// Plaid retries a failed delivery up to twice, "a few minutes" apart.
    pub retries: u32,
    pub retry_delay: Duration,
}

/// The record of one webhook, for `/emulator/webhooks`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub id: u64,
    pub item_id: Option<String>,
    pub webhook_type: String,
    pub webhook_code: String,
    pub url: String,
    pub attempts: u32,
    /// HTTP status of the last attempt, if any answer came.
    pub last_status: Option<u16>,
    pub delivered: bool,
}
