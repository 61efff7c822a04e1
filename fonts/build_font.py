"""重新生成课程自带的中文字体 fonts/WenQuanYiMicroHei-Subset.ttf（文泉驿微米黑的子集）。

课程里新增了中文文字（笔记本、course_utils 的提示信息、类别名……）之后，在仓库根目录运行一条命令：

    .venv/bin/python fonts/build_font.py

它会扫描仓库里的文字，找出全部非 ASCII 字符，和 GB2312 全部字符、ASCII、全角标点一起，
从文泉驿微米黑里取出这些字形，写成一个 TrueType（glyf 轮廓）文件。源字体取自 Debian 的
fonts-wqy-microhei 软件包：第一次运行时下载（约 1.6 MB，校验 SHA-256），缓存在 fonts/.cache/。

其他用法：
    .venv/bin/python fonts/build_font.py --check             # 只检查现有字体缺哪些字，不写文件
    .venv/bin/python fonts/build_font.py --source 文件路径    # 离线：用本地的 .deb / .ttc / .ttf / .tar.gz

同样的输入总是生成字节完全相同的文件（不写入时间戳），所以只有字符集变了，git 才会看到改动。
本脚本只依赖标准库和 fontTools。
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

FONTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = FONTS_DIR.parent
OUTPUT = FONTS_DIR / "WenQuanYiMicroHei-Subset.ttf"
CACHE_DIR = FONTS_DIR / ".cache"  # 已被 fonts/.gitignore 忽略

FAMILY = "WenQuanYi Micro Hei Subset"  # 改过名，以免与系统里完整的文泉驿微米黑混淆
POSTSCRIPT_NAME = "WenQuanYiMicroHeiSubset"
SOURCE_DEB = "fonts-wqy-microhei_0.2.0-beta-3.1_all.deb"
SOURCE_URL = f"https://deb.debian.org/debian/pool/main/f/fonts-wqy-microhei/{SOURCE_DEB}"
SOURCE_SHA256 = "239163df984eea5c9da3b551aee374936222cdbd67f1a1be3cdcf3d76143ad66"
SOURCE_MEMBER = "wqy-microhei.ttc"  # 软件包里的字体文件名（两个字形：0 号是 Micro Hei）

# fruit30 的 30 个类别名（数据集文件夹名）：图表标签会用到，即使课程文字里暂时没出现也要覆盖
FRUIT30_CLASSES = (
    "哈密瓜 圣女果 山竹 杨梅 柚子 柠檬 桂圆 梨 椰子 榴莲 火龙果 猕猴桃 石榴 砂糖橘 胡萝卜 "
    "脐橙 芒果 苦瓜 苹果-红 苹果-青 草莓 荔枝 菠萝 葡萄-白 葡萄-红 西瓜 西红柿 车厘子 香蕉 黄瓜"
)
# 总要包含的码位区间（源字体里有的才会放进去）
BASE_RANGES = (
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x00FF),  # 拉丁字母补充：° × · ± 等
    (0x2000, 0x206F),  # 通用标点：“” ‘’ … — 等
    (0x2190, 0x21FF),  # 箭头
    (0x2200, 0x22FF),  # 数学符号，含负号 U+2212
    (0x3000, 0x303F),  # 中日韩符号和标点：、。「」【】等
    (0xFF00, 0xFFEF),  # 全角字符：，：；！？（）等
)
# 这些区间里的字必须由本字体提供（测试 tests/test_fonts.py 用的是同样的区间）
CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0x3000, 0x303F), (0xFF00, 0xFFEF))

SCAN_SUFFIXES = {".py", ".ipynb", ".md", ".txt", ".json", ".yml", ".yaml", ".toml", ".cfg", ".csv"}
# tests/ 不扫描：测试故意用到字体里没有的字（检查缺字能被发现），测试文字也不会画进图里
SKIP_DIRS = {".git", ".venv", "venv", "outputs", "data", "tests", ".cache", "__pycache__",
             ".ipynb_checkpoints", ".pytest_cache", "node_modules", "build", "dist"}


def is_cjk(char: str) -> bool:
    """是否属于必须由中文字体提供的字符（汉字、中文标点、全角字符）。"""
    return any(low <= ord(char) <= high for low, high in CJK_RANGES)


def gb2312_characters() -> set[str]:
    """GB2312 的全部字符：6763 个汉字和 682 个符号。"""
    chars = set()
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue  # 码表里的空位
    return chars


def _file_text(path: Path) -> str:
    """文件里的文字；笔记本只取单元格源码（提交的笔记本本来就没有输出）。"""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        cells = json.loads(text).get("cells", [])
        text = "\n".join("".join(c.get("source", "")) if isinstance(c.get("source"), list)
                         else c.get("source", "") for c in cells)
    return text


def course_text_files(root: Path = REPO_ROOT) -> list[Path]:
    """仓库里要扫描的文本文件（跳过 .git、.venv、outputs、data 等）。"""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        found += [Path(folder) / name for name in sorted(files) if Path(name).suffix in SCAN_SUFFIXES]
    # data/ 整体被跳过（里面是下载和生成的数据），但它的说明文件要扫描
    found += sorted((root / "data").glob("*.md"))
    return found


def course_characters(root: Path = REPO_ROOT) -> set[str]:
    """课程文字里出现的全部非 ASCII、可见字符，加上 fruit30 的类别名。"""
    chars = set(FRUIT30_CLASSES)
    for path in course_text_files(root):
        chars |= set(_file_text(path))
    return {c for c in chars if ord(c) > 0x7E and c.isprintable() and not c.isspace()}


def wanted_characters(course: set[str]) -> set[str]:
    """子集要包含的字符：固定区间 + GB2312 + 课程文字 course。"""
    chars = {chr(code) for low, high in BASE_RANGES for code in range(low, high + 1)}
    return chars | gb2312_characters() | course


def _read_ar_member(deb: bytes, prefix: str) -> bytes:
    """从 .deb（ar 归档）里取出名字以 prefix 开头的成员。"""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("这不是 .deb 文件（ar 归档）。")
    offset = 8
    while offset + 60 <= len(deb):
        header = deb[offset:offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if name.startswith(prefix):
            return deb[offset + 60:offset + 60 + size]
        offset += 60 + size + size % 2  # 成员按 2 字节对齐
    raise ValueError(f".deb 里没有 {prefix}*。")


def _extract_from_tar(data: bytes) -> bytes:
    """从 tar（.tar.gz / .tar.xz）里取出 wqy-microhei.ttc。"""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(SOURCE_MEMBER):
                return tar.extractfile(member).read()
    raise ValueError(f"压缩包里没有 {SOURCE_MEMBER}。")


def fetch_source_deb() -> Path:
    """返回缓存的 Debian 软件包；没有就下载并校验 SHA-256。"""
    target = CACHE_DIR / SOURCE_DEB
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == SOURCE_SHA256:
        return target
    print(f"下载源字体：{SOURCE_URL}")
    with urllib.request.urlopen(SOURCE_URL, timeout=60) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"下载的文件校验失败（SHA-256 {digest}）。换个网络重试，或用 --source 指定本地文件。")
    CACHE_DIR.mkdir(exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)  # 写完再改名，不留下半个文件
    return target


def load_source_font(path: Path) -> TTFont:
    """打开源字体：.ttc / .ttf 直接读；.deb / .tar.gz / .tar.xz 先取出里面的 .ttc。"""
    data = Path(path).read_bytes()
    name = Path(path).name.lower()
    if name.endswith(".deb"):
        data = _extract_from_tar(lzma.decompress(_read_ar_member(data, "data.tar")))
    elif ".tar" in name or name.endswith(".tgz"):
        data = _extract_from_tar(data)
    font_number = 0 if data[:4] == b"ttcf" else -1  # 集合文件取 0 号字形（Micro Hei）
    return TTFont(io.BytesIO(data), fontNumber=font_number, recalcTimestamp=False)


def rename_font(font: TTFont) -> None:
    """改字体名，并在名字表里注明这是修改过的子集（Apache-2.0 要求注明修改）。"""
    version = font["name"].getDebugName(5) or "Version 0.2.0-beta"
    names = {
        1: FAMILY, 3: f"{FAMILY}; {version}", 4: FAMILY, 6: POSTSCRIPT_NAME,
        10: "Subset of WenQuanYi Micro Hei 0.2.0-beta (Apache-2.0), modified by the course "
            "'迁移学习图像分类实战': glyphs limited to GB2312 plus the course's characters, renamed. "
            "Rebuild: python fonts/build_font.py",
    }
    table = font["name"]
    table.names = [n for n in table.names if n.nameID not in names and n.nameID not in (16, 17, 18)]
    for name_id, text in names.items():
        table.setName(text, name_id, 3, 1, 0x409)  # Windows、Unicode、英语


def build_subset(source: TTFont, chars: set[str]) -> tuple[TTFont, set[str]]:
    """从源字体取出 chars 里源字体有的字形。返回（子集字体，源字体也没有的字符）。"""
    available = source.getBestCmap()
    codes = {ord(c) for c in chars}
    options = subset.Options()
    options.name_IDs = ["*"]  # 保留版权、许可证等全部名字记录
    options.notdef_outline = True  # 缺字时画方框，而不是什么都不画
    options.drop_tables += ["FFTM"]  # FontForge 的时间戳表，没有用处
    options.recalc_timestamp = False  # 可复现：同样的输入得到同样的文件
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(codes & set(available)))
    subsetter.subset(source)
    rename_font(source)
    return source, {chr(c) for c in codes - set(available)}


def missing_from_font(font_path: Path, chars: set[str]) -> set[str]:
    """chars 里字体 font_path 没有的字符。"""
    with TTFont(font_path, lazy=True) as font:
        cmap = font.getBestCmap()
    return {c for c in chars if ord(c) not in cmap}


def _show(chars: set[str]) -> str:
    return "".join(sorted(chars))


def check(root: Path = REPO_ROOT, font_path: Path = OUTPUT) -> int:
    """只检查：列出现有字体缺少的汉字和中文标点。返回退出码。"""
    missing = {c for c in missing_from_font(font_path, course_characters(root)) if is_cjk(c)}
    if missing:
        print(f"字体缺少 {len(missing)} 个字：{_show(missing)}\n运行 python fonts/build_font.py 重新生成。")
        return 1
    print(f"字体覆盖了课程里出现的全部汉字和中文标点（{font_path.name}）。")
    return 0


def build(source_path: Path | None, root: Path = REPO_ROOT, output: Path = OUTPUT) -> int:
    """生成子集字体并写到 output。返回退出码：课程用到、源字体却没有的中文字符存在时为 1。"""
    course = course_characters(root)
    source = load_source_font(source_path or fetch_source_deb())
    font, absent = build_subset(source, wanted_characters(course))
    buffer = io.BytesIO()
    font.save(buffer)
    output.write_bytes(buffer.getvalue())
    count = len(font.getBestCmap())
    print(f"已写入 {output}（{count} 个字符，{output.stat().st_size / 1e6:.2f} MB）。")
    fatal = {c for c in absent & course if is_cjk(c)}
    others = absent & course - fatal
    if others:
        print(f"源字体没有这些非中文符号，绘图时由 DejaVu Sans 等后备字体显示：{_show(others)}")
    if fatal:
        print(f"[失败] 源字体没有这些中文字符，请在课程文字里换一种写法：{_show(fatal)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="重新生成课程自带的中文字体子集")
    parser.add_argument("--check", action="store_true", help="只检查现有字体是否覆盖课程文字，不写文件")
    parser.add_argument("--source", type=Path, help="本地源字体：.deb / .ttc / .ttf / .tar.gz（默认下载 Debian 软件包）")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        return check(args.root, args.output)
    return build(args.source, args.root, args.output)


if __name__ == "__main__":
    sys.exit(main())
