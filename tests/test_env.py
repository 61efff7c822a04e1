"""环境检查 check_environment() 与 ``python -m course_utils doctor``；setup_notebook() 的全局设置。"""

import os
import re
import subprocess
import sys

import matplotlib as mpl
import pytest
from packaging.requirements import Requirement

import course_utils as cu
from course_utils import env
from course_utils.paths import REPO_ROOT

LINE = re.compile(r"^\[(通过|失败|提示)\] (.+?)：(.+)$")


def _pinned_names():
    names = []
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        spec = line.split("#")[0].strip()
        if spec and not spec.startswith("-"):
            names.append(Requirement(spec).name.lower())
    return names


@pytest.fixture
def places(tmp_path, monkeypatch):
    """数据和输出放到临时目录，检查不碰仓库里的 data/ 和 outputs/。"""
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_report_has_every_item_and_passes_here(places):
    before = dict(mpl.rcParams)
    report = cu.check_environment(print_report=False, profile="smoke")
    assert list(report) == ["python", *_pinned_names(), "device", "font", "disk", "outputs", "dataset"]
    assert {"torch", "torchvision"} <= set(report)
    for name, item in report.items():
        assert set(item) == {"ok", "detail", "required"}, name
        assert isinstance(item["ok"], bool) and isinstance(item["required"], bool) and item["detail"]
    failed = [name for name, item in report.items() if item["required"] and not item["ok"]]
    assert failed == []  # 这个测试环境按 requirements.txt 安装，输出目录可写
    assert report["torch"]["detail"].split("+")[0] == "2.14.1"
    assert "WenQuanYi Micro Hei Subset" in report["font"]["detail"]
    assert dict(mpl.rcParams) == before, "检查环境不应修改 matplotlib 的设置"


def test_printed_report_has_one_tagged_line_per_item(places, capsys):
    report = cu.check_environment(profile="smoke")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "环境检查（档位 smoke）"
    tagged = [LINE.match(line) for line in lines[1:-1]]
    assert all(tagged) and len(tagged) == len(report)
    expected = {"通过" if i["ok"] else "失败" if i["required"] else "提示" for i in report.values()}
    assert {m.group(1) for m in tagged} == expected
    assert lines[1].startswith("[通过] Python：3.") and "必需的检查全部通过" in lines[-1]


def test_version_mismatch_and_missing_package_are_failures(places, monkeypatch, tmp_path, capsys):
    fake = tmp_path / "requirements.txt"
    fake.write_text("# 注释行\n-r other.txt\ntorch==1.0.0  # 故意写错\nno-such-package-xyz==1.0  # 不存在\n", encoding="utf-8")
    monkeypatch.setattr(env, "REQUIREMENTS_FILE", fake)
    report = cu.check_environment(profile="smoke")
    assert [k for k in report if k not in env.LABELS] == ["torch", "no-such-package-xyz"]
    assert report["torch"] == {"ok": False, "required": True, "detail": report["torch"]["detail"]}
    assert "2.14.1" in report["torch"]["detail"] and "==1.0.0" in report["torch"]["detail"]
    assert not report["no-such-package-xyz"]["ok"] and "没有安装" in report["no-such-package-xyz"]["detail"]
    out = capsys.readouterr().out
    assert "[失败] torch：装的是 2.14.1" in out and "pip install -r requirements.txt" in out
    assert "有 2 项必需的检查没有通过：torch、no-such-package-xyz" in out
    assert env.doctor("smoke") == 1


def test_local_version_tags_like_cuda_builds_are_ignored(places, monkeypatch, tmp_path):
    from importlib import metadata

    fake = tmp_path / "requirements.txt"
    fake.write_text("torch==2.14.1  # GPU 版本带 +cu130\n", encoding="utf-8")
    monkeypatch.setattr(env, "REQUIREMENTS_FILE", fake)
    monkeypatch.setattr(metadata, "version", lambda name: "2.14.1+cu130")
    report = cu.check_environment(print_report=False, profile="smoke")
    assert report["torch"]["ok"] and report["torch"]["detail"] == "2.14.1+cu130"


