PRAGMA user_version = 0;
BEGIN TRANSACTION;
CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE dms_closed (user_id TEXT PRIMARY KEY, told_at TEXT NOT NULL);
CREATE TABLE last_channel (
    user_id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,  -- where the player last sent a voice note the bot answers
    at TEXT NOT NULL
);
CREATE TABLE news (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    source TEXT NOT NULL,  -- local | jira: whose key `ticket` is (local GRV-5 and Jira GRV-5 differ)
    ticket TEXT NOT NULL,
    kind TEXT NOT NULL,  -- filed | status
    status TEXT NOT NULL,  -- the status told
    text TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sending | sent | muted | dms_closed | failed
    found_at TEXT NOT NULL,
    done_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL,
    error TEXT,
    UNIQUE (source, ticket, kind, status)
);
INSERT INTO "news" VALUES(1,'111111111111111111','local','GRV-12','status','resolved','GRV-12 is now resolved','sent','2026-12-05T23:53:26Z','2026-12-04T10:00:00Z',0,NULL,NULL);
INSERT INTO "news" VALUES(2,'222222222222222222','local','GRV-18','status','in progress','GRV-18 is now in progress','pending','2026-12-05T23:53:26Z',NULL,0,NULL,NULL);
CREATE INDEX news_by_state ON news (state, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('news',2);
COMMIT;
