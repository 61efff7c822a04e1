"""下载与解压：断点续传、超时与重试、镜像依次尝试、校验后才改名、安全解压。

``download_file`` 写到 ``dest.part``，断线后用 HTTP Range 续传，完整并校验通过才改名（``file://`` 与本地路径直接复制）；
``download_first`` 依次尝试主地址与镜像；``extract_zip`` 拒绝越界成员与符号链接、跳过垃圾文件、识别 GBK 文件名，
先解压到临时目录再改名，有完成标记就不重复解压。
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import time
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from .files import is_junk_name
from .paths import display_path
from .progress import progress_bar

__all__: list[str] = []  # 只供包内使用：笔记本通过 cu.prepare_dataset 下载和解压

CHUNK = 1 << 16  # 每次读写 64 KiB：断线时最多丢这么多，续传从已写入的位置开始
EXTRACTED_MARKER = ".extracted.json"  # 解压完成后写在目标目录里


class DownloadError(RuntimeError):
    """下载失败或下载的文件没通过校验。failures：依次尝试的每个地址各自失败的原因（一条一句）。"""

    def __init__(self, message: str, failures: list[str] | None = None):
        super().__init__(message)
        self.failures = failures or []


class UnsafeArchiveError(ValueError):
    """压缩包里有会写到目标目录之外的成员或符号链接，拒绝解压。"""


class _Incomplete(Exception):
    """连接提前断开，文件还没下完（内部使用：触发续传）。"""


def file_sha256(path, chunk: int = CHUNK) -> str:
    """计算文件的 SHA-256（十六进制字符串）。"""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, url: str, sha256: str | None, size: int | None) -> None:
    """大小和校验和不对就删掉文件并报错（不留下半成品）。"""
    if size is not None and (actual_size := path.stat().st_size) != size:
        path.unlink()
        raise DownloadError(f"从 {url} 下载的文件大小不对：应为 {size} 字节，实际 {actual_size} 字节。"
                            "已删除这个文件；重新运行即可重新下载，或者换一个镜像地址。")
    if sha256 and (actual := file_sha256(path)).lower() != sha256.lower():
        path.unlink()
        raise DownloadError(f"从 {url} 下载的文件校验失败：SHA-256 应为 {sha256}，实际是 {actual}。"
                            "文件可能损坏或被替换，已经删除。重新运行即可重新下载，或者换一个镜像地址。")


# ---------------------------------------------------------------- 下载

def _local_source(url: str) -> Path | None:
    """``file://`` 地址或普通路径 -> 本地 Path；HTTP(S) 地址返回 None。"""
    parsed = urlparse(str(url))
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme in ("http", "https"):
        return None
    if len(parsed.scheme) > 1:  # ftp:// 之类（Windows 盘符 C: 的 scheme 只有一个字母）
        raise DownloadError(f"不支持的下载地址 {url}：改用 http(s)://、file:// 地址或本地文件路径。")
    return Path(url)


