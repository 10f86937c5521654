-- Public event ids number each user's own events (1, 2, 3, …) instead of showing the global
-- seq: consecutive global numbers between a user's own events told anyone how much everyone
-- else was doing. user_seq is taken from the user's row of connection_event_users, updated in
-- the writing transaction after connection_event_log (whose lock already orders writers), so a
-- user's numbers follow the global order and never repeat, even after retention drops every
-- event of the user.
alter table connection_events add column user_seq bigint not null default 0;
update connection_events set user_seq = (
    select count(*) from connection_events e where e.user_id = connection_events.user_id and e.seq <= connection_events.seq
);
create unique index connection_events_by_user_number on connection_events (user_id, user_seq);

create table connection_event_users (
    user_id         text primary key,
    last_user_seq   bigint not null
);
insert into connection_event_users (user_id, last_user_seq)
select user_id, max(user_seq) from connection_events group by user_id;
