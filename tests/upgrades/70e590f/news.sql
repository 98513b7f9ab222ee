PRAGMA user_version = 2;
BEGIN TRANSACTION;
CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "cursors" VALUES('grievance-events-046708cd','3');
CREATE TABLE dms_closed (user_id TEXT PRIMARY KEY, told_at TEXT NOT NULL);
CREATE TABLE last_channel (
    user_id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,  -- where the player last sent a voice note the bot answers
    at TEXT NOT NULL
);
CREATE TABLE news (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    source TEXT NOT NULL,  -- local:<store id> | jira: whose key `ticket` is (GRV-5 differs in each)
    ticket TEXT NOT NULL,
    kind TEXT NOT NULL,  -- filed | moved | status
    status TEXT NOT NULL,  -- the status told
    text TEXT NOT NULL,
    -- pending | held | sending | sent | muted | dms_closed | failed | in_answer
    -- (held: waiting for the answer to a turn; in_answer: that answer named its key)
    state TEXT NOT NULL DEFAULT 'pending',
    found_at TEXT NOT NULL,
    done_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL,
    error TEXT,
    held_for TEXT,  -- the filing id of the turn whose answer is to tell it (state 'held')
    -- which change of the ticket this is: its grievance event's id, or its Jira issue's `updated`
    -- ('' for a filing, told once)
    marker TEXT NOT NULL DEFAULT '',
    -- the DM it was first tried in, once a try failed: that try's first news id, kept over tries
    -- (its messages' nonce, though news of it is done meanwhile); last, where an older file gets it
    delivery INTEGER,
    UNIQUE (source, ticket, kind, status, marker)
);
INSERT INTO "news" VALUES(1,'111111111111111111','local:046708cd','GRV-14','status','in progress','Your ticket GRV-14 ("i want to complain i was charged twice for gems") is now in progress.','pending','2026-12-06T13:44:14Z',NULL,1,1.79656468487408757213e+09,'not sent: Discord unreachable',NULL,'1',1);
INSERT INTO "news" VALUES(2,'333333333333333333','local:046708cd','GRV-13','status','resolved','Your ticket GRV-13 ("My match history is missing every game from last weekend.") is now resolved.','muted','2026-12-06T13:44:14Z','2026-12-06T13:44:14Z',0,NULL,NULL,NULL,'2',NULL);
INSERT INTO "news" VALUES(3,'222222222222222222','local:046708cd','GRV-18','filed','open','The complaint you made on 6 Dec at 13:44 UTC ("my season points vanished") is now filed as ticket GRV-18. Its status is open.','sent','2026-12-06T13:44:14Z','2026-12-06T13:44:14Z',0,NULL,NULL,NULL,'',NULL);
CREATE INDEX news_by_state ON news (state, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('news',3);
COMMIT;
