"""runner：按顺序执行笔记本；出错时指出笔记本和单元格，并以非零状态退出。"""

import re
import subprocess
import sys

import nbformat
import pytest

from course_utils import runner


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = None\nGREETING = "你好"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# 测试"), params]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def tmp_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def _run_cli(*args, env_outputs):
    import os

    env = {**os.environ, "COURSE_OUTPUT_DIR": str(env_outputs)}
    return subprocess.run(
        [sys.executable, "-m", "course_utils", "run", *args], capture_output=True, text=True, env=env
    )


def test_failing_cell_stops_the_run_names_notebook_and_cell_and_exits_nonzero(tmp_path, tmp_outputs):
    books = tmp_path / "nbs"
    books.mkdir()
    _notebook(books / "00_ok.ipynb", "x = 1")
    _notebook(books / "01_broken.ipynb", "y = 2", "raise ValueError('故意出错')")
    _notebook(books / "02_never.ipynb", "z = 3")

    result = _run_cli("--profile", "smoke", "--notebooks-dir", str(books), env_outputs=tmp_outputs)

    assert result.returncode == 1
    assert "01_broken.ipynb" in result.stdout
    assert "第 4 个单元格" in result.stdout  # 标题、参数、y = 2 之后的第 4 个
    assert "ValueError: 故意出错" in result.stdout
    assert re.search(r"^01_broken\.ipynb\s+\d+\.\d\s+失败$", result.stdout, re.M)  # 失败的也写出用时
    assert "KeyboardInterrupt" not in result.stderr  # 内核收尾时的日志不刷屏
    executed = tmp_outputs / "smoke" / "notebooks"
    assert (executed / "00_ok.ipynb").exists()
    assert (executed / "01_broken.ipynb").exists()  # 出错的副本留着供检查
    assert not (executed / "02_never.ipynb").exists()  # 出错后不再往下执行


def test_ctrl_c_stops_the_run_with_a_summary_instead_of_a_traceback(tmp_path, tmp_outputs):
    import os
    import signal
    import time

    books = tmp_path / "nbs"
    books.mkdir()
    _notebook(books / "00_ok.ipynb", "x = 1")
    _notebook(books / "01_slow.ipynb", "import time\ntime.sleep(60)")
    env = {**os.environ, "COURSE_OUTPUT_DIR": str(tmp_outputs)}
    command = [sys.executable, "-m", "course_utils", "run", "--profile", "smoke", "--notebooks-dir", str(books)]
    # 像在终端里按 Ctrl+C 一样：SIGINT 发给整个进程组（runner 和它启动的内核）
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    for line in process.stdout:
        if "01_slow.ipynb" in line:
            break
    time.sleep(4)  # 让内核开始执行 time.sleep(60)
    os.killpg(process.pid, signal.SIGINT)
    rest, errors = process.communicate(timeout=60)

    assert process.returncode == 130
    assert "被中断（Ctrl+C）" in rest and re.search(r"^01_slow\.ipynb\s+\d+\.\d\s+中断$", rest, re.M)
    assert "Traceback" not in errors
    executed = tmp_outputs / "smoke" / "notebooks"
    assert (executed / "00_ok.ipynb").exists() and (executed / "01_slow.ipynb").exists()


def test_parameters_and_profile_reach_the_notebook(tmp_path, tmp_outputs):
    books = tmp_path / "nbs"
    books.mkdir()
    _notebook(books / "05_params.ipynb", "assert PROFILE == 'smoke', PROFILE\nassert GREETING == 'hi'")
    _notebook(books / "06_skip.ipynb", "raise SystemExit('不该执行')")

    result = _run_cli("--profile", "smoke", "--only", "05", "-p", "GREETING=hi", "--no-handouts",
                      "--notebooks-dir", str(books), env_outputs=tmp_outputs)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "05_params.ipynb" in result.stdout and "通过" in result.stdout
    assert "06_skip" not in result.stdout


def test_list_notebooks_keeps_order_and_ignores_other_files(tmp_path):
    for name in ["02_b.ipynb", "00_a.ipynb", "10_extra.ipynb", "Untitled.ipynb", "notes.ipynb"]:
        _notebook(tmp_path / name)
    names = [p.name for p in runner.list_notebooks(tmp_path)]
    assert names == ["00_a.ipynb", "02_b.ipynb", "10_extra.ipynb"]
    with pytest.raises(FileNotFoundError, match="找不到编号为 07"):
        runner.list_notebooks(tmp_path, only=["07"])


def test_parse_parameters():
    assert runner.parse_parameters(["EPOCHS=3", "LR=0.01", "STRATEGY=finetune", "W=None", 'S="a=b"']) == {
        "EPOCHS": 3, "LR": 0.01, "STRATEGY": "finetune", "W": None, "S": "a=b",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        runner.parse_parameters(["EPOCHS"])


def test_solution_notebooks_run_after_the_core_ones_into_their_own_folder(tmp_path, tmp_outputs):
    books = tmp_path / "nbs"
    (books / "solutions").mkdir(parents=True)
    _notebook(books / "03_core.ipynb", "open('order.txt', 'a').write('core ')")
    _notebook(books / "solutions" / "03_core_solutions.ipynb", "open('order.txt', 'a').write('solution')")
    _notebook(books / "solutions" / "04_other_solutions.ipynb", "raise SystemExit('不该执行')")

    result = _run_cli("--profile", "smoke", "--only", "03", "--no-handouts",
                      "--notebooks-dir", str(books), env_outputs=tmp_outputs)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (books / "solutions" / "order.txt").read_text() == "solution"  # 工作目录是笔记本所在目录
    assert (books / "order.txt").read_text() == "core "
    assert (tmp_outputs / "smoke" / "notebooks" / "solutions" / "03_core_solutions.ipynb").exists()
    assert "solutions/03_core_solutions.ipynb" in result.stdout
    assert "04_other" not in result.stdout
