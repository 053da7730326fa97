"""emkit: emergent-misalignment experiments, end to end.

The pipeline is one package per stage: datasets -> finetune -> sample -> judge -> analysis ->
report, tied together by a typed experiment config (`emkit.config`) and a durable run store
(`emkit.store`). `emkit.experiment.run_experiment` walks a config through every stage.
Heavy stages (torch, transformers) are imported lazily by the packages that need them.
"""

__version__ = "0.1.0"

from emkit.questions import Question, QuestionError, load_questions, questions_from
from emkit.records import Judgment, SampleKey, SampleRecord, SampleRequest, SamplingParams

__all__ = [
    "Judgment", "Question", "QuestionError", "SampleKey", "SampleRecord", "SampleRequest",
    "SamplingParams", "__version__", "load_questions", "questions_from",
]
