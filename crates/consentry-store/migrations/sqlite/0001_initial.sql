-- consentry-store schema v1 (SQLite). Times are milliseconds since the Unix epoch (UTC).
-- Ids use AUTOINCREMENT so that an id is never reused after a delete: the in-memory index and
-- the change feed key on entry ids.

CREATE TABLE meta (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    change_seq  INTEGER NOT NULL
);
INSERT INTO meta (id, change_seq) VALUES (1, 0);

CREATE TABLE banks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    purpose     TEXT    NOT NULL CHECK (purpose IN ('survivor-protected', 'known-abuse', 'other')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE cases (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    number          TEXT    NOT NULL UNIQUE,
    pin_hash        TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('received', 'active', 'withdrawn')),
    bank_id         INTEGER NOT NULL REFERENCES banks (id),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    withdrawn_at    INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    last_failed_at  INTEGER,
    locked_until    INTEGER,
    lockouts        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    bank_id     INTEGER NOT NULL REFERENCES banks (id),
    signal_type TEXT    NOT NULL,
    value       BLOB    NOT NULL,
    quality     INTEGER,
    source      TEXT    NOT NULL CHECK (source IN ('case', 'moderator', 'import')),
    case_id     INTEGER REFERENCES cases (id),
    metadata    TEXT    NOT NULL DEFAULT '{}',
    added_at    INTEGER NOT NULL,
    disabled_at INTEGER,
    CHECK ((source = 'case') = (case_id IS NOT NULL))
);
CREATE INDEX entries_bank ON entries (bank_id, id);
CREATE INDEX entries_case ON entries (case_id);
CREATE INDEX entries_value ON entries (signal_type, value);

-- The change feed: seq values are assigned under the meta row, so they are gapless and
-- committed in order.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY,
    entry_id    INTEGER NOT NULL,
    active      BOOLEAN NOT NULL,
    signal_type TEXT    NOT NULL,
    value       BLOB,
    cause       TEXT    NOT NULL,
    at          INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    details TEXT    NOT NULL DEFAULT '{}'
);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    prefix      TEXT    NOT NULL UNIQUE,
    salt        BLOB    NOT NULL,
    secret_hash BLOB    NOT NULL,
    scopes      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_token     INTEGER,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
