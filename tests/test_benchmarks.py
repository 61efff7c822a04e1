"""基准测试（benchmarks/）里辅助函数的快速检查：不计时、不断言速度，只检查它们做对了事。"""

import json
import sys

import pytest
import torch

import course_utils as cu
from benchmarks import __main__ as cli
from benchmarks import common, course_time, loading, lr_sweep, memory, roofline, strategies, throughput


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


def test_markdown_table_takes_columns_from_the_widest_row_and_escapes_pipes():
    rows = [{"做法": "矩阵乘法", "速度": 100.0}, {"做法": "a|b", "每张图": 3.5, "速度": 12345.6, "备注": None}]
    lines = common.markdown_table(rows).splitlines()
    assert lines[0] == "| 做法 | 每张图 | 速度 | 备注 |"
    assert lines[2] == "| 矩阵乘法 | — | 100 | — |"
    assert lines[3] == "| a\\|b | 3.5 | 12,346 | — |"


def test_targets_know_which_direction_is_better():
    faster = common.Target("倍数", 2.7, 2.5, True, "")
    cheaper = common.Target("代价", 1.6, 1.5, False, "")
    assert faster.met and not cheaper.met
    assert faster.to_row()["要求"] == "≥ 2.5" and cheaper.to_row()["结果"] == "未达到"


def test_results_are_written_as_json_and_markdown(tmp_path):
    machine = common.machine_info("cpu")
    machine["load_average_at_end"] = None
    section = common.Section("x", "1. 测试", [{"做法": "freeze", "每轮用时（秒）": 1.5}], ["说明一句。"], 3.0, 0.1)
    target = common.Target("freeze 每轮比原教程式快（倍）", 3.0, 2.5, True, "相除")
    results = {"command": "python -m benchmarks --quick", "quick": True, "machine": machine, "seconds": 60.0,
               "sections": [common.section_dict(section)], "targets": [vars(target)]}
    json_path, md_path = common.write_results(results, tmp_path, common.machine_slug(machine))
    assert json.loads(json_path.read_text(encoding="utf-8"))["targets"][0]["value"] == 3.0
    text = md_path.read_text(encoding="utf-8")
    assert "python -m benchmarks --quick" in text and "| freeze 每轮比原教程式快（倍） | 3.00 | ≥ 2.5 | 达到 |" in text
    assert "其间别的进程占用 CPU 10%" in text and machine["cpu"] in text
    assert json_path.name.isascii() and json_path.stem.startswith(machine["date"][:10])


def test_command_line_sections_by_number_or_name():
    assert cli.selected(None) == list(cli.SECTIONS)
    assert cli.selected(["1", "memory", "course"]) == ["strategies", "memory", "course_time"]
    with pytest.raises(SystemExit, match="没有名为 '7' 的一节"):
        cli.selected(["7"])


def test_the_tutorial_baseline_really_has_the_tutorial_defects():
    """基线循环必须照原教程：主干照样算梯度、BatchNorm 统计量被改写，只有分类头被更新。"""
    mode = strategies.TutorialMode("基线", _state(), num_classes=3, lr=0.01, device="cpu", channels_last=False)
    before = {name: p.detach().clone() for name, p in mode.model.named_parameters()}
    mode.epoch(_loader(), _loader())
    assert mode.model.conv1.weight.grad is not None  # 梯度算到了第一层
    assert torch.equal(mode.model.conv1.weight, before["conv1.weight"])  # 但优化器没有更新它
    assert not torch.equal(mode.model.fc.weight, before["fc.weight"])
    assert strategies.batchnorm_changed(mode.model, _state())
    assert cu.count_params(mode.model)["trainable"] == cu.count_params(mode.model)["total"]
    assert len(mode.val_acc) == 1


def test_the_course_freeze_mode_keeps_batchnorm_statistics():
    mode = strategies.CourseFreezeMode("freeze", _state(), num_classes=3, lr=0.01, device="cpu")
    before = {name: p.detach().clone() for name, p in mode.model.named_parameters()}
    mode.epoch(_loader(), _loader())
    assert not strategies.batchnorm_changed(mode.model, _state()) and len(mode.val_acc) == 1
    assert mode.model.conv1.weight.grad is None  # 反向传播没有进主干
    assert torch.equal(mode.model.conv1.weight, before["conv1.weight"])
    assert not torch.equal(mode.model.fc.weight, before["fc.weight"])
    assert mode.model.conv1.weight.is_contiguous()  # cu.fit 训练完把布局换回来


