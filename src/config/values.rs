//! Parsers of single setting values: keys, networks, lists, URLs.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use secrecy::SecretBox;
use url::Url;

use super::{ConfigError, TokenKey, bad};

/// Decodes a base64 32-byte key.
pub fn decode_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| "is not valid base64".to_string())?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("must decode to 32 bytes, not {}", b.len()))
}

pub(super) fn key(k: [u8; 32]) -> std::sync::Arc<TokenKey> {
    std::sync::Arc::new(SecretBox::new(Box::new(k)))
}

/// Parses `10.0.0.0/8, 192.168.1.7` (a bare address is a single-host network).
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = match part.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match part.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(format!("has an entry that is neither a CIDR nor an address: {part:?}")),
            },
        };
        nets.push(net.trunc());
    }
    Ok(nets)
}

pub(super) fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub(super) fn list(var: &str, v: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(bad(var, "must list at least one value"));
    }
    Ok(items)
}

pub(super) fn https_or_local(var: &str, v: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v).map_err(|_| bad(var, format!("must be a URL, got {v:?}")))?;
    let local = matches!(url.host_str(), Some("localhost") | Some("127.0.0.1") | Some("[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && local) {
        return Err(bad(var, "must be an https URL (http is allowed only for localhost)"));
    }
    Ok(url)
}

/// Refuses custody keys where one key id names two different keys: a token sealed under that
/// id could then be opened by only one of them (and which one would depend on order). Each
/// key is known by its given id, if any, and by the id derived from it; the same key given
/// twice is harmless.
pub(super) fn check_key_ids(keys: &super::TokenKeys) -> Result<(), ConfigError> {
    use secrecy::ExposeSecret;
    let mut named: Vec<(String, &[u8; 32], String)> = Vec::new();
    let current =
        ("TOKEN_ENCRYPTION_KEY_ID".to_string(), "TOKEN_ENCRYPTION_KEY".to_string(), &keys.current_id, &keys.current);
    let previous = keys.previous.iter().enumerate().map(|(i, (id, k))| {
        let entry = format!("TOKEN_ENCRYPTION_PREVIOUS_KEYS entry {}", i + 1);
        (entry.clone(), entry, id, k)
    });
    for (given_in, key_in, id, k) in std::iter::once(current).chain(previous) {
        let k = k.expose_secret();
        let ids = id.iter().map(|given| (given.clone(), given_in.clone()));
        let derived = std::iter::once((crate::identity::crypto::key_id_of(k), format!("the id derived from {key_in}")));
        for (id, place) in ids.chain(derived) {
            if let Some((_, _, first)) = named.iter().find(|(known, other, _)| *known == id && *other != k) {
                return Err(ConfigError(format!(
                    "key id {id} names two different keys ({first}; {place}): every key needs an id of its own. \
                     When the key changes, give it a new TOKEN_ENCRYPTION_KEY_ID and keep the old key in \
                     TOKEN_ENCRYPTION_PREVIOUS_KEYS under the id it had (id:base64key)"
                )));
            }
            named.push((id, k, place));
        }
    }
    Ok(())
}
