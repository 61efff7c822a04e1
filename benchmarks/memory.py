"""第 4 节：批量 32、224 像素时训练的峰值内存，每种做法在一个新进程里测。

CPU 上 tracemalloc 看不到 PyTorch 自己分配的内存，所以读操作系统记录的进程峰值常驻内存。
Linux 上用 ``/proc/self/status`` 的 VmHWM，并在训练开始前把它清零（写 5 到 ``/proc/self/clear_refs``）：
``resource.getrusage(...).ru_maxrss`` 在 exec 之后仍保留着父进程（整个基准测试进程）的峰值，会把结果盖住。
其他系统退回 ru_maxrss（每种做法一个新进程）。GPU 上另报 ``torch.cuda.max_memory_allocated``。
"""

from __future__ import annotations

import sys
from pathlib import Path

import course_utils as cu

from .common import Section, probe_main, run_probe

MODES = {
    "tutorial": "原教程式 strategy 1（主干求梯度、BN 训练模式，contiguous）",
    "freeze": "本课程 freeze（channels_last）",
    "freeze_cache": "本课程 freeze + 特征缓存（算特征，再只训练分类头）",
    "finetune": "finetune（channels_last）",
    "scratch": "scratch（channels_last）",
}
BATCH_SIZE = 32
IMAGE_SIZE = 224
NUM_CLASSES = 30


def _status_mb(field: str) -> float | None:
    """读 /proc/self/status 里的一项（VmRSS、VmHWM），单位 MB；不是 Linux 时返回 None。"""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # 单位是 kB
    return None


def reset_peak() -> bool:
    """把本进程的峰值常驻内存清零为当前值（Linux 4.0 起支持）；做不到时返回 False。"""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mb() -> float | None:
    """本进程的峰值常驻内存（MB）：Linux 用 VmHWM，其他系统用 ru_maxrss；Windows 返回 None。"""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # macOS 单位是字节，Linux 是 KB


def tutorial_trainer(device):
    """原教程式的训练步（cu.train_one_epoch）：主干参数 requires_grad=True，BatchNorm 训练模式，优化器只含分类头。"""
    import torch
    from torch import nn

    model, head, _ = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=None)
    model.to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    return lambda batches: cu.train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, device)


def cached_trainer(device):
    """特征缓存：主干只做前向（cu.train.backbone_features，不求梯度）得到特征，再在特征上训练分类头。"""
    import torch
    from torch import nn

    model, head, _ = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=None)
    model.to(device, memory_format=torch.channels_last)
    optimizer = cu.make_optimizer(model, head, "freeze", 1e-3)

    def train(batches):
        features = cu.train.backbone_features(model, batches, device)  # (特征, labels)
        cu.train_one_epoch(head, [features], nn.CrossEntropyLoss(), optimizer, device)

    return train


def probe(mode: str, device, steps: int) -> dict:
    """（在子进程里运行）建好模型和一批数据后记下基线，训练 steps 步后记下峰值。"""
    import torch

    from .throughput import make_trainer

    device = torch.device(device)
    if mode == "tutorial":
        train = tutorial_trainer(device)
    elif mode == "freeze_cache":
        train = cached_trainer(device)
    else:
        train = make_trainer("resnet18", mode, device, channels_last=True, num_classes=NUM_CLASSES)
    batch = [(torch.randn(BATCH_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, NUM_CLASSES, (BATCH_SIZE,)))]
    baseline = _status_mb("VmRSS") if reset_peak() else peak_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        train(batch)
    cuda_peak = torch.cuda.max_memory_allocated(device) / 1024**2 if device.type == "cuda" else None
    return {"baseline_mb": baseline, "peak_mb": peak_mb(), "cuda_peak_mb": cuda_peak}


def run(device, quick: bool = False, context: dict | None = None):
    """第 4 节：每种做法一个子进程。"""
    modes = ["tutorial", "freeze"] if quick else list(MODES)
    found = {m: run_probe("memory", ["--probe", m, "--device", str(device), "--steps", "1" if quick else "2"],
                          timeout=300) for m in modes}
    base = found["tutorial"]
    rows = []
    for mode, result in found.items():
        if "error" in result or result["peak_mb"] is None:
            rows.append({"做法": MODES[mode], "说明": result.get("error", "这个系统读不到峰值内存")})
            continue
        grown = result["peak_mb"] - result["baseline_mb"]
        rows.append({"做法": MODES[mode], "峰值内存（MB）": result["peak_mb"], "训练前（MB）": result["baseline_mb"],
                     "训练增加（MB）": grown,
                     "增加量相对原教程式": grown / max(base["peak_mb"] - base["baseline_mb"], 1e-9)
                     if "error" not in base else None,
                     "GPU 峰值（MB）": result["cuda_peak_mb"]})
    notes = [
        f"随机初始化的 ResNet-18（weights=None：这里下载不了 torchvision 的权重，内存与权重的取值无关），"
        f"批量 {BATCH_SIZE}、{IMAGE_SIZE} 像素、{NUM_CLASSES} 类，每种做法一个新进程训练 {1 if quick else 2} 步；"
        "“训练前”是建好模型、优化器和一批数据之后的峰值（含 Python 和 PyTorch 本身），“训练增加”主要是反向传播要保存的中间结果。",
        "峰值常驻内存：Linux 上是训练前清零后的 VmHWM（/proc/self/status），其他系统是 ru_maxrss；"
        "tracemalloc 看不到 PyTorch 的内存。",
    ]
    return Section("memory", "4. 训练的峰值内存（批量 32）", rows, notes), []


def main(argv=None) -> int:
    return probe_main(argv, description="（内部）在新进程里测一种做法的峰值内存", flag="probe", choices=MODES,
                      steps=2, measure=probe)


if __name__ == "__main__":
    sys.exit(main())
