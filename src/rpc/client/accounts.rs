//! Account reads over the RPC, coalesced across requests (see [`crate::batch`]): while a few
//! `ListAccountsBatch` calls are in flight, the reads that arrive wait for the next one, which
//! answers them all. Under light load a read is one call, as before; under heavy load the hop
//! (two encodings, an HTTP/2 exchange, a wakeup in each process) is paid once per batch rather
//! than once per request. Each request gets its own answer, and waits no longer than its own
//! deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tonic::Code;

use super::{Inner, Lane, RemoteIdentity, Retry, TOO_SLOW};
use crate::batch::Batcher;
use crate::domain::BankAccount;
use crate::error::{AppError, AppResult};
use crate::identity::AccountFilter;
use crate::metrics::IDENTITY_RPC_BATCH_REQUESTS;
use crate::rpc::convert as c;
use crate::rpc::pb;
use crate::rpc::server::MAX_BATCH;
use crate::rpc::status::{detail, from_detail};
use crate::trace::RequestContext;

/// Account-read calls in flight at once, per endpoint; reads that arrive while they all run
/// wait for the next call, which answers them all. Two per endpoint measured best on 2 cores
/// (bench/results/split.md).
const ACCOUNT_READS_IN_FLIGHT_PER_ENDPOINT: usize = 2;
/// After an identity service answered that it does not know `ListAccountsBatch` (an older
/// version, during a rolling upgrade), how long account reads go one by one before the batch
/// is tried again.
const UNBATCHED_FOR: Duration = Duration::from_secs(60);

/// One account read: the caller's `sub` and its filter (plaid item, connection, account).
type AccountsKey = (String, Option<String>, Option<String>, Option<String>);
/// An account read's answer, decoded once and shared by the requests that asked the same (the
/// last of them takes the list itself); an error as it crossed the wire.
type AccountsAnswer = Result<Arc<Vec<BankAccount>>, Arc<pb::ErrorDetail>>;
/// Account reads, coalesced; each caller brings its request's context (deadline, ids).
type Reads = Batcher<AccountsKey, Option<RequestContext>, AccountsAnswer>;

/// The gateway's account reads: the batcher, and whether the service knows the batch.
pub(super) struct AccountReads {
    batcher: Arc<Reads>,
    created: Instant,
    /// Milliseconds after `created` until which reads go one by one (0: never since).
    unbatched_until_ms: AtomicU64,
}

