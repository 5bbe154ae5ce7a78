import hashlib
import http.server
import threading
import zipfile
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest

from droughtwatch_assets.sources import download


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours `Range: bytes=N-`, as the benchmark's host does."""

    requests_seen: ClassVar[list] = []

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            data = Path(path).read_bytes()
        except OSError:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        self.requests_seen.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    RangeHandler.requests_seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def archive(http_root, real_shard):
    root, url = http_root
    with zipfile.ZipFile(root / "dw.zip", "w") as zf:
        zf.write(real_shard, "droughtwatch_data/train/part-r-00000")
        zf.write(real_shard, "droughtwatch_data/train/part-r-00001")
        zf.write(real_shard, "droughtwatch_data/val/part-r-00000")
        zf.writestr("droughtwatch_data/README.txt", "not a shard")
    return root / "dw.zip", f"{url}/dw.zip"


def test_download_reports_progress_and_checksums(archive, tmp_path):
    path, url = archive
    seen = []
    result = download.download(url, tmp_path / "dl" / "dw.zip", lambda done, total: seen.append((done, total)))
    body = path.read_bytes()
    assert result.path.read_bytes() == body
    assert result.sha256 == hashlib.sha256(body).hexdigest() and result.md5 == hashlib.md5(body).hexdigest()
    assert seen[-1] == (len(body), len(body)) and result.resumed_from == 0


def test_download_resumes_a_partial_file(archive, tmp_path):
    path, url = archive
    body = path.read_bytes()
    target = tmp_path / "dw.zip"
    (tmp_path / "dw.zip.part").write_bytes(body[:1_000_000])
    result = download.download(url, target)
    assert result.resumed_from == 1_000_000
    assert RangeHandler.requests_seen[-1] == "bytes=1000000-"
    assert target.read_bytes() == body and not (tmp_path / "dw.zip.part").exists()


def test_a_checksum_mismatch_is_refused(archive, tmp_path):
    _, url = archive
    with pytest.raises(RuntimeError, match="does not match"):
        download.download(url, tmp_path / "dw.zip", expected_sha256="0" * 64)


def test_an_unreachable_url_says_what_failed(http_root, tmp_path):
    _, url = http_root
    with pytest.raises(RuntimeError, match="HTTP 404"):
        download.download(f"{url}/missing.zip", tmp_path / "x.zip")


def test_extract_keeps_only_shards(archive, tmp_path):
    path, _ = archive
    shards = download.extract_shards(path, tmp_path / "out")
    assert [p.name for p in shards["train"]] == ["part-r-00000", "part-r-00001"]
    assert [p.name for p in shards["val"]] == ["part-r-00000"]
