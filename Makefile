# 常用命令（Windows 没有 make 时，README 给出了等价的 pip / python 命令）
#   make run       执行全部笔记本（默认 demo 档位，离线可用），输出在 outputs/<档位>/
#   make test      单元测试 + 每个笔记本的 smoke 运行 + papermill 参数测试
#   make handouts  把执行过的笔记本生成 HTML 讲义
#   make lab       打开 JupyterLab 一步一步学（档位同 PROFILE，默认 demo）
#   make bench     性能基准测试，约 7 分钟，结果写到 benchmarks/results/（快速检查：make bench BENCH_ARGS=--quick）
# 第一次运行会自动创建 .venv 并安装依赖（PyTorch 约 2 分钟）。

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo
PIP_FLAGS ?= --quiet --disable-pip-version-check
BENCH_ARGS ?=

.PHONY: run test handouts lab bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -r requirements-dev.txt -e .
	touch $@

run: venv
	$(BIN)/python -m course_utils run --profile $(PROFILE)

test: venv
	COURSE_PROFILE=smoke COURSE_HEADLESS=1 $(BIN)/python -m pytest

bench: venv
	COURSE_HEADLESS=1 $(BIN)/python -m benchmarks $(BENCH_ARGS)

handouts: venv
	$(BIN)/python -m course_utils handouts --profile $(PROFILE)
	$(BIN)/python -m course_utils handouts --profile $(PROFILE) --student

lab: venv
	COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter lab notebooks/

clean:
	rm -rf outputs/smoke .pytest_cache