def _byte_bar(total, desc: str, initial: int = 0):
    return progress_bar(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def _copy_local(source: Path, part: Path, desc: str) -> None:
    if not source.is_file():
        raise DownloadError(f"本地文件 {display_path(source)} 不存在。检查路径是否写对。")
    with open(source, "rb") as src, open(part, "wb") as dst, _byte_bar(source.stat().st_size, desc) as bar:
        while block := src.read(CHUNK):
            dst.write(block)
            bar.update(len(block))


def _fetch_http(url: str, part: Path, timeout, desc: str) -> None:
    """下载一次：有 .part 就用 Range 请求从断点续传；没下完抛 _Incomplete。"""
    import requests

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416:  # 断点超出文件末尾：.part 已经完整或已损坏，重新开始
            part.unlink()
            raise _Incomplete("服务器不接受续传位置，重新下载")
        response.raise_for_status()
        if response.status_code != 206:  # 服务器不支持续传：从头下载
            offset = 0
        # 完整文件的字节数：206 看 Content-Range 的 “/总数”，200 看 Content-Length
        match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
        length = response.headers.get("Content-Length")
        total = int(match.group(1)) if match else int(length) + offset if length is not None else None
        with open(part, "ab" if offset else "wb") as f, _byte_bar(total, desc, offset) as bar:
            for block in response.iter_content(chunk_size=CHUNK):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise _Incomplete(f"只收到 {part.stat().st_size} / {total} 字节")


def _is_unreachable(exc: Exception) -> bool:
    """域名解析失败或连接被拒绝：重试没有意义，直接换下一个地址。"""
    text = repr(exc)
    return "NameResolutionError" in text or "ConnectionRefusedError" in text or "Connection refused" in text


def download_file(url: str, dest, *, sha256: str | None = None, size: int | None = None, retries: int = 4,
                  backoff: float = 1.0, timeout: tuple[float, float] = (10.0, 60.0), desc: str | None = None) -> Path:
    """把 url（http(s)、file:// 或本地路径）下载到 dest（已存在且通过校验就直接返回），返回 dest。

    内容先写到 ``dest.part``，完整并通过 sha256 / size 校验（不知道就给 None）才改名。超时、断线、5xx 时
    最多重试 retries 次（每次从断点续传），第 k 次前等 backoff × 2^(k−1) 秒；timeout 是 (连接, 读取) 秒数。
    出错时抛出 DownloadError（中文说明原因和办法）。
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        try:
            _verify(dest, str(dest), sha256, size)
            return dest
        except DownloadError:
            pass  # 已有的文件不对（已被删掉），重新下载
    part = dest.with_name(dest.name + ".part")
    desc = desc or f"下载 {dest.name}"
    source = _local_source(url)
    if source is not None:
        _copy_local(source, part, desc)
    else:
        for attempt in range(retries + 1):
            try:
                _fetch_http(url, part, timeout, desc)
                break
            except (_Incomplete, requests.ConnectionError, requests.Timeout, requests.HTTPError,
                    requests.exceptions.ChunkedEncodingError) as exc:  # 断线、超时、服务器出错
                status = getattr(exc.response, "status_code", 0) if isinstance(exc, requests.HTTPError) else None
                if attempt == retries or _is_unreachable(exc) or (
                        status is not None and status < 500 and status not in (408, 429)):  # 4xx：重试也没用
                    raise DownloadError(f"从 {url} 下载失败：{_short_reason(exc)}") from None
                time.sleep(backoff * 2**attempt)  # 等一会儿再试，下次从断点续传
    _verify(part, url, sha256, size)
    part.replace(dest)
    return dest


def _short_reason(exc: Exception) -> str:
    """把 requests 冗长的异常压缩成一句中文原因。"""
    text = repr(exc)
    if "NameResolutionError" in text:
        return "无法解析域名（可能没有联网，或者需要代理）"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "连接被拒绝（服务器不可用）"
    if "Timeout" in type(exc).__name__ or "timed out" in text:
        return "连接超时"
    response = getattr(exc, "response", None)
    if response is not None:
        return f"服务器返回 HTTP {response.status_code}"
    if isinstance(exc, _Incomplete):
        return f"连接多次中断（{exc}）；再运行一次会从断点接着下载"
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def download_first(urls, dest, **kwargs) -> tuple[Path, str]:
    """依次尝试多个地址（主地址 + 镜像），返回 (文件路径, 成功的地址)；全部失败时 DownloadError 逐条列出原因。"""
    errors = []
    for url in urls:
        try:
            return download_file(url, dest, **kwargs), url
        except DownloadError as exc:
            errors.append(str(exc))
    if not errors:
        raise DownloadError("没有可用的下载地址。", [])
    raise DownloadError("所有地址都下载失败：\n" + "\n".join(f"  - {e}" for e in errors), errors)


# ---------------------------------------------------------------- 解压

def _decoded_name(info: zipfile.ZipInfo) -> str:
    """成员的真实文件名：没有 UTF-8 标志位的成员 zipfile 按 CP437 解码，而中文 Windows 打的 zip 实际是 GBK，
    所以还原成原始字节，先试 UTF-8，再试 GBK。"""
    name = info.filename
    if not info.flag_bits & 0x800:
        raw = info.orig_filename.encode("cp437")
        for encoding in ("utf-8", "gbk"):
            try:
                name = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return name.replace("\\", "/")  # Windows 工具有时用反斜杠分隔目录


def zip_member_names(archive) -> list[str]:
    """压缩包里全部成员的真实文件名（已处理 GBK 编码）。"""
    with zipfile.ZipFile(archive) as zf:
        return [_decoded_name(info) for info in zf.infolist()]


def _unsafe_reason(name: str, info: zipfile.ZipInfo) -> str | None:
    """成员不安全的原因；安全返回 None。"""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "符号链接"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "绝对路径"
    if ".." in PurePosixPath(name).parts:
        return "包含 ../，会写到目标目录之外"
    return None


def _is_junk(name: str) -> bool:
    """压缩包成员的路径里有任何一段是垃圾名字（如 __MACOSX/fruit30/a.jpg）。"""
    return any(is_junk_name(part) for part in PurePosixPath(name).parts)


def _content_root(folder: Path) -> Path:
    """压缩包里只有一个顶层目录（如 fruit30_split/）时，以它为内容根目录。"""
    entries = [p for p in folder.iterdir() if not _is_junk(p.name)]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def extract_zip(archive, target) -> Path:
    """把 zip 安全地解压到 target（内容直接放在 target 下），返回 target。

    有符号链接、绝对路径或 ``../`` 成员时整个拒绝（UnsafeArchiveError），什么都不写；跳过垃圾和隐藏文件；
    只有一个顶层目录时去掉这一层（``fruit30_split/train/…`` -> ``target/train/…``）；先解压到 ``target.partial``，
    写入完成标记再改名；target 里已有标记就直接返回。
    """
    archive, target = Path(archive), Path(target)
    if (target / EXTRACTED_MARKER).is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{display_path(target)} 已存在，但不是一次完整的解压结果。把它删掉或移走，再重新运行。")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DownloadError(f"{display_path(archive)} 不是有效的 zip 文件（可能下载不完整）。删掉它再重新运行。") from None
    with zf:
        members = [(info, _decoded_name(info)) for info in zf.infolist()]
        unsafe = [f"{name}（{why}）" for info, name in members if (why := _unsafe_reason(name, info))]
        if unsafe:
            raise UnsafeArchiveError(f"拒绝解压 {archive.name}：其中有 {len(unsafe)} 个不安全的成员，例如 "
                                     + "；".join(unsafe[:3]) + "。这样的压缩包可能被人动过手脚，从可信的地址重新下载。")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        wanted = [(info, name) for info, name in members if not _is_junk(name)]
        for info, name in progress_bar(wanted, desc=f"解压 {archive.name}", disable=len(wanted) < 500):
            _extract_member(zf, info, name, partial, archive)
    content = _content_root(partial) if partial.exists() else partial
    content.mkdir(parents=True, exist_ok=True)
    record = {"archive": archive.name, "bytes": archive.stat().st_size, "members": len(wanted)}
    (content / EXTRACTED_MARKER).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    if target.exists():
        target.rmdir()  # 空目录
    content.replace(target)
    shutil.rmtree(partial, ignore_errors=True)
    return target


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, root: Path, archive: Path) -> None:
    dest = (root / name).resolve()
    if not dest.is_relative_to(root.resolve()):  # 双保险：解析后的路径必须在 root 之内
        raise UnsafeArchiveError(f"拒绝解压 {archive.name}：成员 {name} 会写到目标目录之外。")
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as exc:  # CRC 校验失败：压缩包损坏
        shutil.rmtree(root, ignore_errors=True)
        raise DownloadError(f"{display_path(archive)} 已损坏（{name}：{exc}）。删掉它再重新下载。") from None
