"""Security: the UI listens on this machine only, nothing unpickles files, checkpoints load without running
code, no user-provided string reaches a shell, and partition keys are validated before they become paths.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from dagster import asset, instance_for_test, materialize

from tac_pipeline.cli import cluster, commands
from tac_pipeline.defs.io_managers import ParquetIOManager
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.drops.keys import PARTITION_KEY_PATTERN
from tac_pipeline.encoders import TINY_MODEL_NAME, ClipEncoder, EncoderUnavailableError
from tac_pipeline.runs import child
from tac_pipeline_tests.test_reliability.helpers import REPO, step_failures

PACKAGE = REPO / "tac_pipeline"

# ------------------------------------------------------------------------------------------------------------
# the webserver
# ------------------------------------------------------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port or len(address) != width:
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the Linux socket table")
def test_webserver_listens_on_localhost_only_unless_told_otherwise(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "--empty-workspace", "-p", str(port)],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        addresses: set[str] = set()
        while not addresses and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            addresses = _listening_addresses(port)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert addresses == {"127.0.0.1"}


def test_make_ui_and_dagster_dev_bind_localhost():
    from dagster._cli.dev import dev_command
    from dagster_webserver.cli import dagster_webserver

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in dry.splitlines() if "dagster dev" in line]
    assert " -h 127.0.0.1 " in f"{line} "
    # `dagster dev` without a host passes none on, so the webserver's own default applies: 127.0.0.1
    host_options = {p.name: p for p in dev_command.params}
    assert not isinstance(host_options["host"].default, str)
    assert {p.name: p.default for p in dagster_webserver.params}["host"] == "127.0.0.1"
    assert "host" not in (REPO / "workspace.yaml").read_text()


# ------------------------------------------------------------------------------------------------------------
# source scans: no unpickling, no shell
# ------------------------------------------------------------------------------------------------------------

PICKLE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "jsonpickle",
}
SHELL_CALLS = {
    "os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execv", "os.execve", "os.execvp",
    "os.spawnl", "os.spawnlp", "os.spawnv", "os.spawnvp", "subprocess.getoutput", "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell", "pty.spawn",
}  # fmt: skip
PROCESS_CALLS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def unpickling_sites(source: str, filename: str = "<source>") -> list[str]:
    """Places that could unpickle data: pickle-like modules, and loaders not restricted to plain data."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if last in ("read_pickle", "unsafe_load") or name in ("torch.jit.load", "pd.read_pickle"):
            found.append(f"{where} calls {name}")
        if name == "torch.load" or last == "load_checkpoint":
            if _keyword(node, "weights_only") is not True:
                found.append(f"{where} calls {name} without weights_only=True")
        if (
            last == "load"
            and name.split(".")[0] in ("np", "numpy")
            and _keyword(node, "allow_pickle") is not None
        ):
            if _keyword(node, "allow_pickle") is not False:
                found.append(f"{where} calls {name} with allow_pickle")
        if name == "yaml.load" and "Safe" not in ast.unparse(node):
            found.append(f"{where} calls yaml.load without a safe loader")
    return found


