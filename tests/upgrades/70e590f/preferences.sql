PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE preferences (
    user_id TEXT PRIMARY KEY,
    voice TEXT,
    reply_mode TEXT NOT NULL DEFAULT 'voice_and_text',
    notify INTEGER NOT NULL DEFAULT 1  -- ticket news by DM (bot/ticket_news.py)
);
INSERT INTO "preferences" VALUES('111111111111111111','en-us+f3','voice',1);
INSERT INTO "preferences" VALUES('222222222222222222',NULL,'text',1);
INSERT INTO "preferences" VALUES('333333333333333333',NULL,'voice_and_text',0);
COMMIT;
