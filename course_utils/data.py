"""数据集：从“我有一个下载地址”到“我有一批批张量”。

- 注册表 ``DATASETS``：fruit30 的下载地址（含镜像）、大小、类名；两个课程现场生成的数据集 demo 和 smoke；
- ``prepare_dataset(settings)``：按档位准备好数据，返回含 ``train/<类名>/`` 与 ``val/<类名>/`` 的根目录；
- ``make_datasets`` / ``make_loaders``：训练集、验证集（从 train/ 分层划出）、测试集（val/ 目录）及其 DataLoader；
- ``directory_tree``、``class_counts``、``image_table``、``sample_images``：浏览数据集；
- ``save_class_maps``：另存一份类别与序号的对应关系（检查点里自带类名；这份供外部程序或原教程的代码使用）。

数据健康检查在 ``health.py``，下载与解压在 ``download.py``，演示数据集的画法在 ``demo.py``，
课程版 ImageFolder 在 ``imagefolder.py``；它们的公开函数各自在本模块的 ``__all__`` 里声明，
笔记本里一律写 ``cu.函数名``。
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from .demo import generate_demo_dataset
from .download import DownloadError, UnsafeArchiveError, download_first, extract_zip, is_junk_name
from .paths import data_dir, display_path, output_dir

__all__ = [
    "DATASETS", "DatasetSource", "GeneratedDataset", "DatasetUnavailable", "DatasetError",
    "prepare_dataset", "dataset_status", "dataset_sources", "dataset_classes", "image_folder", "load_rgb_image", "open_rgb_image",
    "make_datasets", "DataSplits", "make_loaders", "Loaders", "safe_num_workers",
    "save_class_maps", "load_class_names", "directory_tree", "class_counts", "image_table",
    "sample_images", "list_image_files", "dataset_info", "time_loader", "sample_paths", "image_extensions",
    "has_image_extension",
]

SPLITS = ("train", "val")


class DatasetUnavailable(RuntimeError):
    """拿不到数据集（下载失败、本地文件不存在或内容不对）。消息里写明试过什么、可以怎么办。"""


class DatasetError(ValueError):
    """数据集的目录结构或内容有问题（类别不一致、某类没有图片……）。"""


# ---------------------------------------------------------------- 注册表


@dataclass(frozen=True)
class DatasetSource:
    """一个要下载的数据集：地址（第一个是主地址，其余是镜像）、压缩包、大小、校验和、类名。"""

    name: str
    description: str
    urls: tuple[str, ...]
    archive_name: str  # 下载后保存在 data/ 下的文件名
    folder_name: str  # 解压后的目录名（data/ 下）
    approx_bytes: int  # 大致大小，只用于提示
    sha256: str | None  # 已知才校验；不知道时靠 zip 完整性（CRC）和目录结构检查
    classes: tuple[str, ...]
    train_images: int
    test_images: int
    url_env: str  # 环境变量：额外的下载地址（镜像），多个用空格或逗号分隔
    archive_env: str  # 环境变量：本地压缩包路径


@dataclass(frozen=True)
class GeneratedDataset:
    """课程现场生成的数据集（不需要下载）。folder_name 带版本号：画法变了就换目录。"""

    name: str
    description: str
    folder_name: str
    classes: tuple[str, ...]
    train_per_class: int
    test_per_class: int
    image_size: int
    seed: int  # 生成用的固定种子（与训练的 settings.seed 无关，保证人人拿到同一份数据）


FRUIT30_CLASSES = (
    "哈密瓜", "圣女果", "山竹", "杨梅", "柚子", "柠檬", "桂圆", "梨", "椰子", "榴莲",
    "火龙果", "猕猴桃", "石榴", "砂糖橘", "胡萝卜", "脐橙", "芒果", "苦瓜", "苹果-红", "苹果-青",
    "草莓", "荔枝", "菠萝", "葡萄-白", "葡萄-红", "西瓜", "西红柿", "车厘子", "香蕉", "黄瓜",
)

DATASETS = {
    "fruit30": DatasetSource(
        name="fruit30",
        description="30 类水果和蔬菜的照片（原教程的数据集）",
        urls=(
            "https://zihao-openmmlab.obs.cn-east-3.myhuaweicloud.com/"
            "20220716-mmclassification/dataset/fruit30/fruit30_split.zip",
        ),
        archive_name="fruit30_split.zip",
        folder_name="fruit30_split",
        approx_bytes=216 * 1024**2,
        sha256=None,
        classes=FRUIT30_CLASSES,
        train_images=4376,
        test_images=1078,
        url_env="COURSE_FRUIT30_URL",
        archive_env="COURSE_FRUIT30_ARCHIVE",
    ),
    "demo": GeneratedDataset(
        name="demo",
        description="课程自带的演示数据集：程序画出的 12 类水果图片，离线可用",
        folder_name="demo-v1",
        classes=("苹果-红", "苹果-青", "西红柿", "柠檬", "脐橙", "芒果", "香蕉", "西瓜", "草莓", "葡萄-红", "猕猴桃", "菠萝"),
        train_per_class=50,
        test_per_class=20,
        image_size=160,
        seed=20220716,
    ),
    "smoke": GeneratedDataset(
        name="smoke",
        description="极小的生成数据集，只用于测试与 CI",
        folder_name="smoke-v1",
        classes=("苹果-红", "苹果-青", "香蕉", "柠檬"),
        train_per_class=12,
        test_per_class=4,
        image_size=48,
        seed=20220716,
    ),
}


def dataset_sources(name: str):
    """注册表里的一项；名字写错时给出中文提示。"""
    if name not in DATASETS:
        if any(mark in str(name) for mark in ("/", "\\", "~")) or str(name).startswith("."):
            raise DatasetError(
                f"找不到数据集目录 {name}。检查路径（以及环境变量 COURSE_DATASET）；"
                "目录里应有 train/<类名>/ 和 val/<类名>/ 两层子目录。"
            )
        raise DatasetError(f"没有名为 {name!r} 的数据集。可选：{'、'.join(DATASETS)}，或者一个数据集目录的路径。")
    return DATASETS[name]


def dataset_classes(name: str) -> list[str]:
    """数据集的类名（按名字排序）：注册表里的数据集直接给出，自带数据集的目录读 ``train/`` 下的子目录。

    不下载、不生成任何东西，所以笔记本 01 不需要数据就能知道分类头要输出几类。
    """
    folder = Path(str(name)).expanduser()
    if name not in DATASETS and folder.is_dir():
        return list_classes(_check_layout(folder, expected=None) / "train")
    return sorted(dataset_sources(name).classes)


# ---------------------------------------------------------------- 准备数据集


def prepare_dataset(settings, *, url: str | None = None, archive=None) -> Path:
    """按 settings.dataset 准备数据集，返回根目录（内含 ``train/<类名>/`` 和 ``val/<类名>/``）。

    - "demo" / "smoke"：在 ``cu.data_dir()`` 下现场生成（第一次几秒到几十秒，之后直接复用）；
    - "fruit30"：依次找已解压的 ``data/fruit30_split/``、本地压缩包、下载（主地址与镜像）；
    - 一个已有目录的路径：直接使用（自带数据集）。

    参数：
        url：额外的下载地址（优先于注册表）；也可以写在 settings.extra["dataset_url"]
            或环境变量 COURSE_FRUIT30_URL 里。
        archive：本地压缩包路径；也可以写在 settings.extra["archive"] 或环境变量 COURSE_FRUIT30_ARCHIVE 里。
    拿不到数据时抛出 DatasetUnavailable，消息里写明试过的地址和三种办法（镜像、本地文件、demo 档位）。
    """
    name = settings.dataset
    if name not in DATASETS and Path(str(name)).expanduser().is_dir():
        return _check_layout(Path(str(name)).expanduser(), expected=None)
    source = dataset_sources(name)
    if isinstance(source, GeneratedDataset):
        return generate_demo_dataset(
            data_dir() / source.folder_name, classes=source.classes, seed=source.seed,
            train_per_class=source.train_per_class, test_per_class=source.test_per_class,
            image_size=source.image_size,
        )
    url = url or settings.extra.get("dataset_url")
    archive = archive or settings.extra.get("archive") or os.environ.get(source.archive_env) or None
    target = data_dir() / source.folder_name
    attempts: list[str] = []
    try:
        if _looks_complete(target):
            return _check_layout(target, source.classes)
        local = _archive_candidates(source, archive, attempts)
        if local:  # 有本地压缩包就不联网
            return _extract_checked(local[0], target, source)
        if attempts:  # 明确给出的压缩包不存在：先让你改正路径，而不是悄悄去下载 216 MB
            raise DatasetError(attempts.pop())
        downloaded, used = download_first(_download_urls(source, url), data_dir() / source.archive_name,
                                          sha256=source.sha256, desc=f"下载 {source.archive_name}")
        return _extract_checked(downloaded, target, source, delete_bad=True, where=used)
    except DownloadError as exc:
        attempts += exc.failures or [str(exc)]
    except (DatasetError, UnsafeArchiveError, FileExistsError) as exc:
        attempts.append(str(exc))
    # from None：学习者只看到这一条中文说明，而不是一长串内部异常
    raise DatasetUnavailable(_unavailable_message(source, attempts)) from None


def _archive_candidates(source: DatasetSource, archive, attempts: list[str]) -> list[Path]:
    """可用的本地压缩包：显式给出的（不存在要说明），以及 data/ 下的默认文件名。"""
    found = []
    if archive:
        path = Path(archive).expanduser()
        if path.is_file():
            found.append(path)
        else:
            attempts.append(f"本地压缩包 {display_path(path)} 不存在。")
    default = data_dir() / source.archive_name
    if default.is_file() and default not in found:
        found.append(default)
    return found


def _download_urls(source: DatasetSource, url: str | None) -> list[str]:
    """下载地址的顺序：参数给的、环境变量里的镜像、注册表里的主地址与镜像（去重）。"""
    extra = re.split(r"[\s,;]+", os.environ.get(source.url_env, "").strip())
    urls = [u for u in [url, *extra, *source.urls] if u]
    return list(dict.fromkeys(urls))


def _extract_checked(archive: Path, target: Path, source: DatasetSource, *, delete_bad=False, where=None) -> Path:
    """解压并检查目录结构；下载来的压缩包坏了就删掉，免得下次还用它。"""
    try:
        root = extract_zip(archive, target)
        return _check_layout(root, source.classes)
    except (DownloadError, DatasetError) as exc:
        if delete_bad:
            archive.unlink(missing_ok=True)
        raise DatasetError(f"{where or display_path(archive)} 的内容不对：{exc}") from None


def _looks_complete(root: Path) -> bool:
    return all((root / split).is_dir() for split in SPLITS)


def list_classes(folder: Path) -> list[str]:
    """folder 下的类别子目录名（跳过隐藏和垃圾目录），按名字排序。"""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_junk_name(p.name))


def _check_layout(root: Path, expected) -> Path:
    """train/ 和 val/ 都在，类别相同；expected 给出时还要与注册表的类名一致。"""
    if not _looks_complete(root):
        raise DatasetError(f"{display_path(root)} 里应有 train/ 和 val/ 两个子目录（fruit30 的结构）。")
    train, val = list_classes(root / "train"), list_classes(root / "val")
    _require_same_classes(train, val, root)
    if expected is not None and set(train) != set(expected):
        missing, extra = sorted(set(expected) - set(train)), sorted(set(train) - set(expected))
        raise DatasetError(
            f"{display_path(root)} 的类别与预期的 {len(expected)} 类不一致：缺少 {missing or '无'}，多出 {extra or '无'}。"
            "删除这个目录后重新运行，让课程重新解压或下载。"
        )
    return root


def _require_same_classes(train: list[str], val: list[str], root) -> None:
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DatasetError(
            f"{display_path(root)} 的 train/ 和 val/ 类别不一致：只在 train/ 里有 {only_train or '无'}，"
            f"只在 val/ 里有 {only_val or '无'}。两边的类别子目录必须完全相同，否则类别序号会对不上。"
        )


def _unavailable_message(source: DatasetSource, attempts: list[str]) -> str:
    data = data_dir()
    tried = "\n".join(f"  - {text}" for text in attempts)
    return (
        f"无法准备 {source.name} 数据集（约 {source.approx_bytes // 1024**2} MB）。\n"
        f"试过的办法：\n{tried}\n"
        "你可以：\n"
        f"  1. 换一个镜像地址：设置环境变量 {source.url_env}=<地址>（多个地址用空格分隔），"
        "或在笔记本 02 的 parameters 单元格里设置 DATASET_URL = \"<地址>\"；\n"
        f"  2. 用本地文件：在能上网的电脑上下载 {source.archive_name}，放到 {display_path(data / source.archive_name)}"
        f"（或把解压好的目录放到 {display_path(data / source.folder_name)}），"
        f"也可以设置环境变量 {source.archive_env}=<压缩包路径>，或在 parameters 单元格里设置 ARCHIVE = \"<路径>\"；\n"
        "  3. 先用离线的演示数据学习：把 parameters 单元格里的 PROFILE 改成 \"demo\""
        "（或设置环境变量 COURSE_PROFILE=demo）。"
    )


def dataset_info(name: str):
    """注册表里一个数据集的说明卡片（表格）：来源、大小、类别、图片数、怎样校验、存放位置。"""
    import pandas as pd

    if name not in DATASETS and Path(str(name)).expanduser().is_dir():
        return pd.DataFrame({"内容": {"说明": "你自己的数据集目录", "存放位置": display_path(Path(str(name)).expanduser())}})
    source = dataset_sources(name)
    shown = "、".join(source.classes[:8]) + (f" 等 {len(source.classes)} 类" if len(source.classes) > 8 else "")
    if isinstance(source, GeneratedDataset):
        rows = {
            "说明": source.description,
            "来源": "课程现场生成（course_utils/demo.py），不需要联网",
            "类别": shown,
            "图片数": f"train/ 每类 {source.train_per_class} 张，val/ 每类 {source.test_per_class} 张",
            "图片边长": f"{source.image_size} 像素",
            "校验": f"同一个种子（{source.seed}）逐字节相同；目录里的标记文件记录生成参数",
            "存放位置": display_path(data_dir() / source.folder_name),
        }
    else:
        rows = {
            "说明": source.description,
            "来源": "\n".join(source.urls) + f"（另可用环境变量 {source.url_env} 指定镜像）",
            "大小": f"约 {source.approx_bytes // 1024**2} MB（{source.archive_name}）",
            "类别": shown,
            "图片数": f"train/ {source.train_images} 张，val/ 约 {source.test_images} 张",
            "校验": f"SHA-256 {source.sha256}" if source.sha256 else "没有公开的校验和：检查下载是否完整、zip 的 CRC、目录结构与类名",
            "存放位置": display_path(data_dir() / source.folder_name),
        }
    return pd.DataFrame({"内容": rows}).rename_axis(source.name)


def dataset_status(settings) -> str:
    """一句话说明当前档位的数据集是否就绪（供环境检查 ``doctor`` 使用），不下载、不生成任何东西。"""
    name = settings.dataset
    if name not in DATASETS:
        ok = Path(str(name)).expanduser().is_dir()
        return f"自带数据集 {name}：{'目录存在' if ok else '目录不存在，检查路径'}。"
    source = DATASETS[name]
    folder = data_dir() / source.folder_name
    if isinstance(source, GeneratedDataset):
        if folder.is_dir():
            return f"{name}：已生成，在 {display_path(folder)}。"
        return f"{name}：尚未生成；第一次用到时自动生成（无需联网），保存在 {display_path(folder)}。"
    if _looks_complete(folder):
        return f"{name}：已就绪，在 {display_path(folder)}。"
    archive = data_dir() / source.archive_name
    if archive.is_file():
        return f"{name}：压缩包 {display_path(archive)} 已在本地，运行笔记本 02 时解压。"
    return (f"{name}：尚未下载（约 {source.approx_bytes // 1024**2} MB）；运行笔记本 02 时下载到 {display_path(folder)}，"
            f"离线时可把 {source.archive_name} 放到 {display_path(data_dir())}，或改用 demo 档位。")


# ---------------------------------------------------------------- 读图片、列文件


def image_extensions() -> tuple[str, ...]:
    """课程当作图片的扩展名：就是 torchvision 的 ImageFolder 认的那些（.jpg、.png、.webp……）。

    在函数里才导入 torchvision：只浏览数据集（笔记本 02）时也不必在导入本模块时就加载 PyTorch。
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def has_image_extension(path) -> bool:
    """文件名是常见的图片扩展名（见 ``image_extensions()``，不区分大小写）。"""
    return str(path).lower().endswith(image_extensions())


