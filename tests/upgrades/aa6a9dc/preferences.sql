PRAGMA user_version = 0;
BEGIN TRANSACTION;
CREATE TABLE preferences (
    user_id TEXT PRIMARY KEY,
    voice TEXT,
    reply_mode TEXT NOT NULL DEFAULT 'voice_and_text'
);
INSERT INTO "preferences" VALUES('111111111111111111','en-us+f3','voice_and_text');
COMMIT;
