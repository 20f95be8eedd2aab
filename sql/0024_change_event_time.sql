-- An event's time is when its change was made (the clock when its statement recorded it),
-- no longer when the changing transaction began: a long transaction's events carried its
-- start, and the time readers measure the feed's delay from was that much early.
ALTER TABLE change_events ALTER COLUMN occurred_at SET DEFAULT clock_timestamp();
