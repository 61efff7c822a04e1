"""三种迁移策略与预训练权重：冻结真的冻结（梯度与 BatchNorm 统计量），权重从哪里来如实记录。

全部离线：ImageNet 权重用一份生成的 state_dict 代替，放进临时的 torch hub 缓存（TORCH_HOME）
或本地文件；网络请求被替换成立即失败，所以测试不会偷偷下载任何东西。
"""

import copy
import io
import os
import urllib.error
import warnings

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import ResNet18_Weights, resnet18

import course_utils as cu
from course_utils.models import WeightsUnavailable

NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


def _batch(n=6, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator) * 2 + 0.5  # 与 BN 的初始统计量明显不同
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return images, labels


def _one_step(model, optimizer):
    images, labels = _batch()
    model.train()
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _snapshot(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


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
    file_name = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    path = tmp_path / "torch_home" / "hub" / "checkpoints" / file_name
    path.parent.mkdir(parents=True)
    torch.save(fake_imagenet_state, path)
    return path


def _backbone_equals(model, state):
    return all(torch.equal(value, state[key]) for key, value in model.state_dict().items() if not key.startswith("fc."))


# ---------------------------------------------------------------- 冻结


def test_freeze_one_step_changes_only_the_head_and_no_batchnorm_statistics():
    torch.manual_seed(0)
    model = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=None)
    before = _snapshot(model)
    _one_step(model, cu.make_optimizer(model, "freeze", lr=0.1))

    after = model.state_dict()
    backbone_keys = [k for k in after if not k.startswith("fc.")]
    assert any(k.endswith("running_mean") for k in backbone_keys)
    assert any(k.endswith("num_batches_tracked") for k in backbone_keys)
    changed = [k for k in backbone_keys if not torch.equal(before[k], after[k])]
    assert changed == [], f"冻结的主干不该变化：{changed[:5]}"
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("fc."))
    assert model.fc.weight.grad is not None
    assert model.training and model.fc.training and not model.bn1.training


def test_the_tutorial_way_of_freezing_leaks_into_batchnorm_and_computes_backbone_gradients():
    # 对照组：只让优化器跳过主干（原教程的做法）。同样的检查在这里必须失败，说明上面的测试有分辨力。
    torch.manual_seed(0)
    model = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=None)
    before = _snapshot(model)
    _one_step(model, torch.optim.Adam(model.fc.parameters(), lr=0.1))
    assert not torch.equal(before["bn1.running_mean"], model.state_dict()["bn1.running_mean"])
    assert torch.equal(before["conv1.weight"], model.conv1.weight)  # 参数没更新……
    assert model.conv1.weight.grad is not None  # ……但梯度照样算了


def test_frozen_backbone_stays_in_eval_mode_after_train_eval_and_deepcopy():
    model = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=None)
    twin = copy.deepcopy(model)
    for candidate in (model, twin):
        candidate.eval()
        candidate.train()
        batchnorms = [m for m in candidate.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert batchnorms and not any(bn.training for bn in batchnorms)
        assert candidate.fc.training
    twin.train()
    assert twin.layer1[0].bn1 is not model.layer1[0].bn1


def test_finetune_changes_the_backbone_and_gives_the_head_a_larger_learning_rate():
    torch.manual_seed(0)
    model = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=None)
    before = _snapshot(model)
    optimizer = cu.make_optimizer(model, "finetune", lr=0.01)
    _one_step(model, optimizer)
    after = model.state_dict()
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["layer4.1.bn2.running_var"], after["layer4.1.bn2.running_var"])
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {"backbone": pytest.approx(0.001), "head": 0.01}
    grouped = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert grouped == cu.count_params(model)["total"]


def test_freeze_optimizer_refuses_a_model_whose_backbone_is_not_frozen():
    model = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=None)
    with pytest.raises(ValueError, match="主干有参数要训练.*strategy=\"finetune\""):
        cu.make_optimizer(model, "freeze", lr=0.01)


def _batchnorms_training(module):
    return {m.training for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)}