def load_rgb_image(path) -> Image.Image:
    """读一张图片并转成 RGB：按 EXIF 方向摆正，透明部分垫白底，灰度、CMYK、调色板图片都转成三通道。"""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image.alpha_composite(rgba)
        return image.convert("RGB")


def open_rgb_image(image):
    """接受图片路径或 PIL 图片，按数据集读图的同一套规则（``load_rgb_image``）转成 RGB。"""
    import io

    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise FileNotFoundError(f"找不到图片 {image}。检查路径是否写对（相对路径以笔记本所在目录为起点）。")
        return load_rgb_image(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # 无损地交给同一个读图函数：透明背景、灰度等的处理与测试集完全相同
    buffer.seek(0)
    return load_rgb_image(buffer)


def list_image_files(root) -> list[tuple[str, str, Path]]:
    """列出 ``root/<划分>/<类名>/`` 下的全部图片文件：[(划分, 类名, 路径)]，跳过隐藏和垃圾文件。"""
    root = Path(root)
    found = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir() and not is_junk_name(p.name)):
            for dirpath, dirnames, filenames in os.walk(class_dir):
                dirnames[:] = sorted(d for d in dirnames if not is_junk_name(d))
                found += [(split, class_dir.name, Path(dirpath) / f) for f in sorted(filenames)
                          if not is_junk_name(f) and has_image_extension(f)]
    return found


