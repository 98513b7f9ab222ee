PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE grievances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local_key TEXT UNIQUE,
    user_id TEXT NOT NULL,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    remote_key TEXT,
    push_state TEXT NOT NULL DEFAULT 'local_only',  -- local_only | pending | pushed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_try_at REAL,  -- unix time: a pusher's claim on the row, or when to try it again
    -- a filing id: a note's (filed once however often its turn runs) or a spool line's
    -- (grievance_spool.py: filed once, whatever happens)
    spool_id TEXT,
    -- 1: its player never heard its key (filed from the spool, or the answer telling it was lost)
    filed_late INTEGER NOT NULL DEFAULT 0,
    -- when the tracker answered that it no longer has the pushed issue (deleted, or moved out of
    -- its project): worked on the desk again, its status the local one
    gone_at TEXT
);
INSERT INTO "grievances" VALUES(10,'GRV-10','111111111111111111','wallet','Topped up 20 dollars of credits on Friday and the wallet still shows the old balance.','in progress','2026-11-14T09:12:00Z','2026-11-18T16:40:00Z',NULL,'local_only',0,NULL,NULL,NULL,0,NULL);
INSERT INTO "grievances" VALUES(11,'GRV-11','222222222222222222','reward_points','Season reward points for tier 40 were never added.','open','2026-11-19T21:05:00Z','2026-11-19T21:05:00Z',NULL,'local_only',0,NULL,NULL,NULL,0,NULL);
INSERT INTO "grievances" VALUES(12,'GRV-12','111111111111111111','gaming_experience','Racing lobby kicked me out three times in a row during the finals.','resolved','2026-10-30T18:22:00Z','2026-11-03T11:00:00Z',NULL,'local_only',0,NULL,NULL,NULL,0,NULL);
INSERT INTO "grievances" VALUES(13,'GRV-13','333333333333333333','usage_history','My match history is missing every game from last weekend.','resolved','2026-11-21T13:45:00Z','2026-12-06T13:44:14Z',NULL,'local_only',0,NULL,NULL,NULL,0,NULL);
INSERT INTO "grievances" VALUES(14,'GRV-14','111111111111111111','wallet','i want to complain i was charged twice for gems','in progress','2026-12-06T13:43:56Z','2026-12-06T13:44:14Z',NULL,'local_only',0,NULL,NULL,'792293d440b348e09c392116fc6346c0',0,NULL);
INSERT INTO "grievances" VALUES(15,'GRV-15','222222222222222222','wallet','i want to complain i was charged twice for gems','waiting on player','2026-12-06T13:44:04Z','2026-12-06T13:44:14Z',NULL,'local_only',0,NULL,NULL,'271260d85716436da2d6b47114c52f23',0,NULL);
INSERT INTO "grievances" VALUES(16,'GRV-16','333333333333333333','wallet','i want to complain i was charged twice for gems','open','2026-12-06T13:44:13Z','2026-12-06T13:44:13Z',NULL,'local_only',0,NULL,NULL,'7b38221c2e184e0da38f3144b6137f87',0,NULL);
INSERT INTO "grievances" VALUES(17,'GRV-17','111111111111111111','gaming_experience','The lobby said "match found" then dropped me.
Twice — «ça coupe» at 23:00, naïve retry didn''t help.','open','2026-12-06T13:44:14Z','2026-12-06T13:44:14Z',NULL,'local_only',0,NULL,NULL,'c8d4703a08fd42db82e9e8c967159f22',0,NULL);
INSERT INTO "grievances" VALUES(18,'GRV-18','222222222222222222','reward_points','my season points vanished','open','2026-12-06T13:44:14Z','2026-12-06T13:44:14Z',NULL,'local_only',0,NULL,NULL,'ce464e665c9b4b0b9268466cbe44a144',1,NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('store_id','046708cd');
CREATE TABLE news_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grievance_id INTEGER NOT NULL,
    kind TEXT NOT NULL,  -- filed_late | pushed | status | moved
    was TEXT  -- moved: the remote key before
);
INSERT INTO "news_events" VALUES(4,15,'status',NULL);
CREATE TABLE staff_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grievance_id INTEGER NOT NULL REFERENCES grievances (id),
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX staff_notes_by_grievance ON staff_notes (grievance_id, id);
CREATE INDEX grievances_by_user ON grievances (user_id, id);
CREATE INDEX grievances_pending ON grievances (push_state);
CREATE INDEX grievances_by_time ON grievances (created_at, id);
CREATE UNIQUE INDEX grievances_by_spool_id ON grievances (spool_id);
CREATE TRIGGER news_filed_late AFTER INSERT ON grievances WHEN NEW.filed_late = 1
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'filed_late'); END;
CREATE TRIGGER news_pushed AFTER UPDATE OF push_state ON grievances
WHEN NEW.push_state = 'pushed' AND OLD.push_state IS NOT 'pushed'
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'pushed'); END;
CREATE TRIGGER news_status AFTER UPDATE OF status ON grievances
WHEN NEW.status IS NOT OLD.status
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'status'); END;
CREATE TRIGGER grievance_key AFTER INSERT ON grievances WHEN NEW.local_key IS NULL
BEGIN UPDATE grievances SET local_key = 'GRV-' || NEW.id WHERE id = NEW.id; END;
CREATE TRIGGER news_moved AFTER UPDATE OF remote_key ON grievances
WHEN OLD.remote_key IS NOT NULL AND NEW.remote_key IS NOT NULL AND NEW.remote_key IS NOT OLD.remote_key
BEGIN INSERT INTO news_events (grievance_id, kind, was) VALUES (NEW.id, 'moved', OLD.remote_key); END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('news_events',4);
INSERT INTO "sqlite_sequence" VALUES('grievances',18);
COMMIT;
