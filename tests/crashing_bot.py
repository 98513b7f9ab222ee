"""`python -m bot`, whose decode of one note kills the process as a segfault in native code
(FFmpeg, onnxruntime) would: the note whose bytes hash to TEST_CRASHING_NOTE_SHA256 (sha256,
hex). Every other note is decoded as ever."""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Any

from bot import audio
from bot.entry import main

_real_decode = audio.decode


def _decode(data: bytes, *args: Any, **kwargs: Any) -> Any:
    if hashlib.sha256(data).hexdigest() == os.environ["TEST_CRASHING_NOTE_SHA256"]:
        os.kill(os.getpid(), signal.SIGSEGV)
    return _real_decode(data, *args, **kwargs)


audio.decode = _decode

if __name__ == "__main__":
    raise SystemExit(main())
