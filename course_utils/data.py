"""数据集：注册表 ``DATASETS``、``prepare_dataset``（返回含 ``train/``、``val/`` 的根目录）、03 写出来的
``build_transforms``、``make_datasets``、``make_loaders``（与笔记本一字不差），以及 04 以后一步拿到它们的 ``course_data``。

下载与解压在 ``download.py``，演示数据集的画法在 ``demo.py``，图片文件的规则在 ``files.py``，健康检查在 ``health.py``。
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from .demo import generate_demo_dataset
from .download import DownloadError, UnsafeArchiveError, download_first, extract_zip
from .files import SPLITS, is_junk_name, list_classes, list_image_files
from .paths import data_dir, display_path

__all__ = [
    "prepare_dataset", "dataset_classes", "sample_images", "build_transforms", "make_datasets", "make_loaders",
    "safe_num_workers", "course_data", "denormalize",
]


class DatasetUnavailable(RuntimeError):
    """拿不到数据集（下载失败、本地文件不存在或内容不对）。消息里写明试过什么、可以怎么办。"""


class DatasetError(ValueError):
    """数据集的目录结构或内容有问题（类别不一致、某类没有图片……）。"""


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
        name="fruit30", description="30 类水果和蔬菜的照片（原教程的数据集）",
        urls=("https://zihao-openmmlab.obs.cn-east-3.myhuaweicloud.com/"
              "20220716-mmclassification/dataset/fruit30/fruit30_split.zip",),
        archive_name="fruit30_split.zip", folder_name="fruit30_split", approx_bytes=216 * 1024**2, sha256=None,
        classes=FRUIT30_CLASSES, train_images=4376, test_images=1078,
        url_env="COURSE_FRUIT30_URL", archive_env="COURSE_FRUIT30_ARCHIVE",
    ),
    "demo": GeneratedDataset(
        name="demo", description="课程自带的演示数据集：程序画出的 12 类水果图片，离线可用", folder_name="demo-v1",
        classes=("苹果-红", "苹果-青", "西红柿", "柠檬", "脐橙", "芒果", "香蕉", "西瓜", "草莓", "葡萄-红", "猕猴桃", "菠萝"),
        train_per_class=50, test_per_class=20, image_size=160, seed=20220716,
    ),
    "smoke": GeneratedDataset(
        name="smoke", description="极小的生成数据集，只用于测试与 CI", folder_name="smoke-v1",
        classes=("苹果-红", "苹果-青", "香蕉", "柠檬"), train_per_class=12, test_per_class=4, image_size=48, seed=20220716,
    ),
}


def dataset_sources(name: str):
    """注册表里的一项；名字写错时给出中文提示。"""
    if name not in DATASETS:
        if any(mark in str(name) for mark in ("/", "\\", "~")) or str(name).startswith("."):
            raise DatasetError(f"找不到数据集目录 {name}。检查路径（以及环境变量 COURSE_DATASET）；"
                               "目录里应有 train/<类名>/ 和 val/<类名>/ 两层子目录。")
        raise DatasetError(f"没有名为 {name!r} 的数据集。可选：{'、'.join(DATASETS)}，或者一个数据集目录的路径。")
    return DATASETS[name]


def dataset_classes(name: str) -> list[str]:
    """数据集的类名（排好序）：注册表直接给出，自带目录读 ``train/``；不下载、不生成，01 不需要数据就能用。"""
    folder = Path(str(name)).expanduser()
    if name not in DATASETS and folder.is_dir():
        return list_classes(_check_layout(folder, expected=None) / "train")
    return sorted(dataset_sources(name).classes)


# ---------------------------------------------------------------- 准备数据集

def prepare_dataset(settings, *, url: str | None = None, archive=None) -> Path:
    """按 settings.dataset 准备数据集，返回根目录（内含 ``train/<类名>/`` 和 ``val/<类名>/``）。

    demo / smoke 在 data/ 下现场生成（之后复用）；fruit30 依次找已解压的目录、本地压缩包、下载（主地址与镜像）；
    已有目录的路径直接使用。url（也可写在 settings.extra["dataset_url"] 或 COURSE_FRUIT30_URL）是额外的下载地址，
    archive（也可写在 settings.extra["archive"] 或 COURSE_FRUIT30_ARCHIVE）是本地压缩包。
    拿不到数据时抛出 DatasetUnavailable，写明试过的办法和三种出路（镜像、本地文件、demo 档位）。
    """
    name = settings.dataset
    if name not in DATASETS and (folder := Path(str(name)).expanduser()).is_dir():
        return _check_layout(folder, expected=None)
    source = dataset_sources(name)
    if isinstance(source, GeneratedDataset):
        return generate_demo_dataset(data_dir() / source.folder_name, classes=source.classes, seed=source.seed,
                                     train_per_class=source.train_per_class, test_per_class=source.test_per_class,
                                     image_size=source.image_size)
    url = url or settings.extra.get("dataset_url")
    archive = archive or settings.extra.get("archive") or os.environ.get(source.archive_env) or None
    target = data_dir() / source.folder_name
    attempts: list[str] = []
    try:
        if _looks_complete(target):
            return _check_layout(target, source.classes)
        given, default = Path(archive).expanduser() if archive else None, data_dir() / source.archive_name
        if given is not None and not given.is_file():
            attempts.append(f"本地压缩包 {display_path(given)} 不存在。")
        local = next((path for path in (given, default) if path is not None and path.is_file()), None)
        if local:  # 有本地压缩包（先看给出的，再看 data/ 下的默认文件名）就不联网
            return _extract_checked(local, target, source)
        if attempts:  # 明确给出的压缩包不存在：先让你改正路径，而不是悄悄去下载 216 MB
            raise DatasetError(attempts.pop())
        # 下载地址的顺序：参数给的、环境变量里的镜像、注册表里的主地址与镜像（去重）
        mirrors = re.split(r"[\s,;]+", os.environ.get(source.url_env, "").strip())
        urls = list(dict.fromkeys(u for u in [url, *mirrors, *source.urls] if u))
        downloaded, used = download_first(urls, default, sha256=source.sha256, desc=f"下载 {source.archive_name}")
        return _extract_checked(downloaded, target, source, delete_bad=True, where=used)
    except DownloadError as exc:
        attempts += exc.failures or [str(exc)]
    except (DatasetError, UnsafeArchiveError, FileExistsError) as exc:
        attempts.append(str(exc))
    # from None：学习者只看到这一条中文说明，而不是一长串内部异常
    raise DatasetUnavailable(_unavailable_message(source, attempts)) from None


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


def _check_layout(root: Path, expected) -> Path:
    """train/ 和 val/ 都在，类别相同；expected 给出时还要与注册表的类名一致。"""
    if not _looks_complete(root):
        raise DatasetError(f"{display_path(root)} 里应有 train/ 和 val/ 两个子目录（fruit30 的结构）。")
    hidden = sorted(p.relative_to(root).as_posix() for split in SPLITS for p in (root / split).rglob("*")
                    if is_junk_name(p.name))
    if hidden:  # torchvision 的 ImageFolder 会把隐藏目录当成类别、把 ._ 开头的文件当成图片
        shown = "、".join(hidden[:5]) + (f" 等 {len(hidden)} 项" if len(hidden) > 5 else "")
        raise DatasetError(f"{display_path(root)} 里有隐藏或系统生成的文件：{shown}。ImageFolder 会把隐藏目录当成类别、"
                           "把 macOS 的 ._ 文件当成图片：删掉它们再重新运行。")
    train, val = list_classes(root / "train"), list_classes(root / "val")
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DatasetError(f"{display_path(root)} 的 train/ 和 val/ 类别不一致：只在 train/ 里有 {only_train or '无'}，"
                           f"只在 val/ 里有 {only_val or '无'}。两边的类别子目录必须完全相同，否则类别序号会对不上。")
    if expected is not None and set(train) != set(expected):
        missing, extra = sorted(set(expected) - set(train)), sorted(set(train) - set(expected))
        raise DatasetError(f"{display_path(root)} 的类别与预期的 {len(expected)} 类不一致：缺少 {missing or '无'}，"
                           f"多出 {extra or '无'}。删除这个目录后重新运行，让课程重新解压或下载。")
    return root


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


def sample_images(root, split: str = "train", per_class: int = 1, seed: int = 0, classes=None):
    """每类随机取 per_class 张图片，返回 [(路径, 类名)]；同一个 seed 取到同样的图。"""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Path]] = {}
    for s, name, path in list_image_files(root):
        if s == split and (classes is None or name in classes):
            by_class.setdefault(name, []).append(path)
    return [(files[i], name) for name, files in by_class.items()
            for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False))]


def safe_num_workers(max_workers: int = 4) -> int:
    """DataLoader 安全的进程数：Windows 上、以及 Jupyter 里启动方式不是 fork（macOS 默认 spawn）时为 0（否则子进程
    可能卡住或报错）；其余取 min(max_workers, 核数 − 2)：PyTorch 用全部核算模型，2 核上加载进程只会和它抢，给 0。"""
    if sys.platform == "win32":
        return 0
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if "ipykernel" in sys.modules and method != "fork":
        return 0
    # sched_getaffinity：容器或任务调度限制后真正能用的核数
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(max_workers, cores - 2))


# ---------------------------------------------------------------- 笔记本 03 写出来的三步（原样保存在这里，供 04 以后复用）

def build_transforms(image_size, resize_size, mean, std):
    """训练与评估的预处理，返回 (train_tf, eval_tf)。mean、std 取自预训练权重自己的记录。"""
    train_tf = v2.Compose([
        v2.RandomResizedCrop(image_size),  # 随机裁一块（面积 8%–100%）再缩放：同一张图每轮看起来都不一样
        v2.RandomHorizontalFlip(),  # 一半概率左右翻转：水果翻过来还是同一种水果
        v2.ToImage(),  # PIL 图片 -> 张量，形状 (通道数, 高, 宽)，取值 0–255
        v2.ToDtype(torch.float32, scale=True),  # 转成 0–1 之间的小数
        v2.Normalize(mean, std),  # 按预训练时的均值和标准差归一化
    ])
    eval_tf = v2.Compose([
        v2.Resize(resize_size),  # 短边缩放到 resize_size，保持宽高比
        v2.CenterCrop(image_size),  # 从中间裁出 image_size 见方：没有任何随机性
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
    return train_tf, eval_tf


def make_datasets(root, train_tf, eval_tf, val_fraction, seed):
    """train/ 按类别分层划出验证集，val/ 当测试集；返回 (train_ds, val_ds, test_ds)。"""
    train_folder = datasets.ImageFolder(root / "train", transform=train_tf)
    val_folder = datasets.ImageFolder(root / "train", transform=eval_tf)  # 同一批图片，换成评估预处理
    test_ds = datasets.ImageFolder(root / "val", transform=eval_tf)
    train_idx, val_idx = train_test_split(
        range(len(train_folder)), test_size=val_fraction,
        stratify=train_folder.targets,  # 分层：每个类别按同样的比例分进验证集
        random_state=seed,  # 同一个种子，每次划出同样的验证集
    )
    return Subset(train_folder, train_idx), Subset(val_folder, val_idx), test_ds


def make_loaders(train_ds, val_ds, test_ds, batch_size, num_workers, seed):
    """三个 DataLoader：训练集每轮打乱（顺序由 seed 决定），验证集和测试集按原顺序。"""
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=generator,
                              num_workers=num_workers, persistent_workers=num_workers > 0)
    val_loader = DataLoader(val_ds, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0)
    test_loader = DataLoader(test_ds, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0)
    return train_loader, val_loader, test_loader


# ---------------------------------------------------------------- 04 以后：一步拿到 03 的全部结果

@dataclass
class CourseData:
    """一个档位的数据：根目录、类名、三个数据集和三个 DataLoader（都是 03 里写出来的那些）。"""

    root: Path
    class_names: list
    train_ds: object
    val_ds: object
    test_ds: object
    train_loader: object
    val_loader: object
    test_loader: object
    mean: tuple
    std: tuple


def course_data(settings, *, mean, std, train_per_class: int | None = None) -> CourseData:
    """03 的全部步骤合在一起：准备数据集、预处理、划分、DataLoader。

    mean、std 取自 ``cu.load_pretrained`` 的 info；train_per_class：每类最多留多少张训练图（在档位的训练集里
    按固定种子挑选，张数少的子集包含在张数多的里面；验证集和测试集不变；06 画“训练图片越少，预训练越值钱”），
    None 表示按档位（quick 每类 60 张）。
    """
    root = prepare_dataset(settings)
    train_tf, eval_tf = build_transforms(settings.image_size, settings.resize_size, list(mean), list(std))
    try:
        train_ds, val_ds, test_ds = make_datasets(root, train_tf, eval_tf, settings.val_fraction, settings.seed)
    except ValueError as exc:  # 某类图片太少，分层抽样分不出来
        raise DatasetError(f"无法从 {display_path(root / 'train')} 分层划出验证集（{exc}）。每类至少要有 2 张训练图片，"
                           "而且验证集要能分到每类一张：检查图片很少的类别，或调整 val_fraction。") from None
    if settings.per_class_limit:  # quick 档位：训练集每类 per_class_limit 张，验证集按比例缩小
        val_limit = max(1, round(settings.per_class_limit * settings.val_fraction / (1 - settings.val_fraction)))
        val_ds = Subset(val_ds.dataset, limit_per_class(val_ds, val_limit, settings.seed))
    for limit in (settings.per_class_limit, train_per_class):  # 依次缩小：小的子集总是包含在大的子集里
        if limit:
            train_ds = Subset(train_ds.dataset, limit_per_class(train_ds, limit, settings.seed))
    workers = safe_num_workers() if settings.num_workers is None else max(0, int(settings.num_workers))
    loaders = make_loaders(train_ds, val_ds, test_ds, settings.batch_size, workers, settings.seed)
    return CourseData(root, list(test_ds.classes), train_ds, val_ds, test_ds, *loaders, tuple(mean), tuple(std))


def limit_per_class(subset, limit: int, seed: int) -> list[int]:
    """Subset 里每类最多留 limit 个样本（固定种子随机挑选），返回它们在底层数据集里的下标（排好序）。"""
    indices = np.asarray(subset.indices)
    targets = np.asarray(subset.dataset.targets)[indices]
    rng = np.random.default_rng(seed)
    kept = [indices[np.flatnonzero(targets == label)][rng.permutation(int((targets == label).sum()))[:limit]]
            for label in np.unique(targets)]
    return sorted(np.concatenate(kept).tolist())


def denormalize(tensor, mean, std):
    """撤销归一化：x * std + mean，并截到 [0, 1]，便于显示。tensor 形状 (通道数, 高, 宽) 或 (批量大小, 通道数, 高, 宽)。"""
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    return (tensor.detach() * std + mean).clamp(0, 1).as_subclass(torch.Tensor)


def sample_paths(dataset) -> list[str]:
    """数据集里每个样本的图片路径，顺序与样本相同（ImageFolder，或套在外面的 Subset）。"""
    if isinstance(dataset, Subset):
        inner = sample_paths(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return [str(path) for path, _ in dataset.samples]


def example_image(settings) -> Path:
    """课程总能找到的一张示例图：当前档位测试集（val/）里第一个类别的第一张图（demo / smoke 档位当场生成数据）。"""
    root = Path(prepare_dataset(settings))
    test_images = [path for split, _, path in list_image_files(root) if split == "val"]
    if not test_images:
        raise DatasetError(f"{display_path(root / 'val')} 里没有图片。删除这个数据集目录后重新运行，让课程重新准备数据。")
    return test_images[0]
