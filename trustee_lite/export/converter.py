"""llama.cpp's own conversion scripts (convert_lora_to_gguf.py, convert_hf_to_gguf.py and the
gguf-py they import), taken from the source distribution of the installed llama-cpp-python, so
the files they write match the llama.cpp that loads them. Downloaded once by pip (the user's
index and its checks) and kept under the cache folder; run as a subprocess of this Python."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from trustee_lite.errors import UserError
from trustee_lite.lm.converted import cache_root
from trustee_lite.progress import say

WANTED = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/")
DONE = "trustee_lite_complete"


def scripts() -> Path:
    """The folder holding llama.cpp's conversion scripts for the installed llama-cpp-python."""
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("export", "needs llama-cpp-python (pip install llama-cpp-python)") from None
    root = cache_root() / "llama.cpp" / f"convert-{version}"
    if (root / DONE).is_file():
        return root
    say(f"fetching llama.cpp's conversion scripts: llama-cpp-python {version}'s source distribution (pip, once)")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary",
                               "llama-cpp-python", "--no-deps", "--quiet", "-d", tmp], capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        try:
            if proc.returncode != 0 or not archives:
                lines = [line for line in proc.stderr.splitlines() if line.strip()]
                raise OSError(lines[-1] if lines else f"pip exited {proc.returncode}")
            _extract(archives[0], root)
        except (OSError, tarfile.TarError) as err:
            raise UserError("export", f"cannot get llama-cpp-python {version}'s source distribution ({err}); without "
                                      f"a package index, put its vendor/llama.cpp conversion scripts in {root}") from None
    return root


def _extract(archive: Path, root: Path) -> None:
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/vendor/llama.cpp/", 1)
            if len(parts) == 2 and member.isfile() and parts[1].startswith(WANTED):
                target = partial / parts[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    if not (partial / "convert_lora_to_gguf.py").is_file():
        raise OSError("the source distribution has no vendor/llama.cpp/convert_lora_to_gguf.py")
    (partial / DONE).write_text("")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)


def run(script: str, args: list[str], place: str) -> None:
    """Run one of the scripts; its failure is one line (its last line of output)."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the scripts' own gguf-py, not PyPI's
    proc = subprocess.run([sys.executable, str(scripts() / script), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise UserError(place, f"llama.cpp's {script} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
