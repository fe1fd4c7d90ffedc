"""Recipes: valid ones load with defaults; each malformed one gives one line naming the field, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trustee_lite.__main__ import main
from trustee_lite.config import load_recipe, parse_recipe
from trustee_lite.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# (recipe text, the start of the expected one-line error). Extra files the recipe names
# are created by the test only where the case says so.
MALFORMED = [
    ("foo: 1\n", "recipe.yaml: foo: unknown key"),
    ("simulator:\n  thinking: true\n", "recipe.yaml: simulator.thinking: llama_cpp enforces the JSON schema from the first token"),
    ("policy:\n  thinking: maybe\n", "recipe.yaml: policy.thinking: must be true or false, got str 'maybe'"),
    ("tools:\n  categories: []\n", "recipe.yaml: tools.categories: must list at least 1, got none"),
    ("simulator:\n  max_tokens: 5\n", "recipe.yaml: simulator.max_tokens: unknown key"),
    ("simulator:\n  max_new_tokens: -5\n", "recipe.yaml: simulator.max_new_tokens: must be > 0, got -5"),
    ("policy:\n  temperature: hot\n", "recipe.yaml: policy.temperature: must be a number, got str 'hot'"),
    ("seed: zero\n", "recipe.yaml: seed: must be an integer, got str 'zero'"),
    ("rollout:\n  rollouts_per_task: 2.5\n", "recipe.yaml: rollout.rollouts_per_task: must be an integer"),
    ("rollout:\n  rollouts_per_task: true\n", "recipe.yaml: rollout.rollouts_per_task: must be an integer"),
    ("simulator:\n  backend: vllm\n", "recipe.yaml: simulator.backend: must be one of 'llama_cpp', 'transformers' or 'openai', got 'vllm'"),
    ("policy:\n  backend: openai\n", "recipe.yaml: policy.backend: must be one of 'transformers' or 'llama_cpp', got 'openai'"),
    ("policy:\n  backend: llama_cpp\n  adapter: runs/x/adapter\n", "recipe.yaml: policy.adapter: no GGUF LoRA at "),
    ("policy:\n  top_p: 0\n", "recipe.yaml: policy.top_p: must be > 0, got 0"),
    ("simulator:\n  top_p: 1.5\n", "recipe.yaml: simulator.top_p: must be <= 1, got 1.5"),
    ("curriculum:\n  initial_level: 0\n", "recipe.yaml: curriculum.initial_level: must be >= 1, got 0"),
    ("curriculum:\n  initial_level: 101\n", "recipe.yaml: curriculum.initial_level: must be <= 100, got 101"),
    ("curriculum:\n  soft_eps: 2\n", "recipe.yaml: curriculum.soft_eps: must be <= 1, got 2"),
    ("curriculum:\n  fixed_aspects: [num_tools, bogus]\n", "recipe.yaml: curriculum.fixed_aspects[1]: must be one of"),
    ("curriculum:\n  knobs:\n    num_tools: {scale: 0.1, min: 5, max: 2}\n",
     "recipe.yaml: curriculum.knobs.num_tools: min (5) must be <= max (2)"),
    ("curriculum:\n  knobs:\n    persona: {scale: 0.1, min: 0, max: 5}\n",
     "recipe.yaml: curriculum.knobs: persona.max: must be <= 2, got 5"),
    ("curriculum:\n  knobs:\n    num_calls: {scale: 0.1, min: 1}\n", "recipe.yaml: curriculum.knobs.num_calls.max: required"),
    ("tools:\n  file: missing.json\n", "recipe.yaml: tools.file: file not found:"),
    ("policy:\n  model: ./no-such-model\n", "recipe.yaml: policy.model: path not found:"),
    ("policy:\n  adapter: ./no-adapter-here\n", "recipe.yaml: policy.adapter: no PEFT adapter (adapter_config.json) in"),
    ("simulator:\n  model: Qwen/Qwen3-8B\n", "recipe.yaml: simulator.model: llama_cpp needs a local .gguf file, got 'Qwen/Qwen3-8B'"),
    ("simulator:\n  gguf_file: model.gguf\n", "recipe.yaml: simulator.gguf_file: cannot be set when model is 'embedded'"),
    ("policy:\n  max_new_tokens: 64\n   bad_indent: 1\n", "recipe.yaml: line 3: YAML syntax error"),
    ("- policy\n- simulator\n", "recipe.yaml: must be a mapping of sections, got list"),
    ("policy: 5\n", "recipe.yaml: policy: must be a mapping, got int 5"),
    ("simulate:\n  episodes: 0\n", "recipe.yaml: simulate.episodes: must be > 0, got 0"),
    ("tools:\n  categories: [travel, space_travel]\n", "recipe.yaml: tools.categories: unknown category 'space_travel'"),
    ("tools:\n  file: tools.json\n", "tools.json: line 1: invalid JSON"),
]


@pytest.mark.parametrize("text, expected", MALFORMED, ids=[e.split(": ", 1)[1][:40] for _, e in MALFORMED])
def test_malformed_recipe_gives_one_line_and_exit_2(tmp_path, capsys, monkeypatch, text, expected):
    (tmp_path / "tools.json").write_text("{not json", encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    status = main(["simulate", str(recipe), "--db", str(tmp_path / "db.sqlite")])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(expected), lines[0]


def test_there_are_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


def test_real_process_exits_2_without_traceback(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("simulator:\n  max_new_tokens: -5\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "trustee_lite", "simulate", str(recipe), "--db", str(tmp_path / "x.sqlite")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "recipe.yaml: simulator.max_new_tokens: must be > 0, got -5"
    assert "Traceback" not in proc.stderr


def test_a_llama_cpp_policy_does_not_train(tmp_path, capsys):
    """llama_cpp serves an exported policy (eval, simulate); train refuses it before anything loads."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("policy:\n  backend: llama_cpp\n", encoding="utf-8")
    assert main([str(recipe), "--db", str(tmp_path / "db.sqlite")]) == 2
    assert capsys.readouterr().err == ("recipe.yaml: policy.backend: llama_cpp serves an exported policy (eval, simulate); "
                                       "training needs transformers\n")
    assert not (tmp_path / "db.sqlite").exists()


