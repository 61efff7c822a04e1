"""第 2 节：只看模型本身，每秒能训练多少张图（不读图片：同一批随机张量反复使用）。

比较 finetune 与 scratch（计算量相同，只是起点不同）在 contiguous 与 channels_last 两种内存布局下的速度，
GPU 上再加混合精度（AMP）；本课程 freeze 的训练步作参照。torch.compile 在新进程里测
（冷启动：编译缓存放在新的临时目录），同时报告它要多久才能开始训练。

训练步与 ``cu.fit`` 的内循环相同：前向、交叉熵、清零梯度、反向、Adam 更新（GradScaler 只在 AMP 时起作用）。
"""

from __future__ import annotations

import sys
import tempfile

import course_utils as cu

from .common import Section, median, probe_main, run_probe, timed

NUM_CLASSES = 30  # fruit30 的类别数
IMAGE_SIZE = 224
BATCH_SIZE = 32


def make_trainer(strategy: str, device, *, channels_last: bool, amp: bool = False, compile_model: bool = False,
                 num_classes: int = NUM_CLASSES):
    """返回 train(images, labels)：执行一个训练步，与 cu.fit 的内循环相同（前向、损失、反向、Adam 更新）。"""
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    torch.manual_seed(0)
    model = cu.build_model("resnet18", num_classes=num_classes, strategy=strategy, weights=None).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    optimizer = cu.make_optimizer(model, strategy, 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    net = torch.compile(model) if compile_model else model
    model.train()

    def train(images, labels):
        images, labels = images.to(device, memory_format=layout), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


def make_step(strategy: str, device, *, channels_last: bool, amp: bool, compile_model: bool = False):
    """返回一个无参函数：在同一批随机图片上执行一个训练步（只测模型，不读图片）。"""
    import torch

    train = make_trainer(strategy, device, channels_last=channels_last, amp=amp, compile_model=compile_model)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
    if torch.device(device).type != "cpu":
        images, labels = images.to(device), labels.to(device)  # 只测模型：数据事先放到设备上
    return lambda: train(images, labels)


def step_modes(device) -> list[dict]:
    """要比较的做法：(策略, 内存布局, AMP)。AMP 只在 CUDA 上有意义。"""
    import torch

    amps = [False, True] if torch.device(device).type == "cuda" else [False]
    modes = []
    for strategy in ("finetune", "scratch", "freeze"):
        for amp in amps:
            for channels_last in (False, True):
                modes.append({"strategy": strategy, "channels_last": channels_last, "amp": amp})
    return modes


def mode_key(mode: dict) -> str:
    layout = "channels_last" if mode["channels_last"] else "contiguous"
    return f"{mode['strategy']}/{layout}" + ("/amp" if mode["amp"] else "")


def measure_steps(modes: list[dict], device, rounds: int, steps: int) -> dict[str, float]:
    """每种做法先热身一步，再按轮交替、每轮连续 steps 步；返回 {做法: 每秒图片数（各轮中位数）}。"""
    runners = {mode_key(m): make_step(m["strategy"], device, channels_last=m["channels_last"], amp=m["amp"])
               for m in modes}
    for step in runners.values():
        timed(step, device)
    per_round: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, step in runners.items():
            seconds = timed(lambda: [step() for _ in range(steps)], device)[1]
            per_round[key].append(BATCH_SIZE * steps / seconds)
    return {key: median(values) for key, values in per_round.items()}


def compile_probe(strategy: str, device, steps: int) -> dict:
    """（在子进程里运行）同一进程里比较 torch.compile 与不编译：编译要多久、之后每秒多少张图。"""
    eager = make_step(strategy, device, channels_last=True, amp=False)
    compiled = make_step(strategy, device, channels_last=True, amp=False, compile_model=True)
    warmup = timed(compiled, device)[1]  # 第一步包含编译
    timed(compiled, device)
    timed(eager, device)
    speed = {"eager": [], "compiled": []}
    for _ in range(steps):
        for name, step in (("eager", eager), ("compiled", compiled)):
            speed[name].append(BATCH_SIZE / timed(step, device)[1])
    return {"warmup_s": warmup, "eager": median(speed["eager"]), "compiled": median(speed["compiled"])}


def measure_compile(device, strategies=("finetune", "freeze"), timeout: float = 300) -> dict[str, dict]:
    """每个策略一个新进程、一个空的编译缓存目录（冷启动）。"""
    found = {}
    for strategy in strategies:
        with tempfile.TemporaryDirectory() as cache:
            found[strategy] = run_probe("throughput", ["--compile-probe", strategy, "--device", str(device)],
                                        timeout=timeout, env={"TORCHINDUCTOR_CACHE_DIR": cache})
    return found


def run(device, quick: bool = False, context: dict | None = None):
    """第 2 节：finetune / scratch / freeze 的训练步速度；非 quick 时另测 torch.compile。"""
    import torch

    speeds = measure_steps(step_modes(device), device, rounds=1 if quick else 3, steps=1 if quick else 2)
    if context is not None:
        context["model_images_per_s"] = speeds
    base = speeds["finetune/contiguous"]
    rows = [{"做法": key.split("/")[0], "内存布局": key.split("/")[1], "AMP": "是" if key.endswith("/amp") else "否",
             "每秒图片数": value, "相对 finetune contiguous": value / base} for key, value in speeds.items()]
    notes = [
        f"ResNet-18，{NUM_CLASSES} 类，{IMAGE_SIZE} 像素，批量 {BATCH_SIZE}；同一批随机张量反复训练，不含读图。"
        f"每种做法先热身一步，再交替测 {1 if quick else 3} 轮、每轮 {1 if quick else 2} 步，取中位数。",
        "finetune 与 scratch 的计算完全相同（只是起点不同），两行的差别就是测量的波动。",
        "freeze 的训练步只有前向和分类头的反向，作参照。",
    ]
    if torch.device(device).type != "cuda":
        notes.append("没有 GPU：混合精度（AMP）只在 CUDA 上启用，这台机器上没有测。")
    if quick:
        notes.append("--quick：跳过 torch.compile（CPU 上编译要几十秒）。")
    else:
        rows += compile_rows(measure_compile(device), base)
        notes.append("torch.compile 在新进程里冷启动（空的编译缓存），“编译用时”是第一步的用时；"
                     "同一进程里与不编译（channels_last）交替测速，倍数是两者之比。")
    return Section("throughput", "2. 模型本身的训练速度（每秒图片数）", rows, notes), []


def compile_rows(found: dict, base: float) -> list[dict]:
    rows = []
    for strategy, result in found.items():
        if "error" in result:
            rows.append({"做法": f"{strategy} + torch.compile", "内存布局": "channels_last", "AMP": "否",
                         "说明": result["error"]})
            continue
        rows.append({"做法": f"{strategy} + torch.compile", "内存布局": "channels_last", "AMP": "否",
                     "每秒图片数": result["compiled"], "相对 finetune contiguous": result["compiled"] / base,
                     "编译用时（秒）": result["warmup_s"],
                     "说明": f"同一进程里不编译：{result['eager']:.1f} 张/秒，编译后是它的 {result['compiled'] / result['eager']:.2f} 倍"})
    return rows


def main(argv=None) -> int:
    return probe_main(argv, description="（内部）torch.compile 的子进程测量", flag="compile-probe",
                      choices=["finetune", "scratch", "freeze"], steps=5, measure=compile_probe)


if __name__ == "__main__":
    sys.exit(main())