def class_counts(root):
    """每类图片数：行是类名，列是 train、val（缺的类记 0）。"""
    import pandas as pd

    root = Path(root)
    counts = {split: {} for split in SPLITS}
    for split in SPLITS:
        for class_dir in (list_classes(root / split) if (root / split).is_dir() else []):
            counts[split][class_dir] = 0
    for split, name, _ in list_image_files(root):
        counts[split][name] += 1
    table = pd.DataFrame(counts).fillna(0).astype(int)
    table.index.name = "类别"
    return table


def image_table(root):
    """每张图片一行：划分、类别、文件（相对路径）、宽、高、颜色模式、宽高比。只读文件头，很快。"""
    import pandas as pd

    root = Path(root)
    rows = []
    for split, name, path in list_image_files(root):
        row = {"划分": split, "类别": name, "文件": path.relative_to(root).as_posix()}
        try:
            with Image.open(path) as image:
                row.update(宽=image.width, 高=image.height, 模式=image.mode)
        except (OSError, SyntaxError, ValueError):
            row.update(宽=None, 高=None, 模式="无法读取")
        rows.append(row)
    table = pd.DataFrame(rows, columns=["划分", "类别", "文件", "宽", "高", "模式"])
    table[["宽", "高"]] = table[["宽", "高"]].astype("Int64")  # 读不出的图片没有尺寸，其余是整数
    table["宽高比"] = (table["宽"] / table["高"]).astype("float64").round(3)
    return table


