//! What tests do with a `TestApp`: GraphQL calls, the emulator's control API, linking
//! (through the same driver the load benchmark uses), webhooks, and waiting for a condition.

use std::time::Duration;

use bankgraph::emulator::drive::Endpoints;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::app::TestApp;
use super::logs::bodies;
use super::queries::{ACCOUNTS, COMPLETE_LINK, TRANSACTIONS};

impl TestApp {
    /// Sends raw headers and a JSON body to the GraphQL endpoint.
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: Value) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.post(&self.graphql).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        bodies().lock().unwrap().push(text.clone());
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A GraphQL call as `token` (or anonymous).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.post_raw(&headers, json!({"query": query, "variables": variables})).await.2
    }

    pub async fn emu_post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.emulator.url())).json(&body).send().await.unwrap();
        r.json().await.unwrap()
    }

    pub async fn emu_get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.emulator.url())).send().await.unwrap().json().await.unwrap()
    }

    /// Plaid Link as a user would run it: a link token from bankgraph, Link finished at the
    /// emulator. Returns (public token, emulator item id).
    pub async fn link_session(&self, token: &str, input: Value, link: Value) -> (String, String) {
        let session = self.endpoints(token).link_session(input, link).await.unwrap();
        bodies().lock().unwrap().push(session.link_token_response.to_string());
        (session.public_token, session.item_id)
    }

    /// The shared Link driver, as `token`.
    fn endpoints<'a>(&'a self, token: &'a str) -> Endpoints<'a> {
        Endpoints { http: &self.http, graphql: &self.graphql, emulator: &self.emulator_url, bearer: token }
    }

    /// A complete new link; returns the `completePlaidLink` payload.
    pub async fn link(&self, token: &str) -> Value {
        self.link_at(token, "ins_109508").await
    }

    pub async fn link_at(&self, token: &str, institution: &str) -> Value {
        let link = json!({"institution_id": institution});
        let (session, r) = self.endpoints(token).link_via(link, COMPLETE_LINK).await.unwrap();
        let mut b = bodies().lock().unwrap();
        b.push(session.link_token_response.to_string());
        b.push(r.to_string());
        r["data"]["completePlaidLink"].clone()
    }

    pub async fn complete(&self, token: &str, public_token: &str, item: Option<&str>) -> Value {
        let mut input = json!({"publicToken": public_token});
        if let Some(i) = item {
            input["platformItemId"] = json!(i);
        }
        self.gql(Some(token), COMPLETE_LINK, json!({"input": input})).await
    }

    pub async fn accounts(&self, token: &str, input: Value) -> Value {
        let r = self.gql(Some(token), ACCOUNTS, json!({"input": input})).await;
        r["data"]["getPlaidBankAccounts"].clone()
    }

    pub async fn transactions(&self, token: &str, input: Value) -> Value {
        self.gql(Some(token), TRANSACTIONS, json!({"input": input})).await
    }

    /// Waits until the caller's stored history has `count` transactions.
    pub async fn wait_for_history(&self, token: &str, count: i64) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.transactions(token, json!({"paginate": {"limit": 1}})).await;
            if last["data"]["getPlaidBankTransactions"]["totalCount"].as_i64() == Some(count) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("history never reached {count}: {last}");
    }

    /// The bank asks the user to log in again: the emulator's item goes to ITEM_LOGIN_REQUIRED
    /// (`/sandbox/item/reset_login`) and its ITEM ERROR webhook reaches bankgraph.
    pub async fn reset_login(&self, item: &str) {
        let view = self.emu_get(&format!("/emulator/items/{item}")).await;
        let access = view["access_token"].as_str().unwrap();
        let r = self
            .http
            .post(format!("{}/sandbox/item/reset_login", self.emulator.url()))
            .json(&json!({"client_id": "emulator_client_id", "secret": "emulator_sandbox_secret", "access_token": access}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Posts a raw webhook to the internal listener; returns the HTTP status.
    pub async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> u16 {
        let mut req =
            self.http.post(format!("{}/webhooks/plaid", self.internal)).header("content-type", "application/json");
        if let Some(s) = signature {
            req = req.header("plaid-verification", s);
        }
        req.body(body.to_vec()).send().await.unwrap().status().as_u16()
    }

    /// Waits until `check` holds, polling; panics with `what` after 30 s.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never happened: {what}");
    }

    /// Our stored transactions: Plaid transaction id -> (historical id, status, amount, category).
    pub async fn stored_transactions(
        &self,
        token: &str,
        filter: Value,
    ) -> std::collections::BTreeMap<String, (String, String, String, String)> {
        let mut out = std::collections::BTreeMap::new();
        let mut offset = 0;
        loop {
            let mut input = filter.clone();
            input["paginate"] = json!({"limit": 100, "offset": offset});
            let r = self.transactions(token, input).await;
            let page = &r["data"]["getPlaidBankTransactions"];
            let txs = page["transactions"].as_array().unwrap_or_else(|| panic!("{r}"));
            for t in txs {
                out.insert(
                    t["transactionId"].as_str().unwrap().to_string(),
                    (
                        t["historicalBankTransactionId"].as_str().unwrap().to_string(),
                        t["transactionStatus"].as_str().unwrap().to_string(),
                        t["amount"].as_str().unwrap().to_string(),
                        t["category"].as_str().unwrap_or_default().to_string(),
                    ),
                );
            }
            offset += txs.len();
            if txs.is_empty() || offset as i64 >= page["totalCount"].as_i64().unwrap() {
                return out;
            }
        }
    }

    /// The emulator's current transaction ids of an item.
    pub async fn upstream_ids(&self, item_id: &str) -> std::collections::BTreeSet<String> {
        let v = self.emu_get(&format!("/emulator/items/{item_id}/transactions")).await;
        v["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["transaction_id"].as_str().unwrap().to_string())
            .collect()
    }
}
