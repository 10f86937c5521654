//! Plaid Link driven from outside, as an app does it offline: a link token from bankgraph's
//! GraphQL API, Link finished at the emulator (`POST /emulator/link/complete`, the screens a
//! user would click through), then the public token completed through GraphQL. The tests and
//! the load benchmark link through these two functions.

use anyhow::Context;
use serde_json::{Value, json};

const CREATE_LINK_TOKEN: &str =
    "mutation($input: CreatePlaidLinkTokenInput!) { createPlaidLinkToken(input: $input) { linkToken mode } }";

/// Where bankgraph and the emulator are, and who the caller is.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints<'a> {
    pub http: &'a reqwest::Client,
    /// bankgraph's GraphQL URL.
    pub graphql: &'a str,
    /// The emulator's base URL.
    pub emulator: &'a str,
    /// The caller's bearer token.
    pub bearer: &'a str,
}

/// A Link session finished at the emulator.
#[derive(Debug, Clone)]
pub struct LinkSession {
    pub public_token: String,
    pub item_id: String,
    /// bankgraph's answer to `createPlaidLinkToken`, as received.
    pub link_token_response: Value,
}

impl Endpoints<'_> {
    /// One GraphQL call as the caller.
    pub async fn graphql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(self.graphql)
            .bearer_auth(self.bearer)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .context("POST to bankgraph")?;
        r.json().await.context("bankgraph's answer is not JSON")
    }

    /// A Link session: `input` is `createPlaidLinkToken`'s input (`{}` for a new link,
    /// `{"platformItemId": …}` for update mode); `link` what the user picks at the emulator
    /// (`institution_id`, `username`, `password`, …).
    pub async fn link_session(&self, input: Value, link: Value) -> anyhow::Result<LinkSession> {
        let r = self.graphql(CREATE_LINK_TOKEN, json!({"input": input})).await?;
        let link_token = r["data"]["createPlaidLinkToken"]["linkToken"]
            .as_str()
            .with_context(|| format!("no link token: {r}"))?
            .to_string();
        let mut body = link;
        body["link_token"] = json!(link_token);
        let done: Value = self
            .http
            .post(format!("{}/emulator/link/complete", self.emulator))
            .json(&body)
            .send()
            .await
            .context("POST to the emulator")?
            .json()
            .await
            .context("the emulator's answer is not JSON")?;
        Ok(LinkSession {
            public_token: done["public_token"]
                .as_str()
                .with_context(|| format!("no public token: {done}"))?
                .to_string(),
            item_id: done["item_id"].as_str().with_context(|| format!("no item: {done}"))?.to_string(),
            link_token_response: r,
        })
    }

    /// A new link from start to end: the session, then `completion` (a `completePlaidLink`
    /// document taking `$input`) with its public token. Returns bankgraph's answer.
    pub async fn link_via(&self, link: Value, completion: &str) -> anyhow::Result<(LinkSession, Value)> {
        let session = self.link_session(json!({}), link).await?;
        let done = self.graphql(completion, json!({"input": {"publicToken": session.public_token}})).await?;
        Ok((session, done))
    }
}
