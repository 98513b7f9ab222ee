"""How a player's voice note sounds by the time it reaches the bot: the listening conditions of the
neural-voice evaluation. Each one is a recipe applied to clean speech (room reverb, game and crowd
noise at a signal-to-noise ratio, a phone-band microphone, Opus at a voice message's bitrate), and
everything random in it comes from a seed, so the same note is made the same way every time.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from bot import audio
from bot.lab.samples import speak_pcm


@dataclass(frozen=True)
class Condition:
    name: str
    snr_db: float | None  # None: no background noise
    reverb: bool
    phone: bool  # a 300-3400 Hz microphone heard through 8 kHz
    bit_rate: int  # Opus, bits a second
    noise: str = "crowd"  # CROWD: the game-and-crowd bed; PINK: steady pink noise


CROWD, PINK = "crowd", "pink"


CONDITIONS = {
    c.name: c
    for c in (
        # What the bot's own encoder makes of a voice message recorded in a quiet room.
        Condition("clean", None, reverb=False, phone=False, bit_rate=audio.OPUS_BIT_RATE),
        Condition("noisy", 15.0, reverb=True, phone=False, bit_rate=16_000),
        Condition("hard", 5.0, reverb=True, phone=True, bit_rate=12_000),
        # Issue 18's own yardstick for "hard": steady pink noise, which masks speech far less than
        # other people talking, with the same phone band and bitrate and no room.
        Condition("pink", 5.0, reverb=False, phone=True, bit_rate=12_000, noise=PINK),
    )
}

# Peak level of the speech before anything is added: -3 dBFS, a microphone with a little headroom.
SPEECH_PEAK = 0.7 * 32767
# Samples above this count as speech when its power is measured (int16 scale, about -40 dBFS),
# as in evaluation.add_noise: pauses between words must not make a noise look quieter than it is.
SPEECH_FLOOR = 300.0
RT60_RANGE = (0.3, 0.6)  # seconds: a bedroom or a small living room
# Direct sound to reverberant tail, in dB: a desk or headset microphone, heard mostly direct.
DIRECT_TO_REVERB_DB = 6.0
PHONE_BAND = (300.0, 3400.0)
PHONE_EDGES = (250.0, 3600.0)  # where the band-pass reaches silence
PHONE_RATE = 8000


# ---- the steps --------------------------------------------------------------------------------


def speech_power(speech: np.ndarray) -> float:
    """Mean power of the speech actually present: the samples above the floor."""
    loud = np.abs(speech) > SPEECH_FLOOR
    return float(np.mean(speech[loud].astype(np.float64) ** 2)) if np.any(loud) else 1.0


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` plus `noise` (as long as it) scaled to `snr_db` below the speech's own power."""
    noise = noise.astype(np.float64)
    power = float(np.mean(noise**2)) or 1.0
    gain = np.sqrt(speech_power(speech) / 10 ** (snr_db / 10) / power)
    return speech.astype(np.float64) + gain * noise


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls by 3 dB an octave, like a fan or a steady hiss."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, length)


def room_impulse(rate: int, rt60: float, seed: int) -> np.ndarray:
    """A synthetic room: the direct sound, a few early reflections, then a tail of noise decaying
    by 60 dB in `rt60` seconds."""
    rng = np.random.default_rng(seed)
    length = int(rt60 * rate)
    response = np.zeros(length)
    response[0] = 1.0
    for _ in range(6):  # walls, desk, ceiling: 3-25 ms after the direct sound
        at = int(rng.uniform(0.003, 0.025) * rate)
        response[at] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5)
    start = int(0.005 * rate)
    t = np.arange(length - start) / rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.908 * t / rt60)  # e^-6.908 = -60 dB
    tail *= np.sqrt(10 ** (-DIRECT_TO_REVERB_DB / 10) / np.sum(tail**2))
    response[start:] += tail
    return response


def reverberate(samples: np.ndarray, rate: int, rt60: float, seed: int) -> np.ndarray:
    """The samples played in the room: longer by the impulse response, at the same peak."""
    response = room_impulse(rate, rt60, seed)
    size = len(samples) + len(response) - 1
    n = 1 << (size - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(samples, n) * np.fft.rfft(response, n), n)[:size]
    peak = float(np.max(np.abs(wet))) or 1.0
    return wet * (float(np.max(np.abs(samples))) / peak)


