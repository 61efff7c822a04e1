"""模型在看哪里：用 Grad-CAM 画出图片里哪些区域推动了模型的预测（10 用）。

Grad-CAM 本身交给 PyTorch 生态的 captum 计算（``captum.attr.LayerGradCam``，上采样用
``LayerAttribution.interpolate``），这里只做课程需要的几件事：找到最后一个卷积块、
让冻结的模型也能算梯度、算完把模型原样还回去、把热力图叠在图片上画出来。

Grad-CAM 的四步：某个类别的得分对最后一个卷积块输出的特征图求梯度；每个通道的梯度在空间上取平均，
作为这个通道的权重；按权重把各通道的特征图加起来，只保留正的部分（ReLU）；最后放大到输入图片的大小。
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .checkpoints import CheckpointNotFound, load_checkpoint
from .compare import ensure_checkpoint, strategy_label
from .data import open_rgb_image
from .evaluate import eval_transform_from_meta
from .models import eval_mode
from .transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from .viz import message_figure

if TYPE_CHECKING:  # 只用于类型注解
    import pandas as pd
    import torch

__all__ = [
    "cam_target_layer", "grad_cam", "plot_grad_cam", "feature_map_sizes", "plot_feature_grid",
    "load_image_batch", "pick_examples", "cam_titles", "show_grad_cam", "compare_grad_cam",
    "load_strategies", "strategies_table",
]

# 各类网络“最后一个卷积块”的位置：名字前缀 -> 取出它的函数
_TARGET_LAYERS = {
    "resnet": lambda model: model.layer4,
    "mobilenet_v3": lambda model: model.features[-1],
    "efficientnet": lambda model: model.features[-1],
}


def cam_target_layer(model, arch: str):
    """Grad-CAM 默认看的层：网络最后一个卷积块（resnet* 是 ``layer4``，mobilenet_v3_* 和 efficientnet_* 是 ``features[-1]``）。

    其他结构给出中文说明，并提示用 ``grad_cam(..., layer=...)`` 自己指定一层。
    """
    for prefix, locate in _TARGET_LAYERS.items():
        if str(arch).startswith(prefix):
            return locate(model)
    supported = "、".join(f"{prefix}*" for prefix in _TARGET_LAYERS)
    raise ValueError(
        f"不知道 {arch!r} 的最后一个卷积块在哪里：课程只认识 {supported}。"
        "可以自己指定一层，例如 cu.grad_cam(model, images, layer=model.某一层, device=DEVICE)，"
        "选最后一个输出特征图（形状为 (批量大小, 通道数, 高, 宽)）的卷积层或卷积块。"
    )


def grad_cam(model, images, *, arch: str = "resnet18", targets=None, layer=None, device) -> "torch.Tensor":
    """对一批图片各算一张 Grad-CAM 热力图，返回 CPU 上形状 (张数, 高, 宽)、取值 0–1 的张量。

    参数：
        model：分类模型，已经放在 device 上；images：(批量大小, 通道数, 高, 宽) 的张量（已归一化）。
        arch：模型结构名，用来找最后一个卷积块；layer 给出时直接用它。
        targets：每张图解释哪个类别（整数、列表或张量）；None 表示模型自己预测的类别。
    冻结的模型（freeze）主干参数不求梯度，特征图本来不在计算图里：captum 在取特征图的钩子里让它自己求梯度
    （从特征图往后建立计算图），所以 freeze 模型同样能算，也不用为冻结的主干建计算图。
    用完后模型原样还回：每一层的 train/eval 模式、requires_grad、BatchNorm 的统计量都不变，
    参数上也不会留下 .grad（captum 用 torch.autograd.grad 只对特征图求梯度）。
    每张热力图各自除以它的最大值；全是 0 时（模型在这张图上找不到支持这个类别的区域）保持为 0。
    """
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    if images.shape[0] == 0:  # 没有图片：返回空结果，画图函数会说明“没有图片”
        return torch.zeros((0, *images.shape[-2:]))
    layer = cam_target_layer(model, arch) if layer is None else layer
    # 在 inference_mode 或 no_grad 里调用也要能求梯度，所以这里明确打开梯度
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = images.detach().to(device).clone()  # 在 inference_mode 里创建的张量不能参与求梯度，换成普通张量
        if targets is None:
            with torch.no_grad():  # 只为知道预测的类别
                targets = model(inputs).argmax(dim=1)
        cams = LayerGradCam(model, layer).attribute(inputs, target=_as_targets(targets, device),
                                                    relu_attributions=True)  # (张数, 1, 特征图高, 特征图宽)
    cams = LayerAttribution.interpolate(cams.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    cams = cams[:, 0].float().cpu()
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-12).reshape(-1, 1, 1)
    return (cams / peak).clamp(0, 1)


def _as_targets(targets, device):
    """把整数、列表、NumPy 数组或张量统一成 captum 接受的目标：一个整数，或长度等于张数的一维张量。"""
    import numpy as np
    import torch

    if isinstance(targets, int):
        return targets
    if not isinstance(targets, torch.Tensor):
        targets = torch.from_numpy(np.array(targets, dtype=np.int64))  # np.array 会复制：倒序切片的数组也能用
    return targets.to(device=device, dtype=torch.long).reshape(-1)


def plot_grad_cam(images, heatmaps, titles, *, mean_std=(IMAGENET_MEAN, IMAGENET_STD), alpha: float = 0.5,
                  ncols: int | None = None, row_labels=None, title_colors=None):
    """把热力图半透明地叠在（撤销归一化的）图片上，排成网格，每张一个中文标题；返回 Figure。

    参数：
        images：(张数, 通道数, 高, 宽) 的张量（归一化过的）；heatmaps：``grad_cam`` 的结果 (张数, 高, 宽)。
        titles：每张图的标题；title_colors：每个标题的颜色（例如分错的标红）。
        mean_std：归一化用的 (均值, 标准差)，用来还原颜色（检查点的 ``meta["mean"], meta["std"]``）。
        alpha：热力图的不透明度；ncols：每行几张；row_labels：每行左边写的说明（对比几个模型时用）。
    颜色越红，这块区域对标题里那个类别的贡献越大；蓝色表示几乎没有贡献。
    """
    import matplotlib.pyplot as plt

    count = len(images)
    if count == 0:
        return message_figure("没有符合条件的图片")
    ncols = ncols or min(count, 4)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + (0.6 if row_labels else 0), 3.0 * nrows),
                             squeeze=False)
    shown = denormalize(images, *mean_std).permute(0, 2, 3, 1).cpu().numpy()  # (张数, 高, 宽, 通道数)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            fig.delaxes(ax)  # 只留下有图的格子
            continue
        ax.imshow(shown[k])
        ax.imshow(heatmaps[k].cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(titles[k]), fontsize=9, color=title_colors[k] if title_colors is not None else "black")
    for row, label in enumerate(row_labels or ()):
        axes[row, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig


def feature_map_sizes(model, layer, image_sizes, device) -> "pd.DataFrame":
    """不同输入边长下，layer 输出的特征图有多大：每行一个边长，列出通道数、高、宽，以及每一格约对应多少像素。

    用一张全 0 的图做一次前向（评估模式、不求梯度），只读形状；模型的模式原样恢复。
    """
    import pandas as pd
    import torch

    shapes, rows = {}, []
    handle = layer.register_forward_hook(lambda module, args, output: shapes.update(last=tuple(output.shape[1:])))
    try:
        with eval_mode(model), torch.inference_mode():
            for size in image_sizes:
                model(torch.zeros(1, 3, size, size, device=device))
                channels, height, width = shapes["last"]
                rows.append({"输入边长（像素）": size, "通道数": channels, "高": height, "宽": width,
                             "每格约对应（像素）": f"{size / height:.0f}×{size / width:.0f}"})
    finally:
        handle.remove()
    return pd.DataFrame(rows).set_index("输入边长（像素）")


def plot_feature_grid(image, sizes: "pd.DataFrame"):
    """把一张图缩放到 sizes 表里的每个边长，画上特征图的格子：热力图每个格子只有一个值，所以很粗。

    参数：
        image：图片路径或 PIL 图片；sizes：``feature_map_sizes`` 的表（用到“高”“宽”两列）。
    """
    import matplotlib.pyplot as plt
    from torchvision.transforms import v2

    fig, axes = plt.subplots(1, len(sizes), figsize=(3.0 * len(sizes), 3.3), squeeze=False)
    for ax, (size, row) in zip(axes[0], sizes.iterrows()):
        picture = v2.CenterCrop(size)(v2.Resize(size)(open_rgb_image(image)))
        ax.imshow(picture, extent=(0, size, size, 0))
        for k in range(1, int(row["宽"])):
            ax.axvline(k * size / row["宽"], color="white", linewidth=1.2)
        for k in range(1, int(row["高"])):
            ax.axhline(k * size / row["高"], color="white", linewidth=1.2)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{size}×{size} 像素 → {int(row['高'])}×{int(row['宽'])} 格", fontsize=10)
    fig.tight_layout()
    return fig


def load_image_batch(images, transform) -> "torch.Tensor":
    """把若干张图片（路径或 PIL 图片）用同一个预处理变成一批张量 (张数, 通道数, 高, 宽)；没有图片时返回空张量。"""
    import torch

    tensors = [transform(open_rgb_image(image)) for image in images]
    return torch.stack(tensors) if tensors else torch.zeros(0, 3, 0, 0)


def pick_examples(predictions, *, correct: bool | None = True, n: int = 8) -> list[int]:
    """从预测结果里挑 n 张图的序号：correct=True 挑分对的，False 挑分错的，None 不管对错。

    先按类别轮流挑，让每个类别都尽量出现；同一类里模型最“确信”的排在前面（分错时即最自信的错误）。
    """
    import numpy as np

    right = predictions.preds == predictions.labels
    pool = np.arange(len(predictions)) if correct is None else np.flatnonzero(right == bool(correct))
    pool = pool[np.argsort(-predictions.confidences[pool], kind="stable")]
    by_class: dict[int, list[int]] = {}
    for index in pool:
        by_class.setdefault(int(predictions.labels[index]), []).append(int(index))
    queues = [by_class[label] for label in sorted(by_class)]
    picked = []
    while len(picked) < n and any(queues):
        picked += [queue.pop(0) for queue in queues if queue][: n - len(picked)]
    return picked


def cam_titles(probs, class_names, labels=None) -> tuple[list[str], list[str]]:
    """每张图的标题和颜色：“预测：类名（置信度）”，给出 labels 时前面加一行“真实：类名”，分错的标红。

    参数：
        probs：(张数, 类别数) 的概率（NumPy 数组或张量）；labels：真实类别序号，None 表示不知道。
    返回：
        (标题列表, 颜色列表)。
    """
    import numpy as np

    probs = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs)
    titles, colors = [], []
    for k, row in enumerate(probs):
        pred = int(row.argmax())
        text = f"预测：{class_names[pred]}（{row[pred]:.0%}）"
        if labels is not None:
            text = f"真实：{class_names[int(labels[k])]}\n{text}"
        titles.append(text)
        colors.append("firebrick" if labels is not None and int(labels[k]) != pred else "black")
    return titles, colors


def show_grad_cam(model, meta: dict, predictions, indices, *, device):
    """10 第 6 节那几行的合并版：读入选中的测试图片，对模型预测的类别算 Grad-CAM，画成带标题的网格。

    参数：
        meta：检查点元数据（结构名、类名、预处理尺寸、均值和标准差都从这里取）；
        predictions：``cu.predict`` 的结果；indices：要画的图片在 predictions 里的序号。
    """
    indices = list(indices)
    images = load_image_batch([predictions.paths[i] for i in indices], eval_transform_from_meta(meta))
    heatmaps = grad_cam(model, images, arch=meta["arch"], targets=predictions.preds[indices], device=device)
    titles, colors = cam_titles(predictions.probs[indices], meta["class_names"], predictions.labels[indices])
    return plot_grad_cam(images, heatmaps, titles, mean_std=(meta["mean"], meta["std"]), title_colors=colors)


def compare_grad_cam(models: dict, image_paths, labels, *, device):
    """几个模型看同一批图片：每个模型一行，各自解释自己预测的类别。

    参数：
        models：{策略名: (model, meta)}，例如 ``load_strategies`` 的结果；image_paths：图片路径；
            labels：真实类别序号。各个模型的预处理尺寸可以不同（各按自己的检查点处理），类别须一致。
    没有模型可比时（COMPARE = False，或检查点都拿不到），图里写一行说明。
    """
    import torch

    if not models:
        return message_figure("没有可以比较的模型")
    images_all, heatmaps_all, titles_all, colors_all = [], [], [], []
    for model, meta in models.values():
        images = load_image_batch(image_paths, eval_transform_from_meta(meta))
        with eval_mode(model), torch.inference_mode():
            probs = torch.softmax(model(images.to(device)).float(), dim=1).cpu()
        heatmaps = grad_cam(model, images, arch=meta["arch"], targets=probs.argmax(dim=1), device=device)
        titles, colors = cam_titles(probs, meta["class_names"], labels)
        images_all.append(images)
        heatmaps_all.append(heatmaps)
        titles_all += titles
        colors_all += colors
    _, meta = next(iter(models.values()))
    return plot_grad_cam(torch.cat(images_all), torch.cat(heatmaps_all), titles_all,
                         mean_std=(meta["mean"], meta["std"]), ncols=len(image_paths),
                         row_labels=[strategy_label(name) for name in models], title_colors=colors_all)


def load_strategies(profile: str, strategies, device) -> dict:
    """加载几种策略的最优检查点，返回 {策略名: (model, meta)}；拿不到的打印一句原因后跳过。

    demo 和 smoke 档位没有检查点时当场训练（同 ``ensure_checkpoint``）；full 和 quick 档位不会自动训练，
    这时只说明怎样补上，不中断笔记本。
    """
    loaded = {}
    for strategy in strategies:
        try:
            loaded[strategy] = load_checkpoint(ensure_checkpoint(profile, strategy), device=device)
        except CheckpointNotFound as exc:
            print(f"跳过 {strategy_label(strategy)}：{exc}")
    return loaded


def strategies_table(models: dict) -> "pd.DataFrame":
    """几个模型的来历：每种策略一行，列出初始权重（是否真的用上了 ImageNet 权重）和最佳验证准确率。"""
    import pandas as pd

    rows = {
        strategy_label(name): {
            "初始权重": meta.get("weights_note") or "随机初始化",
            "最佳验证准确率": f"{meta['best_val_acc']:.1%}" if meta.get("best_val_acc") is not None else "",
        }
        for name, (_, meta) in models.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["初始权重", "最佳验证准确率"]).rename_axis("策略")
