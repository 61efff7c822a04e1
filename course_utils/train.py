"""训练：``fit()`` 训练循环（进度条、最佳与最后检查点、中断后续训）、验证集上的准确率、训练步计时。

检查点和指标文件怎样写、写在哪里，见 ``checkpoints.py``；freeze 的特征缓存见 ``features.py``；
训练曲线的图在 ``viz.py``。
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from datetime import datetime
from pathlib import Path

from .checkpoints import CheckpointError, best_epoch, library_versions, read_checkpoint, save_checkpoint
from .features import batch_to_device, cache_features
from .models import build_model, check_strategy, head_module, make_optimizer
from .paths import display_path
from .progress import is_headless, progress_bar

__all__ = ["fit", "evaluate_accuracy", "with_training_defaults", "history_table", "time_training_steps"]


# ---------------------------------------------------------------- 评估


def evaluate_accuracy(model, loader, device, *, max_batches: int | None = None, amp: bool | None = None,
                      channels_last: bool = False) -> dict:
    """在 loader 上算平均交叉熵损失和准确率：``{"loss": ..., "acc": ...}``（准确率在 0 到 1 之间）。"""
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    use_amp = _use_amp(amp, device)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in itertools.islice(loader, max_batches):  # max_batches 为 None 时不限
            images, labels = batch_to_device(images, labels, device, channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(images)
            total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
    if seen == 0:
        raise ValueError("评估用的数据集是空的：检查数据集划分（验证集比例、每类图片数）。")
    return {"loss": total_loss / seen, "acc": correct / seen}


def _use_amp(amp: bool | None, device) -> bool:
    """混合精度只在 CUDA 上使用（None 表示自动：有 CUDA 就用）。"""
    return device.type == "cuda" and (amp is None or bool(amp))


# ---------------------------------------------------------------- 训练


def fit(model, train_loader, val_loader, *, epochs: int, device, optimizer=None, lr: float = 1e-3,
        strategy: str | None = None, scheduler=None, checkpoint_dir=None, run_name: str | None = None,
        resume: bool = False, max_batches: int | None = None, meta: dict | None = None,
        feature_cache: bool = False, amp: bool | None = None, channels_last: bool | None = None) -> list[dict]:
    """训练 epochs 轮，每轮在验证集上评估；返回历史记录（每轮一个字典）。

    每轮的字典：epoch、train_loss、train_acc、val_loss、val_acc、lr（分类头的学习率）、
    seconds（这一轮的用时）、cache_seconds（其中提取特征缓存的用时，只有缓存特征后的第一轮不是 0）。

    参数（都要用关键字传）：
        epochs：总轮数（续训时也是总数，不是“再训几轮”）。
        device：计算设备（torch.device 或 "cpu" / "cuda"）。
        optimizer：None 时按 strategy 用 ``make_optimizer(model, strategy, lr)`` 创建。
        strategy：None 时取 ``model.course_info["strategy"]``。
        scheduler：可选的学习率调度器，每轮结束调用一次 ``step()``（ReduceLROnPlateau 传入验证损失）。
        checkpoint_dir：给出目录时，保存 ``<run_name>_best.pt``（验证准确率最高）和
            ``<run_name>_last.pt``（最后一轮，含优化器、调度器、随机数状态，用于续训）。
        run_name：检查点文件名前缀，None 时等于 strategy。
        resume：True 时从 ``<run_name>_last.pt`` 接着训练（文件不存在就从头开始）。
        max_batches：每轮最多训练多少个批次（smoke 档位用来封顶）。
        meta：并入检查点元数据的字典（类别名、图片尺寸、档位等，见 ``training_meta``）。
        feature_cache：只用于 freeze。主干输出的特征先算一遍存起来，之后每轮只训练分类头；
            训练集的特征用评估时的预处理计算（没有随机数据增广），这是用增广换速度（见 features.py）。
        amp：混合精度，None 表示“只在 CUDA 上启用”。
        channels_last：channels_last 内存布局。None 表示自动：在 CUDA 和 CPU 上训练时启用
            （CPU 上 ResNet-18 在 112–224 像素时快 1.2–1.45 倍，见 benchmarks/），训练结束后把模型换回原来的布局，
            交回的模型与从检查点加载的模型预测结果逐位相同；True 时模型留在 channels_last 布局。
    """
    import torch

    device = torch.device(device)
    strategy = strategy or model.course_info["strategy"]
    restore_layout = channels_last is None and not _is_channels_last(model)
    channels_last = device.type in ("cuda", "cpu") if channels_last is None else bool(channels_last)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer or make_optimizer(model, strategy, lr)
    run = _Run(model, optimizer, scheduler, strategy, device, _use_amp(amp, device), channels_last,
               checkpoint_dir, run_name or strategy, meta, train_loader)
    if resume:
        run.restore()
    try:
        net, train_data, val_data, cache_seconds = _training_inputs(
            model, train_loader, val_loader, device, feature_cache, strategy, max_batches, channels_last)
        run.train_epochs(net, train_data, val_data, epochs, max_batches, cache_seconds)
    finally:
        if channels_last and restore_layout:
            model.to(memory_format=torch.contiguous_format)
    return run.history


def _is_channels_last(model) -> bool:
    """模型的第一个 4 维（卷积）权重是否已经是 channels_last 布局。"""
    import torch

    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


def _training_inputs(model, train_loader, val_loader, device, feature_cache, strategy, max_batches, channels_last):
    """返回（要训练的网络, 训练数据, 验证数据, 准备用时）。不缓存时就是模型和原来的两个 loader。"""
    if not feature_cache:
        return model, train_loader, val_loader, 0.0
    if strategy != "freeze":
        raise ValueError(f"特征缓存只适用于 freeze 策略（主干不变，特征才能重复使用）；当前策略是 {strategy}。"
                         "把 FEATURE_CACHE 设为 False。")
    return cache_features(model, train_loader, val_loader, device, max_batches=max_batches, channels_last=channels_last)


class _Run:
    """一次训练的状态：历史记录、最佳成绩、检查点与续训。fit() 内部使用。"""

    def __init__(self, model, optimizer, scheduler, strategy, device, amp, channels_last,
                 checkpoint_dir, run_name, meta, train_loader):
        """记下训练要用的一切；train_loader 只用来取它打乱顺序的随机数生成器（续训时要恢复它的状态）。"""
        import torch

        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.strategy, self.device, self.amp, self.channels_last = strategy, device, amp, channels_last
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.run_name, self.meta = run_name, dict(meta or {})
        self.generator = getattr(train_loader, "generator", None)
        self.history: list[dict] = []
        self.pending_rng = None  # 续训时要在第一轮开始前恢复的随机数状态

    def path(self, kind: str) -> Path:
        """``<checkpoint_dir>/<run_name>_<kind>.pt``，kind 为 "best" 或 "last"。"""
        return self.checkpoint_dir / f"{self.run_name}_{kind}.pt"

    def train_epochs(self, net, train_data, val_data, epochs, max_batches, cache_seconds=0.0):
        """从第 len(history)+1 轮训练到第 epochs 轮；每轮训练、验证、记一行历史、存检查点。"""
        start = len(self.history)
        self.apply_pending_rng()
        epoch_bar = progress_bar(range(start + 1, epochs + 1), desc="训练", unit="轮", initial=start, total=epochs)
        for epoch in epoch_bar:
            began = time.perf_counter()
            lr = _head_lr(self.optimizer)
            try:
                train_loss, train_acc = self.train_one_epoch(net, train_data, max_batches, epoch, epochs)
            except KeyboardInterrupt:
                print(f"\n训练在第 {epoch} 轮被中断。{self.resume_hint()}")
                raise
            val = evaluate_accuracy(net, val_data, self.device, amp=self.amp, channels_last=self.channels_last)
            _step_scheduler(self.scheduler, val["loss"])
            cache = cache_seconds if epoch == start + 1 else 0.0  # 特征是在这次训练开始前算的
            self.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
                                 "seconds": time.perf_counter() - began + cache, "cache_seconds": cache})
            epoch_bar.set_postfix(train_loss=f"{train_loss:.3f}", val_acc=f"{val['acc']:.3f}", refresh=False)
            self.save(epoch)
        epoch_bar.close()

    def train_one_epoch(self, net, loader, max_batches, epoch, epochs):
        """训练一轮，返回（平均损失，准确率）；批次进度条上实时显示损失和准确率。"""
        import torch
        import torch.nn.functional as F

        net.train()
        total = min(len(loader), max_batches) if max_batches else len(loader)
        total_loss, correct, seen = 0.0, 0, 0
        batch_bar = progress_bar(loader, total=total, desc=f"第 {epoch}/{epochs} 轮", unit="批", leave=False,
                                 disable=is_headless())  # 无人值守时只留“轮”的进度条
        for images, labels in itertools.islice(batch_bar, total):
            images, labels = batch_to_device(images, labels, self.device, self.channels_last)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = net(images)
                loss = F.cross_entropy(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # freeze 时梯度只流到分类头，不经过主干
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
            batch_bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        batch_bar.close()
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def resume_hint(self) -> str:
        """中断时告诉学习者：已完成几轮、存在哪里、怎样接着训练。"""
        if self.checkpoint_dir is None or not self.history:
            return ""
        return (f"已完成的 {len(self.history)} 轮保存在 {display_path(self.path('last'))}；"
                "设 RESUME = True（fit 的 resume=True）可以接着训练。")

    # ---- 检查点与续训

    def save(self, epoch: int) -> None:
        """每轮结束：验证准确率创新高时写 best；总是写 last（带续训信息）。"""
        if self.checkpoint_dir is None:
            return
        meta = self.checkpoint_meta()
        if best_epoch(self.history)["epoch"] == epoch:
            save_checkpoint(self.path("best"), self.model, meta)
        save_checkpoint(self.path("last"), self.model, meta, train_state=self.train_state(epoch))

    def checkpoint_meta(self) -> dict:
        """检查点的元数据：调用者给的 meta（类别名、尺寸……）加上模型、策略、权重来源、历史与版本。"""
        info, best = self.model.course_info, best_epoch(self.history)
        return {
            **self.meta, "arch": info["arch"], "strategy": self.strategy, "num_classes": info["num_classes"],
            "weights": info["weights"], "weights_note": info["weights_note"], "run_name": self.run_name,
            "history": [dict(record) for record in self.history],
            "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
            "versions": library_versions(), "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        }

    def train_state(self, epoch: int) -> dict:
        """续训需要的其余状态：优化器、调度器、混合精度缩放器、全部随机数状态。"""
        return {
            "epoch": epoch, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(), "rng": _rng_state(),
            "generator": self.generator.get_state() if self.generator is not None else None,
        }

    def restore(self) -> None:
        """从 last 检查点恢复模型、优化器、调度器、历史记录；随机数状态在第一轮开始前才恢复。"""
        if self.checkpoint_dir is None:
            raise ValueError("resume=True 需要同时给出 checkpoint_dir（续训从那里的 *_last.pt 读取）。")
        path = self.path("last")
        if not path.is_file():
            print(f"没有找到续训用的检查点 {display_path(path)}，从第 1 轮开始训练。")
            return
        payload = read_checkpoint(path)
        meta, state = payload["meta"], payload.get("train_state")
        self._check_compatible(meta, state, path)
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.pending_rng = (state["rng"], state.get("generator"))
        self.history = [dict(record) for record in meta["history"]]
        print(f"从 {display_path(path)} 接着训练：前 {len(self.history)} 轮已经完成。")

    def _check_compatible(self, meta: dict, state, path: Path) -> None:
        """last 检查点必须来自同一种模型、策略和类别数，并且带着续训信息。"""
        info = self.model.course_info
        saved = (meta.get("arch"), meta.get("strategy"), meta.get("num_classes"))
        current = (info["arch"], self.strategy, info["num_classes"])
        if state is None or saved != current:
            raise CheckpointError(
                f"不能从 {display_path(path)} 续训：它记录的（模型、策略、类别数）是 {saved}，现在是 {current}"
                f"{'' if state is not None else '，而且它不含续训信息'}。换一个 run_name，或设 RESUME = False 从头训练。"
            )

    def apply_pending_rng(self) -> None:
        """恢复随机数状态：续训后的每一轮与不中断时完全相同。"""
        if self.pending_rng is None:
            return
        rng, generator_state = self.pending_rng
        _set_rng_state(rng)
        if self.generator is not None and generator_state is not None:
            self.generator.set_state(generator_state)
        self.pending_rng = None


def _head_lr(optimizer) -> float:
    """分类头所在参数组的学习率（参数组没有名字时取最后一组）。"""
    groups = [g for g in optimizer.param_groups if g.get("name") == "head"] or optimizer.param_groups[-1:]
    return float(groups[0]["lr"])


def _step_scheduler(scheduler, val_loss: float) -> None:
    if scheduler is None:
        return
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    scheduler.step(val_loss) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()


def _rng_state() -> dict:
    """Python、NumPy、PyTorch 的随机数状态，全部转成 weights_only 能加载的类型。"""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- 04 的设置与展示


def with_training_defaults(settings):
    """补全 04 训练用的附加设置（放在 ``settings.extra``），返回新的 Settings。

    - strategy：检查拼写，默认 "freeze"；arch：默认 "resnet18"；
    - feature_cache：没有指定时，freeze 在 quick / demo / smoke 档位缓存特征（CPU 上快很多），
      full 档位不缓存（保留随机数据增广，与原教程的做法可比）；其他策略不缓存。
    （只改了 image_size 时，评估用的 resize_size 已经由 ``resolve_settings`` 按比例跟着变了。）
    """
    extra = dict(settings.extra)
    extra["strategy"] = strategy = check_strategy(extra.get("strategy") or "freeze")
    extra["arch"] = extra.get("arch") or "resnet18"
    if extra.get("feature_cache") is None:
        extra["feature_cache"] = strategy == "freeze" and settings.profile != "full"
    elif extra["feature_cache"] and strategy != "freeze":
        raise ValueError(f"特征缓存只适用于 freeze 策略，当前策略是 {strategy}。把 FEATURE_CACHE 设为 None 或 False。")
    return settings.replace(extra=extra)


HISTORY_COLUMNS = {
    "train_loss": ("训练损失", "{:.3f}"), "train_acc": ("训练准确率", "{:.1%}"),
    "val_loss": ("验证损失", "{:.3f}"), "val_acc": ("验证准确率", "{:.1%}"),
    "lr": ("学习率", "{:g}"), "seconds": ("用时（秒）", "{:.2f}"), "cache_seconds": ("其中缓存特征（秒）", "{:.2f}"),
}


def history_table(history: list[dict]):
    """训练历史的表格：每轮一行，中文列名，准确率写成百分数；没有缓存特征时不列“其中缓存特征”。

    返回 pandas Styler（数据在 ``.data`` 里，仍是数字）。
    """
    import pandas as pd

    frame = pd.DataFrame(history).set_index("epoch").rename_axis("轮")
    if "cache_seconds" in frame and not frame["cache_seconds"].any():
        frame = frame.drop(columns="cache_seconds")
    columns = [key for key in HISTORY_COLUMNS if key in frame]
    frame = frame[columns].rename(columns={key: HISTORY_COLUMNS[key][0] for key in columns})
    return frame.style.format({HISTORY_COLUMNS[key][0]: HISTORY_COLUMNS[key][1] for key in columns})


# ---------------------------------------------------------------- 训练步计时


TIMING_SETUPS = {  # 表格里的做法：（建模型用的策略，优化器）
    "freeze（本课程：冻结主干）": ("freeze", "course"),
    "只让优化器跳过主干（原教程的做法）": ("finetune", "head_only"),
    "finetune（微调全部层）": ("finetune", "course"),
}


def time_training_steps(images, labels, device, *, arch: str = "resnet18", num_classes: int, repeats: int = 5,
                        warmup: int = 2):
    """同一批图片上，比较三种做法每个训练步（前向 + 反向 + 更新）的用时。

    - 本课程的 freeze：主干冻结，反向传播只到分类头；
    - 原教程的“只让优化器跳过主干”：优化器只更新分类头，但梯度照样算遍全网；
    - finetune：全部层都训练。
    三种做法轮流各走一步，先热身 warmup 轮（不计时），再计时 repeats 轮，取中位数：
    机器忽快忽慢时三者受到同样的影响，偶尔一步特别慢也不会带偏结果。
    模型用随机权重构建：用时与权重的取值无关。返回 pandas 表格。
    """
    import pandas as pd
    import torch

    device = torch.device(device)
    images, labels = images.to(device), labels.to(device)
    steps = {label: _training_step(arch, num_classes, strategy, optimizer_kind, device)
             for label, (strategy, optimizer_kind) in TIMING_SETUPS.items()}
    durations = {label: [] for label in steps}
    for round_index in range(warmup + repeats):
        for label, (model, step) in steps.items():
            seconds = _timed(step, images, labels)
            if round_index >= warmup:
                durations[label].append(seconds)
    rows = [{"做法": label, "每批用时（毫秒）": round(statistics.median(durations[label]) * 1000, 1),
             "要计算梯度的参数": sum(p.numel() for p in model.parameters() if p.requires_grad)}
            for label, (model, _) in steps.items()]
    table = pd.DataFrame(rows).set_index("做法")
    table["相对 freeze"] = (table["每批用时（毫秒）"] / table["每批用时（毫秒）"].iloc[0]).round(1)
    return table


def _training_step(arch: str, num_classes: int, strategy: str, optimizer_kind: str, device):
    """建一个模型，返回 (model, step)；step(images, labels) 走一个训练步。"""
    import torch
    import torch.nn.functional as F

    model = build_model(arch, num_classes=num_classes, strategy=strategy, weights=None).to(device).train()
    if optimizer_kind == "head_only":  # 原教程：只把分类头交给优化器，主干照样 requires_grad=True
        optimizer = torch.optim.Adam(head_module(model).parameters())
    else:
        optimizer = make_optimizer(model, strategy, 1e-3)

    def step(images, labels):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def _timed(step, images, labels) -> float:
    """走一步，返回秒数（GPU 上先等之前的计算全部完成，计时才准）。"""
    import torch

    cuda = images.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(images.device)
    began = time.perf_counter()
    step(images, labels)
    if cuda:
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - began
