"""评估与预测的图表：混淆矩阵、精确率–召回率曲线、分错的图片、检查点摘要，以及 07 写出来的 ``predict_image``（一字不差）。

指标本身由笔记本 05 直接调用 scikit-learn 计算；这里只画笔记本里不必一行行读的图。
"""

from __future__ import annotations

import torch
from PIL import Image

from .data import build_transforms, denormalize
from .models import strategy_label
from .viz import message_figure, show_images

__all__ = [
    "plot_confusion_matrix", "plot_pr_curves", "show_misclassified", "checkpoint_transform", "checkpoint_summary",
    "predict_image", "plot_topk", "show_model_input",
]


def plot_confusion_matrix(labels, preds, class_names, normalize: bool = False):
    """混淆矩阵热力图（行是真实类别，列是预测类别）；normalize=True 时每行除以这一类的图片数。
    值为 0 的格子留空：对角线以外写着数字的格子就是模型犯过的错误。"""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, preds, labels=np.arange(len(class_names)), normalize="true" if normalize else None)
    table = pd.DataFrame(matrix, index=list(class_names), columns=list(class_names))
    size = max(4.0, 0.42 * len(class_names) + 2.5)  # 类别多时把图放大，格子里的数字才看得清
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    annot = np.vectorize(lambda v: "" if v == 0 else (str(int(v)) if not normalize else "<1%" if v < 0.005 else f"{v:.0%}"),
                         otypes=[object])(matrix)
    sns.heatmap(table, annot=annot if len(class_names) <= 30 else False, fmt="", cmap="Blues", square=True,
                linewidths=0.5, annot_kws={"fontsize": 8}, ax=ax, vmin=0, vmax=1 if normalize else None)
    if not normalize:  # 计数只有整数，颜色条也只标整数
        ax.collections[0].colorbar.locator = MaxNLocator(integer=True)
        ax.collections[0].colorbar.update_ticks()
    ax.set(xlabel="预测类别", ylabel="真实类别", title="混淆矩阵（按行归一化）" if normalize else "混淆矩阵（图片数）")
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig


