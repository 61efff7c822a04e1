"""数据健康检查：在测试里现场造一个带各种毛病的数据集，检查每一处都被找出来，而且检查本身不崩溃。"""

import numpy as np
import pytest
from PIL import Image

import course_utils as cu


def _fruit(name, i, size=64):
    return cu.draw_fruit_image(name, size, np.random.default_rng([5, len(name), i]))


@pytest.fixture(scope="module")
def sick_root(tmp_path_factory):
    """train/ 与 val/ 里埋好下列问题的数据集。"""
    root = tmp_path_factory.mktemp("sick")
    for split in ("train", "val"):
        for name in ("苹果", "香蕉"):
            (root / split / name).mkdir(parents=True)
    apple, banana = root / "train" / "苹果", root / "train" / "香蕉"
    for i in range(6):
        _fruit("苹果-红", i).save(apple / f"ok{i}.jpg")
    for i in range(3):
        _fruit("香蕉", i).save(banana / f"ok{i}.jpg")
    for i in range(2):
        _fruit("苹果-红", 100 + i).save(root / "val" / "苹果" / f"ok{i}.jpg")
        _fruit("香蕉", 100 + i).save(root / "val" / "香蕉" / f"ok{i}.jpg")
    (apple / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    whole = (apple / "ok0.jpg").read_bytes()
    (apple / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    _fruit("苹果-红", 50).convert("CMYK").save(apple / "cmyk.jpg")
    _fruit("苹果-红", 51).convert("L").save(apple / "gray.jpg")
    _fruit("苹果-红", 52).convert("RGBA").save(apple / "rgba.png")
    Image.new("RGB", (1, 1), (200, 0, 0)).save(apple / "tiny.png")
    (apple / "notes.txt").write_text("不是图片")
    (apple / ".ipynb_checkpoints").mkdir()
    (apple / ".ipynb_checkpoints" / "x.jpg").write_bytes(b"junk")  # 垃圾目录：不检查、不报告
    (banana / "dup.jpg").write_bytes((root / "val" / "香蕉" / "ok0.jpg").read_bytes())  # 跨划分完全重复
    near = Image.open(apple / "ok1.jpg").resize((56, 56), Image.Resampling.LANCZOS)
    near.save(root / "val" / "苹果" / "near.jpg", quality=70)  # 缩放 + 重新压缩的副本：近似重复
    (root / "train" / "空类").mkdir()  # train/ 里没有图片，val/ 里有
    (root / "val" / "空类").mkdir()
    (root / "train" / "只在训练集").mkdir()  # val/ 里没有这个类
    for i in range(2):
        _fruit("柠檬", i).save(root / "val" / "空类" / f"{i}.jpg")
        _fruit("草莓", i).save(root / "train" / "只在训练集" / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def report(sick_root):
    return cu.check_dataset(sick_root, imbalance_ratio=2.5)


def _found(report, problem, file=None, klass=None):
    rows = report.problems[report.problems["问题"] == problem]
    if file is not None:
        rows = rows[rows["文件"] == file]
    if klass is not None:
        rows = rows[rows["类别"] == klass]
    return rows


@pytest.mark.parametrize("problem, file, level", [
    ("无法读取", "train/苹果/corrupt.jpg", "错误"),
    ("图片被截断", "train/苹果/truncated.jpg", "错误"),
    ("非 RGB 模式", "train/苹果/cmyk.jpg", "警告"),
    ("非 RGB 模式", "train/苹果/gray.jpg", "警告"),
    ("非 RGB 模式", "train/苹果/rgba.png", "警告"),
    ("图片太小", "train/苹果/tiny.png", "警告"),
    ("不是图片", "train/苹果/notes.txt", "提示"),
])
def test_each_bad_file_is_found(report, problem, file, level):
    rows = _found(report, problem, file)
    assert len(rows) == 1, report.problems.to_string()
    assert rows.iloc[0]["级别"] == level


def test_modes_are_named_in_the_explanation(report):
    text = " ".join(_found(report, "非 RGB 模式")["说明"])
    assert "CMYK" in text and "RGBA" in text and " L" in text
    assert len(_found(report, "非 RGB 模式")) == 3  # 正常的 RGB 图片不报告


def test_class_level_problems_are_found(report):
    assert len(_found(report, "空类别", klass="空类")) == 1
    missing = _found(report, "类别不一致", klass="只在训练集")
    assert len(missing) == 1 and missing.iloc[0]["划分"] == "val"
    imbalance = _found(report, "类别不均衡")
    assert "苹果" in imbalance.iloc[0]["说明"]


def test_duplicates_across_splits_are_reported_as_leakage(report):
    exact = _found(report, "跨划分重复（泄漏）")
    assert len(exact) == 1
    assert "train/香蕉/dup.jpg" in exact.iloc[0]["说明"] and "val/香蕉/ok0.jpg" in exact.iloc[0]["说明"]
    near = _found(report, "跨划分近似重复（泄漏）")
    assert list(near["文件"]) == ["train/苹果/ok1.jpg"] and "val/苹果/near.jpg" in near.iloc[0]["说明"]


def test_summary_table_and_html(report, sick_root):
    assert not report.ok
    assert report.summary.startswith("检查了 ")
    assert "个错误" in report.summary and "先处理“错误”" in report.summary
    html = report._repr_html_()
    assert "<table" in html and "图片被截断" in html
    assert ".ipynb_checkpoints" not in report.problems["文件"].str.cat()
    assert report.counts.loc["苹果", "train"] == 6 + 4  # 6 张正常 + CMYK、灰度、RGBA、1×1（可读的都算）
    assert report.counts.loc["空类", "train"] == 0
    assert set(report.images["模式"].dropna()) >= {"RGB", "CMYK", "L", "RGBA"}


def test_clean_generated_dataset_has_no_problems(tmp_path):
    root = cu.generate_demo_dataset(tmp_path / "d", classes=list(cu.DEMO_FRUITS)[:4], train_per_class=8,
                                    test_per_class=3, image_size=48, seed=3)
    report = cu.check_dataset(root)
    assert report.ok and report.problems.empty, report.problems.to_string()
    assert report.summary.endswith("没有发现问题。")


def test_duplicates_inside_train_are_leakage_into_validation(tmp_path):
    """验证集从 train/ 划出：train/ 内部的重复（完全相同或近似）也是泄漏；val/ 内部的重复只是提示。"""
    root = cu.generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=3,
                                    test_per_class=2, image_size=64, seed=4)
    banana, lemon = root / "train" / "香蕉", root / "train" / "柠檬"
    (banana / "copy.jpg").write_bytes((banana / "0003.jpg").read_bytes())
    (lemon / "wrong.jpg").write_bytes((banana / "0002.jpg").read_bytes())  # 同一张图放进了两个类别
    Image.open(banana / "0001.jpg").resize((56, 56), Image.Resampling.LANCZOS).save(banana / "near.jpg", quality=70)
    (root / "val" / "柠檬" / "again.jpg").write_bytes((root / "val" / "柠檬" / "0001.jpg").read_bytes())
    report = cu.check_dataset(root)
    exact = _found(report, "train/ 内重复（泄漏到验证集）")
    assert len(exact) == 2 and set(exact["级别"]) == {"警告"}, report.problems.to_string()
    assert all("验证准确率会虚高" in text for text in exact["说明"])
    assert "标错" in exact[exact["类别"] == "柠檬、香蕉"].iloc[0]["说明"]
    assert "标错" not in exact[exact["类别"] == "香蕉"].iloc[0]["说明"]
    near = _found(report, "train/ 内近似重复（泄漏到验证集）")
    assert list(near["文件"]) == ["train/香蕉/0001.jpg"] and "train/香蕉/near.jpg" in near.iloc[0]["说明"]
    in_val = _found(report, "val/ 内重复")
    assert len(in_val) == 1 and in_val.iloc[0]["级别"] == "提示"
