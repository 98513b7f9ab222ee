PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "cursors" VALUES('grievance-events-8d0f1e1f','4');
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
    UNIQUE (source, ticket, kind, status, marker)
);
INSERT INTO "news" VALUES(1,'111111111111111111','local:8d0f1e1f','GRV-14','status','in progress','Your ticket GRV-14 ("i want to complain i was charged twice for gems") is now in progress.','pending','2026-12-06T05:35:35Z',NULL,1,1.79653536599625492098e+09,'not sent: Discord unreachable',NULL,'1');
INSERT INTO "news" VALUES(2,'111111111111111111','local:8d0f1e1f','GRV-12','status','waiting on player','Your ticket GRV-12 ("Racing lobby kicked me out three times in a row during the…") is now waiting on player.','pending','2026-12-06T05:35:35Z',NULL,1,1.79653536599625492098e+09,'not sent: Discord unreachable',NULL,'2');
INSERT INTO "news" VALUES(3,'111111111111111111','local:8d0f1e1f','GRV-10','status','resolved','Your ticket GRV-10 ("Topped up 20 dollars of credits on Friday and the wallet st…") is now resolved.','pending','2026-12-06T05:35:35Z',NULL,1,1.79653536599625492098e+09,'not sent: Discord unreachable',NULL,'3');
INSERT INTO "news" VALUES(4,'222222222222222222','local:8d0f1e1f','GRV-11','status','in progress','Your ticket GRV-11 ("Season reward points for tier 40 were never added.") is now in progress.','failed','2026-12-06T05:35:35Z','2026-12-06T05:35:35Z',0,NULL,NULL,NULL,'4');
CREATE INDEX news_by_state ON news (state, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('news',4);
COMMIT;
