"""Kits: what several experiments share, so that no experiment imports another.

* :mod:`~escapelab.experiments.kits.teacher_student` — teacher, student and training sections,
  students trained to classified endpoints, width-r* sub-networks trained alone;
* :mod:`~escapelab.experiments.kits.classifier` — data and network sections of the
  lottery-ticket experiments on real data (and on teacher-student regression data);
* :mod:`~escapelab.experiments.kits.neuron_tickets` and
  :mod:`~escapelab.experiments.kits.weight_tickets` — the two halves of the perturbation test
  (E3), each a spec section with its records and summary;
* :mod:`~escapelab.experiments.kits.tickets` — both halves as one: the tasks and records of
  ``ticket-perturbation`` and ``ticket-dose``.
"""
