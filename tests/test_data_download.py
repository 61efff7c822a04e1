"""下载：本机 HTTP 服务器（支持 Range）上的断线续传、校验失败、镜像回退、file:// 与本地路径；
以及 fruit30 在离线时给出的中文说明、从本地压缩包或镜像准备数据集。全部离线。"""

import hashlib
import http.server
import re
import socket
import stat
import threading
import traceback
import zipfile

import numpy as np
import pytest
from PIL import Image

import course_utils as cu
from course_utils.data import DATASETS, DatasetUnavailable
from course_utils.download import DownloadError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 600_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/file：正常；/flaky：第一次只发一半就断开；/norange-flaky：断开后不支持续传；/slow：第一次迟迟不响应；
    /missing：404。其它路径映射到 server.files 里的字节。"""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path, PAYLOAD)
        if self.path == "/missing":
            self.send_error(404)
            return
        if self.path == "/slow" and server.slow_left > 0:
            server.slow_left -= 1
            threading.Event().wait(0.6)  # 比客户端的读取超时长
        start, status = 0, 200
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not self.path.startswith("/norange"):
            start, status = int(match.group(1)), 206
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(part)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if self.path.endswith("flaky") and server.drops_left > 0:
            server.drops_left -= 1
            self.wfile.write(part[: len(part) // 2])  # 发一半就断开连接
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(part)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.files, httpd.drops_left, httpd.slow_left = [], {}, 1, 1
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/fruit30_split.zip"  # 没有人在这个端口上监听


def test_dropped_connection_is_resumed_with_range_and_checksum_matches(server, tmp_path):
    dest = cu.download.download_file(server.url + "/flaky", tmp_path / "a.bin", sha256=PAYLOAD_SHA, backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for path, r in server.requests if path == "/flaky"]
    assert ranges[0] is None and ranges[1] is not None  # 第二次请求从断点续传
    resumed_from = int(re.match(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_from < len(PAYLOAD)
    assert not (tmp_path / "a.bin.part").exists()


def test_server_without_range_support_restarts_and_still_completes(server, tmp_path):
    dest = cu.download.download_file(server.url + "/norange-flaky", tmp_path / "b.bin", sha256=PAYLOAD_SHA, backoff=0.01)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == PAYLOAD_SHA


def test_read_timeout_is_retried(server, tmp_path):
    dest = cu.download.download_file(server.url + "/slow", tmp_path / "c.bin", timeout=(2, 0.2), backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    assert len([p for p, _ in server.requests if p == "/slow"]) == 2


def test_wrong_checksum_is_a_chinese_error_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "d.bin"
    with pytest.raises(DownloadError, match="校验失败.*SHA-256") as info:
        cu.download.download_file(server.url + "/file", dest, sha256="0" * 64, backoff=0.01)
    assert "换一个镜像" in str(info.value)
    assert not dest.exists() and not (tmp_path / "d.bin.part").exists()


def test_unreachable_url_falls_back_to_the_next_mirror(server, tmp_path):
    dead = _closed_port_url()
    path, used = cu.download.download_first([dead, server.url + "/missing", server.url + "/file"], tmp_path / "e.bin",
                                   sha256=PAYLOAD_SHA, backoff=0.01)
    assert used == server.url + "/file" and path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError) as info:
        cu.download.download_first([dead, server.url + "/missing"], tmp_path / "f.bin", backoff=0.01)
    assert info.value.failures[0].startswith(f"从 {dead} 下载失败：连接被拒绝")
    assert "HTTP 404" in info.value.failures[1]


def test_file_urls_and_plain_local_paths_work(tmp_path):
    source = tmp_path / "源 文件.bin"  # 中文和空格：file:// 地址要正确转义
    source.write_bytes(PAYLOAD)
    assert cu.download.download_file(source.as_uri(), tmp_path / "g.bin", sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert cu.download.download_file(str(source), tmp_path / "h.bin", size=len(PAYLOAD)).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="不存在"):
        cu.download.download_file(str(tmp_path / "nope.bin"), tmp_path / "i.bin")


def test_existing_verified_file_is_reused_and_a_bad_one_is_replaced(server, tmp_path):
    dest = tmp_path / "j.bin"
    dest.write_bytes(b"stale")
    cu.download.download_file(server.url + "/file", dest, sha256=PAYLOAD_SHA, backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    count = len(server.requests)
    cu.download.download_file(server.url + "/file", dest, sha256=PAYLOAD_SHA)
    assert len(server.requests) == count  # 已有且校验通过：不再联网


# ---------------------------------------------------------------- fruit30 与 prepare_dataset


def _jpeg_bytes(color):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buffer, format="JPEG")
    return buffer.getvalue()


class _GbkInfo(zipfile.ZipInfo):
    """模拟 Windows 中文系统打的 zip：文件名用 GBK 编码，且不设 UTF-8 标志位。"""

    def _encodeFilenameFlags(self):
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def _fake_fruit30_zip(path, gbk=False):
    """30 个类、每类 train 两张、val 一张的迷你 fruit30（顶层目录 fruit30_split/，带 __MACOSX 垃圾）。"""
    info_type = _GbkInfo if gbk else zipfile.ZipInfo
    with zipfile.ZipFile(path, "w") as zf:
        for k, name in enumerate(DATASETS["fruit30"].classes):
            for split, count in (("train", 2), ("val", 1)):
                for i in range(count):
                    zf.writestr(info_type(f"fruit30_split/{split}/{name}/{i}.jpg"), _jpeg_bytes((k * 8, i * 90, 50)))
        zf.writestr("__MACOSX/fruit30_split/._x.jpg", b"junk")
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    for name in ("COURSE_FRUIT30_URL", "COURSE_FRUIT30_ARCHIVE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


@pytest.fixture
def offline(monkeypatch):
    """断网：除了 127.0.0.1 以外的域名都解析失败（和没联网时一样）。"""
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_full_profile_offline_stops_with_one_clear_chinese_message(data_dir, offline):
    settings = cu.resolve_settings("full")
    with pytest.raises(DatasetUnavailable) as info:
        cu.prepare_dataset(settings)
    message = str(info.value)
    assert DATASETS["fruit30"].urls[0] in message and "无法解析域名" in message  # 试过的地址和原因
    assert "COURSE_FRUIT30_URL" in message and "DATASET_URL" in message  # 镜像
    assert "COURSE_FRUIT30_ARCHIVE" in message and str(data_dir / "fruit30_split.zip") in message  # 本地文件
    assert 'PROFILE 改成 "demo"' in message  # 演示档位
    # 学习者看到的是这一条消息，而不是一串内部异常：没有连带的异常链，栈只到 prepare_dataset 为止
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    frames = traceback.extract_tb(info.value.__traceback__)
    assert [f.name for f in frames][-1] == "prepare_dataset" and len(frames) <= 2
    assert not (data_dir / "fruit30_split").exists()


def test_missing_explicit_archive_is_named_in_the_message(data_dir, offline, tmp_path):
    settings = cu.resolve_settings("full", archive=str(tmp_path / "没有这个.zip"))
    with pytest.raises(DatasetUnavailable, match="没有这个.zip 不存在") as info:
        cu.prepare_dataset(settings)
    assert DATASETS["fruit30"].urls[0] not in str(info.value)  # 路径写错时先停下，不去下载


def test_fruit30_from_a_mirror_then_reused_offline(data_dir, server, tmp_path, monkeypatch):
    server.files["/mirror/fruit30_split.zip"] = _fake_fruit30_zip(tmp_path / "src.zip").read_bytes()
    monkeypatch.setenv("COURSE_FRUIT30_URL", f"{_closed_port_url()} {server.url}/mirror/fruit30_split.zip")
    settings = cu.resolve_settings("quick")
    root = cu.prepare_dataset(settings)
    assert root == data_dir / "fruit30_split"
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(DATASETS["fruit30"].classes)
    assert not (root / "__MACOSX").exists()
    count = len(server.requests)
    assert cu.prepare_dataset(settings) == root and len(server.requests) == count  # 第二次不联网
    assert "已就绪" in cu.data.dataset_status(settings)


def test_fruit30_from_a_local_gbk_archive(data_dir, tmp_path):
    archive = _fake_fruit30_zip(tmp_path / "下载的.zip", gbk=True)
    assert "fruit30_split/train/苹果-红/0.jpg" in cu.download.zip_member_names(archive)
    root = cu.prepare_dataset(cu.resolve_settings("full", archive=str(archive)))
    assert (root / "val" / "哈密瓜" / "0.jpg").is_file()
    settings = cu.resolve_settings("full", image_size=32, resize_size=36, val_fraction=0.5, archive=str(archive))
    data = cu.course_data(settings, mean=[0.5] * 3, std=[0.5] * 3)  # 03 的 ImageFolder 读得出中文类名
    assert data.class_names == sorted(DATASETS["fruit30"].classes) and len(data.test_ds) == 30
    assert len(data.train_ds) == len(data.val_ds) == 30  # 每类两张：分层各分一张


def test_archive_with_wrong_classes_is_rejected(data_dir, tmp_path):
    archive = tmp_path / "wrong.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "val"):
            zf.writestr(f"{split}/猫/1.jpg", _jpeg_bytes((1, 2, 3)))
    with pytest.raises(DatasetUnavailable, match="类别与预期的 30 类不一致"):
        cu.prepare_dataset(cu.resolve_settings("full", archive=str(archive)))


# ---------------------------------------------------------------- 安全解压


def _zip_with(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:  # name 可以是字符串或 ZipInfo
            zf.writestr(name, data)
    return path


def _symlink_info(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("evil", [
    "../evil.txt", "train/../../evil.txt", "/tmp/evil-abs.txt", "C:/evil.txt", "..\\evil.txt",
    _symlink_info("train/link"),
], ids=["dotdot", "nested-dotdot", "absolute", "drive-letter", "backslash", "symlink"])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, evil):
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip_with(tmp_path / "evil.zip", [("train/a/ok.txt", b"ok"), (evil, b"/etc/passwd")])
    with pytest.raises(cu.download.UnsafeArchiveError, match="拒绝解压"):
        cu.download.extract_zip(archive, work / "target")
    assert list(work.iterdir()) == []  # 目标目录、临时目录都没有出现
    assert not list(tmp_path.rglob("evil*.txt")) and not (tmp_path.parent / "evil.txt").exists()


def test_extraction_skips_junk_strips_top_folder_and_is_idempotent(tmp_path):
    archive = _zip_with(tmp_path / "a.zip", [
        ("top/train/猫/1.jpg", b"1"), ("top/val/猫/2.jpg", b"2"), ("top/train/.ipynb_checkpoints/x.jpg", b"x"),
        ("top/train/猫/.DS_Store", b"x"), ("__MACOSX/top/train/._1.jpg", b"x"),
    ])
    target = cu.download.extract_zip(archive, tmp_path / "data")
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == [".extracted.json", "train/猫/1.jpg", "val/猫/2.jpg"]
    (target / "train" / "猫" / "1.jpg").unlink()
    archive.unlink()
    assert cu.download.extract_zip(archive, target) == target  # 有完成标记：不重复解压（压缩包不在也没关系）
    assert not (target / "train" / "猫" / "1.jpg").exists()


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DownloadError, match="不是有效的 zip"):
        cu.download.extract_zip(bad, tmp_path / "out")