def sample_images(root, split: str = "train", per_class: int = 1, seed: int = 0, classes=None):
    """每类随机取 per_class 张图片，返回 [(路径, 类名)]；同一个 seed 取到同样的图。"""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Path]] = {}
    for s, name, path in list_image_files(root):
        if s == split and (classes is None or name in classes):
            by_class.setdefault(name, []).append(path)
    picked = []
    for name, files in by_class.items():
        for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False)):
            picked.append((files[i], name))
    return picked


class DirectoryTree:
    """目录树的文字（像 ``tree -L 2``）；在笔记本里直接显示，不带引号。"""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def directory_tree(root, max_depth: int = 2, max_entries: int = 6) -> DirectoryTree:
    """像 ``tree -L 2`` 一样显示目录结构；每层最多列 max_entries 项，其余折叠成一行；不列隐藏文件。"""
    root = Path(root)
    lines = [f"{root.name}/"]

    def walk(folder: Path, prefix: str, depth: int) -> None:
        entries = sorted((p for p in folder.iterdir() if not is_junk_name(p.name)),  # 和 tree 一样不列隐藏文件
                         key=lambda p: (not p.is_dir(), p.name))
        shown = entries[:max_entries]
        for i, entry in enumerate(shown):
            last = i == len(shown) - 1 and len(entries) <= max_entries
            branch = "└── " if last else "├── "
            if entry.is_dir():
                inner = [p for p in entry.iterdir() if not is_junk_name(p.name)]
                note = f"  （{len(inner)} 项）" if depth == max_depth else ""
                lines.append(f"{prefix}{branch}{entry.name}/{note}")
                if depth < max_depth:
                    walk(entry, prefix + ("    " if last else "│   "), depth + 1)
            else:
                lines.append(f"{prefix}{branch}{entry.name}")
        if len(entries) > max_entries:
            lines.append(f"{prefix}└── …… 还有 {len(entries) - max_entries} 项")

    walk(root, "", 1)
    return DirectoryTree("\n".join(lines))


