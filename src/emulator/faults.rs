//! Faults on demand, for reliability tests: latency, HTTP 5xx, any Plaid error, rate limits and
//! dropped connections, per endpoint; and Plaid's per-item rate limits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Waits `ms` before answering normally.
    Latency { ms: u64 },
    /// Answers Plaid's `INTERNAL_SERVER_ERROR` (500) or `PLANNED_MAINTENANCE` (503).
    HttpError { status: u16 },
    /// Answers this Plaid error code with its documented type and status.
    PlaidError { error_code: String },
    /// Answers the endpoint's `RATE_LIMIT_EXCEEDED` code with HTTP 429.
    RateLimit,
    /// Sends the headers, then drops the connection before the body.
    DropConnection,
}

/// A fault rule, as posted to `/emulator/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub id: u64,
    /// A Plaid path such as `/accounts/get`, or `*` for every endpoint.
    pub endpoint: String,
    /// How many calls it applies to; absent means until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// The fault rules in force.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    next_id: u64,
}

impl Faults {
    pub fn add(&mut self, mut rule: FaultRule) -> FaultRule {
        self.next_id += 1;
        rule.id = self.next_id;
        self.rules.push(rule.clone());
        rule
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The faults that apply to one call of `endpoint`, consuming one use of each. Latency
    /// combines with one failure; the first failing rule wins.
    pub fn take(&mut self, endpoint: &str) -> Vec<FaultKind> {
        let mut out = Vec::new();
        let mut failing = false;
        for rule in self.rules.iter_mut() {
            if rule.endpoint != "*" && rule.endpoint != endpoint {
                continue;
            }
            let is_latency = matches!(rule.kind, FaultKind::Latency { .. });
            if !is_latency && failing {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                if *t == 0 {
                    continue;
                }
                *t -= 1;
            }
            failing |= !is_latency;
            out.push(rule.kind.clone());
        }
        self.rules.retain(|r| r.times != Some(0));
        out
    }
}

/// Which rate limits the emulator enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitMode {
    /// None (the default: tests stay deterministic).
    #[default]
    Off,
    /// Plaid's Sandbox per-item limits.
    Sandbox,
    /// Plaid's Production per-item limits.
    Production,
}

/// (per-minute limit in production, in sandbox, error code) of an endpoint's per-item limit
/// (plaid-reference §8.1).
pub fn item_limit(endpoint: &str) -> Option<(u32, u32, &'static str)> {
    Some(match endpoint {
        "/accounts/balance/get" => (5, 25, "BALANCE_LIMIT"),
        "/accounts/get" => (15, 100, "ACCOUNTS_LIMIT"),
        "/auth/get" => (15, 100, "AUTH_LIMIT"),
        "/identity/get" => (15, 100, "IDENTITY_LIMIT"),
        "/item/get" => (15, 40, "ITEM_GET_LIMIT"),
        "/item/remove" => (30, 100, "RATE_LIMIT"),
        "/transactions/get" => (30, 80, "TRANSACTIONS_LIMIT"),
        "/transactions/sync" => (50, 50, "TRANSACTIONS_SYNC_LIMIT"),
        "/transactions/refresh" => (2, 2, "RATE_LIMIT"),
        _ => return None,
    })
}

/// The error code a `rate_limit` fault answers on `endpoint`.
pub fn rate_limit_code(endpoint: &str) -> &'static str {
    item_limit(endpoint).map(|l| l.2).unwrap_or("RATE_LIMIT")
}

/// Sliding one-minute windows of calls per (endpoint, item).
#[derive(Debug, Default)]
pub struct RateWindows {
    calls: HashMap<(String, String), VecDeque<Instant>>,
}

impl RateWindows {
    /// Records a call; returns the error code when it is over the limit.
    pub fn check(&mut self, mode: RateLimitMode, endpoint: &str, item_id: &str) -> Option<&'static str> {
        let (prod, sandbox, code) = item_limit(endpoint)?;
        let limit = match mode {
            RateLimitMode::Off => return None,
            RateLimitMode::Sandbox => sandbox,
            RateLimitMode::Production => prod,
        };
        let now = Instant::now();
        let window = self.calls.entry((endpoint.to_string(), item_id.to_string())).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            window.pop_front();
        }
        if window.len() as u32 >= limit {
            return Some(code);
        }
        window.push_back(now);
        None
    }

    pub fn clear(&mut self) {
        self.calls.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_fault_runs_out_and_latency_stacks_with_a_failure() {
        let mut f = Faults::default();
        f.add(FaultRule {
            id: 0,
            endpoint: "/accounts/get".into(),
            times: Some(1),
            kind: FaultKind::HttpError { status: 500 },
        });
        f.add(FaultRule { id: 0, endpoint: "*".into(), times: None, kind: FaultKind::Latency { ms: 5 } });
        assert_eq!(f.take("/accounts/get"), vec![FaultKind::HttpError { status: 500 }, FaultKind::Latency { ms: 5 }]);
        assert_eq!(f.take("/accounts/get"), vec![FaultKind::Latency { ms: 5 }]);
        assert_eq!(f.list().len(), 1);
    }

    #[test]
    fn production_limits_allow_five_live_balance_calls_a_minute() {
        let mut w = RateWindows::default();
        for _ in 0..5 {
            assert_eq!(w.check(RateLimitMode::Production, "/accounts/balance/get", "i"), None);
        }
        assert_eq!(w.check(RateLimitMode::Production, "/accounts/balance/get", "i"), Some("BALANCE_LIMIT"));
        assert_eq!(w.check(RateLimitMode::Production, "/accounts/balance/get", "other"), None);
        assert_eq!(w.check(RateLimitMode::Off, "/accounts/balance/get", "i"), None);
    }

    #[test]
    fn fault_rules_read_as_flat_json() {
        let r: FaultRule = serde_json::from_str(
            r#"{"endpoint":"/item/get","kind":"plaid_error","error_code":"ITEM_LOGIN_REQUIRED","times":2}"#,
        )
        .unwrap();
        assert_eq!(r.kind, FaultKind::PlaidError { error_code: "ITEM_LOGIN_REQUIRED".into() });
    }
}
