-- Live transaction counts per account, changed by exact deltas in the same database
-- transaction as every sync page, so totalCount does not scan a long history.
create table account_transaction_counts (
    account_id  text primary key references bank_accounts (id),
    posted      bigint not null,
    pending     bigint not null
);

-- Existing history, counted once.
insert into account_transaction_counts (account_id, posted, pending)
select a.id,
       (select count(*) from bank_transactions t where t.account_id = a.id and t.removed_at is null and t.pending = false),
       (select count(*) from bank_transactions t where t.account_id = a.id and t.removed_at is null and t.pending = true)
from bank_accounts a;
