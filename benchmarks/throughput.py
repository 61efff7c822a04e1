"""第 2 节：只看模型本身，每秒能训练多少张图（不读图片：同一批随机张量反复使用）。

两种网络都测，各用课程里的输入边长：ResNet-18（full / quick 档位，224 像素）和 EfficientNet-Lite0（demo 档位，
112 像素）。比较 finetune 与 freeze 在 contiguous 与 channels_last 两种内存布局下的速度。训练步就是课程的
``cu.train_one_epoch``（前向、交叉熵、清零梯度、反向、Adam 更新），模型事先用 ``model.to(memory_format=...)``
换成要比较的布局；``cu.fit`` 在 CPU 和 CUDA 上总是用 channels_last，所以这里不调用它。输入张量不改布局，和课程一样。
torch.compile 在新进程里测（冷启动：编译缓存放在新的临时目录），同时报告它要多久才能开始训练。
"""

from __future__ import annotations

import sys
import tempfile

import course_utils as cu

from .common import Section, Target, median, probe_main, run_probe, timed

IMAGE_SIZES = {"resnet18": 224, "efficientnet_lite0": 112}  # 网络结构 -> 课程里的输入边长
COURSE_CLAIMS = {"resnet18": 1.25, "efficientnet_lite0": 2.3}  # 课程文档（train.py 的 fit、architecture.md）写的 CPU 上的倍数
WEIGHTS_NOTE = ("权重：两种网络都随机初始化（weights=None）。这里下载不了 ResNet-18 的 torchvision 权重；"
                "速度与权重的取值无关，只与网络结构、输入大小和内存布局有关。")
NUM_CLASSES = 30  # fruit30 的类别数
BATCH_SIZE = 32


def make_trainer(arch: str, strategy: str, device, *, channels_last: bool, num_classes: int = NUM_CLASSES,
                 compile_model: bool = False):
    """返回 train(batches)：用 cu.train_one_epoch 把这些批次训练一遍。模型是随机初始化的，先换成指定的内存布局。"""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model, head, _ = cu.build_model(arch, num_classes, strategy, weights=None)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = cu.make_optimizer(model, head, strategy, 1e-3)
    net = torch.compile(model) if compile_model else model
    criterion = nn.CrossEntropyLoss()
    return lambda batches: cu.train_one_epoch(net, batches, criterion, optimizer, device)


