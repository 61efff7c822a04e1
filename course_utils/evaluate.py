"""评估与预测：在测试集上打分、每类指标、混淆矩阵、分错的图片、单张图片预测、检查点摘要。

指标一律交给 ``sklearn.metrics`` 计算（``zero_division=0``：某类一次也没被预测到时，
它的精确率记为 0 而不是报错），表格里的类别用中文类名。三种策略的对比在 ``compare.py``。
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoints import load_checkpoint
from .compare import ensure_checkpoint, strategy_label
from .data import list_image_files, make_datasets, make_loaders, open_rgb_image, prepare_dataset, sample_paths
from .paths import display_path
from .progress import progress_bar
from .transforms import build_eval_transform, denormalize
from .viz import message_figure

if TYPE_CHECKING:  # 只用于类型注解，导入本模块时不会真的导入 numpy / pandas
    import numpy as np
    import pandas as pd

__all__ = [
    "Predictions", "predict", "topk_accuracy", "classification_table", "confusion_table",
    "plot_confusion_matrix", "most_confused_pairs", "average_precision_table", "plot_pr_curves", "show_misclassified", "save_predictions_csv",
    "eval_transform_from_meta", "check_class_names", "predict_image", "plot_topk",
    "show_model_input", "example_image", "checkpoint_summary", "predict_test_set", "checkpoint_test_loader",
]

AVERAGE_ROWS = {"macro": "宏平均", "weighted": "加权平均"}


# ---------------------------------------------------------------- 预测与指标


@dataclass
class Predictions:
    """模型在一个数据集上的全部预测。

    属性：probs（形状 (样本数, 类别数) 的 softmax 概率）、labels（真实类别序号）、
    preds（预测类别序号，即概率最大的那一类）、paths（每个样本的图片路径，顺序与上面一致）。
    """

    probs: "np.ndarray"
    labels: "np.ndarray"
    preds: "np.ndarray"
    paths: list[str]

    @property
    def confidences(self):
        """每个样本预测类别的概率（模型有多“确信”）。"""
        return self.probs.max(axis=1)

    def __len__(self) -> int:
        return len(self.labels)


def predict(model, loader, device) -> Predictions:
    """用模型对 loader 里的全部图片做一次预测（评估模式、不计算梯度）。

    参数：
        model：分类模型，输出 logits；loader：DataLoader，不能打乱顺序（shuffle=False），
        否则无法把预测和图片路径对上；device：计算设备。
    返回：
        Predictions（probs、labels、preds、paths）。
    """
    import torch
    from torch.utils.data import SequentialSampler

    if not isinstance(loader.sampler, SequentialSampler):
        raise ValueError("评估用的 DataLoader 不能打乱顺序：创建它时设置 shuffle=False。")
    model.eval()
    all_probs, all_labels = [], []
    with torch.inference_mode():
        for images, labels in progress_bar(loader, desc="预测", unit="批"):
            logits = model(images.to(device))
            all_probs.append(torch.softmax(logits.float(), dim=1).cpu())
            all_labels.append(labels.cpu())
    probs = torch.cat(all_probs).numpy()
    labels = torch.cat(all_labels).numpy()
    paths = sample_paths(loader.dataset) or [""] * len(labels)
    return Predictions(probs, labels, probs.argmax(axis=1), paths[: len(labels)])


def topk_accuracy(probs, labels, k: int = 1) -> float:
    """top-k 准确率：真实类别排在模型概率前 k 名之内的样本比例。

    k 不小于类别数时，真实类别必然在前 k 名里，直接返回 1.0。
    """
    import numpy as np
    from sklearn.metrics import top_k_accuracy_score

    probs = np.asarray(probs)
    num_classes = probs.shape[1]
    if k >= num_classes:
        return 1.0
    scores = probs[:, 1] if num_classes == 2 else probs  # sklearn 对二分类要求一维得分
    return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(num_classes)))


def classification_table(labels, preds, class_names) -> "pd.DataFrame":
    """每个类别的精确率、召回率、F1 和样本数，最后两行是宏平均和加权平均。

    所有类别都会出现在表里，即使它在测试集里没有样本或一次也没被预测到（记为 0）。
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    classes = np.arange(len(class_names))
    columns = ["精确率", "召回率", "F1", "样本数"]
    scores = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    table = pd.DataFrame(dict(zip(columns, scores)), index=list(class_names))
    for average, row_name in AVERAGE_ROWS.items():
        p, r, f, _ = precision_recall_fscore_support(
            labels, preds, labels=classes, average=average, zero_division=0
        )
        table.loc[row_name] = [p, r, f, len(labels)]
    table["样本数"] = table["样本数"].astype(int)
    table.index.name = "类别"
    return table


