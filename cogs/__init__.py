"""The Discord front end: thin discord.py adapters over the core in `bot/` (which never imports
discord). `cogs.bot` is the client; each other module is an extension with one cog."""
