"""escapelab: lottery tickets or escape dimensions? A laboratory that settles it by measurement.

The Python API mirrors the command line::

    import escapelab
    outcome = escapelab.run("width-sweep", {"student": {"widths": [4, 5, 8], "seeds": 16}})
    print(outcome.summary)

and the engine is importable piece by piece: :class:`Architecture` (ensembles of MLPs),
:func:`make_teacher` / :func:`student_objective` (teacher-student problems), :func:`train`
(first-order phase + damped Newton refinement), :func:`classify` (exact endpoint classes).
"""

__version__ = "0.2.0"

from escapelab.config import SpecError
from escapelab.landscape.classify import ClassifyConfig, Endpoint, classify
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, TrainResult, train
from escapelab.problems.objective import DataObjective, Objective
from escapelab.problems.population import PopulationObjective
from escapelab.problems.teacher import Teacher, make_teacher, student_objective
from escapelab.runner.store import Store
from escapelab.runner.sweep import RunOutcome, run, write_outputs

__all__ = [
    "Architecture",
    "ClassifyConfig",
    "DataObjective",
    "Endpoint",
    "Objective",
    "PopulationObjective",
    "RunOutcome",
    "SpecError",
    "Store",
    "Teacher",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "classify",
    "make_teacher",
    "run",
    "student_objective",
    "train",
    "write_outputs",
]