# ---------------------------------------------------------------- 数据集与 DataLoader


def image_folder(root, transform=None):
    """``root/<类名>/<图片>`` 结构的数据集（课程版 ImageFolder：跳过隐藏目录，图片一律转 RGB）。"""
    from .imagefolder import CourseImageFolder

    return CourseImageFolder(root, transform=transform)


@dataclass(repr=False)
class DataSplits:
    """训练集、验证集、测试集，以及类名和类别序号。"""

    train_ds: object  # train/ 去掉验证部分，训练预处理（随机增广）
    val_ds: object  # 从 train/ 分层划出，评估预处理
    test_ds: object  # 数据集的 val/ 目录，评估预处理；.samples 按顺序列出 (路径, 类别序号)
    class_names: list[str]
    class_to_idx: dict[str, int]
    root: Path | None = None
    val_fraction: float = 0.0

    def summary(self):
        """三个划分各有多少张图、来自哪里、用什么预处理、做什么用。"""
        import pandas as pd

        rows = [
            ("训练集 train_ds", "train/ 去掉验证部分", len(self.train_ds), "训练预处理（随机增广）", "更新模型参数"),
            ("验证集 val_ds", f"train/ 中分层抽取 {self.val_fraction:.0%}", len(self.val_ds), "评估预处理",
             "每轮评估，挑选最好的模型"),
            ("测试集 test_ds", "val/ 目录", len(self.test_ds), "评估预处理", "最后只评一次，报告成绩"),
        ]
        return pd.DataFrame(rows, columns=["划分", "来源", "图片数", "预处理", "用途"]).set_index("划分")

    def counts(self):
        """每类在三个划分里各有多少张。"""
        import pandas as pd

        table = {}
        for label, ds in (("训练", self.train_ds), ("验证", self.val_ds), ("测试", self.test_ds)):
            series = pd.Series([self.class_names[t] for t in ds.targets]).value_counts()
            table[label] = series.reindex(self.class_names, fill_value=0)
        frame = pd.DataFrame(table)
        frame.index.name = "类别"
        return frame

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def __repr__(self) -> str:
        return f"DataSplits（{len(self.class_names)} 类）\n{self.summary().to_string()}"


