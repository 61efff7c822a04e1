"""runner：按顺序执行笔记本；出错时指出笔记本和单元格，并以非零状态退出。"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# 内核启动时执行的 IPython 启动文件：记下内核的进程号；第 RUNNER_TEST_SLOW_KERNEL 个内核启动得很慢
KERNEL_STARTUP = """
import os, time
with open(os.environ["RUNNER_TEST_LOG"], "a+") as log:
    log.write(f"kernel {os.getpid()}\\n")
    log.seek(0)
    number = log.read().count("kernel ")
if str(number) == os.environ.get("RUNNER_TEST_SLOW_KERNEL"):
    with open(os.environ["RUNNER_TEST_LOG"], "a") as log:
        log.write("slow kernel start\\n")
    time.sleep(30)
"""
BUSY_SECONDS = 120  # 占满 CPU 的进程最多跑这么久（测试结束时提前结束它们）


def _mark(text):
    """笔记本单元格：往日志里写一行，测试据此知道执行到了哪里。"""
    return f"open(__import__('os').environ['RUNNER_TEST_LOG'], 'a').write({text + chr(10)!r})"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # 僵尸进程不算活着


@pytest.fixture(scope="class")
def busy_cpus():
    """机器很忙：两个占满 CPU 的进程（本机 2 个核），最多 BUSY_SECONDS 秒，测试结束就结束它们。"""
    code = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end:\n    pass"
    burners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


@pytest.mark.skipif(os.name != "posix", reason="用 killpg 模拟终端里的 Ctrl+C，只在 POSIX 上可行")
@pytest.mark.usefixtures("busy_cpus")
class TestCtrlC:
    """任何时候按 Ctrl+C（内核启动中、单元格执行中、一个笔记本刚结束），runner 都停下来、
    打印汇总表、退出码 130，不留下内核进程，后面的笔记本不再执行。机器忙的时候也一样。"""

    @pytest.mark.parametrize("moment, wait_for, interrupted", [
        ("内核启动中", "slow kernel start", ["01_slow.ipynb"]),  # 第 2 个内核在启动文件里等 30 秒
        ("刚开始执行下一个笔记本", "▶ 01_slow", ["01_slow.ipynb"]),
        ("单元格执行中", "cell 01", ["01_slow.ipynb"]),
        ("一个笔记本的最后一个单元格刚执行完", "end 00", ["00_ok.ipynb", "01_slow.ipynb"]),
    ])
    def test_ctrl_c_stops_the_run_with_a_summary_and_exit_130(self, tmp_path, moment, wait_for, interrupted):
        process, log, out, errors, stopped_after = self._press_ctrl_c(tmp_path, moment, wait_for)
        assert process.returncode == 130, f"{moment}：Ctrl+C 丢了\n{out}\n{errors}"
        assert stopped_after < 20, f"{moment}：按下 Ctrl+C {stopped_after:.0f} 秒后才停"
        assert "被中断（Ctrl+C）" in out and "Traceback" not in errors, out + errors
        rows = re.findall(r"^(\S+\.ipynb)\s+[\d.]+\s+(\S+)$", out, re.M)
        assert rows and rows[-1][1] == "中断" and rows[-1][0] in interrupted, out
        assert all(status == "通过" for _, status in rows[:-1]), out
        marks = log.read_text()
        assert "cell 02" not in marks  # 后面的笔记本没有执行
        assert ("cell 01" in marks) == (moment == "单元格执行中"), marks  # 其余时刻 01 一个单元格也没执行
        executed = tmp_path / "outputs" / "smoke" / "notebooks"
        assert (executed / "00_ok.ipynb").exists() and (executed / rows[-1][0]).exists()  # 执行到一半的副本留着
        kernels = [int(line.split()[1]) for line in marks.splitlines() if line.startswith("kernel ")]
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kernels and not any(_alive(pid) for pid in kernels), f"{moment}：内核进程还在"

    @staticmethod
    def _press_ctrl_c(tmp_path, moment, wait_for):
        """执行三个笔记本，等到 wait_for 出现（runner 的输出或笔记本写的日志）时按 Ctrl+C；
        返回 (进程, 日志文件, 标准输出, 标准错误, 按下后多少秒才退出)。"""
        books, log, ipython = tmp_path / "nbs", tmp_path / "log.txt", tmp_path / "ipython"
        books.mkdir()
        (ipython / "profile_default" / "startup").mkdir(parents=True)
        (ipython / "profile_default" / "startup" / "00-log.py").write_text(KERNEL_STARTUP)
        log.touch()
        _notebook(books / "00_ok.ipynb", "x = 1", _mark("end 00"))
        _notebook(books / "01_slow.ipynb", _mark("cell 01") + "\nimport time\ntime.sleep(60)")
        _notebook(books / "02_never.ipynb", _mark("cell 02"))
        env = {**os.environ, "COURSE_OUTPUT_DIR": str(tmp_path / "outputs"), "IPYTHONDIR": str(ipython),
               "RUNNER_TEST_LOG": str(log), "RUNNER_TEST_SLOW_KERNEL": "2" if wait_for == "slow kernel start" else ""}
        command = [sys.executable, "-m", "course_utils", "run", "--profile", "smoke", "--no-handouts",
                   "--notebooks-dir", str(books)]
        # 像在终端里按 Ctrl+C 一样：SIGINT 发给 runner 所在的整个进程组（jupyter_client 让内核自成一个会话，收不到）
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        seen = []
        try:
            if wait_for.startswith("▶"):
                for line in process.stdout:
                    seen.append(line)
                    if wait_for in line:
                        break
            else:
                deadline = time.monotonic() + 60
                while wait_for not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
                    time.sleep(0.05)
                assert wait_for in log.read_text(), f"{moment}：等不到 {wait_for!r}"
            os.killpg(process.pid, signal.SIGINT)
            pressed = time.monotonic()
            rest, errors = process.communicate(timeout=60)
            return process, log, "".join(seen) + rest, errors, time.monotonic() - pressed
        finally:
            if process.poll() is None:  # 测试失败时也不留下 runner
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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