impl AccountReads {
    /// Reads for the client `inner` will be (two calls in flight per endpoint).
    pub(super) fn new(inner: Weak<Inner>, endpoints: usize) -> Self {
        let batcher = Batcher::new(
            ACCOUNT_READS_IN_FLIGHT_PER_ENDPOINT * endpoints,
            MAX_BATCH,
            Arc::new(move |keys, callers| {
                let inner = inner.upgrade();
                Box::pin(async move {
                    let inner = inner.ok_or_else(|| anyhow::anyhow!("the identity client was dropped"))?;
                    Ok(RemoteIdentity { inner }.read_batch(keys, &callers).await)
                })
            }),
        );
        AccountReads { batcher, created: Instant::now(), unbatched_until_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether reads go one by one (an endpoint did not know `ListAccountsBatch` lately): one
    /// atomic load on the hot path.
    fn unbatched(&self) -> bool {
        let until = self.unbatched_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// Reads go one by one for [`UNBATCHED_FOR`].
    fn unbatch(&self) {
        let until = self.now_ms().saturating_add(u64::try_from(UNBATCHED_FOR.as_millis()).unwrap_or(u64::MAX));
        self.unbatched_until_ms.store(until.max(1), Ordering::Relaxed);
    }
}

impl RemoteIdentity {
    /// Coalesced with the account reads of concurrent requests (one by one when the service
    /// does not know the batch), and bounded by this request's deadline.
    pub(super) async fn read_accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        let ctx = crate::trace::current();
        let key = (user_id.to_string(), filter.plaid_item_id, filter.connection_id, filter.account_id);
        if self.inner.accounts.unbatched() {
            return self.list_accounts(ctx, key).await?.into_iter().map(c::from_account).collect();
        }
        let deadline = self.deadline_of(&ctx);
        let read = self.inner.accounts.batcher.get(key, ctx);
        match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(Ok(Ok(accounts))) => Ok(Arc::unwrap_or_clone(accounts)),
            Ok(Ok(Err(d))) => Err(from_detail(Arc::unwrap_or_clone(d))),
            Ok(Err(e)) => Err(AppError::internal(e)),
            Err(_) => {
                tracing::warn!(method = "ListAccountsBatch", "identity service call ran out of time");
                Err(AppError::Upstream(TOO_SLOW.into()))
            }
        }
    }

    /// One account read, on its own.
    async fn list_accounts(&self, ctx: Option<RequestContext>, key: AccountsKey) -> AppResult<Vec<pb::BankAccount>> {
        let msg = request(key);
        let r =
            self.call_on(ctx, Lane::Call, "ListAccounts", Retry::Once, msg, |mut cl, r| async move {
                cl.list_accounts(r).await
            })
            .await?;
        Ok(r.accounts)
    }

    /// The account reads of one batch: every key gets its answer (an error the whole call met
    /// is each one's answer). The call carries the first caller's request id and trace, every
    /// caller's request id in its body, and the latest of their deadlines (each caller stops
    /// waiting at its own).
    async fn read_batch(
        &self,
        keys: Vec<AccountsKey>,
        callers: &[Option<RequestContext>],
    ) -> HashMap<AccountsKey, AccountsAnswer> {
        metrics::histogram!(IDENTITY_RPC_BATCH_REQUESTS).record(callers.len() as f64);
        let request_ids = callers.iter().flatten().map(|c| c.request_id.clone()).collect();
        let ctx = callers.iter().flatten().next().map(|first| RequestContext {
            deadline: callers.iter().map(|c| self.deadline_of(c)).max().unwrap_or(first.deadline),
            ..first.clone()
        });
        let requests = keys.iter().cloned().map(request).collect();
        let msg = pb::ListAccountsBatchRequest { requests, request_ids };
        let unknown = Arc::new(AtomicBool::new(false));
        let seen = unknown.clone();
        let answer = self
            .call_on(ctx.clone(), Lane::Call, "ListAccountsBatch", Retry::Once, msg, move |mut cl, r| {
                let seen = seen.clone();
                async move {
                    let answer = cl.list_accounts_batch(r).await;
                    // UNIMPLEMENTED without an ErrorDetail: the service does not know the method.
                    if let Err(s) = &answer
                        && s.code() == Code::Unimplemented
                        && s.details().is_empty()
                    {
                        seen.store(true, Ordering::Relaxed);
                    }
                    answer
                }
            })
            .await;
        let results = match answer {
            Ok(r) if r.results.len() == keys.len() => r.results,
            Ok(r) => {
                let e = anyhow::anyhow!(
                    "ListAccountsBatch answered {} results for {} requests",
                    r.results.len(),
                    keys.len()
                );
                return every(keys, lost(AppError::internal(e)));
            }
            Err(_) if unknown.load(Ordering::Relaxed) => {
                tracing::warn!(
                    "the identity service does not know ListAccountsBatch (an older version?); reading accounts one by one for a while"
                );
                self.inner.accounts.unbatch();
                let reads = keys.into_iter().map(|key| {
                    let ctx = ctx.clone();
                    async move {
                        let answer = self.list_accounts(ctx, key.clone()).await;
                        (key, decoded(answer))
                    }
                });
                return futures::future::join_all(reads).await.into_iter().collect();
            }
            Err(e) => return every(keys, lost(e)),
        };
        use pb::list_accounts_result::Result as One;
        keys.into_iter()
            .zip(results)
            .map(|(key, r)| {
                let answer = match r.result {
                    Some(One::Accounts(a)) => decoded(Ok(a.accounts)),
                    Some(One::Error(d)) => Err(Arc::new(d)),
                    None => Err(lost(AppError::internal(anyhow::anyhow!("ListAccountsBatch sent an empty result")))),
                };
                (key, answer)
            })
            .collect()
    }
}

/// The request of one account read.
fn request((user_id, plaid_item_id, connection_id, account_id): AccountsKey) -> pb::ListAccountsRequest {
    pb::ListAccountsRequest { user_id, filter: Some(pb::AccountFilter { plaid_item_id, connection_id, account_id }) }
}

/// Accounts as the domain has them, once for every request that shares them.
fn decoded(read: AppResult<Vec<pb::BankAccount>>) -> AccountsAnswer {
    let accounts = read.and_then(|a| a.into_iter().map(c::from_account).collect::<AppResult<Vec<_>>>());
    accounts.map(Arc::new).map_err(lost)
}

/// An error as every request that shares it gets it.
fn lost(e: AppError) -> Arc<pb::ErrorDetail> {
    Arc::new(detail(e).1)
}

/// The same answer for every key.
fn every(keys: Vec<AccountsKey>, error: Arc<pb::ErrorDetail>) -> HashMap<AccountsKey, AccountsAnswer> {
    keys.into_iter().map(|k| (k, Err(error.clone()))).collect()
}
