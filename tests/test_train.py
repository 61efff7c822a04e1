"""训练循环与检查点：安全加载、原子写入、中断后续训、特征缓存、指标与曲线。

数据是固定种子生成的小张量（32×32），模型是真正的 ResNet-18（随机初始化），在 2 核 CPU 上几秒跑完。
"""

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import course_utils as cu
from course_utils.checkpoints import CheckpointError, CheckpointNotFound

NUM_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


def _tensors(n=36, size=32, seed=0):
    """三类可分的小图：每类的平均亮度不同。"""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.randn(n, 3, size, size, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return images, labels


def _loaders(seed=0, batch_size=6):
    images, labels = _tensors()
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(images[:24], labels[:24]), batch_size=batch_size, shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(images[24:], labels[24:]), batch_size=batch_size)
    return train, val


def _model(strategy="finetune", seed=0):
    torch.manual_seed(seed)
    return cu.build_model("resnet18", NUM_CLASSES, strategy, weights=None)


def _meta():
    return {"class_names": ["苹果-红", "香蕉", "西瓜"], "image_size": 32, "resize_size": 36, "profile": "smoke"}


def _predict(model, images):
    with torch.no_grad():
        return model.eval()(images)


# ---------------------------------------------------------------- 检查点


def test_checkpoint_round_trip_through_weights_only_gives_identical_predictions(tmp_path):
    model = _model("freeze")
    train, val = _loaders()
    cu.fit(model, train, val, epochs=1, device="cpu", lr=0.05)
    path = cu.save_checkpoint(tmp_path / "freeze_best.pt", model, {**_meta(), "arch": "resnet18", "strategy": "freeze",
                                                                    "num_classes": NUM_CLASSES, "weights": None,
                                                                    "weights_note": "未使用预训练权重：测试"})
    raw = torch.load(path, weights_only=True)  # 不需要任何 allowlist
    assert set(raw) == {"state_dict", "meta"}
    assert cu.read_checkpoint(path)["meta"] == raw["meta"]
    loaded, meta = cu.load_checkpoint(path)
    images = _tensors(n=6, seed=5)[0]
    assert torch.equal(_predict(model, images), _predict(loaded, images))
    assert meta["class_names"] == ["苹果-红", "香蕉", "西瓜"]
    assert not loaded.training and cu.count_params(loaded)["trainable"] == NUM_CLASSES * 512 + NUM_CLASSES


def test_fit_writes_best_and_last_checkpoints_with_complete_metadata(tmp_path):
    model = _model("scratch")
    train, val = _loaders()
    history = cu.fit(model, train, val, epochs=3, device="cpu", checkpoint_dir=tmp_path, meta=_meta(), lr=0.01)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "cache_seconds"}
    assert all(h["cache_seconds"] == 0 for h in history)
    _, best_meta = cu.load_checkpoint(tmp_path / "scratch_best.pt")
    best = max(history, key=lambda h: (h["val_acc"], -h["epoch"]))
    assert best_meta["best_epoch"] == best["epoch"] and best_meta["best_val_acc"] == best["val_acc"]
    last = torch.load(tmp_path / "scratch_last.pt", weights_only=True)
    assert last["meta"]["history"] == history and last["train_state"]["epoch"] == 3
    for key in ("arch", "strategy", "num_classes", "class_names", "image_size", "weights", "weights_note",
                "versions", "created", "profile"):
        assert key in last["meta"], key
    assert set(last["meta"]["versions"]) == {"torch", "torchvision", "python"}