def confusion_table(labels, preds, class_names, normalize: bool = False) -> "pd.DataFrame":
    """混淆矩阵表：行是真实类别，列是预测类别；normalize=True 时每行除以该类样本数。"""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(
        labels, preds, labels=np.arange(len(class_names)), normalize="true" if normalize else None
    )
    table = pd.DataFrame(matrix, index=list(class_names), columns=list(class_names))
    table.index.name, table.columns.name = "真实类别", "预测类别"
    return table


def plot_confusion_matrix(labels, preds, class_names, normalize: bool = False):
    """画混淆矩阵热力图（中文类名）；normalize=True 时显示每个真实类别被预测成各类的比例。

    值为 0 的格子留空：对角线以外写着数字的格子就是模型犯过的错误，一眼就能找到。
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    table = confusion_table(labels, preds, class_names, normalize)
    size = max(4.0, 0.42 * len(class_names) + 2.5)  # 类别多时把图放大，格子里的数字才看得清
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(
        table, annot=_cell_labels(table.to_numpy(), normalize) if len(class_names) <= 30 else False, fmt="",
        cmap="Blues", square=True, cbar=True, linewidths=0.5, annot_kws={"fontsize": 8}, ax=ax,
        vmin=0, vmax=1 if normalize else None,
    )
    if not normalize:  # 计数只有整数，颜色条也只标整数
        ax.collections[0].colorbar.locator = MaxNLocator(integer=True)
        ax.collections[0].colorbar.update_ticks()
    ax.set_xlabel("预测类别")
    ax.set_ylabel("真实类别")
    ax.set_title("混淆矩阵（按行归一化）" if normalize else "混淆矩阵（样本数）")
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig


def _cell_labels(values, normalize: bool):
    """混淆矩阵每个格子里写的字：0 留空；比例写成百分数，不到 1% 的写“<1%”。"""
    import numpy as np

    def label(value) -> str:
        if value == 0:
            return ""
        if not normalize:
            return str(int(value))
        return "<1%" if value < 0.005 else f"{value:.0%}"

    return np.vectorize(label, otypes=[object])(values)


def average_precision_table(predictions: Predictions, class_names) -> "pd.DataFrame":
    """每个类别的平均精确率（AP，精确率–召回率曲线下的面积），从低到高排列，最后一行是宏平均。

    把每个类别看成一个二分类问题（“是这一类” 对 “不是”），按该类的概率从高到低排序来算。
    AP 看的是概率排得对不对，与取哪个阈值无关；测试集里没有样本的类别无法计算，记为空值，不计入宏平均。
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score

    rows = {}
    for index, name in enumerate(class_names):
        positives = predictions.labels == index
        ap = average_precision_score(positives, predictions.probs[:, index]) if positives.any() else np.nan
        rows[name] = {"AP": ap, "样本数": int(positives.sum())}
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("AP", na_position="last")
    table.loc["宏平均"] = [table["AP"].mean(skipna=True), int(table["样本数"].sum())]
    table["样本数"] = table["样本数"].astype(int)
    table.index.name = "类别"
    return table


