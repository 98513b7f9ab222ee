-- Player stats for the embedded default (SQLite). data/sql/sqlserver/schema.sql is the same
-- tables for Azure SQL; the queries in bot/tools/stats_sql.py run unchanged on both.
CREATE TABLE IF NOT EXISTS players (
    player_id INTEGER PRIMARY KEY,
    discord_user_id VARCHAR(32) UNIQUE,
    player_name VARCHAR(64) NOT NULL
);

CREATE TABLE IF NOT EXISTS game_sessions (
    session_id INTEGER PRIMARY KEY,
    player_id INTEGER NOT NULL REFERENCES players (player_id),
    game_type VARCHAR(32) NOT NULL,
    played_at VARCHAR(32) NOT NULL,
    points_earned INTEGER NOT NULL,
    cash_won DECIMAL(10, 2) NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS game_sessions_by_player ON game_sessions (player_id);

CREATE TABLE IF NOT EXISTS achievements (
    achievement_id INTEGER PRIMARY KEY,
    player_id INTEGER NOT NULL REFERENCES players (player_id),
    name VARCHAR(64) NOT NULL,
    earned_at VARCHAR(32) NOT NULL
);
CREATE INDEX IF NOT EXISTS achievements_by_player ON achievements (player_id);
