"""The report site: tables keyed by column, units, findings and verdict rules against hand-made
summaries, and the site written for a store of every experiment (parsed as HTML here; the same
pages are checked in a real browser in test_report_browser.py)."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import build
from escapelab.experiments import get_experiment
from escapelab.report import verdict
from escapelab.report.columns import column_label, format_cell
from escapelab.report.findings import findings, share
from escapelab.report.site import duration, tables
from escapelab.runner.store import Store


class TableCells(HTMLParser):
    """Header keys and (row index, [(cell key, text)]) of every ``table.summary`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[str], list[tuple[int, list[tuple[str, str]]]]]] = []
        self._cell: list[str] | None = None
        self._in = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._in = "summary" in (a.get("class") or "")
            if self._in:
                self.tables.append(([], []))
        elif self._in and tag == "th":
            self.tables[-1][0].append(a["data-key"])
        elif self._in and tag == "tr" and "data-row" in a:
            self.tables[-1][1].append((int(a["data-row"]), []))
        elif self._in and tag == "td":
            self._cell = [a["data-key"], ""]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[-1][1][-1][1].append((self._cell[0], self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._in = False


def test_rows_of_different_kinds_keep_each_value_under_its_own_header() -> None:
    # the case: a neuron row has failure_kinds, a weight row does not; the weight row's
    # ci_high (0.658) must stay under ci_high, not slide under failure_kinds
    summary = [
        {"ticket_kind": "neuron", "n": 3, "failure_kinds": {"local_min": 1}, "ci_high": 0.9},
        {"ticket_kind": "weight", "n": 2, "ci_high": 0.658, "test_acc_es": 0.5},
    ]
    neuron, weight = tables(summary)
    assert [k for k, *_ in neuron.columns] == ["ticket_kind", "n", "failure_kinds", "ci_high"]
    assert [k for k, *_ in weight.columns] == ["ticket_kind", "n", "ci_high", "test_acc_es"]
    ((index, cells),) = weight.rows
    assert index == 1
    assert dict((k, t) for k, t, _ in cells) == {
        "ticket_kind": "weight",
        "n": "2",
        "ci_high": "0.658",
        "test_acc_es": "50",
    }
    assert (neuron.title, weight.title) == ("Neuron-level tickets", "Weight-level tickets")


def test_rows_sharing_keys_in_another_order_form_one_table_per_key_set() -> None:
    summary = [{"a": 1, "b": 2.0}, {"a": 3, "c": "x"}, {"a": 4, "b": 5.0}]
    first, second = tables(summary)
    assert [i for i, _ in first.rows] == [0, 2] and [i for i, _ in second.rows] == [1]
    assert [c[0] for c in second.rows[0][1]] == ["a", "c"]


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("test_acc_es", 0.8972, "89.7"),  # per cent, as the lottery figure
        ("density", 0.64, "64"),
        ("p_global", 0.5, "0.5"),  # a share, as the success figure
        ("ci_low", math.nan, "–"),
        ("mean_final_loss", 4.3e-11, "4.30e-11"),
        ("subsets_sampled", False, "no"),
        ("failure_kinds", {"local_min": 2}, "local_min: 2"),
        ("basin_shares", [0.25, 0.5], "0.25, 0.5"),
        ("gamma", None, ""),
    ],
)
def test_cells_are_written_in_the_unit_of_their_column(key: str, value, text: str) -> None:
    assert format_cell(key, value) == text


def test_headers_are_readable_and_carry_units() -> None:
    assert column_label("p_global") == "P(global min) (share)"
    assert column_label("test_acc_es") == "test accuracy (%)"
    assert column_label("some_new_field") == "some new field"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.84, "0.8 s"), (42.4, "42 s"), (272, "4 min 32 s"), (3720, "1 h 02 min")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def _sweep_row(width: int, k: int, n: int, bad: int, pred: float) -> dict:
    from escapelab.theory.multistart import wilson_interval

    lo, hi = wilson_interval(k, n)
    b_lo, b_hi = wilson_interval(bad, n)
    return {
        "width": width,
        "n": n,
        "p_global": k / n,
        "ci_low": lo,
        "ci_high": hi,
        "p_bad_min": bad / n,
        "bad_ci_low": b_lo,
        "bad_ci_high": b_hi,
        "not_converged": n - k - bad,
        "p_not_converged": (n - k - bad) / n,
        "pred_subsets": pred,
        "pred_disjoint": pred,
    }


SPEC = {"teacher": {"width": 4}}


def test_width_sweep_finding_states_the_measured_numbers_with_intervals() -> None:
    # Wilson 95 % by hand: 26/48 -> centre 0.5386, half-width 0.1357 -> [0.403, 0.674];
    # 22/48 by symmetry -> [0.326, 0.597]
    rows = [_sweep_row(4, 26, 48, 22, 26 / 48), _sweep_row(8, 47, 48, 1, 0.99999)]
    first, prediction, bad = findings("width-sweep", rows, SPEC)
    assert first == (
        "P(global minimum) rises from 0.54 [0.40, 0.67] at m = 4 to 0.98 [0.89, 1.00] at m = 8."
    )
    assert (
        "predicts P = 1.00 at m = 8" in prediction
        and "lies above the measured interval" in prediction
    )
    assert bad == "P(bad local minimum) falls from 0.46 [0.33, 0.60] to 0.02 [0.00, 0.11]."


def test_width_sweep_counts_students_out_of_budget() -> None:
    rows = [_sweep_row(4, 1, 4, 1, 0.25), _sweep_row(5, 2, 4, 0, 0.7)]
    assert findings("width-sweep", rows, SPEC)[-1].startswith("4 of 8 students ran out of budget")


def test_multistart_rule_reads_the_prediction_against_the_interval() -> None:
    inside = [_sweep_row(4, 24, 48, 0, 0.5), _sweep_row(6, 40, 48, 0, 0.85)]
    outside = [_sweep_row(4, 24, 48, 0, 0.5), _sweep_row(6, 30, 48, 18, 0.999)]
    assert verdict.multistart_sweep(inside, SPEC).status == "supports"
    found = verdict.multistart_sweep(outside, SPEC)
    assert found.status == "contradicts" and "1.00 lies above" in found.sentence
    # 40 of 48 succeed (interval up to 0.91), 8 out of budget: the prediction lies above the
    # interval, but the students out of budget could close the gap
    budget = [_sweep_row(4, 24, 48, 0, 0.5), _sweep_row(6, 40, 48, 0, 0.999)]
    found = verdict.multistart_sweep(budget, SPEC)
    assert found.status == "inconclusive" and "0.17 of the students ran out" in found.sentence
    nothing = [_sweep_row(4, 0, 8, 0, 0.0), _sweep_row(6, 3, 8, 0, 0.0)]
    assert verdict.multistart_sweep(nothing, SPEC).status == "inconclusive"


def _cells(swt: int, swo: int, fwt: int, fwo: int) -> dict:
    return {
        "width": 6,
        "n": swt + swo + fwt + fwo,
        "success_with_ticket": swt,
        "success_without_ticket": swo,
        "failure_with_ticket": fwt,
        "failure_without_ticket": fwo,
    }


def test_ticket_contingency_rule_and_finding() -> None:
    assert verdict.multistart_tickets([_cells(3, 0, 0, 1)], {}).status == "supports"
    found = verdict.multistart_tickets([_cells(3, 1, 2, 1)], {})
    assert found.status == "contradicts" and found.sentence.startswith("3 of 7 students")
    row = {**_cells(3, 1, 2, 1), "p_full_success": 4 / 7, "ci_low": 0.2, "ci_high": 0.8}
    row |= {"p_ticket_exists": 5 / 7, "full_bad_min": 3, "full_not_converged": 0}
    head = findings("subnetworks", [row], {})[0]
    assert head.startswith(
        "A winning width-r* sub-network at init matched the full network's "
        "outcome in 4 of 7 students"
    )


def _perturbed(label: str, failures: int, n: int) -> dict:
    from escapelab.theory.multistart import wilson_interval

    lo, hi = wilson_interval(failures, n)
    return {
        "ticket_kind": "weight",
        "problem": "digits",
        "perturbation": "none" if label == "none" else "scale",
        "label": label,
        "n": n,
        "failures": failures,
        "failure_rate": failures / n,
        "ci_low": lo,
        "ci_high": hi,
    }


def test_perturbation_rule() -> None:
    rows = [_perturbed("none", 0, 20), _perturbed("scale 4", 12, 20)]
    assert verdict.perturbed_tickets_fail(rows, {}).status == "supports"
    same = [_perturbed("none", 2, 20), _perturbed("scale 4", 2, 20)]
    assert verdict.perturbed_tickets_fail(same, {}).status == "contradicts"
    noisy = [_perturbed("none", 0, 3), _perturbed("scale 4", 1, 3)]
    assert verdict.perturbed_tickets_fail(noisy, {}).status == "inconclusive"


def test_escape_rule() -> None:
    row = {"runs": 4, "saddle_measured": 0.75, "escape_rate": 0.5}
    found = verdict.escape_dimensions([row], {})
    assert found.status == "supports" and found.sentence == (
        "3 of 4 embedded bad minima are saddles, 2 of 4 runs escaped"
    )
    stuck = {"runs": 4, "saddle_measured": 0.0, "escape_rate": 0.0}
    assert verdict.escape_dimensions([stuck], {}).status == "contradicts"
    assert verdict.escape_dimensions([{"runs": 0}], {}).status == "inconclusive"


def _lottery(level: int, role: str, acc: float, density: float) -> dict:
    return {
        "dataset": "digits",
        "prune_level": level,
        "role": role,
        "test_acc_es": acc,
        "density": density,
    }


def test_classic_ticket_rule() -> None:
    rows = [
        _lottery(0, "ticket", 0.90, 1.0),
        _lottery(1, "ticket", 0.895, 0.8),
        _lottery(1, "reinit", 0.85, 0.8),
        _lottery(2, "ticket", 0.80, 0.64),
        _lottery(2, "reinit", 0.82, 0.64),
    ]
    found = verdict.classic_tickets(rows, {})
    assert (
        found.status == "supports" and "with 80 % of the weights reaches 89.5 %" in found.sentence
    )
    worse = [_lottery(0, "ticket", 0.90, 1.0), _lottery(1, "ticket", 0.70, 0.8)]
    assert verdict.classic_tickets(worse, {}).status == "contradicts"


def test_claims_without_runs_name_the_command_that_produces_evidence() -> None:
    verdicts = verdict.weigh([])
    assert [v.status for v in verdicts] == ["no run yet"] * len(verdict.CLAIMS)
    assert all(v.claim.command.startswith("escapelab ") for v in verdicts)
    assert share(0.5, 0.1, 0.9) == "0.50 [0.10, 0.90]"


# --- the site of a store holding every experiment --------------------------------------------


def _summary(store: Path, spec_hash: str) -> list[dict]:
    db = Store(store)
    row = db.find(spec_hash)
    exp = get_experiment(row.name)
    return exp.summarize(build(exp.spec_type, row.spec), db.records(spec_hash))


def test_site_has_an_index_a_verdict_and_a_page_per_run(tiny_report_store, tiny_report_site):
    runs = Store(tiny_report_store).experiments()
    assert len(runs) == 7
    index = (tiny_report_site / "index.html").read_text()
    for run in runs:
        page = tiny_report_site / "runs" / run.hash / "index.html"
        assert f'href="runs/{run.hash}/index.html"' in index
        text = page.read_text()
        for section in ("Question", "Method", "Findings", "Tables", "Provenance", "Spec"):
            assert f"<h2>{section}</h2>" in text
        assert json.loads((page.parent / "spec.json").read_text()) == run.spec
        assert "data:image" not in text  # figures are files beside the page, not inlined
    verdict_page = (tiny_report_site / "verdict.html").read_text()
    assert verdict_page.count('class="claim"') == len(verdict.CLAIMS)
    assert (tiny_report_site / "theory" / "symmetry_counts.png").stat().st_size > 10_000
    assert "Counting only constructions measured to stay critical" in verdict_page
    assert "http://" not in index and "https://" not in verdict_page  # nothing from the web


def test_every_html_cell_matches_the_summary_under_its_own_header(
    tiny_report_store, tiny_report_site
):
    for run in Store(tiny_report_store).experiments():
        parser = TableCells()
        parser.feed((tiny_report_site / "runs" / run.hash / "index.html").read_text())
        summary = _summary(tiny_report_store, run.hash)
        seen = set()
        for header, rows in parser.tables:
            for index, cells in rows:
                assert [k for k, _ in cells] == header
                expected = [format_cell(k, summary[index].get(k)) for k in header]
                assert [t for _, t in cells] == expected, (run.name, index)
                assert set(summary[index]) <= set(header)
                seen.add(index)
        assert seen == set(range(len(summary))), run.name


def test_run_pages_record_provenance(tiny_report_store, tiny_report_site):
    run = Store(tiny_report_store).experiments()[0]
    text = (tiny_report_site / "runs" / run.hash / "index.html").read_text()
    assert "No machine, commit or device was recorded" not in text
    assert "CPUs)" in text and "cpu" in text


def test_report_and_list_commands(tiny_report_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "site"
    result = runner.invoke(main, ["report", "--store", str(tiny_report_store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / "verdict.html").exists()
    listing = runner.invoke(main, ["list", "--store", str(tiny_report_store)])
    assert listing.exit_code == 0
    assert "| status |" in listing.output and listing.output.count("| complete |") == 7


def test_report_of_a_missing_store_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", "--store", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: no store at {tmp_path / 'nope'} (run an experiment first)"
    ]


# --- landscape views around a stored bad minimum ---------------------------------------------


def _census(store: Path):
    db = Store(store)
    (row,) = [e for e in db.experiments() if e.name == "minima-census"]
    exp = get_experiment(row.name)
    return row, build(exp.spec_type, row.spec), db.records(row.hash)


def test_landscape_views_split_a_bad_minimum_into_a_saddle(tiny_report_store):
    from escapelab.report.landscape_views import landscape_views

    _, spec, records = _census(tiny_report_store)
    views = landscape_views(spec, records)
    assert views is not None and views.source["kind"] == "local_min"
    spectra = list(views.spectra.values())
    bad, split = spectra[0], spectra[-1]
    assert len(split) == len(bad) + spec.teacher.d + 1  # one unit: d inputs and one output
    assert float(bad[0]) >= -spec.train.tol_eig * float(bad[-1])  # a minimum
    lam = float(split[0])
    assert lam < 0  # an escape dimension
    # along the eigenvector the loss is L0 + lam a^2 / 2 + O(a^3): the split keeps the loss
    # and the zero gradient, so the centred second difference gives the eigenvalue back
    s = views.escape_slice
    assert s.center_loss == pytest.approx(views.source["loss"], rel=1e-9, abs=1e-14)
    i = int((s.alpha.abs()).argmin())
    h = float(s.alpha[i + 1] - s.alpha[i])
    second = float(s.loss[i + 1] + s.loss[i - 1] - 2 * s.loss[i]) / h**2
    assert second == pytest.approx(lam, rel=0.05)


def test_landscape_command(tiny_report_store, tmp_path):
    row, _, _ = _census(tiny_report_store)
    runner = CliRunner()
    args = ["landscape", row.hash[:8], "--store", str(tiny_report_store), "--out", str(tmp_path)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "landscape_spectra.png").stat().st_size > 10_000
    assert (tmp_path / "landscape_escape_slice.png").stat().st_size > 10_000
    wrong = runner.invoke(main, [*args, "--member", "99"])
    assert wrong.exit_code == 2
    assert wrong.output.strip() == "error: --member: member 99 is not a stored bad local minimum"
