"""特征空间（选学 11 用，笔记本里写 ``cu.embedding.separation_score(...)``）：类别分得开吗，以及 t-SNE 的平面图。

特征由 ``cu.train.backbone_features`` 取出。``separation_score`` 和 ``tsne_2d`` 与 11 里写出来的一字不差：前者在**原始**
特征上打分，不经过 t-SNE；后者只用来看图，图上团与团的距离、大小都没有意义。
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

__all__ = ["separation_score", "tsne_2d", "plot_embeddings"]

# 画图时区分类别：不超过 20 类时每类一种颜色，形状是第二条线索；更多类别时 10 种颜色 × 8 种形状
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ---------------------------------------------------------------- 笔记本 11 写出来的代码（原样保存在这里）

def separation_score(features, labels, k=5, seed=42):
    """类别在特征空间里分得开吗：k 近邻分类器（余弦距离）的分层交叉验证准确率，0 到 1 之间。"""
    folds = min(5, np.bincount(labels).min())  # 折数不超过最小那一类的图片数：每一折里每类至少一张
    if folds < 2:
        raise ValueError("每个类别至少要有 2 张图才能做交叉验证：增大 MAX_IMAGES，或设为 None 用全部测试图。")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)  # 分层：每一折里各类的比例与整体相同
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine")  # 余弦距离：只比较特征的方向，不管长短
    return float(cross_val_score(knn, features, labels, cv=cv).mean())


def tsne_2d(features, seed=42, perplexity=None):
    """用 t-SNE 把特征压到平面上，返回 (图片数, 2) 的坐标；同一个种子总是给出同一张图。"""
    if perplexity is None:
        perplexity = min(30, (len(features) - 1) / 3)  # 常用 30；只有十几张图时按图片数减小
    if not 0 < perplexity < len(features):
        raise ValueError(f"困惑度要大于 0、小于图片数 {len(features)}，现在是 {perplexity}：改小 PERPLEXITY，或设为 None。")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float32))


# ---------------------------------------------------------------- 画图

def _class_styles(count: int) -> list:
    """每个类别的（颜色, 形状）：不超过 20 类时每类一种颜色（tab20）；更多时 10 种颜色、每 10 类换一种形状。"""
    import matplotlib as mpl

    if count <= 20:
        colors = mpl.colormaps["tab20"].colors
        return [(colors[i], MARKERS[i % len(MARKERS)]) for i in range(count)]
    if count > 10 * len(MARKERS):
        raise ValueError(f"最多能区分 {10 * len(MARKERS)} 个类别，这里有 {count} 个。")
    colors = mpl.colormaps["tab10"].colors
    return [(colors[i % 10], MARKERS[i // 10]) for i in range(count)]


def plot_embeddings(embeddings: dict, labels, class_names, *, ncols: int | None = None, suptitle: str | None = None):
    """{标题: (图片数, 2) 的坐标} 画成几张并排的 t-SNE 散点图（点的顺序都对应 labels），每类一种颜色和形状，
    共用右侧的中文图例；ncols 为 None 时 4 张以内每行 2 张，更多时每行 3 张。"""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels, styles = np.asarray(labels), _class_styles(len(class_names))
    present = np.unique(labels)
    ncols = ncols or (min(len(embeddings), 2) if len(embeddings) <= 4 else 3)
    nrows = math.ceil(len(embeddings) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, (title, points) in zip(axes.flat, embeddings.items()):
        points = np.asarray(points)
        for c in present:
            color, marker = styles[c]
            ax.scatter(points[labels == c, 0], points[labels == c, 1], color=color, marker=marker, s=30, alpha=0.85,
                       edgecolors="white", linewidths=0.3)
        ax.set(title=title, xticks=[], yticks=[])  # t-SNE 的坐标值本身没有含义
    for ax in axes.flat[len(embeddings):]:
        ax.set_visible(False)  # 多出来的空位
    handles = [Line2D([], [], linestyle="", marker=styles[c][1], color=styles[c][0], markersize=7, label=class_names[c])
               for c in present]
    fig.legend(handles=handles, title="类别", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               ncols=2 if len(present) > 15 else 1)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
