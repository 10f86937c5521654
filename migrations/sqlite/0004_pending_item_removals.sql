-- Plaid items that completePlaidLink exchanged and has not yet seen stored. The row is written
-- with a delayed `remove_item` job in one transaction right after the exchange, and deleted
-- once a connection holds the item; the job removes at Plaid any item that no connection
-- holds, so a failure (or a crash) between the exchange and the store never leaves a billed
-- item orphaned. The access token is sealed as in bank_connections.
create table pending_item_removals (
    plaid_item_id        text primary key,
    user_id              text not null,
    access_token_sealed  text not null,
    access_token_key_id  text not null,
    created_at           text not null
);
