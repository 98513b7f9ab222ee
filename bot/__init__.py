"""voxdesk: answers gamers' voice notes with voice notes. The core; it never imports discord."""

__version__ = "0.1.0"