def test_missing_recipe_file_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trustee_lite", "simulate", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{tmp_path / 'nope.yaml'}: recipe file not found"


def test_smoke_recipe_loads_with_its_values():
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml")
    assert recipe.name == "smoke"
    assert recipe.policy.model == "embedded" and recipe.simulator.backend == "llama_cpp"
    assert recipe.rollout.rollouts_per_task == 4
    assert recipe.source == "smoke.yaml"


def test_defaults_follow_the_paper_knob_table():
    knobs = parse_recipe({}).curriculum.knobs
    assert (knobs.num_tools.scale, knobs.num_tools.min, knobs.num_tools.max) == (0.10, 1, 10)
    assert (knobs.num_criteria.offset, knobs.num_criteria.max) == (1, 5)
    assert (knobs.max_assistant_turns.scale, knobs.max_assistant_turns.min) == (0.06, 2)


def test_relative_files_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tools.json").write_text("[]", encoding="utf-8")
    (tmp_path / "sub" / "r.yaml").write_text("tools:\n  file: tools.json\n", encoding="utf-8")
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(tmp_path / "sub" / "r.yaml")
    assert recipe.tools.file == str((tmp_path / "sub" / "tools.json").resolve())


def test_recipe_is_frozen():
    recipe = parse_recipe({})
    with pytest.raises(Exception):
        recipe.policy.temperature = 2.0


def test_user_error_message_is_place_then_problem():
    err = UserError("recipe.yaml: policy.top_p", "must be > 0, got 0")
    assert str(err) == "recipe.yaml: policy.top_p: must be > 0, got 0"


def test_a_recipe_with_three_mistakes_gets_three_lines(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("policy:\n  temperatur: 1.0\nsimulator:\n  backend: openai\ntrain:\n  steps: 0\n", encoding="utf-8")
    assert main(["simulate", str(recipe), "--db", str(tmp_path / "db.sqlite")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "recipe.yaml: policy.temperatur: unknown key (did you mean temperature?)",
        "recipe.yaml: simulator.base_url: is required when backend is openai",
        "recipe.yaml: train.steps: must be > 0, got 0",
    ]


def test_knob_names_have_one_source():
    from trustee_lite.config import KNOB_NAMES, KnobTable
    from trustee_lite.records import KnobValues

    assert tuple(KnobTable.model_fields) == KNOB_NAMES == tuple(KnobValues.__dataclass_fields__)


def test_set_overrides_a_recipe_setting(tmp_path):
    from trustee_lite.config import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml", ["train.learning_rate=0", "policy.lora.rank=4",
                                                          "train.report_to=[tensorboard]"])
    assert recipe.train.learning_rate == 0 and recipe.policy.lora.rank == 4 and recipe.train.report_to == ["tensorboard"]
    assert recipe.train.steps == 3  # the rest is the file's


@pytest.mark.parametrize("setting, expected", [
    ("train.learning_rate", "--set train.learning_rate: must be section.key=value"),
    ("name.x=1", "--set name.x=1: name is not a section"),
    ("train.learning_rate=[", "--set train.learning_rate=[: the value is not valid YAML"),
    ("train.learning_rate=-1", "smoke.yaml: train.learning_rate: must be >= 0"),
    ("train.lr=0", "smoke.yaml: train.lr: unknown key"),
])
def test_bad_set_is_one_line_exit_2(setting, expected, capsys):
    from trustee_lite.__main__ import main

    assert main(["check", str(ROOT / "recipes" / "smoke.yaml"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_numbers_as_people_write_them(tmp_path):
    """YAML 1.1 reads 1e-4 (no dot) as a string; recipes and --set take it as the number."""
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  kl_coef: 5E-3\npolicy:\n  temperature: 1E0\n")
    recipe = load_recipe(path, ["train.weight_decay=5e-6"])
    assert (recipe.train.learning_rate, recipe.train.kl_coef, recipe.policy.temperature) == (1e-4, 5e-3, 1.0)
    assert recipe.train.weight_decay == 5e-6


@pytest.mark.parametrize("value", ["2.5", '"2"', "1E3"])
def test_integer_fields_still_refuse_what_is_not_an_integer(value, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"train:\n  steps: {value}\n")
    with pytest.raises(UserError, match="train.steps"):
        load_recipe(path)