def phone_band(samples: np.ndarray, rate: int) -> np.ndarray:
    """A cheap phone microphone: 300-3400 Hz, through 8 kHz and back to `rate`."""
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    low, high = PHONE_BAND
    low_edge, high_edge = PHONE_EDGES
    gain = np.ones_like(freqs)
    # Raised-cosine skirts rather than a brick wall, which would ring audibly around every click.
    rise = np.clip((freqs - low_edge) / (low - low_edge), 0, 1)
    fall = np.clip((high_edge - freqs) / (high_edge - high), 0, 1)
    gain *= 0.5 - 0.5 * np.cos(np.pi * rise)
    gain *= 0.5 - 0.5 * np.cos(np.pi * fall)
    band = np.fft.irfft(spectrum * gain, len(samples))
    narrow = audio.resample(_int16(band), rate, PHONE_RATE)
    back = audio.resample(narrow, PHONE_RATE, rate).astype(np.float64)
    # The resampler's filters shift the length by a few samples.
    return np.pad(back, (0, max(0, len(samples) - len(back))))[: len(samples)]


def encode(samples: np.ndarray, rate: int, bit_rate: int) -> bytes:
    """A Discord voice message as the bot's own encoder makes it: Ogg/Opus, 48 kHz."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak > 32767:  # scaled, not clipped: the whole note, so the mix keeps its ratio
        samples = samples * (32767 / peak)
    return audio.reply_from_pcm(_int16(samples).tobytes(), rate, bit_rate).ogg


def _int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def apply(speech: np.ndarray, rate: int, condition: Condition, seed: int, bed: np.ndarray | None) -> bytes:
    """Clean speech (int16 at `rate`) as a player's note in `condition`; `bed` is the background
    noise (noise_bed, at `rate`) that noisy conditions take a stretch of."""
    rng = np.random.default_rng(seed)
    x = speech.astype(np.float64)
    x *= SPEECH_PEAK / (float(np.max(np.abs(x))) or 1.0)
    pad = np.zeros(rate // 3)  # a voice message starts and ends with a moment of room tone
    x = np.concatenate([pad, x, pad])
    if condition.reverb:
        x = reverberate(x, rate, float(rng.uniform(*RT60_RANGE)), seed)
    if condition.snr_db is not None and condition.noise == PINK:
        x = mix_at_snr(x, pink_noise(len(x), rng), condition.snr_db)
    elif condition.snr_db is not None:
        assert bed is not None, "a noisy condition needs the noise bed"
        start = int(rng.integers(len(bed)))
        noise = np.resize(np.roll(bed, -start), len(x))  # wraps round a bed shorter than the note
        x = mix_at_snr(x, noise, condition.snr_db)
    if condition.phone:
        x = phone_band(x, rate)
    return encode(x, rate, condition.bit_rate)


# ---- the background: game sounds and a crowd ---------------------------------------------------

BED_SECONDS = 60
BED_SEED = 20261202
# Other people talking in the room or on voice chat, about anything but this bot's business: no
# word here may be one the router listens for.
CROWD_TEXTS = (
    "The weather turned cold on Tuesday, and by nightfall the river had iced over along the banks. "
    "We walked to the bakery anyway and picked up bread while it was still warm.",
    "My aunt grows tomatoes on her balcony every summer. She waters them before breakfast and talks "
    "to them, which the neighbours find very funny.",
    "The train was late again, so we sat in the station cafe and watched the pigeons fight over a "
    "sandwich. Somebody's dog barked at every single one of them.",
    "Put the onions in first and let them soften for ten minutes, then add the garlic and the "
    "tomatoes. Keep stirring, or it sticks to the bottom of the pan.",
    "The museum has a new room full of old maps. Some of them show islands that never existed, "
    "drawn by sailors who were sure they had seen them.",
    "We should paint the kitchen yellow, or maybe a pale green. Honestly I do not mind, as long as "
    "we finish before my parents visit in the spring.",
    "Did you see the birds on the lake at dawn? There were swans, and a heron waiting very "
    "still near the reeds, waiting for a fish.",
    "Her brother moved to the coast last year. He builds boats now and sends us photographs "
    "of sunsets, every single night without fail.",
)
CROWD_VOICES = (
    ("en-us+m1", 150, 45),
    ("en+f2", 170, 60),
    ("en-us+f4", 160, 70),
    ("en+m4", 145, 35),
    ("en-us+m5", 175, 50),
    ("en-us+f1", 155, 65),
)
CROWD_RATE = 22050  # eSpeak NG's


@functools.cache  # in every noisy note's name: asked for thousands of times a run
def bed_key() -> str:
    """Everything that shapes the noise bed, hashed: its file name in the cache. The talkers are
    eSpeak's, so another eSpeak release makes another bed (and other noisy notes)."""
    espeak = metadata.version("espeakng-loader")
    recipe = repr((BED_SECONDS, BED_SEED, CROWD_TEXTS, CROWD_VOICES, CROWD_RATE, espeak))
    return hashlib.sha1(recipe.encode()).hexdigest()[:16]


