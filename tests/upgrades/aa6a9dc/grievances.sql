PRAGMA user_version = 0;
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
    next_try_at REAL  -- unix time: a pusher's claim on the row, or when to try it again
);
INSERT INTO "grievances" VALUES(10,'GRV-10','111111111111111111','wallet','Topped up 20 dollars of credits on Friday and the wallet still shows the old balance.','in progress','2026-11-14T09:12:00Z','2026-11-18T16:40:00Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(11,'GRV-11','222222222222222222','reward_points','Season reward points for tier 40 were never added.','open','2026-11-19T21:05:00Z','2026-11-19T21:05:00Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(12,'GRV-12','111111111111111111','gaming_experience','Racing lobby kicked me out three times in a row during the finals.','resolved','2026-10-30T18:22:00Z','2026-11-03T11:00:00Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(13,'GRV-13','333333333333333333','usage_history','My match history is missing every game from last weekend.','open','2026-11-21T13:45:00Z','2026-11-22T08:15:00Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(14,'GRV-14','111111111111111111','wallet','i want to complain i was charged twice for gems','open','2026-12-05T23:54:27Z','2026-12-05T23:54:27Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(15,'GRV-15','111111111111111111','wallet','charged twice: 2× 500 gems, ünïcode ✓','open','2026-12-05T23:54:29Z','2026-12-05T23:54:29Z',NULL,'local_only',0,NULL,NULL);
INSERT INTO "grievances" VALUES(16,'GRV-16','222222222222222222','other','the "shop"
page blank','open','2026-12-05T23:54:29Z','2026-12-05T23:54:29Z',NULL,'local_only',0,NULL,NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX grievances_by_user ON grievances (user_id, id);
CREATE INDEX grievances_pending ON grievances (push_state);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('grievances',16);
COMMIT;
