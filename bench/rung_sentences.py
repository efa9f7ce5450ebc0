"""How much the speech rung's verdict rests on the number of sentences it decodes, from finished studies.

No training. A study's speech rung decodes ``SpeechRung.decode_sentences`` validation sentences at its
end (shortest text first), and each trial's record keeps every sentence's decode ratio in that order
(``DecodeFacts.sentence_ratios``). So the verdict a rung of fewer sentences would have given is the
median of the first ``--first`` of them, read from the same decode of the same model: the two counts
side by side on one run, with no training noise between them.

"speaks" and "silent" here are the verdict's ratio condition alone (the median at or under
``GuardConfig.speak_max_decode_ratio``): the other conditions (stop rate, length, attention walk) are
recorded as medians over all the sentences only. A sentence that did not stop has a ratio >= 1, so the
ratio condition carries the stops. The outcome word beside each trial is the rung's own, over all.

    python bench/rung_sentences.py RUNS_DIR [RUNS_DIR ...] [--study stability-quick] [--first 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.binding import guard_config  # noqa: E402
from studies.execution.storage import default_storage_url  # noqa: E402
from studies.record import TrialRecord, load_records  # noqa: E402
from studies.registry import get_study  # noqa: E402


def median_of(ratios: tuple[float | None, ...]) -> float | None:
    measured = [r for r in ratios if r is not None]
    return statistics.median(measured) if measured else None


def row(r: TrialRecord, first: int, bar: float) -> str:
    assert r.decode is not None
    ratios = r.decode.sentence_ratios
    every, head = median_of(ratios), median_of(ratios[:first])

    def word(m: float | None) -> str:
        return "-" if m is None else f"{m:.2f} {'speaks' if m <= bar else 'silent'}"

    under = sum(1 for x in ratios if x is not None and x <= bar)
    shown = " ".join("-" if x is None else f"{x:.2f}" for x in ratios)
    return (
        f"trial {r.number:>3} {r.outcome.value:<10} all {len(ratios)}: {word(every):<14} "
        f"first {first}: {word(head):<14} at or under {bar:g}: {under} of {len(ratios)}  [{shown}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dirs", nargs="+", type=Path, help="--runs-dir of each finished study")
    ap.add_argument("--study", default="stability-quick")
    ap.add_argument("--first", type=int, default=3, help="the fewer sentences to compare with (default 3)")
    args = ap.parse_args()
    bar = guard_config(get_study(args.study)).speak_max_decode_ratio
    for runs in args.runs_dirs:
        url = default_storage_url(args.study, runs)
        study = optuna.load_study(study_name=args.study, storage=url)
        print(f"{runs}:")
        at_rung = [r for r in load_records(study) if r.rung == 1 and r.decode is not None]
        for r in at_rung:
            print("  " + row(r, args.first, bar))
        if not at_rung:
            print("  no trial finished the speech rung with a decode")


if __name__ == "__main__":
    main()