def make_step(mode: tuple, device, *, compile_model: bool = False):
    """返回一个无参函数：在同一批随机图片上执行一个训练步（只测模型，不读图片）。mode 是 (网络, 策略, channels_last)。"""
    import torch

    arch, strategy, channels_last = mode
    train = make_trainer(arch, strategy, device, channels_last=channels_last, compile_model=compile_model)
    generator = torch.Generator().manual_seed(0)
    size = IMAGE_SIZES[arch]
    images = torch.randn(BATCH_SIZE, 3, size, size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
    batch = [(images.to(device), labels.to(device))]  # 只测模型：数据事先放到设备上
    return lambda: train(batch)


def step_modes() -> list[tuple]:
    """要比较的做法：(网络, 策略, channels_last)。scratch 与 finetune 的计算完全相同，不另测。"""
    return [(arch, strategy, layout) for arch in IMAGE_SIZES for strategy in ("finetune", "freeze")
            for layout in (False, True)]


def mode_key(mode: tuple) -> str:
    arch, strategy, channels_last = mode
    return f"{arch}/{strategy}/{'channels_last' if channels_last else 'contiguous'}"


def measure_steps(modes: list[tuple], device, rounds: int, steps: int) -> dict[str, float]:
    """每种做法先热身一步，再按轮交替、每轮连续 steps 步；返回 {做法: 每秒图片数（各轮中位数）}。"""
    runners = {mode_key(m): make_step(m, device) for m in modes}
    for step in runners.values():
        timed(step, device)
    per_round: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, step in runners.items():
            seconds = timed(lambda: [step() for _ in range(steps)], device)[1]
            per_round[key].append(BATCH_SIZE * steps / seconds)
    return {key: median(values) for key, values in per_round.items()}


def compile_probe(arch: str, device, steps: int) -> dict:
    """（在子进程里运行）同一进程里比较 torch.compile 与不编译（finetune，channels_last）：编译要多久、之后每秒多少张图。"""
    eager = make_step((arch, "finetune", True), device)
    compiled = make_step((arch, "finetune", True), device, compile_model=True)
    warmup = timed(compiled, device)[1]  # 第一步包含编译
    timed(compiled, device)
    timed(eager, device)
    speed = {"eager": [], "compiled": []}
    for _ in range(steps):
        for name, step in (("eager", eager), ("compiled", compiled)):
            speed[name].append(BATCH_SIZE / timed(step, device)[1])
    return {"warmup_s": warmup, "eager": median(speed["eager"]), "compiled": median(speed["compiled"])}


def measure_compile(device, timeout: float = 300) -> dict[str, dict]:
    """每种网络一个新进程、一个空的编译缓存目录（冷启动）。"""
    found = {}
    for arch in IMAGE_SIZES:
        with tempfile.TemporaryDirectory() as cache:
            found[arch] = run_probe("throughput", ["--compile-probe", arch, "--device", str(device)],
                                    timeout=timeout, env={"TORCHINDUCTOR_CACHE_DIR": cache})
    return found


def run(device, quick: bool = False, context: dict | None = None):
    """第 2 节：两种网络、两种布局的训练步速度；非 quick 时另测 torch.compile。"""
    rounds, steps = (1, 1) if quick else (5, 2)
    speeds = measure_steps(step_modes(), device, rounds=rounds, steps=steps)
    if context is not None:
        context["model_images_per_s"] = speeds
    rows, targets = [], []
    for key, value in speeds.items():
        arch, strategy, layout = key.split("/")
        rows.append({"网络": arch, "输入边长": IMAGE_SIZES[arch], "做法": strategy, "内存布局": layout,
                     "每秒图片数": value, "channels_last ÷ contiguous":
                     value / speeds[f"{arch}/{strategy}/contiguous"] if layout == "channels_last" else None})
    for arch, size in IMAGE_SIZES.items():
        gain = speeds[f"{arch}/finetune/channels_last"] / speeds[f"{arch}/finetune/contiguous"]
        targets.append(Target(f"{arch}：channels_last 训练比 contiguous 快（倍）", gain, 1.0, True,
                              f"finetune 训练步，{size} 像素，同一次运行里交替测；cu.fit 在 CPU 和 CUDA 上总是用 "
                              f"channels_last；课程文档写的是 {COURSE_CLAIMS[arch]:g} 倍"))
    notes = [
        WEIGHTS_NOTE,
        f"{NUM_CLASSES} 类，批量 {BATCH_SIZE}，ResNet-18 用 224 像素、EfficientNet-Lite0 用 112 像素"
        f"（各自档位的输入边长）；同一批随机张量反复训练，不含读图。每种做法先热身一步，再交替测 {rounds} 轮、"
        f"每轮 {steps} 步，取中位数。",
        "训练步是课程的 cu.train_one_epoch；布局只改模型（model.to(memory_format=...)），输入张量保持 contiguous。",
        "freeze 的训练步只有前向和分类头的反向，作参照；scratch 与 finetune 的计算完全相同，不另测。",
        "课程不用混合精度（AMP），这里也不测。",
        "channels_last ÷ contiguous（finetune 训练步）：本次 " + "、".join(
            f"{arch} {t.value:.2f} 倍（课程文档写 {COURSE_CLAIMS[arch]:g} 倍）" for arch, t in zip(IMAGE_SIZES, targets))
        + "；倍数随 CPU 型号和负载变化，以同一次运行里测得的为准。",
    ]
    if quick:
        notes.append("--quick：跳过 torch.compile（CPU 上编译要几十秒）。")
    else:
        rows += compile_rows(measure_compile(device))
        notes.append("torch.compile 在新进程里冷启动（空的编译缓存），“编译用时”是第一步的用时；"
                     "同一进程里与不编译（channels_last）交替测速，倍数是两者之比。")
    return Section("throughput", "2. 模型本身的训练速度（每秒图片数）", rows, notes), targets


def compile_rows(found: dict) -> list[dict]:
    rows = []
    for arch, result in found.items():
        row = {"网络": arch, "输入边长": IMAGE_SIZES[arch], "做法": "finetune + torch.compile", "内存布局": "channels_last"}
        if "error" in result:
            rows.append({**row, "说明": result["error"]})
            continue
        rows.append({**row, "每秒图片数": result["compiled"], "编译用时（秒）": result["warmup_s"],
                     "说明": f"同一进程里不编译：{result['eager']:.1f} 张/秒，编译后是它的 "
                             f"{result['compiled'] / result['eager']:.2f} 倍"})
    return rows


def main(argv=None) -> int:
    return probe_main(argv, description="（内部）torch.compile 的子进程测量", flag="compile-probe",
                      choices=list(IMAGE_SIZES), steps=5, measure=compile_probe)


if __name__ == "__main__":
    sys.exit(main())