def plot_pr_curves(predictions: Predictions, class_names, classes=None, worst: int = 4):
    """画几个类别的精确率–召回率曲线（一对其余），图例里写出各自的 AP。

    参数：
        classes：要画的类名列表；None 时画 AP 最低的 ``worst`` 个类别（最值得关注的那几个）。
    每条曲线旁的圆点是模型实际的判定方式（取概率最大的类别）得到的精确率和召回率；这种判定不是给
    这一类的概率设阈值，所以圆点常常不在曲线上；从没被判成这一类时落在原点。
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    table = average_precision_table(predictions, class_names)
    if classes is None:
        classes = [name for name in table.index[:-1] if not np.isnan(table.loc[name, "AP"])][:worst]
    unknown = [name for name in classes if name not in class_names]
    if unknown:
        raise ValueError(f"类别 {unknown} 不在这个模型的类别里。可选：{'、'.join(class_names)}。")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in classes:
        index = list(class_names).index(name)
        positives = predictions.labels == index
        precision, recall, _ = precision_recall_curve(positives, predictions.probs[:, index])
        line, = ax.step(recall, precision, where="post", label=f"{name}（AP {table.loc[name, 'AP']:.2f}）")
        chosen = predictions.preds == index  # 实际判定：这一类的概率最大
        hits = (chosen & positives).sum()
        ax.plot(hits / max(positives.sum(), 1), hits / max(chosen.sum(), 1), "o", color=line.get_color())
    ax.set(xlabel="召回率", ylabel="精确率", xlim=(0, 1.02), ylim=(0, 1.05),
           title="精确率–召回率曲线（圆点：取概率最大的类别时的结果）")
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    return fig


def most_confused_pairs(labels, preds, class_names, top: int = 5) -> "pd.DataFrame":
    """最常见的错误：哪个真实类别最常被错认成哪个类别。

    返回的表按次数从多到少排列（次数相同时按真实类别、预测类别的序号），
    “占该类比例”是这类错误占该真实类别全部样本的比例。
    """
    import pandas as pd

    counts = confusion_table(labels, preds, class_names)
    support = counts.sum(axis=1)
    rows = [
        {"真实类别": true_name, "被预测为": pred_name, "次数": int(counts.iat[i, j]),
         "占该类比例": counts.iat[i, j] / support.iat[i], "_i": i, "_j": j}
        for i, true_name in enumerate(class_names)
        for j, pred_name in enumerate(class_names)
        if i != j and counts.iat[i, j] > 0
    ]
    columns = ["真实类别", "被预测为", "次数", "占该类比例"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows).sort_values(["次数", "_i", "_j"], ascending=[False, True, True])
    return table[columns].head(top).reset_index(drop=True)


def show_misclassified(predictions: Predictions, class_names, n: int = 12, cols: int = 4):
    """把分错的图片排成网格，每张标出真实类别、预测类别和模型的置信度。

    最“自信”的错误排在最前面：它们最值得看。没有分错的图片时，图里写一行说明。
    """
    import matplotlib.pyplot as plt
    import numpy as np

    wrong = np.flatnonzero(predictions.preds != predictions.labels)
    wrong = wrong[np.argsort(-predictions.confidences[wrong], kind="stable")][:n]
    if len(wrong) == 0:
        return message_figure("没有分错的图片")
    titles = [
        f"真实：{class_names[predictions.labels[i]]}\n"
        f"预测：{class_names[predictions.preds[i]]}（{predictions.confidences[i]:.0%}）"
        for i in wrong
    ]
    from .viz import show_images

    return show_images([predictions.paths[i] for i in wrong], titles, ncols=min(cols, len(wrong)),
                       size=2.6, title_colors=["firebrick"] * len(wrong))


def save_predictions_csv(predictions: Predictions, class_names, path) -> Path:
    """把每张图片的预测写成 CSV（UTF-8 带 BOM，Excel 能直接打开中文），返回文件路径。

    列：图片（仓库里的图片写相对仓库根目录的路径，见 ``cu.display_path``）、真实类别、预测类别、
    置信度、是否正确，以及每个类别的概率（“概率-类名”）。
    """
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    table = pd.DataFrame({
        "图片": [display_path(p) if p else "" for p in predictions.paths],
        "真实类别": [names[i] for i in predictions.labels],
        "预测类别": [names[i] for i in predictions.preds],
        "置信度": predictions.confidences,
        "是否正确": predictions.preds == predictions.labels,
    })
    probs = pd.DataFrame(predictions.probs, columns=[f"概率-{name}" for name in names])
    pd.concat([table, probs], axis=1).to_csv(path, index=False, encoding="utf-8-sig")
    return path


# ---------------------------------------------------------------- 单张图片预测


def eval_transform_from_meta(meta: dict):
    """按检查点记录的输入尺寸、均值和标准差重建评估用的预处理（与训练后评估测试集时完全相同）。"""
    return build_eval_transform(meta["image_size"], meta["resize_size"], meta["mean"], meta["std"])


def check_class_names(meta: dict, class_names) -> list[str]:
    """确认数据集的类别与检查点训练时的类别一致（顺序也要一致），返回类名列表。"""
    expected = list(meta["class_names"])
    if list(class_names) != expected:
        raise ValueError(
            f"数据集的类别与检查点不一致：检查点有 {len(expected)} 类，数据集有 {len(class_names)} 类。"
            "检查 PROFILE 是否与训练时相同，或用当前档位重新运行 04_train.ipynb。"
        )
    return expected


def predict_image(model, image, transform, class_names, device, k: int = 3) -> "pd.DataFrame":
    """预测一张图片，返回概率最高的 k 个类别（排名、类别、概率）。

    参数：
        image：图片路径或 PIL 图片；transform：评估用的预处理（``eval_transform_from_meta(meta)``），
        与评估测试集时完全一样；k：返回前几名。
    """
    import pandas as pd
    import torch

    batch = transform(open_rgb_image(image)).unsqueeze(0).to(device)  # (1, 通道数, 高, 宽)
    model.eval()
    with torch.inference_mode():
        probs = torch.softmax(model(batch).float(), dim=1)[0].cpu()
    top = torch.topk(probs, k=min(k, len(class_names)))
    return pd.DataFrame({
        "排名": range(1, len(top.indices) + 1),
        "类别": [class_names[i] for i in top.indices.tolist()],
        "概率": top.values.numpy(),
    }).set_index("排名")


def plot_topk(topk: "pd.DataFrame", title: str = "模型的前几名预测"):
    """把 ``predict_image`` 的结果画成横向条形图：最可能的类别在最上面，条尾标出概率。"""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.55 * len(topk) + 1.2))
    bars = ax.barh(topk["类别"][::-1], topk["概率"][::-1], color="tab:orange")
    ax.bar_label(bars, labels=[f"{p:.1%}" for p in topk["概率"][::-1]], padding=3)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("概率")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def show_model_input(image, transform, mean, std):
    """左边是原图，右边是经过评估预处理（缩放、中心裁剪、归一化后再还原颜色）真正送进模型的图。"""
    import matplotlib.pyplot as plt

    original = open_rgb_image(image)
    tensor = transform(original)  # (通道数, 高, 宽)，已归一化
    shown = denormalize(tensor, mean, std)  # 还原颜色，取值 0–1
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.6))
    left.imshow(original)
    left.set_title(f"原图（{original.width}×{original.height}）")
    right.imshow(shown.permute(1, 2, 0).numpy())
    right.set_title(f"模型看到的（{tensor.shape[2]}×{tensor.shape[1]}）")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig


def example_image(settings) -> Path:
    """课程总能找到的一张示例图：当前档位数据集测试集（val/）里第一个类别的第一张图。

    数据集不存在时会按档位准备（demo / smoke 档位当场生成，不需要下载）。
    """
    root = Path(prepare_dataset(settings))
    test_images = [path for split, _, path in list_image_files(root) if split == "val"]
    if not test_images:
        raise FileNotFoundError(
            f"{display_path(root / 'val')} 里没有图片。删除这个数据集目录后重新运行，让课程重新准备数据。"
        )
    return test_images[0]


# ---------------------------------------------------------------- 检查点（05、07 用）


def checkpoint_summary(meta: dict) -> "pd.DataFrame":
    """把检查点元数据整理成“项目 / 取值”两列的小表：模型从哪里来、用什么数据训练、效果如何。"""
    import pandas as pd

    best_val_acc = meta.get("best_val_acc")
    rows = {
        "模型结构": meta.get("arch"),
        "迁移策略": strategy_label(meta.get("strategy")),
        "运行档位": meta.get("profile"),
        "类别数": meta.get("num_classes"),
        "输入边长（像素）": meta.get("image_size"),
        "评估时缩放到": meta.get("resize_size"),
        "最佳轮次": meta.get("best_epoch"),
        "最佳验证准确率": f"{best_val_acc:.1%}" if best_val_acc is not None else None,
        "初始权重": meta.get("weights_note") or meta.get("weights") or "随机初始化",
    }
    return pd.DataFrame({"取值": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="项目"))


def predict_test_set(settings, strategy: str, device) -> tuple[Predictions, list[str]]:
    """05 第 2–4 节的合并版：加载某个策略的最优检查点，在测试集上预测一次。

    检查点不存在时按 ``ensure_checkpoint`` 的规则处理（demo / smoke 档位当场训练）；
    预处理的尺寸取自检查点，类别必须与训练时一致。
    返回：
        (Predictions, 类名列表)。
    """
    model, meta = load_checkpoint(ensure_checkpoint(settings.profile, strategy), device=device)
    test_loader, class_names = checkpoint_test_loader(settings, meta, device)
    return predict(model, test_loader, device), class_names


def checkpoint_test_loader(settings, meta: dict, device):
    """05 第 3 节的合并版：按检查点记录的尺寸准备测试集的 DataLoader，并确认类别与训练时一致。

    返回：
        (test_loader, 类名列表)。
    """
    eval_settings = settings.replace(image_size=meta["image_size"], resize_size=meta["resize_size"])
    splits = make_datasets(eval_settings, prepare_dataset(eval_settings))
    class_names = check_class_names(meta, splits.class_names)
    return make_loaders(splits, eval_settings, device).test, class_names
