"""Offline speech: eSpeak NG synthesis and pocketsphinx recognition, from what the wheels ship."""
