"""Intent routing: recognised words → a tool call, small talk, or "ask again".

The middle layer of the offline engine: it reads the speech layer (bot/speech/) below it and is
read by the engine (bot/engines/offline/) above it, never the other way round. The router's cue
data (cues.py) is kept apart from its logic (router.py).
"""
