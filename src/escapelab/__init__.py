"""escapelab: lottery tickets or escape dimensions? A laboratory that settles it by measurement.

The Python API mirrors the command line::

    import escapelab
    outcome = escapelab.run("width-sweep", {"student": {"widths": [4, 5, 8], "seeds": 16}})
    print(outcome.summary)

and the engine is importable piece by piece: :class:`Architecture` (ensembles of MLPs),
:func:`make_teacher` / :func:`student_objective` (teacher-student problems), :func:`train`
(first-order phase + damped Newton refinement), :func:`classify` (exact endpoint classes).
"""

__version__ = "0.1.0"

from escapelab.config import SpecError  # noqa: E402
from escapelab.landscape.classify import ClassifyConfig, Endpoint, classify  # noqa: E402
from escapelab.nets.mlp import Architecture  # noqa: E402
from escapelab.optim.train import TrainConfig, TrainResult, train  # noqa: E402
from escapelab.problems.objective import DataObjective, Objective  # noqa: E402
from escapelab.problems.population import PopulationObjective  # noqa: E402
from escapelab.problems.teacher import Teacher, make_teacher, student_objective  # noqa: E402
from escapelab.runner.store import Store  # noqa: E402
from escapelab.runner.sweep import RunOutcome, run, write_outputs  # noqa: E402

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