def test_meta_must_be_plain_types(tmp_path):
    model = _model()
    for bad in ({"acc": np.float64(0.5)}, {"path": tmp_path}, {"nested": {"x": torch.tensor(1.0)}}):
        with pytest.raises(TypeError, match="weights_only"):
            cu.save_checkpoint(tmp_path / "x.pt", model, bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("broken", ["torch.save", "os.replace"])
def test_a_crash_while_saving_keeps_the_previous_checkpoint_and_leaves_no_temp_files(tmp_path, monkeypatch, broken):
    path = tmp_path / "finetune_best.pt"
    first = _model(seed=1)
    meta = {"arch": "resnet18", "strategy": "finetune", "num_classes": NUM_CLASSES}
    cu.save_checkpoint(path, first, meta)
    second = _model(seed=2)

    def crash(*args, **kwargs):
        if broken == "torch.save":
            args[1].write(b"half a checkpoint")  # 写了一半才出错
        raise OSError("磁盘满了（模拟）")

    target = torch if broken == "torch.save" else os
    monkeypatch.setattr(target, broken.split(".")[1], crash)
    with pytest.raises(OSError, match="模拟"):
        cu.save_checkpoint(path, second, meta)
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == ["finetune_best.pt"], "不应留下临时文件"
    loaded, _ = cu.load_checkpoint(path)
    images = _tensors(n=4)[0]
    assert torch.equal(_predict(loaded, images), _predict(first, images))


def test_missing_checkpoint_says_which_notebook_and_strategy_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    path = cu.checkpoint_path("demo", "finetune")
    assert path == tmp_path / "demo" / "checkpoints" / "finetune_best.pt"
    assert cu.metrics_path("demo", "finetune") == tmp_path / "demo" / "metrics" / "finetune.json"
    with pytest.raises(CheckpointNotFound, match=r"04.*demo.*STRATEGY 设为 \"finetune\"") as caught:
        cu.load_checkpoint(path)
    assert isinstance(caught.value, FileNotFoundError)


def test_a_pickled_whole_model_from_the_tutorial_is_refused_with_an_explanation(tmp_path):
    path = tmp_path / "fruit30_pytorch_C1.pth"
    torch.save(_model(), path)  # 原教程的保存方式：整个模型对象
    with pytest.raises(CheckpointError, match=r"torch\.save\(model\).*pickle"):
        cu.load_checkpoint(path)
    bare = tmp_path / "bare.pt"
    torch.save(_model().state_dict(), bare)
    with pytest.raises(CheckpointError, match="缺少 \"state_dict\" 和 \"meta\""):
        cu.load_checkpoint(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="读不出来"):
        cu.load_checkpoint(junk)


# ---------------------------------------------------------------- 中断与续训


class CrashingLoader:
    """包装一个 DataLoader：第 crash_epoch 次遍历到第 crash_batch 个批次时抛出异常（模拟断电、Ctrl+C）。"""

    def __init__(self, loader, crash_epoch, crash_batch):
        self.loader, self.crash_epoch, self.crash_batch = loader, crash_epoch, crash_batch
        self.dataset, self.generator, self.batch_size = loader.dataset, loader.generator, loader.batch_size
        self.passes = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for index, batch in enumerate(self.loader):
            if self.passes == self.crash_epoch and index == self.crash_batch:
                raise RuntimeError("训练中途崩溃（模拟）")
            yield batch


def _crash_in_second_validation(monkeypatch):
    """第 2 轮训练完、验证到一半时崩溃（用于特征缓存：那时训练数据已经是缓存的特征）。"""
    import course_utils.train as train_module

    real, calls = train_module.evaluate_accuracy, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("验证时崩溃（模拟）")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_accuracy", crashing)


@pytest.mark.parametrize("strategy, cache", [("finetune", False), ("freeze", True)])
def test_resume_after_a_crash_matches_an_uninterrupted_run_exactly(tmp_path, monkeypatch, strategy, cache):
    common = dict(epochs=3, device="cpu", lr=0.01, feature_cache=cache)
    reference = _model(strategy)
    train, val = _loaders(seed=7)
    expected = cu.fit(reference, train, val, checkpoint_dir=tmp_path / "a", **common)

    crashed = _model(strategy)
    train, val = _loaders(seed=7)
    if cache:
        _crash_in_second_validation(monkeypatch)
    else:
        train = CrashingLoader(train, crash_epoch=2, crash_batch=2)
    with pytest.raises(RuntimeError, match="模拟"):
        cu.fit(crashed, train, val, checkpoint_dir=tmp_path / "b", **common)
    monkeypatch.undo()
    assert torch.load(tmp_path / "b" / f"{strategy}_last.pt", weights_only=True)["train_state"]["epoch"] == 1

    resumed = _model(strategy, seed=99)  # 新进程里重新构建的模型：初始值不同也没关系
    train, val = _loaders(seed=12345)  # 打乱顺序的生成器状态也从检查点恢复
    torch.manual_seed(2024)
    history = cu.fit(resumed, train, val, checkpoint_dir=tmp_path / "b", resume=True, **common)

    assert [h["epoch"] for h in history] == [1, 2, 3]
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "cache_seconds")} for h in hs]  # noqa: E731
    assert strip(history) == strip(expected)
    state, expected_state = resumed.state_dict(), reference.state_dict()
    assert all(torch.equal(state[k], expected_state[k]) for k in expected_state)


