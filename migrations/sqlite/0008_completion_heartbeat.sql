-- The item a completePlaidLink exchanged its public token for, recorded right after the
-- exchange: a retry that takes over the claim of a killed completion knows the token is spent.
alter table link_completions add column exchanged_item_id text;
