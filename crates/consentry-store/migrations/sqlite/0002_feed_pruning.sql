-- The change feed can be pruned; readers asking for changes before this point must reload.
ALTER TABLE meta ADD COLUMN pruned_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX cases_status ON cases (status, id);