def test_resume_refuses_a_checkpoint_of_another_strategy(tmp_path):
    train, val = _loaders()
    cu.fit(_model("finetune"), train, val, epochs=1, device="cpu", checkpoint_dir=tmp_path, run_name="run")
    with pytest.raises(CheckpointError, match="不能从.*续训"):
        cu.fit(_model("scratch"), train, val, epochs=2, device="cpu", checkpoint_dir=tmp_path, run_name="run", resume=True)


def test_resume_finished_run_trains_nothing_more(tmp_path):
    train, val = _loaders()
    first = cu.fit(_model(), train, val, epochs=2, device="cpu", checkpoint_dir=tmp_path)
    again = cu.fit(_model(), train, val, epochs=2, device="cpu", checkpoint_dir=tmp_path, resume=True)
    assert again == first


# ---------------------------------------------------------------- 冻结训练与特征缓存


class RecordingDataset(Dataset):
    """带 transform 的小数据集，记录每个 transform 被调用了几次。"""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


class CountingTransform:
    def __init__(self, name):
        self.name, self.calls = name, 0

    def __call__(self, image):
        self.calls += 1
        return image


def test_feature_cache_uses_the_eval_transform_and_leaves_the_backbone_untouched():
    images, labels = _tensors()
    augment, plain = CountingTransform("train"), CountingTransform("eval")
    train_ds = Subset(RecordingDataset(images, labels, augment), range(24))
    val_ds = Subset(RecordingDataset(images, labels, plain), range(24, 36))
    train = DataLoader(train_ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(val_ds, batch_size=6)
    model = _model("freeze")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    history = cu.fit(model, train, val, epochs=3, device="cpu", lr=0.05, feature_cache=True)

    assert augment.calls == 0, "缓存特征时训练集不该经过随机增广"
    assert plain.calls == 24 + 12  # 每张图只算一次特征（训练 24 + 验证 12），而不是每轮一次
    assert train_ds.dataset.transform is augment  # 原来的数据集没有被改动
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert [h["epoch"] for h in history] == [1, 2, 3] and all(0 <= h["val_acc"] <= 1 for h in history)
    cache = [h["cache_seconds"] for h in history]
    assert cache[0] > 0 and cache[1:] == [0, 0] and history[0]["seconds"] >= cache[0]


def test_cached_features_with_max_batches_are_a_seeded_random_sample_shuffled_by_the_loader_generator():
    # 训练集按类别排好序：以前只缓存前几个批次，就只会看到第一个类别
    images, labels = _tensors()
    order = torch.argsort(labels, stable=True)
    train_ds = TensorDataset(images[order][:24], labels[order][:24])
    model = _model("freeze")

    def cached_labels(seed):
        train = DataLoader(train_ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        val = DataLoader(TensorDataset(images[24:], labels[24:]), batch_size=4)
        _, train_data, _, _ = cu.cache_features(model, train, val, "cpu", max_batches=2)
        assert train_data.generator is train.generator  # 用种子固定的生成器打乱，不用全局随机数
        return torch.cat([batch_labels for _, batch_labels in train_data]).tolist()

    first, again = cached_labels(3), cached_labels(3)
    assert len(first) == 8 and first == again  # 同一个种子：同样的样本、同样的顺序
    assert len(set(first)) > 1, "应该从全部训练图片里随机抽，而不是只取排在最前面的类别"
    assert cached_labels(4) != first  # 换一个种子，抽到的样本（或顺序）就不同


def test_cached_and_uncached_freeze_training_compute_the_same_features():
    model = _model("freeze")
    images, labels = _tensors(n=6)
    features, got_labels = cu.extract_features(model, DataLoader(TensorDataset(images, labels), batch_size=4), "cpu")
    assert features.shape == (6, 512) and torch.equal(got_labels, labels)
    with torch.no_grad():
        assert torch.allclose(model.eval().fc(features), model(images), atol=1e-5)


def test_feature_cache_is_only_for_freeze():
    train, val = _loaders()
    with pytest.raises(ValueError, match="只适用于 freeze"):
        cu.fit(_model("finetune"), train, val, epochs=1, device="cpu", feature_cache=True)


def test_max_batches_caps_each_epoch():
    seen = []

    class Spy(DataLoader):
        def __iter__(self):
            for batch in super().__iter__():
                seen.append(len(batch[1]))
                yield batch

    images, labels = _tensors()
    train = Spy(TensorDataset(images[:24], labels[:24]), batch_size=4)
    val = DataLoader(TensorDataset(images[24:], labels[24:]), batch_size=4)
    cu.fit(_model("freeze"), train, val, epochs=2, device="cpu", max_batches=2)
    assert seen == [4, 4, 4, 4]


# ---------------------------------------------------------------- 评估、指标、曲线


def test_evaluate_accuracy_matches_a_hand_computation():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # logits 就是输入本身
    inputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 0])  # 前两个对，后两个错
    result = cu.evaluate_accuracy(model, DataLoader(TensorDataset(inputs, labels), batch_size=3), "cpu")
    expected_loss = torch.nn.functional.cross_entropy(inputs, labels).item()
    assert result["acc"] == 0.5
    assert result["loss"] == pytest.approx(expected_loss)


