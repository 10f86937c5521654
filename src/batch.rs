//! Concurrent reads of the same kind, coalesced into one call.
//!
//! Most of what a read costs (a database statement, or an RPC to the identity service: a
//! wakeup, the protocol, start-up) does not depend on how many callers it answers. A
//! [`Batcher`] runs at most a few reads at once; a read that arrives while they are all busy
//! waits in a queue, and the next call answers everything queued by then (callers asking for
//! the same key share one answer). Under light load a read runs at once, as if there were no
//! batcher; under heavy load calls answer many callers each.
//!
//! Freshness is that of a direct read: a call starts only after every read it answers was
//! asked for, so each answer reflects every write committed before its caller asked. Nothing is
//! kept after the call.
//!
//! A call that fails as a whole (one key the statement cannot take fails it for every key) is
//! tried again key by key, so a bad key fails only its own callers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// What one call does: the values of the distinct keys it is given (every one of them), and
/// what each of its callers brought along (a deadline, a request id) in `extras`.
pub(crate) type Run<K, X, V> =
    Arc<dyn Fn(Vec<K>, Arc<[X]>) -> BoxFuture<'static, anyhow::Result<HashMap<K, V>>> + Send + Sync>;

/// Keys of a failed call tried again at once, at most.
const RETRIES_IN_FLIGHT: usize = 4;

type Answer<V> = Result<V, Arc<anyhow::Error>>;

/// A waiting caller: its key, what it brought along, and where its answer goes.
type Waiting<K, X, V> = (K, X, oneshot::Sender<Answer<V>>);

/// The callers of one key in a call: where what each brought along is in the call's extras,
/// and where each answer goes.
type Callers<V> = (Vec<usize>, Vec<oneshot::Sender<Answer<V>>>);

pub(crate) struct Batcher<K, X, V> {
    run: Run<K, X, V>,
    /// Calls running at most at once.
    max_in_flight: usize,
    /// Callers one call answers at most.
    max_callers: usize,
    state: Mutex<State<K, X, V>>,
}

struct State<K, X, V> {
    queue: std::collections::VecDeque<Waiting<K, X, V>>,
    in_flight: usize,
}

impl<K, X, V> std::fmt::Debug for Batcher<K, X, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_callers", &self.max_callers)
            .finish_non_exhaustive()
    }
}

