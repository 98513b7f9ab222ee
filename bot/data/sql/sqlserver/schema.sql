-- Player stats for Azure SQL / SQL Server: the same tables and columns as
-- data/sql/sqlite/schema.sql, so the queries in bot/tools/stats_sql.py run unchanged on both.
-- Idempotent: run it as often as you like (sqlcmd -i schema.sql, or Azure Data Studio).
-- Dates stay ISO 8601 text, as in SQLite, so ordering by them means the same on both.

-- The filtered index below can only be made with QUOTED_IDENTIFIER ON (else Msg 1934), and
-- sqlcmd leaves it OFF unless run with -I. It is read when a batch is parsed, hence the GO.
SET QUOTED_IDENTIFIER ON;
GO

IF OBJECT_ID(N'dbo.players', N'U') IS NULL
    CREATE TABLE dbo.players (
        player_id INT NOT NULL CONSTRAINT pk_players PRIMARY KEY,
        discord_user_id NVARCHAR(32) NULL,
        player_name NVARCHAR(64) NOT NULL
    );

-- Unique among linked players only: SQL Server's UNIQUE constraint would allow a single NULL,
-- SQLite's allows many; a filtered index behaves like SQLite and serves the lookup by Discord id.
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE name = N'players_by_discord_user' AND object_id = OBJECT_ID(N'dbo.players')
)
    CREATE UNIQUE INDEX players_by_discord_user ON dbo.players (discord_user_id)
        WHERE discord_user_id IS NOT NULL;

IF OBJECT_ID(N'dbo.game_sessions', N'U') IS NULL
    CREATE TABLE dbo.game_sessions (
        session_id INT NOT NULL CONSTRAINT pk_game_sessions PRIMARY KEY,
        player_id INT NOT NULL CONSTRAINT fk_game_sessions_player REFERENCES dbo.players (player_id),
        game_type NVARCHAR(32) NOT NULL,
        played_at NVARCHAR(32) NOT NULL,
        points_earned INT NOT NULL,
        cash_won DECIMAL(10, 2) NOT NULL CONSTRAINT df_game_sessions_cash_won DEFAULT 0
    );

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE name = N'game_sessions_by_player' AND object_id = OBJECT_ID(N'dbo.game_sessions')
)
    CREATE INDEX game_sessions_by_player ON dbo.game_sessions (player_id);

IF OBJECT_ID(N'dbo.achievements', N'U') IS NULL
    CREATE TABLE dbo.achievements (
        achievement_id INT NOT NULL CONSTRAINT pk_achievements PRIMARY KEY,
        player_id INT NOT NULL CONSTRAINT fk_achievements_player REFERENCES dbo.players (player_id),
        name NVARCHAR(64) NOT NULL,
        earned_at NVARCHAR(32) NOT NULL
    );

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE name = N'achievements_by_player' AND object_id = OBJECT_ID(N'dbo.achievements')
)
    CREATE INDEX achievements_by_player ON dbo.achievements (player_id);
