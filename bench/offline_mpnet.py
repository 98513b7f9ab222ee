"""bench/offline.py with the word tagger reading through all-mpnet-base-v2: what the larger
encoder would cost a raid of voice notes. A measurement, not a way to run the bot.

    python bench/encoder_tagger.py --mpnet FOLDER --keep TAGGER   # learns TAGGER once
    python bench/offline_mpnet.py --mpnet FOLDER --tagger TAGGER [bench/offline.py's options]

The bot cannot load all-mpnet-base-v2 (bench/mpnet.py says why it is not a dependency), so this
runs bench/offline.py with a `sitecustomize` on PYTHONPATH that, in the benchmark and in every
worker process it spawns, hands the meaning model all-mpnet-base-v2 instead of all-MiniLM-L6-v2 and
the word tagger TAGGER's weights. Everything else is bench/offline.py's, baseline rows included;
compare with a plain `python bench/offline.py` run with the same options.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent

SITECUSTOMIZE = """
import functools, os, sys, traceback
from pathlib import Path


def _stop(why):
    # Python reports a failing sitecustomize and carries on: these rows would be MiniLM's.
    print(f"process {{os.getpid()}}: all-mpnet-base-v2 not in use: {{why}}", file=sys.stderr, flush=True)
    os._exit(1)


try:
    sys.path[:0] = [{root!r}, {bench!r}]
    from bot.intent import word_tagger
    from bot.speech import sentence_encoder
    import mpnet

    @functools.cache
    def load(folder=None):
        print(f"process {{os.getpid()}}: meaning model all-mpnet-base-v2", file=sys.stderr, flush=True)
        return mpnet.MPNet(Path({folder!r}))

    _tagger = word_tagger._load

    @functools.lru_cache(maxsize=1)
    def tagger(meaning, path):
        # word_tagger._load logs a tagger that does not fit and routes on cue words alone.
        return _tagger(meaning, path) or _stop(f"{{path}} does not load over all-mpnet-base-v2")

    sentence_encoder.load = load
    sentence_encoder.NAME = "all-mpnet-base-v2"
    word_tagger.WEIGHTS = Path({tagger!r})
    word_tagger.FEATURES = 3 * mpnet.DIMENSIONS + 2
    word_tagger._load = tagger
except Exception:
    _stop(traceback.format_exc())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpnet", type=Path, required=True, help="all-mpnet-base-v2's folder")
    parser.add_argument(
        "--tagger", type=Path, required=True, help="weights from bench/encoder_tagger.py --keep"
    )
    args, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as site:
        code = SITECUSTOMIZE.format(
            root=str(BENCH.parent),
            bench=str(BENCH),
            folder=str(args.mpnet.resolve()),
            tagger=str(args.tagger.resolve()),
        )
        Path(site, "sitecustomize.py").write_text(code)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])))
        return subprocess.call([sys.executable, str(BENCH / "offline.py"), *rest], env=env)


if __name__ == "__main__":
    raise SystemExit(main())
