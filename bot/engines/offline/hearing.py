"""How the offline engine hears a note: a recogniser's transcripts voting on what was asked.

The recogniser is pocketsphinx, or Whisper when `offline.recognizer = "whisper"` (both behind
bot/speech/recognition.py's interface). pocketsphinx holds the GIL for the whole of a decode (a
few tenths of a second per note, seconds for a long one), so decoding in a thread stalls the
event loop and runs no faster on two cores than on one. The bot therefore decodes in worker
processes (`WorkerHearing`), each with its own recogniser; `LocalHearing` decodes in this
process, for the evaluation, the confusion-model builder (which bring their own processes) and
tests that script what was heard. A pocketsphinx worker votes on its transcripts itself (the vote
says whether to decode again with the general model); a Whisper worker sends its one hypothesis
back, and the bot's process, which routes the note through the meaning model in any case, judges
it: the worker loads no meaning model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot import logs
from bot.engines.base import EngineError, NoteUnheard, Transcript
from bot.intent import meaning, router
from bot.intent.word_tagger import word_tagger
from bot.speech import encoder_files
from bot.speech.math_threads import one_blas_thread
from bot.speech.recognition import SpeechRecognizer
from bot.speech.recognizer import Hypothesis, Recognizer, require_models, to_16k
from bot.speech.sentence_encoder import MINILM
from bot.speech.whisper_recognizer import WhisperRecognizer, WhisperSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Heard(Transcript):
    """A transcript with the recogniser's runners-up (best first), to weigh again in context."""

    alternatives: tuple[str, ...] = ()
    sure: bool = True  # False: the recogniser doubts its own words; no context makes them clear


def hear(recognizer: SpeechRecognizer, pcm: bytes, rate: int) -> Transcript:
    """Domain model first, its runners-up voting on what was asked; the general model only when
    none of the domain transcripts makes sense (and the recogniser has one)."""
    pcm16 = to_16k(pcm, rate)
    heard = recognizer.recognize(pcm16)
    assert heard is not None, "the first hearing always answers"
    return judge(heard, lambda: recognizer.recognize(pcm16, general=True))


def judge(heard: Hypothesis, wider: Callable[[], Hypothesis | None] = lambda: None) -> Transcript:
    """What `hear` makes of the recogniser's first hearing: its runners-up voting, and `wider`,
    the recogniser's general hearing of the same note, asked only when none of them makes sense
    (the default: a recogniser with none, such as Whisper)."""
    if not heard.sure:
        # The words at DEBUG only: INFO is what `run` logs, and a log outlives /forget.
        log.info("asking again: the recogniser doubts what it heard")
        log.debug("the recogniser doubts %r", heard.text)
        return Heard(heard.text, False, heard.alternatives, sure=False)
    settled = router.settle(heard.alternatives)
    if settled is not None:
        return Heard(settled.text, settled.act_on, heard.alternatives)
    general = wider()
    if general is not None:
        # Only for reading or looking things up: one loose transcript is not enough to file a
        # ticket, alone or as one of the note's requests.
        asked = {intent.name for intent in router.route_all(general.text)}
        if not asked & {router.UNSURE, router.REGISTER}:
            log.info("general model understood what the domain model did not")
            log.debug("general model heard %r", general.text)
            return Transcript(general.text)
    # Nothing made sense alone; in the conversation's light it still may (the engine re-votes).
    return Heard(heard.text, False, heard.alternatives)


class Hearing(Protocol):
    async def hear(self, pcm: bytes, rate: int) -> Transcript: ...

    async def aclose(self) -> None: ...


class LocalHearing:
    """Decodes in a thread of this process: one note at a time, holding the GIL while it does."""

    def __init__(self, recognizer: SpeechRecognizer) -> None:
        self.recognizer = recognizer

    async def hear(self, pcm: bytes, rate: int) -> Transcript:
        return await asyncio.to_thread(hear, self.recognizer, pcm, rate)

    async def aclose(self) -> None:
        pass


