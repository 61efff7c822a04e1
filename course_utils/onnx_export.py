"""导出 ONNX（选学 12 用，笔记本里写 ``cu.onnx_export.export_onnx(...)``）：把模型存成 ONNX 文件，在 PyTorch 之外用
onnxruntime 运行。

12 把 ``torch.onnx.export``（PyTorch 2 的 dynamo 导出器，需要 onnxscript）、``onnx.checker`` 和 onnxruntime 的
``InferenceSession`` 直接写在单元格里，也自己比较两边的结果；这里只有 12 以后复用的两件事：``export_onnx`` 是同样的导出，
另外原子地写文件、导出前后模型的模式不变；``time_inference`` 公平地比较两边的速度。
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from .models import eval_mode

__all__ = ["export_onnx", "time_inference"]


def export_onnx(model, path, *, image_size: int, device="cpu", opset: int | None = None) -> Path:
    """把模型导出成一个 ONNX 文件（输入名 ``image``、输出名 ``logits``），返回文件路径。

    参数：
        model：分类模型；导出时临时切到评估模式，导出后每一层恢复原来的模式。
        image_size：输入边长。示例输入是 (1, 3, image_size, image_size)；批量这一维是动态的（可以一次送任意张图），
            高和宽固定为 image_size：Lite0 的 “SAME” 填充按输入尺寸计算，固定尺寸后就是常数。
        device：示例输入放在哪个设备上（与模型一致）；opset：ONNX 算子集版本，None 用导出器的默认值。
    权重和计算图写在同一个文件里（``external_data=False``）。先写同一文件夹里的临时文件，``onnx.checker`` 检查通过后
    才换成正式文件名：导出失败时不留下半个文件，原来的文件也不变。
    """
    import onnx
    import torch

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as error:
        raise OSError(f"无法在 {path.parent} 里写文件（{error.strerror or error}）：检查文件夹是否存在、"
                      "是否有写权限、磁盘是否已满，或者换一个保存位置。") from error
    try:
        example = torch.zeros(1, 3, image_size, image_size, device=torch.device(device))
        with eval_mode(model), torch.no_grad():
            torch.onnx.export(model, (example,), temp, input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        onnx.checker.check_model(temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path


def time_inference(model, session, images, device, *, repeats: int = 5):
    """同一批图片上，PyTorch 与 onnxruntime 各做一次前向要多少秒（repeats 次的中位数），返回两行的表。

    两边先各预热一次，再交替计时，免得机器忙闲的变化只落在一边；GPU 上等计算真正完成才停表。
    列：每批秒数、每张图毫秒数。
    """
    import numpy as np
    import pandas as pd
    import torch

    device = torch.device(device)
    batch, array = images.to(device), np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)

    def run_torch():
        model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    runners = {f"PyTorch（{device.type}）": run_torch,
               "onnxruntime（cpu）": lambda: session.run(None, {session.get_inputs()[0].name: array})}
    seconds = {name: [] for name in runners}
    with eval_mode(model), torch.inference_mode():
        for run in runners.values():
            run()  # 预热
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    rows = {name: {"每批秒数": statistics.median(times), "每张图毫秒数": 1000 * statistics.median(times) / len(array)}
            for name, times in seconds.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("运行方式")