def test_old_python_fails(places, monkeypatch):
    monkeypatch.setattr(env, "MIN_PYTHON", (sys.version_info.major, sys.version_info.minor + 1))
    python = cu.check_environment(print_report=False, profile="smoke")["python"]
    assert python["required"] and not python["ok"] and "重新创建 .venv" in python["detail"]


@pytest.mark.parametrize(("device", "ok", "tag"), [("cpu", False, "[提示]"), ("mps", True, "[通过]")])
def test_device_advice(places, monkeypatch, device, ok, tag):
    monkeypatch.setenv("COURSE_DEVICE", device)
    item = cu.check_environment(print_report=False, profile="smoke")["device"]
    assert item["ok"] is ok and item["required"] is False and env._tag(item) == tag
    if device == "cpu":
        assert "quick 或 demo" in item["detail"]


def test_fruit30_presence_is_advice_and_generated_data_is_fine(places):
    full = cu.check_environment(print_report=False, profile="full")["dataset"]
    assert (full["ok"], full["required"]) == (False, False)
    for split in ("train", "val"):
        (places / "data" / "fruit30_split" / split).mkdir(parents=True)
    assert cu.check_environment(print_report=False, profile="quick")["dataset"]["ok"]
    demo = cu.check_environment(print_report=False, profile="demo")["dataset"]
    assert demo["ok"] and demo["required"]
    own = env._check_dataset(cu.resolve_settings("smoke", dataset=str(places / "mine")))
    assert (own["ok"], own["required"]) == (False, True)  # 自带数据集的目录不存在：必须处理


def test_unwritable_outputs_fail(places, monkeypatch):
    blocker = places / "a-file"
    blocker.write_text("不是目录", encoding="utf-8")
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(blocker / "outputs"))  # 文件下面建不了目录（root 也不行）
    report = cu.check_environment(print_report=False, profile="smoke")
    assert not report["outputs"]["ok"] and report["outputs"]["required"]
    assert "COURSE_OUTPUT_DIR" in report["outputs"]["detail"]


def _doctor(tmp_path, output_dir):
    env_vars = {**os.environ, "COURSE_OUTPUT_DIR": str(output_dir), "COURSE_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "course_utils", "doctor", "--profile", "smoke"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_vars)


def test_doctor_command_exits_0_when_all_required_items_pass(places, capsys):
    from course_utils.__main__ import main

    assert main(["doctor", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "[通过] Python" in out and "[通过] torch" in out and "[通过] 中文字体" in out


def test_doctor_process_exits_1_when_a_required_item_fails(tmp_path):
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    bad = _doctor(tmp_path, tmp_path / "a-file" / "outputs")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert re.search(r"^\[失败\] 输出目录：", bad.stdout, re.M) and "[通过] Python" in bad.stdout
    assert "有 1 项必需的检查没有通过：输出目录" in bad.stdout


def test_setup_notebook_seeds_registers_the_font_and_applies_the_theme(monkeypatch):
    import torch

    monkeypatch.setenv("PYTHONHASHSEED", "0")  # setup_notebook 会改它；测试结束后恢复
    with mpl.rc_context():
        mpl.rcParams["font.sans-serif"] = ["DejaVu Sans"]
        cu.setup_notebook(seed=7)
        first = torch.rand(3)
        assert mpl.rcParams["font.sans-serif"][0] == "WenQuanYi Micro Hei Subset"
        assert mpl.rcParams["font.family"] == ["sans-serif"] and mpl.rcParams["pdf.fonttype"] == 42
        assert mpl.rcParams["axes.grid"] is True  # seaborn 的 whitegrid 风格
        assert mpl.rcParams["figure.dpi"] == 100 and mpl.rcParams["savefig.bbox"] == "tight"
        cu.setup_notebook(seed=7)
        assert torch.equal(torch.rand(3), first)
