"""绘图的公共部分：保存图表、图片网格、数据集的统计图、预处理效果图、模型哪些层训练、训练曲线。

评估专用的图在 evaluation.py，三种策略的对比图在 compare.py。都返回 Figure；中文字体由 ``cu.setup_notebook()`` 注册。
"""

from __future__ import annotations

import math
from pathlib import Path

from .checkpoints import best_epoch
from .config import STRATEGY_NAMES
from .files import load_rgb_image
from .paths import display_path, output_dir

__all__ = [
    "save_figure", "show_images", "show_batch", "plot_class_counts", "plot_image_sizes", "show_augmentations",
    "plot_pixel_histogram", "plot_trainable_blocks", "plot_history",
]

CHANNEL_NAMES = ("R（红）", "G（绿）", "B（蓝）")


def save_figure(fig, profile: str, name: str, formats: tuple[str, ...] = ("png",)) -> str:
    """把图保存到 ``outputs/<档位>/figures/<name>.<格式>``，返回第一个文件给人看的路径（笔记本里直接显示它）。"""
    out_dir = output_dir(profile, "figures")
    saved = [out_dir / f"{name}.{fmt}" for fmt in formats]
    for path in saved:
        fig.savefig(path)
    return display_path(saved[0])


def _as_array(image):
    """PIL 图片、文件路径、(高, 宽, 通道) 数组或 (通道, 高, 宽) 张量 -> 可以直接 imshow 的数组。"""
    import numpy as np

    if isinstance(image, (str, Path)):
        return np.asarray(load_rgb_image(image))
    if hasattr(image, "detach"):  # torch 张量：(通道, 高, 宽) -> (高, 宽, 通道)
        array = image.detach().cpu().float()
        array = array.permute(1, 2, 0).numpy() if array.dim() == 3 else array.numpy()
        return array.clip(0, 1)
    return np.asarray(image)


def message_figure(text: str):
    """只写一行说明的小图：没有内容可画时（例如没有分错的图片）用它代替空白的图。"""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14)
    ax.axis("off")
    return fig


def show_images(images, titles=None, *, ncols: int | None = None, size: float = 2.2, suptitle: str | None = None,
                title_colors=None):
    """把若干张图片（PIL 图片、路径、数组或取值 0–1 的 (通道, 高, 宽) 张量）排成网格，每张写上（中文）标题。

    title_colors：每个标题的颜色（如把预测错的标成红色）；ncols：每行几张，None 时自动选择；size：每张的边长（英寸）。
    """
    import matplotlib.pyplot as plt

    images = list(images)
    if not images:
        raise ValueError("没有可以显示的图片（列表为空）。")
    ncols = ncols or min(len(images), 8)
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")  # 也包括最后一行多出来的空格子
    for k, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(_as_array(image))
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=10, color=title_colors[k] if title_colors is not None else "black")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_batch(images, labels, class_names, mean, std, *, n: int = 16, ncols: int = 8):
    """显示一个批次（归一化过的 (批量大小, 通道数, 高, 宽) 张量）的前 n 张图：先用 mean、std 撤销归一化，标题是类名。"""
    from .data import denormalize

    shown = denormalize(images[:n], mean, std)
    titles = [class_names[int(label)] for label in labels[:n]]
    return show_images(list(shown), titles, ncols=min(ncols, len(shown)), size=1.6)


SPLIT_LABELS = {"train": "train/（训练 + 验证）", "val": "val/（测试集）"}  # 课程里两个目录各自的用途


