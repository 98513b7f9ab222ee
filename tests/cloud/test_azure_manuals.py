"""Manuals on Azure AI Search: the real async SDK against the fake search service on 127.0.0.1."""

from __future__ import annotations

import logging
import re
import shutil
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import paths
from bot import sentences as say
from bot.app import running_app
from bot.config import SearchSettings, Settings
from bot.health import check_all
from bot.tools import azure_manuals
from bot.tools.azure_manuals import (
    AzureSearchManuals,
    SearchServiceError,
    describe,
    document_key,
    index_manuals,
)
from bot.tools.base import ToolCall, ToolContext, ToolError
from bot.tools.embedded import FtsManuals
from bot.tools.manual_chunks import chunk_manuals
from tests.conftest import NOVA, make_settings
from tests.fakes.search_server import SEARCH_SCOPE, FakeSearch, running_fake_search
from tests.fakes.strict import checked
from tests.fakes.token_server import CLIENT_ID, CLIENT_SECRET, TENANT, FakeEntra, running_fake_entra

MANUALS = paths.MANUALS
SECTIONS = len(chunk_manuals(MANUALS))

QUESTIONS = [
    "how do I pair my controller",
    "I want a refund",
    "how do I turn on two-factor authentication",
    "someone is cheating",
    "the game keeps crashing",
    "I forgot my password",
    "my controller stick is drifting",
    "I bought gems but never got them",
    "what are the minimum PC requirements",
    "how do I limit my kid's play time",
    "when does the season end",
    "I lost my phone with the authenticator",
    "my account is locked",
    "can I get my money back",
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSearch]:
    async with running_fake_search() as server:
        yield server


# A request's timeout long enough for any request the fake answers, on a busy machine too. A test
# of a hang, or of a Retry-After longer than a request's timeout, names SHORT_TIMEOUT.
TIMEOUT = 10.0
SHORT_TIMEOUT = 1.0


def search_settings(fake: FakeSearch, **overrides: object) -> SearchSettings:
    values: dict[str, object] = {"endpoint": fake.endpoint, "timeout_seconds": TIMEOUT, "retries": 1}
    return SearchSettings(**(values | overrides))  # type: ignore[arg-type]


def app_settings(settings: Settings, fake: FakeSearch, **env: str) -> Settings:
    """The seeded test settings, switched to Azure manuals by configuration alone."""
    defaults = {
        "VOXDESK_TOOLS_MANUALS": "azure",
        "VOXDESK_SEARCH_ENDPOINT": fake.endpoint,
        "VOXDESK_SEARCH_TIMEOUT_SECONDS": f"{TIMEOUT:g}",
        "VOXDESK_SEARCH_RETRIES": "1",
        "AZURE_SEARCH_API_KEY": fake.api_key,
    }
    return make_settings(settings.storage_dir, **{**defaults, **env})


async def ask(app, query: str):  # type: ignore[no-untyped-def]
    call = ToolCall(id="c1", name="search_manuals", arguments={"query": query})
    return await app.toolbox.run(ToolContext(user_id=NOVA), call)


# ---- index-manuals ------------------------------------------------------------------------


async def test_index_manuals_creates_the_index_and_uploads_every_section(fake: FakeSearch) -> None:
    summary = await index_manuals(search_settings(fake), fake.api_key, MANUALS)

    assert summary.startswith("index 'manuals' created:")
    assert f"{SECTIONS} passages from 10 manuals" in summary and f"({SECTIONS} added" in summary
    index = fake.indexes["manuals"]
    fields = {f["name"]: f for f in index.definition["fields"]}
    assert fields["key"]["key"] and fields["key"]["type"] == "Edm.String"
    assert fields["title"]["analyzer"] == fields["text"]["analyzer"] == "en.lucene"
    assert index.definition["defaultScoringProfile"] == "title-first"
    assert "semantic" not in index.definition or not index.definition["semantic"]
    assert set(index.documents) == {c.key for c in chunk_manuals(MANUALS)}
    pairing = index.documents["controller-pairing-1"]
    assert pairing["source"] == "controller-pairing.md" and "Bluetooth" in pairing["title"]
    creates = [r for r in fake.received if r.operation == "create_index"]
    assert len(creates) == 1 and all(r.query["api-version"] == "2026-04-01" for r in fake.received)


async def test_a_second_run_updates_in_place(fake: FakeSearch, tmp_path: Path) -> None:
    manuals = tmp_path / "manuals"
    shutil.copytree(MANUALS, manuals)
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, manuals)
    again = await index_manuals(settings, fake.api_key, manuals)
    assert "already there" in again and f"(0 added, {SECTIONS} updated, 0 removed)" in again
    assert len(fake.documents("manuals")) == SECTIONS

    refunds = manuals / "refunds.md"
    refunds.write_text(refunds.read_text().replace("14 days", "30 days"))
    cheaters = manuals / "reporting-cheaters.md"
    text = cheaters.read_text()
    cheaters.write_text(text[: text.index("## Please do not name and shame")])
    summary = await index_manuals(settings, fake.api_key, manuals)

    documents = fake.documents("manuals")
    assert len(documents) == SECTIONS - 1 and "reporting-cheaters-5" not in documents
    assert "30 days" in documents["refunds-1"]["text"] and "14 days" not in documents["refunds-1"]["text"]
    assert f"(0 added, {SECTIONS - 1} updated, 1 removed)" in summary
    assert len([r for r in fake.received if r.operation == "create_index"]) == 1


async def test_document_keys_are_valid_azure_keys(fake: FakeSearch, tmp_path: Path) -> None:
    (tmp_path / "Café FAQ (v2).md").write_text("# FAQ\n\n## Prices\n\nPrices are in euros.\n")
    (tmp_path / "_draft.md").write_text("# Draft\n\n## Soon\n\nComing soon.\n")
    summary = await index_manuals(search_settings(fake), fake.api_key, tmp_path)

    keys = set(fake.documents("manuals"))
    assert "2 passages" in summary and len(keys) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9\-=][A-Za-z0-9_\-=]*", k) for k in keys)
    assert document_key("Café FAQ (v2)-1") in keys and document_key("_draft-1") in keys
    assert document_key("refunds-2") == "refunds-2"  # ordinary keys stay readable
    await index_manuals(search_settings(fake), fake.api_key, tmp_path)
    assert set(fake.documents("manuals")) == keys  # stable: a re-run finds the same keys


def test_a_chunk_key_ending_in_a_line_break_is_encoded() -> None:
    # `$` matches before a final line break: "refunds-2\n" passed as a key of its own, which the
    # service refuses (its keys hold letters, digits, _ - = only).
    key = document_key("refunds-2\n")
    assert re.fullmatch(r"[A-Za-z0-9\-=][A-Za-z0-9_\-=]*", key)
    assert key != document_key("refunds-2")


async def test_manuals_over_the_services_request_limit_are_uploaded_in_smaller_batches(
    fake: FakeSearch, tmp_path: Path
) -> None:
    # 18 sections of about a megabyte: well under 500 documents, yet 17 MB, past one request's 16.
    words = " ".join(f"word{i:060d}" for i in range(15_000))  # long words: few for the fake to rank
    for n in range(3):
        sections = "".join(f"## Part {k}\n\n{words}.\n\n" for k in range(6))
        (tmp_path / f"big-{n}.md").write_text(f"# Big {n}\n\n{sections}")
    summary = await index_manuals(search_settings(fake), fake.api_key, tmp_path)

    assert "18 passages from 3 manuals" in summary and "(18 added" in summary
    assert len(fake.documents("manuals")) == 18
    indexed = [r for r in fake.received if r.operation == "index"]
    assert len(indexed) >= 2 and sum(len(r.body["value"]) for r in indexed) == 18


