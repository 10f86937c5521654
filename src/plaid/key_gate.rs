//! Who may make bankgraph ask Plaid for a webhook key, and when. A forged webhook names any
//! `kid` it likes, and nothing about it can be checked before Plaid's key is in hand, so the
//! lookups strangers can cause are bounded here, without starving the genuine new kid that a
//! key rotation (or a restart) brings:
//!
//! - Plaid's "no such key" is believed for a while, per kid (a bounded negative cache).
//! - Kids met for the first time share a small token bucket ("first sight"). A kid refused for
//!   want of a token is remembered, and when it comes again (Plaid delivers a refused webhook
//!   again, and signs every webhook with its current key) it draws on a second bucket of its
//!   own ("second sight"). Forged webhooks with a fresh random kid each never come again, so
//!   however fast they arrive, they use up the first bucket only: Plaid's new key is looked up
//!   at the latest on its second delivery.
//! - When the key endpoint fails (an outage, a rate limit), no key is looked up until an
//!   exponential backoff with jitter has passed; a success ends it. A failure is not "no such
//!   key": the webhook gets a retryable 503.
//!
//! Every decision takes `now`, so the rules are tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// How webhook key lookups are rationed (`WEBHOOK_KEY_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookupPolicy {
    /// Never-seen kids looked up at once before lookups are throttled; the second-sight bucket
    /// holds as many.
    pub burst: NonZeroU32,
    /// Tokens each bucket regains per minute.
    pub per_minute: NonZeroU32,
    /// How long Plaid's "no such key" is believed for a kid.
    pub unknown_kid_ttl: Duration,
    /// The first pause after a failed lookup; each further failure doubles it, up to
    /// `backoff_max` (plus up to as much again of random jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for KeyLookupPolicy {
    fn default() -> Self {
        KeyLookupPolicy {
            burst: NonZeroU32::new(3).expect("3 is not zero"),
            per_minute: NonZeroU32::new(3).expect("3 is not zero"),
            unknown_kid_ttl: Duration::from_secs(10 * 60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

/// Kids remembered as unknown to Plaid, at most (forged ones are random).
const UNKNOWN_KIDS_MAX: usize = 1024;
/// Refused kids remembered for their second sighting, at most. The oldest is forgotten first,
/// so a genuine kid outlives this many forged ones (at one a second, over an hour; Plaid
/// delivers again within minutes).
const WAITING_KIDS_MAX: usize = 4096;

/// Why a lookup may not happen now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The bucket of this kid's sighting is empty.
    Rate,
    /// The key endpoint failed recently.
    Backoff,
}

impl Throttle {
    /// The `reason` label of the throttled-lookups counter.
    pub fn label(self) -> &'static str {
        match self {
            Throttle::Rate => "rate",
            Throttle::Backoff => "backoff",
        }
    }
}

/// What a lookup of Plaid's key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    Found,
    /// Plaid does not know the kid.
    Unknown,
    /// No answer about the kid (an outage, a timeout, a rate limit).
    Failed,
}

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The rationing state of one verifier. Not async: callers hold it only between awaits.
pub struct LookupGate<C: Clock = DefaultClock> {
    first_sight: Bucket<C>,
    second_sight: Bucket<C>,
    unknown: Recent,
    waiting: Recent,
    backoff: Backoff,
    unknown_ttl: Duration,
}

impl LookupGate<DefaultClock> {
    pub fn new(policy: &KeyLookupPolicy) -> Self {
        Self::with_clock(policy, &DefaultClock::default())
    }
}

impl<C: Clock + Clone> LookupGate<C> {
    /// A gate whose buckets refill by `clock` (tests pass a fake one).
    pub fn with_clock(policy: &KeyLookupPolicy, clock: &C) -> Self {
        let quota = Quota::per_minute(policy.per_minute).allow_burst(policy.burst);
        LookupGate {
            first_sight: RateLimiter::direct_with_clock(quota, clock.clone()),
            second_sight: RateLimiter::direct_with_clock(quota, clock.clone()),
            unknown: Recent::new(UNKNOWN_KIDS_MAX),
            waiting: Recent::new(WAITING_KIDS_MAX),
            backoff: Backoff::new(policy),
            unknown_ttl: policy.unknown_kid_ttl,
        }
    }

    /// Whether Plaid said recently that it does not know `kid`.
    pub fn is_unknown(&self, kid: &str, now: Instant) -> bool {
        self.unknown.seen_within(kid, now, self.unknown_ttl)
    }

