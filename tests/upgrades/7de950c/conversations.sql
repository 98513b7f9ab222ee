PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    at REAL NOT NULL,
    user_text TEXT,
    reply_text TEXT NOT NULL,
    tool_results TEXT NOT NULL DEFAULT '[]',
    audio_id TEXT,
    audio_expires_at INTEGER,
    engine TEXT NOT NULL DEFAULT '',
    conversation TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT ''  -- the note or command it answered: a re-run replaces it
);
INSERT INTO "turns" VALUES(1,'111111111111111111',1.79653408214417314526e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-14. Ask me about its status any time.','[{"id": "call_d34cc4a7997e", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-14", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(2,'111111111111111111',1.79653409119293618195e+09,'how many points do i have','Nova, you have 708 points, and you''re ranked 11 of 12 players. Your best game is trivia, with 339 points from 6 games. You''ve won 64.03 dollars in cash. Your latest achievement is Night Owl.','[{"id": "call_f52710bfc79c", "name": "get_player_stats", "arguments": {}, "result": {"linked": true, "player_name": "Nova", "total_points": 708, "rank": 11, "players_ranked": 12, "games": [{"game_type": "battle_royale", "games_played": 3, "points_earned": 168, "cash_won": 64.03}, {"game_type": "poker", "games_played": 4, "points_earned": 201, "cash_won": 0.0}, {"game_type": "trivia", "games_played": 6, "points_earned": 339, "cash_won": 0.0}], "achievements": ["Night Owl"], "achievement_count": 1}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(3,'111111111111111111',1.79653410137259364129e+09,'what is the status of my tickets','You have 3 tickets. GRV-14, your wallet complaint, is open, last updated 6 December. GRV-12, your game experience complaint, is resolved, last updated 3 November. GRV-10, your wallet complaint, is in progress, last updated 18 November.','[{"id": "call_7fc6def7a9a6", "name": "get_grievance_status", "arguments": {}, "result": {"tickets": [{"ticket_key": "GRV-14", "category": "wallet", "status": "open", "last_update": "2026-12-06T05:14:41Z", "summary": "i want to complain i was charged twice for gems"}, {"ticket_key": "GRV-12", "category": "gaming_experience", "status": "resolved", "last_update": "2026-11-03T11:00:00Z", "summary": "Racing lobby kicked me out three times in a row during the finals."}, {"ticket_key": "GRV-10", "category": "wallet", "status": "in progress", "last_update": "2026-11-18T16:40:00Z", "summary": "Topped up 20 dollars of credits on Friday and the wallet still shows the old balance."}]}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(4,'222222222222222222',1.79653552004728198055e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-15. Ask me about its status any time.','[{"id": "call_ae4342a751e5", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-15", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(5,'222222222222222222',1.79653552483933234211e+09,'what is the status of my tickets','You have 2 tickets. GRV-15, your wallet complaint, is open, last updated 6 December. GRV-11, your reward points complaint, is in progress, last updated 6 December.','[{"id": "call_6ad0a56ae99a", "name": "get_grievance_status", "arguments": {}, "result": {"tickets": [{"ticket_key": "GRV-15", "category": "wallet", "status": "open", "last_update": "2026-12-06T05:38:39Z", "summary": "i want to complain i was charged twice for gems"}, {"ticket_key": "GRV-11", "category": "reward_points", "status": "in progress", "last_update": "2026-12-06T05:35:35Z", "summary": "Season reward points for tier 40 were never added."}]}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(6,'333333333333333333',1.79653553260424351687e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-16. Ask me about its status any time.','[{"id": "call_0d62746253e2", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-16", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline','','');
CREATE INDEX turns_by_user ON turns (user_id, id);
CREATE INDEX turns_by_age ON turns (at);
CREATE INDEX turns_by_place ON turns (user_id, conversation, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('turns',6);
COMMIT;