def test_metrics_json_is_readable_chinese_and_summarize_run_has_every_key(tmp_path):
    settings = cu.resolve_settings("smoke", STRATEGY="freeze")
    model = _model("freeze")
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4, "val_loss": 0.9, "val_acc": 0.5, "lr": 0.001, "seconds": 2.0},
               {"epoch": 2, "train_loss": 0.8, "train_acc": 0.6, "val_loss": 0.7, "val_acc": 0.5, "lr": 0.001, "seconds": 1.0}]
    metrics = cu.summarize_run(model, history, settings, strategy="freeze", device=torch.device("cpu"),
                               test={"loss": 0.75, "acc": 0.625}, feature_cache=True)
    assert set(metrics) == {
        "strategy", "profile", "arch", "weights", "weights_note", "epochs", "image_size", "batch_size", "lr",
        "seed", "best_epoch", "best_val_acc", "test_acc", "test_loss", "trainable_params", "total_params",
        "seconds_total", "seconds_per_epoch", "cache_seconds", "feature_cache", "device", "history", "settings"}
    assert metrics["best_epoch"] == 1 and metrics["seconds_total"] == 3.0 and metrics["seconds_per_epoch"] == 1.5
    assert metrics["cache_seconds"] == 0  # 旧的历史记录没有 cache_seconds 也能汇总
    assert metrics["device"] == "cpu" and metrics["settings"]["strategy"] == "freeze"
    path = cu.write_metrics(tmp_path / "metrics" / "freeze.json", metrics)
    text = path.read_text(encoding="utf-8")
    assert "未使用预训练权重" in text and '\n  "strategy": "freeze"' in text
    assert cu.read_metrics(path) == json.loads(text) == metrics
    summary = cu.metrics_summary(metrics, path)["取值"]
    assert summary["测试准确率"] == "62.5%" and summary["最佳验证准确率"] == "50.0%"
    assert summary["缓存特征"].startswith("是") and summary["指标文件"] == str(path)
    assert summary["初始权重"] == metrics["weights_note"]


