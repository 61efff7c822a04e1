"""数据健康检查：在测试里现场造一个带各种毛病的数据集，检查每一处都被找出来，而且检查本身不崩溃。"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import course_utils as cu
from course_utils import demo, health


def _fruit(name, i, size=64):
    return demo.draw_fruit_image(name, size, np.random.default_rng([5, len(name), i]))


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
    root = demo.generate_demo_dataset(tmp_path / "d", classes=list(demo.DEMO_FRUITS)[:4], train_per_class=8,
                                    test_per_class=3, image_size=48, seed=3)
    report = cu.check_dataset(root)
    assert report.ok and report.problems.empty, report.problems.to_string()
    assert report.summary.endswith("没有发现问题。")


def test_duplicates_inside_train_are_leakage_into_validation(tmp_path):
    """验证集从 train/ 划出：train/ 内部的重复（完全相同或近似）也是泄漏；val/ 内部的重复只是提示。"""
    root = demo.generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=3,
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


# ---------------------------------------------------------------- 近似重复：颜色、副本、分组

CLIPART_COLOURS = {"苹果-红": (200, 30, 35), "猕猴桃": (120, 95, 50), "脐橙": (235, 140, 30),
                   "柠檬": (240, 220, 60), "苹果-青": (140, 200, 60)}


def _clipart(colour, rng, size=96):
    """剪贴画式的水果：纯色背景上一个纯色的圆，不同水果只是颜色不同（明暗指纹几乎一样）。"""
    image = Image.new("RGB", (size, size), (250, 250, 250))
    r = size * rng.uniform(0.28, 0.34)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
    fill = tuple(int(c + rng.uniform(-15, 15)) for c in colour)
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    return image


def _bits(a, b):
    return int(np.bitwise_count(health._dhash(a) ^ health._dhash(b)).sum())


def _near(report):
    return report.problems[report.problems["问题"].str.contains("近似重复")]


def _clipart_root(root, per_class=9, total=43, val_every=4):
    """issue 里那样的 43 张图：5 种颜色、同一个形状；每 val_every 张放一张进 val/。"""
    rng = np.random.default_rng(7)
    jobs = [(name, colour) for name, colour in CLIPART_COLOURS.items() for _ in range(per_class)][:total]
    for k, (name, colour) in enumerate(jobs):
        split = "val" if k % val_every == 0 else "train"
        (root / split / name).mkdir(parents=True, exist_ok=True)
        _clipart(colour, rng).save(root / split / name / f"{k:02d}.png")
    return root


def test_same_shape_different_colour_is_not_a_near_duplicate(tmp_path):
    rng = np.random.default_rng(1)
    apple, kiwi = _clipart(CLIPART_COLOURS["苹果-红"], rng), _clipart(CLIPART_COLOURS["猕猴桃"], rng)
    assert _bits(apple, kiwi) <= 12  # 只看明暗指纹，它们就是“近似重复”（修改前的误报）
    for split, name, image in (("train", "苹果-红", apple), ("val", "猕猴桃", kiwi)):
        (tmp_path / split / name).mkdir(parents=True)
        image.save(tmp_path / split / name / "0.png")
    assert _near(cu.check_dataset(tmp_path)).empty


def test_colour_only_dataset_gives_one_group_per_colour_at_most(tmp_path):
    report = cu.check_dataset(_clipart_root(tmp_path))
    near = _near(report)
    assert len(near) <= len(CLIPART_COLOURS), near.to_string()
    assert all("、" not in classes for classes in near["类别"]), near.to_string()  # 没有一组混着两种水果


@pytest.mark.parametrize("copy", ["重新压缩", "缩小", "放大后重新压缩", "灰度"])
def test_re_encoded_or_resized_copies_are_still_near_duplicates(tmp_path, copy):
    """演示数据那样背景平坦、带噪声的图：相邻像素几乎一样亮，指纹不能被噪声打乱。"""
    originals = [demo.draw_fruit_image(name, 112, np.random.default_rng([2, k]))
                 for k, name in enumerate(["苹果-红", "香蕉", "猕猴桃", "西瓜", "柠檬", "葡萄-红"])]
    for k, image in enumerate(originals):
        (tmp_path / "train" / "水果").mkdir(parents=True, exist_ok=True)
        (tmp_path / "val" / "水果").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "train" / "水果" / f"{k}.png")
        changed = {"重新压缩": image, "缩小": image.resize((64, 64), Image.Resampling.LANCZOS),
                   "放大后重新压缩": image.resize((224, 224), Image.Resampling.BICUBIC), "灰度": image.convert("L")}[copy]
        changed.save(tmp_path / "val" / "水果" / f"copy{k}.jpg", quality=60)
    near = _near(cu.check_dataset(tmp_path))
    assert len(near) == len(originals), near.to_string()
    assert set(near["问题"]) == {"跨划分近似重复（泄漏）"}
    assert all(f"copy{k}.jpg" in text for k, text in zip(range(len(originals)), near.sort_values("文件")["说明"]))


def test_hundred_look_alikes_are_reported_as_a_few_groups_with_counts(tmp_path):
    """两张照片各有 50 个略有不同的副本（亮度噪声、重新压缩），散在 train/ 和 val/ 里：
    两两相像的有两千多对，报告却只有两行，每行写明这一组有多少张。"""
    for k, name in enumerate(["香蕉", "西瓜"]):
        base = np.asarray(demo.draw_fruit_image(name, 96, np.random.default_rng([3, k])), dtype=np.float32)
        rng = np.random.default_rng(k)
        for i in range(50):
            split = "val" if i % 5 == 0 else "train"
            (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
            pixels = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / name / f"{i:02d}.jpg", quality=int(rng.integers(70, 95)))
    near = _near(cu.check_dataset(tmp_path))
    assert len(near) == 2, near.to_string()
    assert all("这一组 50 张图几乎一样" in text for text in near["说明"])
    assert set(near["问题"]) == {"跨划分近似重复（泄漏）"} and set(near["类别"]) == {"香蕉", "西瓜"}


def test_demo_dataset_has_no_near_duplicates(tmp_path):
    """演示数据每张图都是单独画的：不该有近似重复的警告（颜色和明暗都要相近才算）。"""
    root = demo.generate_demo_dataset(tmp_path / "d", classes=list(demo.DEMO_FRUITS), train_per_class=10,
                                    test_per_class=4, image_size=64, seed=11)
    assert _near(cu.check_dataset(root)).empty