/// An error one call met, given to each of the callers it was answering.
#[derive(Debug)]
struct Shared(Arc<anyhow::Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Shared {}

impl<K, X, V> Batcher<K, X, V>
where
    K: Eq + Hash + Ord + Clone + Send + 'static,
    X: Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    pub(crate) fn new(max_in_flight: usize, max_callers: usize, run: Run<K, X, V>) -> Arc<Self> {
        assert!(max_in_flight > 0 && max_callers > 0, "a batcher runs at least one call of one caller");
        Arc::new(Batcher {
            run,
            max_in_flight,
            max_callers,
            state: Mutex::new(State { queue: Default::default(), in_flight: 0 }),
        })
    }

    /// The value of `key`, read by a call that starts after this one.
    pub(crate) async fn get(self: &Arc<Self>, key: K, extra: X) -> anyhow::Result<V> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.queue.push_back((key, extra, tx));
            let start = state.in_flight < self.max_in_flight;
            state.in_flight += usize::from(start);
            start
        };
        if start {
            // The calls run in a task of their own: a caller that goes away (its client hung
            // up) does not take the others' answer with it.
            tokio::spawn(self.clone().drain());
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow::Error::new(Shared(e))),
            Err(_) => Err(anyhow::anyhow!("the batched read ended without an answer")),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, X, V>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs calls until the queue is empty.
    async fn drain(self: Arc<Self>) {
        // Gives the slot back if the task ends early (a panic in `run`).
        struct Slot<'a, K, X, V>(&'a Mutex<State<K, X, V>>, bool);
        impl<K, X, V> Drop for Slot<'_, K, X, V> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).in_flight -= 1;
                }
            }
        }
        let mut slot = Slot(&self.state, false);
        loop {
            let callers: Vec<Waiting<K, X, V>> = {
                let mut state = self.lock();
                if state.queue.is_empty() {
                    // Under the same lock as the check: a read queued after it finds the slot
                    // free and starts a call itself.
                    state.in_flight -= 1;
                    slot.1 = true;
                    return;
                }
                let n = state.queue.len().min(self.max_callers);
                state.queue.drain(..n).collect()
            };
            // The callers by key: each key is read once (its callers' extras named by their
            // place in `extras`).
            let mut by_key: HashMap<K, Callers<V>> = HashMap::new();
            let mut extras = Vec::with_capacity(callers.len());
            for (key, extra, tx) in callers {
                let (places, waiting) = by_key.entry(key).or_default();
                places.push(extras.len());
                waiting.push(tx);
                extras.push(extra);
            }
            let extras: Arc<[X]> = extras.into();
            let mut keys: Vec<K> = by_key.keys().cloned().collect();
            keys.sort_unstable();
            let alone = keys.len() == 1;
            match (self.run)(keys, extras.clone()).await {
                Ok(mut values) => {
                    for (key, (_, waiting)) in by_key {
                        answer(waiting, values.remove(&key));
                    }
                }
                Err(e) if alone => {
                    let e = Arc::new(e);
                    for tx in by_key.into_values().flat_map(|(_, waiting)| waiting) {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                // One key may have failed the call for all: each key again on its own, so a
                // bad one fails only its own callers.
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), keys = by_key.len(), "a batched read failed; reading its keys one by one");
                    use futures::StreamExt;
                    let retries = by_key.into_iter().map(|(key, (places, waiting))| {
                        let extras: Arc<[X]> = places.iter().map(|&i| extras[i].clone()).collect();
                        let run = self.run.clone();
                        async move {
                            match run(vec![key.clone()], extras).await {
                                Ok(mut values) => answer(waiting, values.remove(&key)),
                                Err(e) => {
                                    let e = Arc::new(e);
                                    for tx in waiting {
                                        let _ = tx.send(Err(e.clone()));
                                    }
                                }
                            }
                        }
                    });
                    futures::stream::iter(retries).buffer_unordered(RETRIES_IN_FLIGHT).collect::<()>().await;
                }
            }
        }
    }
}