def noise_bed() -> np.ndarray:
    """A minute of background at CROWD_RATE, unit power: a crowd of eSpeak talkers over game
    music, clicks and bursts. eSpeak's output depends on what it said before in the same
    process, so this is made in a fresh process and kept (load_bed)."""
    rng = np.random.default_rng(BED_SEED)
    rate, length = CROWD_RATE, BED_SECONDS * CROWD_RATE
    crowd = np.zeros(length)
    for n, (voice, speed, pitch) in enumerate(CROWD_VOICES):
        # Each talker reads the texts in its own order, so no two say the same thing at once.
        order = np.roll(np.arange(len(CROWD_TEXTS)), -n)
        talk = []
        while sum(map(len, talk)) < length:
            for i in order:
                pcm, _ = speak_pcm(CROWD_TEXTS[i], voice, speed, pitch)
                talk.append(np.frombuffer(pcm, dtype=np.int16).astype(np.float64))
                talk.append(np.zeros(int(rng.uniform(0.2, 0.8) * rate)))
        stream = np.roll(np.concatenate(talk)[:length], int(rng.integers(length)))
        crowd += stream / (np.std(stream) or 1.0) * 10 ** (rng.uniform(-4, 4) / 20)
    bed = crowd / np.std(crowd)
    bed += (
        0.5 * _music(rng, rate, length) + 0.3 * _clicks(rng, rate, length) + 0.6 * _bursts(rng, rate, length)
    )
    return (bed / np.std(bed)).astype(np.float32)


def _music(rng: np.random.Generator, rate: int, length: int) -> np.ndarray:
    """A game's background tune: notes of a pentatonic scale, each with a few harmonics."""
    out = np.zeros(length)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    at = 0
    while at < length:
        n = int(rng.uniform(0.2, 0.5) * rate)
        t = np.arange(min(n, length - at)) / rate
        f = rng.choice(scale)
        note = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3))
        note *= np.minimum(1.0, t / 0.01) * np.exp(-3 * t)  # a plucked note
        out[at : at + len(t)] += note
        at += n
    return out / (np.std(out) or 1.0)


def _clicks(rng: np.random.Generator, rate: int, length: int) -> np.ndarray:
    """Keyboard and mouse: a few milliseconds of sharp noise, several a second."""
    out = np.zeros(length)
    for at in rng.integers(0, length, size=BED_SECONDS * 4):
        n = int(rng.uniform(0.002, 0.006) * rate)
        click = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 4))
        out[at : at + n] += click[: length - at]
    return out / (np.std(out) or 1.0)


def _bursts(rng: np.random.Generator, rate: int, length: int) -> np.ndarray:
    """Shots and explosions: a loud dull burst every few seconds, dying away."""
    out = np.zeros(length)
    at = int(rng.uniform(0.5, 3) * rate)
    while at < length:
        n = int(rng.uniform(0.1, 0.6) * rate)
        rumble = np.cumsum(rng.standard_normal(n))
        rumble -= np.convolve(rumble, np.ones(32) / 32, mode="same")  # no drift, still low-pitched
        burst = rumble * np.exp(-np.arange(n) / (n / 5))
        out[at : at + n] += burst[: length - at]
        at += n + int(rng.uniform(2, 6) * rate)
    return out / (np.std(out) or 1.0)


def load_bed(cache: Path, rate: int) -> np.ndarray:
    """The noise bed made by make_bed, at `rate`."""
    bed = np.load(cache / f"bed-{bed_key()}.npy").astype(np.float64)
    if rate == CROWD_RATE:
        return bed
    scaled = audio.resample(_int16(bed * 3000), CROWD_RATE, rate)
    return scaled.astype(np.float64) / 3000


def make_bed(cache: Path) -> None:
    """Make the noise bed unless it is there; run in a fresh process (see noise_bed)."""
    path = cache / f"bed-{bed_key()}.npy"
    if path.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, noise_bed())
    partial.replace(path)
