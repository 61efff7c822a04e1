"""训练：04 写出来的 ``train_one_epoch`` 和 ``evaluate``（一字不差），以及外面加了检查点、续训、特征缓存的 ``fit``。

``evaluate`` 是课程里唯一的“只前向、不求梯度”的循环：验证、测试、预测和提取特征（分类头换成 ``nn.Identity``）都用它。
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from .checkpoints import CheckpointError, best_epoch, library_versions, read_checkpoint, save_checkpoint
from .models import head_name, set_train_mode
from .paths import display_path
from .progress import progress_bar as tqdm

__all__ = ["train_one_epoch", "evaluate", "fit"]


# ---------------------------------------------------------------- 笔记本 04 写出来的代码（原样保存在这里）

def train_one_epoch(model, loader, criterion, optimizer, device, max_batches=None):
    """训练一轮，返回这一轮的平均损失和准确率；max_batches 不是 None 时只训练这么多个批次。"""
    set_train_mode(model)  # 训练模式，但冻结的 BatchNorm 留在评估模式
    total_loss, correct, seen = 0.0, 0, 0
    for step, (images, labels) in enumerate(tqdm(loader, desc="训练", leave=False)):
        if step == max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        logits = model(images)  # (批量大小, 类别数)
        loss = criterion(logits, labels)
        optimizer.zero_grad()  # 清掉上一步的梯度，否则会累加
        loss.backward()  # 反向传播：算出每个要训练的参数的梯度
        optimizer.step()  # 按梯度更新参数
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


def evaluate(model, loader, device):
    """评估模式下把 loader 里的图片全部过一遍模型，返回 (logits, labels)，都在 CPU 上。"""
    model.eval()  # BatchNorm 用保存的统计量，Dropout 不再随机丢弃
    all_logits, all_labels = [], []
    with torch.no_grad():  # 不记录计算图：省内存，也快
        for images, labels in tqdm(loader, desc="评估", leave=False):
            all_logits.append(model(images.to(device)).float().cpu())
            all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


# ---------------------------------------------------------------- 特征：主干给每张图的向量

def backbone_features(model, loader, device):
    """主干网络对每张图输出的特征（也就是分类头的输入），返回 (特征, labels)。

    做法：暂时把分类头换成 ``nn.Identity()``，再用 ``evaluate`` 过一遍；之后原样换回。
    """
    name = head_name(model)
    head = getattr(model, name)
    setattr(model, name, nn.Identity())
    try:
        return evaluate(model, loader, device)
    finally:
        setattr(model, name, head)


def _cached_loaders(model, train_loader, val_loader, device):
    """freeze 的特征缓存：训练集（换成评估预处理，没有随机增广）和验证集的特征各算一遍，包成新的 DataLoader。"""
    train_ds, val_ds = train_loader.dataset, val_loader.dataset
    if not isinstance(train_ds, Subset) or not isinstance(val_ds, Subset):
        raise ValueError("特征缓存需要 03 的 make_datasets 建的训练集和验证集（Subset 包着 ImageFolder）。")
    folder = copy.copy(train_ds.dataset)  # 训练集的副本，预处理换成验证集的评估预处理
    folder.transform = val_ds.dataset.transform
    if hasattr(folder, "transforms"):  # torchvision 的数据集另存了一份 (transform, target_transform)
        folder.transforms = val_ds.dataset.transforms
    plain = DataLoader(Subset(folder, train_ds.indices), batch_size=train_loader.batch_size)
    train_set = TensorDataset(*backbone_features(model, plain, device))
    val_set = TensorDataset(*backbone_features(model, val_loader, device))
    batch_size = train_loader.batch_size or 32
    return (DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=train_loader.generator),
            DataLoader(val_set, batch_size=batch_size))


# ---------------------------------------------------------------- fit：04 的循环，加上检查点、续训和特征缓存

def fit(model, head, train_loader, val_loader, optimizer, *, epochs: int, device, checkpoint_dir=None,
        run_name: str = "run", resume: bool = False, max_batches: int | None = None, meta: dict | None = None,
        feature_cache: bool = False) -> list[dict]:
    """训练 epochs 轮（每轮 04 的 ``train_one_epoch``，再 ``evaluate`` 验证集），返回历史记录（每轮一个字典：epoch、
    train_loss、train_acc、val_loss、val_acc、lr（分类头的）、seconds、cache_seconds）。

    给出 checkpoint_dir 时，验证准确率创新高就写 ``<run_name>_best.pt``，每轮都写带优化器和随机数状态的
    ``<run_name>_last.pt``；``resume=True`` 从 last 接着训练，结果与不中断时完全相同。meta 写进检查点
    （``cu.checkpoints.REQUIRED_META`` 是必须有的项）。feature_cache=True（只用于 freeze）：主干的输出先算一遍，
    之后每轮只训练分类头；训练集特征用评估预处理算，用数据增广换速度。CPU 和 CUDA 上用 channels_last 内存布局训练
    （2 核 CPU 上 finetune 快 1.3–1.7 倍，见 benchmarks/），结束后换回。
    """
    device = torch.device(device)
    model.to(device)
    run = _Run(model, optimizer, checkpoint_dir, run_name, meta, train_loader.generator)
    if resume:
        run.restore()
    with channels_last(model, device):
        try:
            net, train_data, val_data, cache_seconds = model, train_loader, val_loader, 0.0
            if feature_cache:
                if any(p.requires_grad for p in model.parameters() if all(p is not q for q in head.parameters())):
                    raise ValueError("特征缓存只适用于 freeze 策略（主干不变，特征才能重复使用）。把 FEATURE_CACHE 设为 False。")
                began = time.perf_counter()
                train_data, val_data = _cached_loaders(model, train_loader, val_loader, device)
                net, cache_seconds = head, time.perf_counter() - began
            run.train(net, train_data, val_data, epochs, device, max_batches, cache_seconds)
        except KeyboardInterrupt:
            print(f"\n训练被中断。{run.resume_hint()}")
            raise
    return run.history


@contextlib.contextmanager
def channels_last(model, device):
    """在 CPU 和 CUDA 上暂时把模型换成 channels_last 内存布局（卷积快 1.3–1.7 倍，见 benchmarks/），结束后换回。"""
    layout = torch.device(device).type in ("cpu", "cuda")
    if layout:
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if layout:
            model.to(memory_format=torch.contiguous_format)


class _Run:
    """一次训练的状态：历史记录、检查点与续训。fit() 内部使用。"""

    def __init__(self, model, optimizer, checkpoint_dir, run_name, meta, generator):
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.run_name, self.meta = run_name, dict(meta or {})
        self.history: list[dict] = []
        self.pending_rng = None  # 续训时要在第一轮开始前恢复的随机数状态

    def path(self, kind: str) -> Path:
        return self.checkpoint_dir / f"{self.run_name}_{kind}.pt"

    def train(self, net, train_data, val_data, epochs, device, max_batches, cache_seconds):
        """从第 len(history)+1 轮训练到第 epochs 轮；每轮训练、验证、记一行历史、存检查点。"""
        criterion = nn.CrossEntropyLoss()
        start = len(self.history)
        if self.pending_rng is not None:
            _set_rng_state(self.pending_rng, self.generator)
            self.pending_rng = None
        bar = tqdm(range(start + 1, epochs + 1), desc="训练", unit="轮", initial=start, total=epochs)
        for epoch in bar:
            began = time.perf_counter()
            train_loss, train_acc = train_one_epoch(net, train_data, criterion, self.optimizer, device, max_batches)
            val_logits, val_labels = evaluate(net, val_data, device)
            cache = cache_seconds if epoch == start + 1 else 0.0  # 特征是在第一轮之前算的
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": criterion(val_logits, val_labels).item(),
                "val_acc": (val_logits.argmax(dim=1) == val_labels).float().mean().item(),
                "lr": float(self.optimizer.param_groups[-1]["lr"]),
                "seconds": time.perf_counter() - began + cache, "cache_seconds": cache,
            })
            bar.set_postfix(train_loss=f"{train_loss:.3f}", val_acc=f"{self.history[-1]['val_acc']:.3f}", refresh=False)
            self.save(epoch)
        bar.close()

    def resume_hint(self) -> str:
        if self.checkpoint_dir is None or not self.history:
            return ""
        return (f"已完成的 {len(self.history)} 轮保存在 {display_path(self.path('last'))}；"
                "设 RESUME = True（fit 的 resume=True）可以接着训练。")

    def save(self, epoch: int) -> None:
        """验证准确率创新高时写 best；总是写 last（带续训信息）。"""
        if self.checkpoint_dir is None:
            return
        best = best_epoch(self.history)
        meta = {**self.meta, "run_name": self.run_name, "history": [dict(r) for r in self.history],
                "best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "versions": library_versions(),
                "created": datetime.now().astimezone().isoformat(timespec="seconds")}
        if best["epoch"] == epoch:
            save_checkpoint(self.path("best"), self.model, meta)
        state = {"epoch": epoch, "optimizer": self.optimizer.state_dict(), "rng": _rng_state(),
                 "generator": self.generator.get_state() if self.generator is not None else None}
        save_checkpoint(self.path("last"), self.model, meta, train_state=state)

    def restore(self) -> None:
        """从 last 检查点恢复模型、优化器和历史；随机数状态在第一轮开始前才恢复。"""
        if self.checkpoint_dir is None:
            raise ValueError("resume=True 需要同时给出 checkpoint_dir（续训从那里的 *_last.pt 读取）。")
        path = self.path("last")
        if not path.is_file():
            print(f"没有找到续训用的检查点 {display_path(path)}，从第 1 轮开始训练。")
            return
        payload = read_checkpoint(path)
        meta, state = payload["meta"], payload.get("train_state")
        keys = ("arch", "strategy", "num_classes")
        saved, current = tuple(meta.get(k) for k in keys), tuple(self.meta.get(k) for k in keys)
        if state is None or saved != current:
            raise CheckpointError(
                f"不能从 {display_path(path)} 续训：它记录的（结构、策略、类别数）是 {saved}，现在是 {current}"
                f"{'' if state is not None else '，而且它不含续训信息'}。换一个 run_name，或设 RESUME = False 从头训练。")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pending_rng = (state["rng"], state.get("generator"))
        self.history = [dict(record) for record in meta["history"]]
        print(f"从 {display_path(path)} 接着训练：前 {len(self.history)} 轮已经完成。")


def _rng_state() -> dict:
    """Python、NumPy、PyTorch 的随机数状态，全部转成 weights_only 能加载的类型。"""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(pending, generator) -> None:
    """恢复随机数状态：续训后的每一轮与不中断时完全相同。"""
    state, generator_state = pending
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and generator_state is not None:
        generator.set_state(generator_state)