def _per_class_subset(targets: list[int], limit: int | None, seed: int) -> list[int]:
    """每类最多取 limit 张（固定种子随机挑选）；limit 为 None 时取全部。"""
    import numpy as np

    if limit is None:
        return list(range(len(targets)))
    rng = np.random.default_rng(seed)
    targets_arr = np.asarray(targets)
    chosen = []
    for label in np.unique(targets_arr):
        members = np.flatnonzero(targets_arr == label)
        chosen += members[rng.permutation(len(members))[:limit]].tolist()
    return sorted(chosen)


def _stratified_split(indices: list[int], targets: list[int], fraction: float, seed: int):
    """把 indices 分成 (训练, 验证) 两部分，每类按同样比例抽取（sklearn 的分层抽样）。"""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise DatasetError(f"val_fraction 应在 0 和 1 之间，收到的是 {fraction}。")
    labels = [targets[i] for i in indices]
    try:
        train_idx, val_idx = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as exc:
        raise DatasetError(
            f"无法分层划分验证集（{exc}）。每类至少要有 2 张训练图片，且验证集至少能分到每类一张；"
            "检查 train/ 里图片很少的类别，或调整 val_fraction。"
        ) from None
    return sorted(train_idx), sorted(val_idx)


def make_datasets(settings, root) -> DataSplits:
    """按设置构建训练集、验证集和测试集。

    - 训练集与验证集都来自 ``root/train``：按类别分层、用 settings.seed 固定地划出 settings.val_fraction 作验证集；
      settings.per_class_limit 不为 None 时（quick 档），先每类固定地取这么多张；
    - 测试集是 ``root/val`` 目录（全部图片），只在最后评估一次；
    - 训练集用训练预处理（随机增广），验证集和测试集用评估预处理。
    """
    from .imagefolder import SplitSubset
    from .transforms import build_transforms

    root = Path(root)
    train_tf, eval_tf = build_transforms(settings.image_size, settings.resize_size)
    train_folder = image_folder(root / "train", transform=train_tf)
    test_ds = image_folder(root / "val", transform=eval_tf)
    _require_same_classes(train_folder.classes, test_ds.classes, root)
    empty = [name for i, name in enumerate(train_folder.classes) if i not in set(train_folder.targets)]
    empty += [name for i, name in enumerate(test_ds.classes) if i not in set(test_ds.targets)]
    if empty:
        raise DatasetError(f"这些类别没有任何图片：{'、'.join(sorted(set(empty)))}。可以用 cu.check_dataset(root) 查看详情。")
    chosen = _per_class_subset(train_folder.targets, settings.per_class_limit, settings.seed)
    train_idx, val_idx = _stratified_split(chosen, train_folder.targets, settings.val_fraction, settings.seed)
    return DataSplits(
        train_ds=SplitSubset(train_folder, train_idx),
        val_ds=SplitSubset(train_folder.with_transform(eval_tf), val_idx),
        test_ds=test_ds,
        class_names=list(train_folder.classes),
        class_to_idx=dict(train_folder.class_to_idx),
        root=root,
        val_fraction=settings.val_fraction,
    )


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # 容器或任务调度限制后真正能用的核数
    return os.cpu_count() or 1


