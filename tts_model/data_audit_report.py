"""`search.py --check-data`: the data audit (``tts_model.data_audit``) as a person reads it: a line per
problem item, errors first, a table of counts per check and folder, and the exit code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common.cli import EXIT_USAGE
from tts_model.data_audit import Check, DataAudit, Severity, audit
from tts_model.dataset import DataConfig


def print_audit(result: DataAudit, console: Console) -> None:
    """One line per problem item, errors first, then a table of counts per check and folder."""
    order = list(Severity)
    for finding in sorted(result.findings, key=lambda f: order.index(f.check.severity)):
        console.print(finding.line(), markup=False, highlight=False, soft_wrap=True)
    table = Table(title=f"data audit (reduction factor r={result.reduction_factor})")
    table.add_column("check")
    table.add_column("kind")
    for folder in result.folders:
        table.add_column(f"{folder.folder.name} ({folder.clips:,} lines)", justify="right")
    for check in Check:
        counts = [sum(f.check is check for f in folder.findings) for folder in result.folders]
        style = (
            {Severity.ERROR: "red", Severity.WARNING: "yellow"}.get(check.severity, "") if any(counts) else ""
        )
        kind = "breaks training" if check.severity is Severity.ERROR else check.severity.value
        table.add_row(check.label, kind, *(str(n) for n in counts), style=style)
    console.print(table)
    errors = sum(f.check.severity is Severity.ERROR for f in result.findings)
    warnings = sum(f.check.severity is Severity.WARNING for f in result.findings)
    verdict = "breaks training: fix or drop the error lines" if errors else "clean for training"
    console.print(
        f"{errors} errors, {warnings} warnings in {sum(f.clips for f in result.folders):,} lines "
        f"({result.seconds:.2f} s): {verdict}",
        markup=False,
        highlight=False,
    )


def check_data(folders: Sequence[Path], cfg: DataConfig, reduction_factor: int, console: Console) -> int:
    """`search.py --check-data`: print the audit; exit 2 when training would break, else 0."""
    result = audit(folders, cfg, reduction_factor)
    print_audit(result, console)
    return EXIT_USAGE if result.breaks_training else 0