def test_a_partially_unfrozen_freeze_model_trains_exactly_the_unfrozen_part_including_its_batchnorm():
    # 01 的练习 2：在 freeze 模型上解冻 layer4。解冻的部分要真的训练（BN 也用训练模式），其余仍然冻结
    torch.manual_seed(0)
    model = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=None)
    model.layer4.requires_grad_(True)
    before = _snapshot(model)
    _one_step(model, cu.make_optimizer(model, "finetune", lr=0.01))
    after = model.state_dict()
    assert _batchnorms_training(model.layer4) == {True}
    assert _batchnorms_training(model.layer3) == {False} and not model.bn1.training
    assert not torch.equal(before["layer4.1.bn2.running_mean"], after["layer4.1.bn2.running_mean"])
    assert not torch.equal(before["layer4.0.conv1.weight"], after["layer4.0.conv1.weight"])
    unchanged = [k for k in after if not k.startswith(("layer4.", "fc.")) and not torch.equal(before[k], after[k])]
    assert unchanged == []
    assert cu.trainable_summary(model).loc["layer4", "状态"] == "训练"


def test_inside_a_partly_unfrozen_block_only_the_modules_with_trainable_parameters_train():
    model = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=None)
    model.layer4[1].requires_grad_(True)  # layer4 只解冻了后半块
    model.train()
    assert _batchnorms_training(model.layer4[0]) == {False}
    assert _batchnorms_training(model.layer4[1]) == {True}
    assert model.training and model.layer4.training and model.fc.training
    assert cu.trainable_summary(model).loc["layer4", "状态"] == "部分训练"
    model.layer4.requires_grad_(False)  # 再冻结回去：下一次 train() 就回到评估模式
    model.train()
    assert _batchnorms_training(model) == {False}


# ---------------------------------------------------------------- 权重从哪里来


def test_imagenet_weights_load_through_torchvision_from_the_hub_cache(hub_cache, fake_imagenet_state, offline, capsys):
    model = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights="IMAGENET1K_V1", weights_required=True)
    assert capsys.readouterr().out == model.course_info["weights_note"] + "\n"  # 说一句权重从哪里来
    assert _backbone_equals(model, fake_imagenet_state)
    assert model.fc.out_features == NUM_CLASSES
    info = model.course_info
    assert info["weights"] == "IMAGENET1K_V1"
    assert info["weights_note"].startswith("已加载 ImageNet 预训练权重（IMAGENET1K_V1")
    assert str(hub_cache) in info["weights_note"]
    assert offline == []  # 从缓存读取，没有尝试下载
    default = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights="DEFAULT")
    assert default.course_info["weights"] == "IMAGENET1K_V1" and _backbone_equals(default, fake_imagenet_state)


def test_a_local_weights_file_works_and_is_not_called_imagenet(tmp_path, fake_imagenet_state, offline):
    path = tmp_path / "我的权重.pth"
    torch.save(fake_imagenet_state, path)
    model = cu.build_model("resnet18", NUM_CLASSES, "freeze", weights=str(path), weights_required=True)
    assert _backbone_equals(model, fake_imagenet_state)
    assert model.course_info["weights"] == str(path)
    note = model.course_info["weights_note"]
    assert note.startswith("已加载") and str(path) in note and "来源无法核实" in note
    assert "ImageNet" not in note  # 校验和与官方文件不一致，就不能自称 ImageNet


def test_scratch_never_starts_from_the_pretrained_values(hub_cache, fake_imagenet_state, tmp_path):
    local = tmp_path / "weights.pth"
    torch.save(fake_imagenet_state, local)
    for weights in ("IMAGENET1K_V1", str(local)):
        torch.manual_seed(0)
        model = cu.build_model("resnet18", NUM_CLASSES, "scratch", weights=weights, weights_required=True)
        assert not torch.equal(model.conv1.weight, fake_imagenet_state["conv1.weight"])
        assert not torch.equal(model.layer3[0].conv1.weight, fake_imagenet_state["layer3.0.conv1.weight"])
        assert model.course_info["weights"] is None
        assert model.course_info["weights_note"].startswith("未使用预训练权重")
        assert cu.count_params(model)["trainable"] == cu.count_params(model)["total"]


