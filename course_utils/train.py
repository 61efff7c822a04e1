"""训练与检查点：``fit()`` 训练循环、安全的检查点、指标 JSON、训练曲线。

检查点只保存 ``state_dict`` 和由普通类型（字符串、数字、列表、字典）组成的元数据，
所以可以用 ``torch.load(..., weights_only=True)`` 安全地加载；写文件时先写临时文件再改名，
中途出错不会留下半个文件，也不会毁掉上一次的检查点。
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import platform
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .paths import output_dir
from .models import build_model, head_module, make_optimizer
from .progress import is_headless, progress_bar

__all__ = [
    "fit", "evaluate_accuracy", "save_checkpoint", "load_checkpoint", "CheckpointError",
    "CheckpointNotFound", "checkpoint_path", "metrics_path", "write_metrics", "read_metrics",
    "with_training_defaults", "training_meta", "summarize_run", "best_epoch", "plot_history", "time_training_steps", "extract_features",
]

PLAIN_TYPES = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """文件不是课程的检查点，或者与当前设置不一致。"""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """检查点文件不存在（还没有运行 04 训练）。"""


# ---------------------------------------------------------------- 路径


def checkpoint_path(profile: str, strategy: str, kind: str = "best") -> Path:
    """检查点位置：``outputs/<档位>/checkpoints/<strategy>_<kind>.pt``；kind 为 "best" 或 "last"。"""
    if kind not in ("best", "last"):
        raise ValueError(f"kind 只能是 \"best\"（验证集最优）或 \"last\"（最后一轮，续训用），收到 {kind!r}。")
    return output_dir(profile, "checkpoints") / f"{strategy}_{kind}.pt"


def metrics_path(profile: str, strategy: str) -> Path:
    """指标 JSON 的位置：``outputs/<档位>/metrics/<strategy>.json``。"""
    return output_dir(profile, "metrics") / f"{strategy}.json"


# ---------------------------------------------------------------- 检查点


def save_checkpoint(path, model, meta: dict, *, train_state: dict | None = None) -> Path:
    """把 ``{"state_dict", "meta"}``（续训时再加 "train_state"）原子地写到 path。

    meta 只能含普通类型（str、int、float、bool、None 以及它们组成的 list / dict），
    这样加载时可以用 ``weights_only=True``。先写同目录下的临时文件并 fsync，再 ``os.replace`` 改名：
    任何一步出错，旧文件原样保留，临时文件被删掉。
    """
    _check_plain(meta, "meta")
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    payload = {"state_dict": state_dict, "meta": meta}
    if train_state is not None:
        payload["train_state"] = train_state
    path = Path(path)
    _atomic_write(path, lambda f: _torch_save(payload, f))
    return path


def _torch_save(payload, file) -> None:
    import torch

    torch.save(payload, file)


def _atomic_write(path: Path, write) -> None:
    """先写临时文件（同一目录）、刷到磁盘，再改名成 path；出错时删除临时文件并继续抛出。"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """让改名本身也落盘（POSIX）；Windows 不支持打开目录，跳过。"""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_plain(value, where: str) -> None:
    """确认 value 只由普通类型组成，否则用中文指出是哪一项。"""
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"检查点元数据 {where} 的键必须是字符串，收到 {key!r}。")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif type(value) not in PLAIN_TYPES:  # 严格比较类型：numpy.float64 之类的子类也不行
        raise TypeError(
            f"检查点元数据 {where} 是 {type(value).__name__}，只能用 str、int、float、bool、None、list、dict，"
            "否则无法用 weights_only=True 安全加载。先把它转换成普通类型（例如 str(path)、float(x)）。"
        )


def load_checkpoint(path, device="cpu"):
    """安全地加载课程检查点，返回 ``(model, meta)``；模型已放到 device 上并处于 eval 模式。

    用 meta 里的 arch、num_classes、strategy 重建模型（不加载任何预训练权重），
    再用 ``weights_only=True`` 读入 state_dict。``model.course_info`` 里的 weights / weights_note
    换成训练时的实际情况。
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(_missing_checkpoint_message(path))
    payload = _load_payload(path)
    meta = payload["meta"]
    model = build_model(meta["arch"], num_classes=meta["num_classes"], strategy=meta["strategy"], weights=None)
    model.load_state_dict(payload["state_dict"])
    model.course_info.update(weights=meta.get("weights"), weights_note=meta.get("weights_note"),
                             checkpoint=str(path))
    return model.to(torch.device(device)).eval(), meta


