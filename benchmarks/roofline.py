"""第 5 节：物理上限的粗略估计。

ResNet-18（224 像素）和 EfficientNet-Lite0（112 像素）每张图要做多少次浮点运算（``torch.utils.flop_counter.FlopCounterMode`` 数出来的），
除以本机一次大矩阵乘法（以及一个典型 3×3 卷积，取快的）的速度（GFLOP/s，当作这台机器能达到的峰值），就是“最快也要多久”；
再看各做法实际达到了峰值的百分之几。
"""

from __future__ import annotations

import course_utils as cu

from .common import Section, timed
from .throughput import IMAGE_SIZES

NUM_CLASSES = 30
KINDS = ("forward", "freeze", "finetune")


def flops_per_image(kind: str, arch: str = "resnet18", image_size: int | None = None, batch: int = 2) -> float:
    """每张图的浮点运算次数。kind："forward"（推理）、"freeze"、"finetune"（训练步：前向 + 反向）。

    原教程式的训练步与 finetune 相同：主干参数都要求梯度，反向传播算遍全网。image_size 默认取这个网络在课程里的边长。
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    strategy = "freeze" if kind in ("forward", "freeze") else "finetune"
    model, _, _ = cu.build_model(arch, NUM_CLASSES, strategy, weights=None)
    image_size = image_size or IMAGE_SIZES[arch]
    images = torch.randn(batch, 3, image_size, image_size)
    labels = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}) as counter:
        if kind == "forward":
            with torch.inference_mode():
                model.eval()(images)
        else:
            F.cross_entropy(model.train()(images), labels).backward()
    return counter.get_total_flops() / batch


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """卷积反向传播的运算量：对输入的梯度、对权重的梯度，各与一次前向卷积相同。

    代替 PyTorch 自带的公式：它算对权重的梯度时没有考虑分组（groups），逐通道卷积（depthwise，
    EfficientNet-Lite0 里很多）会被多算“通道数”倍；不分组的卷积（ResNet-18）两者结果相同。
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def matmul_gflops(device, n: int, repeats: int) -> float:
    """n×n 的 float32 矩阵乘法，重复 repeats 次取最快的一次：GFLOP/s（2n³ 次运算）。"""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    timed(lambda: a @ b, device)  # 热身
    best = min(timed(lambda: a @ b, device)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def conv_gflops(device, repeats: int) -> float:
    """ResNet-18 layer3 那样的 3×3 卷积（256→256 通道、14×14、批量 32，channels_last）的 GFLOP/s。

    CPU 上卷积走 oneDNN，矩阵乘法走 MKL。有的机器上 MKL 没用上全部向量指令（例如 AMD 处理器上的 AVX-512），
    oneDNN 用上了；两者取快的一个，才是这台机器上 ResNet 真正能达到的峰值。
    """
    import torch
    import torch.nn.functional as F

    x = torch.randn(32, 256, 14, 14, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device).to(memory_format=torch.channels_last)
    flops = 2 * 32 * 14 * 14 * 256 * 256 * 9
    with torch.inference_mode():
        timed(lambda: F.conv2d(x, w, padding=1), device)  # 热身
        best = min(timed(lambda: F.conv2d(x, w, padding=1), device)[1] for _ in range(repeats))
    return flops / best / 1e9


def model_speeds(context: dict, device) -> dict[str, float]:
    """第 2 节测得的模型速度；没跑第 2 节时在这里快速测一遍。"""
    from .throughput import measure_steps, step_modes

    if "model_images_per_s" not in context:
        context["model_images_per_s"] = measure_steps(step_modes(), device, rounds=1, steps=1)
    return context["model_images_per_s"]


def run(device, quick: bool = False, context: dict | None = None):
    """第 5 节：浮点运算量、矩阵乘法峰值、各做法达到峰值的比例。"""
    context = context if context is not None else {}
    flops = {(arch, kind): flops_per_image(kind, arch) for arch in IMAGE_SIZES for kind in KINDS}
    size = 2048 if quick else 4096
    matmul, conv = matmul_gflops(device, size, 3 if quick else 5), conv_gflops(device, 5 if quick else 10)
    peak = max(matmul, conv)
    rows = [{"做法": f"torch.matmul {size}×{size}（float32）", "每秒 GFLOP": matmul, "占峰值": f"{matmul / peak:.0%}"},
            {"做法": "3×3 卷积 256→256 通道、14×14（float32，channels_last）", "每秒 GFLOP": conv,
             "占峰值": f"{conv / peak:.0%}"}]
    for key, speed in model_speeds(context, device).items():
        arch, strategy, layout = key.split("/")
        rows.append(_row(f"只算模型：{arch} {strategy} 训练步（{layout}）", flops[(arch, strategy)], speed, peak))
    for label, info in context.get("epochs", {}).items():  # 第 1 节：ResNet-18，含读图和验证的整轮
        work = info["train"] * flops[("resnet18", info["kind"])] + info["val"] * flops[("resnet18", "forward")]
        rows.append(_row(f"整轮（第 1 节）：{label}", work / (info["train"] + info["val"]),
                         (info["train"] + info["val"]) / info["seconds"], peak))
    lower = flops[("resnet18", "forward")] / (peak * 1e9)
    per_image = "；".join(f"{arch}（{size} 像素）" + " / ".join(f"{flops[(arch, k)] / 1e9:.2f}" for k in KINDS) + " GFLOP"
                         for arch, size in IMAGE_SIZES.items())
    notes = [
        f"每张图（{NUM_CLASSES} 类）的推理 / freeze 训练步 / finetune（即原教程式）训练步：{per_image}"
        "（FlopCounterMode 计数，乘加算 2 次；卷积的反向按“对输入、对权重各一次前向”计，PyTorch 自带的公式"
        "会把逐通道卷积对权重的梯度多算“通道数”倍）。运算量与权重的取值无关，网络随机初始化。",
        f"按峰值速度，一张图的前向最快也要 {lower * 1000:.1f} 毫秒；fruit30 的 5454 张图前向一遍至少 "
        f"{5454 * lower:.0f} 秒——这就是特征缓存的 20 轮训练不可能低于的下限。",
        f"峰值取 torch.matmul 与一个典型 3×3 卷积中较快的一个（{peak:.0f} GFLOP/s）；两者差得多时，"
        "说明矩阵乘法库（MKL）没用上这颗 CPU 的全部向量指令，而卷积库（oneDNN）用上了。",
        "ResNet 不全是大卷积：BatchNorm、ReLU、池化、残差相加受内存带宽限制，第一层（3 个输入通道）和最后几层（7×7 的小特征图）"
        "也难以把向量单元用满，所以只算模型也到不了 100%；整轮还要读图、预处理和验证，比例再低一些。"
        "EfficientNet-Lite0 的运算量小得多，但有许多逐通道（depthwise）卷积：运算不多，却要读写整张特征图，受内存带宽限制。",
        "换一台机器的粗略估计：用时大致与这里的峰值成反比——峰值只有本机一半的 CPU，同样的训练约慢一倍。",
    ]
    return Section("roofline", "5. 物理上限：浮点运算量与矩阵乘法峰值", rows, notes), []


def _row(label: str, flops: float, images_per_s: float, peak: float) -> dict:
    achieved = flops * images_per_s / 1e9
    return {"做法": label, "每张图 GFLOP": flops / 1e9, "每秒图片数": images_per_s, "每秒 GFLOP": achieved,
            "占峰值": f"{achieved / peak:.0%}"}
