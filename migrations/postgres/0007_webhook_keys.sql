-- Plaid's webhook verification keys (/webhook_verification_key/get), kept across restarts so a
-- restarted process verifies webhooks signed by a key it already knows without asking Plaid
-- (and without spending the lookups rationed against forged kids). jwk is the key as Plaid
-- gave it (JSON); expired_at (unix seconds) mirrors its expired_at; fetched_at is when Plaid
-- gave it (a key is asked for again 24 hours later).
create table webhook_keys (
    kid             text primary key,
    jwk             text not null,
    expired_at      bigint,
    fetched_at      text not null
);
