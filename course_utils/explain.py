"""模型在看哪里：Grad-CAM 热力图（选学 10 用，笔记本里写 ``cu.explain.grad_cam(...)``）。

Grad-CAM 由 captum 计算（``LayerGradCam``，放大用 ``LayerAttribution.interpolate``）：类别得分对最后一张特征图求梯度，
每个通道的梯度在空间上取平均作为权重，按权重把各通道加起来、只留正的部分，再放大到输入大小。这里只做课程需要的几件事：
找到最后一张特征图、让冻结的模型也能算、算完把模型原样还回去、把热力图叠在图片上画出来。
"""

from __future__ import annotations

import math

from .data import denormalize
from .models import eval_mode
from .viz import message_figure

__all__ = ["cam_target_layer", "grad_cam", "plot_grad_cam", "plot_feature_grid"]


def cam_target_layer(model):
    """Grad-CAM 默认看的层：输出最后一张特征图的模块（后面只剩全局平均池化和分类头）。ResNet-18 是 ``layer4``；
    Lite0 是 ``bn2``（timm 的 BatchNormAct2d，紧跟 ReLU6，输出就是 ``forward_features`` 的结果）。"""
    if hasattr(model, "layer4"):
        return model.layer4
    if hasattr(model, "conv_head") and hasattr(model, "bn2"):
        return model.bn2
    raise ValueError(f"不知道 {type(model).__name__} 的最后一张特征图在哪里：课程只认识 ResNet-18（layer4）和 "
                     "EfficientNet-Lite0（bn2）。可以自己指定一层，例如 "
                     "cu.explain.grad_cam(model, images, layer=model.某一层, device=DEVICE)，"
                     "选输出形状为 (批量大小, 通道数, 高, 宽) 的最后一个模块。")


def grad_cam(model, images, targets=None, *, layer=None, device):
    """对一批归一化过的图片 (批量大小, 通道数, 高, 宽) 各算一张 Grad-CAM 热力图，返回 CPU 上 (张数, 高, 宽)、0–1 的张量。

    targets：每张图解释哪个类别（整数、列表、数组或张量），None 表示模型自己的预测；layer：None 表示
    ``cam_target_layer(model)``。freeze 的主干不求梯度也能算（captum 让特征图自己求梯度）；算完模型原样还回：
    train/eval 模式、requires_grad、BatchNorm 统计量都不变，也不留 .grad。每张图除以自己的最大值；全是 0 时保持为 0。
    """
    import numpy as np
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    if len(images) == 0:  # 例如测试集上没有分错的图片
        return torch.zeros(0, *images.shape[-2:])
    layer = cam_target_layer(model) if layer is None else layer
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = images.detach().clone().to(device)  # 复制成普通张量：在 no_grad / inference_mode 里得到的图片也能求梯度
        if targets is None:
            targets = model(inputs).argmax(dim=1)
        if not isinstance(targets, (int, torch.Tensor)):
            targets = torch.from_numpy(np.array(targets, dtype=np.int64))  # np.array 会复制：倒序切片也能用
        if isinstance(targets, torch.Tensor):
            targets = targets.to(device=device, dtype=torch.long).reshape(-1)
        cams = LayerGradCam(model, layer).attribute(inputs, target=targets, relu_attributions=True)
    cams = LayerAttribution.interpolate(cams.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    cams = cams[:, 0].float().cpu()  # (张数, 高, 宽)
    return (cams / cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]).clamp(0, 1)


def plot_grad_cam(images, heatmaps, titles, *, mean, std, alpha: float = 0.5, ncols: int | None = None,
                  row_labels=None, title_colors=None):
    """把 ``grad_cam`` 的热力图半透明地叠在（用 mean、std 撤销归一化的）图片上排成网格，每张一个中文标题。

    title_colors：每个标题的颜色（例如分错的标红）；row_labels：每行左边的说明（对比几个模型时用）。
    红色越深，这块区域对标题里那个类别的贡献越大；蓝色表示几乎没有贡献。
    """
    import matplotlib.pyplot as plt

    count = len(images)
    if count == 0:  # 例如测试集上没有分错的图片
        return message_figure("没有符合条件的图片")
    ncols = ncols or min(count, 4)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + (0.6 if row_labels else 0), 3.0 * nrows),
                             squeeze=False)
    shown = denormalize(images, mean, std).permute(0, 2, 3, 1).cpu().numpy()  # (张数, 高, 宽, 通道数)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            fig.delaxes(ax)  # 只留下有图的格子
            continue
        ax.imshow(shown[k])
        ax.imshow(heatmaps[k].cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set(xticks=[], yticks=[])
        ax.set_title(str(titles[k]), fontsize=9, color=title_colors[k] if title_colors is not None else "black")
    for row, label in enumerate(row_labels or ()):
        axes[row, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig


def plot_feature_grid(image_path, grids: dict):
    """同一张图缩放到几个边长，画上最后一张特征图的格子（grids：{输入边长: (特征图的高, 宽)}，如 ``{224: (7, 7)}``）：
    热力图在每个格子里只有一个值，所以很粗。"""
    import matplotlib.pyplot as plt
    from PIL import Image
    from torchvision.transforms import v2

    fig, axes = plt.subplots(1, len(grids), figsize=(3.0 * len(grids), 3.3), squeeze=False)
    original = Image.open(image_path).convert("RGB")
    for ax, (size, (height, width)) in zip(axes[0], grids.items()):
        ax.imshow(v2.CenterCrop(size)(v2.Resize(size)(original)), extent=(0, size, size, 0))
        for k in range(1, width):
            ax.axvline(k * size / width, color="white", linewidth=1.2)
        for k in range(1, height):
            ax.axhline(k * size / height, color="white", linewidth=1.2)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"{size}×{size} 像素 → {height}×{width} 格", fontsize=10)
    fig.tight_layout()
    return fig