def test_empty_cache_with_required_weights_raises_a_chinese_message(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    expected_file = cu.weights_cache_path("resnet18", "IMAGENET1K_V1")
    assert expected_file == tmp_path / "empty_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailable) as caught:
        cu.build_model("resnet18", NUM_CLASSES, "freeze", weights="IMAGENET1K_V1", weights_required=True)
    message = str(caught.value)
    assert offline, "应该先尝试用 torchvision 的机制下载"
    for part in (str(expected_file), "TORCH_HOME", "WEIGHTS", "demo", "拿不到"):
        assert part in message
    assert not list(expected_file.parent.glob("*")), "下载失败不应留下半个文件"


@pytest.mark.parametrize("strategy, effect", [("freeze", "冻结的是一个随机网络"),
                                              ("finetune", "finetune 等同于从头训练（只是主干学习率更小）")])
def test_empty_cache_without_requirement_prints_one_banner_and_never_says_imagenet(
        tmp_path, monkeypatch, offline, capfd, strategy, effect):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 不再另发警告：笔记本里它会变成一段带源代码行的红色 stderr
        model = cu.build_model("resnet18", NUM_CLASSES, strategy, weights="IMAGENET1K_V1")
    info = model.course_info
    assert info["weights"] is None
    assert info["weights_note"].startswith("未使用预训练权重")
    assert "ImageNet" not in info["weights_note"] and "已加载" not in info["weights_note"]
    out, err = capfd.readouterr()
    assert err == "" and offline, "尝试过下载，但 stderr 上什么也没有"
    assert out.count("【注意】") == 1 and f"【注意】{info['weights_note']}" in out  # 只有一段提示，开头就是那句说明
    assert "TORCH_HOME" in out and effect in out
    assert "Downloading" not in out  # torch hub 的 “Downloading: …” 在下载失败时只会误导人
    assert "改用 demo 档位" not in out  # 已经在退回随机初始化了，不再劝人改用 demo


def test_missing_local_file_follows_weights_required(tmp_path, offline):
    missing = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(WeightsUnavailable, match="找不到本地权重文件"):
        cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=str(missing), weights_required=True)
    model = cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=str(missing))
    assert model.course_info["weights"] is None


def test_a_file_with_other_weights_is_rejected_with_an_explanation(tmp_path, offline):
    path = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsUnavailable, match="不是 resnet18 的预训练权重"):
        cu.build_model("resnet18", NUM_CLASSES, "finetune", weights=str(path), weights_required=True)


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match="没有名为 'IMAGENET' 的 torchvision 权重.*IMAGENET1K_V1"):
        cu.build_model("resnet18", NUM_CLASSES, "finetune", weights="IMAGENET")
    with pytest.raises(ValueError, match="未知的迁移策略.*freeze.*finetune.*scratch"):
        cu.build_model("resnet18", NUM_CLASSES, "partial", weights=None)


# ---------------------------------------------------------------- 其他结构与参数统计


@pytest.mark.parametrize("arch, head", [("mobilenet_v3_small", "classifier.3"), ("efficientnet_b0", "classifier.1"),
                                        ("resnet50", "fc")])
def test_other_torchvision_architectures_use_the_same_call(arch, head):
    model = cu.build_model(arch, NUM_CLASSES, "freeze", weights=None)
    assert model.course_info["head"] == head
    head_params = sum(p.numel() for p in model.get_submodule(head).parameters())
    assert cu.count_params(model)["trainable"] == head_params
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, NUM_CLASSES)


def test_count_params_and_trainable_summary_agree_with_the_model():
    model = cu.build_model("resnet18", 30, "freeze", weights=None)
    counts = cu.count_params(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == 512 * 30 + 30
    assert counts["frozen"] == counts["total"] - counts["trainable"]
    table = cu.trainable_summary(model)
    assert list(table.index) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc", "合计"]
    assert table.loc["layer4", "状态"] == "冻结" and table.loc["fc", "状态"] == "训练"
    assert table.drop(index="合计")["参数量"].sum() == table.loc["合计", "参数量"] == counts["total"]
    finetune = cu.trainable_summary(cu.build_model("resnet18", 30, "finetune", weights=None))
    assert (finetune.drop(index="合计")["状态"] == "训练").all()
    assert finetune.loc["合计", "参数量"] == counts["total"]  # 参数量与策略无关


@pytest.mark.filterwarnings("error:Glyph:UserWarning")  # 缺字（中文变方框）的警告当作错误
def test_plot_trainable_blocks_colours_follow_the_real_models():
    import matplotlib.pyplot as plt

    cu.setup_chinese_font()
    models = {s: cu.build_model("resnet18", 30, s, weights=None) for s in cu.STRATEGIES}
    models["解冻一半 layer4"] = cu.build_model("resnet18", 30, "freeze", weights=None)
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
    model = cu.build_model("resnet18", num_classes=NUM_CLASSES, strategy="freeze", weights=None).train()
    before = {name: module.training for name, module in model.named_modules()}
    assert not before["layer1"] and before["fc"]  # freeze：冻结的部分一直是 eval，分类头在训练
    with cu.eval_mode(model):
        assert not any(module.training for module in model.modules())
    assert {name: module.training for name, module in model.named_modules()} == before
