-- bankgraph's initial schema (PostgreSQL). migrations/sqlite holds the same logical schema.
--
-- Conventions, shared by both backends so one set of queries serves both:
--   * ids are UUID strings we mint; Plaid's ids are kept in plaid_* columns;
--   * timestamps are UTC RFC 3339 text with microseconds ("2026-11-21T12:00:00.000000Z"),
--     which sorts and compares correctly as text;
--   * money is decimal text ("1203.45"): exact, never a float.

-- One linked Plaid item per row: a bankInstitutionAuthId. It survives a repair that moves it
-- to a new Plaid item (plaid_item_id changes, id does not).
create table bank_connections (
    id                       text primary key,
    user_id                  text not null,
    plaid_item_id            text not null,
    institution_id           text,
    institution_name         text not null,
    -- AES-256-GCM, associated data = user and item; the key id names the key for rotation.
    access_token_sealed      text not null,
    access_token_key_id      text not null,
    status                   text not null,
    status_detail            text,
    consent_expires_at       text,
    -- /transactions/sync position; written in the same transaction as the page it ends.
    transactions_cursor      text,
    transactions_synced_at   text,
    removed_at               text,
    removal_reason           text,
    created_at               text not null,
    updated_at               text not null,
    constraint bank_connections_plaid_item_unique unique (plaid_item_id),
    constraint bank_connections_status_check check (status in
        ('ACTIVE', 'LOGIN_REQUIRED', 'PENDING_EXPIRATION', 'PENDING_DISCONNECT', 'REVOKED', 'ERROR'))
);
create index bank_connections_by_user on bank_connections (user_id, institution_id);

-- bankAccountId: stable across relinks and repairs (matched by Plaid account id, or by
-- mask, name and type when a repair brings new Plaid ids).
create table bank_accounts (
    id                  text primary key,
    connection_id       text not null references bank_connections (id),
    user_id             text not null,
    plaid_account_id    text not null,
    name                text,
    official_name       text,
    mask                text,
    account_type        text not null,
    subtype             text,
    -- Plaid's order of the item's accounts (checking first, as the bank lists them).
    position            integer not null,
    removed_at          text,
    created_at          text not null,
    updated_at          text not null,
    constraint bank_accounts_plaid_account_unique unique (connection_id, plaid_account_id)
);
create index bank_accounts_by_user on bank_accounts (user_id, connection_id);

-- Every balance we stored, with where it came from; reads take the latest per account.
create table balance_snapshots (
    id                  text primary key,
    account_id          text not null references bank_accounts (id),
    user_id             text not null,
    available           text,
    current_balance     text,
    limit_amount        text,
    currency_code       text,
    source              text not null,
    balance_trigger     text not null,
    started_at          text not null
);
create index balance_snapshots_latest on balance_snapshots (account_id, started_at);

-- historicalBankTransactionId: one row per purchase, kept when Plaid replaces a pending
-- transaction by its posted one (plaid_transaction_id moves to the posted id).
create table bank_transactions (
    id                      text primary key,
    user_id                 text not null,
    connection_id           text not null references bank_connections (id),
    account_id              text not null references bank_accounts (id),
    plaid_transaction_id    text not null,
    amount                  text not null,
    currency_code           text,
    transaction_date        text not null,
    description             text,
    merchant_name           text,
    category                text,
    -- Read back as `case when pending then 1 else 0 end`: the Any driver cannot decode
    -- SQLite booleans.
    pending                 boolean not null,
    removed_at              text,
    created_at              text not null,
    updated_at              text not null,
    constraint bank_transactions_plaid_unique unique (connection_id, plaid_transaction_id)
);
-- The read paths: a user's history, one account's history, newest first.
create index bank_transactions_by_user_date on bank_transactions (user_id, transaction_date, id);
create index bank_transactions_by_account_date on bank_transactions (account_id, transaction_date, id);

create table connection_addresses (
    id              text primary key,
    connection_id   text not null references bank_connections (id),
    user_id         text not null,
    line1           text not null,
    line2           text,
    city            text not null,
    state           text not null,
    postal_code     text not null,
    country         text not null,
    -- PLAID_IDENTITY (from /identity/get) or USER (createPlaidLinkAddress).
    source          text not null,
    created_at      text not null
);
create index connection_addresses_by_connection on connection_addresses (connection_id);

-- Idempotency of completePlaidLink, keyed by the SHA-256 of the public token (the token
-- itself is never stored). A PENDING row older than a few minutes was abandoned by a crash.
create table link_completions (
    user_id             text not null,
    public_token_sha256 text not null,
    state               text not null,
    result              text,
    created_at          text not null,
    updated_at          text not null,
    constraint link_completions_pk primary key (user_id, public_token_sha256),
    constraint link_completions_state_check check (state in ('PENDING', 'DONE', 'FAILED'))
);

-- The last refreshPlaidBankConnections per user, for throttling across processes.
create table refresh_throttle (
    user_id             text primary key,
    last_refresh_at     text not null
);
