"""导出 ONNX（onnx_export.py）：导出的文件通过检查、批量可变、与 PyTorch 的输出一致；
模型模式不变；导出失败时不留半个文件、原文件不变；比较表与独立计算的结果一致。"""

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import course_utils as cu

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """一个随机初始化的 freeze ResNet-18（3 类），导出到临时文件夹；返回 (模型, 文件路径, 导出前的各层模式)。"""
    torch.manual_seed(0)
    model = cu.build_model("resnet18", num_classes=3, strategy="freeze", weights=None)
    model.train()
    model.fc.eval()  # 混合的模式，检查导出后每一层都恢复原样
    modes = [m.training for m in model.modules()]
    path = cu.export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", image_size=SIZE)
    return model, path, modes


def test_export_writes_a_valid_file_and_restores_modes(exported):
    model, path, modes = exported
    assert path.is_file() and path.suffix == ".onnx"
    onnx.checker.check_model(str(path))
    assert [m.training for m in model.modules()] == modes
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # 没有留下临时文件或外部权重文件


def test_onnxruntime_matches_pytorch_with_another_batch_size(exported):
    model, path, _ = exported
    session = cu.onnx_session(path, threads=1)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    images = torch.randn(3, 3, SIZE, SIZE)  # 导出时批量是 1
    logits = cu.onnx_predict(session, images)
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    assert logits.shape == (3, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_compare_table_matches_independent_computation(exported):
    model, path, _ = exported
    session = cu.onnx_session(path, threads=1)
    torch.manual_seed(1)
    images, labels = torch.randn(7, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    loader = DataLoader(TensorDataset(images, labels), batch_size=3)
    table = cu.compare_with_pytorch(model, session, loader, "cpu", max_batches=2)
    assert len(table) == 1
    row = table.iloc[0]
    with torch.no_grad():
        ours = model.eval()(images[:6]).numpy()
    theirs = session.run(None, {"image": images[:6].numpy()})[0]
    assert row["图片数"] == 6
    assert row["logits 最大绝对差"] == pytest.approx(np.abs(ours - theirs).max(), abs=1e-6)
    assert row["top-1 一致率"] == pytest.approx((ours.argmax(1) == theirs.argmax(1)).mean())
    assert row["PyTorch 准确率"] == pytest.approx((ours.argmax(1) == labels[:6].numpy()).mean())
    assert row["ONNX 准确率"] == pytest.approx((theirs.argmax(1) == labels[:6].numpy()).mean())


def test_time_inference_reports_both_runtimes(exported):
    model, path, _ = exported
    session = cu.onnx_session(path, threads=1)
    modes = [m.training for m in model.modules()]
    table = cu.time_inference(model, session, torch.randn(2, 3, SIZE, SIZE), "cpu", repeats=2)
    assert len(table) == 2 and (table["每批秒数"] > 0).all()
    np.testing.assert_allclose(table["每张图毫秒数"], 1000 * table["每批秒数"] / 2)
    assert [m.training for m in model.modules()] == modes


def test_failed_export_leaves_previous_file_untouched(exported, tmp_path, monkeypatch):
    model, _, _ = exported
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def broken_export(*args, **kwargs):
        with open(args[2], "wb") as half:  # 先写了一半，再失败
            half.write(b"partial")
        raise RuntimeError("导出器出错")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    modes = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="导出器出错"):
        cu.export_onnx(model, target, image_size=SIZE)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert [m.training for m in model.modules()] == modes


def test_unwritable_folder_gives_a_clear_message(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("一个文件")
    model = torch.nn.Linear(1, 1)
    with pytest.raises(OSError, match="无法在"):
        cu.export_onnx(model, blocker / "model.onnx", image_size=SIZE)


def test_session_on_missing_file_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        cu.onnx_session(tmp_path / "missing.onnx")
