-- Live connection events (the plaidConnectionEvents subscription). Each event is written in
-- the same transaction as the change that causes it (a link, a sync page, a status change,
-- a balance refresh, a removal), so an event exists exactly when its change does.
--
-- seq orders events. It comes from the one row of connection_event_log, updated last in the
-- writing transaction: that row's lock makes writers take numbers in commit order, so a
-- reader that has seen event n has seen every event before it (a sequence would hand out
-- numbers in start order, and a later number could commit first). pruned_through is the
-- highest seq dropped by retention: a client resuming from an older event has missed some.
create table connection_events (
    seq             bigint primary key,
    user_id         text not null,
    connection_id   text not null,
    plaid_item_id   text not null,
    event_type      text not null,
    status          text,
    transactions    bigint,
    added           bigint,
    modified        bigint,
    removed         bigint,
    occurred_at     text not null
);
create index connection_events_by_user on connection_events (user_id, seq);
create index connection_events_by_time on connection_events (occurred_at);

create table connection_event_log (
    id              integer primary key,
    last_seq        bigint not null,
    pruned_through  bigint not null,
    constraint connection_event_log_one_row check (id = 1)
);
insert into connection_event_log (id, last_seq, pruned_through) values (1, 0, 0);

-- When the connection's history finished its first sync (historyStatus READY); null while it
-- syncs. Connections synced before this migration count as ready.
alter table bank_connections add column history_ready_at text;
update bank_connections set history_ready_at = transactions_synced_at
where transactions_cursor is not null and transactions_cursor <> '';