def safe_num_workers(max_workers: int = 4) -> int:
    """DataLoader 安全的进程数。

    Windows 上为 0；在 Jupyter 里、且多进程启动方式不是 fork（macOS 默认 spawn）时也为 0，
    否则子进程可能卡住或报错；其余情况（Linux）取 min(max_workers, 核数 − 1)，至少留一个核给训练。
    """
    if sys.platform == "win32":
        return 0
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if "ipykernel" in sys.modules and method != "fork":
        return 0
    return max(0, min(max_workers, _cpu_count() - 1))


@dataclass
class Loaders:
    """三个 DataLoader：train（打乱）、val、test（不打乱）。"""

    train: object
    val: object
    test: object
    num_workers: int = 0
    pin_memory: bool = False
    info: dict = field(default_factory=dict)


def make_loaders(splits: DataSplits, settings, device) -> Loaders:
    """为三个划分各建一个 DataLoader。

    - 批量大小取 settings.batch_size；训练集每轮打乱，顺序由 settings.seed 决定（torch.Generator）；
    - 进程数取 settings.num_workers，为 None 时用 ``safe_num_workers()``，且不超过 CPU 核数；
    - 只有在 CUDA 上才锁页内存（pin_memory）；有子进程时让它们常驻（persistent_workers），每轮不必重启。
    """
    import torch
    from torch.utils.data import DataLoader

    workers = settings.num_workers if settings.num_workers is not None else safe_num_workers()
    workers = max(0, min(int(workers), _cpu_count()))
    pin = torch.device(device).type == "cuda"
    common = dict(batch_size=settings.batch_size, num_workers=workers, pin_memory=pin,
                  persistent_workers=workers > 0)
    generator = torch.Generator().manual_seed(settings.seed)
    return Loaders(
        train=DataLoader(splits.train_ds, shuffle=True, generator=generator, **common),
        val=DataLoader(splits.val_ds, shuffle=False, **common),
        test=DataLoader(splits.test_ds, shuffle=False, **common),
        num_workers=workers,
        pin_memory=pin,
        info={"batch_size": settings.batch_size, "num_workers": workers, "pin_memory": pin},
    )


