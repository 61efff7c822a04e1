"""档位与设置：环境变量、覆盖值、papermill 传入的字符串、写错时的中文提示。"""

from pathlib import Path

import pytest

import course_utils as cu
from course_utils.config import PROFILES, ProfileError, resolve_profile, resolve_settings


def test_every_profile_has_the_same_fields_and_its_own_name():
    assert set(PROFILES) == {"full", "quick", "demo", "smoke"}
    for name, settings in PROFILES.items():
        assert settings.profile == name


def test_profile_comes_from_argument_then_environment_then_full(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert resolve_profile(None) == "full"
    monkeypatch.setenv("COURSE_PROFILE", "Demo")
    assert resolve_profile(None) == "demo"
    assert resolve_profile("quick") == "quick"  # 显式参数优先于环境变量


def test_unknown_profile_is_a_chinese_error_listing_the_choices(monkeypatch):
    with pytest.raises(ProfileError, match="没有名为 'gpu' 的运行档位.*full / quick / demo / smoke"):
        resolve_profile("gpu")
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ProfileError, match="COURSE_PROFILE"):
        resolve_profile(None)


def test_overrides_replace_defaults_but_none_keeps_them():
    settings = resolve_settings("smoke", epochs=3, batch_size=None, STRATEGY="finetune", IMAGE_PATH=None)
    assert settings.epochs == 3
    assert settings.batch_size == PROFILES["smoke"].batch_size
    # 不是设置字段的参数进 extra；给了 strategy 就补上是否缓存特征（finetune 不缓存）
    assert settings.extra == {"strategy": "finetune", "feature_cache": False, "image_path": None}
    assert settings.to_dict()["strategy"] == "finetune"
    assert PROFILES["smoke"].epochs == 1  # 原始档位没有被改动


def test_strings_from_the_command_line_are_converted():
    settings = resolve_settings("demo", epochs="2", lr="0.01", weights="None")
    assert settings.epochs == 2 and settings.lr == 0.01 and settings.weights is None
    with pytest.raises(ProfileError, match="需要一个数字"):
        resolve_settings("demo", epochs="two")


def test_settings_table_has_a_chinese_explanation_for_every_field():
    table = cu.resolve_settings("smoke").to_frame()
    assert list(table.columns) == ["取值", "说明"]
    assert table.loc["epochs", "取值"] == "1"
    assert (table["说明"] != "").all()
    assert "<table" in cu.resolve_settings("smoke")._repr_html_()


def test_user_facing_profiles_need_imagenet_and_smoke_does_not():
    assert PROFILES["full"].weights_required and PROFILES["quick"].weights_required
    assert not PROFILES["demo"].weights_required  # demo 换成 resnet18 又离线时退回随机初始化（并醒目提示）
    assert PROFILES["smoke"].weights is None


def test_full_and_quick_keep_the_tutorials_resnet18_and_demo_uses_the_offline_lite0():
    assert PROFILES["full"].arch == PROFILES["quick"].arch == "resnet18"
    assert PROFILES["demo"].arch == "efficientnet_lite0" and PROFILES["demo"].weights == "imagenet"
    assert resolve_settings("full", arch="efficientnet_lite0").arch == "efficientnet_lite0"  # 任何档位都能换
    with pytest.raises(ProfileError, match="resnet18 / efficientnet_lite0"):
        resolve_settings("demo", arch="vgg16")


def test_strategy_is_checked_and_the_feature_cache_is_off_unless_asked_for():
    for profile in ("full", "quick", "demo", "smoke"):  # 默认保留数据增广：06 的公平比较能直接复用 04 的结果
        assert resolve_settings(profile, strategy="Freeze").extra == {"strategy": "freeze", "feature_cache": False}
    assert resolve_settings("demo", strategy="freeze", feature_cache="True").extra["feature_cache"] is True
    assert resolve_settings("demo", strategy="freeze", feature_cache="False").extra["feature_cache"] is False
    with pytest.raises(ProfileError, match="未知的迁移策略 'frozen'"):
        resolve_settings("demo", strategy="frozen")
    with pytest.raises(ProfileError, match="只适用于 freeze"):
        resolve_settings("demo", strategy="finetune", feature_cache=True)


