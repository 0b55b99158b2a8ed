"""What the reliability tests try, how many times, and what they check: one list, two uses.

The ``test_reliability_*.py`` files take their counts from the constants below, and
``docs/reliability.md`` holds the table :func:`render` makes from :data:`ROWS`;
``test_reliability_table.py`` checks that the page's table is exactly that, and that every test
it names exists. Regenerate the page's table with ``python tests/reliability_cases.py``.

``SDNET_RELIABILITY_FULL=1`` selects the long counts (the "full" column).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
