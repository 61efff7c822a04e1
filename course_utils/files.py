"""图片文件：哪些名字算图片、哪些是系统留下的垃圾，以及怎样把任何一张图读成 RGB。

这是一个不依赖包内其他模块的“叶子”模块：下载解压（download）、数据集（data）和健康检查（health）都从这里取这些规则，
所以它们对“什么是图片、什么该跳过”的看法永远一致。
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

__all__: list[str] = []  # 只供包内使用

# torchvision 的 ImageFolder 认的扩展名（torchvision.datasets.folder.IMG_EXTENSIONS）；抄在这里，
# 只浏览数据集时就不必为了这一行导入 PyTorch。tests/test_data_loaders.py 检查两者一致。
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# 系统和编辑器留下的垃圾：解压时跳过，列类别和图片时也跳过
JUNK_NAMES = {"__MACOSX", ".DS_Store", ".ipynb_checkpoints", "Thumbs.db", "desktop.ini"}
SPLITS = ("train", "val")  # 数据集根目录下的两个划分：train/（训练 + 验证）和 val/（测试集）


def is_junk_name(name: str) -> bool:
    """隐藏或系统生成的文件名/目录名（.ipynb_checkpoints、__MACOSX、.DS_Store、以 . 开头）。"""
    return name in JUNK_NAMES or name.startswith(".")


def has_image_extension(path) -> bool:
    """文件名是常见的图片扩展名（不区分大小写）。"""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_rgb_image(path) -> Image.Image:
    """读一张图片（或已打开的 PIL 图片，原图不变）并转成 RGB：按 EXIF 方向摆正，透明部分垫白底，灰度、CMYK、
    调色板图片都转成三通道。"""
    if isinstance(path, Image.Image):
        return _to_rgb(path.copy())
    if not Path(path).is_file():
        raise FileNotFoundError(f"找不到图片 {path}。检查路径是否写对（相对路径以笔记本所在目录为起点）。")
    with Image.open(path) as image:
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    return image.convert("RGB")


def list_classes(folder: Path) -> list[str]:
    """folder 下的类别子目录名（跳过隐藏和垃圾目录），按名字排序。"""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not is_junk_name(p.name))


def list_image_files(root) -> list[tuple[str, str, Path]]:
    """列出 ``root/<划分>/<类名>/`` 下的全部图片：[(划分, 类名, 路径)]，跳过隐藏和垃圾文件。"""
    root = Path(root)
    found = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for name in list_classes(root / split):
            for dirpath, dirnames, filenames in os.walk(root / split / name):
                dirnames[:] = sorted(d for d in dirnames if not is_junk_name(d))
                found += [(split, name, Path(dirpath) / f) for f in sorted(filenames)
                          if not is_junk_name(f) and has_image_extension(f)]
    return found