/// Gives a key's callers its value (the last of them the value itself rather than a clone, so
/// an `Arc` answer is that caller's alone), or an error if the call did not answer the key.
fn answer<V: Clone>(mut waiting: Vec<oneshot::Sender<Answer<V>>>, value: Option<V>) {
    let Some(value) = value else {
        let e = Arc::new(anyhow::anyhow!("the batched read returned no answer for a key it was given"));
        for tx in waiting {
            let _ = tx.send(Err(e.clone()));
        }
        return;
    };
    let last = waiting.pop();
    for tx in waiting {
        let _ = tx.send(Ok(value.clone()));
    }
    if let Some(tx) = last {
        let _ = tx.send(Ok(value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// The keys of every statement a test batcher ran.
    type Seen = Arc<Mutex<Vec<Vec<String>>>>;

    /// A batcher whose statement answers each key with itself repeated, after `delay`, and
    /// records the keys of every statement.
    fn echo(max_in_flight: usize, max_callers: usize, delay: Duration) -> (Arc<Batcher<String, (), String>>, Seen) {
        let seen: Seen = Default::default();
        let log = seen.clone();
        let run: Run<String, (), String> = Arc::new(move |keys: Vec<String>, _| {
            log.lock().unwrap().push(keys.clone());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(keys.into_iter().filter(|k| k != "absent").map(|k| (k.clone(), format!("{k}{k}"))).collect())
            })
        });
        (Batcher::new(max_in_flight, max_callers, run), seen)
    }

    #[tokio::test]
    async fn a_lone_read_runs_at_once_and_gets_its_own_answer() {
        let (b, seen) = echo(2, 64, Duration::ZERO);
        assert_eq!(b.get("a".to_string(), ()).await.unwrap(), "aa");
        let e = b.get("absent".to_string(), ()).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("no answer"),
            "a key the call does not answer is an error, not a guess: {e:#}"
        );
        assert_eq!(*seen.lock().unwrap(), vec![vec!["a".to_string()], vec!["absent".to_string()]]);
    }

    #[tokio::test]
    async fn reads_queued_behind_busy_statements_share_the_next_one_and_each_gets_its_own_answer() {
        let (b, seen) = echo(1, 64, Duration::from_millis(50));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.get("first".to_string(), ()).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let keys: [&'static str; 5] = ["x", "y", "x", "z", "y"];
        let rest: Vec<_> = keys
            .iter()
            .map(|k| {
                let b = b.clone();
                let k = *k;
                tokio::spawn(async move { b.get(k.to_string(), ()).await.unwrap() })
            })
            .collect();
        assert_eq!(first.await.unwrap(), "firstfirst");
        for (k, h) in keys.iter().zip(rest) {
            assert_eq!(h.await.unwrap(), format!("{k}{k}"));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "one statement for the first read, one for all that queued: {seen:?}");
        assert_eq!(seen[1], vec!["x", "y", "z"], "distinct keys, once each");
    }

    #[tokio::test]
    async fn every_caller_brings_its_extra_to_the_call_even_when_its_key_is_shared() {
        type Calls = Arc<Mutex<Vec<(Vec<String>, Vec<u32>)>>>;
        let calls: Calls = Default::default();
        let log = calls.clone();
        let run: Run<String, u32, u32> = Arc::new(move |keys: Vec<String>, extras: Arc<[u32]>| {
            log.lock().unwrap().push((keys.clone(), extras.to_vec()));
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(keys.into_iter().map(|k| (k, 1)).collect())
            })
        });
        let b = Batcher::new(1, 64, run);
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.get("first".to_string(), 0).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = [("x", 1), ("x", 2), ("y", 3)]
            .into_iter()
            .map(|(k, x)| {
                let b = b.clone();
                tokio::spawn(async move { b.get(k.to_string(), x).await.unwrap() })
            })
            .collect();
        first.await.unwrap();
        for h in rest {
            h.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[1].0, vec!["x", "y"]);
        assert_eq!(calls[1].1, vec![1, 2, 3], "one extra per caller, in the order they asked");
    }

    #[tokio::test]
    async fn a_key_that_fails_its_statement_fails_only_its_own_callers() {
        type Calls = Arc<Mutex<Vec<(Vec<String>, Vec<u32>)>>>;
        let calls: Calls = Default::default();
        let log = calls.clone();
        // Like a statement PostgreSQL refuses for one NUL in one of its parameters.
        let run: Run<String, u32, String> = Arc::new(move |keys: Vec<String>, extras: Arc<[u32]>| {
            log.lock().unwrap().push((keys.clone(), extras.to_vec()));
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                anyhow::ensure!(
                    !keys.iter().any(|k| k.contains('\0')),
                    "invalid byte sequence for encoding UTF8: 0x00"
                );
                Ok(keys.into_iter().map(|k| (k.clone(), format!("{k}{k}"))).collect())
            })
        });
        let b = Batcher::new(1, 64, run);
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.get("first".to_string(), 0).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = [("a", 1), ("bad\0", 2), ("c", 3), ("a", 4)]
            .into_iter()
            .map(|(k, x)| {
                let b = b.clone();
                tokio::spawn(async move { b.get(k.to_string(), x).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), "firstfirst");
        let answers: Vec<_> = futures::future::join_all(rest).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers[0].as_deref().unwrap(), "aa");
        assert!(format!("{:#}", answers[1].as_ref().unwrap_err()).contains("0x00"), "{:?}", answers[1]);
        assert_eq!(answers[2].as_deref().unwrap(), "cc");
        assert_eq!(answers[3].as_deref().unwrap(), "aa");
        let mut calls = calls.lock().unwrap().clone();
        assert_eq!(calls[1].0, vec!["a", "bad\0", "c"], "coalesced first: {calls:?}");
        // Then each key alone, with its own callers' extras.
        let mut singles = calls.split_off(2);
        singles.sort();
        assert_eq!(
            singles,
            vec![
                (vec!["a".to_string()], vec![1, 4]),
                (vec!["bad\0".to_string()], vec![2]),
                (vec!["c".to_string()], vec![3])
            ]
        );
    }

    #[tokio::test]
    async fn a_statement_answers_at_most_max_callers_and_the_rest_go_to_the_next() {
        let (b, seen) = echo(1, 3, Duration::from_millis(30));
        let blocker = tokio::spawn({
            let b = b.clone();
            async move { b.get("blocker".to_string(), ()).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let all: Vec<_> = (0..7)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.get(format!("k{i}"), ()).await.unwrap() })
            })
            .collect();
        blocker.await.unwrap();
        for (i, h) in all.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), format!("k{i}k{i}"));
        }
        let sizes: Vec<usize> = seen.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3, 1]);
    }

    #[tokio::test]
    async fn the_last_caller_of_a_key_gets_the_value_itself_not_a_shared_copy() {
        let run: Run<String, (), Arc<Vec<u8>>> = Arc::new(|keys: Vec<String>, _| {
            Box::pin(async move { Ok(keys.into_iter().map(|k| (k, Arc::new(vec![1, 2, 3]))).collect()) })
        });
        let b = Batcher::new(1, 64, run);
        let v = b.get("a".to_string(), ()).await.unwrap();
        assert_eq!(Arc::strong_count(&v), 1, "a lone read owns its answer, so it is used without a copy");
    }

    #[tokio::test]
    async fn at_most_max_in_flight_statements_run_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let run: Run<String, (), u32> = Arc::new(move |keys: Vec<String>, _| {
            let (r, p) = (r.clone(), p.clone());
            Box::pin(async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(keys.into_iter().map(|k| (k, 1)).collect())
            })
        });
        let b = Batcher::new(2, 4, run);
        let all: Vec<_> = (0..100)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.get(i.to_string(), ()).await.unwrap() })
            })
            .collect();
        for h in all {
            assert_eq!(h.await.unwrap(), 1);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(b.lock().in_flight, 0, "every slot is given back");
    }

    #[tokio::test]
    async fn a_failed_statement_fails_every_read_it_answered_and_the_next_reads_run_again() {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = failing.clone();
        let run: Run<String, (), u32> = Arc::new(move |keys: Vec<String>, _| {
            let fail = f.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail {
                    anyhow::bail!("connection reset");
                }
                Ok(keys.into_iter().map(|k| (k, 7)).collect())
            })
        });
        let b = Batcher::new(1, 64, run);
        let all: Vec<_> = (0..5)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.get(i.to_string(), ()).await })
            })
            .collect();
        for h in all {
            let e = h.await.unwrap().unwrap_err();
            assert!(format!("{e:#}").contains("connection reset"), "{e:#}");
        }
        failing.store(false, Ordering::SeqCst);
        assert_eq!(b.get("again".to_string(), ()).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_stop_the_statement_for_the_others() {
        let (b, _) = echo(1, 64, Duration::from_millis(40));
        let blocker = tokio::spawn({
            let b = b.clone();
            async move { b.get("blocker".to_string(), ()).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let leaving = tokio::spawn({
            let b = b.clone();
            async move { b.get("gone".to_string(), ()).await }
        });
        let staying = tokio::spawn({
            let b = b.clone();
            async move { b.get("stays".to_string(), ()).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        leaving.abort();
        blocker.await.unwrap();
        assert_eq!(staying.await.unwrap(), "staysstays");
        assert_eq!(b.get("after".to_string(), ()).await.unwrap(), "afterafter");
    }

    #[tokio::test]
    async fn a_panicking_statement_gives_its_slot_back() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let run: Run<String, (), u32> = Arc::new(move |keys: Vec<String>, _| {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                assert!(!first, "a bug in the statement");
                Ok(keys.into_iter().map(|k| (k, 3)).collect())
            })
        });
        let b = Batcher::new(1, 64, run);
        assert!(b.get("a".to_string(), ()).await.is_err());
        assert_eq!(b.get("b".to_string(), ()).await.unwrap(), 3);
    }
}
