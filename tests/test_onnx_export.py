"""导出 ONNX（onnx_export.py）：课程默认的 EfficientNet-Lite0 导出后通过检查、批量可变，onnxruntime 的 logits 与 PyTorch
只差浮点舍入（1e-4 左右）、top-1 完全一致（timm 的 “SAME” 填充按输入尺寸计算，导出时高宽固定）；模型模式不变；
导出失败时不留半个文件、原文件不变；速度表的两行来自两种运行方式。"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import course_utils as cu
from course_utils.onnx_export import export_onnx, time_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py

SIZE = 64  # 小图：导出和运行都快；Lite0 的 5 次下采样后还剩 2×2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ImageNet 权重的 Lite0（1000 类，冻结主干），导出到临时文件夹；返回 (模型, 文件路径, 导出前的各层模式)。

    用真权重而不是随机权重：随机初始化的 Lite0 对什么图都给出几乎一样的 logits，top-1 一致就说明不了什么。
    """
    model, _ = cu.load_pretrained("efficientnet_lite0", weights="imagenet")
    cu.freeze_backbone(model, model.classifier)
    cu.set_train_mode(model)  # 混合的模式：分类头在训练模式，冻结的 BatchNorm 在评估模式
    modes = [m.training for m in model.modules()]
    assert any(modes) and not all(modes)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "lite0.onnx", image_size=SIZE)
    return model, path, modes


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def test_export_writes_one_valid_file_and_restores_modes(exported):
    model, path, modes = exported
    onnx.checker.check_model(str(path))
    assert [m.training for m in model.modules()] == modes
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # 没有留下临时文件或外部权重文件


def test_onnxruntime_matches_pytorch_for_lite0_with_another_batch_size(exported):
    model, path, _ = exported
    session = _session(path)
    (port,), (out,) = session.get_inputs(), session.get_outputs()
    assert (port.name, port.shape) == ("image", ["batch", 3, SIZE, SIZE])
    assert (out.name, out.shape) == ("logits", ["batch", 1000])
    images = _photos()  # 6 张，导出时批量是 1
    theirs = session.run(None, {"image": images.numpy()})[0]
    with cu.models.eval_mode(model), torch.no_grad():
        ours = model(images).numpy()
    assert theirs.shape == (6, 1000) and theirs.dtype == np.float32
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-5)  # 实测最大差 7e-5（logits 最大约 42）
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert len(set(ours.argmax(1))) >= 4  # 不同的照片猜成不同的类：top-1 一致才有意义


def _photos():
    """scikit-image 自带的 6 张照片，按课程的评估预处理缩成 SIZE 像素：(6, 3, SIZE, SIZE)。"""
    import skimage.data
    from PIL import Image

    _, eval_tf = cu.build_transforms(SIZE, SIZE, [0.5] * 3, [0.5] * 3)  # Lite0 的均值和标准差
    folder = Path(skimage.data.__file__).parent
    names = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "horse.png", "motorcycle_left.png")
    return torch.stack([eval_tf(Image.open(folder / name).convert("RGB")) for name in names])


def test_time_inference_reports_both_runtimes_and_restores_modes(exported):
    model, path, modes = exported
    table = time_inference(model, _session(path), torch.randn(2, 3, SIZE, SIZE), "cpu", repeats=2)
    assert list(table.index) == ["PyTorch（cpu）", "onnxruntime（cpu）"] and (table["每批秒数"] > 0).all()
    np.testing.assert_allclose(table["每张图毫秒数"], 1000 * table["每批秒数"] / 2)
    assert [m.training for m in model.modules()] == modes


def test_failed_export_leaves_the_previous_file_untouched(exported, tmp_path, monkeypatch):
    model, _, modes = exported
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def broken_export(model, args, path, **kwargs):
        with open(path, "wb") as half:  # 先写了一半，再失败
            half.write(b"partial")
        raise RuntimeError("导出器出错")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="导出器出错"):
        export_onnx(model, target, image_size=SIZE)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert [m.training for m in model.modules()] == modes


def test_unwritable_folder_is_explained_in_chinese(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("一个文件")
    with pytest.raises(OSError, match="无法在"):
        export_onnx(torch.nn.Linear(1, 1), blocker / "model.onnx", image_size=SIZE)