def test_the_learner_facing_namespace_fits_on_one_screen():
    names = cu.public_names()
    assert 40 <= len(names) <= 60, sorted(names)
    assert {"train_one_epoch", "evaluate", "fit", "load_pretrained", "replace_head"} <= names
    assert set(dir(cu)) >= names | {"explain", "embedding", "onnx_export"}  # 选学的辅助函数用模块名调用
    with pytest.raises(AttributeError):
        cu.grad_cam  # noqa: B018  选学 10 的函数不在核心名单里


def test_output_dir_follows_the_environment_and_rejects_unknown_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    assert cu.output_dir("demo", "figures") == tmp_path / "demo" / "figures"
    assert (tmp_path / "demo" / "figures").is_dir()
    with pytest.raises(ValueError, match="未知的输出子目录"):
        cu.output_dir("demo", "tmp")


def test_relative_locations_in_the_environment_start_at_the_repository_root(tmp_path, monkeypatch):
    """runner 在仓库根目录、笔记本在 notebooks/ 里运行：相对路径必须指向同一个地方。"""
    from course_utils import paths

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COURSE_OUTPUT_DIR", "outputs-mine")
    monkeypatch.setenv("COURSE_DATA_DIR", "my-data")
    assert cu.output_dir("demo") == tmp_path / "repo" / "outputs-mine" / "demo"
    assert paths.data_dir() == tmp_path / "repo" / "my-data"
    monkeypatch.setenv("COURSE_DATASET", "我的数据")
    assert resolve_settings("demo").dataset == str(tmp_path / "repo" / "我的数据")
    monkeypatch.setenv("COURSE_DATASET", "fruit30")  # 数据集名保持原样
    assert resolve_settings("demo").dataset == "fruit30"
    assert paths.repo_path("~/x") == Path.home() / "x" and paths.repo_path(tmp_path) == tmp_path


def test_importing_the_package_has_no_side_effects():
    import subprocess
    import sys

    code = (
        "import sys, course_utils as cu; "
        "assert 'torch' not in sys.modules, 'import 不应导入 torch'; "
        "assert 'matplotlib' not in sys.modules; "
        "cu.display_path; cu.resolve_settings; assert 'torch' not in sys.modules, '查找轻量函数不应导入 torch'; "
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_unknown_attribute_gives_a_hint():
    with pytest.raises(AttributeError, match="dir\\(cu\\)"):
        cu.train_ch4  # noqa: B018


def test_table_shows_only_the_requested_settings_in_order():
    settings = cu.resolve_settings("smoke", STRATEGY="scratch")
    table = settings.table("strategy", "epochs")
    assert list(table.index) == ["strategy", "epochs"]
    assert table.loc["strategy", "取值"] == "scratch" and table.loc["strategy", "说明"]
    with pytest.raises(KeyError, match="没有这些设置：colour"):
        settings.table("colour")


def test_changing_only_the_image_size_keeps_the_resize_ratio():
    assert resolve_settings("full", image_size=112).resize_size == 128  # 224 -> 256 的比例
    assert resolve_settings("full", image_size=112, resize_size=112).resize_size == 112


def test_display_path_is_relative_inside_the_repo(tmp_path):
    from course_utils.paths import REPO_ROOT, display_path

    assert display_path(REPO_ROOT / "outputs" / "demo" / "a.png") == "outputs/demo/a.png"
    assert display_path(tmp_path / "b.png") == str(tmp_path / "b.png")


def test_each_public_name_comes_from_one_place():
    import importlib

    import course_utils

    owners = {}
    for module_name in course_utils._MODULES:
        module = importlib.import_module(f"course_utils.{module_name}")
        assert list(module.__all__) == list(course_utils._declared_names(module_name)), "__all__ 要写成字面量列表"
        for name in module.__all__:
            value = getattr(module, name)  # __all__ 里的名字必须真的存在
            owners.setdefault(name, set()).add(id(value))
    clashes = {name for name, ids in owners.items() if len(ids) > 1}
    assert not clashes, f"这些名字在不同模块里指向不同的对象：{clashes}"
