"""Commands the tests run as a user would, each in a process of its own, without paying the
interpreter's start-up each time: importing torch, Hydra, Optuna and hpsweep takes about 4 s
here, and the suite runs a hundred commands.

A server process imports them once and forks a child per command; the child takes the
command's working dir, environment, argv and standard streams, runs the entry point and exits
with its code, as `python -m hpsweep.train ...` would. The server itself never runs a command,
so each child starts from a freshly imported interpreter, with no state from an earlier one.
(The sweeper forks its workers from a process that has imported torch the same way.)
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = r"""
import importlib.util, json, logging, os, sys

import hpsweep.cli, hpsweep.train  # the command
import hpsweep.job  # and what a job imports when it runs (torch, models, data)

ENTRY = {"hpsweep.train": "hpsweep.train", "hpsweep.cli": "hpsweep.cli.__main__"}


def run(request):
    os.setpgid(0, 0)  # a kill on timeout reaches the command's own children too
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY),
                            (2, request["err"], os.O_WRONLY)):
        os.dup2(os.open(path, flags), fd)
    module = request["module"]
    # `python -m` puts the working dir first on the path and the module's file in argv[0]
    sys.path[0] = os.getcwd()
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(ENTRY[module])
    sys.argv = [spec.origin, *request["args"]]
    if module == "hpsweep.train":
        hpsweep.train.main()
    else:
        sys.exit(hpsweep.cli.main())


def exit_as_python_would(request):
    try:
        run(request)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # What an interpreter's exit does that anyone could see, without tearing down torch's
    # modules one by one (about a second)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        exit_as_python_would(request)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""

MODULES = ("hpsweep.train", "hpsweep.cli")
# torch, its BLAS and Python itself read these once, as they start
IMPORT_TIME_VARIABLES = ("PYTHON", "OMP_", "MKL_", "CUDA_", "OPENBLAS_", "TORCH")


class WarmStart:
    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen(
                [sys.executable, "-c", SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=tempfile.gettempdir(),
            )
        return self.server

    def run(
        self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        server = self.start()
        assert server.stdin is not None and server.stdout is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            out.touch()
            err.touch()
            request = {"module": module, "args": args, "cwd": str(cwd), "env": env}
            server.stdin.write(json.dumps(request | {"out": str(out), "err": str(err)}) + "\n")
            server.stdin.flush()
            pid = json.loads(server.stdout.readline())["pid"]
            ready, _, _ = select.select([server.stdout], [], [], timeout)
            if not ready:
                os.killpg(pid, signal.SIGKILL)
                server.stdout.readline()
                raise subprocess.TimeoutExpired([module, *args], timeout)
            code = json.loads(server.stdout.readline())["code"]
            return subprocess.CompletedProcess(
                [sys.executable, "-m", module, *args], code, out.read_text(), err.read_text()
            )

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.stdin.close()  # type: ignore[union-attr]
            self.server.wait(timeout=60)


WARM = WarmStart()


def run_command(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`command` as subprocess.run(..., capture_output=True, text=True) runs it, in this
    process's environment updated by `env`: forked from the warm server when it is
    `python -m hpsweep.train|hpsweep.cli ...`, else started afresh (also when `env` sets a
    variable that libraries read as they are imported, which the server did before)."""
    environ = {**os.environ, **(env or {})}
    read_at_import = any(k.startswith(IMPORT_TIME_VARIABLES) for k in env or {})
    for module in MODULES:
        if command[:3] == [sys.executable, "-m", module] and not read_at_import:
            return WARM.run(module, command[3:], cwd, environ, timeout)
    return subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout
    )
