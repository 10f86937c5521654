-- Live transaction counts per account and day, moved by the same exact deltas as
-- account_transaction_counts in every sync page's transaction, so the totalCount of a
-- date-filtered page sums at most one row per account and day in the range instead of
-- counting the history. Every transaction of a day has the same transaction_date (midnight
-- UTC), so a day is inside a range exactly when its date is.
create table account_transaction_day_counts (
    account_id  text not null references bank_accounts (id),
    day         text not null,
    posted      bigint not null,
    pending     bigint not null,
    constraint account_transaction_day_counts_pk primary key (account_id, day)
);

-- Existing history, counted once.
insert into account_transaction_day_counts (account_id, day, posted, pending)
select account_id, transaction_date,
       sum(case when pending then 0 else 1 end),
       sum(case when pending then 1 else 0 end)
from bank_transactions where removed_at is null
group by account_id, transaction_date;
