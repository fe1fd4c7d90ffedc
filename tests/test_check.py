"""`check RECIPE`: every shipped recipe, here (Qwen3 weights not cached: one line per missing
model with its download command, exit 2) and with a tiny local model in place of each model
(the table, exit 0); a card too small is refused."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import yaml

from trustee_lite.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
EMBEDDED = {r for r in RECIPES if yaml.safe_load((ROOT / "recipes" / r).read_text())["policy"]["model"] == "embedded"}
ROWS = ("recipe", "policy", "simulator", "tools", "tasks", "template", "episode", "memory", "device")


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", [r for r in RECIPES if r not in EMBEDDED])
def test_missing_models_are_one_line_each_with_the_download_command(name, capsys):
    data = yaml.safe_load((ROOT / "recipes" / name).read_text())
    assert main(["check", str(ROOT / "recipes" / name)]) == 2
    out, err = capsys.readouterr()
    models = {data["policy"]["model"]} | ({data["simulator"]["model"]} if data["simulator"]["backend"] != "openai" else set())
    assert out == "" and len(err.strip().splitlines()) == len(models)
    for model in models:
        assert f"{model} is not in the Hugging Face cache here (download it: hf download {model})" in err


@pytest.fixture(scope="module")
def answering_server():
    """Any HTTP answer counts as a reachable simulator server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def with_tiny_models(name: str, folder: Path, tmp_path: Path, base_url: str) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / name).read_text())
    for section in ("policy", "simulator"):
        if data[section].get("model", "embedded") != "embedded" and data[section].get("backend") != "openai":
            data[section]["model"] = str(folder)
    if data["simulator"].get("backend") == "openai":
        data["simulator"]["base_url"] = base_url
    if "tasks" in data:  # the recipe's tasks file, from the recipes folder
        data["tasks"]["file"] = str(ROOT / "recipes" / data["tasks"]["file"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", RECIPES)
def test_with_a_local_model_in_place_the_table_and_exit_0(name, family_dirs, answering_server, tmp_path, capsys):
    recipe = with_tiny_models(name, family_dirs["qwen3"], tmp_path, answering_server)
    gpu = [] if name in EMBEDDED else ["--gpu", "24"]
    status = main(["check", str(recipe), *gpu])
    out, err = capsys.readouterr()
    assert status == 0, err
    rows = [r for r in ROWS if r != "tasks" or "tasks" in yaml.safe_load((ROOT / "recipes" / name).read_text())]
    assert [line.split()[0] for line in out.strip().splitlines() if not line.startswith("warning")] == rows
    assert "a two-turn episode renders" in out and err.strip().endswith("the recipe can run")
    if name not in EMBEDDED:
        assert "native tools (<tool_call>)" in out and "a card of 24 GiB (--gpu): fits" in out


def test_a_llama_cpp_policy_is_named_as_serving_only(capsys):
    assert main(["check", str(ROOT / "recipes" / "smoke.yaml"), "--set", "policy.backend=llama_cpp"]) == 0
    policy = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("policy"))
    assert policy.endswith("context 8,192 (llama_cpp: it serves an exported policy to eval and simulate, and does not train)")


def test_a_card_too_small_is_refused(family_dirs, answering_server, tmp_path, capsys):
    recipe = with_tiny_models("desktop-24gb.yaml", family_dirs["qwen3"], tmp_path, answering_server)
    assert main(["check", str(recipe), "--gpu", "0.5"]) == 2
    out, err = capsys.readouterr()
    assert "exceeds a card of 0.5 GiB (--gpu)" in err and "memory" in out


def test_a_gpu_recipe_without_a_gpu_or_gpu_flag_is_refused(family_dirs, answering_server, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setattr("trustee_lite.check.local_card", lambda: None)  # a machine without CUDA
    recipe = with_tiny_models("laptop-8gb.yaml", family_dirs["qwen3"], tmp_path, answering_server)
    assert main(["check", str(recipe)]) == 2
    assert "this recipe needs an NVIDIA GPU and none is here" in capsys.readouterr().err


def test_gpu_answers_for_the_card_named_and_no_flag_for_the_local_card(family_dirs, answering_server, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.setattr("trustee_lite.check.local_card", lambda: (141 * 2**30, "NVIDIA H200"))  # a big local card
    recipe = with_tiny_models("desktop-24gb.yaml", family_dirs["qwen3"], tmp_path, answering_server)
    assert main(["check", str(recipe), "--gpu", "0.5"]) == 2
    out, err = capsys.readouterr()
    assert "a card of 0.5 GiB (--gpu): needs" in out and "H200" not in out + err
    assert main(["check", str(recipe)]) == 0
    assert "NVIDIA H200, 141.0 GiB: fits" in capsys.readouterr().out


def test_a_model_without_a_chat_template_is_refused(family_dirs, tmp_path, capsys):
    import json
    import shutil

    folder = shutil.copytree(family_dirs["llama3"], tmp_path / "base-model")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"policy: {{model: {folder}}}\nsimulator: {{backend: llama_cpp}}\n")
    assert main(["check", str(recipe)]) == 2
    assert "r.yaml: policy.model: the policy tokenizer has no chat template" in capsys.readouterr().err