def plot_class_counts(counts, title: str = "每类图片数"):
    """每类图片数的横向条形图；counts 是 02 数出来的表格（行：类别，列：train / val）。图例写明两个目录的用途，
    放在右侧，不挡住条形。"""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = (counts.rename(columns=SPLIT_LABELS).rename_axis("类别").reset_index()
            .melt(id_vars="类别", var_name="目录", value_name="图片数"))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(counts) * 1.3 + 1.2))
    sns.barplot(data=long, y="类别", x="图片数", hue="目录", ax=ax, orient="h")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(title)
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_image_sizes(table):
    """图片尺寸与宽高比：左图每张图的宽和高（散点），右图宽高比的分布；table 是 02 读出的表（列：划分、宽、高、宽高比）。

    所有图片尺寸都相同时（如演示数据），图上只会有一个点：这时只打印一句说明，返回 None。
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = table.dropna(subset=["宽", "高"])
    sizes = table[["宽", "高"]].drop_duplicates()
    if len(sizes) <= 1:
        if sizes.empty:
            print("没有能读出尺寸的图片，无法统计。")
        else:
            width, height = (int(v) for v in sizes.iloc[0])
            print(f"全部 {len(table)} 张图片都是 {width}×{height} 像素（宽高比 {width / height:.2f}），"
                  "画出来只有一个点，所以不画图了。")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sns.scatterplot(data=table, x="宽", y="高", hue="划分", alpha=0.6, s=18, ax=left)
    left.set_title("图片的宽和高（像素）")
    sns.histplot(data=table, x="宽高比", hue="划分", bins=30, ax=right, element="step")
    right.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    right.set_title("宽高比（宽 / 高，1 表示正方形）")
    right.set_ylabel("图片数")
    fig.tight_layout()
    return fig


def show_augmentations(image, image_size: int, resize_size: int, *, n_random: int = 3, seed: int = 0):
    """在同一张图上看每个预处理步骤的效果：原图、随机裁剪缩放（几次）、水平翻转、缩放、中心裁剪。
    seed 让随机裁剪可以复现（不改变全局的随机数状态）。"""
    import torch
    from torchvision.transforms import v2

    image = load_rgb_image(image)
    steps = {
        "随机裁剪缩放": (v2.RandomResizedCrop(image_size), n_random),
        "水平翻转": (v2.RandomHorizontalFlip(p=1.0), 1),  # p=1：一定翻转，方便观察
        f"缩放到 {resize_size}": (v2.Resize(resize_size), 1),
        f"中心裁剪 {image_size}": (v2.Compose([v2.Resize(resize_size), v2.CenterCrop(image_size)]), 1),
    }
    shown, titles = [image], [f"原图 {image.width}×{image.height}"]
    with torch.random.fork_rng(devices=[]):  # 只在这里用固定种子；退出后全局随机数状态原样恢复
        torch.manual_seed(seed)
        for name, (step, repeats) in steps.items():
            for k in range(repeats):
                out = step(image)
                shown.append(out)
                titles.append(f"{name}{f' #{k + 1}' if repeats > 1 else ''}\n{out.width}×{out.height}")
    return show_images(shown, titles, ncols=min(len(shown), 4), size=2.4)


def plot_pixel_histogram(before, after, *, max_pixels: int = 20000, seed: int = 0):
    """归一化前（before，取值 0–1）后（after）像素值的分布，每个颜色通道一条曲线。

    张量形状 (通道数, 高, 宽) 或 (批量大小, 通道数, 高, 宽)；每个通道最多随机取 max_pixels 个像素来画，保证速度。
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    titles = ("归一化之前（0–1）", "归一化之后（整个 ImageNet 约以 0 为中心）")
    for ax, tensor, title in zip(axes, (before, after), titles):
        x = tensor.detach().float().cpu()
        flat = (x.transpose(0, 1) if x.dim() == 4 else x).reshape(3, -1).numpy()  # (通道数, 像素个数)
        keep = rng.choice(flat.shape[1], size=min(max_pixels, flat.shape[1]), replace=False)
        frame = pd.DataFrame({"像素值": flat[:, keep].ravel(), "通道": np.repeat(CHANNEL_NAMES[: flat.shape[0]], len(keep))})
        sns.histplot(data=frame, x="像素值", hue="通道", bins=40, element="step", fill=False, ax=ax,
                     palette=dict(zip(CHANNEL_NAMES, ("tab:red", "tab:green", "tab:blue"))))
        ax.set_title(title)
        ax.set_ylabel("像素个数")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 模型与训练

BLOCK_STATES = {"冻结": 0.0, "部分训练": 0.5, "训练": 1.0}  # 每块的状态 -> 颜色
BLOCK_COLORS = ["#9bb7d4", "#f2b880", "#e4572e"]  # 冻结：浅蓝；部分训练：浅橙；训练：橙红


def plot_trainable_blocks(models: dict, title: str | None = None):
    """画出 {行标签: 模型}（如 ``{"freeze": 模型1, "finetune": 模型2}``）里各块（顶层模块；Lite0 的 blocks 拆成 7 个阶段）
    是冻结、部分训练还是训练，格子里写参数量。"""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from .models import blocks_of, count_params

    counts = {label: {name: count_params(block) for name, block in blocks_of(model).items()}
              for label, model in models.items()}
    blocks = list(next(iter(counts.values())))
    status = pd.DataFrame({b: [_state(c[b]) for c in counts.values()] for b in blocks},
                          index=[_row_label(label, models[label]) for label in counts])
    numbers = [[_short_count(c[b]["total"]) for b in blocks] for c in counts.values()]
    fig, ax = plt.subplots(figsize=(0.9 * len(blocks) + 3, 0.9 * len(models) + 1.4))
    sns.heatmap(status, ax=ax, cmap=ListedColormap(BLOCK_COLORS), vmin=-0.25, vmax=1.25, cbar=False,
                annot=pd.DataFrame(numbers).values, fmt="", linewidths=2, linecolor="white", annot_kws={"fontsize": 8})
    ax.set(xlabel="模型的各块（格子里是参数量）", ylabel="")
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=45)
    shown = set(status.values.ravel())  # 图例只列出图里出现的状态
    ax.legend(handles=[Patch(color=BLOCK_COLORS[int(v * 2)], label=name) for name, v in BLOCK_STATES.items()
                       if v in shown][::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "三种策略：哪些层参与训练")
    fig.tight_layout()
    return fig


def _state(counts: dict) -> float:
    if counts["trainable"] == counts["total"]:
        return BLOCK_STATES["训练"]
    return BLOCK_STATES["冻结"] if counts["trainable"] == 0 else BLOCK_STATES["部分训练"]


def _row_label(label: str, model) -> str:
    from .models import count_params

    counts = count_params(model)
    name = f"{label}（{STRATEGY_NAMES[label]}）" if label in STRATEGY_NAMES else label
    return f"{name}\n可训练 {_short_count(counts['trainable'])} / {_short_count(counts['total'])}"


def _short_count(n: int) -> str:
    """11689512 -> "11.69M"，15390 -> "15.4K"。"""
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}K" if n >= 1000 else str(int(n))


def plot_history(history: list[dict], title: str | None = None):
    """训练曲线：左边损失、右边准确率，训练集与验证集各一条线，虚线标出验证集最佳的一轮。"""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", "损失（交叉熵）"), (axes[1], "acc", "准确率")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="训练集")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], marker="s", label="验证集")
        ax.set_xlabel("轮（epoch）")
        ax.set_ylabel(label)
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)  # 轮数只取整数
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    best = best_epoch(history)
    axes[1].axvline(best["epoch"], linestyle="--", color="gray", label=f"验证集最佳：第 {best['epoch']} 轮")
    axes[1].set_ylim(0, 1.02)
    axes[1].yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    for ax in axes:
        ax.legend()
    fig.suptitle(title or "训练曲线")
    fig.tight_layout()
    return fig
