PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE notes (
    message_id INTEGER PRIMARY KEY,
    place_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,        -- pending | started | answered | expired | refused
                                -- (expired: given up on, too old or nowhere to answer it)
    owner TEXT,                 -- '<pid>:<start>:<token>' of the process answering it ('started')
    lease_until REAL,           -- when a 'started' claim lapses whatever its owner
    updated_at REAL NOT NULL
);
INSERT INTO "notes" VALUES(1311000000000000001,920000000000000001,'111111111111111111','answered',NULL,NULL,1.79656465488848018649e+09);
INSERT INTO "notes" VALUES(1311000000000000002,930000000000000001,'111111111111111111','answered',NULL,NULL,1.79656465488878703119e+09);
INSERT INTO "notes" VALUES(1311000000000000003,920000000000000001,'222222222222222222','answered',NULL,NULL,1.79656465488905906675e+09);
INSERT INTO "notes" VALUES(1311000000000000004,920000000000000001,'222222222222222222','pending',NULL,NULL,1.79656465488912773132e+09);
INSERT INTO "notes" VALUES(1311000000000000005,930000000000000001,'111111111111111111','pending',NULL,NULL,1.79656465488920736315e+09);
CREATE TABLE places (
    place_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,         -- dm | channel
    user_id TEXT,               -- whose DM
    heard_at REAL               -- the newest note from there (NULL: before this was kept)
);
INSERT INTO "places" VALUES(920000000000000001,'channel','111111111111111111',1.79656465488529705999e+09);
INSERT INTO "places" VALUES(930000000000000001,'dm','111111111111111111',1.79656465488806414603e+09);
INSERT INTO "places" VALUES(930000000000000002,'dm','222222222222222222',1.79656465488813638685e+09);
CREATE INDEX notes_by_state ON notes (state, message_id);
CREATE INDEX notes_by_place ON notes (place_id, state, message_id);
COMMIT;
