"""演示数据集：同一个种子逐字节相同、换种子就不同、按 fruit30 的结构存放、可以复用和修复；
而且“可学但不简单”：小卷积网络远高于随机猜，线性模型明显不如它。"""

import hashlib
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import course_utils as cu
from course_utils.data import DATASETS
from course_utils.files import list_image_files

SMALL = dict(classes=["苹果-红", "苹果-青", "西红柿", "香蕉"], train_per_class=3, test_per_class=2, image_size=40)


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    a = _hashes(cu.demo.generate_demo_dataset(tmp_path / "a", seed=7, **SMALL))
    b = _hashes(cu.demo.generate_demo_dataset(tmp_path / "b", seed=7, **SMALL))
    c = _hashes(cu.demo.generate_demo_dataset(tmp_path / "c", seed=8, **SMALL))
    assert len(a) == 4 * (3 + 2)
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_layout_is_exactly_fruit30s(tmp_path):
    root = cu.demo.generate_demo_dataset(tmp_path / "demo", seed=1, **SMALL)
    for split, count in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(SMALL["classes"])
        for name in SMALL["classes"]:
            files = sorted((root / split / name).iterdir())
            assert len(files) == count and all(f.suffix == ".jpg" for f in files)
            with Image.open(files[0]) as image:
                assert image.size == (40, 40) and image.mode == "RGB"


def test_generation_is_cached_and_an_interrupted_run_is_redone(tmp_path):
    root = cu.demo.generate_demo_dataset(tmp_path / "demo", seed=1, **SMALL)
    first = root / "train" / "香蕉" / "0001.jpg"
    stamp = first.stat().st_mtime_ns
    assert cu.demo.generate_demo_dataset(tmp_path / "demo", seed=1, **SMALL) == root
    assert first.stat().st_mtime_ns == stamp  # 参数相同：不重画
    stale = tmp_path / "demo.partial-999999"  # 很久以前生成到一半被打断的残留
    (stale / "train").mkdir(parents=True)
    os.utime(stale, (0, 0))
    (root / ".demo-dataset.json").unlink()  # 没有标记：视为不完整，也可能根本不是我们生成的
    with pytest.raises(FileExistsError, match="不是课程生成的"):
        cu.demo.generate_demo_dataset(tmp_path / "demo", seed=1, **SMALL)  # 没有标记的目录不会被删除
    (root / ".demo-dataset.json").write_text(json.dumps({"version": 0}), encoding="utf-8")  # 旧版本的画法
    cu.demo.generate_demo_dataset(tmp_path / "demo", seed=1, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # 临时目录都清理掉了
    assert len(list(root.rglob("*.jpg"))) == 20


def test_unknown_class_is_a_chinese_error(tmp_path):
    with pytest.raises(KeyError, match="不会画这些类别：榴莲"):
        cu.demo.generate_demo_dataset(tmp_path / "x", classes=["榴莲"], train_per_class=1, test_per_class=1,
                                 image_size=32, seed=0)


def test_profiles_use_fruit30_class_names_and_registered_sizes(tmp_path, monkeypatch):
    fruit30 = set(DATASETS["fruit30"].classes)
    for name in ("demo", "smoke"):
        spec = DATASETS[name]
        assert set(spec.classes) <= fruit30 and set(spec.classes) <= set(cu.demo.DEMO_FRUITS)
    assert len(DATASETS["demo"].classes) >= 8
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    root = cu.prepare_dataset(cu.resolve_settings("smoke"))
    assert root == tmp_path / "smoke-v1"
    counts = Counter((split, name) for split, name, _ in list_image_files(root))
    assert counts == Counter({(split, c): n for c in DATASETS["smoke"].classes for split, n in (("train", 12), ("val", 4))})


# ---------------------------------------------------------------- 可学但不简单

CLASSES = list(DATASETS["demo"].classes)


def _pixels(split, per_class, size=64, side=32):
    """直接调用画图函数（不写文件）得到 (图片, 标签)；种子与正式数据集不同，相当于一份新样本。"""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            image = cu.demo.draw_fruit_image(name, size, np.random.default_rng([99, label, split, i]))
            images.append(np.asarray(image.resize((side, side), Image.Resampling.BILINEAR)))
            labels.append(label)
    return np.stack(images), np.array(labels)


def _linear_accuracy(x_train, y_train, x_test, y_test):
    """逻辑回归直接看缩小到 16×16 的像素（取几个正则化强度里最好的，对线性模型公平）。"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def flat(x):
        return np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.Resampling.BILINEAR)) for im in x]
                        ).reshape(len(x), -1) / 255.0

    scores = []
    for c in (0.01, 0.1):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=400))
        scores.append(model.fit(flat(x_train), y_train).score(flat(x_test), y_test))
    return max(scores)


def _cnn_accuracy(x_train, y_train, x_test, y_test, epochs=12):
    import torch
    from torch import nn

    torch.manual_seed(0)

    def tensor(x):
        return (torch.tensor(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, len(CLASSES)))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    xs, ys = tensor(x_train), torch.tensor(y_train)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * ((len(xs) + 31) // 32))
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 32):
            idx = order[start:start + 32]
            flip = torch.rand(len(idx), generator=generator) < 0.5  # 水平翻转增广
            images = torch.where(flip[:, None, None, None], xs[idx].flip(3), xs[idx])
            loss = nn.functional.cross_entropy(model(images), ys[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return (model(tensor(x_test)).argmax(1).numpy() == y_test).mean()


@pytest.fixture
def one_thread():
    """单线程：2 核机器上与其它测试并行时，多线程的 BLAS / OpenMP 反而慢几十倍。"""
    import torch
    from threadpoolctl import threadpool_limits  # scikit-learn 的依赖

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def test_demo_data_is_learnable_by_a_cnn_but_not_by_a_linear_model_on_pixels(one_thread):
    x_train, y_train = _pixels(0, 40)
    x_test, y_test = _pixels(1, 15)
    chance = 1 / len(CLASSES)
    cnn = _cnn_accuracy(x_train, y_train, x_test, y_test)
    linear = _linear_accuracy(x_train, y_train, x_test, y_test)
    print(f"随机猜 {chance:.2f}，线性模型 {linear:.2f}，小卷积网络 {cnn:.2f}")
    assert cnn > 7 * chance  # 远高于随机猜（12 类时 > 58%）
    assert linear < cnn - 0.2  # 线性模型明显不如卷积网络：颜色和位置之外，还得看形状和纹理
    assert linear > 2 * chance  # 但也不是完全随机：颜色确实有用（类别之间有相似也有差别）