def default_workers() -> int:
    # Each worker holds its recogniser's models (Whisper's; or pocketsphinx's 65 MB, more once it
    # has needed the general one, and the meaning model it votes through, 90 MB for
    # all-MiniLM-L6-v2); past four, a raid is better served by a second bot process than by more
    # decoders in this one.
    return max(1, min(4, os.cpu_count() or 1))


# ---- in the worker processes ------------------------------------------------------------------

_recognizer: SpeechRecognizer | None = None
# Whether this worker judges what it hears (see _start_worker), or sends the hypothesis back.
_judges = True


def load_recognizer(model_dir: Path, whisper: WhisperSpec | None = None) -> SpeechRecognizer:
    """Whisper when the engine resolved a model for it, else pocketsphinx with the domain models."""
    return WhisperRecognizer.load(whisper) if whisper is not None else Recognizer(model_dir)


def ignore_stop_signals() -> None:
    # Ctrl-C in a terminal, and systemd's stop, signal the whole process group; the bot finishes
    # the notes in flight and then shuts its workers down, so they must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _WorkerProcess(SpawnProcess):
    """A worker that a broken pool's terminate() kills, since it ignores SIGTERM.

    A pool that loses a worker terminates the others and joins them; from Python 3.12 it holds
    its lock while it does, and every submit() and shutdown() on the event loop waits for that
    lock. With SIGTERM ignored the join would never return while another worker stood, and
    the bot would freeze on its next note, or when replacing the pool under the notes in
    flight."""

    def terminate(self) -> None:
        self.kill()


class _WorkerContext(SpawnContext):
    Process = _WorkerProcess


# "spawn": the bot's threads (discord.py, the default executor) must not be forked mid-lock.
WORKER_CONTEXT = _WorkerContext()


class _Pool(ProcessPoolExecutor):
    """A pool whose workers each tell, on a pipe of the pool's own, that they have loaded their
    models. A worker answers the check-in's asks (see WorkerHearing._check_in) only between
    notes, and the asks queue behind the notes sent before them: one that loaded and took a long
    note, or a raid's worth, would not answer within the check-in's wait, and be killed as hung."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
        self.loaded, told = WORKER_CONTEXT.Pipe(duplex=False)
        super().__init__(
            workers,
            mp_context=WORKER_CONTEXT,
            initializer=_tell_loaded,
            initargs=(told, initializer, *initargs),
        )

    def told_loaded(self) -> set[int]:
        """The process ids of the workers that have told they loaded since last asked."""
        pids = set()
        try:
            while self.loaded.poll():
                pids.add(self.loaded.recv())
        except (EOFError, OSError):  # shut down: its workers are no one's to check in now
            pass
        return pids


def _tell_loaded(told: mp_connection.Connection, initializer: Callable[..., None], *initargs: Any) -> None:
    initializer(*initargs)
    # A message this short is written at once, so the pool's workers can share the pipe.
    told.send(os.getpid())
    told.close()


def _start_worker(
    model_dir: str,
    log_level: int,
    log_formatter: bytes | None,
    whisper: WhisperSpec | None = None,
    meaning_setting: str = meaning.AUTO,
    secrets: tuple[str, ...] = (),
) -> None:
    global _recognizer
    ignore_stop_signals()
    handler = logging.StreamHandler()
    try:
        formatter = pickle.loads(log_formatter) if log_formatter else None
    except Exception:  # a class this process cannot import: the lines only lose their looks
        formatter = None
    handler.setFormatter(formatter or logging.Formatter(logging.BASIC_FORMAT))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(log_level)
    logs.quiet_noisy_loggers()
    logs.mask_secrets(secrets)
    logs.install_secret_mask()
    threading.Thread(target=_leave_with_the_bot, args=(os.getppid(),), daemon=True).start()
    one_blas_thread()
    _recognizer = load_recognizer(Path(model_dir), whisper)
    global _judges
    _judges = whisper is None
    if not _judges:
        # Whisper hears one transcript a note and has no general model to ask after it: the
        # vote needs nothing more of the worker, so the bot's process judges it (WorkerHearing.hear)
        # with the meaning model it routes the note with anyway, and the worker loads none (90-438
        # MB of weights each, hashed and read at every start).
        return
    # The bot's own process names the meaning model it loaded, the same one each worker loads:
    # a line per worker more would say it again. A worker that cannot load it still warns.
    logging.getLogger(meaning.__name__).setLevel(max(log_level, logging.WARNING))
    # The N-best vote routes each transcript as the engine will.
    meaning.use(vote_meaning(meaning_setting, pocketsphinx=whisper is None))
    word_tagger()  # loads the meaning model too


def vote_meaning(setting: str, pocketsphinx: bool) -> str:
    """The meaning model the engine and its hearing workers route with: the setting, except that
    under `auto` pocketsphinx's vote of up to ten transcripts a note reads them through
    all-MiniLM-L6-v2 when it is installed. Through all-mpnet-base-v2 that vote, made in the
    worker and again in a conversation's light by the engine, nearly halves the throughput
    (docs/offline-engine.md, "The word tagger over all-mpnet-base-v2")."""
    if pocketsphinx and setting == meaning.AUTO and encoder_files.installed(MINILM):
        return MINILM.name
    return setting


ORPHAN_CHECK_SECONDS = 1.0
# A worker's deadline on a note: this, and this many seconds more a second of audio.
DEADLINE_SECONDS = 60.0
DEADLINE_SECONDS_PER_SECOND = 4.0
# At closing, how long notes still being heard may take before their workers are killed.
CLOSE_SECONDS = 5.0
# How long killed workers are waited for before closing goes on without them.
KILLED_SECONDS = 5.0
# At start, how long the workers may take to load their models, all of them at once: far more
# than a large Whisper model takes from a slow disk. Past it a worker is stuck (a stalled
# network mount, a deadlock in a native loader), and would hold the bot's start for good.
START_SECONDS = 300.0
# How often a pool's workers are asked again whether they have loaded, until each one has
# answered (see WorkerHearing._check_in).
CHECK_IN_PAUSE_SECONDS = 0.25


def _leave_with_the_bot(bot_pid: int) -> None:
    """A bot that is SIGKILLed (or OOM-killed) cannot shut its workers down: each worker leaves
    by itself once its parent is gone, instead of holding its models' memory until a reboot."""
    while os.getppid() == bot_pid:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)