def _state():
    torch.manual_seed(1)
    model, _, _ = cu.build_model("resnet18", 3, "finetune", weights=None)
    return model.state_dict()


def _loader():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32) * 2 + 1, torch.arange(8) % 3)
    return torch.utils.data.DataLoader(data, batch_size=4)


def test_throughput_modes_cover_both_networks_and_layouts():
    modes = throughput.step_modes()
    assert {(arch, layout) for arch, _, layout in modes} == {(a, l) for a in throughput.IMAGE_SIZES for l in (False, True)}
    assert throughput.mode_key(("efficientnet_lite0", "freeze", True)) == "efficientnet_lite0/freeze/channels_last"
    assert all(len(throughput.mode_key(m).split("/")) == 3 for m in modes)  # 第 5 节按 "/" 拆开


def test_the_throughput_trainer_uses_the_requested_layout_and_trains_only_what_the_strategy_says():
    """make_trainer 的训练步就是 cu.train_one_epoch：返回 (损失, 准确率)，freeze 只改分类头。"""
    train = throughput.make_trainer("efficientnet_lite0", "freeze", "cpu", channels_last=True, num_classes=3)
    model = _closure_model(train)
    assert model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    stem, head = model.conv_stem.weight.detach().clone(), model.classifier.weight.detach().clone()
    loss, acc = train([(torch.randn(4, 3, 32, 32), torch.arange(4) % 3)])
    assert loss > 0 and 0 <= acc <= 1
    assert torch.equal(model.conv_stem.weight, stem) and not torch.equal(model.classifier.weight, head)


def _closure_model(train):
    """make_trainer 返回的闭包里的模型（测试用）。"""
    names = train.__code__.co_freevars
    return train.__closure__[names.index("net")].cell_contents


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_flop_counts_follow_the_structure_of_a_training_step(arch):
    forward = roofline.flops_per_image("forward", arch, image_size=32)
    freeze = roofline.flops_per_image("freeze", arch, image_size=32)
    finetune = roofline.flops_per_image("finetune", arch, image_size=32)
    assert forward > 0 and freeze == pytest.approx(forward, rel=0.01)  # freeze 的反向只有一个小线性层
    assert 2.5 * forward < finetune < 3.5 * forward  # 反向约是前向的两倍：对输入和对权重各一次


def test_depthwise_convolution_backward_is_counted_like_two_forward_passes():
    """PyTorch 自带的公式把逐通道卷积对权重的梯度多算“通道数”倍；这里的公式不会。"""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    forward = 2 * 2 * 16 * 8 * 8 * 9  # 批量 × 通道 × 输出像素 × 3×3，乘加算 2 次
    with FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten.convolution_backward: roofline.conv_backward_flop}) as counter:
        torch.nn.functional.conv2d(x, w, padding=1, groups=16).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def test_standard_error_of_an_accuracy():
    assert strategies.standard_error(0.5, 100) == pytest.approx(0.05)
    assert strategies.standard_error(1.0, 100) > 0  # 全对时也不是零波动


def test_peak_memory_remembers_an_allocation_after_it_is_freed():
    import mmap

    assert memory.reset_peak() is sys.platform.startswith("linux")
    before = memory._status_mb("VmRSS") if sys.platform.startswith("linux") else memory.peak_mb()
    block = mmap.mmap(-1, 64 * 1024**2)  # 64 MB 新页面，每页都写一次才真正占用内存
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    block.close()
    assert memory.peak_mb() - before > 48  # 已经释放，峰值仍记得它


def test_worker_and_thread_configurations_cover_every_worker_count():
    assert loading.configurations(2) == [(0, 2), (1, 2), (1, 1), (2, 2), (2, 1)]
    assert loading.training_plan(1) == [("freeze", 0, 1), ("freeze", 1, 1), ("finetune", 0, 1), ("finetune", 1, 1)]


def test_a_failing_probe_is_reported_not_raised():
    result = common.run_probe("memory", ["--probe", "没有这种做法"], timeout=60)
    assert "子进程退出码 2" in result["error"]


