"""中文字体：让 matplotlib 和 seaborn 的图表正常显示中文（不再是一个个方框）。

matplotlib 自带的 DejaVu Sans 没有汉字。课程自带文泉驿微米黑的子集 ``fonts/WenQuanYiMicroHei-Subset.ttf``
（Apache-2.0，TrueType 轮廓，覆盖 GB2312 和课程用到的每个字），只在内存里注册（不复制进 matplotlib、不删缓存）。
电脑上有 SimHei（黑体），或者把 ``SimHei.ttf`` 放进了 ``fonts/``，就和原教程一样优先用它。导入本模块没有副作用。
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

from . import paths

__all__ = ["setup_chinese_font", "set_theme", "missing_glyphs", "render_with_font"]

COURSE_FONT_FILE = "WenQuanYiMicroHei-Subset.ttf"
SIMHEI = "SimHei"
REBUILD_COMMAND = ".venv/bin/python fonts/build_font.py"
UNICODE_MINUS = 0x2212  # 排版用的负号“−”，比连字符“-”长


def course_font_path() -> Path:
    """课程自带的中文字体文件（``fonts/WenQuanYiMicroHei-Subset.ttf``）。"""
    path = paths.FONTS_DIR / COURSE_FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"找不到课程自带的中文字体 {path}。它随仓库一起提供：用 git 重新取出 fonts/ 文件夹，"
            f"或在仓库根目录运行 {REBUILD_COMMAND} 重新生成。"
        )
    return path


@functools.lru_cache(maxsize=16)
def _cmap(path: str, mtime: float) -> frozenset[int]:
    """字体文件的字符表（cmap）里全部码位；mtime 参与缓存，字体重新生成后自动失效。"""
    from fontTools.ttLib import TTFont

    font_number = 0 if path.lower().endswith((".ttc", ".otc")) else -1  # 字体集合取第一个字形
    with TTFont(path, lazy=True, fontNumber=font_number) as font:
        return frozenset(font.getBestCmap())


def _codepoints(path: Path | str) -> frozenset[int]:
    return _cmap(str(path), os.path.getmtime(path))


def missing_glyphs(text: str, font_path: Path | str | None = None) -> set[str]:
    """text 里哪些字在字体 font_path（None：课程自带的中文字体）中没有字形（空白和控制字符不算）。
    返回缺字的集合；空集合表示这个字体能完整显示 text。"""
    codes = _codepoints(font_path or course_font_path())
    return {char for char in set(text) if char.isprintable() and not char.isspace() and ord(char) not in codes}


def find_simhei(font_list) -> Path | None:
    """找 SimHei：先看 fonts/ 里学员自己放的文件，再看 matplotlib 已知的系统字体。"""
    local = [paths.FONTS_DIR / name for name in ("SimHei.ttf", "simhei.ttf") if (paths.FONTS_DIR / name).is_file()]
    return next(iter(local + [Path(entry.fname) for entry in font_list if entry.name == SIMHEI]), None)


def _register(path: Path) -> str:
    """把字体文件注册到 matplotlib（只在内存里，重复调用不会重复注册），返回字体族名。"""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = {os.path.realpath(entry.fname) for entry in manager.ttflist}
    if os.path.realpath(path) not in known:
        manager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def setup_chinese_font() -> str:
    """注册中文字体并设为 matplotlib 的首选无衬线字体，返回使用的字体族名；可以重复调用，结果相同。

    - 有 SimHei 就用它（与原教程一致），否则用课程自带的文泉驿微米黑子集；课程字体总会注册并排在第二位，
      首选字体读不出来时 matplotlib 接着用它。只用 ``fontManager.addfont()`` 在内存里注册，不写安装目录、不删缓存。
    - ``pdf.fonttype`` / ``ps.fonttype`` 设为 42：导出 PDF 时嵌入 TrueType 字体，文字可以复制和搜索。
    - 首选字体没有负号“−”（U+2212，SimHei 没有）时把 ``axes.unicode_minus`` 设为 False，免得负数显示成方框。
    """
    import matplotlib as mpl
    from matplotlib import font_manager

    bundled = course_font_path()
    fallback = _register(bundled)
    primary = find_simhei(font_manager.fontManager.ttflist) or bundled
    family = _register(primary)
    first = list(dict.fromkeys([family, fallback]))
    rest = [name for name in mpl.rcParams["font.sans-serif"] if name not in first]
    mpl.rcParams.update({"font.family": ["sans-serif"], "font.sans-serif": first + rest, "pdf.fonttype": 42,
                         "ps.fonttype": 42, "axes.unicode_minus": UNICODE_MINUS in _codepoints(primary)})
    return family


def set_theme(**kwargs) -> str:
    """课程统一的绘图风格：``seaborn.set_theme(**kwargs)``（默认 ``style="whitegrid"``），再重新设置中文字体，
    返回中文字体族名。seaborn 会把字体重置成它自己的列表（没有中文字体），所以课程里一律调用本函数。"""
    import seaborn as sns

    sns.set_theme(**{"style": "whitegrid", **kwargs})
    return setup_chinese_font()


def render_with_font(text: str, family: str = "DejaVu Sans", fontsize: int = 20):
    """只用字体 family 把 text 画成一张图片，同时收集 matplotlib 发出的警告（演示缺字用），返回 (PIL 图片, 警告列表)。
    图在函数内部画完、转成 PNG 再关闭，警告不会漏到笔记本的输出里；不修改全局设置。"""
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(6, 1))
    fig.text(0.02, 0.5, text, fontsize=fontsize, family=family, va="center")
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # 之前出现过的警告也要记下
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)
    image = Image.open(buffer)
    image.load()
    # 裁边时会画两遍，同一条警告出现两次：去重后每个缺字对应一条
    return image, list(dict.fromkeys(str(item.message) for item in caught))
