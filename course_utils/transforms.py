"""图像预处理：训练用的随机数据增广、评估用的固定预处理、ImageNet 归一化与反归一化。

和原教程的预处理一一对应，只是换成了 torchvision 推荐的 ``transforms.v2`` 写法：
原来的 ``ToTensor()`` 在 v2 里拆成 ``ToImage()``（PIL 图片 -> 张量）和
``ToDtype(torch.float32, scale=True)``（0–255 的整数 -> 0–1 的小数），效果相同。
"""

from __future__ import annotations

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "build_transforms", "build_eval_transform", "denormalize",
    "augmentation_steps", "describe_transform", "channel_stats", "pixels_by_channel",
]

CHANNEL_NAMES = ("R（红）", "G（绿）", "B（蓝）")

# ImageNet 训练集上每个颜色通道（R, G, B）的均值和标准差；预训练模型就是按它归一化训练的
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_float_tensor():
    """PIL 图片 -> 0–1 之间的 float32 张量 (通道数, 高, 宽)，相当于旧写法的 ToTensor()。"""
    import torch
    from torchvision.transforms import v2

    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def build_transforms(image_size: int = 224, resize_size: int = 256):
    """训练和评估的预处理，返回 (train_tf, eval_tf)。

    训练：随机裁剪并缩放到 image_size（RandomResizedCrop）、随机水平翻转、转张量、归一化；
    评估：缩放到 resize_size、从中心裁出 image_size、转张量、归一化（没有随机性）。
    """
    from torchvision.transforms import v2

    train_tf = v2.Compose([
        v2.RandomResizedCrop(image_size),  # 随机取原图 8%–100% 的区域，再缩放到 image_size
        v2.RandomHorizontalFlip(),  # 一半的概率左右翻转
        *_to_float_tensor(),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return train_tf, build_eval_transform(image_size, resize_size)


def build_eval_transform(image_size: int = 224, resize_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """评估（验证、测试、预测新图片）用的固定预处理：Resize -> CenterCrop -> 张量 -> 归一化。

    mean、std 默认是 ImageNet 的统计量（预训练权重就是按它归一化训练的）；从检查点重建时用检查点记下的值。
    """
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(resize_size),  # 短边缩放到 resize_size，保持宽高比
        v2.CenterCrop(image_size),
        *_to_float_tensor(),
        v2.Normalize(list(mean), list(std)),
    ])


def denormalize(tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """撤销归一化：x * std + mean，并截到 [0, 1]，便于显示。

    参数：
        tensor：形状 (通道数, 高, 宽) 或 (批量大小, 通道数, 高, 宽) 的张量。
    返回：
        新张量（原张量不变）。
    """
    import torch

    shape = (-1, 1, 1)
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    return (tensor.detach() * std + mean).clamp(0, 1).as_subclass(torch.Tensor)


def augmentation_steps(image_size: int = 224, resize_size: int = 256) -> dict:
    """把训练和评估预处理拆成单独的步骤，便于逐个看效果。返回 {中文名: 变换}，每个变换输入输出都是 PIL 图片。"""
    from torchvision.transforms import v2

    return {
        "随机裁剪缩放 RandomResizedCrop": v2.RandomResizedCrop(image_size),
        "水平翻转 RandomHorizontalFlip": v2.RandomHorizontalFlip(p=1.0),  # p=1：一定翻转，方便观察
        f"缩放 Resize({resize_size})": v2.Resize(resize_size),
        f"中心裁剪 CenterCrop({image_size})": v2.Compose([v2.Resize(resize_size), v2.CenterCrop(image_size)]),
    }


STEP_HELP = {
    "RandomResizedCrop": ("训练", "随机取一块区域（面积 8%–100%、宽高比 3/4–4/3）并缩放到固定边长：模型见到不同位置和大小的水果"),
    "RandomHorizontalFlip": ("训练", "一半概率左右翻转：水果翻过来还是同一种水果"),
    "Resize": ("评估", "短边缩放到固定长度，保持宽高比"),
    "CenterCrop": ("评估", "从中心裁出正方形，大小与训练时一致"),
    "ToImage": ("两者", "PIL 图片 -> 张量，形状 (通道数, 高, 宽)，取值 0–255"),
    "ToDtype": ("两者", "转成 float32 并除以 255，取值 0–1"),
    "Normalize": ("两者", "每个通道减去 ImageNet 均值、除以标准差，与预训练时一致"),
}


def describe_transform(transform):
    """把一个 Compose 列成表格：步骤、参数、用在哪里、作用（中文）。

    返回 pandas 的 Styler（表格的显示版本，长文字完整显示、不被截断）；原始 DataFrame 在它的 ``.data`` 里。
    """
    import re

    import pandas as pd

    rows = []
    for step in getattr(transform, "transforms", [transform]):
        name = type(step).__name__
        where, what = STEP_HELP.get(name, ("", ""))
        args = repr(step)[len(name) + 1:-1]  # 去掉 "名字(" 和末尾的 ")"
        args = re.sub(r"(\d+\.\d{3})\d+", r"\1", args)  # 1.3333333333333333 -> 1.333
        rows.append({"步骤": name, "参数": args, "用于": where, "作用": what})
    table = pd.DataFrame(rows)
    return table.style.hide(axis="index").set_properties(**{"text-align": "left"})


def pixels_by_channel(tensor):
    """把 (通道数, 高, 宽) 或 (批量大小, 通道数, 高, 宽) 的张量整理成 (通道数, 像素个数)：每行是一个通道的全部像素值。"""
    x = tensor.detach().float().cpu()
    if x.dim() == 4:
        x = x.transpose(0, 1)  # 批量：把通道放到第 0 维
    return x.reshape(x.shape[0], -1)


def channel_stats(tensor):
    """每个颜色通道的最小值、最大值、均值、标准差（张量形状 (通道数, 高, 宽) 或 (批量大小, 通道数, 高, 宽)）。"""
    import pandas as pd

    flat = pixels_by_channel(tensor)
    return pd.DataFrame({
        "最小值": flat.min(1).values.numpy(), "最大值": flat.max(1).values.numpy(),
        "均值": flat.mean(1).numpy(), "标准差": flat.std(1).numpy(),
    }, index=list(CHANNEL_NAMES[: flat.shape[0]])).round(3)
