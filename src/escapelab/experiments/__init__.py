"""The experiments escapelab can run, by name."""

from __future__ import annotations

from escapelab.config import SpecError
from escapelab.experiments.base import Experiment, Task
from escapelab.experiments.catapult import Catapult, CatapultSpec
from escapelab.experiments.census import Census, CensusSpec
from escapelab.experiments.double_descent import DoubleDescent, DoubleDescentSpec
from escapelab.experiments.escape import Escape, EscapeSpec
from escapelab.experiments.implicit_acceleration import (
    ImplicitAcceleration,
    ImplicitAccelerationSpec,
)
from escapelab.experiments.lottery import Lottery, LotterySpec
from escapelab.experiments.matrix_sensing import MatrixSensing, MatrixSensingSpec
from escapelab.experiments.minima_rarity import MinimaRarity, RaritySpec
from escapelab.experiments.random_features import RandomFeatures, RandomFeaturesSpec
from escapelab.experiments.relu_spurious import ReluSpurious, ReluSpuriousSpec
from escapelab.experiments.scaling import Scaling, ScalingSpec
from escapelab.experiments.subnetworks import Subnetworks, SubnetworkSpec
from escapelab.experiments.ticket_dose import TicketDose, TicketDoseSpec
from escapelab.experiments.ticket_perturbation import TicketPerturbation, TicketPerturbationSpec
from escapelab.experiments.width_sweep import WidthSweep, WidthSweepSpec

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        WidthSweep(),
        Subnetworks(),
        Escape(),
        Scaling(),
        Census(),
        MinimaRarity(),
        Lottery(),
        TicketPerturbation(),
        TicketDose(),
        ReluSpurious(),
        RandomFeatures(),
        DoubleDescent(),
        ImplicitAcceleration(),
        Catapult(),
        MatrixSensing(),
    )
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; SpecError naming the allowed ones otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise SpecError(
            "experiment", f"unknown experiment {name!r}; allowed: " + ", ".join(EXPERIMENTS)
        ) from None


__all__ = [
    "EXPERIMENTS",
    "Catapult",
    "CatapultSpec",
    "Census",
    "CensusSpec",
    "DoubleDescent",
    "DoubleDescentSpec",
    "Escape",
    "EscapeSpec",
    "Experiment",
    "ImplicitAcceleration",
    "ImplicitAccelerationSpec",
    "Lottery",
    "LotterySpec",
    "MatrixSensing",
    "MatrixSensingSpec",
    "MinimaRarity",
    "RandomFeatures",
    "RandomFeaturesSpec",
    "RaritySpec",
    "ReluSpurious",
    "ReluSpuriousSpec",
    "Scaling",
    "ScalingSpec",
    "SubnetworkSpec",
    "Subnetworks",
    "Task",
    "TicketDose",
    "TicketDoseSpec",
    "TicketPerturbation",
    "TicketPerturbationSpec",
    "WidthSweep",
    "WidthSweepSpec",
    "get_experiment",
]