async def test_a_section_over_the_services_request_limit_is_named(fake: FakeSearch, tmp_path: Path) -> None:
    # One section past 16 MB (a changelog under one heading, images inlined as data: URIs) went
    # alone and was refused with a 413: index-manuals said "answered 413: Operation returned an
    # invalid status 'Request Entity Too Large'", naming no manual and nothing to do.
    words = " ".join(f"word{i:060d}" for i in range(270_000))  # 17.6 MB
    (tmp_path / "changelog.md").write_text(f"# Changelog\n\n## Fixes\n\nSmall.\n\n## Everything\n\n{words}\n")
    with pytest.raises(SearchServiceError) as raised:
        await index_manuals(search_settings(fake, timeout_seconds=10.0), fake.api_key, tmp_path)
    assert re.fullmatch(
        r"section 'Changelog: Everything' of changelog\.md is 1[78] MB, over the 16 MB Azure AI Search "
        r"takes in one request: split it under more ## headings",
        str(raised.value),
    ), str(raised.value)
    assert not [r for r in fake.received if r.operation == "index"]  # nothing half uploaded


async def test_a_section_over_the_request_limit_leaves_no_entra_credential_open(
    fake: FakeSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused before anything is sent, as with a key: no Entra credential is left unclosed on that
    # way out (DefaultAzureCredential holds a transport of each credential it chains).
    made, closed = [], []
    make, close = azure_manuals._EntraToken.__init__, azure_manuals._EntraToken.close

    def making(token: object) -> None:
        make(token)
        made.append(token)

    async def closing(token: object) -> None:
        closed.append(token)
        await close(token)

    monkeypatch.setattr(azure_manuals._EntraToken, "__init__", making)
    monkeypatch.setattr(azure_manuals._EntraToken, "close", closing)
    words = " ".join(f"word{i:060d}" for i in range(270_000))  # 17.6 MB
    (tmp_path / "changelog.md").write_text(f"# Changelog\n\n## Everything\n\n{words}\n")
    with pytest.raises(SearchServiceError, match="over the 16 MB"):
        await index_manuals(search_settings(fake, auth="entra"), "", tmp_path)
    assert closed == made, (made, closed)


async def test_over_a_thousand_sections_removed_are_deleted_in_batches(
    fake: FakeSearch, tmp_path: Path
) -> None:
    # The stale keys went in one delete request, past the service's 1000 actions: a 400, and every
    # rerun the same, so the removed sections stayed in the index and kept answering players.
    many, few = tmp_path / "many", tmp_path / "few"
    many.mkdir()
    few.mkdir()
    topics = "".join(f"## Topic {i}\n\nHow to fix launcher problem {i}.\n\n" for i in range(1100))
    (many / "big.md").write_text(f"# Big\n\n{topics}")
    (few / "small.md").write_text("# Small\n\n## Refunds\n\nAsk support for a refund within 14 days.\n")
    settings = search_settings(fake, timeout_seconds=5.0)
    await index_manuals(settings, fake.api_key, many)
    summary = await index_manuals(settings, fake.api_key, few)
    assert "(1 added, 0 updated, 1100 removed)" in summary
    assert len(fake.documents("manuals")) == 1
    # The service answers 1000 results a response: the keys past them came on a page of their own.
    assert [r.body.get("skip", 0) for r in fake.searches] == [0, 1000, 0, 1000]  # a scan a run


async def test_index_manuals_waits_out_a_throttled_service(fake: FakeSearch) -> None:
    # No player waits on an upload: a Retry-After longer than a request's timeout is waited out.
    settings = search_settings(fake, timeout_seconds=SHORT_TIMEOUT)
    await index_manuals(settings, fake.api_key, MANUALS)
    fake.fail_with(429, retry_after=1.5, times=1)
    summary = await index_manuals(settings, fake.api_key, MANUALS)
    assert "already there" in summary and len(fake.documents("manuals")) == SECTIONS


async def test_index_manuals_says_it_waits_out_a_long_retry_after(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    # A throttled upload asking for an hour was slept on without a word: the operator (or a
    # deploy job) saw index-manuals hang, with nothing to tell a wait from a hang.
    settings = search_settings(fake, timeout_seconds=SHORT_TIMEOUT)
    await index_manuals(settings, fake.api_key, MANUALS)
    fake.fail_with(429, retry_after=1.5, times=1)  # past the 1 s timeout of a request
    with caplog.at_level(logging.WARNING, logger="bot.tools.azure_manuals"):
        await index_manuals(settings, fake.api_key, MANUALS)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "asks to wait 1.5 s" in said[0] and "429" in said[0], said
    fake.fail_with(429, retry_after=0.1, times=1)  # a request's own wait: no news
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.tools.azure_manuals"):
        await index_manuals(settings, fake.api_key, MANUALS)
    assert not caplog.records, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("status", [503, 409, 422])
async def test_passages_the_service_refuses_for_now_are_sent_again(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # Under heavy load the service answers an upload with a 207 whose items say 503 "try again
    # later" (409 and 422 likewise): index-manuals failed, saying they were refused, and a deploy
    # job running it failed with it.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    settings = search_settings(fake)
    fake.refuse_documents(status, times=2)
    with caplog.at_level(logging.WARNING, logger="bot.tools.azure_manuals"):
        summary = await index_manuals(settings, fake.api_key, MANUALS)
    assert f"({SECTIONS} added, 0 updated, 0 removed)" in summary, summary
    assert len(fake.documents("manuals")) == SECTIONS
    indexed = [r for r in fake.received if r.operation == "index"]
    assert len(indexed) == 3  # refused twice, then taken
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all(f"{SECTIONS} passages ({status})" in m for m in said), said


async def test_removed_sections_the_service_refuses_to_delete_are_not_counted_removed(
    fake: FakeSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delete's items refused were not looked at: "1 removed", and the removed section went on
    # answering players.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    (tmp_path / "a.md").write_text("# A\n\n## One\n\nFirst part.\n\n## Two\n\nSecond part.\n")
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, tmp_path)
    (tmp_path / "a.md").write_text("# A\n\n## One\n\nFirst part.\n")
    fake.refuse_documents(503, times=1, after=1)  # the upload taken, the delete refused once
    summary = await index_manuals(settings, fake.api_key, tmp_path)
    assert "(0 added, 1 updated, 1 removed)" in summary and set(fake.documents("manuals")) == {"a-1"}
    (tmp_path / "b.md").write_text("# B\n\n## Three\n\nThird part.\n")
    await index_manuals(settings, fake.api_key, tmp_path)
    (tmp_path / "b.md").unlink()
    fake.refuse_documents(503, times=100, after=1)
    said = r"^1 of 1 removed passages could not be deleted; b-1 of b\.md: "
    with pytest.raises(SearchServiceError, match=said):
        await index_manuals(settings, fake.api_key, tmp_path)
    assert "b-1" in fake.documents("manuals")


async def test_passages_refused_for_good_are_said_after_a_few_tries(
    fake: FakeSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    fake.refuse_documents(503, times=100)
    with pytest.raises(SearchServiceError, match=rf"^{SECTIONS} of {SECTIONS} passages were refused, of "):
        await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    indexed = [r for r in fake.received if r.operation == "index"]
    assert len(indexed) == azure_manuals.DOCUMENT_TRIES  # not hammered without end


async def test_passages_refused_in_a_207_name_their_manual_and_why_and_fail_the_run(
    fake: FakeSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some items of a 207 refused for good were said by their document key alone: an encoded key
    # ("b64-cGF0Y2g…") names no manual, and the operator could not tell which one to look at.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    (tmp_path / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 14 days.\n")
    (tmp_path / "patch 1.2.md").write_text("# Patch 1.2\n\n## Fixes\n\nCrash fixed.\n\n## Maps\n\nNew map.\n")
    refused = {document_key("patch 1.2-1"), document_key("patch 1.2-2")}
    fake.refuse_documents(503, times=100, keys=refused)
    with pytest.raises(SearchServiceError) as raised:
        await index_manuals(search_settings(fake), fake.api_key, tmp_path)
    said = str(raised.value)
    assert said.startswith("2 of 3 passages were refused, of patch 1.2.md (2); the first, "), said
    assert "section 'Patch 1.2: Fixes' of patch 1.2.md" in said and "heavy load" in said and "(503)" in said
    assert "b64-" not in said
    assert set(fake.documents("manuals")) == {"refunds-1"}  # the others taken


async def test_a_removed_manual_leaves_the_index_though_another_passage_is_refused(
    fake: FakeSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A passage refused for good stopped the run before the removed manuals' passages were
    # deleted: every run the same, and the old refund policy kept answering players.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    (tmp_path / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 14 days.\n")
    (tmp_path / "old-refunds.md").write_text("# Old refunds\n\n## Window\n\nRefunds within 90 days.\n")
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, tmp_path)
    (tmp_path / "old-refunds.md").unlink()
    (tmp_path / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 30 days.\n")
    fake.refuse_documents(503, times=100, keys={"refunds-1"})
    with pytest.raises(SearchServiceError, match=r"^1 of 1 passages were refused"):
        await index_manuals(settings, fake.api_key, tmp_path)
    assert set(fake.documents("manuals")) == {"refunds-1"}


def _indexed_under_the_old_key(fake: FakeSearch, old: str, new: str) -> None:
    """As an index made before a name's own backslash was doubled in its passages' keys."""
    documents = fake.documents("manuals")
    documents[old] = {**documents.pop(new), "key": old}


async def test_a_backslash_names_passage_moves_to_its_new_key(fake: FakeSearch, tmp_path: Path) -> None:
    (tmp_path / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 14 days.\n")
    (tmp_path / "faq\\x41.md").write_text("# FAQ\n\n## Login\n\nReset your password.\n")
    old, new = document_key("faq\\x41-1"), document_key("faq\\\\x41-1")
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, tmp_path)
    _indexed_under_the_old_key(fake, old, new)
    await index_manuals(settings, fake.api_key, tmp_path)
    assert set(fake.documents("manuals")) == {"refunds-1", new}


async def test_a_passage_refused_under_its_new_key_keeps_its_old_one(
    fake: FakeSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Removed keys were deleted whatever became of the uploads: a manual whose passages changed
    # key (a name with a backslash) and were refused under the new one left the index altogether,
    # though its file is still there, until a later run took them.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.0)
    (tmp_path / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 14 days.\n")
    (tmp_path / "faq\\x41.md").write_text("# FAQ\n\n## Login\n\nReset your password.\n")
    old, new = document_key("faq\\x41-1"), document_key("faq\\\\x41-1")
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, tmp_path)
    _indexed_under_the_old_key(fake, old, new)
    fake.refuse_documents(503, times=100, keys={new})
    with pytest.raises(SearchServiceError, match=r"^1 of 2 passages were refused, of faq"):
        await index_manuals(settings, fake.api_key, tmp_path)
    assert set(fake.documents("manuals")) == {"refunds-1", old}


async def test_passages_refused_for_now_are_sent_again_after_longer_and_longer_waits(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A service under heavy load that refuses items again needs more time, not the same again.
    monkeypatch.setattr(azure_manuals, "DOCUMENT_RETRY_SECONDS", 0.001)
    fake.refuse_documents(503, times=3)
    with caplog.at_level(logging.WARNING, logger="bot.tools.azure_manuals"):
        await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    waits = [re.search(r"sending them again in (\S+) s", r.getMessage()) for r in caplog.records]
    assert [float(m.group(1)) for m in waits if m] == [0.001, 0.002, 0.004]


async def test_a_query_key_cannot_index(fake: FakeSearch) -> None:
    with pytest.raises(SearchServiceError, match=r"AZURE_SEARCH_API_KEY was refused \(403\)") as raised:
        await index_manuals(search_settings(fake), fake.query_key, MANUALS)
    assert fake.query_key not in str(raised.value)


# ---- search through the tool --------------------------------------------------------------


async def test_answers_match_the_embedded_index(
    settings: Settings, fake: FakeSearch, scripted_app_engine
) -> None:
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    fake.received.clear()
    mismatches = []
    async with (
        running_app(settings, scripted_app_engine) as embedded,
        running_app(app_settings(settings, fake), scripted_app_engine) as cloud,
    ):
        assert type(cloud.manuals).__name__ == "AzureSearchManuals"
        for question in QUESTIONS:
            local, remote = await ask(embedded, question), await ask(cloud, question)
            assert remote.ok, remote.result
            first_local, first_remote = local.result["passages"][0], remote.result["passages"][0]
            first_remote = {k: v for k, v in first_remote.items() if k != "excerpt"}  # Azure's extra
            if first_local != first_remote:
                mismatches.append((question, first_local["title"], first_remote["title"]))
            # the same passages left out as off-topic ("limit my kid's play time" answers with one)
            assert len(remote.result["passages"]) == len(local.result["passages"]), question
    assert not mismatches
    sent = [r.body for r in fake.searches]
    assert sent[0]["search"] == "pair controller" and sent[0]["searchMode"] == "any"
    assert all(b["queryType"] == "simple" and "filter" not in b for b in sent)


async def test_the_full_section_text_comes_back_with_highlights(fake: FakeSearch) -> None:
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        passages = await manuals.search("my controller stick is drifting", 2)
    finally:
        await manuals.aclose()
    chunk = next(c for c in chunk_manuals(MANUALS) if c.key == "controller-pairing-4")
    assert passages[0].text == chunk.text and passages[0].source == "controller-pairing.md"
    assert "drift" in passages[0].excerpt.lower() and "<em>" not in passages[0].excerpt
    assert passages[0].score > passages[1].score > 0
    assert fake.searches[-1].body["highlight"] == "text,title"


async def test_semantic_ranking_with_captions(fake: FakeSearch) -> None:
    settings = search_settings(fake, semantic_configuration="manuals-semantic")
    summary = await index_manuals(settings, fake.api_key, MANUALS)
    assert "created" in summary
    semantic = fake.indexes["manuals"].definition["semantic"]
    assert semantic["defaultConfiguration"] == "manuals-semantic"
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        passages = await manuals.search("How do I turn ON two-factor authentication?", 3)
        health = await manuals.check()
    finally:
        await manuals.aclose()
    body = fake.searches[-2].body
    assert body["queryType"] == "semantic" and body["semanticConfiguration"] == "manuals-semantic"
    assert body["captions"] == "extractive"
    assert body["semanticQuery"] == "how do i turn on two factor authentication"
    assert passages[0].title.startswith("Two-factor authentication")
    caption = " ".join(passages[0].excerpt.replace("…", " ").split())
    assert caption and "<em>" not in passages[0].excerpt and caption in passages[0].text
    assert 0 < passages[0].score <= 4.0  # the reranker's scale
    assert "semantic ranking 'manuals-semantic'" in health


async def test_a_failing_semantic_ranker_still_answers_from_keyword_ranking(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = search_settings(fake, semantic_configuration="manuals-semantic")
    await index_manuals(settings, fake.api_key, MANUALS)
    fake.fail_semantic("capacityOverloaded")
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        with caplog.at_level(logging.WARNING):
            passages = await manuals.search("How do I turn ON two-factor authentication?", 3)
        fake.recover()
        reranked = await manuals.search("How do I turn ON two-factor authentication?", 3)
    finally:
        await manuals.aclose()
    sent = [r.body for r in fake.searches if r.body.get("queryType") == "semantic"]
    assert sent and all(b["semanticErrorHandling"] == "partial" for b in sent)
    assert passages[0].title.startswith("Two-factor authentication")
    assert [p.title for p in passages] == [p.title for p in reranked]  # the fake reranks as BM25 does
    assert passages[0].excerpt == "" and reranked[0].excerpt  # no captions without the reranker
    assert "semantic ranking failed, answering from keyword ranking" in caplog.text


async def test_a_semantic_ranker_failing_for_many_questions_is_one_warning_and_its_end_one_line(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    # An overloaded reranker (or a spent free quota) fails every question for hours.
    settings = search_settings(fake, semantic_configuration="manuals-semantic")
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"):
            fake.fail_semantic("capacityOverloaded")
            for _ in range(3):
                assert await manuals.search("I want a refund", 3)
            fake.recover()
            for _ in range(2):
                assert await manuals.search("I want a refund", 3)
    finally:
        await manuals.aclose()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bot.tools.azure_manuals"]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO, logging.INFO, logging.INFO]
    assert all("answering from keyword ranking" in m for _, m in said[:3])
    assert said[3][1] == "manuals search: semantic ranking works again"


async def test_a_spent_semantic_quota_answers_from_keyword_ranking(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The free semantic plan's monthly requests spent: the service answers every semantic query
    # with a 402, which no semanticErrorHandling turns into keyword results, and every question
    # was "unavailable" until the month ended, while keyword search worked all along.
    settings = search_settings(fake, semantic_configuration="manuals-semantic")
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        fake.spend_semantic_quota()
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"):
            first = await manuals.search("How do I turn ON two-factor authentication?", 3)
            before = len(fake.searches)
            second = await manuals.search("I want a refund", 3)
            asked = [r.body["queryType"] for r in fake.searches[before:]]
            fake.recover()
            monkeypatch.setattr(azure_manuals, "SEMANTIC_REFUSED_SECONDS", 0.0)
            reranked = await manuals.search("I want a refund", 3)
    finally:
        await manuals.aclose()
    assert first[0].title.startswith("Two-factor authentication") and second[0].source == "refunds.md"
    assert asked == ["simple"]  # not a 402 a question for the rest of the month
    assert reranked[0].excerpt and fake.searches[-1].body["queryType"] == "semantic"
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said[0][0] == logging.WARNING and "402" in said[0][1], said
    assert "Free Query Semantic Usage's exceeded" in said[0][1] and "keyword ranking" in said[0][1]
    assert said[-1] == (logging.INFO, "manuals search: semantic ranking works again")
    assert not [m for level, m in said if level >= logging.WARNING and "unavailable" in m]


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no configuration", "Unknown semantic configuration 'manuals-semantic'."),
        ("ranker disabled", "Semantic search is not enabled for this service."),
    ],
)
async def test_semantic_ranking_the_service_cannot_give_answers_from_keyword_ranking(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture, case: str, said: str
) -> None:
    # search.semantic_configuration names one the index lacks (set before index-manuals added
    # it, or deleted since), or the service's semantic ranker plan is Disabled: the service
    # answers every semantic query with a 400, and every player's question was "unavailable".
    settings = search_settings(fake, semantic_configuration="manuals-semantic")
    if case == "no configuration":
        await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    else:
        await index_manuals(settings, fake.api_key, MANUALS)
        fake.semantic_enabled = False
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"):
            first = await manuals.search("How do I turn ON two-factor authentication?", 3)
            before = len(fake.searches)
            second = await manuals.search("I want a refund", 3)
            asked = [r.body["queryType"] for r in fake.searches[before:]]
    finally:
        await manuals.aclose()
    assert first[0].title.startswith("Two-factor authentication") and second[0].source == "refunds.md"
    assert asked == ["simple"]  # not a refused request a question
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, logged
    assert logged[0][0] == logging.WARNING
    assert f"(400), answering from keyword ranking: {said}" in logged[0][1]


async def test_check_warns_of_a_semantic_configuration_the_index_lacks(
    settings: Settings, fake: FakeSearch
) -> None:
    # Questions are answered from keyword ranking (above): a warning that says how to mend it,
    # not a failure as if none were.
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    env = {"VOXDESK_SEARCH_SEMANTIC_CONFIGURATION": "nope"}
    line = {r.service: r for r in await check_all(app_settings(settings, fake, **env))}["manuals"]
    assert line.ok and line.warn, line.line()
    assert "semantic ranking is refused (400: Unknown semantic configuration 'nope'.)" in line.detail
    assert "run `python -m bot index-manuals` to add it" in line.detail


async def test_a_402_to_a_keyword_query_is_no_spent_semantic_quota(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    # Without semantic ranking there is no reranker to do without: a 402 is the service's own
    # refusal, not to be asked again in keyword mode nor blamed on semantic ranking.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        fake.fail_with(402)
        before = len(fake.searches)
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"), pytest.raises(ToolError):
            await manuals.search("I want a refund", 3)
        asked = len(fake.searches) - before
    finally:
        await manuals.aclose()
    assert asked == 1
    assert not [r for r in caplog.records if "semantic" in r.getMessage()], caplog.text


async def test_check_warns_of_a_spent_semantic_quota(settings: Settings, fake: FakeSearch) -> None:
    # `check` ran a semantic query and failed on its 402, as if no question were answered.
    await index_manuals(search_settings(fake, semantic_configuration="sem"), fake.api_key, MANUALS)
    fake.spend_semantic_quota()
    env = {"VOXDESK_SEARCH_SEMANTIC_CONFIGURATION": "sem"}
    line = {r.service: r for r in await check_all(app_settings(settings, fake, **env))}["manuals"]
    assert line.ok and line.warn, line.line()
    assert "semantic ranking is refused (402: Free Query Semantic Usage's exceeded" in line.detail
    assert "answered from keyword ranking" in line.detail


async def test_a_semantic_configuration_is_added_to_an_existing_index(fake: FakeSearch) -> None:
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    summary = await index_manuals(search_settings(fake, semantic_configuration="sem"), fake.api_key, MANUALS)
    assert "given semantic configuration 'sem'" in summary
    assert fake.indexes["manuals"].definition["semantic"]["configurations"][0]["name"] == "sem"
    assert len(fake.documents("manuals")) == SECTIONS


def _field(index: dict[str, object], name: str) -> dict[str, object]:
    return next(f for f in index["fields"] if f["name"] == name)  # type: ignore[attr-defined,index]


@pytest.mark.parametrize(
    ("case", "difference"),
    [
        ("analyzer", "'title' is analyzed with standard.lucene, not en.lucene"),
        ("not searchable", "'text' is not searchable"),
        ("field missing", "no field 'source'"),
        ("not retrievable", "'source' is not retrievable"),
        ("query analyzer", "'text' is analyzed with en.lucene and keyword to search, not en.lucene"),
        ("ranking", "scoring profile 'title-first' weighs text 1, title 1, not text 1, title 4"),
        ("no ranking", "its default scoring profile is none, not 'title-first'"),
    ],
)
async def test_an_index_that_differs_from_the_bots_is_refused_with_what_differs(
    fake: FakeSearch, case: str, difference: str
) -> None:
    # Made by another tool, or by hand, under the name voxdesk uses: "already there", and every
    # question was then answered by other words than the embedded index matches, or by none.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    definition = fake.indexes["manuals"].definition
    if case == "analyzer":
        _field(definition, "title")["analyzer"] = "standard.lucene"
    elif case == "not searchable":
        text = _field(definition, "text")
        text["searchable"] = False
        del text["analyzer"]
    elif case == "field missing":
        definition["fields"] = [f for f in definition["fields"] if f["name"] != "source"]
    elif case == "not retrievable":
        _field(definition, "source")["retrievable"] = False
    elif case == "query analyzer":
        _field(definition, "text")["searchAnalyzer"] = "keyword"
    elif case == "ranking":
        definition["scoringProfiles"][0]["text"]["weights"]["title"] = 1.0
    elif case == "no ranking":
        del definition["defaultScoringProfile"]
    fake.received.clear()
    with pytest.raises(SearchServiceError) as raised:
        await index_manuals(settings, fake.api_key, MANUALS)
    assert re.fullmatch(
        r"index 'manuals' at http://127\.0\.0\.1:\d+ is not the one voxdesk makes "
        rf"\({re.escape(difference)}\): delete it and run `python -m bot index-manuals` again, "
        r"or set search\.index to another name",
        str(raised.value),
    ), str(raised.value)
    assert [r.operation for r in fake.received] == ["get_index"]  # nothing uploaded, nothing changed


# Each shares one everyday word with some manual ("change", "than", "last"), which alone ranked
# a passage about something else first.
OFF_TOPIC = [
    "how do I change my Minecraft skin",
    "how do I beat the final boss in Elden Ring",
    "final mass in l than reading",
    "who won the football last night",
    "what's the weather like tomorrow",
    "¿por qué no funciona el USB de mi impresora?",
    "comment brancher nos écouteurs USB à la télé",
    "how do I change my car",
    "how do I change the AI",
    "can I change my OS",
]
ON_TOPIC = {
    "how do i pear my controler": "controller-pairing.md",
    "um how can i get a refund": "refunds.md",
    "refunds": "refunds.md",
    "someone is cheating, how do I report them": "reporting-cheaters.md",
}


@pytest.mark.parametrize("semantic", ["", "sem"])
async def test_a_question_the_manuals_do_not_cover_finds_no_passage(
    settings: Settings, fake: FakeSearch, scripted_app_engine, semantic: str
) -> None:
    await index_manuals(search_settings(fake, semantic_configuration=semantic), fake.api_key, MANUALS)
    env = {"VOXDESK_SEARCH_SEMANTIC_CONFIGURATION": semantic} if semantic else {}
    async with (
        running_app(settings, scripted_app_engine) as embedded,
        running_app(app_settings(settings, fake, **env), scripted_app_engine) as cloud,
    ):
        found = {q: (await ask(cloud, q)).result["passages"] for q in OFF_TOPIC}
        firsts = {q: (await ask(cloud, q)).result["passages"][0]["source"] for q in ON_TOPIC}
        kid = [p["title"] for p in (await ask(cloud, "limit my kid's play time")).result["passages"]]
        local_kid = [p["title"] for p in (await ask(embedded, "limit my kid's play time")).result["passages"]]
    assert found == {q: [] for q in OFF_TOPIC}
    assert firsts == ON_TOPIC
    # Not only a first passage: one that shares only "time" is left out, as the embedded index does.
    assert kid == local_kid == ["Parental controls: Play time limits"]


INJECTIONS = [
    "title:x OR *) AND search.ismatch('a')",
    '"refund" OR "password" -controller +crash | \\"escaped\\" \\\\ back\\slash',
    "$filter=source eq 'refunds.md' or 1 eq 1 &$select=* /regex.*/ fuzzy~2 boost^10 [a TO z] {x}",
    "refund') or search.in(key, 'a,b') or ('",
    'Pokémon" OR Ñandú* -(Straße) +İstanbul | naïve\\ café~2 Łódź^2 "cafe\u0301" ¿qué?—«sí»',
]


def only_words(text: str) -> bool:
    """Words separated by single spaces, each of letters, digits and combining marks alone."""
    terms = text.split(" ")
    return all(t and all(unicodedata.category(c)[0] in "LNM" for c in t) for t in terms)


@pytest.mark.parametrize("semantic", ["", "sem"])
async def test_syntax_in_a_question_is_only_words(fake: FakeSearch, semantic: str) -> None:
    settings = search_settings(fake, semantic_configuration=semantic)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        for query in INJECTIONS:
            before = len(fake.searches)
            passages = await manuals.search(query, 3)
            body = fake.searches[before].body
            for lookup in fake.searches[before + 1 :]:  # whether a manual uses a word at all
                assert only_words(lookup.body["search"]) and " " not in lookup.body["search"], lookup.body
            assert only_words(body["search"]), body["search"]
            assert not {"filter", "orderby", "searchFields", "scoringProfile"} & set(body)
            assert body["select"] == "key,title,text,source" and body["searchMode"] == "any"
            assert body["queryType"] == ("semantic" if semantic else "simple")
            if semantic:
                assert only_words(body["semanticQuery"]), body["semanticQuery"]
            assert all(p.text for p in passages)
        # Accents and other scripts stay inside their words, composed; "İ" as Lucene lowercases it.
        # ("qué sí" are stopwords, as "what yes" are.)
        assert body["search"] == "pokémon ñandú straße İstanbul naïve café 2 łódź"
        sent = len(fake.searches)
        assert await manuals.search("*", 3) == [] and await manuals.search("how do I?", 3) == []
        assert len(fake.searches) == sent  # nothing worth searching: the service is not asked
    finally:
        await manuals.aclose()


FESTIVAL = """# Festival

## Pokémon trading
Bring your Pokémon cards to the trading tent.

## Carrera del ñandú
La carrera del ñandú empieza a mediodía en la puerta norte.

## Straßensperrungen
Die Straße zum Stadion ist am Samstag gesperrt.

## İstanbul sunucusu
İstanbul sunucusu bakımda, çarşamba günü açılır.
"""
# Each question's words as a player says them, with the section that answers it.
ACCENTED = {
    "Pokémon": "Festival: Pokémon trading",
    "¿Cuándo empieza la carrera del ñandú?": "Festival: Carrera del ñandú",
    "Ist die Straße am Samstag gesperrt?": "Festival: Straßensperrungen",
    "İstanbul sunucusu ne zaman açılır?": "Festival: İstanbul sunucusu",
}


async def test_words_with_accents_find_their_sections_on_both_backends(
    fake: FakeSearch, tmp_path: Path
) -> None:
    # "Pokémon" was cut into "pok" and "mon", which no index holds: the question found nothing.
    (tmp_path / "festival.md").write_text(FESTIVAL, encoding="utf-8")
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, tmp_path)
    local = await FtsManuals.open(tmp_path / "manuals.db")
    cloud = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        await local.rebuild(chunk_manuals(tmp_path))
        found, sent = {}, []
        for question in ACCENTED:
            before = len(fake.searches)
            answers = [await local.search(question, 1), await cloud.search(question, 1)]
            found[question] = [p[0].title if p else None for p in answers]
            sent.append(fake.searches[before].body["search"])
    finally:
        await local.aclose()
        await cloud.aclose()
    assert found == {q: [title, title] for q, title in ACCENTED.items()}
    assert sent == [
        "pokémon",
        "empieza carrera ñandú",  # without the Spanish stopwords
        "ist die straße am samstag gesperrt",
        "İstanbul sunucusu zaman açılır",  # "ne" is French's "ne" too
    ]


async def test_syntax_through_the_tool_returns_normally(
    settings: Settings, fake: FakeSearch, scripted_app_engine
) -> None:
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    fake.received.clear()
    async with running_app(app_settings(settings, fake), scripted_app_engine) as app:
        result = await ask(app, INJECTIONS[0])
        refund = await ask(app, INJECTIONS[1])
    assert result.ok and "error" not in result.result
    assert fake.searches[0].body["search"] == "title x search ismatch"
    assert refund.ok and refund.result["passages"]


# ---- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["500", "hang", "stopped", "403", "no index", "field missing"])
async def test_search_down_is_a_sentence_the_player_hears(
    settings: Settings, fake: FakeSearch, scripted_app_engine, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    env = {"VOXDESK_SEARCH_INDEX": "missing"} if failure == "no index" else {}
    if failure == "hang":  # waited out
        env["VOXDESK_SEARCH_TIMEOUT_SECONDS"] = f"{SHORT_TIMEOUT:g}"
    async with running_app(app_settings(settings, fake, **env), scripted_app_engine) as app:
        if failure == "500":
            fake.fail_with(500)
        elif failure == "hang":
            fake.fail_with(hang=30)
        elif failure == "403":
            fake.fail_with(403)
        elif failure == "stopped":
            await fake.stop()
        elif failure == "field missing":  # a 400 no retry or wait cures: the operator's to fix
            fields = fake.indexes["manuals"].definition["fields"]
            fake.indexes["manuals"].definition["fields"] = [f for f in fields if f["name"] != "text"]
            fake.expect_violations()
        before = len(fake.searches)
        with caplog.at_level(logging.WARNING):
            result = await ask(app, "how do I pair my controller")
    assert not result.ok and result.result == {"error": say.MANUALS_UNAVAILABLE}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "bot.tools.azure_manuals")
    expected = {
        "500": "answered 500",
        "hang": "Timeout",
        "stopped": "cannot reach",
        "403": "credentials problem: AZURE_SEARCH_API_KEY was refused (403)",
        "no index": "index 'missing' not found",
        "field missing": "configuration problem: http://127.0.0.1",
    }[failure]
    assert expected in logged
    assert fake.api_key not in caplog.text
    # A 500 is tried again once (retries = 1); a search POST is not after a read timeout, so a
    # hanging service costs one 1 s timeout, and the SDK's "Timeout" above (not the call's budget)
    # shows that timeout is what ended it.
    sent = {"500": 2, "hang": 1, "403": 1, "no index": 1, "stopped": 0, "field missing": 1}[failure]
    assert len(fake.searches) - before == sent


@pytest.mark.parametrize("status", [429, 503])
async def test_a_service_asking_for_a_long_wait_is_unavailable_at_once(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # Throttled with a minute's Retry-After: waited out, the player would hear nothing until the
    # call's budget ran out, and the log would blame a service that did answer.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        fake.fail_with(status, retry_after=60)
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"):
            with pytest.raises(ToolError, match="unavailable right now"):
                await manuals.search("I want a refund", 3)
        fake.fail_with(status, retry_after=0.1, times=1)  # a short wait is still waited out
        assert (await manuals.search("I want a refund", 3))[0].source == "refunds.md"
    finally:
        await manuals.aclose()
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"answered {status}: scripted failure" in line for line in logged), logged


async def test_a_429_without_retry_after_is_tried_again_as_a_503_is(fake: FakeSearch) -> None:
    # azure-core retries a POST on 500, 503 and 504 only: a search throttled with a bare 429
    # failed the player's question at its first refusal, where a second later it was answered.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        fake.fail_with(429, times=1)
        before = len(fake.searches)
        assert (await manuals.search("I want a refund", 3))[0].source == "refunds.md"
        assert len(fake.searches) - before == 2
        fake.fail_with(429)
        before = len(fake.searches)
        with pytest.raises(ToolError, match="unavailable right now"):
            await manuals.search("I want a refund", 3)
        assert len(fake.searches) - before == 1 + settings.retries  # not hammered
    finally:
        await manuals.aclose()


@pytest.mark.parametrize("status", [429, 503])
async def test_a_throttled_search_is_not_asked_again_at_once(
    fake: FakeSearch, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # azure-core's first retry has no backoff: a service throttling without a Retry-After was
    # sent the same search again straight away, which only adds to its load.
    from azure.core.pipeline.transport import AioHttpTransport

    waits: list[float] = []

    async def sleep(self: object, duration: float) -> None:
        waits.append(duration)

    settings = search_settings(fake, retries=2)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    monkeypatch.setattr(AioHttpTransport, "sleep", sleep)
    try:
        fake.fail_with(status, times=2)
        assert (await manuals.search("I want a refund", 3))[0].source == "refunds.md"
    finally:
        await manuals.aclose()
    assert len(waits) == 2 and 0 < waits[0] < waits[1], waits


async def test_a_failed_word_lookup_leaves_the_passages_already_found(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    # Whether the manuals use a word at all is asked after the search itself: throttled there, the
    # question was "unavailable", though its passages were in hand. Taken as a "no", it leaves out
    # only passages holding a single word of the question, as an unknown word would.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        before = len(fake.searches)
        answered = await manuals.search("limit my kid's play time", 3)
        asked = len(fake.searches) - before
        fake.fail_with(503, after=1)  # the search answered, every word's lookup refused
        with caplog.at_level(logging.INFO, logger="bot.tools.azure_manuals"):
            passages = await manuals.search("limit my kid's play time", 3)
    finally:
        await manuals.aclose()
    assert asked == 2  # the search, and whether the manuals use "kid" at all
    assert [p.title for p in passages] == [p.title for p in answered] and passages
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.INFO], said
    assert "answered 503" in said[0][1] and "a word" in said[0][1]


async def test_search_recovers_after_a_blip_and_a_restart(fake: FakeSearch) -> None:
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        fake.fail_with(503, times=1)
        passages = await manuals.search("I want a refund", 3)  # the SDK's retry hides one 503
        assert passages[0].source == "refunds.md"
        port = fake.port
        await fake.stop()
        with pytest.raises(Exception, match="unavailable right now"):
            await manuals.search("I want a refund", 3)
        await fake.start(port=port)
        assert (await manuals.search("I want a refund", 3))[0].source == "refunds.md"
    finally:
        await manuals.aclose()


async def test_search_down_for_many_questions_is_said_once_a_reason_and_its_end_once(
    fake: FakeSearch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every player's question meets the outage; a line a question at WARNING would bury the log.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        port = fake.port
        with caplog.at_level(logging.DEBUG, logger="bot.tools.azure_manuals"):
            await fake.stop()
            for _ in range(3):
                with pytest.raises(ToolError):
                    await manuals.search("I want a refund", 3)
            await fake.start(port=port)
            fake.fail_with(403)  # a new reason, which the operator must fix: said too
            for _ in range(2):
                with pytest.raises(ToolError):
                    await manuals.search("I want a refund", 3)
            fake.recover()
            for _ in range(2):
                assert (await manuals.search("I want a refund", 3))[0].source == "refunds.md"
    finally:
        await manuals.aclose()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bot.tools.azure_manuals"]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "INFO", "ERROR", "INFO", "INFO"]
    assert "cannot reach" in lines[0][1] and "credentials problem" in lines[3][1]
    assert lines[-1][1] == "manuals search: the search service answers again"


# ---- check --------------------------------------------------------------------------------


async def test_check_counts_the_documents(fake: FakeSearch) -> None:
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    said = {}
    for key in (fake.api_key, fake.query_key):  # a query key is enough to serve players
        manuals = await AzureSearchManuals.open(settings, key)
        try:
            said[key] = await manuals.check()
        finally:
            await manuals.aclose()
    counted = f"Azure AI Search index 'manuals': {SECTIONS} documents, keyword queries, API key auth"
    assert said[fake.api_key] == counted
    assert said[fake.query_key] == f"{counted}; its definition not compared (a query key cannot read it)"


async def test_check_warns_of_an_index_that_differs_from_the_bots(
    settings: Settings, fake: FakeSearch
) -> None:
    # Only `index-manuals` compared the definition: an index another tool made under the name
    # (here its title analyzed by standard.lucene, which neither stems nor drops stopwords as
    # the embedded index does) was `ok`, while its questions matched other words.
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    _field(fake.indexes["manuals"].definition, "title")["analyzer"] = "standard.lucene"
    line = {r.service: r for r in await check_all(app_settings(settings, fake))}["manuals"]
    assert line.ok and line.warn, line.line()
    assert "it is not the index voxdesk makes ('title' is analyzed with standard.lucene, not en.lucene)" in (
        line.detail
    )
    assert "delete it and run `python -m bot index-manuals` again" in line.detail


async def test_healthz_asks_the_search_service_no_query(settings: Settings, fake: FakeSearch) -> None:
    # /healthz ran `check`, a real (semantic, when configured: billed) query, every 2 s a probe
    # asked. A document count says as much of an outage.
    from bot.web import STATE, Reused
    from tests.web_helpers import web_client

    await index_manuals(search_settings(fake, semantic_configuration="sem"), fake.api_key, MANUALS)
    fake.received.clear()
    async with web_client(app_settings(settings, fake, VOXDESK_SEARCH_SEMANTIC_CONFIGURATION="sem")) as (
        client,
        _,
    ):
        up = await client.get("/healthz")
        ready = await up.json()
        asked = [r.operation for r in fake.received]
        fake.fail_with(403)
        client.app[STATE].probes = Reused()  # the next probe, not the last one's result reused
        down = await client.get("/healthz")
        not_ready = await down.json()
    assert up.status == 200 and ready["checks"]["manuals"] == {"ok": True}
    assert asked == ["count"]
    assert down.status == 503
    assert not_ready["checks"]["manuals"] == {"ok": False, "error": "SearchServiceError"}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (
            "wrong key",
            r"^AZURE_SEARCH_API_KEY was refused \(403\) by http://127\.0\.0\.1:\d+: check the key$",
        ),
        # Named by the setting too: a name mistyped wants search.index mended, not a new index.
        (
            "missing index",
            r"^index 'nope' not found at .*: set search\.index to the index's name, or run"
            r" `python -m bot index-manuals` to make it$",
        ),
        ("empty index", r"^index 'manuals' is empty: run `python -m bot index-manuals`$"),
        ("stopped", r"^cannot reach http://127\.0\.0\.1:\d+: .+: check search\.endpoint$"),
        # An index another tool made under this name: counting its documents works, every
        # question asking for the fields the bot reads would fail.
        ("field missing", r"^http://127\.0\.0\.1:\d+ answered 400: Invalid \$select: unknown field 'source'"),
    ],
)
async def test_check_names_the_reason(fake: FakeSearch, case: str, reason: str) -> None:
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    key = fake.api_key
    if case == "wrong key":
        key = "not-the-key"
    elif case == "missing index":
        settings = search_settings(fake, index="nope")
    elif case == "empty index":
        index = fake.indexes["manuals"]
        index.documents.clear()
    elif case == "stopped":
        await fake.stop()
    elif case == "field missing":
        index = fake.indexes["manuals"]
        index.definition["fields"] = [f for f in index.definition["fields"] if f["name"] != "source"]
        for document in index.documents.values():
            del document["source"]
        fake.expect_violations()
    manuals = await AzureSearchManuals.open(settings, key)
    try:
        with pytest.raises(SearchServiceError) as raised:
            await manuals.check()
    finally:
        await manuals.aclose()
    assert re.search(reason, str(raised.value)), str(raised.value)
    assert "not-the-key" not in str(raised.value)


async def test_healthz_probe_of_a_service_gone_away_names_no_setting_to_mend(fake: FakeSearch) -> None:
    # /healthz's probe runs while the bot serves: a service that answered and then went away is an
    # outage, not search.endpoint mistyped (`check` and start-up say that, see above). Its line,
    # logged as "healthz: manuals does not answer: ...", sent staff to the configuration.
    settings = search_settings(fake)
    await index_manuals(settings, fake.api_key, MANUALS)
    manuals = await AzureSearchManuals.open(settings, fake.api_key)
    try:
        await manuals.probe()
        await fake.stop()
        with pytest.raises(SearchServiceError) as raised:
            await manuals.probe()
    finally:
        await manuals.aclose()
    assert str(raised.value).startswith("cannot reach http://127.0.0.1:"), str(raised.value)
    assert "search.endpoint" not in str(raised.value), str(raised.value)


async def test_an_endpoint_that_is_no_search_service_is_said_to_be_one(tmp_path: Path) -> None:
    # search.endpoint set to the Azure OpenAI resource's address (pasted from openai.azure_endpoint):
    # its 404 was read as the index missing, and index-manuals itself said to run index-manuals.
    from aiohttp import web

    from tests.fakes.openai_server import AZURE_NOT_FOUND

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": AZURE_NOT_FOUND}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    settings = SearchSettings(endpoint=f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=TIMEOUT)
    said = []
    try:
        with pytest.raises(SearchServiceError) as raised:
            await index_manuals(settings, "key", MANUALS)
        said.append(str(raised.value))
        manuals = await AzureSearchManuals.open(settings, "key")
        try:
            with pytest.raises(SearchServiceError) as raised:
                await manuals.check()
            said.append(str(raised.value))
        finally:
            await manuals.aclose()
    finally:
        await runner.cleanup()
    for line in said:
        assert re.fullmatch(
            r"http://127\.0\.0\.1:\d+ answered 404 \(Resource not found\), not as an Azure AI Search "
            r"service: set search\.endpoint to its address, https://<service>\.search\.windows\.net",
            line,
        ), line


async def test_bot_check_reports_the_search_service(settings: Settings, fake: FakeSearch) -> None:
    await index_manuals(search_settings(fake), fake.api_key, MANUALS)
    good = {r.service: r for r in await check_all(app_settings(settings, fake))}["manuals"]
    wrong = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_MANUALS="azure",
        VOXDESK_SEARCH_ENDPOINT=fake.endpoint,
        AZURE_SEARCH_API_KEY="wrong",
    )
    bad = {r.service: r for r in await check_all(wrong)}["manuals"]
    assert good.ok and f"{SECTIONS} documents" in good.line()
    assert not bad.ok and "AZURE_SEARCH_API_KEY was refused (403)" in bad.line()


async def test_plain_http_is_refused_beyond_this_machine() -> None:
    settings = SearchSettings(endpoint="http://search.example.com")
    with pytest.raises(SearchServiceError, match="must use https"):
        await AzureSearchManuals.open(settings, "key")
    with pytest.raises(SearchServiceError, match="AZURE_SEARCH_API_KEY is empty"):
        await AzureSearchManuals.open(SearchSettings(endpoint="https://x.search.windows.net"), "")


def test_an_endpoint_is_described_without_credentials_in_it() -> None:
    endpoint = SearchSettings(endpoint="https://admin:s3cret@x.search.windows.net")
    assert describe(TimeoutError(), endpoint) == "no answer from https://x.search.windows.net within 20 s"


# ---- Microsoft Entra ID -------------------------------------------------------------------


@pytest.fixture
async def entra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeEntra, FakeSearch]]:
    """A fake Entra token endpoint and a search service over TLS whose keys are disabled, the
    environment's service principal pointed at the one, the other taking its tokens."""
    import ssl

    import aiohttp.connector

    # Nothing from the machine's own Azure setup may answer instead of the environment's secret.
    for var in (
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_USERNAME",
        "AZURE_TOKEN_CREDENTIALS",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    async with running_fake_entra(tmp_path) as tokens:
        # aiohttp builds the context that verifies servers when imported, so an SSL_CERT_FILE set
        # now is never read: the fakes' issuer is added to a context put in its place.
        trusted = ssl.create_default_context()
        trusted.load_verify_locations(tokens.ca_file)
        monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", trusted)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", tokens.authority)
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
        search = FakeSearch()
        search.keys_allowed = False
        search.tokens = tokens.issued
        async with checked(await search.start(ssl_context=tokens.server_context())) as served:
            yield tokens, served


async def test_entra_auth_indexes_and_answers_with_a_token_and_no_key(
    entra: tuple[FakeEntra, FakeSearch], caplog: pytest.LogCaptureFixture
) -> None:
    tokens, fake = entra
    caplog.set_level(logging.DEBUG)
    settings = search_settings(fake, auth="entra")
    summary = await index_manuals(settings, "", MANUALS)
    assert f"{SECTIONS} passages" in summary
    manuals = await AzureSearchManuals.open(settings, "")
    try:
        passages = await manuals.search("how do I pair my controller", 3)
        said = await manuals.check()
    finally:
        await manuals.aclose()
    assert passages and "controller" in passages[0].text.lower()
    assert (
        said
        == f"Azure AI Search index 'manuals': {SECTIONS} documents, keyword queries, Microsoft Entra ID auth"
    )
    assert fake.received and all(
        r.headers.get("Authorization", "").startswith("Bearer ") and "api-key" not in r.headers
        for r in fake.received
    )
    assert {g["scope"] for g in tokens.grants} == {SEARCH_SCOPE}
    assert CLIENT_SECRET not in caplog.text


async def test_a_sovereign_clouds_audience_is_the_scope_of_the_token_asked_for(
    settings: Settings, entra: tuple[FakeEntra, FakeSearch]
) -> None:
    # A service in Azure Government takes tokens for https://search.azure.us only: one for the
    # public cloud's audience, the SDK's default, is refused with a 401 to every question.
    tokens, fake = entra
    fake.scope = "https://search.azure.us/.default"
    configured = app_settings(
        settings, fake, VOXDESK_SEARCH_AUTH="entra", VOXDESK_SEARCH_AUDIENCE="https://search.azure.us"
    )
    assert f"{SECTIONS} passages" in await index_manuals(configured.search, "", MANUALS)
    manuals = await AzureSearchManuals.open(configured.search, "")
    try:
        passages = await manuals.search("how do I pair my controller", 3)
    finally:
        await manuals.aclose()
    assert passages
    assert {g["scope"] for g in tokens.grants} == {"https://search.azure.us/.default"}


async def test_check_says_in_one_line_why_no_entra_token_could_be_had(
    settings: Settings, entra: tuple[FakeEntra, FakeSearch], caplog: pytest.LogCaptureFixture
) -> None:
    tokens, fake = entra
    caplog.set_level(logging.DEBUG)
    await index_manuals(search_settings(fake, auth="entra"), "", MANUALS)
    before = len(fake.received)
    tokens.client_secret = "a-rotated-secret"  # the environment's secret is now the old one
    wrong = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_MANUALS="azure",
        VOXDESK_SEARCH_ENDPOINT=fake.endpoint,
        VOXDESK_SEARCH_AUTH="entra",
        VOXDESK_SEARCH_TIMEOUT_SECONDS=f"{TIMEOUT:g}",
        VOXDESK_SEARCH_RETRIES="1",
    )
    line = {r.service: r for r in await check_all(wrong)}["manuals"]
    assert not line.ok
    assert line.detail == (
        "no Microsoft Entra ID token for Azure AI Search (search.auth = entra): EnvironmentCredential: "
        "Microsoft Entra ID error '(invalid_client) AADSTS7000215: Invalid client secret provided."
    ), line.detail
    assert len(fake.received) == before  # nothing was sent without a token
    assert CLIENT_SECRET not in caplog.text and CLIENT_SECRET not in line.line()


async def test_a_token_the_service_refuses_names_the_roles(entra: tuple[FakeEntra, FakeSearch]) -> None:
    _, fake = entra
    settings = search_settings(fake, auth="entra")
    await index_manuals(settings, "", MANUALS)
    fake.tokens = {}  # the identity lost its role assignment
    manuals = await AzureSearchManuals.open(settings, "")
    try:
        with pytest.raises(SearchServiceError) as refused:
            await manuals.check()
    finally:
        await manuals.aclose()
    assert "the Microsoft Entra ID token was refused (401)" in str(refused.value)
    assert "Search Index Data Reader" in str(refused.value)
    # A 401 is also what a sovereign cloud's service answers a public cloud's token.
    assert str(refused.value).endswith(
        "; a token for another cloud is refused too (search.audience: https://search.azure.com,"
        " the public cloud's)"
    ), str(refused.value)


# DefaultAzureCredential's report when no credential applied (azure-identity 1.27, no Azure setup).
NONE_APPLIED = """DefaultAzureCredential failed to retrieve a token from the included credentials.
Attempted credentials:
\tEnvironmentCredential: EnvironmentCredential authentication unavailable. Environment variables \
are not fully configured.
Visit https://aka.ms/azsdk/python/identity/environmentcredential/troubleshoot to troubleshoot this issue.
\tWorkloadIdentityCredential: WorkloadIdentityCredential authentication unavailable. The workload \
options are not fully configured.
\tManagedIdentityCredential: ManagedIdentityCredential authentication unavailable, no response from \
the IMDS endpoint.
\tSharedTokenCacheCredential: SharedTokenCacheCredential authentication unavailable. No accounts were \
found in the cache.
\tVisualStudioCodeCredential: VisualStudioCodeCredential requires the 'azure-identity-broker' package.
\tAzureCliCredential: Azure CLI not found on path
\tAzurePowerShellCredential: PowerShell is not installed
\tAzureDeveloperCliCredential: Azure Developer CLI could not be found.
To mitigate this issue, please refer to the troubleshooting guidelines here at \
https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot."""


def test_no_credential_that_applies_is_said_as_what_to_set() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    # The last credential's own complaint (the Azure Developer CLI missing) would send an operator
    # of a bot to install azd: the chain only got there because none applied.
    said = azure_manuals._token_failure(ClientAuthenticationError(message=NONE_APPLIED), 8)
    assert said == (
        "none of the 8 credentials DefaultAzureCredential tries applied: set AZURE_TENANT_ID, "
        "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run with a managed or workload identity"
    )
