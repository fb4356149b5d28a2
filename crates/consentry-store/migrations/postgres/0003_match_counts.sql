-- How often each entry matched, per UTC day and per source (the API key or bot chat that looked
-- it up). No image, hash or query is kept: entry ids, names and counts only. The entry is not a
-- foreign key: the counts outlive a removed entry (what was caught stays measurable).
CREATE TABLE match_counts (
    entry_id    BIGINT  NOT NULL,
    bank_id     BIGINT  NOT NULL,
    signal_type TEXT    NOT NULL,
    day         BIGINT  NOT NULL,
    source      TEXT    NOT NULL,
    matches     BIGINT  NOT NULL,
    first_at    BIGINT  NOT NULL,
    last_at     BIGINT  NOT NULL,
    PRIMARY KEY (entry_id, day, source)
);
CREATE INDEX match_counts_day ON match_counts (day);
CREATE INDEX match_counts_bank ON match_counts (bank_id, day);