def shell_sites(source: str, filename: str = "<source>") -> list[str]:
    """Places where a string could be run by a shell."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        name = _dotted(node.func)
        shell = _keyword(node, "shell")
        if shell is not None and shell is not False:
            found.append(
                f"{where} passes shell={ast.unparse(next(k.value for k in node.keywords if k.arg == 'shell'))}"
            )
        if name in SHELL_CALLS or name.startswith(("os.exec", "os.spawn", "commands.")):
            found.append(f"{where} calls {name}")
        if name in PROCESS_CALLS and node.args:
            command = node.args[0]
            if isinstance(command, ast.Constant | ast.JoinedStr | ast.BinOp) or (
                isinstance(command, ast.Call) and _dotted(command.func).endswith(".format")
            ):
                found.append(f"{where} runs a command string: {ast.unparse(command)}")
    return found


def _package_sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(REPO).as_posix(), path.read_text(encoding="utf-8")


def test_scanners_catch_planted_unsafe_code():
    unsafe_loads = [
        "import pickle", "from joblib import load", "import dill as d", "torch.load(f)",
        "torch.load(f, weights_only=False)", "np.load(f, allow_pickle=True)", "pd.read_pickle(p)",
        "open_clip.load_checkpoint(m, p)", "yaml.load(s)", "torch.jit.load(p)",
    ]  # fmt: skip
    for snippet in unsafe_loads:
        assert unpickling_sites(snippet), snippet
    for snippet in (
        "torch.load(f, weights_only=True)",
        "np.load(f)",
        "pq.read_table(p)",
        "yaml.safe_load(s)",
    ):
        assert not unpickling_sites(snippet), snippet
    unsafe_shells = [
        "subprocess.run(cmd, shell=True)", "subprocess.Popen('ls ' + name)", "os.system(c)", "os.popen(c)",
        "subprocess.check_output(f'make {x}')", "subprocess.call('a {}'.format(x))", "os.execvp(a, b)",
    ]  # fmt: skip
    for snippet in unsafe_shells:
        assert shell_sites(snippet), snippet
    assert not shell_sites("subprocess.run([sys.executable, '-m', 'x', key], check=False)")


def test_package_never_unpickles_files():
    """Drops, the store, caches and checkpoints are read as Parquet, TOML, images, safetensors or
    ``torch.load(weights_only=True)`` — never through pickle."""
    found = [site for name, source in _package_sources() for site in unpickling_sites(source, name)]
    assert found == []


def test_package_never_runs_a_shell():
    found = [site for name, source in _package_sources() for site in shell_sites(source, name)]
    assert found == []


def test_cli_passes_the_dataset_as_one_plain_argument(monkeypatch, tmp_path):
    calls = []

    real_popen = subprocess.Popen

    def fake_popen(command, **kwargs):
        calls.append((command, kwargs))
        return real_popen(["true"])

    class NoRuns:
        root_directory = str(tmp_path)

        def get_runs(self, filters=None, limit=None):
            return []

    monkeypatch.setattr(child.subprocess, "Popen", fake_popen)  # cli runs its child through child.run_child
    cluster.materialize(["image_embeddings"], "pets-1.0", {}, NoRuns())
    [(command, kwargs)] = calls
    assert isinstance(command, list) and kwargs.get("shell", False) is False
    assert command[command.index("--partition") + 1] == "pets-1.0"


def test_cli_refuses_a_dataset_name_with_shell_syntax(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAC_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(child.subprocess, "Popen", lambda *a, **k: pytest.fail("nothing may run"))
    assert commands.main(["cluster", "x; touch pwned"]) == 1
    assert PARTITION_KEY_PATTERN in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_make_passes_names_to_the_cli_without_a_shell(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: nothing to install
    marker = tmp_path / "pwned"
    hostile = {
        "DATASET": f"x'; touch {marker}; echo '",
        "MODEL": f'm"; touch {marker}; "',
        "PRETRAINED": f"`touch {marker}`",
    }  # (make itself expands $(...) in any variable, as every Makefile does: programs call the CLI directly)
    done = subprocess.run(
        ["make", "-s", "cluster", "PY=/bin/echo", f"STAMP={stamp}", f"DAGSTER_HOME={tmp_path / 'home'}",
         *(f"{k}={v}" for k, v in hostile.items())],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    printed = done.stdout.splitlines()[-1]  # what the CLI would have received, each value one argument
    assert printed == (
        f"-m tac_pipeline.cli cluster {hostile['DATASET']} --model {hostile['MODEL']} "
        f"--pretrained {hostile['PRETRAINED']}"
    )


# ------------------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this runs ``open(marker, "w")``: any code could stand there."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("form", ["zip.pt", "legacy.bin", "plain-pickle.pt"])
def test_checkpoint_with_a_malicious_pickle_is_refused_and_never_runs(tmp_path, tiny, form):
    marker = tmp_path / "code-ran"
    path = tmp_path / f"evil-{form}"
    payload = {"state_dict": tiny.model.state_dict(), "x": Exploit(str(marker))}
    if form == "plain-pickle.pt":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=form == "zip.pt")
    # the payload is live: an unrestricted load would run it
    torch.load(path, weights_only=False) if form != "plain-pickle.pt" else pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    with pytest.raises(EncoderUnavailableError, match="refusing to unpickle") as info:
        ClipEncoder.from_pretrained(TINY_MODEL_NAME, checkpoint=path, device="cpu")
    assert str(path) in str(info.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------------
# partition keys become paths only after validation
# ------------------------------------------------------------------------------------------------------------


@asset(partitions_def=datasets_partitions)
def upstream(context) -> pa.Table:
    return pa.table({"key": [context.partition_key]})


@asset(partitions_def=datasets_partitions)
def downstream(upstream: pa.Table) -> pa.Table:
    return upstream


@pytest.mark.parametrize("key", ["../../evil", "a/b", "/abs/x", ".hidden", "..", "a\\b"])
def test_io_manager_refuses_unsafe_partition_keys(tmp_path, key):
    """Dagster accepts any string as a dynamic partition key; the IO manager refuses to turn an unsafe one into
    a path, for writing and for reading (here a planted file sits where ``../../evil`` would lead)."""
    base = tmp_path / "root" / "store"
    planted = tmp_path / "root" / "evil.parquet"
    planted.parent.mkdir(parents=True)
    pq.write_table(pa.table({"key": ["planted"]}), planted)
    resources = {"io_manager": ParquetIOManager(base_dir=str(base))}
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, [key])
        for selection in ([upstream], [downstream]):
            result = materialize(
                [upstream, downstream], selection=selection, partition_key=key, resources=resources,
                instance=instance, raise_on_error=False,
            )  # fmt: skip
            [message] = step_failures(result).values()
            assert "InvalidDatasetKeyError" in message and PARTITION_KEY_PATTERN in message
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == [
        "root/evil.parquet"
    ]
