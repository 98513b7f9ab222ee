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
INSERT INTO "turns" VALUES(1,'111111111111111111',1.79656463264046740535e+09,'hello what can you do','I can tell you your points, rank and achievements, answer questions from the game guides, file a complaint for you, and check on your tickets.','[]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(2,'111111111111111111',1.79656463690883564949e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-14. Ask me about its status any time.','[{"id": "call_33d7eb631fa8", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-14", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(3,'111111111111111111',1.79656464111707282063e+09,'what is the status of my tickets','You have 3 tickets. GRV-14, your wallet complaint, is open, last updated 6 December. GRV-12, your game experience complaint, is resolved, last updated 3 November. GRV-10, your wallet complaint, is in progress, last updated 18 November.','[{"id": "call_c7168a0f62e8", "name": "get_grievance_status", "arguments": {}, "result": {"tickets": [{"ticket_key": "GRV-14", "category": "wallet", "status": "open", "last_update": "2026-12-06T13:43:56Z", "summary": "i want to complain i was charged twice for gems"}, {"ticket_key": "GRV-12", "category": "gaming_experience", "status": "resolved", "last_update": "2026-11-03T11:00:00Z", "summary": "Racing lobby kicked me out three times in a row during the finals."}, {"ticket_key": "GRV-10", "category": "wallet", "status": "in progress", "last_update": "2026-11-18T16:40:00Z", "summary": "Topped up 20 dollars of credits on Friday and the wallet still shows the old balance."}]}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(6,'333333333333333333',1.79656465405268883704e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-16. Ask me about its status any time.','[{"id": "call_c32a9e580732", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-16", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline','','');
INSERT INTO "turns" VALUES(7,'222222222222222222',1.79656465487978076931e+09,NULL,'','[]',NULL,NULL,'','/forget','');
INSERT INTO "turns" VALUES(8,'444444444444444444',1.79656465992087960238e+09,'how many points do i have','Rook, you have 2210 points, and you''re ranked 1 of 12 players. Your best game is trivia, with 896 points from 11 games. You''ve won 175.25 dollars in cash. Your latest achievement is Season One Veteran.','[{"id": "call_b1e254deea32", "name": "get_player_stats", "arguments": {}, "result": {"linked": true, "player_name": "Rook", "total_points": 2210, "rank": 1, "players_ranked": 12, "games": [{"game_type": "battle_royale", "games_played": 4, "points_earned": 228, "cash_won": 25.9}, {"game_type": "poker", "games_played": 8, "points_earned": 499, "cash_won": 33.14}, {"game_type": "racing", "games_played": 11, "points_earned": 587, "cash_won": 116.21}, {"game_type": "trivia", "games_played": 11, "points_earned": 896, "cash_won": 0.0}], "achievements": ["Season One Veteran", "Sharpshooter", "First Win", "Speed Demon", "Night Owl"], "achievement_count": 5}, "ok": true}]',NULL,NULL,'offline','web:qXl5miHL8TI1Xkth8n476Q','web-a5597cc3-4add-4769-91cd-882c35c050f8');
CREATE INDEX turns_by_user ON turns (user_id, id);
CREATE INDEX turns_by_age ON turns (at);
CREATE INDEX turns_by_place ON turns (user_id, conversation, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('turns',8);
COMMIT;
