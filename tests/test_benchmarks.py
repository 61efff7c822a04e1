"""基准测试（benchmarks/）里辅助函数的快速检查：不计时、不断言速度，只检查它们做对了事。"""

import json
import sys

import pytest
import torch

import course_utils as cu
from benchmarks import __main__ as cli
from benchmarks import common, loading, memory, roofline, strategies


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
    torch.manual_seed(0)
    mode = strategies.TutorialMode("基线", _state(), num_classes=3, lr=0.01, device="cpu", channels_last=False)
    before = {name: p.detach().clone() for name, p in mode.model.named_parameters()}
    images, labels = torch.randn(8, 3, 32, 32) * 2 + 1, torch.arange(8) % 3
    strategies.tutorial_train_epoch(mode.model, mode.optimizer, [(images, labels)], "cpu", channels_last=False)
    assert mode.model.conv1.weight.grad is not None  # 梯度算到了第一层
    assert torch.equal(mode.model.conv1.weight, before["conv1.weight"])  # 但优化器没有更新它
    assert not torch.equal(mode.model.fc.weight, before["fc.weight"])
    assert strategies.batchnorm_changed(mode.model, _state())


def test_the_course_freeze_mode_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    mode = strategies.CourseFreezeMode("freeze", _state(), num_classes=3, lr=0.01, device="cpu")
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32) * 2 + 1, torch.arange(8) % 3)
    loaders = cu.Loaders(train=torch.utils.data.DataLoader(data, batch_size=4),
                         val=torch.utils.data.DataLoader(data, batch_size=4), test=None)
    mode.epoch(loaders)
    assert not strategies.batchnorm_changed(mode.model, _state()) and len(mode.val_acc) == 1


def _state():
    torch.manual_seed(1)
    return cu.build_model("resnet18", num_classes=3, strategy="finetune", weights=None).state_dict()


def test_flop_counts_follow_the_structure_of_a_training_step():
    forward = roofline.flops_per_image("forward", image_size=32)
    freeze = roofline.flops_per_image("freeze", image_size=32)
    finetune = roofline.flops_per_image("finetune", image_size=32)
    assert forward > 0 and freeze == pytest.approx(forward, rel=0.01)  # freeze 的反向只有一个小线性层
    assert 2.5 * forward < finetune < 3.5 * forward  # 反向约是前向的两倍：对输入和对权重各一次


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