def _worker_pid() -> int:
    return os.getpid()


def _within(seconds: float, job: Callable[[bytes, int], T], pcm: bytes, rate: int) -> T:
    """`job` on a note, the worker killed by the kernel if it is not done in `seconds`. SIGALRM
    left to its default action, not a Python handler: a decoder stuck in native code holding the
    GIL would never run one. The broken pool is then the pool's usual recovery (WorkerHearing)."""
    if not hasattr(signal, "alarm"):  # Windows: no deadline
        return job(pcm, rate)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, math.ceil(seconds)))
    try:
        return job(pcm, rate)
    finally:
        signal.alarm(0)


def _hear_in_worker(pcm: bytes, rate: int) -> Transcript | Hypothesis:
    assert _recognizer is not None, "the pool's initializer loads the recogniser"
    if _judges:
        return hear(_recognizer, pcm, rate)
    heard = _recognizer.recognize(to_16k(pcm, rate))
    assert heard is not None, "the first hearing always answers"
    return heard


async def _judged(heard: Transcript | Hypothesis) -> Transcript:
    """A worker's answer as `hear` would give it: a hypothesis, from a worker that does not judge
    what it hears, is judged here, off the event loop (the meaning model reads it)."""
    if isinstance(heard, Hypothesis):
        return await asyncio.to_thread(judge, heard)
    return heard


def _bots_formatter() -> bytes | None:
    """The bot's own log formatter, pickled for the spawned workers, so that their lines read
    like the bot's. The formatter itself, not its format string: discord.py's (under `run`) has
    {}-style fields, or colours."""
    formatter = next((h.formatter for h in logging.getLogger().handlers if h.formatter), None)
    try:
        return pickle.dumps(formatter) if formatter is not None else None
    except (pickle.PicklingError, AttributeError, TypeError):  # one holding a stream, say
        return None