    /// Whether `kid` may be looked up now. `known`: a key of Plaid's we hold (a refresh, not
    /// rationed by the buckets). A refused never-seen kid is remembered for its next sighting.
    pub fn admit(&mut self, kid: &str, known: bool, now: Instant) -> Result<(), Throttle> {
        if self.backoff.active(now) {
            if !known {
                self.waiting.insert(kid, now);
            }
            return Err(Throttle::Backoff);
        }
        if known {
            return Ok(());
        }
        let bucket = if self.waiting.contains(kid) { &self.second_sight } else { &self.first_sight };
        if bucket.check().is_ok() {
            return Ok(());
        }
        self.waiting.insert(kid, now);
        Err(Throttle::Rate)
    }

    /// Records what a lookup admitted by [`LookupGate::admit`] found.
    pub fn looked_up(&mut self, kid: &str, looked: Looked, now: Instant) {
        match looked {
            Looked::Found => self.backoff.reset(),
            Looked::Unknown => {
                self.backoff.reset();
                self.unknown.insert(kid, now);
            }
            Looked::Failed => {
                self.backoff.failed(now);
                self.waiting.insert(kid, now);
            }
        }
    }
}

/// A bounded map from kid to when it was last met; past its size, the kid inserted longest ago
/// is forgotten. (A cache that favours entries met twice, like quick_cache's, would let a flood
/// of one-off forged kids push out a genuine kid waiting for its second sighting sooner.)
struct Recent {
    at: HashMap<String, Instant>,
    order: VecDeque<String>,
    max: usize,
}

impl Recent {
    fn new(max: usize) -> Self {
        Recent { at: HashMap::new(), order: VecDeque::new(), max }
    }

    fn insert(&mut self, kid: &str, now: Instant) {
        if let Some(at) = self.at.get_mut(kid) {
            *at = now;
            return;
        }
        while self.order.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    self.at.remove(&old);
                }
                None => break,
            }
        }
        self.at.insert(kid.to_string(), now);
        self.order.push_back(kid.to_string());
    }

    fn contains(&self, kid: &str) -> bool {
        self.at.contains_key(kid)
    }

    fn seen_within(&self, kid: &str, now: Instant, ttl: Duration) -> bool {
        self.at.get(kid).is_some_and(|at| now.saturating_duration_since(*at) < ttl)
    }
}

/// No lookups until `until`, which a failure pushes out exponentially (with jitter).
struct Backoff {
    builder: ExponentialBuilder,
    steps: Option<ExponentialBackoff>,
    until: Option<Instant>,
    max: Duration,
}