def test_history_table_formats_percentages_and_hides_an_empty_cache_column():
    history = [{"epoch": 1, "train_loss": 1.23456, "train_acc": 0.4, "val_loss": 0.9, "val_acc": 0.18888888,
                "lr": 0.001, "seconds": 2.0, "cache_seconds": 0.0}]
    table = cu.history_table(history)
    assert list(table.data.columns) == ["训练损失", "训练准确率", "验证损失", "验证准确率", "学习率", "用时（秒）"]
    html = table.to_html()
    assert "18.9%" in html and "1.235" in html and "0.18888888" not in html
    cached = cu.history_table([{**history[0], "cache_seconds": 1.5}])
    assert "其中缓存特征（秒）" in cached.data.columns


@pytest.mark.filterwarnings("error:Glyph:UserWarning")
def test_plot_history_draws_both_curves_and_marks_the_best_epoch():
    import matplotlib.pyplot as plt

    cu.setup_chinese_font()
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.3 * e, "val_loss": 1.2 / e, "val_acc": v,
                "lr": 0.001, "seconds": 1.0} for e, v in [(1, 0.3), (2, 0.7), (3, 0.6)]]
    fig = cu.plot_history(history, title="测试")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel().startswith("损失") and acc_ax.get_ylabel() == "准确率"
    val_line = [line for line in acc_ax.get_lines() if line.get_label() == "验证集"][0]
    assert list(val_line.get_ydata()) == [0.3, 0.7, 0.6]
    best_line = [line for line in acc_ax.get_lines() if "最佳" in line.get_label()][0]
    assert list(best_line.get_xdata()) == [2, 2] and "第 2 轮" in best_line.get_label()
    fig.savefig(os.devnull, format="png")
    plt.close(fig)


def test_step_timing_shows_freeze_skips_the_backbone_backward():
    images, labels = _tensors(n=8)
    table = cu.time_training_steps(images, labels, "cpu", num_classes=NUM_CLASSES, repeats=1, warmup=0)
    assert len(table) == 3 and (table["每批用时（毫秒）"] > 0).all()
    gradients = table["要计算梯度的参数"].tolist()
    assert gradients[0] == 512 * NUM_CLASSES + NUM_CLASSES and gradients[1] == gradients[2] > 10_000_000


def test_step_timing_skips_warm_up_rounds_and_takes_the_median(monkeypatch):
    import course_utils.train as train_module

    # 三种做法轮流各走一步：先 2 轮热身（很慢），再计时 5 轮；freeze 的第 3 轮被别的进程拖慢了
    per_round = [(9, 9, 9), (9, 9, 9), (1, 3, 4), (1, 3, 4), (50, 3, 4), (1, 3, 4), (1, 3, 4)]
    fake = iter(seconds for round_ in per_round for seconds in round_)
    monkeypatch.setattr(train_module, "_timed", lambda step, images, labels: next(fake))
    images, labels = _tensors(n=2)
    table = cu.time_training_steps(images, labels, "cpu", num_classes=NUM_CLASSES)  # 默认：热身 2 轮，计时 5 轮
    assert table["每批用时（毫秒）"].tolist() == [1000.0, 3000.0, 4000.0]
    assert table["相对 freeze"].tolist() == [1.0, 3.0, 4.0]
    assert next(fake, None) is None  # 正好走了 (2 + 5) × 3 步



# ---------------------------------------------------------------- 与课程数据、档位的衔接


