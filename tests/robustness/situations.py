"""Hostile situations that are not a file of the corpus: an option's value, the catalog's state, two
runs at once, an interrupt, a folder shared by two catalogs ... Each names the test that holds ccdcal to
what it does; ``docs/hostile-inputs.md`` lists them after the corpus's files (:func:`markdown`), and
``tests/robustness/test_corpus.py`` checks that each named test exists."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Situation:
    """One hostile situation.

    Attributes
    ----------
    name : str
        Short name (the table's first column).
    what : str
        The situation, in words.
    outcome : str
        What ccdcal does (the message, the exit status).
    test : str
        The test that checks it: ``tests/path/test_file.py::test_name``.
    """

    name: str
    what: str
    outcome: str
    test: str


SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "two-process-runs",
        "two `ccdcal process` on one SQLite catalog at once",
        "each light calibrated once; the other run's lights reported busy; both exit 0",
        "tests/robustness/test_concurrency.py::test_two_processes_on_one_sqlite_catalog",
    ),
    Situation(
        "not-a-catalog",
        "`--db` naming a database of another program",
        "one line naming it, exit 2; nothing written",
        "tests/cli/test_base.py::test_not_a_catalog_is_exit_2_without_traceback",
    ),
    Situation(
        "option-out-of-range",
        "`process --flat-min 1e30`, and every numeric option of every command out of its range (NaN, "
        "infinities, negative, huge)",
        "one line naming the option and its range (`--flat-min 1e+30 is out of range: use 0 < x < 1`), "
        "exit 2; no run, no file",
        "tests/test_limits.py::test_every_numeric_option_is_checked_with_one_line",
    ),
    Situation(
        "api-option-out-of-range",
        "the same values given to the Python API's option objects",
        "`UsageError` with the same message, as the object is made",
        "tests/test_limits.py::test_the_python_api_refuses_values_out_of_range",
    ),
    Situation(
        "config-number-out-of-range",
        "`flat_min = 1e30`, `sigma = 1000`, `jobs = 100000` ... in `ccdcal run`'s config.ini",
        "one line naming the file, the line, the range and the fix, exit 2; nothing written",
        "tests/cli/test_config.py::test_config_errors_name_the_file_the_line_and_the_fix",
    ),
    Situation(
        "pinned-dark-other-bias-mode",
        "`--dark …_withbias.fits` without `--no-bias` (bias subtracted twice), or `--no-bias --dark` of a "
        "bias-subtracted dark (bias never subtracted)",
        "usage error naming the file and the option to use, exit 2, before anything is written",
        "tests/lights/test_pipeline.py::test_a_pinned_dark_of_the_other_bias_mode_is_refused",
    ),
    Situation(
        "pinned-master-other-overscan",
        "a pinned master built with another `--overscan` (overscan or trim) than the reduction's",
        "usage error naming the file and the `--overscan` to pass, exit 2, before anything is written",
        "tests/lights/test_optional.py::test_a_pinned_master_prepared_otherwise_is_refused",
    ),
    Situation(
        "pinned-master-other-camera",
        "a pinned master of another camera key (gain, binning ...) than a light",
        "that light not calibrated, the reason naming the key; exit 1",
        "tests/lights/test_pipeline.py::test_a_pinned_master_of_another_camera_leaves_the_light_uncalibrated",
    ),
    Situation(
        "egain-nan",
        "`EGAIN = 'nan'` beside N.I.N.A.'s `GAIN = 120` (its gain setting), with `--uncertainty`",
        "light not calibrated: the reason names EGAIN and `--gain`; GAIN is never read instead; exit 1",
        "tests/lights/test_optional.py::test_an_egain_of_nan_is_a_reason_not_the_gain_setting",
    ),
    Situation(
        "gain-card-unusable",
        "an e-/ADU card that is text, NaN, 0, negative, infinite or empty",
        "a reason naming the card and `--gain`; the next keyword is never read",
        "tests/kernels/test_uncertainty.py::test_an_unusable_gain_card_is_a_reason_never_the_next_keyword",
    ),
    Situation(
        "readnoise-card-unusable",
        "a read-noise card that is text, NaN, negative or empty",
        "a reason naming the card and `--readnoise`; the next keyword is never read",
        "tests/kernels/test_uncertainty.py::test_an_unusable_read_noise_card_is_a_reason",
    ),
    Situation(
        "gain-setting-beside-rdnoise",
        "`GAIN = 120` beside RDNOISE in a file of N.I.N.A., SharpCap, KStars, ASIAIR, FireCapture",
        "GAIN is not read as e-/ADU (the IRAF pair holds only for other programs): the gain is missing",
        "tests/kernels/test_uncertainty.py::test_a_capture_programs_gain_setting_is_never_read_as_e_per_adu",
    ),
    Situation(
        "raw-rewritten-then-ingested",
        "a calibrated light rewritten with its size and mtime kept, then `process`, `ingest`, `process`",
        "failed with the reason (no output kept, the old one stays current), frame marked changed; refused "
        "until ingested; then calibrated from its new bytes, their sha256 in the row and HISTORY",
        "tests/lights/test_pipeline.py::test_a_light_rewritten_with_size_and_mtime_kept_is_found_and_planned_again",
    ),
    Situation(
        "raw-rewritten-each-read-path",
        "the same on each read path: 16-bit fast path, astropy path, tile-compressed, optional steps",
        "the hash of the bytes read comes back; the light fails and its output is removed",
        "tests/lights/test_worker.py::test_a_raw_file_rewritten_with_size_and_mtime_kept_is_not_calibrated",
    ),
)


def markdown() -> list[str]:
    """The lines of the situations' table."""
    lines = [
        "",
        "## Situations",
        "",
        f"Hostile situations that are not files: {len(SITUATIONS)} cases, each held by the test named.",
        "",
        "| case | situation | what ccdcal does | test |",
        "|---|---|---|---|",
    ]
    for s in SITUATIONS:
        cells = [f"`{s.name}`", s.what, s.outcome, f"`{s.test}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines
