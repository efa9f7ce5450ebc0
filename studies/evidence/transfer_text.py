"""The transfer check's answer in words, for the terminal and the report alike."""

from __future__ import annotations

from studies.evidence.transfer import TransferCheck


def _signed(rho: float | None) -> str:
    return "not computable" if rho is None else f"{rho:+.2f}"


def saved_line(check: TransferCheck) -> str:
    """Where each long run came from, and the steps that saved."""
    each = ", ".join(f"trial {r.number} {r.long.where}" for r in check.runs)
    total = check.steps_saved + check.steps_trained
    return (
        f"long runs: {each}; {check.steps_saved:,} of their {total:,} steps came from the study "
        f"({check.steps_trained:,} trained by this check)"
    )


def lines(check: TransferCheck) -> list[str]:
    """The answer in three sentences, and where the long runs came from, for the terminal and the
    report alike."""
    return [
        f"Spearman rank correlation, short ranking vs long-run decode ratio: {_signed(check.rho_all)} over "
        f"{len(check.runs)} trials of {check.horizon}, diverged long runs ranked last (positive: the short "
        f"ranking predicts the long one); over the {check.n_finished} that did not diverge long: "
        f"{_signed(check.rho_finished)}; short ranking vs long-run val mel (teacher forced) over those: "
        f"{_signed(check.rho_val_mel)}",
        f"diverged short and long: {check.diverged_short_and_long} of {check.diverged_short} "
        f"that diverged short",
        f"stable short trials that speak long: {check.stable_short_speak_long} of {check.stable_short}",
        saved_line(check),
    ]
