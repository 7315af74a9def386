"""Markdown tables laid out like the paper's Table 1 (affine-invariant depth) and Table 2 (boundaries).

``results[method][dataset]`` is a dict keyed by the ``fiffdepth.metrics`` function names:
``abs_rel`` and ``delta1`` (fractions, shown ×100 with one decimal, as the paper reports them),
``da2k_accuracy`` (fraction, shown as %), ``boundary_f1`` and ``boundary_recall`` (three
decimals). Methods keep the order of ``results``; a missing value prints as "–". Per column the
best value is **bold** and the second best <u>underlined</u>, as in the paper; ties (after
rounding) share the mark.
"""

from __future__ import annotations

from typing import Mapping, Sequence

# Dataset keys (as in ``fiffdepth.data``) -> column titles of the paper.
DISPLAY_NAMES = {
    "nyu": "NYUv2", "kitti": "KITTI", "eth3d": "ETH3D", "scannet": "ScanNet",
    "diode": "DIODE-Full", "da2k": "DA-2K",
    "sintel": "Sintel", "spring": "Spring", "ibims": "iBims",
    "am2k": "AM", "p3m": "P3M", "dis5k": "DIS",
}
TABLE1_DATASETS = ("nyu", "kitti", "eth3d", "scannet", "diode")
TABLE2_F1_DATASETS = ("sintel", "spring", "ibims")
TABLE2_RECALL_DATASETS = ("am2k", "p3m", "dis5k")

Results = Mapping[str, Mapping[str, Mapping[str, float]]]


def _lookup(results: Results, method: str, dataset: str, key: str) -> float | None:
    value = results[method].get(dataset, {}).get(key)
    return None if value is None else float(value)


def _column(results: Results, dataset: str, key: str, title: str, higher_is_better: bool,
            scale: float, decimals: int) -> tuple[str, list[str]]:
    """Header and formatted cells of one column, best bold and second best underlined."""
    raw = [_lookup(results, m, dataset, key) for m in results]
    shown = [None if v is None else round(v * scale, decimals) for v in raw]
    ranked = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    cells = []
    for v in shown:
        if v is None:
            cells.append("–")
            continue
        text = f"{v:.{decimals}f}"
        if v == ranked[0]:
            text = f"**{text}**"
        elif len(ranked) > 1 and v == ranked[1]:
            text = f"<u>{text}</u>"
        cells.append(text)
    return f"{DISPLAY_NAMES.get(dataset, dataset)} {title}", cells


def _markdown(results: Results, columns: Sequence[tuple[str, list[str]]]) -> str:
    header = ["Method"] + [title for title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(columns)) + "|"]
    for i, method in enumerate(results):
        lines.append("| " + " | ".join([method] + [cells[i] for _, cells in columns]) + " |")
    return "\n".join(lines) + "\n"


def table1_markdown(results: Results, datasets: Sequence[str] = TABLE1_DATASETS,
                    da2k: str = "da2k") -> str:
    """Table 1: AbsRel ↓ and δ1 ↑ (×100) per dataset, plus DA-2K Acc (%) when any method has it."""
    columns = []
    for dataset in datasets:
        columns.append(_column(results, dataset, "abs_rel", "AbsRel ↓", False, 100.0, 1))
        columns.append(_column(results, dataset, "delta1", "δ1 ↑", True, 100.0, 1))
    if any(da2k in per_dataset for per_dataset in results.values()):
        columns.append(_column(results, da2k, "da2k_accuracy", "Acc (%) ↑", True, 100.0, 1))
    return _markdown(results, columns)


def table2_markdown(results: Results, f1_datasets: Sequence[str] = TABLE2_F1_DATASETS,
                    recall_datasets: Sequence[str] = TABLE2_RECALL_DATASETS) -> str:
    """Table 2: boundary F1 ↑ for depth-GT datasets, boundary recall R ↑ for mask-GT datasets."""
    columns = [_column(results, d, "boundary_f1", "F1 ↑", True, 1.0, 3) for d in f1_datasets]
    columns += [_column(results, d, "boundary_recall", "R ↑", True, 1.0, 3) for d in recall_datasets]
    return _markdown(results, columns)
