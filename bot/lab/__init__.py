"""The lab: measuring the offline engine and building what it ships, never serving a player.

Evaluation (evaluation.py), building the confusion model from recordings (confusions.py) and
making eSpeak recordings and the demo notes (samples.py) live here. Nothing on the request path
imports this package (tests/test_layers.py checks), so `voxdesk run` and `voxdesk ask` never load
it; it may import every layer below.
"""
