"""Closed-form subspace counts of Şimşek et al. (2021) against enumeration and values by hand."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from escapelab.config import SpecError
from escapelab.report.counts import plot_symmetry_counts, write_symmetry_counts
from escapelab.report.findings import symmetry_counts
from escapelab.report.tables import markdown_table
from escapelab.theory.symmetry_counts import (
    CountsTable,
    bell,
    brute_force_count,
    count_critical_subspaces,
    count_global_subspaces,
    count_saddle_subspaces,
    counts_table,
    crossover_width,
    stirling2,
    symmetry_table,
)


def test_stirling_numbers_match_the_recurrence_and_a_known_row() -> None:
    # S(n, k) = k S(n - 1, k) + S(n - 1, k - 1), S(0, 0) = 1
    table = [[1]]
    for n in range(1, 9):
        prev = [*table[-1], 0]
        table.append([k * prev[k] + (prev[k - 1] if k else 0) for k in range(n + 1)])
    for n, row in enumerate(table):
        assert [stirling2(n, k) for k in range(n + 1)] == row
        assert stirling2(n, n + 1) == 0
    assert table[7] == [0, 1, 63, 301, 350, 140, 21, 1]


def test_bell_numbers() -> None:
    assert [bell(n) for n in range(9)] == [1, 1, 2, 5, 15, 52, 203, 877, 4140]


@pytest.mark.parametrize("zero_loss", [True, False])
def test_closed_forms_equal_brute_force(zero_loss: bool) -> None:
    for r in range(4):
        for m in range(6 if zero_loss else 8):
            expected = brute_force_count(r, m, zero_loss=zero_loss)
            count = count_global_subspaces if zero_loss else count_critical_subspaces
            assert count(r, m) == expected, (r, m)


def test_second_closed_form_of_t() -> None:
    # choose the r* labelled blocks among the j blocks of a partition of the m units
    for r in range(7):
        for m in range(12):
            expected = sum(math.perm(j, r) * stirling2(m, j) for j in range(m + 1))
            assert count_global_subspaces(r, m) == expected


def test_known_small_values() -> None:
    for r in range(7):
        # m = r*: no room for copies or cancelling groups, only the r*! permutations
        assert count_global_subspaces(r, r) == math.factorial(r)
        # m = r* + 1: one zero-output unit ((r+1) places x r! orderings) or one teacher unit copied
        # twice (C(r+1, 2) pairs x r! orderings): (r+1)! (r+2) / 2
        assert count_global_subspaces(r, r + 1) == math.factorial(r + 1) * (r + 2) // 2
        # m = r* + 2 adds, to the maps of the earlier model, the cancelling pairs: C(r+2, 2) r!
        old = sum((-1) ** j * math.comb(r, j) * (r + 1 - j) ** (r + 2) for j in range(r + 1))
        pairs = math.comb(r + 2, 2) * math.factorial(r)
        assert count_global_subspaces(r, r + 2) == old + pairs
        assert count_global_subspaces(r + 1, r) == 0
    for m in range(1, 12):
        # duplication only: one block (1 subspace), two labelled blocks (2^m - 2 surjections)
        assert count_critical_subspaces(1, m) == 1
        assert count_critical_subspaces(2, m) == 2**m - 2
    # r* = 2, m = 3 by hand: 6 surjections of 3 units onto 2, plus 3 zero units x 2 bijections
    assert count_global_subspaces(2, 3) == 12
    # r* = 1, m = 3 by hand: all copies (1); two copies and a zero-output unit (3); one copy
    # and two zero-output units (3); one copy and a cancelling pair (3)
    assert count_global_subspaces(1, 3) == 1 + 3 + 3 + 3
    assert count_saddle_subspaces(3, 3) == count_critical_subspaces(1, 3) + (
        count_critical_subspaces(2, 3)
    )
    assert count_saddle_subspaces(3, 3) == 1 + 6


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        stirling2(-1, 0)
    with pytest.raises(ValueError):
        count_global_subspaces(2, -1)
    with pytest.raises(ValueError):
        crossover_width(1)
    with pytest.raises(ValueError):
        symmetry_table(3, [2])


def test_crossover_exists_and_grows_with_teacher_width() -> None:
    crossings = [crossover_width(r_star) for r_star in range(2, 8)]
    assert crossings == [2, 4, 5, 6, 8, 9]
    for r_star, m_cross in zip(range(2, 8), crossings, strict=True):
        rows = symmetry_table(r_star, range(r_star, r_star + 30))
        ratios = [row["ratio"] for row in rows]
        # the ratio falls monotonically through 1; saddle subspaces dominate at m = r* for
        # r* >= 3, while for r* = 2 the single saddle subspace never outnumbers T(2, m) >= 2
        assert (ratios[0] > 1.0) == (r_star >= 3)
        assert all(a > b for a, b in itertools.pairwise(ratios))
        assert ratios[m_cross - r_star] < 1.0
        if m_cross > r_star:
            assert ratios[m_cross - r_star - 1] >= 1.0


def test_crossovers_do_not_depend_on_cancelling_groups() -> None:
    # T without the cancelling groups of two or more units (the earlier, inclusion-exclusion T)
    # gives the same crossover widths: those groups only appear from m = r* + 2 on
    def t_without(r: int, m: int) -> int:
        return sum((-1) ** j * math.comb(r, j) * (r + 1 - j) ** m for j in range(r + 1))

    for r_star in range(2, 9):
        m = r_star
        while count_saddle_subspaces(r_star, m) >= t_without(r_star, m):
            m += 1
        assert m == crossover_width(r_star)


def test_table_columns() -> None:
    rows = symmetry_table(3, [3, 4, 10])
    assert [row["m"] for row in rows] == [3, 4, 10]
    first = rows[0]
    assert first["T"] == 6
    assert first["G"] == 7  # G(1, 3) + G(2, 3) = 1 + 6
    assert first["ratio"] == pytest.approx(7 / 6)
    for row in rows:
        assert row["log10_T"] == pytest.approx(math.log10(row["T"]))
        assert row["log10_G"] == pytest.approx(math.log10(row["G"]))
        assert row["log10_ratio"] == pytest.approx(math.log10(row["ratio"]))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figure_writes_png(tmp_path: Path) -> None:
    out = plot_symmetry_counts([2, 3, 4], list(range(2, 16)), tmp_path / "sub" / "counts.png")
    assert out == tmp_path / "sub" / "counts.png"
    assert png_size(out) == (1020, 660)  # 6.8 x 4.4 in at 150 dpi
    assert out.stat().st_size > 20_000


def test_counts_table_rows_match_symmetry_table() -> None:
    table = counts_table([3, 2], 6)
    assert isinstance(table, CountsTable)
    assert table.r_stars == (3, 2) and table.max_width == 6
    assert table.crossovers == {3: 4, 2: 2}
    assert table.widths == [2, 3, 4, 5, 6]
    # r* in the order given, widths r* .. max_width, r_star and crossover columns first
    assert [(row["r_star"], row["m"]) for row in table.rows] == [
        *((3, m) for m in range(3, 7)),
        *((2, m) for m in range(2, 7)),
    ]
    assert list(table.rows[0])[:3] == ["r_star", "crossover", "m"]
    for r_star in (2, 3):
        mine = [row for row in table.rows if row["r_star"] == r_star]
        expected = symmetry_table(r_star, range(r_star, 7))
        assert [
            {k: v for k, v in row.items() if k not in ("r_star", "crossover")} for row in mine
        ] == expected
        assert {row["crossover"] for row in mine} == {crossover_width(r_star)}
    # r* = 2, m = 3 by hand: T = 12, G = G(1, 3) = 1
    row = next(r for r in table.rows if (r["r_star"], r["m"]) == (2, 3))
    assert (row["T"], row["G"]) == (12, 1) and row["ratio"] == pytest.approx(1 / 12)


def test_counts_table_crossovers_and_dominance() -> None:
    table = counts_table(range(2, 7), 2)
    assert table.crossovers == {2: 2, 3: 4, 4: 5, 5: 6, 6: 8}
    # a crossover at r* itself names no width below r* (it printed "up to m = 1" for r* = 2)
    assert table.dominance(2) == "at no width m >= 2"
    assert table.dominance(3) == "up to m = 3"
    assert table.dominance(6) == "up to m = 7"
    # max_width below r*: one row at m = r*
    narrow = counts_table([4], 2)
    assert [row["m"] for row in narrow.rows] == [4]
    assert narrow.rows[0]["T"] == 24 and narrow.widths == [2]
    # repeats are kept, as the command line keeps them
    assert [row["r_star"] for row in counts_table([2, 2], 2).rows] == [2, 2]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([1, 3], 10), "r_stars"),
        (([], 10), "r_stars"),
        (([2.0], 10), "r_stars"),
        (([True], 10), "r_stars"),
        (([2], 1), "max_width"),
        (([2], 5.0), "max_width"),
    ],
)
def test_counts_table_names_the_bad_argument(args: tuple, field: str) -> None:
    with pytest.raises(SpecError) as err:
        counts_table(*args)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_write_symmetry_counts(tmp_path: Path) -> None:
    table = counts_table([2, 3], 7)
    md, png = write_symmetry_counts(table, tmp_path / "new" / "dir")
    assert md == tmp_path / "new" / "dir" / "symmetry_counts.md"
    assert png == tmp_path / "new" / "dir" / "symmetry_counts.png"
    assert md.read_text() == markdown_table(table.rows)
    lines = md.read_text().splitlines()
    assert len(lines) == 2 + 6 + 5
    assert lines[0].split("|")[1].strip() == "r_star"
    assert png_size(png) == (1020, 660)


def test_counts_finding_sentence() -> None:
    crossovers = counts_table([2, 3, 6], 2).crossovers
    assert symmetry_counts(crossovers) == (
        "Counting only constructions measured to stay critical (duplication at every critical "
        "point; zero-output units and cancelling groups at global minima only), saddle "
        "subspaces outnumber global-minimum subspaces at no width for r* = 2; up to m = 3 for "
        "r* = 3; up to m = 7 for r* = 6."
    )
