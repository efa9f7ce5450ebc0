"""The names a trial's facts are stored under in Optuna, defined once.

User attributes are strings there so any Optuna tool can read a study; ``studies.record.TrialRecord``
is the one place that converts between them and typed fields. Studies written by earlier versions
stored the same keys, so they load unchanged.
"""

from __future__ import annotations

from trainer.outcome import Outcome

# -- user attribute keys ---------------------------------------------------------------------------
PRESET = "preset"  # the preset a seeded trial judges (kept by its retries)
MAX_STEPS = "max_steps"
LAST_STEP = "last_step"  # the step of the latest eval, written at every eval
STOP_MARGIN = "stop_end_margin"  # teacher-forced stop margin at the latest eval (read by the pruner)
STEPS_RUN = "steps_run"
SEED_LOSS_BAND = "seed_loss_in_1_10"
SEED_GRAD_BELOW_ONE = "seed_grad_norm_below_1"
GRAD_NORM_MEDIAN = "grad_norm_median"
GRAD_NORM_P95 = "grad_norm_p95"
NONFINITE_EVENTS = "nonfinite_events"  # real NaN/Inf losses or gradients (not GradScaler skips)
SCALER_SKIPS = "scaler_skips"  # fp16: finite losses whose scaled gradients overflowed (calibration)
VERDICT = "verdict"  # the judge's word (trainer.judge.Outcome), as the run ended
DIVERGED = "diverged"  # True on a trial a divergence guard stopped
# Studies written before the verdict was the judge's own word stored a diverged trial's guard kind
# under VERDICT and an unjudged trial as "pruned" with JUDGED False: read, never written.
JUDGED = "judged"
DIVERGENCE_STEP = "divergence_step"
DIVERGENCE_DETAIL = "divergence_detail"
DIAGNOSIS = "diagnosis"  # why it diverged: trainer.diagnosis.Diagnosis.to_attr()
DIAGONALITY = "diagonality"
OVER_PRIOR = "over_prior"  # diagonality over the KL prior's own: what "aligned" is judged on
SHARPNESS = "sharpness"
DECODE_STOP_RATE = "decode_stop_rate"
DECODE_LENGTH_RATIO = "decode_length_ratio"
DECODE_DTW = "decode_dtw"
DECODE_RATIO = "decode_ratio"  # median decode ratio: 0 = the words rendered at another rate, 1 = a constant
DECODE_WALK = "decode_walk"  # median share of text positions the decode's attention visits in order
DECODE_SENTENCE_RATIOS = "decode_sentence_ratios"  # each decoded sentence's ratio, in decode order
SPEAKS = "speaks"
HOST, PID = "host", "pid"  # where the trial runs: how a dead local worker's trial is found
FAILED_BY = "failed_by"  # why a trial ended FAIL: interrupt / worker died / surplus / duplicate / exc name
OUT_OF_MEMORY = "out of memory"  # the FAILED_BY of a trial the device ran out of memory in (not retried)
OOM_STEP, OOM_DETAIL = "oom_step", "oom_detail"  # where, and the error's line (it names the size)
RETRY_OF = "retry_of"  # a re-queued trial: the number of the trial it repeats
ATTEMPT = "attempt"  # how many times these params have been started (1 for a fresh trial)
RUNG = "rung"  # the rung the trial ended at: 0 the screen, 1 the long (speech) rung
PROMOTED = "promoted"  # at the screen's end: did it go on to the long rung?
SCREEN_STEP, SCREEN_VALUE, SCREEN_VERDICT = "screen_step", "screen_val_mel", "screen_verdict"
SCREEN_RATIO, SCREEN_SPEAKS = "screen_decode_ratio", "screen_speaks"
# A screen promoted late runs its long rung in a continuation trial (studies/promotion.py):
CONTINUES = "continues"  # the number of the trial whose screen it resumes (its one identity)
SLOT = "promotion_slot"  # which of the rung's promotions it holds (claims race on it)
RESUMED_FROM = "resumed_from"  # the step its training resumed at: the screen's, never trained twice
# A trainer this project did not write (trainer/reporter.py, studies/execution/command_trial.py):
GUARDS_OFF = "guards_off"  # guards and checks that were off because the trainer lacks their signal
COMMAND = "command"  # the command line the trial ran, filled with its params
EXIT_CODE = "exit_code"  # the command's exit status (negative: the signal that ended it)
STOPPED_WITH, STOP_S = "stopped_with", "stop_s"  # how the search stopped it (SIGTERM / SIGKILL), how fast
TRAINER_FAILED = "trainer failed"  # the FAILED_BY of a run that crashed without diverging (not retried)
FAIL_DETAIL = "fail_detail"  # why, in one line (the exit code, a broken report, no metric)
OUTPUT_TAIL = "output_tail"  # its last lines of output
TRAINER_TOKEN = "trainer_token"  # in the trainer's environment: how its processes are found to reap

# -- study (not trial) user attribute keys --------------------------------------------------------
DATA_FINGERPRINT = "data_fingerprint"  # the data set the study's trials ran on
COMMAND_CWD = "command_cwd"  # where a command-line study's search ran: the export resolves its paths there

# -- constraint keys (> 0 infeasible); TPE ranks every infeasible trial below every feasible one ----
# Each is named after what it rules out (the unaligned one after the outcome word it measures).
C_DIVERGED, C_NO_STOP = "diverged", "decode_no_stop"
C_UNALIGNED = Outcome.UNALIGNED.value