impl Backoff {
    fn new(policy: &KeyLookupPolicy) -> Self {
        let max = policy.backoff_max.max(policy.backoff_min);
        let builder = ExponentialBuilder::default()
            .with_min_delay(policy.backoff_min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff { builder, steps: None, until: None, max }
    }

    fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// A lookup failed. Lookups that were already in flight when the backoff began fail
    /// together; they push it out once, not once each.
    fn failed(&mut self, now: Instant) {
        if self.active(now) {
            return;
        }
        let builder = self.builder;
        let pause = self.steps.get_or_insert_with(|| builder.build()).next().unwrap_or(self.max);
        self.until = Some(now + pause);
    }

    fn reset(&mut self) {
        self.steps = None;
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn policy() -> KeyLookupPolicy {
        KeyLookupPolicy {
            burst: NonZeroU32::new(2).expect("2"),
            per_minute: NonZeroU32::new(6).expect("6"),
            unknown_kid_ttl: Duration::from_secs(600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }

    /// A gate and a clock that moves both its buckets and `now`.
    struct Bench {
        gate: LookupGate<FakeRelativeClock>,
        clock: FakeRelativeClock,
        start: Instant,
        elapsed: Duration,
    }

    impl Bench {
        fn new() -> Self {
            let clock = FakeRelativeClock::default();
            let gate = LookupGate::with_clock(&policy(), &clock);
            Bench { gate, clock, start: Instant::now(), elapsed: Duration::ZERO }
        }
        fn now(&self) -> Instant {
            self.start + self.elapsed
        }
        fn advance(&mut self, by: Duration) {
            self.clock.advance(by);
            self.elapsed += by;
        }
        fn admit(&mut self, kid: &str) -> Result<(), Throttle> {
            let now = self.now();
            self.gate.admit(kid, false, now)
        }
        /// A forged kid: admitted or not, Plaid does not know it.
        fn forge(&mut self, n: usize) -> Result<(), Throttle> {
            let kid = format!("forged-{n}");
            let r = self.admit(&kid);
            if r.is_ok() {
                let now = self.now();
                self.gate.looked_up(&kid, Looked::Unknown, now);
            }
            r
        }
    }

    #[test]
    fn first_sightings_share_a_small_bucket_that_refills_a_few_a_minute() {
        let mut b = Bench::new();
        assert_eq!(b.forge(0), Ok(()));
        assert_eq!(b.forge(1), Ok(()));
        assert_eq!(b.forge(2), Err(Throttle::Rate), "the burst is two");
        b.advance(Duration::from_secs(9));
        assert_eq!(b.forge(3), Err(Throttle::Rate), "six a minute: one every ten seconds");
        b.advance(Duration::from_secs(1));
        assert_eq!(b.forge(4), Ok(()));
        assert_eq!(b.forge(5), Err(Throttle::Rate));
    }

    #[test]
    fn a_genuine_kid_gets_through_on_its_second_sighting_under_one_forged_kid_a_second() {
        let mut b = Bench::new();
        let mut forged_lookups = 0;
        let mut refused_first = 0;
        // An attacker, one random kid a second, for five minutes; Plaid's new kid arrives now
        // and then and is delivered again a minute later when refused.
        for second in 0..300 {
            if b.forge(second).is_ok() {
                forged_lookups += 1;
            }
            if second % 60 == 30 {
                let genuine = format!("genuine-{second}");
                if b.admit(&genuine).is_err() {
                    refused_first += 1;
                    b.advance(Duration::from_secs(1));
                    assert_eq!(b.admit(&genuine), Ok(()), "the redelivery is looked up ({second} s)");
                }
                let now = b.now();
                b.gate.looked_up(&genuine, Looked::Found, now);
            }
            b.advance(Duration::from_secs(1));
        }
        assert!(forged_lookups <= 2 + 6 * 5 + 1, "forged kids cost a few lookups a minute: {forged_lookups}");
        assert!(refused_first >= 4, "the attacker did keep the first-sight bucket empty: {refused_first}");
    }

    #[test]
    fn plaids_unknown_is_believed_for_a_while_and_a_refused_kid_is_remembered() {
        let mut b = Bench::new();
        assert_eq!(b.forge(0), Ok(()));
        assert!(b.gate.is_unknown("forged-0", b.now()));
        b.advance(Duration::from_secs(599));
        assert!(b.gate.is_unknown("forged-0", b.now()));
        b.advance(Duration::from_secs(1));
        assert!(!b.gate.is_unknown("forged-0", b.now()), "after the TTL Plaid may be asked again");
        // A refused kid's next sighting draws on the second bucket, which forged one-offs
        // never touch.
        assert_eq!(b.forge(1), Ok(()));
        assert_eq!(b.forge(2), Ok(()));
        assert_eq!(b.forge(3), Err(Throttle::Rate));
        assert_eq!(b.forge(4), Err(Throttle::Rate));
        assert_eq!(b.admit("forged-3"), Ok(()));
        assert_eq!(b.admit("forged-4"), Ok(()));
        assert_eq!(b.admit("forged-5"), Err(Throttle::Rate), "a first sighting still waits");
        // A kid we hold a key for is refreshed without a token.
        let now = b.now();
        assert_eq!(b.gate.admit("held", true, now), Ok(()));
    }

    #[test]
    fn bounded_memory_forgets_the_oldest_kid_first() {
        let mut r = Recent::new(3);
        let t = Instant::now();
        for k in ["a", "b", "c", "a", "d"] {
            r.insert(k, t);
        }
        assert!(!r.contains("a"), "a was inserted first; meeting it again does not move it");
        assert!(r.contains("b") && r.contains("c") && r.contains("d"));
        assert_eq!((r.at.len(), r.order.len()), (3, 3));
    }

    #[test]
    fn failed_lookups_back_off_exponentially_with_jitter_and_a_success_ends_it() {
        let mut b = Bench::new();
        assert_eq!(b.admit("k"), Ok(()));
        let start = b.now();
        b.gate.looked_up("k", Looked::Failed, start);
        assert!(!b.gate.is_unknown("k", start), "a failure is not Plaid's unknown");
        // Lookups that were in flight fail together: one step, not one each.
        b.gate.looked_up("other", Looked::Failed, start);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let from = b.now();
            let mut waited = Duration::ZERO;
            while b.gate.admit("k", true, from + waited) == Err(Throttle::Backoff) {
                waited += Duration::from_millis(100);
            }
            pauses.push(waited);
            b.advance(waited);
            let now = b.now();
            b.gate.looked_up("k", Looked::Failed, now);
        }
        // 1, 2, 4, 8, 8, 8 seconds, each plus up to as much again of jitter.
        for (pause, base) in pauses.iter().zip([1u64, 2, 4, 8, 8, 8]) {
            let base = Duration::from_secs(base);
            assert!(*pause >= base && *pause <= base * 2 + Duration::from_millis(100), "{pauses:?}");
        }
        // Meanwhile a never-seen kid is refused too, and is remembered for its redelivery.
        let now = b.now();
        assert_eq!(b.gate.admit("new", false, now), Err(Throttle::Backoff));
        assert!(b.gate.waiting.contains("new"));
        b.gate.looked_up("k", Looked::Found, now);
        assert_eq!(b.gate.admit("k", true, now), Ok(()), "a success ends the backoff");
    }
}
