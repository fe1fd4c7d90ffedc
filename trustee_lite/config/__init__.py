"""The recipe: typed sections (models.py: policy and simulator; run.py: tools, rollouts,
curriculum, simulate, train, and the Recipe of them all), read and checked by loading.py, every
error at once. The names below are the recipe's public face; each is declared once, in its
module."""

from trustee_lite.config.common import FieldProblem, Section
from trustee_lite.config.loading import apply_override, load_recipe, parse_recipe
from trustee_lite.config.models import BACKENDS, EMBEDDED, LoraConfig, ModelConfig, PolicyConfig, SimulatorConfig
from trustee_lite.config.run import (
    ADVANTAGE_MODES,
    ESTIMATORS,
    KNOB_NAMES,
    CurriculumConfig,
    KnobRule,
    KnobTable,
    McpServer,
    Recipe,
    RolloutConfig,
    SimulateRunConfig,
    SynthesizeConfig,
    TasksConfig,
    ToolsConfig,
    TrainConfig,
)

__all__ = ["ADVANTAGE_MODES", "BACKENDS", "EMBEDDED", "ESTIMATORS", "KNOB_NAMES", "CurriculumConfig", "FieldProblem",
           "KnobRule", "KnobTable", "LoraConfig", "McpServer", "ModelConfig", "PolicyConfig", "Recipe", "RolloutConfig",
           "Section", "SimulateRunConfig", "SimulatorConfig", "SynthesizeConfig", "TasksConfig", "ToolsConfig", "TrainConfig",
           "apply_override", "load_recipe", "parse_recipe"]
