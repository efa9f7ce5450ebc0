"""Does the screen's ranking hold at the speech rung? The rung agreement of a study, for its summary,
report and export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from studies.evidence.ranks import MIN_PAIRS, spearman
from studies.evidence.rests_on import rests_on
from studies.record import TrialRecord


@dataclass(frozen=True, kw_only=True, slots=True)
class RungAgreement:
    """Does the screen's ranking hold at the long rung? Spearman between the two over the trials that
    reached both (HpBandSter's "correlation across budgets"), on val mel and on the decode ratio.
    A rho is None when it ranks nothing: fewer than MIN_PAIRS pairs, or one side all ties (every screen's
    decode ran to the length cap, ratio 1.00)."""

    screened: int  # trials that finished their screen
    aligned: int  # of those, how many screens aligned: only an aligned screen may go on
    promoted: int
    reached: int  # promoted trials that finished the long rung
    speak: int  # of those, how many speak there
    rho_val_mel: float | None
    rho_decode_ratio: float | None
    val_mel_pairs: int
    decode_ratio_pairs: int

    def line(self) -> str:
        def rho(x: float | None, pairs: int) -> str:
            if x is not None:
                return f"{x:+.2f}"
            why = (
                f"fewer than {MIN_PAIRS} pairs" if pairs < MIN_PAIRS else f"{pairs} pairs, one side all ties"
            )
            return f"not computable ({why})"

        speak = "speaks" if self.speak == 1 else "speak"
        why = self.why_too_few()
        return (
            f"speech rung: {self.promoted} of {self.screened} screened trials promoted, {self.reached} finished "
            f"the long rung, {self.speak} {speak} there; rank agreement screen -> long rung over those "
            f"{self.reached}: val mel {rho(self.rho_val_mel, self.val_mel_pairs)}, "
            f"decode ratio {rho(self.rho_decode_ratio, self.decode_ratio_pairs)}"
            + (f"; too few pairs because {why}" if why else "")
            + f" ({rests_on(self.reached, more='more promotions need more trials (--trials 20)')})"
        )

    def why_too_few(self) -> str | None:
        """Why a rho lacks pairs, the first cause that explains it; None when both have enough."""
        if min(self.val_mel_pairs, self.decode_ratio_pairs) >= MIN_PAIRS:
            return None
        if self.aligned < MIN_PAIRS:
            return (
                f"only {self.aligned} of {self.screened} screens aligned, and only an aligned screen goes on "
                "(its val mel is an average frame's, not a recipe nearer speech)"
            )
        if self.promoted < MIN_PAIRS:
            return (
                f"{self.promoted} of {self.aligned} aligned screens promoted: the study's trials opened "
                "too few slots (the top 1/eta of them, at most the rung's cap)"
            )
        if self.reached < MIN_PAIRS:
            return (
                f"{self.promoted - self.reached} of the {self.promoted} promoted runs have no long-rung value "
                "(diverged there, or still running)"
            )
        if self.val_mel_pairs >= MIN_PAIRS:
            return f"only {self.decode_ratio_pairs} of the {self.reached} have a decode ratio at both rungs"
        return None


def rung_agreement(records: Sequence[TrialRecord]) -> RungAgreement:
    screened = [r for r in records if r.screen is not None]
    aligned = sum(r.screen is not None and r.screen.verdict.aligned for r in screened)
    promoted = [r for r in screened if r.promoted]
    reached = [r for r in promoted if r.finished and r.value is not None and r.rung == 1]
    pairs = [(r.screen.val_mel, r.value) for r in reached if r.screen is not None and r.value is not None]
    ratios = [
        (r.screen.decode_ratio, r.decode.ratio)
        for r in reached
        if r.screen is not None
        and r.screen.decode_ratio is not None
        and r.decode
        and r.decode.ratio is not None
    ]
    return RungAgreement(
        screened=len(screened),
        aligned=aligned,
        promoted=len(promoted),
        reached=len(reached),
        speak=sum(r.speaks for r in reached),
        rho_val_mel=spearman([a for a, _ in pairs], [b for _, b in pairs]),
        rho_decode_ratio=spearman([a for a, _ in ratios], [b for _, b in ratios]),
        val_mel_pairs=len(pairs),
        decode_ratio_pairs=len(ratios),
    )
