"""特征空间（11 用）：取出主干网络给每张图的特征向量，打一个“类别分得开吗”的分数，再用 t-SNE 画成平面图。

分类头只是一个线性层：它能做的，只是在主干给出的特征空间里用超平面把类别切开。所以特征空间的“形状”
决定了只训练分类头（freeze）能做到多好。这里有两种看法，用途不同：

- ``separation_score``：在**原始**特征（例如 ResNet-18 的 512 维）上计算的一个数字，不经过 t-SNE。
  我们用 k 近邻分类器（``sklearn.neighbors.KNeighborsClassifier``，余弦距离）的分层交叉验证准确率：
  它回答“一张图在特征空间里最近的几个邻居，是不是多半和它同类”，正好是 t-SNE 想在图上保留的那种局部结构；
  它是一个准确率，可以直接和“总猜最多的那一类”的基线比较。轮廓系数（silhouette）也常用，但它假定每一类是
  一团凸的点，值在 −1 到 1 之间，很难说多少算好，所以只留作练习。
- ``tsne_2d`` + ``plot_embedding``：把高维特征压到平面上，用眼睛看。t-SNE 只尽量保留“谁和谁是近邻”：
  图上簇与簇之间的距离、簇的大小和形状几乎没有意义，换一个困惑度（perplexity）或随机种子，图就会变样。
  所以结论以上面的分数为准，图只用来帮助理解。
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .checkpoints import load_checkpoint
from .compare import ensure_checkpoint
from .data import sample_paths
from .evaluate import checkpoint_test_loader
from .features import extract_features
from .models import eval_mode

if TYPE_CHECKING:  # 只用于类型注解
    import numpy as np
    import pandas as pd

__all__ = [
    "backbone_features", "checkpoint_features", "weights_label", "separation_score", "separation_table",
    "tsne_2d", "plot_embedding", "plot_embeddings",
]

# t-SNE 至少要这么多个点：再少，困惑度（每个点“考虑”多少个邻居）就没法取一个合理的值
MIN_TSNE_POINTS = 5
# 画图时区分类别：10 种颜色 × 8 种形状，30 类也能一一分清（同色的类别形状不同）
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ---------------------------------------------------------------- 取出特征


def backbone_features(model, loader, device, *, max_images: int | None = None):
    """取出 loader 里每张图的主干特征，也就是分类头的输入（ResNet-18 是 512 个数）。

    在评估模式、``torch.inference_mode()`` 下计算，带进度条；用完把模型每一层的训练/评估模式恢复原样。
    参数：
        model：课程构建的模型（``cu.build_model`` 或 ``cu.load_checkpoint`` 得到的），已在 device 上。
        loader：不打乱顺序的 DataLoader（例如测试集的）。
        max_images：最多取多少张；测试集是按类别排好的，所以等间隔地抽取，每个类别都按比例取到
            （而不是只取前几个类别）。None 表示全部。
    返回：
        ``(features, labels, paths)``：形状 ``(图片数, 特征维数)`` 的 float32 数组、``(图片数,)`` 的类别序号数组、
        图片路径列表（数据集不记录路径时为空字符串）。
    """
    import torch

    loader = _subset_loader(loader, max_images)
    with eval_mode(model), torch.inference_mode():  # 结束后逐层恢复原来的 train/eval 模式
        features, labels = extract_features(model, loader, device, desc="提取特征")
    paths = sample_paths(loader.dataset) or [""] * len(labels)
    return features.numpy(), labels.numpy(), paths


def _subset_loader(loader, max_images: int | None):
    """max_images 小于数据集大小时，返回只含等间隔抽出的 max_images 张图的新 DataLoader（顺序不变）。"""
    import numpy as np
    from torch.utils.data import DataLoader, Subset

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images 应为正整数或 None（表示全部），收到的是 {max_images}。")
    size = len(loader.dataset)
    if max_images is None or max_images >= size:
        return loader
    picked = np.unique(np.linspace(0, size - 1, max_images).round().astype(int)).tolist()
    return DataLoader(Subset(loader.dataset, picked), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn)


def checkpoint_features(settings, strategy: str, device, *, max_images: int | None = None):
    """加载某个策略的最优检查点，取出测试集（``val/``）图片的主干特征。

    检查点不存在时按 ``cu.ensure_checkpoint`` 的规则处理（demo / smoke 档位当场运行 04 训练一个）；
    预处理的尺寸取自检查点，类别必须与训练时一致。
    返回：
        ``(features, labels, meta)``：特征、类别序号、检查点元数据。
    """
    model, meta = load_checkpoint(ensure_checkpoint(settings.profile, strategy), device=device)
    test_loader, _ = checkpoint_test_loader(settings, meta, device)
    features, labels, _ = backbone_features(model, test_loader, device, max_images=max_images)
    return features, labels, meta


def weights_label(model) -> str:
    """模型的初始权重，一个短语：“ImageNet 预训练权重”“预训练权重”（来源无法核实）或“随机初始化”。

    依据 ``model.course_info``（``cu.build_model`` 记下的实际情况），只有确实加载了 ImageNet 权重才这样说。
    """
    info = getattr(model, "course_info", None) or {}
    if not info.get("weights"):
        return "随机初始化"
    return "ImageNet 预训练权重" if "ImageNet" in (info.get("weights_note") or "") else "预训练权重"


# ---------------------------------------------------------------- 类别分得开吗：一个数字


def separation_score(features, labels, *, k: int = 5, folds: int = 5, seed: int = 42) -> float:
    """类别在特征空间里分得开吗：k 近邻分类器（余弦距离）的分层交叉验证准确率，取值 0–1。

    在原始特征上计算，不经过 t-SNE（t-SNE 的图会误导，这个数字不会因为画法而变）。
    每一折用其余几折的特征当“记忆”，看每张图最近的 k 个邻居多数属于哪一类；用余弦距离，是因为特征的方向
    比长度更能说明图里是什么（同一个类别的图亮一些、暗一些，特征长度会变，方向变得少）。
    参数：
        k：看几个邻居（训练折的样本太少时自动减小）；folds：交叉验证折数（不超过最小类别的样本数）；
        seed：打乱分折的随机种子。
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    features, labels, cv = _checked_cv(features, labels, folds, seed)
    smallest_train_fold = len(labels) - math.ceil(len(labels) / cv.n_splits)
    knn = KNeighborsClassifier(n_neighbors=max(1, min(k, smallest_train_fold)), metric="cosine")
    return float(cross_val_score(knn, features, labels, cv=cv).mean())


