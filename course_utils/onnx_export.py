"""导出 ONNX：把训练好的模型存成 ONNX 文件，在 PyTorch 之外用 onnxruntime 运行（选学 12 用）。

*ONNX*（Open Neural Network Exchange）是一种与框架无关的模型格式：文件里是计算图和权重，
C++、C#、Java、JavaScript 和手机上的推理引擎都能读。这里用的工具都来自现成的库：
导出用 ``torch.onnx.export``，检查用 ``onnx.checker``，运行用 ``onnxruntime``；本模块只做课程需要的几件事：
原子地写文件、导出前后保持模型的模式不变、把两边的结果和速度放进一张表里比较。
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .models import eval_mode

if TYPE_CHECKING:  # 只用于类型注解
    import numpy as np
    import pandas as pd

__all__ = ["export_onnx", "onnx_session", "onnx_predict", "compare_with_pytorch", "time_inference"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_onnx(model, path, *, image_size: int, device="cpu", opset: int | None = None) -> Path:
    """把模型导出成一个 ONNX 文件，返回文件路径。

    参数：
        model：分类模型；导出时临时切到评估模式，导出后每一层恢复原来的模式。
        path：目标文件（例如 ``cu.output_dir(profile, "checkpoints") / "finetune.onnx"``）。
        image_size：输入图片的边长；示例输入是 (1, 3, image_size, image_size)，批量这一维是动态的，
            导出的模型一次可以接收任意张图。
        device：示例输入放在哪个设备上（与模型一致）；opset：ONNX 算子集版本，None 用导出器的默认值。
    用的是 PyTorch 2.x 默认的导出器（``dynamo=True``，基于 ``torch.export``，需要 onnxscript）；
    ResNet-18 用它能直接导出。权重和计算图写在同一个文件里（``external_data=False``，2 GB 以内的模型都可以），
    方便整个文件拿去部署。先写到同一文件夹里的临时文件，用 ``onnx.checker`` 检查通过后才换成正式文件名：
    导出失败时不会留下半个文件，原来的文件也保持不变。输入名为 ``image``，输出名为 ``logits``。
    """
    import onnx
    import torch

    path = Path(path)
    temp = _temp_file(path)
    try:
        example = torch.zeros(1, 3, image_size, image_size, device=torch.device(device))
        with eval_mode(model), torch.no_grad():
            torch.onnx.export(model, (example,), str(temp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        onnx.checker.check_model(str(temp))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _temp_file(path: Path) -> Path:
    """在目标文件夹里建一个临时文件；文件夹不存在或不可写时给出中文说明。"""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.touch(exist_ok=False)  # 权限按系统的 umask，与普通新建的文件相同
    except OSError as error:
        raise OSError(
            f"无法在 {path.parent} 里写文件（{error.strerror or error}）。"
            "请检查这个文件夹是否存在、是否有写权限、磁盘是否已满，或者换一个保存位置。"
        ) from error
    return temp


def onnx_session(path, *, threads: int | None = None):
    """用 onnxruntime 打开一个 ONNX 文件，返回在 CPU 上运行的 ``InferenceSession``。

    threads：一个算子内部用几个线程（intra_op），None 时与 PyTorch 当前的线程数相同，速度比较才公平。
    """
    import onnxruntime as ort
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"找不到 ONNX 文件 {path}。请先用 cu.export_onnx() 导出模型。")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predict(session, images) -> "np.ndarray":
    """用 onnxruntime 对一批图片做前向计算，返回 logits（形状 (张数, 类别数) 的 float32 数组）。

    images：(张数, 3, 高, 宽) 的 float32 数组或张量，预处理必须与训练时完全相同（尺寸、均值、标准差）。
    """
    import numpy as np

    if hasattr(images, "detach"):  # PyTorch 张量
        images = images.detach().cpu().numpy()
    inputs = {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)}
    return session.run(None, inputs)[0]


def compare_with_pytorch(model, session, loader, device, *, max_batches: int | None = None) -> "pd.DataFrame":
    """同一批图片分别交给 PyTorch 模型和 ONNX 模型，比较两边的输出，返回一行的表。

    列：图片数、logits 的最大绝对差、两边 top-1 预测一致的比例、两边各自的准确率。
    max_batches：最多比较 loader 里的前几个批次，None 表示全部。
    """
    import itertools

    import numpy as np
    import pandas as pd
    import torch

    torch_logits, onnx_logits, labels = [], [], []
    with eval_mode(model), torch.inference_mode():
        for images, targets in itertools.islice(loader, max_batches):
            torch_logits.append(model(images.to(device)).float().cpu().numpy())
            onnx_logits.append(onnx_predict(session, images))
            labels.append(targets.numpy())
    if not labels:
        raise ValueError("loader 里没有图片，无法比较。请检查数据集或 max_batches。")
    a, b, y = np.concatenate(torch_logits), np.concatenate(onnx_logits), np.concatenate(labels)
    pred_a, pred_b = a.argmax(1), b.argmax(1)
    return pd.DataFrame([{
        "图片数": len(y), "logits 最大绝对差": float(np.abs(a - b).max()),
        "top-1 一致率": float((pred_a == pred_b).mean()),
        "PyTorch 准确率": float((pred_a == y).mean()), "ONNX 准确率": float((pred_b == y).mean()),
    }])


def time_inference(model, session, images, device, *, repeats: int = 5) -> "pd.DataFrame":
    """同一批图片上，PyTorch 与 onnxruntime 各做一次前向计算要多少秒（取 repeats 次的中位数）。

    先各做一次不计时的预热，然后两边交替计时，免得机器忙闲的变化只影响其中一边。
    PyTorch 在评估模式和 inference_mode 下计时；GPU 上会等计算真正完成再停表。
    返回两行的表：运行方式、每批秒数、每张图毫秒数。
    """
    import pandas as pd
    import torch

    device = torch.device(device)
    batch = images.to(device)
    array = images.detach().cpu().numpy()

    def run_torch():
        model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    runners = {f"PyTorch（{device.type}）": run_torch, "onnxruntime（cpu）": lambda: onnx_predict(session, array)}
    seconds = {name: [] for name in runners}
    with eval_mode(model), torch.inference_mode():
        for run in runners.values():
            run()  # 预热
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    rows = [{"运行方式": name, "每批秒数": statistics.median(times),
             "每张图毫秒数": 1000 * statistics.median(times) / len(array)} for name, times in seconds.items()]
    return pd.DataFrame(rows).set_index("运行方式")