def plot_pr_curves(probs, labels, class_names, classes):
    """classes（要画的类名，例如 AP 最低的几个）的精确率–召回率曲线（一对其余），图例里写出各自的 AP。

    probs 是 (图片数, 类别数) 的概率，labels 是真实类别序号。圆点是模型实际的判定（取概率最大的类别）得到的精确率和
    召回率：它不是给这一类的概率设阈值，所以常常不在曲线上；从没被判成这一类时落在原点。
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    probs, labels = np.asarray(probs), np.asarray(labels)
    unknown = [name for name in classes if name not in list(class_names)]
    if unknown:
        raise ValueError(f"{'、'.join(map(str, unknown))} 不在这个模型的类别里；可选的类别：{'、'.join(class_names)}。")
    preds = probs.argmax(axis=1)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in classes:
        index = list(class_names).index(name)
        positives = labels == index
        if not positives.any():  # 没有正样本就没有召回率可言，也画不出曲线
            ax.plot([], [], " ", label=f"{name}（测试集里没有这一类）")
            continue
        precision, recall, _ = precision_recall_curve(positives, probs[:, index])
        start = np.flatnonzero(recall >= 1).max()  # 召回率到 1 之后再降低阈值，只会让精确率一路掉到正样本占比：不画
        precision, recall = precision[start:], recall[start:]
        ap = average_precision_score(positives, probs[:, index])
        line, = ax.step(recall, precision, where="post", label=f"{name}（AP {ap:.2f}）")
        chosen = preds == index
        hits = (chosen & positives).sum()
        ax.plot(hits / max(positives.sum(), 1), hits / max(chosen.sum(), 1), "o", color=line.get_color())
    ax.set(xlabel="召回率", ylabel="精确率", xlim=(0, 1.02), ylim=(0, 1.05),
           title="精确率–召回率曲线（圆点：取概率最大的类别时的结果）")
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    return fig


def show_misclassified(probs, labels, paths, class_names, n: int = 12, cols: int = 4):
    """把分错的图片排成网格，每张标出真实类别、预测类别和置信度；最“自信”的错误排在最前面。"""
    import numpy as np

    probs, labels = np.asarray(probs), np.asarray(labels)
    preds, confidences = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-confidences[wrong], kind="stable")][:n]
    if len(wrong) == 0:
        return message_figure("没有分错的图片")
    titles = [f"真实：{class_names[labels[i]]}\n预测：{class_names[preds[i]]}（{confidences[i]:.0%}）" for i in wrong]
    return show_images([paths[i] for i in wrong], titles, ncols=min(cols, len(wrong)), size=2.6,
                       title_colors=["firebrick"] * len(wrong))


def checkpoint_transform(meta: dict):
    """按检查点记下的尺寸、均值和标准差重建评估预处理：与训练后评估测试集时完全相同（03 的 ``eval_tf``）。"""
    return build_transforms(meta["image_size"], meta["resize_size"], meta["mean"], meta["std"])[1]


def checkpoint_summary(meta: dict):
    """检查点元数据的“项目 / 取值”小表：模型从哪里来、用什么数据训练、效果如何。"""
    import pandas as pd

    best = meta.get("best_val_acc")
    rows = {
        "网络结构": meta.get("arch"), "迁移策略": strategy_label(meta.get("strategy")), "运行档位": meta.get("profile"),
        "类别数": meta.get("num_classes"), "输入边长（像素）": meta.get("image_size"),
        "评估时缩放到": meta.get("resize_size"), "归一化均值 / 标准差": f"{meta.get('mean')} / {meta.get('std')}",
        "最佳轮次": meta.get("best_epoch"), "最佳验证准确率": f"{best:.1%}" if best is not None else None,
        "初始权重": meta.get("weights_note") or meta.get("weights") or "随机初始化",
    }
    return pd.DataFrame({"取值": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="项目"))


# ---------------------------------------------------------------- 笔记本 07 写出来的代码（原样保存在这里）

def predict_image(model, image_path, transform, class_names, device, k=3):
    """预测一张图片：返回概率最高的 k 个 (类名, 概率)，从高到低。"""
    image = Image.open(image_path).convert("RGB")  # 和 ImageFolder 读图的方式相同
    batch = transform(image).unsqueeze(0).to(device)  # (1, 通道数, 高, 宽)：模型一次吃一批，这一批只有一张
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=1)[0]  # 去掉批次维：(类别数,)，每类一个概率，加起来等于 1
    top = probs.topk(k)
    return [(class_names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def plot_topk(topk, title: str = "模型的前几名预测"):
    """把 ``predict_image`` 的结果画成横向条形图：最可能的类别在最上面，条尾标出概率。"""
    import matplotlib.pyplot as plt

    names, probs = [name for name, _ in topk][::-1], [p for _, p in topk][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.55 * len(topk) + 1.2))
    bars = ax.barh(names, probs, color="tab:orange")
    ax.bar_label(bars, labels=[f"{p:.1%}" for p in probs], padding=3)
    ax.set_xlim(0, 1.12)
    ax.set(xlabel="概率", title=title)
    fig.tight_layout()
    return fig


def show_model_input(image_path, transform, mean, std):
    """左边是原图，右边是经过评估预处理（缩放、中心裁剪、归一化后再还原颜色）真正送进模型的图。"""
    import matplotlib.pyplot as plt

    original = Image.open(image_path).convert("RGB")  # 与 predict_image 读图的方式相同
    tensor = transform(original)  # (通道数, 高, 宽)，已归一化
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.6))
    left.imshow(original)
    left.set_title(f"原图（{original.width}×{original.height}）")
    right.imshow(denormalize(tensor, mean, std).permute(1, 2, 0).numpy())
    right.set_title(f"模型看到的（{tensor.shape[2]}×{tensor.shape[1]}）")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig
