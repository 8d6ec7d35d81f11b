"""Every ```python block of README.md and docs/**/*.md runs, each on its own, as written.

A block runs in a fresh namespace, in a temporary working directory, and fails
the test with its file and line. Blocks marked with the HTML comment

    <!-- docs-test: processes=N -->

on the line before the fence are multi-host programs: they run as written in N
processes at once, as the N hosts of a simulated SLURM job on this machine
(``jax.distributed.initialize()`` finds its coordinator, process count and
id in SLURM's variables; the coordinator listens on 127.0.0.1), each process
with 2 CPU devices. Anything not meant to run goes in a ```bash or ```text
block.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    processes: int  # 0: run in this process

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marker(text: str, where: str) -> int:
    options = dict(item.split("=", 1) for item in text.split())
    if set(options) != {"processes"} or not options["processes"].isdigit():
        raise ValueError(f"{where}: unknown docs-test marker {text!r} (want processes=N)")
    return int(options["processes"])


def python_blocks(path: Path) -> list[Block]:
    """The Python blocks of a Markdown file, with the line each starts on."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        if lang.lower() in PYTHON:
            prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marked = MARKER.match(prev)
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            processes = _marker(marked.group(1), where) if marked else 0
            code = "\n".join(line[len(indent) :] for line in lines[start:end])
            blocks.append(Block(path, start + 1, code, processes))
        i = end + 1
    return blocks


BLOCKS = [b for f in FILES for b in python_blocks(f)]


def test_found_the_blocks():
    assert (ROOT / "docs").is_dir()
    assert len(BLOCKS) >= 10, [b.where for b in BLOCKS]
    assert any(b.processes for b in BLOCKS), "the multi-host block is not marked"


def _compiled(block: Block):
    # Padded so that a traceback names the Markdown file and its line numbers.
    source = "\n" * (block.line - 1) + block.code + "\n"
    return compile(source, str(block.path), "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.processes], ids=lambda b: b.where)
def test_block_runs(block: Block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _compiled(block)
    try:
        exec(code, {"__name__": "__main__"})
    except (Exception, SystemExit) as e:  # not KeyboardInterrupt
        pytest.fail(f"the Python block at {block.where} raised {type(e).__name__}: {e}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.processes], ids=lambda b: b.where)
def test_multihost_block_runs(block: Block, tmp_path):
    script = tmp_path / "block.py"
    script.write_text("\n" * (block.line - 1) + block.code + "\n")
    n = block.processes
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}",
        "SLURM_JOB_ID": "1",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": str(n),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**base, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, f"the multi-host block at {block.where} failed in processes " + "; ".join(
        f"{i} (exit {rc}):\n{outputs[i][-3000:]}" for i, rc in failed
    )
