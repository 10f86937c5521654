//! Access-token custody: AES-256-GCM with a random 96-bit nonce, the associated data binding
//! the ciphertext to its user and Plaid item, and a key id stored beside it for rotation.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A sealed access token as stored: which key, and `base64(nonce || ciphertext || tag)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub blob: String,
}

/// The keys: one that seals, and older ones that can still open.
pub struct TokenCipher {
    current_id: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher").field("current_key_id", &self.current_id).finish_non_exhaustive()
    }
}

/// A key's id: given, or the first 8 bytes of its SHA-256 in hex (not secret: it names a key).
pub fn key_id_of(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

fn aad(user_id: &str, item_id: &str) -> Vec<u8> {
    let mut a = b"bankgraph:plaid-access-token:v1".to_vec();
    for part in [user_id, item_id] {
        a.push(0);
        a.extend_from_slice(part.as_bytes());
    }
    a
}

impl TokenCipher {
    /// The cipher of the configured custody keys.
    pub fn from_keys(keys: &crate::config::TokenKeys) -> Self {
        let previous: Vec<(Option<String>, [u8; 32])> =
            keys.previous.iter().map(|(id, k)| (id.clone(), *k.expose_secret())).collect();
        TokenCipher::new(*keys.current.expose_secret(), keys.current_id.clone(), &previous)
    }

    /// `current` seals; `previous` only open tokens sealed before a rotation. Each key is
    /// known by the id it was given (`TOKEN_ENCRYPTION_KEY_ID`, or `id:` before a previous
    /// key) and by its derived id, so a token opens whichever way its key was named when it
    /// was sealed.
    pub fn new(current: [u8; 32], current_id: Option<String>, previous: &[(Option<String>, [u8; 32])]) -> Self {
        let cipher = |k: &[u8; 32]| Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k));
        let mut keys = HashMap::new();
        for (id, k) in previous {
            keys.insert(key_id_of(k), cipher(k));
            if let Some(id) = id {
                keys.insert(id.clone(), cipher(k));
            }
        }
        keys.insert(key_id_of(&current), cipher(&current));
        let current_id = current_id.unwrap_or_else(|| key_id_of(&current));
        keys.insert(current_id.clone(), cipher(&current));
        TokenCipher { current_id, keys }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    /// Whether a token sealed under this key id can be opened.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn seal(&self, token: &SecretString, user_id: &str, item_id: &str) -> anyhow::Result<Sealed> {
        let cipher = self.keys.get(&self.current_id).ok_or_else(|| anyhow::anyhow!("current key missing"))?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(user_id, item_id);
        let ct = cipher
            .encrypt(&nonce, Payload { msg: token.expose_secret().as_bytes(), aad: &aad })
            .map_err(|_| anyhow::anyhow!("access token encryption failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(Sealed { key_id: self.current_id.clone(), blob: STANDARD.encode(blob) })
    }

    /// Opens a sealed token; fails if the key is unknown or the token was sealed for another
    /// user or item (the associated data does not match).
    pub fn open(&self, sealed: &Sealed, user_id: &str, item_id: &str) -> anyhow::Result<SecretString> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| anyhow::anyhow!("no key with id {} to open an access token", sealed.key_id))?;
        let blob = STANDARD.decode(&sealed.blob).map_err(|_| anyhow::anyhow!("sealed access token is not base64"))?;
        anyhow::ensure!(blob.len() > 12 + 16, "sealed access token is too short");
        let (nonce, ct) = blob.split_at(12);
        let aad = aad(user_id, item_id);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| anyhow::anyhow!("access token failed authentication (wrong key, user or item)"))?;
        let text = String::from_utf8(plain).map_err(|_| anyhow::anyhow!("access token is not UTF-8"))?;
        Ok(SecretString::from(text))
    }

    /// Whether this token should be sealed again with the current key.
    pub fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_for_its_user_and_item() {
        let c = TokenCipher::new([7; 32], None, &[]);
        let t = SecretString::from("access-sandbox-1234");
        let s = c.seal(&t, "user-1", "item-1").unwrap();
        assert!(!s.blob.contains("access"));
        assert_eq!(c.open(&s, "user-1", "item-1").unwrap().expose_secret(), "access-sandbox-1234");
        assert!(c.open(&s, "user-2", "item-1").is_err());
        assert!(c.open(&s, "user-1", "item-2").is_err());
        let s2 = c.seal(&t, "user-1", "item-1").unwrap();
        assert_ne!(s.blob, s2.blob, "a fresh nonce every time");
    }

    #[test]
    fn a_rotated_key_still_opens_old_tokens() {
        let old = TokenCipher::new([1; 32], None, &[]);
        let s = old.seal(&SecretString::from("access-x"), "u", "i").unwrap();
        let new = TokenCipher::new([2; 32], None, &[(None, [1; 32])]);
        assert!(new.is_stale(&s));
        assert_eq!(new.open(&s, "u", "i").unwrap().expose_secret(), "access-x");
        let without = TokenCipher::new([2; 32], None, &[]);
        assert!(without.open(&s, "u", "i").is_err());
    }

    #[test]
    fn a_rotation_with_custom_ids_opens_every_token() {
        let first = TokenCipher::new([1; 32], Some("2026-01".into()), &[]);
        let s = first.seal(&SecretString::from("access-y"), "u", "i").unwrap();
        assert_eq!(s.key_id, "2026-01");
        let second = TokenCipher::new([2; 32], Some("2026-06".into()), &[(Some("2026-01".into()), [1; 32])]);
        assert!(second.has_key("2026-01") && second.has_key("2026-06"));
        assert_eq!(second.open(&s, "u", "i").unwrap().expose_secret(), "access-y");
        let resealed = second.seal(&second.open(&s, "u", "i").unwrap(), "u", "i").unwrap();
        assert_eq!(resealed.key_id, "2026-06");
        // A key given a custom id later still opens what it sealed under its derived id.
        let derived = TokenCipher::new([2; 32], None, &[]).seal(&SecretString::from("z"), "u", "i").unwrap();
        assert_eq!(second.open(&derived, "u", "i").unwrap().expose_secret(), "z");
        assert!(!second.has_key("2025-12"));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(crate::config::decode_key(&STANDARD.encode([0u8; 32])).is_ok());
        assert!(crate::config::decode_key(&STANDARD.encode([0u8; 16])).is_err());
        assert!(crate::config::decode_key("not base64!").is_err());
    }
}
