//! Persisted documents: Apollo's automatic persisted queries (APQ), and a trusted-documents
//! mode that runs only the documents of a manifest.
//!
//! A request names a document by `extensions.persistedQuery = {version: 1, sha256Hash}`.
//! Without a manifest, that is APQ: a hash alone runs the text registered under it, or is
//! answered `PersistedQueryNotFound` so the client sends hash and text together; a text is
//! registered only under its own SHA-256, in a cache bounded by bytes. With a manifest
//! (`TRUSTED_DOCUMENTS`), the manifest is the only registry: a hash or a text outside it is
//! refused with `PERSISTED_QUERY_NOT_IN_LIST` (`enforce`), or runs and is counted (`log`).

use std::sync::Arc;

use async_graphql::{ServerError, Value};
use sha2::{Digest, Sha256};

use super::guardrails::with_code;
use crate::config::{TrustedDocuments, TrustedMode};
use crate::error::code;

/// Registered APQ text held at most, in bytes.
const APQ_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Clone)]
struct TextBytes;

impl quick_cache::Weighter<String, Arc<str>> for TextBytes {
    fn weight(&self, key: &String, text: &Arc<str>) -> u64 {
        (key.len() + text.len()) as u64
    }
}

pub struct PersistedDocuments {
    apq: quick_cache::sync::Cache<String, Arc<str>, TextBytes>,
    trusted: Option<(TrustedMode, std::collections::HashMap<String, Arc<str>>)>,
}