def _checked_cv(features, labels, folds: int, seed: int):
    """检查特征和标签，返回 (特征, 标签, 分层 K 折)：折数不超过最小类别的样本数。"""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"特征应为 (图片数, 特征维数) 的二维数组，且行数与标签个数相同；"
                         f"收到的形状是 {features.shape}，标签有 {len(labels)} 个。")
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(
            f"交叉验证要求至少 2 个类别、每类至少 2 张图；这里有 {len(counts)} 个类别，最少的一类只有 {counts.min()} 张。"
            "增大 MAX_IMAGES（或设为 None 用全部测试图片）后重新运行。"
        )
    return features, labels, StratifiedKFold(n_splits=int(min(folds, counts.min())), shuffle=True, random_state=seed)


def separation_table(feature_sets: dict, labels, *, seed: int = 42) -> "pd.DataFrame":
    """每个模型一行：特征维数、k 近邻准确率（``separation_score``），以及同样分折下“总猜最多的那一类”的基线。

    参数：
        feature_sets：{模型名: 特征数组}，每个数组的行与 labels 一一对应。
    """
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import cross_val_score

    rows = {}
    for name, features in feature_sets.items():
        features, checked_labels, cv = _checked_cv(features, labels, 5, seed)
        rows[name] = {
            "特征维数": features.shape[1],
            "k 近邻准确率": separation_score(features, checked_labels, seed=seed),
            "基线：总猜最多的类": float(cross_val_score(DummyClassifier(strategy="most_frequent"), features,
                                                      checked_labels, cv=cv).mean()),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("模型")


# ---------------------------------------------------------------- t-SNE 与画图


def tsne_2d(features, *, seed: int = 42, perplexity: float | None = None) -> "np.ndarray":
    """用 ``sklearn.manifold.TSNE`` 把特征压到平面上，返回 ``(图片数, 2)`` 的坐标。

    用 PCA 初始化、余弦距离（与 ``separation_score`` 一致）；同一个种子总是给出同一张图。
    参数：
        perplexity：困惑度，大致是每个点“照顾”多少个近邻；None 表示 min(30, (图片数 − 1) / 3)，
            这样只有十几张图的小数据集也能算。必须小于图片数。
    """
    import numpy as np
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if features.ndim != 2 or n < MIN_TSNE_POINTS:
        raise ValueError(f"t-SNE 至少需要 {MIN_TSNE_POINTS} 张图的特征（二维数组），这里只有形状 {features.shape}。"
                         "增大 MAX_IMAGES，或换一个测试图片更多的档位。")
    if perplexity is None:
        perplexity = min(30.0, (n - 1) / 3)
    if not 0 < perplexity < n:
        raise ValueError(f"困惑度（perplexity）要大于 0、小于图片数 {n}，收到的是 {perplexity}。"
                         "改小 PERPLEXITY，或设为 None 按图片数自动选择。")
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init="pca", metric="cosine", random_state=seed)
    return tsne.fit_transform(features)


