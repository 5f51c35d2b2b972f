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


#: The test of the values the command line cannot use (parametrized, one case each).
_ERRORS = "tests/cli/test_errors.py::test_a_value_ccdcal_cannot_use_is_one_line_and_exit_2"

SITUATIONS: tuple[Situation, ...] = (
    Situation(
        "two-process-runs",
        "two `ccdcal process` on one SQLite catalog at once",
        "each light calibrated once; the other run's lights reported busy; both exit 0",
        "tests/robustness/test_concurrency.py::test_two_processes_on_one_sqlite_catalog",
    ),
    Situation(
        "two-ingests",
        "two `ccdcal ingest` of one tree at once, on SQLite and on PostgreSQL",
        "both exit 0; each file catalogued once, its cards once (each batch reads the rows again under the "
        "writers' lock)",
        "tests/robustness/test_concurrency.py::test_two_ingests_at_once_on_sqlite",
    ),
    Situation(
        "stale-ingest-snapshot",
        "files catalogued by another ingest after this one read what the catalog knew",
        "counted unchanged, none inserted twice, exit 0",
        "tests/robustness/test_concurrency.py::test_an_ingest_whose_snapshot_is_stale_catalogues_each_file_once",
    ),
    Situation(
        "ctrl-c-during-work",
        "Ctrl-C to ccdcal alone or to its process group while masters are built or lights calibrated, with "
        "and without worker processes",
        "`Interrupted: ...`, exit 130 within moments; the run `interrupted`, no claim held, every recorded "
        "file complete; the same command resumes and ends as an uninterrupted run",
        "tests/robustness/test_interrupt.py::test_ctrl_c_stops_cleanly_and_the_next_run_resumes",
    ),
    Situation(
        "sigterm",
        "SIGTERM (`kill`, `timeout`, a service manager) to ccdcal alone or to its process group",
        "`Terminated: what was finished is kept; run the same command again to resume.`, exit 143; "
        "cleaned up as after Ctrl-C",
        "tests/runtime/test_interrupts.py::test_a_signal_stops_the_command_with_its_exception",
    ),
    Situation(
        "interrupt-in-database-code",
        "a Ctrl-C landing inside SQLAlchemy or the driver (a connection being checked out, a transaction "
        "begun), which left SQLite's write lock held by the process itself: a 4-minute hang, exit 1",
        "delivered again once in ccdcal's code; nothing left locked",
        "tests/runtime/test_interrupts.py::test_an_interrupt_in_database_code_is_raised_once_out_of_it",
    ),
    Situation(
        "interrupt-while-waiting-for-the-lock",
        "Ctrl-C or SIGTERM while another program holds the SQLite catalog's write lock",
        "stops within a tenth of a second (the lock waited for in 50 ms attempts); the cleanup waits 2 s at "
        "most for a lock, then leaves the run to the next one's recovery",
        "tests/runtime/test_interrupts.py::test_waiting_for_the_write_lock_stops_on_sigterm_within_moments",
    ),
    Situation(
        "interrupt-at-start-up",
        "Ctrl-C in the first milliseconds, while the command line loads; one Python drops in a weakref "
        'callback of the import system ("Exception ignored")',
        "`Interrupted: ...`, exit 130 (before: exit -2 after the line, CPython's mark of an interrupt that "
        "escaped `exec`'d code; or the command went on); before any of ccdcal's code runs (Python's `site`, "
        "`runpy`), Python's own exit, nothing written",
        "tests/runtime/test_interrupts.py::test_a_ctrl_c_while_the_command_line_loads_is_one_line_and_130",
    ),
    Situation(
        "interrupt-while-a-worker-starts",
        "Ctrl-C while a process pool starts a worker (ingest's fork server, process's forked workers)",
        "the submit ends, then the interrupt: no unregistered worker left to print `FileNotFoundError` "
        "(removed semaphores) after the last line, or to wait for ever",
        "tests/runtime/test_pools.py::test_a_ctrl_c_during_a_submit_is_raised_once_it_is_done",
    ),
    Situation(
        "sigterm-kills-the-workers",
        "SIGTERM to the process group kills the workers as the coordinator cancels their work",
        "the pool's own thread cancels (Python 3.11 printed `InvalidStateError` from that thread and could "
        "leave futures unsettled: a hang)",
        "tests/runtime/test_pools.py::test_cancelling_while_the_workers_are_killed_settles_every_future_quietly",
    ),
    Situation(
        "interrupt-as-the-run-row-commits",
        "Ctrl-C arriving while a command's new `runs` row commits (held back, raised right after)",
        "the run ends `interrupted` (before: left `running`)",
        "tests/catalog/test_db.py::test_an_interrupt_held_back_by_the_run_rows_commit_marks_the_run_interrupted",
    ),
    Situation(
        "random-interrupts",
        "SIGINT and SIGTERM at random moments of ingest, masters, process and run, to ccdcal or its "
        "process group, on SQLite and PostgreSQL",
        "each ends within seconds with its line (or finishes first); no run left running, no claim held; the "
        "next run ends as an uninterrupted one (28 tries in `make test`, hundreds in `make stress`)",
        "tests/robustness/test_random_interrupts.py::test_a_random_interrupt_stops_cleanly_and_the_next_run_resumes",
    ),
    Situation(
        "not-a-catalog",
        "`--db` naming a database of another program",
        "one line naming it, exit 2; nothing written",
        "tests/cli/test_base.py::test_not_a_catalog_is_exit_2_without_traceback",
    ),
    Situation(
        "db-other-database",
        "`--db foo://bar`, `--db mysql://...`, a driver that is not installed (`postgresql+pg8000://`), an "
        "empty `--db`, a folder",
        "one line naming the URL and what a catalog can be, exit 2",
        _ERRORS,
    ),
    Situation(
        "id-beyond-any-row",
        "`provenance master:99999999999999999999` (and impact, mark-bad, mark-good), "
        "`report --run 99999999999999999999`",
        "`no master with id ... in the catalog`, `no such run`, exit 2",
        _ERRORS,
    ),
    Situation(
        "workers-beyond-any-machine",
        "`--jobs 99999999999999999999` (process, ingest, audit), `--scheduler local:99999999999999999999`, "
        "`jobs = ...` in a config",
        "`--jobs must be at most 1024`, exit 2 (nothing started)",
        _ERRORS,
    ),
    Situation(
        "output-is-a-folder",
        "`preview FILE -o DIR`, `report -o DIR`",
        "`-o DIR is a folder; give the file ...`, exit 2",
        _ERRORS,
    ),
    Situation(
        "numbers-not-finite",
        "`--mem-limit inf` (nan, 1e400), `--temp-tolerance nan`, `--temp-tolerance inf`, "
        "`--exptime-tolerance inf`, `--since` outside the years 1 to 9999 in UTC",
        "one line naming the option, exit 2 (a JSON record holds finite numbers only)",
        _ERRORS,
    ),
    Situation(
        "preview-without-pixels",
        "`preview` of an image of 0x0 or 0x5 pixels, of a folder",
        "`HDU 0 holds an empty image (0x5 pixels): nothing to show`, exit 2",
        _ERRORS,
    ),
    Situation(
        "file-in-unreadable-folder",
        "`ingest`, `preview`, `provenance --from-header` of a file whose folder cannot be searched",
        "`cannot be looked at (Permission denied)`, exit 2",
        "tests/cli/test_errors.py::test_a_file_inside_an_unreadable_folder_is_one_line",
    ),
    Situation(
        "folder-unreadable-after-ingest",
        "a catalogued folder made unreadable (mode 000, or r--) before the next ingest",
        "listed under `Not read` with the reason, exit 1, run `partial`; its frames neither missing nor "
        "changed",
        "tests/ingestion/test_core.py::test_a_folder_that_cannot_be_read_is_listed_not_read_and_its_frames_kept",
    ),
    Situation(
        "output-disk-full",
        "`preview -o` on a full disk",
        "`cannot write ...: No space left on device`, exit 2, nothing left beside it",
        "tests/cli/test_errors.py::test_an_output_that_cannot_be_written_is_one_line",
    ),
    Situation(
        "catalog-disk-full",
        "the SQLite catalog's disk full during ingest, masters or process",
        "`the catalog ... cannot be written: its disk is full`, exit 2; the next run resumes",
        "tests/robustness/test_catalog_failures.py::test_the_catalog_disk_full_is_one_line_and_the_next_run_resumes",
    ),
    Situation(
        "catalog-connection-lost",
        "the PostgreSQL server ends the connection (`pg_terminate_backend`) while a process run writes",
        "`lost the connection to the catalog ...`, exit 2, run `failed`, claims released; the next run "
        "resumes",
        "tests/robustness/test_catalog_failures.py::test_a_lost_postgresql_connection_is_one_line_and_the_next_run_resumes",
    ),
    Situation(
        "os-error-anywhere",
        "an operating-system error no part of ccdcal explains (an I/O error)",
        "one line: the file, the error, what to do; exit 2",
        "tests/cli/test_errors.py::test_an_operating_system_error_anywhere_is_one_line",
    ),
    Situation(
        "a-bug",
        "an exception nobody foresaw",
        "`internal error at FILE:LINE: ... a bug in ccdcal`, exit 2; `-v` logs the traceback",
        "tests/cli/test_errors.py::test_a_bug_is_one_line_naming_it_and_v_shows_the_traceback",
    ),
    Situation(
        "level-warning-in-catalog",
        "a catalog holding a light with the level warning (a list in `calibrations.steps`), every optional "
        "step and a failed light",
        "report, status, provenance, impact, audit and `masters --list` read it (SQLite and PostgreSQL)",
        "tests/robustness/test_json_records.py::test_every_writer_writes_its_shapes_and_every_command_reads_them",
    ),
    Situation(
        "json-columns-any-json",
        "`calibrations.steps`, `masters.parameters`, `runs.arguments`, `runs.summary` holding any JSON (an "
        "older ccdcal's, edited by hand)",
        "every reader reads it, leaving out what it does not recognise",
        "tests/robustness/test_json_records.py::test_every_reader_of_calibration_steps_reads_any_json",
    ),
    Situation(
        "recorded-options-unusable",
        "the last process run's `runs.arguments` of the wrong types or refused values",
        "`status` and the report plan with the default options (`options_of_run` null)",
        "tests/test_status.py::test_status_plans_with_the_defaults_when_the_last_runs_options_cannot_be_used",
    ),
    Situation(
        "worker-process-killed",
        "a worker process of `process --jobs 2` killed mid-run (as by the out-of-memory killer)",
        "`a worker process died (...)`, exit 2; the next run calibrates what is left",
        "tests/cli/test_errors.py::test_a_worker_process_that_dies_is_one_line_and_the_next_run_resumes",
    ),
    Situation(
        "folder-not-utf8",
        "`--output-dir` or `--masters-dir` whose path is not valid UTF-8; `provenance` given such a path",
        "one line naming the folder (its bytes escaped) and the fix, exit 2; nothing written",
        "tests/cli/test_calibration.py::test_a_folder_whose_path_is_not_utf8_is_exit_2",
    ),
    Situation(
        "root-not-utf8",
        "`ingest` of a folder whose name is not valid UTF-8, then of its parent; the file renamed",
        "each file under it rejected alone with the reason, the rest catalogued, exit 1; the renamed file "
        "catalogued",
        "tests/ingestion/test_core.py::test_names_that_are_not_utf8_are_rejected_alone",
    ),
    Situation(
        "moved-to-a-name-not-utf8",
        "`audit --fix-missing` finds a moved raw frame under a name that is not valid UTF-8",
        "shown as moved (its bytes escaped), not re-pointed, with the fix; exit 1",
        "tests/trace/test_audit.py::test_a_file_moved_to_a_name_that_is_not_utf8_is_found_but_not_repointed",
    ),
    Situation(
        "ingest-the-project-folder",
        "`ingest .` in the project folder after `process`: masters and calibrated lights (one gzipped) found",
        "each skipped with a note in the summary and `--json`, none catalogued, exit 0; `process` has "
        "nothing to do (no `_cal_cal.fits`)",
        "tests/ingestion/test_core.py::test_files_ccdcal_wrote_are_skipped_with_a_note",
    ),
    Situation(
        "output-inside-the-raw-tree",
        "`process --output-dir` and `--masters-dir` inside the raw tree, then `ingest` of the tree",
        "the outputs skipped, nothing calibrated twice",
        "tests/ingestion/test_core.py::test_outputs_written_inside_the_raw_tree_are_not_calibrated_again",
    ),
    Situation(
        "output-catalogued-before",
        "a ccdcal output catalogued as a raw frame before ingest skipped them (its cards hold CCDCALV)",
        "planned neither as a light nor as the input of a master",
        "tests/ingestion/test_core.py::test_a_ccdcal_output_catalogued_before_is_no_longer_planned",
    ),
    Situation(
        "bytes-of-a-recorded-output",
        "a file whose sha256 is that of a master or calibrated output the catalog records",
        "skipped, naming the row (`the same bytes as calibration:N (...)`), exit 0",
        "tests/ingestion/test_core.py::test_a_file_with_the_bytes_of_a_recorded_output_is_skipped",
    ),
    Situation(
        "master-names-coincide",
        "a second camera of the same set-up, the same camera at another offset or readout mode, an "
        "instrument whose name reduces alike, a filter `H a` beside `Ha`, after the first camera's masters",
        "the first keeps the plain names; each newcomer adds its instrument's token or a hash of its "
        "keys, never `_vN`; a newer version of a group keeps its token and adds `_v2`; the dry run names "
        "them alike",
        "tests/masters/test_names.py::test_groups_whose_names_coincide_are_told_apart_without_vn",
    ),
    Situation(
        "master-name-held-by-a-file",
        "the masters folder holds a file of a master's plain name the catalog does not know (the script's)",
        "the file is left alone; the new master takes its instrument's token",
        "tests/masters/test_names.py::test_a_name_held_by_a_file_the_catalog_does_not_know_is_not_borrowed",
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
    Situation(
        "two-catalogs-one-folder",
        "`--db test.db` beside `./ccdcal.db`: both would write into the default `masters/` and `calibrated/`",
        "the second catalog is refused the first one's folders before writing anything: one line naming the "
        "folder, the owner's id and the fix, exit 2",
        "tests/masters/test_folders.py::test_a_second_catalog_in_the_same_project_is_refused_its_folders",
    ),
    Situation(
        "folder-before-markers",
        "a masters folder of ccdcal files and no `.ccdcal-catalog` (made before the markers)",
        "adopted by the catalog whose rows name its files; refused to any other, exit 2",
        "tests/masters/test_folders.py::test_folders_made_before_the_markers_are_adopted_by_their_catalog_only",
    ),
    Situation(
        "two-claims-at-once",
        "two catalogs claiming one new folder at the same moment",
        "one marker wins; the other catalog is refused, exit 2",
        "tests/files/test_ownership.py::test_two_catalogs_claiming_at_once_one_wins",
    ),
    Situation(
        "killed-after-publishing",
        "a run killed between giving a master or output its final name and recording it",
        "the next run removes the file (its journal proves it that run's) and writes it again under the "
        "same name",
        "tests/lights/test_claims.py::test_a_run_killed_after_publishing_a_file_leaves_the_proof_the_next_run_undoes",
    ),
    Situation(
        "killed-after-replacing",
        "a run killed after renaming a new output over a recorded one, before recording it",
        "the next run puts the recorded file back, then calibrates the light again",
        "tests/lights/test_claims.py::test_a_run_killed_after_replacing_an_output_gets_the_replaced_file_back",
    ),
    Situation(
        "foreign-files-after-a-dead-run",
        "another catalog's or a person's files in the folders of a run that died: under a name it had "
        "claimed, a master no row names, another catalog's journal",
        "left alone: recovery removes only what a journal of its own catalog and dead run proves",
        "tests/lights/test_claims.py::test_recovery_removes_no_file_that_no_journal_of_its_own_proves",
    ),
    Situation(
        "catalog-deleted-or-replaced",
        "the catalog's folder deleted, or a backup restored over the catalog, during `process`",
        "found at the next commit: the lights not recorded are failed with the reason, exit 1",
        "tests/robustness/test_catalog_gone.py::test_a_catalog_gone_while_lights_are_calibrated",
    ),
    Situation(
        "read-only-catalog",
        "a catalog on read-only media (file and folder not writable)",
        "status, process --dry-run (the same plan), provenance, impact, report, masters --list and db "
        "current work; process, ingest, audit, masters and mark-bad answer one line, exit 2; nothing written",
        "tests/catalog/test_read_only.py::test_an_archive_on_read_only_media_through_the_command_line",
    ),
    Situation(
        "read-only-user",
        "a PostgreSQL user who may only read the catalog",
        "status and the dry run work (provisional masters in temporary tables); process refused, exit 2",
        "tests/catalog/test_read_only.py::test_a_user_who_may_only_read_a_postgresql_catalog",
    ),
    Situation(
        "long-host-name",
        "a host name of 250 characters, a final name of 250 bytes",
        "temporary names stay 49 characters: the file is written",
        "tests/files/test_fitsio.py::test_temporary_names_are_short_whatever_the_final_name_and_the_host",
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
