"""特征缓存（只用于 freeze）：冻结的主干对同一张图总是给出同样的特征，那就只算一次。

之后每一轮只训练分类头，输入是缓存好的特征，比每轮把图片重新送进整个网络快得多。
代价：训练集的特征用评估时的固定预处理计算，不再有随机数据增广。
"""

from __future__ import annotations

import itertools
import time

from .models import head_module
from .progress import is_headless, progress_bar

__all__ = ["extract_features", "cache_features"]


def batch_to_device(images, labels, device, channels_last: bool):
    """把一批数据送到 device；channels_last 只用于 4 维的图片张量（训练循环和特征提取共用）。"""
    import torch

    memory_format = torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


def extract_features(model, loader, device, *, max_batches: int | None = None, channels_last: bool = False,
                     desc: str = "提取特征"):
    """把 loader 里的图片送进模型，收集分类头的输入（即主干输出的特征）。

    返回 ``(features, labels)``：形状 ``(样本数, 特征维数)`` 和 ``(样本数,)`` 的 CPU 张量。
    """
    import torch

    device = torch.device(device)
    chunks, all_labels = [], []
    handle = head_module(model).register_forward_pre_hook(lambda module, args: chunks.append(args[0].float().cpu()))
    model.eval()
    try:
        with torch.no_grad():  # 不用 inference_mode：这些特征之后还要参与分类头的反向传播
            total = min(len(loader), max_batches) if max_batches else len(loader)
            bar = progress_bar(loader, total=total, desc=desc, unit="批", leave=False, disable=is_headless())
            for images, labels in itertools.islice(bar, total):
                model(batch_to_device(images, labels, device, channels_last)[0])
                all_labels.append(labels.cpu())
    finally:
        handle.remove()
    return torch.cat(chunks), torch.cat(all_labels)


def cache_features(model, train_loader, val_loader, device, *, max_batches: int | None = None,
                   channels_last: bool = False):
    """把训练集和验证集的主干特征各算一遍，返回 ``(分类头, 训练特征 loader, 验证特征 loader, 用时秒数)``。

    训练集换成评估预处理（取自验证集）；给出 max_batches 时只缓存随机抽出的 max_batches 个批次的图片
    （与不缓存时每轮取前几个打乱后的批次相当，而不是只取前几个类别）。训练特征的 loader 用
    train_loader 的随机数生成器打乱，所以同一个种子给出同样的顺序，续训也能接上。
    """
    from torch.utils.data import DataLoader, TensorDataset

    began = time.perf_counter()
    plain_train = _without_augmentation(train_loader, val_loader, max_batches)
    train_set = TensorDataset(*extract_features(model, plain_train, device, channels_last=channels_last,
                                                desc="缓存训练集特征"))
    val_set = TensorDataset(*extract_features(model, val_loader, device, channels_last=channels_last,
                                              desc="缓存验证集特征"))
    batch_size = train_loader.batch_size or 32
    train_data = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                            generator=getattr(train_loader, "generator", None))
    val_data = DataLoader(val_set, batch_size=batch_size)
    return head_module(model), train_data, val_data, time.perf_counter() - began


def _without_augmentation(train_loader, val_loader, max_batches: int | None = None):
    """训练集换成评估时的预处理（取自验证集），按固定顺序读取：特征只算一次，随机增广没有意义。"""
    from torch.utils.data import DataLoader

    if _find_transform(train_loader.dataset) is None:
        dataset = train_loader.dataset  # 本来就没有图像变换（例如预先算好的张量）
    else:
        eval_transform = _find_transform(val_loader.dataset)
        if eval_transform is None:
            raise ValueError("特征缓存需要评估用的预处理，但验证集上找不到 transform。用 cu.make_datasets 创建数据集。")
        dataset = _with_transform(train_loader.dataset, eval_transform)
    if max_batches:
        dataset = _random_subset(dataset, max_batches * (train_loader.batch_size or 1), train_loader)
    return DataLoader(dataset, batch_size=train_loader.batch_size, shuffle=False,
                      num_workers=train_loader.num_workers, collate_fn=train_loader.collate_fn)


def _random_subset(dataset, size: int, train_loader):
    """随机抽 size 个样本（按原顺序排好）。种子取自 train_loader 的生成器的初始种子：
    同样的设置总是抽到同样的图片，也不会消耗生成器的状态（不影响之后的打乱顺序）。"""
    import torch
    from torch.utils.data import Subset

    if size >= len(dataset):
        return dataset
    generator = getattr(train_loader, "generator", None)
    seed = generator.initial_seed() if generator is not None else 0
    picked = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(dataset, sorted(picked.tolist()))


def _find_transform(dataset):
    """沿着 Subset 之类的包装（.dataset）往里找第一个 transform。"""
    while dataset is not None:
        if getattr(dataset, "transform", None) is not None:
            return dataset.transform
        dataset = getattr(dataset, "dataset", None)
    return None


def _with_transform(dataset, transform):
    """返回换了 transform 的副本（原数据集不变）：transform 在哪一层，就换哪一层。"""
    import copy

    if hasattr(dataset, "with_transform"):  # 课程的 ImageFolder 自带这个方法
        return dataset.with_transform(transform)
    dataset = copy.copy(dataset)
    if "transform" in vars(dataset):
        dataset.transform = transform
    elif hasattr(dataset, "dataset"):  # Subset 之类的包装：换里面那一层
        dataset.dataset = _with_transform(dataset.dataset, transform)
    else:
        raise ValueError(f"不知道怎样替换 {type(dataset).__name__} 的预处理；特征缓存需要能换成评估预处理的数据集。")
    return dataset