def time_loader(loader, max_batches: int = 5):
    """逐个取出前 max_batches 个批次，记录每个批次用了多少秒、每秒多少张图。

    第一个批次包含创建迭代器的开销：新建的 DataLoader 若有加载进程（num_workers > 0），要等进程启动，
    这一批通常明显慢一些；进程已经在运行（persistent_workers 且之前取过批次）或 num_workers 为 0 时，
    各批次的时间差不多。想看“冷启动”，就传入一个还没取过批次的新 DataLoader。
    """
    import time

    import pandas as pd

    rows, start = [], time.perf_counter()
    for k, (images, _) in enumerate(loader):
        now = time.perf_counter()
        rows.append({"批次": k + 1, "图片数": len(images), "秒": round(now - start, 4),
                     "每秒图片数": round(len(images) / max(now - start, 1e-9), 1)})
        if k + 1 >= max_batches:
            break
        start = time.perf_counter()
    return pd.DataFrame(rows).set_index("批次")


# ---------------------------------------------------------------- 类别映射


def save_class_maps(class_names, profile: str) -> Path:
    """保存类别映射到 ``outputs/<档位>/metrics/``，返回 class_to_idx.json 的路径。

    同时写出与原教程兼容的 ``idx_to_labels.npy`` 和 ``labels_to_idx.npy``
    （NumPy 保存的字典，读取时需要 ``np.load(..., allow_pickle=True).item()``；课程自己只读 JSON）。
    """
    import numpy as np

    out = output_dir(profile, "metrics")
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    path = out / "class_to_idx.json"
    path.write_text(json.dumps(class_to_idx, ensure_ascii=False, indent=2), encoding="utf-8")
    np.save(out / "idx_to_labels.npy", {i: name for name, i in class_to_idx.items()})
    np.save(out / "labels_to_idx.npy", class_to_idx)
    return path


def sample_paths(dataset) -> list[str] | None:
    """数据集里每个样本的图片路径（支持 ImageFolder 及套在外面的 Subset）；拿不到时返回 None。"""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        inner = sample_paths(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    samples = getattr(dataset, "samples", None)
    return None if samples is None else [str(path) for path, _ in samples]


def load_class_names(profile: str) -> list[str]:
    """读取 ``save_class_maps`` 保存的类名（按序号排列）。"""
    path = output_dir(profile, "metrics") / "class_to_idx.json"
    if not path.is_file():
        raise FileNotFoundError(f"找不到 {display_path(path)}。先运行笔记本 03（它会保存类别映射）。")
    class_to_idx = json.loads(path.read_text(encoding="utf-8"))
    return sorted(class_to_idx, key=class_to_idx.get)

