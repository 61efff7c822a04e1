# 常用命令（Windows 没有 make 时，README 给出了等价的 pip / python 命令）
#   make run       执行全部笔记本（默认 demo 档位，离线可用），输出在 outputs/<档位>/
#   make test      单元测试 + 每个笔记本的 smoke 运行 + papermill 参数测试 + 浏览器里打开讲义
#   make handouts  把执行过的笔记本生成 HTML 讲义
#   make lab       打开 JupyterLab 一步一步学（档位同 PROFILE，默认 demo）
#   make bench     性能基准测试，约 7 分钟，结果写到 benchmarks/results/（快速检查：make bench BENCH_ARGS=--quick）
# 第一次运行会自动创建 .venv 并安装依赖（PyTorch 约 2 分钟）；第一次 make test 还会用 apt 安装
# 浏览器测试要用的 Chromium（make browser，约 1 分钟；需要 root 或免密码的 sudo）。

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo
PIP_FLAGS ?= --quiet --disable-pip-version-check
BENCH_ARGS ?=

.PHONY: run test handouts lab bench venv browser clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -r requirements-dev.txt -e .
	touch $@

run: venv
	$(BIN)/python -m course_utils run --profile $(PROFILE)

test: venv browser
	COURSE_PROFILE=smoke COURSE_HEADLESS=1 $(BIN)/python -m pytest

# 浏览器测试（tests/test_browser.py）用的无头浏览器：设置了 COURSE_BROWSER（Chrome、Edge 或 Chromium 的程序路径），
# 或者 PATH 里有 chromium / chromium-browser，就什么都不做；否则用 apt 安装 Debian 的 chromium 包
# （Ubuntu 上没有它时装 chromium-browser），需要 root 或免密码的 sudo；做不到就停下来，说明该执行的命令。
browser:
	@if [ -n "$$COURSE_BROWSER" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	    exit 0; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "[失败] 浏览器测试要用 Chromium、Chrome 或 Edge，这台机器上没有找到，也没有 apt-get 可以安装。" >&2; \
	    echo "       装好浏览器后把环境变量 COURSE_BROWSER 设成它的程序路径，再运行 make test。" >&2; \
	    exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo"; else \
	    echo "[失败] 浏览器测试要用 Chromium，这台机器上还没有装，而安装需要管理员权限。先执行：" >&2; \
	    echo "       sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2; \
	    echo "       再运行 make test（已经装了 Chrome 或 Edge 的话，也可以把 COURSE_BROWSER 设成它的程序路径）。" >&2; \
	    exit 1; \
	fi; \
	echo "== 安装浏览器测试用的 Chromium（apt，Debian 的 chromium 包；只有第一次需要，约 1 分钟）=="; \
	$$SUDO apt-get update -qq && \
	if apt-cache show chromium >/dev/null 2>&1; then package=chromium; else package=chromium-browser; fi && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$package >/dev/null && \
	{ command -v chromium || command -v chromium-browser; } >/dev/null || { \
	    echo "[失败] 用 apt 安装 Chromium 没有成功（见上面 apt 的输出）。手动执行 apt-get install chromium 后再运行 make test。" >&2; \
	    exit 1; }

bench: venv
	COURSE_HEADLESS=1 $(BIN)/python -m benchmarks $(BENCH_ARGS)

handouts: venv
	$(BIN)/python -m course_utils handouts --profile $(PROFILE)
	$(BIN)/python -m course_utils handouts --profile $(PROFILE) --student

lab: venv
	COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter lab notebooks/

clean:
	rm -rf outputs/smoke .pytest_cache