def _processes(pool: ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes; a pool exposes them no other way, and forgets them at shutdown."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _still_there(workers: list[Any], within: float = 0.0) -> list[Any]:
    """The workers that have not ended after up to `within` seconds. Told by each one's sentinel,
    which its end closes, not by join() and is_alive(): a shut-down pool's own thread waits for
    its workers too, and when its waitpid() reaps one first, this thread's is refused (ECHILD)
    and multiprocessing takes the worker for one still running. One that ended is reaped, here or
    by that thread: its end closes the sentinel a moment before the process table lets it go."""
    until = time.monotonic() + within
    left = []
    for worker in workers:
        if mp_connection.wait([worker.sentinel], max(0.0, until - time.monotonic())):
            worker.join()
        else:
            left.append(worker)
    return left


def _stop(workers: list[Any], within: float, busy: bool) -> None:
    """Wait up to `within` seconds for the workers to leave, then kill those still there. `busy`:
    whether any was on a note; an idle worker can be slow to leave on a loaded machine, and
    killing it then loses nothing worth a warning."""
    killed = []
    for worker in _still_there(workers, within):
        if busy:
            log.warning("a speech worker still busy at closing is killed (pid %s)", worker.pid)
        else:
            log.debug("an idle speech worker slow to leave at closing is killed (pid %s)", worker.pid)
        worker.kill()
        killed.append(worker)
    # A worker in uninterruptible sleep (its models on a stalled network mount) acts on SIGKILL
    # only once its I/O returns: closing, and the clients closed after it, do not wait for that.
    left = [str(worker.pid) for worker in _still_there(killed, KILLED_SECONDS)]
    if left:
        log.warning(
            "killed speech workers were still there after %g s (pid %s), perhaps waiting on a "
            "stalled disk; the bot's process ends once they have gone",
            KILLED_SECONDS,
            ", ".join(left),
        )


async def _kill_stuck(pool: ProcessPoolExecutor) -> None:
    """Shut `pool` down, its workers killed at once: stuck in their initializer, they would never
    leave by themselves, and none is on a note."""
    workers = _processes(pool)  # taken before shutdown(), which forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    await asyncio.to_thread(_stop, workers, 0.0, False)


async def _within_start(pool: ProcessPoolExecutor, answers: Awaitable[T]) -> T:
    """`answers`, awaited while `pool`'s workers load their models; past START_SECONDS they are
    killed as stuck (see _kill_stuck) and TimeoutError is raised. A replacement pool's check-in
    kills its own: notes queued there must fail, not be cancelled (see WorkerHearing._check_in)."""
    try:
        async with asyncio.timeout(START_SECONDS):
            return await answers
    except TimeoutError:
        await _kill_stuck(pool)
        raise


class WorkersStuck(Exception):
    """The speech workers had not loaded their models after `seconds`; they were killed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the speech workers had not loaded their models after {seconds:g} s")
        self.seconds = seconds


class WorkerHearing:
    """Decodes in worker processes, in parallel across cores, with the event loop left free.

    A worker that dies (a crash in the native decoder, the OOM killer) breaks the pool and every
    note in flight on it. The pool is replaced, and each of those notes is heard again in a
    worker of its own: the note that crashed its worker cannot take the others down twice, and
    only that one gets an apology (NoteUnheard); a lone worker that dies before it takes the note
    is the service's trouble (EngineError). No more lone workers run at once than the pool
    has workers: each loads every model, and eight of them after one OOM kill would invite the
    next. A worker still on a note past its deadline (a decoder stuck in a loop) is killed, and
    recovered from as one that died: that note alone is given up on, and the worker is not lost.
    Fresh workers that have not loaded their models START_SECONDS after their pool's first job
    are killed, as start() kills the first pool's: the notes waiting for them are the service's
    trouble (EngineError), and the check says so (WorkersStuck). One that has not, beside others
    that have, is killed too: its pool breaks, and the notes on it are heard again, each alone.
    """

    # What a worker does with a note; a module-level function, since it crosses to the worker by name.
    job: Callable[[bytes, int], Transcript | Hypothesis] = staticmethod(_hear_in_worker)

    def __init__(
        self,
        model_dir: Path,
        workers: int = 0,
        whisper: WhisperSpec | None = None,
        meaning_setting: str = meaning.AUTO,
    ) -> None:
        # A missing model is named at start-up, not on the first note. pocketsphinx's are needed
        # even under Whisper: they are what the bot falls back to.
        require_models(model_dir)
        self.model_dir = model_dir
        self.whisper = whisper
        self.meaning_setting = meaning_setting
        self.workers = workers or default_workers()
        self._closed = False
        self._pool = self._new_pool(self.workers)
        self._lone_workers = asyncio.Semaphore(self.workers)
        self._alone: set[ProcessPoolExecutor] = set()  # the lone workers' pools, to stop at closing
        # Workers killed and perhaps not gone yet (SIGKILL is sent, not yet acted on): a cancelled
        # note's lone worker, a replacement pool's stuck loading. Closing waits until they are gone.
        self._killed: list[Any] = []
        # Jobs handed to a worker and not yet answered, cancelled notes' included: closing says
        # whether the workers it kills were busy.
        self._jobs: set[Future[Any]] = set()
        # Replacement pools no job was handed to yet: a pool starts its workers at its first
        # job, and their wait to load (see _check_in) starts then. The waits themselves, and the
        # pools whose workers they killed for not loading: their notes were never taken.
        self._unchecked: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
        self._check_ins: set[asyncio.Task[None]] = set()
        self._stuck: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
        # Pools whose check-in killed a worker hung loading beside others that had loaded: their
        # notes were taken by those, and crashed nothing.
        self._short: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
        # False from a fresh worker dying before it could hear a note (no model loads, no memory
        # for it) until a worker answers again: every note meanwhile gets an apology, and the pool
        # replaced at each one says nothing to /healthz.
        self.ready = True

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        root = logging.getLogger()
        return _Pool(
            workers,
            _start_worker,
            (
                str(self.model_dir),
                root.getEffectiveLevel(),
                _bots_formatter(),
                self.whisper,
                self.meaning_setting,
                # Spawned workers load no settings: the bot's values to mask come along.
                logs.masked_values(),
            ),
        )

    async def start(self) -> set[int]:
        """Start the workers now, so the first notes do not wait for them; returns the process
        ids that answered (every worker is started, though a quick one may answer for two).
        BrokenProcessPool when a worker dies loading its models; WorkersStuck, the workers
        killed, when they have not all answered after START_SECONDS. Workers that have not
        answered yet are checked in as a replacement pool's are (see _check_in)."""
        pool = self._pool
        try:
            pids = await _within_start(pool, self._pids())
        except TimeoutError:
            raise WorkersStuck(START_SECONDS) from None
        if not {w.pid for w in _processes(pool)} <= pids:  # the first pool is checked in here alone
            self._start_check_in(pool, [], pids)
        return pids

    async def ping(self) -> set[int]:
        """The process ids of the workers that answer; they queue behind notes in flight. A pool
        a worker left while idle (the OOM killer) is replaced first: the check says whether
        notes are heard now, and the next note would replace it anyway. WorkersStuck when the
        pool's workers were killed for not loading their models within START_SECONDS."""
        pool = self._pool
        try:
            return await self._pids()
        except BrokenProcessPool:
            if self._closed:
                raise
            self._replace(pool)
            if pool in self._stuck:
                # Notes are not heard now: this check is not held another START_SECONDS for
                # the fresh workers, which the next job's check-in waits for.
                raise WorkersStuck(START_SECONDS) from None
            log.error("%s; starting fresh workers", self._not_loaded(pool) or "a speech worker had died")
        fresh = self._pool
        try:
            return await self._pids()
        except BrokenProcessPool:
            if fresh in self._stuck:
                raise WorkersStuck(START_SECONDS) from None
            raise

    def _submit(self, pool: ProcessPoolExecutor, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """loop.run_in_executor, with the job kept in `_jobs` until a worker answers it."""
        if pool in self._unchecked:
            self._unchecked.discard(pool)
            # Asked ahead of the job, so that the workers answer as soon as they have loaded.
            self._start_check_in(pool, [pool.submit(_worker_pid) for _ in range(self.workers)])
        submitted = pool.submit(job, *args)
        self._jobs.add(submitted)
        submitted.add_done_callback(self._jobs.discard)
        return asyncio.wrap_future(submitted)

    async def _pids(self) -> set[int]:
        answers = [self._submit(self._pool, _worker_pid) for _ in range(self.workers)]
        pids = set(await asyncio.gather(*answers))
        self.ready = True
        return pids

    def deadline(self, pcm: bytes, rate: int) -> float:
        """The seconds a worker may spend on a note before it is killed: far more than a decode
        takes (tenths of a second a second of audio, the general model's pass too), so that only
        a stuck one reaches it, and longer the longer the note."""
        return DEADLINE_SECONDS + DEADLINE_SECONDS_PER_SECOND * len(pcm) / 2 / rate

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:  # the other notes in flight saw the same failure: replace it once
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool(self.workers)
            self._unchecked.add(self._pool)

    def _start_check_in(
        self, pool: ProcessPoolExecutor, answers: list[Future[int]], answered: set[int] | None = None
    ) -> None:
        check_in = asyncio.create_task(self._check_in(pool, answers, set(answered or ())))
        self._check_ins.add(check_in)
        check_in.add_done_callback(self._check_ins.discard)

    async def _check_in(
        self, pool: ProcessPoolExecutor, answers: list[Future[int]], answered: set[int]
    ) -> None:
        """Kill a replacement pool's workers that have not loaded their models after
        START_SECONDS, as start() does the first pool's (whose workers a quick one answered for
        are checked in too). Notes queued on a pool wait for a worker to take them, and a note's
        own deadline runs only from then: workers hung loading would hold every note, and the
        desk's check, for good. Killed, they break the pool, and each note on it fails as the
        service's trouble (see hear). One hung beside workers that did load holds no note (they
        take every job), but would leave the pool short until closing: killed, it breaks the
        pool all the same, and its notes are heard again. A worker that told it had loaded (see
        _Pool) counts as one that answered, however long its notes keep it from the asks."""
        workers = {worker.pid for worker in _processes(pool)}
        told: Callable[[], set[int]] = getattr(pool, "told_loaded", set)
        try:
            async with asyncio.timeout(START_SECONDS):
                answered.update(await asyncio.gather(*map(asyncio.wrap_future, answers)), told())
                # A worker quick to load can answer every ask: ask again until each has.
                while not workers <= answered:
                    await asyncio.sleep(CHECK_IN_PAUSE_SECONDS)
                    if pool is not self._pool:  # replaced, and shut down, meanwhile
                        return
                    answered.update(told())
                    if workers <= answered:
                        break
                    answers = [pool.submit(_worker_pid) for _ in workers]
                    answered.update(await asyncio.gather(*map(asyncio.wrap_future, answers)))
        except BrokenProcessPool:  # a worker died loading: the notes on the pool recover as usual
            return
        except TimeoutError:
            if self._closed:
                return
            answered.update(told())
            hung = [worker for worker in _processes(pool) if worker.pid not in answered]
            if not hung:  # each had loaded, and its notes kept it from the asks
                return
            if answered:
                log.error(
                    "%d of %d fresh speech workers had not loaded their models after %g s; "
                    "killing them (pid %s)",
                    len(hung),
                    len(workers),
                    START_SECONDS,
                    ", ".join(str(worker.pid) for worker in hung),
                )
                self._short.add(pool)
            else:
                log.error("fresh speech workers had not loaded their models after %g s", START_SECONDS)
                self._stuck.add(pool)
                self.ready = False
            self._kill(hung)

    def _not_loaded(self, pool: ProcessPoolExecutor) -> str | None:
        """What broke `pool`, when its check-in killed workers that had not loaded their models."""
        if pool in self._stuck:
            return "the speech workers had not loaded their models"
        if pool in self._short:
            return "a speech worker had not loaded its models"
        return None

    def _kill(self, workers: list[Any]) -> None:
        self._killed = _still_there(self._killed)
        for worker in workers:
            worker.kill()
            self._killed.append(worker)

    async def hear(self, pcm: bytes, rate: int) -> Transcript:
        pool = self._pool
        seconds = self.deadline(pcm, rate)
        try:
            try:
                waiting = self._submit(pool, _within, seconds, self.job, pcm, rate)
            except BrokenProcessPool:
                if self._closed:
                    raise
                # Broken before this note came (a worker died idle, or on another note, or its
                # check-in killed workers that had not loaded): fresh workers hear it, since it
                # crashed nothing.
                log.error(
                    "%s; starting fresh workers",
                    self._not_loaded(pool) or "a speech worker had died before this note came",
                )
                self._replace(pool)
                pool = self._pool
                waiting = self._submit(pool, _within, seconds, self.job, pcm, rate)
            heard = await waiting
            self.ready = True
            return await _judged(heard)
        except BrokenProcessPool as exc:
            if self._closed:
                raise
            if pool in self._stuck:
                # No worker ever took the note: it crashed nothing, and a lone worker would most
                # likely hang loading just the same.
                self._replace(pool)
                self.ready = False
                raise EngineError("the speech workers cannot start") from exc
            if pool in self._short:
                # A worker that never loaded was killed under it: the note crashed nothing, and is
                # heard again alone all the same, as every note on a broken pool is.
                log.info("hearing a note again, in a fresh worker: its pool was short of a worker")
            else:
                log.error(
                    "a speech worker died while hearing a note; starting fresh workers, hearing it again"
                )
            self._replace(pool)
        async with self._lone_workers:
            alone = self._new_pool(1)
            self._alone.add(alone)
            try:
                try:
                    await _within_start(alone, self._submit(alone, _worker_pid))
                except (BrokenProcessPool, TimeoutError) as exc:
                    # Killed while it loaded the models, unable to load them, or stuck loading
                    # them: no fault of this note's, and asking the player to record it again
                    # would get them nowhere.
                    if isinstance(exc, TimeoutError):
                        log.error("a fresh speech worker had not loaded its models after %g s", START_SECONDS)
                    else:
                        log.error("a fresh speech worker died before it could hear a note")
                    self.ready = False
                    raise EngineError("the speech workers cannot start") from exc
                self.ready = True
                heard = await self._submit(alone, _within, seconds, self.job, pcm, rate)
            except BrokenProcessPool as exc:
                log.error(
                    "a speech worker died again on the same note (%.1f s of audio), or was killed "
                    "still on it after %.0f s",
                    len(pcm) / 2 / rate,
                    seconds,
                )
                raise NoteUnheard("the speech recogniser crashed on this note") from exc
            except asyncio.CancelledError:
                # No one waits for the note now (a stop's grace ran out): its worker serves no
                # other, and would run on to its deadline, unseen by aclose, the bot's exit
                # waiting for it.
                self._kill(_processes(alone))
                raise
            finally:
                self._alone.discard(alone)
                alone.shutdown(wait=False, cancel_futures=True)
        return await _judged(heard)

    async def aclose(self) -> None:
        """Notes in flight are given CLOSE_SECONDS to finish; then their workers are killed. The
        front end has let its turns finish or cancelled them by now, and a worker ignores SIGTERM:
        waiting for one that is stuck kept the bot from ever exiting."""
        self._closed = True
        for check_in in list(self._check_ins):
            check_in.cancel()
        pools = [self._pool, *self._alone]
        # Taken before shutdown(), which forgets them.
        workers = [p for pool in pools for p in _processes(pool)] + self._killed
        # A copy: the pool's own thread drops each job from the set as its worker answers it. A
        # killed worker gone by now (a check-in's, hung loading, or a cancelled note's) leaves
        # nothing for closing to cut short.
        busy = bool(_still_there(self._killed)) or any(job.running() for job in list(self._jobs))
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(_stop, workers, CLOSE_SECONDS, busy)
