PRAGMA user_version = 0;
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
    engine TEXT NOT NULL DEFAULT ''
);
INSERT INTO "turns" VALUES(1,'111111111111111111',1.79651486812754297263e+09,'i want to complain i was charged twice for gems','I''ve filed your wallet complaint. Your ticket number is GRV-14. Ask me about its status any time.','[{"id": "call_440b64f2e90f", "name": "register_grievance", "arguments": {"category": "wallet", "description": "i want to complain i was charged twice for gems"}, "result": {"ticket_key": "GRV-14", "status": "open", "category": "wallet"}, "ok": true}]',NULL,NULL,'offline');
INSERT INTO "turns" VALUES(2,'111111111111111111',1.7965148692133162022e+09,'so any points do i have','Nova, you have 708 points, and you''re ranked 11 of 12 players. Your best game is trivia, with 339 points from 6 games. You''ve won 64.03 dollars in cash. Your latest achievement is Night Owl.','[{"id": "call_a34c720a921c", "name": "get_player_stats", "arguments": {}, "result": {"linked": true, "player_name": "Nova", "total_points": 708, "rank": 11, "players_ranked": 12, "games": [{"game_type": "battle_royale", "games_played": 3, "points_earned": 168, "cash_won": 64.03}, {"game_type": "poker", "games_played": 4, "points_earned": 201, "cash_won": 0.0}, {"game_type": "trivia", "games_played": 6, "points_earned": 339, "cash_won": 0.0}], "achievements": ["Night Owl"]}, "ok": true}]',NULL,NULL,'offline');
CREATE INDEX turns_by_user ON turns (user_id, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('turns',2);
COMMIT;
