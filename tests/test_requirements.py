"""依赖文件彼此一致：requirements.txt 是唯一的版本来源，其余文件引用它，装好的版本与它相同。"""

import re
from importlib import metadata

from packaging.requirements import Requirement

from course_utils.paths import REPO_ROOT


def _pins(name):
    pins = {}
    for line in (REPO_ROOT / name).read_text(encoding="utf-8").splitlines():
        spec = line.split("#")[0].strip()
        if spec and not spec.startswith("-"):
            req = Requirement(spec)
            pins[req.name.lower()] = req
    return pins


def test_every_requirement_is_pinned_exactly_and_commented():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO_ROOT / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith(("#", "-r")):
                assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[\w.]+\s+#\s*\S", line), f"{name}: {line!r} 要写死版本并注明用途"


def test_installed_versions_match_the_pins():
    wrong = []
    for pins in (_pins("requirements.txt"), _pins("requirements-dev.txt")):
        for name, req in pins.items():
            installed = metadata.version(name).split("+")[0]  # 去掉 +cu130 之类的本地标记
            if not req.specifier.contains(installed):
                wrong.append(f"{name}: 装的是 {installed}，要求 {req.specifier}")
    assert not wrong, wrong


def test_environment_yml_and_pyproject_refer_to_requirements_txt():
    env = (REPO_ROOT / "environment.yml").read_text(encoding="utf-8")
    assert "python=3.11" in env
    assert "- -r requirements.txt" in env and "- -e ." in env
    assert "==" not in env, "版本只写在 requirements.txt"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dependencies = { file = ["requirements.txt"] }' in pyproject
    dev = (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    assert dev.splitlines()[1] == "-r requirements.txt"
    assert not set(_pins("requirements-dev.txt")) & set(_pins("requirements.txt"))


def test_the_package_declares_every_pin():
    requires = {Requirement(r).name.lower() for r in metadata.requires("course-utils") or []}
    assert requires == set(_pins("requirements.txt"))