def _load_payload(path: Path) -> dict:
    """用 weights_only=True 读检查点；不是课程检查点时给出中文解释。"""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"拒绝加载 {path}：它不是课程的检查点，像是用 torch.save(model) 保存的整个模型（原教程的做法）。"
            "这种文件加载时要执行文件里的 Python 代码（pickle），来源不明时并不安全，PyTorch 2.6 起默认拒绝；"
            "而且换了库版本就可能读不出来。课程只保存 state_dict 和元数据。"
            "办法：运行 04_train.ipynb 重新训练；或者（只在你信任这个文件时）自己用 "
            "torch.load(路径, weights_only=False) 取出模型，再保存它的 state_dict()。"
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} 读不出来，文件可能已损坏或不是 PyTorch 文件（{exc}）。重新运行 04 生成它。") from exc
    if not (isinstance(payload, dict) and "state_dict" in payload and "meta" in payload):
        raise CheckpointError(
            f"{path} 不是课程的检查点：缺少 \"state_dict\" 和 \"meta\" 两项（可能只是一个裸的 state_dict）。"
            "没有元数据就不知道模型结构和类别名。用 04_train.ipynb 训练，生成的检查点才能在这里加载。"
        )
    return payload


def _missing_checkpoint_message(path: Path) -> str:
    strategy = path.stem.rsplit("_", 1)[0] or "freeze"
    profile = path.parent.parent.name if path.parent.name == "checkpoints" else "（你的档位）"
    return (
        f"找不到检查点 {path}。它是 04_train.ipynb 训练后写出的：先在 {profile} 档位下运行 04，"
        f"并把 STRATEGY 设为 \"{strategy}\"，例如\n"
        f"  python -m course_utils run --profile {profile} --only 04 -p STRATEGY={strategy}"
    )


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
            images, labels = _to_device(images, labels, device, channels_last)
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


def _to_device(images, labels, device, channels_last: bool):
    import torch

    memory_format = torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


# ---------------------------------------------------------------- 训练


