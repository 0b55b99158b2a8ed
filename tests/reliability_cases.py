"""What the reliability tests try, how many times, and what they check: one list, two uses.

The ``test_reliability_*.py`` files take their counts from the constants below, and
``docs/reliability.md`` holds the table :func:`render` makes from :data:`ROWS`;
``test_reliability_table.py`` checks that the page's table is exactly that, and that every test
it names exists. Regenerate the page's table with ``python tests/reliability_cases.py``.

``SDNET_RELIABILITY_FULL=1`` selects the long counts (the "full" column).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass
from typing import Any

FULL = os.environ.get("SDNET_RELIABILITY_FULL") == "1"


def count(ci: int, full: int) -> int:
    """The count this session runs: ``full`` with ``SDNET_RELIABILITY_FULL=1``, else ``ci``."""
    return full if FULL else ci


# crash safety: SIGKILL of a real training process
KILLS_RANDOM = (12, 60)  # at a seeded random moment after sdnet is imported
WRITE_PHASES = ("partial", "before-fsync", "before-rename", "after-rename")
KILLS_PER_PHASE = (2, 10)  # inside a checkpoint write, at each phase
KILL_SEED = 20260

# fuzzing (hypothesis examples per test)
FUZZ_IDX_MUTATED = (600, 6000)
FUZZ_IDX_HEADERS = (400, 4000)
FUZZ_CIFAR_MUTATED = (400, 4000)
FUZZ_CIFAR_OBJECTS = (300, 3000)
FUZZ_CHECKPOINT_MUTATED = (500, 5000)
FUZZ_CHECKPOINT_ENTRIES = (300, 3000)

# deterministic sweeps over data files
IDX_GZ_FLIPS = (1500, 15000)  # seeded single-bit flips of a gzip IDX file
CIFAR_TRUNCATIONS = (200, 2000)  # seeded cut lengths of a CIFAR batch

# hostile files and concurrency
HOSTILE_PICKLES = 7  # distinct callables a CIFAR pickle tries to call
PICKLE_PROTOCOLS = (2, 5)
LOCK_SECOND_ATTEMPTS = 2  # `sdnet train --resume DIR` and `sdnet train --run-dir DIR`
RACERS = 6

# memory: training steps of a tiny model with RSS sampled
RSS_STEPS = (500, 5000)
RSS_SAMPLES = 40
RSS_GROWTH_MIB = 8.0


def option_cases() -> list[tuple[str, Any, str]]:
    """Every ``(option, bad value, what the message says)`` the validation test tries, from
    TrainConfig's own types: NaN, +inf, -inf and a number written as text for each float
    option; ``True`` and 1.5 for each whole-number option, and inside lists and tables."""
    from sdnet.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    nan, inf = math.nan, math.inf
    out: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(TrainConfig):
        args = typing.get_args(hints[f.name])
        kind = next(a for a in args if a is not type(None)) if type(None) in args else hints[f.name]
        item = typing.get_args(kind)[-1] if typing.get_origin(kind) in (list, dict) else None
        if kind is float:
            out += [(f.name, v, "finite") for v in (nan, inf, -inf)] + [(f.name, "0.1", "number")]
        elif kind is int:
            out += [(f.name, True, "whole number"), (f.name, 1.5, "whole number")]
        elif item is int:
            out += [(f.name, [True], "whole number"), (f.name, [1.5], "whole number")]
        elif item is float:
            out += [(f.name, {"*.w": v}, "finite") for v in (nan, inf)]
    return out


@dataclass(frozen=True)
class Row:
    """One line of the table in docs/reliability.md.

    ``times`` is ``(CI, full)`` (constants the test reads), or ``None``: the test runs once per
    listed case (``test`` is ``file.py::function[id,...]``, ids of its parameters) or, with no
    ids and no parameters, once.
    """

    fault: str
    how: str
    outcome: str
    test: str
    times: tuple[int, int] | None = None


def _pair(n: int) -> tuple[int, int]:
    return (n, n)


P = len(WRITE_PHASES)
ROWS: list[Row] = [
    # -- crashes ----------------------------------------------------------------------------
    Row(
        "training process killed (SIGKILL) at a random moment",
        "a real training process (resnet8, 192 MNIST images, batches of 16, 2 epochs, a "
        "checkpoint after every step) killed after a seeded random delay: during data loading, "
        "steps, checkpoint writes, evaluation or the final save; then resumed, and killed again",
        "after every kill every checkpoint present loads; every chain of kills and resumes ends "
        "with weights, optimizer state, history and metrics lines identical to an uninterrupted "
        "run's; no temporary file or lock is left",
        "test_reliability_crash.py::test_sigkill_at_random_moments_then_resume_is_exact",
        KILLS_RANDOM,
    ),
    Row(
        "training process killed (SIGKILL) inside a checkpoint write",
        "the same process held in its N-th checkpoint write (N seeded, 1-3) with half the bytes "
        "written / all written, not fsynced / fsynced, not renamed / renamed, directory not "
        "fsynced, then killed",
        "as above; the stale temporary file is deleted when the run is resumed",
        "test_reliability_crash.py::test_sigkill_at_random_moments_then_resume_is_exact",
        (P * KILLS_PER_PHASE[0], P * KILLS_PER_PHASE[1]),
    ),
    Row(
        "killed before the first checkpoint",
        "killed in its first checkpoint write: a run directory with `config.json`, a "
        "half-written temporary file and a torn `metrics.jsonl` line",
        "`resume` starts the run over with its saved options and ends identical",
        "test_reliability_crash.py::test_resume_before_the_first_checkpoint_starts_over",
    ),
    # -- full disks and I/O errors ----------------------------------------------------------
    Row(
        "disk full writing a checkpoint",
        "`OSError(ENOSPC)` after 4 KiB of the 3rd checkpoint",
        "`RunWriteError` (an `OSError`, errno ENOSPC) naming `checkpoint.npz` and the intact "
        "checkpoint's step; that checkpoint loads; no temporary file; a `write-failed` event; "
        "resume ends identical",
        "test_reliability_io.py::test_a_failed_write_stops_the_run_and_keeps_the_checkpoint"
        "[ckpt-ENOSPC]",
    ),
    Row(
        "I/O error on `fsync` of a checkpoint",
        "`OSError(EIO)` from `fsync` of the 3rd checkpoint's file",
        "as for ENOSPC, errno EIO",
        "test_reliability_io.py::test_a_failed_write_stops_the_run_and_keeps_the_checkpoint"
        "[ckpt-fsync-EIO]",
    ),
    Row(
        "disk full appending to `metrics.jsonl`",
        "half a line written, then `OSError(ENOSPC)`",
        "stops naming `metrics.jsonl`; the checkpoint loads; resume drops the torn line and "
        "ends identical",
        "test_reliability_io.py::test_a_failed_write_stops_the_run_and_keeps_the_checkpoint"
        "[metrics-ENOSPC]",
    ),
    Row(
        "disk full writing `model.npz`",
        "`OSError(ENOSPC)` from the final weights file",
        "stops naming `model.npz`; the final checkpoint loads; resume writes `model.npz`",
        "test_reliability_io.py::test_a_failed_write_stops_the_run_and_keeps_the_checkpoint"
        "[model-ENOSPC]",
    ),
    Row(
        "a really full disk",
        "`sdnet train` on a tmpfs with room for one checkpoint and a half (a private mount "
        "namespace, `unshare -rm`; skipped where the machine forbids one): the kernel says "
        "ENOSPC inside the 2nd checkpoint write; nothing mocked",
        "exit status 1, one line naming `checkpoint.npz` and 'No space left on device (ENOSPC)'; "
        "the step-2 checkpoint loads; no temporary file; resuming on a disk with room ends "
        "identical",
        "test_reliability_io.py::test_a_real_full_disk_stops_the_cli_with_status_1",
    ),
    Row(
        "the kernel refuses the write",
        "`sdnet train --resume` in a process whose `RLIMIT_FSIZE` is half a checkpoint (EFBIG); "
        "nothing mocked",
        "exit status 1, one line naming `checkpoint.npz` and 'File too large (EFBIG)'; the "
        "checkpoint is byte-for-byte unchanged; resuming without the limit ends identical",
        "test_reliability_io.py::test_a_real_file_size_limit_stops_the_cli_with_status_1",
    ),
    Row(
        "`sdnet train` on a full disk",
        "ENOSPC under the command line",
        "exit status 1 and one line on stderr naming the file",
        "test_reliability_io.py::test_the_cli_reports_a_full_disk_in_one_line",
    ),
    # -- numerical faults -------------------------------------------------------------------
    Row(
        "NaN / +Inf in the input batch",
        "6 values of one image of step 5's batch",
        "`NonFiniteError` naming step 5 and the batch's 6 bad values (the data is at fault); "
        "the step-4 checkpoint loads and is finite; a `non-finite` event",
        "test_reliability_numeric.py::test_non_finite_input_stops_at_its_step[nan,inf]",
    ),
    Row(
        "NaN in every gradient",
        "the loss's gradient of step 5 times NaN (the loss finite)",
        "`NonFiniteError` naming the first parameter's gradient and step 5; the step-4 "
        "checkpoint loads and is finite",
        "test_reliability_numeric.py::test_non_finite_gradient_stops_at_its_step",
    ),
    Row(
        "+Inf in one gradient",
        "one value of the last parameter's gradient at step 5",
        "that parameter and step 5 named; the parameters in memory are still step 4's (the "
        "update is never applied)",
        "test_reliability_numeric.py::test_one_infinite_gradient_is_named_and_never_applied",
    ),
    Row(
        "infinite loss",
        "the loss of step 5 plus +Inf (gradients finite)",
        "'the loss became inf at step 5'; the step-4 checkpoint loads",
        "test_reliability_numeric.py::test_infinite_loss_stops_at_its_step",
    ),
    Row(
        "NaN on a GPU (deferred check)",
        "the per-step flags kept on the device and read every 2 or 10 steps (forced on the "
        "CPU); NaN in step 5's batch, a checkpoint due every 3 steps",
        "`NonFiniteError` naming step 5 at the next read; the step-3 checkpoint stays, the one "
        "due at step 6 is never written",
        "test_deferred_checks.py::test_deferred_check_names_the_first_bad_step[every-2,every-10]",
    ),
    Row(
        "`sdnet train` and a NaN gradient",
        "NaN in step 2's loss gradient under the command line",
        "exit status 1, one line naming step 2; the step-1 checkpoint loads",
        "test_reliability_numeric.py::test_the_cli_reports_non_finite_values_in_one_line",
    ),
    # -- concurrency ------------------------------------------------------------------------
    Row(
        "a second process on a run directory in use",
        "`sdnet train --resume DIR` and `sdnet train --run-dir DIR` while a first `sdnet train` "
        "holds DIR (stopped with SIGSTOP after its 2nd step)",
        "each: exit status 1, one line naming the holder's pid, host and start time, the lock "
        "file and what to do; the first run then finishes",
        "test_reliability_lock.py::test_a_second_process_is_refused_while_the_first_trains",
        _pair(LOCK_SECOND_ATTEMPTS),
    ),
    Row(
        "a lock left by a killed process",
        "the holder killed with SIGKILL (lock file and a temporary file left behind)",
        "taken over with a note naming the dead holder; the temporary file deleted (the "
        "SIGKILL chains above also resume through taken-over locks)",
        "test_reliability_lock.py::test_a_lock_left_by_a_killed_process_is_taken_over",
    ),
    Row(
        "the same process twice",
        "a second lock, and `sdnet.train`, on a directory this process holds",
        "refused, naming 'this process'",
        "test_reliability_lock.py::test_the_same_process_cannot_train_twice_in_one_directory",
    ),
    Row(
        "processes racing for a new run directory",
        f"{RACERS} processes released at once to claim the same new directory",
        "exactly one gets it; the others are refused naming it",
        "test_reliability_lock.py::test_processes_racing_for_one_directory_one_wins",
    ),
    Row(
        "no `flock` (exclusive-file fallback)",
        "a live holder; a dead pid; a pid reused by another process; another host",
        "refused (with a 'delete' hint) / taken over / taken over / refused (with the hint)",
        "test_reliability_lock.py::test_the_exclusive_file_fallback"
        "[live-holder,dead-pid,reused-pid,other-host]",
    ),
    # -- hostile files ----------------------------------------------------------------------
    Row(
        "IDX header claiming a huge size",
        "raw file claiming 4 x 0xFFFFFFFF; raw and gzip files claiming 1 GiB holding 10 bytes; "
        "gzip bomb (header says 1000 bytes, 64 MiB of zeros follow)",
        "`IDXError` naming the file; at most 4 MiB allocated (tracemalloc)",
        "test_reliability_hostile.py::test_idx_headers_claiming_huge_sizes_allocate_nothing"
        "[raw-4d,raw-1GiB-claim,gz-1GiB-claim,gzip-bomb]",
    ),
    Row(
        "CIFAR pickle that calls a function",
        f"{HOSTILE_PICKLES} payloads (`builtins.exec`, `subprocess.Popen`, `numpy.load` of an "
        "object array, a nested `pickle.loads`, a `numpy.memmap`, `builtins.getattr`, "
        f"`shutil.rmtree`), each at pickle protocols {' and '.join(map(str, PICKLE_PROTOCOLS))}",
        "`DataError` naming the file and the refused callable; nothing runs (marker file never "
        "created, victim folder kept)",
        "test_reliability_hostile.py::test_cifar_pickles_that_call_functions_are_refused",
        _pair(HOSTILE_PICKLES * len(PICKLE_PROTOCOLS)),
    ),
    Row(
        "hostile checkpoint archive",
        "an object array (whose element runs code); a pickled entry; a deflated 64 MiB entry "
        "(zip bomb); a `.npy` header claiming 10^12 float64; a non-`.npy` entry; each read with "
        "`read_checkpoint` and `sdnet.load`",
        "`CheckpointError` naming the file before any array is read; at most 4 MiB allocated; "
        "nothing runs",
        "test_reliability_hostile.py::test_hostile_checkpoints_are_refused_before_reading"
        "[object-array,pickled-entry,zip-bomb,1e12-elements,not-npy]",
    ),
    Row(
        "checkpoint whose configuration asks for a huge model",
        "valid arrays, the stored configuration changed to width 100000; resnet6000002; "
        "10^9 input channels; 10^9 classes; SeedNet widths of 10^6",
        "`sdnet.load` refuses ('weights do not fit ...') from the stored shapes, before "
        "building anything",
        "test_reliability_hostile.py::test_forged_model_configurations_build_nothing"
        "[width-1e5,depth-6e6,channels-1e9,classes-1e9,seednet-widths]",
    ),
    Row(
        "bit flips in a gzip IDX file",
        "seeded single-bit flips anywhere in a gzip IDX file of 64 real MNIST images",
        "`IDXError` naming the file, or (flips in gzip's header time/flags, or deflate bits "
        "that decode the same) the identical images; never other data",
        "test_reliability_hostile.py::test_bit_flips_in_gzip_idx_never_load_other_data",
        IDX_GZ_FLIPS,
    ),
    Row(
        "truncated CIFAR batch",
        "a valid batch cut at seeded lengths",
        "`DataError` naming the file, every time",
        "test_reliability_hostile.py::test_truncated_cifar_batches_are_named_errors",
        CIFAR_TRUNCATIONS,
    ),
    # -- fuzzing ----------------------------------------------------------------------------
    Row(
        "fuzzed IDX files",
        "hypothesis: 1-4 bit flips, overwrites, cuts, insertions in valid raw and gzip files",
        "only `IDXError` naming the file, or exactly the declared array",
        "test_reliability_fuzz.py::test_fuzz_idx_mutations",
        FUZZ_IDX_MUTATED,
    ),
    Row(
        "fuzzed IDX headers",
        "hypothesis: any magic, type code, rank (0-6), dims (up to 2^32-1), payload length, "
        "raw or gzip",
        "only `IDXError`, or an array of exactly the declared shape",
        "test_reliability_fuzz.py::test_fuzz_idx_headers",
        FUZZ_IDX_HEADERS,
    ),
    Row(
        "fuzzed CIFAR batches",
        "hypothesis: 1-4 mutations of valid batches pickled at protocols 2 and 5",
        "only `DataError` naming the file, or a well-formed batch",
        "test_reliability_fuzz.py::test_fuzz_cifar_mutations",
        FUZZ_CIFAR_MUTATED,
    ),
    Row(
        "fuzzed CIFAR pickles",
        "hypothesis: pickles (protocols 2-5) of nested dicts, lists, tuples, bytes, text, "
        "numbers and arrays of several dtypes",
        "only `DataError`, or a well-formed batch",
        "test_reliability_fuzz.py::test_fuzz_cifar_objects",
        FUZZ_CIFAR_OBJECTS,
    ),
    Row(
        "fuzzed checkpoints",
        "hypothesis: 1-4 mutations of a valid checkpoint, read with `read_checkpoint` and "
        "`sdnet.load`",
        "only `CheckpointError` naming the file, or exactly the saved arrays and metadata",
        "test_reliability_fuzz.py::test_fuzz_checkpoint_mutations",
        FUZZ_CHECKPOINT_MUTATED,
    ),
    Row(
        "fuzzed checkpoint archives",
        "hypothesis: zips (stored or deflated) of random entries: `.npy` headers of any dtype "
        "(object, unicode, void, complex ...), shape and version, raw bytes, metadata",
        "only `CheckpointError` naming the file",
        "test_reliability_fuzz.py::test_fuzz_checkpoint_archives",
        FUZZ_CHECKPOINT_ENTRIES,
    ),
    # -- careless or hostile users: writes ---------------------------------------------------
    Row(
        "`sdnet export` over its own input",
        "`sdnet export model.npz model.npz`, with and without `--force`; over a hard link to the "
        "input; over a symbolic link to it; then twice to the same new file",
        "exit status 1, one line naming the output and why (the input itself / exists / a "
        "link); the weights byte-for-byte unchanged; the second export refused until `--force`",
        "test_reliability_writes.py::test_export_never_writes_over_its_input_or_an_existing_file",
    ),
    Row(
        "a write onto something that is not a regular file",
        "`sdnet.save(..., overwrite=True)`, `sdnet export --force` and the run directory's "
        "writer aimed at a FIFO, a character device (major 1, minor 3, like /dev/null; made "
        "as root), a directory, a socket, a symbolic link",
        "`sdnet.WriteRefused` naming the path and what it is; the node the same inode, type "
        "and device number; no temporary file left",
        "test_reliability_writes.py::test_a_write_never_replaces_what_is_not_a_regular_file"
        "[fifo,char-device,directory,socket,symlink]",
    ),
    Row(
        "file modes",
        "`model.npz`, an exported ONNX file and a plain write under umasks 022, 027, 077",
        "each file's mode is `0o666 & ~umask` (was 0600, the temporary file's)",
        "test_reliability_writes.py::test_written_files_get_the_mode_the_umask_gives[022,027,077]",
    ),
    Row(
        "an output created during the write",
        "another file appears at the target while a new (`overwrite=False`) file is written",
        "refused; the other file is kept (publishing by hard link fails when the name exists)",
        "test_reliability_writes.py::test_an_output_created_during_the_write_is_kept",
    ),
    Row(
        "`sdnet plot --out` over its input or a user's file",
        "`--out RUN/metrics.jsonl --force`; `--out figure.png` over an existing file",
        "refused in one line (the input itself; exists, use --force); both files unchanged; the "
        "default `metrics.png` is replaced by each plot",
        "test_reliability_writes.py::test_plot_refuses_its_input_and_an_existing_out_file",
    ),
    Row(
        "export into a read-only folder",
        "`sdnet export` as user `nobody` (the tests run as root) into a folder of mode 0555",
        "exit status 1, one line naming the output and the folder, not the temporary file",
        "test_reliability_writes.py::test_export_into_a_read_only_folder_names_the_file",
    ),
    Row(
        "a new run in a folder of the user's",
        "`sdnet train --run-dir DIR` on a folder holding the user's own `model.npz` and "
        "`metrics.jsonl`; a folder holding only a stale `.lock`",
        "exit status 1, one line naming the files and `--run-dir`; both files unchanged and "
        "nothing added; the folder with only sdnet's lock is taken",
        "test_reliability_writes.py::test_a_new_run_never_takes_a_folder_holding_other_files",
    ),
    Row(
        "a new run in `/` or the home folder",
        "`claim_new_run_dir('/')` (as `nobody`); an empty home folder (`HOME`) given as run "
        "directory, to the claim and to `sdnet.train`",
        "`RunDirError` naming the root / the home folder; nothing written",
        "test_reliability_writes.py::test_a_new_run_never_takes_the_root_or_the_home_folder",
    ),
    Row(
        "a folder where the checkpoint goes",
        "a directory created at `checkpoint.npz` during step 1 of a run that checkpoints at "
        "step 2; `sdnet eval` of a directory",
        "`RunWriteError` naming it: 'is a directory, not a regular file', move it and resume "
        "(not 'is intact' nor 'free disk space'); no lock left",
        "test_reliability_writes.py::test_a_folder_where_the_checkpoint_goes_stops_the_run_naming_it",
    ),
    # -- signals ----------------------------------------------------------------------------
    Row(
        "SIGTERM or SIGHUP to `sdnet train`",
        "a real signal to a real `sdnet train` process after its 5th step (256 images, batches "
        "of 16, 2 epochs); then `--resume`",
        "exit status 143 / 129; last stderr line 'interrupted (SIGTERM) at step N; checkpoint "
        "saved ...'; the step-N checkpoint loads; no lock; an `interrupted` event; resume ends "
        "with weights identical to an uninterrupted process's",
        "test_reliability_signals.py::test_sigterm_and_sighup_checkpoint_then_resume_is_exact"
        "[SIGTERM,SIGHUP]",
    ),
    Row(
        "SIGTERM to `sdnet eval` and `sdnet sweep`",
        "SIGTERM once sdnet's handler is in place (read from /proc); to a sweep once its trial "
        "trains",
        "eval: status 143, one line 'interrupted (SIGTERM)'; sweep: status 143, the trial "
        "checkpointed and back to pending",
        "test_reliability_signals.py::test_eval_and_sweep_stop_on_sigterm_with_status_143",
        (2, 2),
    ),
    Row(
        "a second signal",
        "Ctrl-C then SIGTERM inside the same step",
        "`sdnet.Interrupted` (status 143) at once, 'during step 3; the last checkpoint ... is "
        "intact'; an `interrupted` event (none was logged before); the step-2 checkpoint kept",
        "test_reliability_signals.py::test_a_second_signal_stops_at_once_and_is_logged",
    ),
    Row(
        "signals ignored, handlers of the caller",
        "SIGHUP ignored (`nohup`) and raised in step 3; a SIGTERM handler of the caller's",
        "the run trains to the end; SIGHUP still ignored and the caller's handler back after",
        "test_reliability_signals.py::test_ignored_signals_stay_ignored_and_handlers_are_put_back",
    ),
    # -- resume -----------------------------------------------------------------------------
    Row(
        "`config.json` edited before resuming",
        "dataset, batch_size, seed, dtype, lr, limit_train or model changed in `config.json` of "
        "a run with a checkpoint, then `sdnet train --resume`",
        "exit status 1, one line naming `config.json`, the option and both values; the "
        "checkpoint unchanged; no lock",
        "test_reliability_resume.py::test_resume_refuses_an_edited_configuration"
        "[dataset,batch_size,seed,dtype,lr,limit_train,model]",
    ),
    Row(
        "`config.json` edited in what may change",
        "device, progress, log_every, download, data_dir (`RESUME_OVERRIDES`) edited",
        "the run resumes",
        "test_reliability_resume.py::test_resume_accepts_the_documented_overrides",
    ),
    Row(
        "a checkpoint copied from another run",
        "two runs of the same configuration; one's `checkpoint.npz` copied into the other",
        "`RunDirError` naming both run ids; no lock",
        "test_reliability_resume.py::test_a_checkpoint_from_another_run_is_refused",
    ),
    Row(
        "a training checkpoint missing a part",
        "rewritten (valid checksums) without `partial`, without `rng`, with `rng` a list, with "
        "`partial` empty, without the first convolution's weights",
        "`CheckpointError` naming the file and the part (was `KeyError`); the CLI one line",
        "test_reliability_resume.py::test_a_damaged_training_checkpoint_is_refused_naming_it"
        "[no-partial,no-rng,rng-not-a-table,partial-empty,arrays-missing]",
    ),
    Row(
        "the stored configuration edited in the checkpoint",
        "`batch_size` changed inside `__meta__`, the zip rewritten with valid CRCs",
        "'checksum mismatch in its metadata', read and resume",
        "test_reliability_resume.py::test_the_stored_configuration_is_covered_by_the_checksums",
    ),
    # -- bounds -----------------------------------------------------------------------------
    Row(
        "huge sweep plans",
        "a grid of 9 options x 10 values (10^9 trials); `samples = 10^12`; in a process whose "
        "address space is limited to its imports + 512 MiB",
        "`ConfigError` with the count ('1,000,000,000 trials') and the limit, before anything is "
        "expanded",
        "test_reliability_bounds.py::test_huge_sweep_plans_are_refused_by_their_count"
        "[grid-1e9,samples-1e12]",
    ),
    Row(
        "`max_concurrent = 1000000000`",
        "the local executor's slots for 3 trials and for none given; `max_concurrent=True`",
        "3 slots / at most `MAX_TRIALS`; True refused; nothing written",
        "test_reliability_bounds.py::test_max_concurrent_is_capped_by_the_trials",
    ),
    Row(
        "negative seeds, trial ids over 255 bytes",
        "`seeds = [0, -1]`; a swept `lr_mult` pattern of 300 characters",
        "refused before the sweep directory exists; ids cut to 120 bytes, unique, their status "
        "files written",
        "test_reliability_bounds.py::"
        "test_sweep_trials_are_validated_and_named_before_anything_is_written",
    ),
    Row(
        "a 99-byte PNG of 60000x1 pixels",
        "20000x1 and 60000x1 PNGs read for 1- and 3-channel models, address space limited",
        "the peak RSS grows by less than 32 MiB (was 449 MB for 20000x1, 3.6 GB for 60000x1)",
        "test_reliability_bounds.py::test_predict_memory_follows_the_image_not_its_padded_square",
    ),
    Row(
        "images predict must not decode",
        "a PNG declaring 30000x30000 (over Pillow's limit) and 9000x9000 (over sdnet's 50 "
        "million); an EPS file (Pillow's EPS reader made to fail the test if tried); a LAB TIFF",
        "exit status 1, one line naming the file and why; the EPS reader never tried",
        "test_reliability_bounds.py::test_predict_refuses_files_it_should_not_decode"
        "[declares-30000x30000,declares-9000x9000,eps,lab-tiff]",
    ),
    Row(
        "one bad image among good ones",
        "`sdnet predict` of a good PNG, a text file named .png, a good PNG",
        "both good ones classified on stdout, one line for the bad one; status 1",
        "test_reliability_bounds.py::test_predict_goes_on_after_a_bad_image",
    ),
    Row(
        "a model and a dataset of other classes",
        "a CIFAR-100 model with `sdnet predict --dataset cifar10`",
        "exit status 2, one line (was `IndexError`)",
        "test_reliability_bounds.py::test_predict_refuses_a_dataset_with_other_classes",
    ),
    Row(
        "a model too large for the machine",
        "`sdnet train --model resnet6000002`; `--width 100000`; address space limited",
        "exit status 2, one line with the estimate (weights and momentum, activations) and the "
        "memory available; no run directory",
        "test_reliability_bounds.py::"
        "test_models_too_large_for_the_machine_are_refused_before_allocating"
        "[resnet6000002,width-1e5]",
    ),
    Row(
        "the memory estimate",
        "tracemalloc over building the model and optimizer and one training step",
        "the estimate is at most the measured peak and at least a quarter of it",
        "test_reliability_bounds.py::test_the_memory_estimate_is_a_lower_bound_of_a_real_step"
        "[resnet8-mnist,resnet20-cifar10,seednet]",
    ),
    Row(
        "evaluation out of memory",
        "`sdnet eval --batch-size 10000` with the address space limited to its imports + 160 MiB",
        "exit status 1, one line 'out of memory ... --batch-size' (was a MemoryError traceback)",
        "test_reliability_bounds.py::test_evaluation_out_of_memory_is_one_line",
    ),
    Row(
        "the sweep count",
        "a grid of 3 x 2 values, 2 random samples, 2 seeds",
        "`count()` equals the expanded trials (24)",
        "test_reliability_bounds.py::test_the_sweep_count_matches_the_expansion",
    ),
    # -- messages ---------------------------------------------------------------------------
    Row(
        "a binary TOML file",
        "`sdnet sweep` of a file holding bytes that are not UTF-8",
        "exit status 2, one line naming the file (was \"'utf-8' codec can't decode\")",
        "test_reliability_messages.py::test_a_bad_file_is_one_line_naming_it[binary-toml]",
    ),
    Row(
        "an ONNX file given as a checkpoint",
        "`sdnet eval model.onnx`",
        "one line: not an sdnet checkpoint, not a .npz archive (was 'holds pickled objects')",
        "test_reliability_messages.py::test_a_bad_file_is_one_line_naming_it"
        "[onnx-as-checkpoint,folder-as-checkpoint]",
    ),
    Row(
        "a checkpoint's metadata of the wrong type",
        "`extra` a list (`sdnet eval`); the model's `name` a number (`sdnet export`)",
        "exit status 1, one line naming the file (was `AttributeError`)",
        "test_reliability_messages.py::test_a_bad_file_is_one_line_naming_it"
        "[extra-a-list,model-name-a-number]",
    ),
    Row(
        "NaN weights or a zero std in a checkpoint",
        "a NaN in `conv1.weight` (`sdnet predict`); `fc.weight` all +inf (`sdnet eval`); "
        "`std = [0]` (`sdnet predict`)",
        "exit status 1, one line naming the file and the array or the statistics (was "
        "`0 (nan%)`, `loss nan` with status 0)",
        "test_reliability_messages.py::test_a_bad_file_is_one_line_naming_it"
        "[nan-weights-predict,inf-weights-eval,std-zero]",
    ),
    Row(
        "NaN, infinity, booleans and fractions as options",
        "every float option NaN, +inf, -inf and a number as text; every whole-number option "
        "True and 1.5, in lists and tables too (from `TrainConfig`'s types)",
        "`ConfigError` naming the option, before anything is read",
        "test_reliability_messages.py::test_every_option_refuses_nan_infinity_bools_and_fractions",
        _pair(len(option_cases())),
    ),
    Row(
        "`sdnet info | head`",
        "the reader of stdout gone before the command writes",
        "status 141 (as a command killed by SIGPIPE), nothing on stderr",
        "test_reliability_messages.py::test_a_closed_pipe_stops_the_command_quietly",
    ),
    Row(
        "`sdnet train --help`",
        "the help text",
        "five groups (model, stochastic depth, optimisation, data, run) in order, each option "
        "in the group its `TrainConfig` field names",
        "test_reliability_messages.py::test_train_help_groups_its_options",
    ),
    Row(
        "an unexpected exception",
        "a command whose handler raises `IndexError`",
        "one line 'unexpected IndexError: ...', status 1",
        "test_reliability_messages.py::test_an_unexpected_error_is_still_one_line",
    ),
    Row(
        "labels beyond the model's classes",
        "`sdnet.evaluate` of a 10-class model on labels up to 50; labels outside 0..9",
        "`ValueError` naming the classes and the largest label",
        "test_labels.py::test_evaluate_refuses_labels_beyond_the_models_classes",
    ),
    # -- long run ---------------------------------------------------------------------------
    Row(
        "long run: memory growth",
        f"training steps of resnet8 (batches of 4, a checkpoint every 50 steps, an evaluation "
        f"every 64) with the process's RSS sampled at {RSS_SAMPLES} metrics lines",
        f"median RSS of the last quarter within {RSS_GROWTH_MIB:g} MiB of the second quarter's",
        "test_reliability_memory.py::test_rss_stays_flat_over_many_steps",
        RSS_STEPS,
    ),
]


def split_test(test: str) -> tuple[str, str, list[str]]:
    """``"file.py::func[a,b]"`` -> ``("file.py", "func", ["a", "b"])``."""
    file, func = test.split("::")
    name, _, ids = func.partition("[")
    return file, name, [i for i in ids.rstrip("]").split(",") if i]


def times(row: Row) -> tuple[int, int]:
    """How many times the row's fault is tried: (CI, full)."""
    if row.times is not None:
        return row.times
    n = len(split_test(row.test)[2]) or 1
    return (n, n)


def kills() -> tuple[int, int]:
    """Every SIGKILL of a training process (the random and in-write ones, and the one before
    the first checkpoint): (CI, full)."""
    return (
        KILLS_RANDOM[0] + P * KILLS_PER_PHASE[0] + 1,
        KILLS_RANDOM[1] + P * KILLS_PER_PHASE[1] + 1,
    )


def render() -> str:
    """The Markdown table of :data:`ROWS` (what docs/reliability.md holds)."""
    lines = [
        "| fault or hostile input | how it is made | times (CI) | times (full) | outcome (what "
        "the test checks) | test |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in ROWS:
        ci, full = times(r)
        file, name, ids = split_test(r.test)
        where = f"`{file}`<br>`{name}`" + (f" ({', '.join(ids)})" if ids else "")
        lines.append(f"| {r.fault} | {r.how} | {ci:,} | {full:,} | {r.outcome} | {where} |")
    total = (sum(times(r)[0] for r in ROWS), sum(times(r)[1] for r in ROWS))
    lines.append(f"| **all rows** | | **{total[0]:,}** | **{total[1]:,}** | | |")
    k = kills()
    lines += ["", f"Training processes killed with SIGKILL: {k[0]} (CI), {k[1]} (full)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