def test_cpu_monitor_reports_a_share():
    monitor = common.CpuMonitor()
    sum(i * i for i in range(100_000))
    share = monitor.other_share()
    assert share is None or 0.0 <= share <= 1.0


def test_lr_text_writes_learning_rates_like_the_course():
    assert [lr_sweep.lr_text(lr) for lr in lr_sweep.FREEZE_LRS] == ["1e-3", "3e-3", "1e-2", "3e-2"]
    assert lr_sweep.lr_text(3e-4) == "3e-4"


def _history(*accs):
    return [{"epoch": i + 1, "val_acc": acc, "val_loss": 1.0 - acc} for i, acc in enumerate(accs)]


def test_the_sweep_chooses_by_the_last_validation_accuracy_and_breaks_ties_towards_the_smaller_rate():
    histories = {1e-3: _history(0.5, 0.9), 3e-3: _history(0.95, 0.9), 1e-2: _history(0.99, 0.8)}
    assert lr_sweep.choose(histories) == 1e-3  # 只看最后一轮；1e-3 与 3e-3 并列，取较小的
    histories[3e-2] = _history(0.1, 0.92)
    assert lr_sweep.choose(histories) == 3e-2


def test_the_sweep_target_counts_how_many_validation_images_the_default_loses():
    histories = {1e-3: _history(0.5, 0.8), 3e-3: _history(0.6, 0.9)}
    rows, target = lr_sweep.rows_and_target("freeze", histories, 1e-3, n_val=90)
    assert target.value == 9 and not target.met  # (0.9 − 0.8) × 90 张
    assert [row["选中"] for row in rows] == ["", "是"]
    assert rows[0]["第 2 轮"] == "80.0%" and rows[0]["最后一轮验证对几张"] == "72 / 90"
    _, tie = lr_sweep.rows_and_target("freeze", {1e-3: _history(0.9), 3e-3: _history(0.9)}, 1e-3, n_val=90)
    assert tie.value == 0 and tie.met and "选中的 1e-3" in tie.name


def test_the_freeze_sweep_starts_every_rate_from_the_same_head():
    """同一个学习率训练两次结果完全相同（同样的初始分类头、同样的批次顺序）；特征可分时学得会。"""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3
    features = torch.randn(48, 8, generator=generator) + 3 * torch.nn.functional.one_hot(labels, 8)
    train, val = (features[:36], labels[:36]), (features[36:], labels[36:])
    first = lr_sweep.sweep_freeze(train, val, 3, [1e-1, 1e-3], epochs=3, device="cpu", batch_size=8)
    again = lr_sweep.sweep_freeze(train, val, 3, [1e-1], epochs=3, device="cpu", batch_size=8)
    assert list(first) == [1e-1, 1e-3] and all(len(h) == 3 for h in first.values())
    assert first[1e-1] == [{**r, "seconds": a["seconds"]} for r, a in zip(again[1e-1], first[1e-1])]
    assert [r["lr"] for r in first[1e-3]] == [1e-3] * 3
    assert all(h[-1]["val_loss"] < h[0]["val_loss"] for h in first.values())
    assert first[1e-1][-1]["val_acc"] >= 0.9 > first[1e-3][-1]["val_acc"]  # 这么少的步数，1e-3 还没学会


def test_course_totals_separate_core_optional_and_solution_notebooks():
    notebooks = [["00_setup.ipynb", 10.0], ["07_predict.ipynb", 20.0], ["10_gradcam.ipynb", 5.0],
                 ["solutions/04_train_solutions.ipynb", 1.0]]
    assert [seconds for _, seconds in course_time.course_totals(notebooks)] == [30.0, 35.0, 36.0]


def test_fake_weights_load_under_the_official_name(tmp_path, monkeypatch):
    """--course 给 quick 档位准备的权重文件：课程按官方文件名在 TORCH_HOME 里找到并加载它。"""
    home = course_time.fake_weights_home(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(home))
    model, info = cu.load_pretrained("resnet18")
    assert info["weights"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    torch.manual_seed(0)
    from torchvision import models

    assert torch.equal(model.conv1.weight, models.resnet18(weights=None).conv1.weight)
