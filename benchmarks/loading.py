"""第 3 节：读图片跟得上模型吗？大 JPEG（像 fruit30 的照片）的解码与预处理速度、加载进程数、预先缩小图片。

fruit30 的照片比网络输入大得多：每张图每轮都要解码整张 JPEG，再随机裁剪、缩放。这里生成一批
800×600 的 JPEG（由演示数据放大并加上细微噪声，文件大小接近照片），测：

- DataLoader 单独取数据（解码 + 训练预处理）每秒多少张，加载进程 0 到 N 个；
- 同样的图片预先缩小到短边 256 像素保存一次之后，每秒多少张；
- 端到端训练（freeze 与 finetune 的训练步 + 取数据）每秒多少张：加载进程数 × PyTorch 线程数。
  只有 2 个核时，加载进程和 PyTorch 的计算线程会抢同一批核，线程数也要一起看。
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import course_utils as cu
from course_utils.demo import draw_fruit_image
from course_utils.paths import data_dir

from .common import Section, core_count, course_channels_last, median, quiet, timed

JPEG_SIZE = (800, 600)  # 宽、高
JPEG_QUALITY = 90
SHORT_SIDE = 256  # 预先缩小：短边缩到 256（224 像素训练时 RandomResizedCrop 仍有足够的像素）
CLASSES = ("苹果-红", "香蕉", "柠檬", "西瓜")
BATCH_SIZE = 32


def large_jpeg_dataset(count: int, seed: int = 0) -> Path:
    """生成（或复用）count 张 800×600 的 JPEG，ImageFolder 结构；返回根目录（其下是类别目录）。"""
    import numpy as np
    from PIL import Image

    root = data_dir() / f"bench-jpeg-{JPEG_SIZE[0]}x{JPEG_SIZE[1]}-v1" / f"n{count}"
    if (root / ".complete").is_file():
        return root
    rng = np.random.default_rng(seed)
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        name = CLASSES[i % len(CLASSES)]
        small = draw_fruit_image(name, 160, rng)
        big = np.asarray(small.resize(JPEG_SIZE, Image.BICUBIC), dtype=np.int16)
        big = big + rng.normal(0, 4, (JPEG_SIZE[1], JPEG_SIZE[0], 1)).astype(np.int16)  # 照片的细节与噪点
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=JPEG_QUALITY)
    (root / ".complete").write_text("ok\n")
    return root


def preresized_copy(root: Path, short_side: int = SHORT_SIDE) -> Path:
    """把 root 下的图片按比例缩小到短边 short_side，另存一份（只做一次），返回新目录。"""
    from PIL import Image

    target = root.with_name(f"{root.name}-short{short_side}")
    if (target / ".complete").is_file():
        return target
    for path in sorted(root.glob("*/*.jpg")):
        with Image.open(path) as image:
            scale = short_side / min(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            out = target / path.parent.name / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").resize(size, Image.BICUBIC).save(out, quality=JPEG_QUALITY)
    (target / ".complete").write_text("ok\n")
    return target


def mean_file_kb(root: Path) -> float:
    sizes = [p.stat().st_size for p in root.glob("*/*.jpg")]
    return sum(sizes) / len(sizes) / 1024


def make_loader(root: Path, workers: int, image_size: int = 224):
    """课程的训练预处理（RandomResizedCrop、翻转、转张量、归一化）+ DataLoader；有进程时常驻。"""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    record = cu.models.weights_record("resnet18")
    train_tf, _ = cu.build_transforms(image_size, round(image_size * 256 / 224), record["mean"], record["std"])
    dataset = ImageFolder(root, transform=train_tf)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0)


def configurations(cores: int) -> list[tuple[int, int]]:
    """(加载进程数, PyTorch 线程数)：进程 0 到 N 个；线程取全部核，以及“核数减进程数”（不抢核）。"""
    found = []
    for workers in range(cores + 1):
        for threads in (cores, max(1, cores - workers)):
            if (workers, threads) not in found:
                found.append((workers, threads))
    return found


def loader_speeds(sources: dict, cores: int, passes: int) -> dict[tuple[str, int], float]:
    """只取数据：{(来源, 进程数): 每秒图片数}。先各取一批让进程启动，再交替计时整遍读取。"""
    loaders = {(name, w): make_loader(root, w) for name, root in sources.items() for w in range(cores + 1)}
    for loader in loaders.values():
        next(iter(loader))
    speeds = {key: [] for key in loaders}
    for _ in range(passes):
        for key, loader in loaders.items():
            count, seconds = timed(lambda: sum(len(labels) for _, labels in loader))
            speeds[key].append(count / seconds)
    return {key: median(values) for key, values in speeds.items()}


def end_to_end_speeds(root: Path, device, plan: list[tuple[str, int, int]], passes: int) -> dict[tuple, float]:
    """端到端训练：{(策略, 进程数, 线程数): 每秒图片数}；各配置交替，每次读完整个数据集训练一遍。"""
    import torch

    from .throughput import make_trainer

    loaders = {w: make_loader(root, w) for w in sorted({w for _, w, _ in plan})}
    trainers = {s: make_trainer("resnet18", s, device, channels_last=course_channels_last(device),
                                num_classes=len(CLASSES)) for s in dict.fromkeys(s for s, _, _ in plan)}
    default_threads = torch.get_num_threads()
    speeds = {key: [] for key in plan}
    try:
        for round_ in range(passes + 1):  # 第 0 轮热身：每种配置一个批次（启动进程、选卷积算法），不计
            for strategy, workers, threads in plan:
                torch.set_num_threads(threads)
                batches = itertools.islice(loaders[workers], 1 if round_ == 0 else None)
                seconds = timed(lambda: trainers[strategy](batches), device)[1]
                if round_:
                    speeds[(strategy, workers, threads)].append(len(loaders[workers].dataset) / seconds)
    finally:
        torch.set_num_threads(default_threads)
    return {key: median(values) for key, values in speeds.items()}


def training_plan(cores: int) -> list[tuple[str, int, int]]:
    """freeze（读图占比最大）试全部 (进程数, 线程数) 组合；finetune 只试线程取全部核时的各个进程数。"""
    plan = [("freeze", w, t) for w, t in configurations(cores)]
    return plan + [("finetune", w, cores) for w in range(cores + 1)]


def model_speed(context: dict | None, device, strategy: str) -> float:
    """只算模型（第 2 节测过就直接用）的 ResNet-18 每秒图片数，布局与 cu.fit 相同。"""
    from .throughput import measure_steps, mode_key

    mode = ("resnet18", strategy, course_channels_last(device))
    known = (context or {}).get("model_images_per_s", {})
    if mode_key(mode) not in known:
        known.update(measure_steps([mode], device, rounds=1, steps=1))
    return known[mode_key(mode)]


def run(device, quick: bool = False, context: dict | None = None):
    """第 3 节：只取数据、端到端训练、预先缩小图片。"""
    cores = core_count()
    with quiet():
        root = large_jpeg_dataset(32 if quick else 128)
    small = preresized_copy(root)
    passes = 1 if quick else 2
    loading = loader_speeds({"原图": root, f"短边 {SHORT_SIDE}": small}, cores, passes)
    plan = training_plan(cores)
    training = end_to_end_speeds(root, device, plan, passes)
    best = max((key for key in training if key[0] == "freeze"), key=training.get)
    training_small = end_to_end_speeds(small, device, [best], passes)
    models = {s: model_speed(context, device, s) for s in ("freeze", "finetune")}
    rows = [{"测什么": f"只取数据：{name}", "加载进程": w, "PyTorch 线程": "—", "每秒图片数": speed,
             "相对 freeze 模型速度": speed / models["freeze"]} for (name, w), speed in loading.items()]
    rows += [{"测什么": f"只算模型：{s} 训练步（第 2 节）", "加载进程": "—", "PyTorch 线程": "全部",
              "每秒图片数": v, "相对 freeze 模型速度": v / models["freeze"]} for s, v in models.items()]
    for (strategy, w, t), speed in training.items():
        rows.append({"测什么": f"端到端：{strategy}（原图）", "加载进程": w, "PyTorch 线程": t, "每秒图片数": speed,
                     "占模型速度": f"{speed / models[strategy]:.0%}"})
    for (strategy, w, t), speed in training_small.items():
        rows.append({"测什么": f"端到端：{strategy}（短边 {SHORT_SIDE}）", "加载进程": w, "PyTorch 线程": t,
                     "每秒图片数": speed, "占模型速度": f"{speed / models[strategy]:.0%}"})
    if context is not None:
        context["loading"] = {"best_freeze": best, "speeds": {str(k): v for k, v in training.items()}}
    return Section("loading", "3. 读图跟得上模型吗（大 JPEG、加载进程、预先缩小）", rows,
                   _notes(root, small, cores, passes, best)), []


def _notes(root: Path, small: Path, cores: int, passes: int, best) -> list[str]:
    count = len(list(root.glob("*/*.jpg")))
    return [
        f"数据：生成的 {count} 张 {JPEG_SIZE[0]}×{JPEG_SIZE[1]} JPEG（平均 {mean_file_kb(root):.0f} KB；"
        f"fruit30 压缩包 216 MB / 5454 张，平均约 40 KB，所以这里偏保守）；预先缩小后平均 {mean_file_kb(small):.0f} KB。",
        f"训练预处理与课程相同（RandomResizedCrop 224、水平翻转、转张量、归一化），批量 {BATCH_SIZE}；端到端训练是"
        "随机初始化的 ResNet-18（weights=None：这里下载不了 torchvision 的权重，速度与权重的取值无关）"
        "用 cu.train_one_epoch 读完整个数据集，布局与 cu.fit 相同；"
        f"每种配置交替测 {passes} 遍取中位数，进程先启动、先热身。",
        "“占模型速度”= 端到端每秒图片数 ÷ 只算模型时的每秒图片数：100% 表示读图完全被藏在计算后面。",
        f"本机 {cores} 个核；PyTorch 线程数取全部核时，加载进程会和计算线程抢核。"
        f"freeze 最快的配置：加载进程 {best[1]} 个、PyTorch 线程 {best[2]} 个。",
    ]