def test_training_defaults_fill_strategy_feature_cache_and_keep_the_resize():
    demo = cu.with_training_defaults(cu.resolve_settings("demo", strategy="Freeze", image_size=64))
    assert demo.extra == {"strategy": "freeze", "arch": "resnet18", "feature_cache": True}
    assert demo.resize_size == round(64 * 128 / 112)  # resolve_settings 已按档位的 128/112 同比例缩放
    chosen = cu.resolve_settings("demo", image_size=64, resize_size=64)
    assert cu.with_training_defaults(chosen).resize_size == 64  # 自己给的 resize_size 不被改动
    replaced = cu.resolve_settings("demo").replace(image_size=24, resize_size=28)
    assert cu.with_training_defaults(replaced).resize_size == 28
    full = cu.with_training_defaults(cu.resolve_settings("full", strategy="freeze"))
    assert full.extra["feature_cache"] is False and full.resize_size == 256  # full 保留数据增广
    finetune = cu.with_training_defaults(cu.resolve_settings("quick", strategy="finetune"))
    assert finetune.extra["feature_cache"] is False
    with pytest.raises(ValueError, match="只适用于 freeze"):
        cu.with_training_defaults(cu.resolve_settings("demo", strategy="scratch", feature_cache=True))
    with pytest.raises(ValueError, match="未知的迁移策略"):
        cu.with_training_defaults(cu.resolve_settings("demo", strategy="frozen"))


def test_feature_cache_with_course_datasets_reads_train_images_with_the_eval_transform():
    from course_utils.features import _find_transform, _without_augmentation

    settings = cu.resolve_settings("smoke")
    splits = cu.make_datasets(settings, cu.prepare_dataset(settings))
    loaders = cu.make_loaders(splits, settings, "cpu")
    plain = _without_augmentation(loaders.train, loaders.val)
    assert _find_transform(plain.dataset) is _find_transform(splits.val_ds)
    assert _find_transform(splits.train_ds) is not _find_transform(splits.val_ds)  # 原数据集没被改动
    assert plain.dataset.samples == splits.train_ds.samples  # 同样的训练图片，同样的顺序
    first, second = next(iter(plain))[0], next(iter(plain))[0]
    assert torch.equal(first, second)  # 没有随机增广：两次读到的张量完全相同


def test_demo_dataset_a_short_training_is_far_above_chance_on_the_test_split(tmp_path):
    # 离线、随机初始化、48 像素、3 轮：只要数据可学、训练与选模型的流程是对的，测试准确率就远高于瞎猜
    settings = cu.with_training_defaults(cu.resolve_settings(
        "demo", strategy="scratch", image_size=48, epochs=3, weights=None, num_workers=0))
    splits = cu.make_datasets(settings, cu.prepare_dataset(settings))
    loaders = cu.make_loaders(splits, settings, "cpu")
    cu.seed_everything(0)
    model = cu.build_model("resnet18", len(splits.class_names), "scratch", weights=None)
    cu.fit(model, loaders.train, loaders.val, epochs=settings.epochs, device="cpu", lr=settings.lr,
           checkpoint_dir=tmp_path, meta=cu.training_meta(settings, splits.class_names))
    best, meta = cu.load_checkpoint(tmp_path / "scratch_best.pt")
    test = cu.evaluate_accuracy(best, loaders.test, "cpu")
    chance = 1 / len(splits.class_names)
    assert len(splits.class_names) >= 8 and meta["class_names"] == splits.class_names
    assert test["acc"] > 3 * chance, f"测试准确率 {test['acc']:.1%}，瞎猜是 {chance:.1%}"


def test_scheduler_and_channels_last_are_honoured(tmp_path):
    model = _model("finetune")
    train, val = _loaders()
    optimizer = cu.make_optimizer(model, "finetune", lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = cu.fit(model, train, val, epochs=2, device="cpu", optimizer=optimizer, scheduler=scheduler,
                     channels_last=True, checkpoint_dir=tmp_path)
    assert [h["lr"] for h in history] == [0.01, 0.005]  # 记录的是分类头这一轮实际用的学习率
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    loaded, _ = cu.load_checkpoint(tmp_path / "finetune_last.pt")
    images = _tensors(n=4)[0]
    assert torch.allclose(_predict(loaded, images), _predict(model, images), atol=1e-5)
