-- Durable background work and Plaid webhooks (SQLite; migrations/postgres has the same).

-- Jobs: transaction syncs, webhook processing, the reconciler. Several bankgraph processes
-- can share one PostgreSQL: a worker claims a job atomically, holds it with a lease it
-- renews, and a job whose lease ran out (its process died) is claimed again.
create table jobs (
    id              text primary key,
    kind            text not null,
    -- What the job is about (a connection id, a webhook event id, 'reconciler'); at most one
    -- queued and one running job per (kind, dedupe_key).
    dedupe_key      text not null,
    state           text not null,
    attempts        integer not null,
    run_after       text not null,
    locked_by       text,
    locked_until    text,
    started_at      text,
    finished_at     text,
    last_error      text,
    created_at      text not null,
    updated_at      text not null,
    constraint jobs_state_check check (state in ('queued', 'running', 'done', 'failed'))
);
create unique index jobs_one_queued on jobs (kind, dedupe_key) where state = 'queued';
create unique index jobs_one_running on jobs (kind, dedupe_key) where state = 'running';
create index jobs_ready on jobs (state, run_after);

-- Verified Plaid webhooks, stored before they are acknowledged. A redelivery (the same body
-- within the same hour) is counted, not stored again.
create table webhook_events (
    id                  text primary key,
    body_sha256         text not null,
    received_hour       bigint not null,
    body                text not null,
    webhook_type        text,
    webhook_code        text,
    item_id             text,
    received_at         text not null,
    last_received_at    text not null,
    deliveries          integer not null,
    processed_at        text,
    outcome             text,
    constraint webhook_events_redelivery_unique unique (body_sha256, received_hour)
);
create index webhook_events_by_item on webhook_events (item_id, received_at);

-- Where the current /transactions/sync pagination loop began. transactions_cursor moves with
-- every saved page (a crash resumes there); after TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION
-- the loop restarts here, as Plaid requires. Re-applying a page is idempotent.
alter table bank_connections add column transactions_loop_cursor text;

-- Health facts Plaid tells us about a connection.
alter table bank_connections add column new_accounts_available boolean not null default false;
alter table bank_connections add column item_checked_at text;
