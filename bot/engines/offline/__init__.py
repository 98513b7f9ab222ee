"""The offline engine: hearing.py recognises a note in worker processes, engine.py hears →
routes → answers → speaks (and holds the factories bot/app.py calls) in the words of
bot/sentences.py. It reads the intent router (bot/intent/) and the speech layer (bot/speech/)
below it, never the other way round.

Deliberately empty of imports: the hearing's worker processes are spawned and import this
package, and should not load the engine, its voices and audio encoding along with it.
"""
