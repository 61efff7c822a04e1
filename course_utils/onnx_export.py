"""导出 ONNX（选学 12 用，笔记本里写 ``cu.onnx_export.export_onnx(...)``），在 PyTorch 之外用 onnxruntime 运行。

12 把 ``torch.onnx.export``（dynamo 导出器）、``onnx.checker`` 和 ``InferenceSession`` 写在单元格里；这里是复用的两件事：
``export_onnx``（同样的导出，另外原子地写文件、模型的模式不变）和 ``time_inference``（公平地比较两边的速度）。
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
    """把模型（临时切到评估模式）导出成一个 ONNX 文件（输入 ``image``、输出 ``logits``），返回文件路径。

    批量这一维是动态的，高和宽固定为 image_size（Lite0 的 “SAME” 填充因此是常数）；device 是示例输入所在的设备，
    opset 为 None 时用导出器的默认值。权重和计算图写在同一个文件里；先写临时文件，``onnx.checker`` 通过后才改名：
    导出失败时不留下半个文件，原来的文件也不变。
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
    """同一批图片上 PyTorch 与 onnxruntime 各做一次前向的用时（repeats 次的中位数），返回每批秒数、每张图毫秒数的表。

    两边先各预热一次，再交替计时，免得机器忙闲的变化只落在一边；GPU 上等计算真正完成才停表。
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