def _class_styles(class_names) -> dict:
    """{类名: (颜色, 形状)}：不超过 20 类时每类一种颜色（tab20），形状轮换作为第二条线索；
    更多类别时用 10 种颜色，每 10 类换一种形状（30 类的 fruit30 也分得清）。"""
    import seaborn as sns

    if len(class_names) <= 20:
        colors = sns.color_palette("tab20", 20)
        return {name: (colors[i], MARKERS[i % len(MARKERS)]) for i, name in enumerate(class_names)}
    colors = sns.color_palette("tab10", 10)
    if len(class_names) > len(colors) * len(MARKERS):
        raise ValueError(f"最多能区分 {len(colors) * len(MARKERS)} 个类别，这里有 {len(class_names)} 个。")
    return {name: (colors[i % 10], MARKERS[i // 10]) for i, name in enumerate(class_names)}


def _legend_handles(styles: dict, present) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], linestyle="", marker=marker, color=color, markersize=7, label=name)
            for name, (color, marker) in styles.items() if name in present]


def plot_embedding(points, labels, class_names, *, title: str, ax=None, legend: bool = True):
    """把二维坐标画成散点图，每个类别一种颜色和形状；图例（中文类名）放在坐标区右侧。返回 Figure。

    参数：
        points：``(图片数, 2)`` 的坐标（例如 ``tsne_2d`` 的结果）；labels：类别序号；class_names：类名列表。
        ax：画在这个坐标区上（None 表示新建一张图）；legend：是否画图例（多张子图共用一个图例时设为 False）。
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    points, labels = np.asarray(points), np.asarray(labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    styles = _class_styles(class_names)
    names = [class_names[i] for i in labels]
    present = [name for name in class_names if name in set(names)]  # 按类别顺序
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=names, style=names, hue_order=present, style_order=present,
                    palette={n: styles[n][0] for n in present}, markers={n: styles[n][1] for n in present},
                    s=30, alpha=0.85, edgecolor="white", linewidth=0.3, legend=False, ax=ax)
    ax.set(title=title, xticks=[], yticks=[], xlabel="", ylabel="")  # t-SNE 的坐标值本身没有含义
    if legend:
        ax.legend(handles=_legend_handles(styles, present), title="类别", loc="upper left",
                  bbox_to_anchor=(1.02, 1), frameon=False, ncols=2 if len(present) > 15 else 1)
    return ax.figure


def plot_embeddings(embeddings: dict, labels, class_names, *, ncols: int | None = None, suptitle: str | None = None):
    """几张散点图并排（每个模型一张，标题是字典的键），共用右侧的一个图例。返回 Figure。

    参数：
        embeddings：{标题: (图片数, 2) 的坐标}，各个模型的点顺序相同、都对应 labels；
        ncols：每行几张；None 表示 4 张以内每行 2 张，更多时每行 3 张。
    """
    import matplotlib.pyplot as plt
    import numpy as np

    count = len(embeddings)
    if count == 0:
        raise ValueError("embeddings 是空的：至少给出一个模型的二维坐标。")
    ncols = ncols or (min(count, 2) if count <= 4 else 3)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, (title, points) in zip(axes.flat, embeddings.items()):
        plot_embedding(points, labels, class_names, title=title, ax=ax, legend=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)  # 多出来的空位
    present = {class_names[i] for i in np.asarray(labels)}
    fig.legend(handles=_legend_handles(_class_styles(class_names), present), title="类别", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False, ncols=2 if len(present) > 15 else 1)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