def fit(model, train_loader, val_loader, *, epochs: int, device, optimizer=None, lr: float = 1e-3,
        strategy: str | None = None, scheduler=None, checkpoint_dir=None, run_name: str | None = None,
        resume: bool = False, max_batches: int | None = None, meta: dict | None = None,
        feature_cache: bool = False, amp: bool | None = None, channels_last: bool | None = None) -> list[dict]:
    """训练 epochs 轮，每轮在验证集上评估；返回历史记录（每轮一个字典）。

    每轮的字典：epoch、train_loss、train_acc、val_loss、val_acc、lr（分类头的学习率）、seconds。

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
            训练集的特征用评估时的预处理计算（没有随机数据增广），这是用增广换速度。
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


class _Run:
    """一次训练的状态：历史记录、最佳成绩、检查点与续训。fit() 内部使用。"""

    def __init__(self, model, optimizer, scheduler, strategy, device, amp, channels_last,
                 checkpoint_dir, run_name, meta, train_loader):
        import torch

        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.strategy, self.device, self.amp, self.channels_last = strategy, device, amp, channels_last
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.run_name, self.meta = run_name, dict(meta or {})
        self.generator = getattr(train_loader, "generator", None)  # 训练集打乱顺序用的随机数生成器
        self.history: list[dict] = []

    def path(self, kind: str) -> Path:
        return self.checkpoint_dir / f"{self.run_name}_{kind}.pt"

    def train_epochs(self, net, train_data, val_data, epochs, max_batches, extra_seconds=0.0):
        """从 len(history)+1 轮训练到 epochs 轮。"""
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
            seconds = time.perf_counter() - began + (extra_seconds if epoch == start + 1 else 0.0)
            self.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr, "seconds": seconds})
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
            images, labels = _to_device(images, labels, self.device, self.channels_last)
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
        if self.checkpoint_dir is None or not self.history:
            return ""
        return f"已完成的 {len(self.history)} 轮保存在 {self.path('last')}；设 RESUME = True（fit 的 resume=True）可以接着训练。"

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
        info, best = self.model.course_info, best_epoch(self.history)
        return {
            **self.meta, "arch": info["arch"], "strategy": self.strategy, "num_classes": info["num_classes"],
            "weights": info["weights"], "weights_note": info["weights_note"], "run_name": self.run_name,
            "history": [dict(record) for record in self.history],
            "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
            "versions": _versions(), "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        }

    def train_state(self, epoch: int) -> dict:
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
            print(f"没有找到续训用的检查点 {path}，从第 1 轮开始训练。")
            return
        payload = _load_payload(path)
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
        print(f"从 {path} 接着训练：前 {len(self.history)} 轮已经完成。")

    def _check_compatible(self, meta: dict, state, path: Path) -> None:
        info = self.model.course_info
        saved = (meta.get("arch"), meta.get("strategy"), meta.get("num_classes"))
        current = (info["arch"], self.strategy, info["num_classes"])
        if state is None or saved != current:
            raise CheckpointError(
                f"不能从 {path} 续训：它记录的（模型, 策略, 类别数）是 {saved}，现在是 {current}"
                f"{'' if state is not None else '，而且它不含续训信息'}。换一个 run_name，或设 RESUME = False 从头训练。"
            )

    def apply_pending_rng(self) -> None:
        """恢复随机数状态：续训后的每一轮与不中断时完全相同。"""
        pending = getattr(self, "pending_rng", None)
        if pending is None:
            return
        rng, generator_state = pending
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


def _versions() -> dict:
    import torch
    import torchvision

    # str()：torch.__version__ 是 str 的子类，原样保存会让 weights_only=True 拒绝加载
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


def best_epoch(history: list[dict]) -> dict:
    """验证准确率最高的那一轮（并列时取最早的一轮）。"""
    if not history:
        raise ValueError("历史记录是空的：还没有训练任何一轮。")
    return max(history, key=lambda record: (record["val_acc"], -record["epoch"]))


# ---------------------------------------------------------------- 特征缓存（只用于 freeze）


def _training_inputs(model, train_loader, val_loader, device, feature_cache, strategy, max_batches, channels_last):
    """返回（要训练的网络, 训练数据, 验证数据, 准备用时）。不缓存时就是模型和原来的两个 loader。"""
    if not feature_cache:
        return model, train_loader, val_loader, 0.0
    if strategy != "freeze":
        raise ValueError(f"特征缓存只适用于 freeze 策略（主干不变，特征才能重复使用）；当前策略是 {strategy}。把 FEATURE_CACHE 设为 False。")
    from torch.utils.data import DataLoader, TensorDataset

    began = time.perf_counter()
    plain_train = _without_augmentation(train_loader, val_loader)
    train_set = TensorDataset(*extract_features(model, plain_train, device, max_batches=max_batches,
                                                channels_last=channels_last, desc="缓存训练集特征"))
    val_set = TensorDataset(*extract_features(model, val_loader, device, channels_last=channels_last,
                                              desc="缓存验证集特征"))
    batch_size = train_loader.batch_size or 32
    train_data = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_data = DataLoader(val_set, batch_size=batch_size)
    return head_module(model), train_data, val_data, time.perf_counter() - began


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
                model(_to_device(images, labels, device, channels_last)[0])
                all_labels.append(labels.cpu())
    finally:
        handle.remove()
    return torch.cat(chunks), torch.cat(all_labels)


def _without_augmentation(train_loader, val_loader):
    """训练集换成评估时的预处理（取自验证集），按固定顺序读取：特征只算一次，随机增广没有意义。"""
    from torch.utils.data import DataLoader

    if _find_transform(train_loader.dataset) is None:
        dataset = train_loader.dataset  # 本来就没有图像变换（例如预先算好的张量）
    else:
        eval_transform = _find_transform(val_loader.dataset)
        if eval_transform is None:
            raise ValueError("特征缓存需要评估用的预处理，但验证集上找不到 transform。用 cu.make_datasets 创建数据集。")
        dataset = _with_transform(train_loader.dataset, eval_transform)
    return DataLoader(dataset, batch_size=train_loader.batch_size, shuffle=False,
                      num_workers=train_loader.num_workers, collate_fn=train_loader.collate_fn)


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


# ---------------------------------------------------------------- 元数据与指标


def with_training_defaults(settings):
    """补全 04 训练用的附加设置（放在 ``settings.extra``），返回新的 Settings。

    - strategy：检查拼写，默认 "freeze"；arch：默认 "resnet18"；
    - feature_cache：没有指定时，freeze 在 quick / demo / smoke 档位缓存特征（CPU 上快很多），
      full 档位不缓存（保留随机数据增广，与原教程的做法可比）；其他策略不缓存；
    - 只改了 image_size 而 resize_size 还是档位默认时，按档位的比例（如 256/224）同步缩放 resize_size，
      否则评估时的中心裁剪会切掉太多。
    """
    from .config import PROFILES
    from .models import _check_strategy

    extra = dict(settings.extra)
    extra["strategy"] = strategy = _check_strategy(extra.get("strategy") or "freeze")
    extra["arch"] = extra.get("arch") or "resnet18"
    if extra.get("feature_cache") is None:
        extra["feature_cache"] = strategy == "freeze" and settings.profile != "full"
    elif extra["feature_cache"] and strategy != "freeze":
        raise ValueError(f"特征缓存只适用于 freeze 策略，当前策略是 {strategy}。把 FEATURE_CACHE 设为 None 或 False。")
    base = PROFILES[settings.profile]
    resize_size = settings.resize_size
    if settings.image_size != base.image_size and resize_size == base.resize_size:
        resize_size = round(settings.image_size * base.resize_size / base.image_size)
    return settings.replace(resize_size=resize_size, extra=extra)


def training_meta(settings, class_names, *, mean=None, std=None) -> dict:
    """检查点里与数据有关的元数据：类别名、图片尺寸、归一化参数、档位与全部设置。"""
    from .transforms import IMAGENET_MEAN, IMAGENET_STD

    return {
        "class_names": [str(name) for name in class_names],
        "image_size": int(settings.image_size), "resize_size": int(settings.resize_size),
        "mean": [float(v) for v in (mean if mean is not None else IMAGENET_MEAN)],
        "std": [float(v) for v in (std if std is not None else IMAGENET_STD)],
        "profile": settings.profile, "settings": settings.to_dict(),
    }


def summarize_run(model, history: list[dict], settings, *, strategy: str, device, test: dict | None = None,
                  feature_cache: bool = False) -> dict:
    """把一次训练整理成指标字典（写入 metrics JSON，06 笔记本用它做对比）。

    参数：
        test：测试集上的 ``{"loss", "acc"}``（``evaluate_accuracy`` 的结果）；还没测就是 None。
    """
    info, best, counts = model.course_info, best_epoch(history), _count(model)
    seconds = [record["seconds"] for record in history]
    return {
        "strategy": strategy, "profile": settings.profile, "arch": info["arch"],
        "weights": info["weights"], "weights_note": info["weights_note"],
        "epochs": len(history), "image_size": settings.image_size, "batch_size": settings.batch_size,
        "lr": settings.lr, "seed": settings.seed,
        "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "trainable_params": counts["trainable"], "total_params": counts["total"],
        "seconds_total": sum(seconds), "seconds_per_epoch": sum(seconds) / len(seconds),
        "feature_cache": bool(feature_cache), "device": str(device),
        "history": [dict(record) for record in history], "settings": settings.to_dict(),
    }


def _count(model) -> dict:
    from .models import count_params

    return count_params(model)


def write_metrics(path, metrics: dict) -> Path:
    """把指标写成 UTF-8 JSON（中文原样保存、缩进 2），先写临时文件再改名。"""
    _check_plain(metrics, "metrics")
    text = json.dumps(metrics, ensure_ascii=False, indent=2) + "\n"
    path = Path(path)
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def read_metrics(path) -> dict:
    """读取 write_metrics 写的 JSON。"""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- 图与计时


def plot_history(history: list[dict], title: str | None = None):
    """训练曲线：左边损失、右边准确率，训练集与验证集各一条线，虚线标出验证集最佳的一轮。"""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", "损失（交叉熵）"), (axes[1], "acc", "准确率")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="训练集")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], marker="s", label="验证集")
        ax.set_xlabel("轮（epoch）")
        ax.set_ylabel(label)
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)  # 轮数只取整数
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    best = best_epoch(history)
    axes[1].axvline(best["epoch"], linestyle="--", color="gray", label=f"验证集最佳：第 {best['epoch']} 轮")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.legend()
    fig.suptitle(title or "训练曲线")
    fig.tight_layout()
    return fig


def time_training_steps(images, labels, device, *, arch: str = "resnet18", num_classes: int, repeats: int = 2):
    """同一批图片上，比较三种做法每个训练步（前向 + 反向 + 更新）的用时。

    - 本课程的 freeze：主干冻结，反向传播只到分类头；
    - 原教程的“只让优化器跳过主干”：优化器只更新分类头，但梯度照样算遍全网；
    - finetune：全部层都训练。
    模型用随机权重构建：用时与权重的取值无关。返回 pandas 表格。
    """
    import pandas as pd
    import torch

    device = torch.device(device)
    setups = {
        "freeze（本课程：冻结主干）": ("freeze", None),
        "只让优化器跳过主干（原教程的做法）": ("finetune", "head_only"),
        "finetune（微调全部层）": ("finetune", None),
    }
    rows = []
    for label, (strategy, optimizer_kind) in setups.items():
        model = build_model(arch, num_classes=num_classes, strategy=strategy, weights=None).to(device)
        params = head_module(model).parameters() if optimizer_kind else None
        optimizer = torch.optim.Adam(params) if params is not None else make_optimizer(model, strategy, 1e-3)
        seconds = _time_steps(model, optimizer, images.to(device), labels.to(device), repeats)
        rows.append({"做法": label, "每批用时（毫秒）": round(seconds * 1000, 1),
                     "要计算梯度的参数": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    table = pd.DataFrame(rows).set_index("做法")
    table["相对 freeze"] = (table["每批用时（毫秒）"] / table["每批用时（毫秒）"].iloc[0]).round(1)
    return table


def _time_steps(model, optimizer, images, labels, repeats: int) -> float:
    """先热身一步，再计时 repeats 步，返回平均每步秒数。"""
    import torch
    import torch.nn.functional as F

    model.train()
    durations = []
    for step in range(repeats + 1):
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        began = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        if step > 0:
            durations.append(time.perf_counter() - began)
    return sum(durations) / len(durations)