fn error(message: &str, code: &str) -> ServerError {
    with_code(ServerError::new(message, None), code)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl PersistedDocuments {
    pub fn new(trusted: Option<&TrustedDocuments>) -> Self {
        PersistedDocuments {
            apq: quick_cache::sync::Cache::with_weighter(4096, APQ_BYTES, TextBytes),
            trusted: trusted.map(|t| {
                (t.mode, t.documents.iter().map(|(id, body)| (id.clone(), Arc::from(body.as_str()))).collect())
            }),
        }
    }

    /// The hash a request names, if it names one: `Err` for a malformed `persistedQuery`.
    fn named_hash(request: &async_graphql::Request) -> Result<Option<String>, ServerError> {
        let Some(pq) = request.extensions.get("persistedQuery") else { return Ok(None) };
        let Value::Object(pq) = pq else {
            return Err(error("extensions.persistedQuery must be an object.", code::BAD_REQUEST));
        };
        match pq.get("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            _ => return Err(error("Unsupported persisted query version.", code::PERSISTED_QUERY_NOT_SUPPORTED)),
        }
        match pq.get("sha256Hash") {
            Some(Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Some(h.to_ascii_lowercase()))
            }
            _ => Err(error("extensions.persistedQuery.sha256Hash must be 64 hex digits.", code::BAD_REQUEST)),
        }
    }

    /// Fills in the text of a request that names its document by hash, and applies the
    /// trusted list. Runs before the document is parsed.
    pub fn resolve(&self, request: &mut async_graphql::Request) -> Result<(), ServerError> {
        let hash = Self::named_hash(request)?;
        let has_text = !request.query.is_empty();
        if let Some((mode, documents)) = &self.trusted {
            let known = match (&hash, has_text) {
                (Some(h), false) => documents.get(h).cloned(),
                (_, true) => {
                    let own = sha256_hex(&request.query);
                    if hash.as_ref().is_some_and(|h| *h != own) {
                        return Err(error("provided sha does not match query", code::BAD_REQUEST));
                    }
                    documents.get(&own).cloned()
                }
                (None, false) => return Ok(()),
            };
            match (known, mode) {
                (Some(text), _) => {
                    if !has_text {
                        request.query = text.to_string();
                    }
                    return Ok(());
                }
                (None, TrustedMode::Enforce) => {
                    metrics::counter!(crate::metrics::UNTRUSTED_DOCUMENTS, "mode" => "enforce").increment(1);
                    return Err(error(
                        "This document is not in the server's list of trusted documents.",
                        code::PERSISTED_QUERY_NOT_IN_LIST,
                    ));
                }
                (None, TrustedMode::Log) => {
                    metrics::counter!(crate::metrics::UNTRUSTED_DOCUMENTS, "mode" => "log").increment(1);
                    // Runs as it would without the list (APQ included).
                }
            }
        }
        let Some(hash) = hash else { return Ok(()) };
        if has_text {
            if sha256_hex(&request.query) != hash {
                return Err(error("provided sha does not match query", code::BAD_REQUEST));
            }
            self.apq.insert(hash, Arc::from(request.query.as_str()));
            return Ok(());
        }
        match self.apq.get(&hash) {
            Some(text) => {
                request.query = text.to_string();
                Ok(())
            }
            // The message is the protocol: Apollo's link retries with the text on it.
            None => Err(error("PersistedQueryNotFound", code::PERSISTED_QUERY_NOT_FOUND)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(query: &str, hash: &str) -> async_graphql::Request {
        let mut r = async_graphql::Request::new(query);
        let ext: serde_json::Value = serde_json::json!({"version": 1, "sha256Hash": hash});
        r.extensions.insert("persistedQuery".into(), Value::from_json(ext).unwrap());
        r
    }

    fn code_of(e: &ServerError) -> String {
        match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(Value::String(c)) => c.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn apq_registers_a_text_under_its_own_hash_only() {
        let p = PersistedDocuments::new(None);
        let q = "{ __typename }";
        let h = sha256_hex(q);
        let e = p.resolve(&mut named("", &h)).unwrap_err();
        assert_eq!((e.message.as_str(), code_of(&e).as_str()), ("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND"));
        let e = p.resolve(&mut named("{ other }", &h)).unwrap_err();
        assert_eq!(code_of(&e), "BAD_REQUEST", "a text under another's hash");
        p.resolve(&mut named(q, &h)).unwrap();
        let mut by_hash = named("", &h);
        p.resolve(&mut by_hash).unwrap();
        assert_eq!(by_hash.query, q);
        let mut bad = named("", "xyz");
        assert_eq!(code_of(&p.resolve(&mut bad).unwrap_err()), "BAD_REQUEST");
    }

    #[test]
    fn the_apq_cache_stays_within_its_bytes() {
        let p = PersistedDocuments::new(None);
        for i in 0..20_000 {
            let q = format!("{{ a{i}: __typename {} }}", " ".repeat(200));
            p.resolve(&mut named(&q, &sha256_hex(&q))).unwrap();
        }
        assert!(p.apq.weight() <= APQ_BYTES, "{}", p.apq.weight());
    }

    #[test]
    fn a_trusted_list_runs_its_documents_and_refuses_or_counts_others() {
        let q = "query Mine { __typename }";
        let docs = TrustedDocuments {
            mode: TrustedMode::Enforce,
            documents: [(sha256_hex(q), q.to_string())].into_iter().collect(),
        };
        let p = PersistedDocuments::new(Some(&docs));
        let mut by_hash = named("", &sha256_hex(q));
        p.resolve(&mut by_hash).unwrap();
        assert_eq!(by_hash.query, q);
        p.resolve(&mut async_graphql::Request::new(q)).unwrap();
        let e = p.resolve(&mut async_graphql::Request::new("{ __typename }")).unwrap_err();
        assert_eq!(code_of(&e), "PERSISTED_QUERY_NOT_IN_LIST");
        // APQ cannot add to the list.
        let other = "{ x: __typename }";
        assert_eq!(
            code_of(&p.resolve(&mut named(other, &sha256_hex(other))).unwrap_err()),
            "PERSISTED_QUERY_NOT_IN_LIST"
        );
        let p = PersistedDocuments::new(Some(&TrustedDocuments { mode: TrustedMode::Log, ..docs }));
        p.resolve(&mut async_graphql::Request::new("{ __typename }")).unwrap();
    }
}
