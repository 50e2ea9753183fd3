"""Thread counts of jobs that run side by side, and the joblib launcher's default, by hand."""

from copal_exp.protocol.launchers import job_threads, normalise_argv

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}


def test_threads_follow_the_allocation():
    assert job_threads(3, JOBLIB, {}, cores=2) == (3, "run.threads")  # an explicit setting wins
    slurm = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4", "SLURM_CPUS_ON_NODE": "8"}
    assert job_threads(None, None, slurm, cores=64)[0] == 4
    assert job_threads(None, None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2"}, cores=64)[0] == 2
    assert job_threads(None, None, {"SLURM_CPUS_PER_TASK": "4"}, cores=64)[0] is None  # not inside a SLURM job
    # joblib: the cores divided by the jobs that run at once, never below one thread
    assert job_threads(None, JOBLIB, {}, cores=8)[0] == 4
    assert job_threads(None, {**JOBLIB, "n_jobs": 16}, {}, cores=8)[0] == 1
    assert job_threads(None, {**JOBLIB, "n_jobs": -1}, {}, cores=8)[0] == 1
    assert job_threads(None, {**JOBLIB, "n_jobs": 3}, {}, cores=8)[0] == 2  # 3 × 2 ≤ 8
    assert job_threads(None, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, {},
                       cores=8) == (None, "torch default")


def test_joblib_runs_as_many_jobs_as_cores_unless_told():
    assert normalise_argv(["-m", "hydra/launcher=joblib", "a=1,2"], cores=2) == [
        "-m", "hydra/launcher=joblib", "a=1,2", "hydra.launcher.n_jobs=2"]
    assert normalise_argv(["hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "-m"], cores=2) == [
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"]
    assert normalise_argv(["-m", "a=1,2"], cores=2) == ["-m", "a=1,2"]


def test_hydra_flags_anywhere_on_the_line():
    assert normalise_argv(["method=wanda", "--cfg", "job", "sparsity=4:8"]) == [
        "--cfg", "job", "method=wanda", "sparsity=4:8"]
    assert normalise_argv(["a=1", "--help", "b=2"]) == ["--help", "a=1", "b=2"]
    assert normalise_argv(["a=1", "--info", "defaults", "b=2", "-m"]) == ["-m", "--info", "defaults", "a=1", "b=2"]
    assert normalise_argv(["a=1", "--info", "b=2"]) == ["--info", "a=1", "b=2"]
    assert normalise_argv(["data.seed=-1", "-m", "x=~y"]) == ["-m", "data.seed=-1", "x=~y"]


def test_the_sigterm_of_a_requeue_after_preemption_does_not_fail_the_job():
    """submitit's preemption handler asks SLURM to requeue the job, then exits; SLURM's SIGTERM for the requeue
    may arrive before that exit. Inside the job that SIGTERM must not turn the requeue into a failure, while
    a SIGTERM without a preemption (``scancel``) still interrupts it."""
    import os
    import signal

    import pytest

    from copal_exp.errors import JobInterrupted
    from copal_exp.protocol.launchers import sigterm_interrupts

    def submitit_like(signum, frame):  # requeue (SLURM answers with SIGTERM at once), then exit
        os.kill(os.getpid(), signal.SIGTERM)
        raise SystemExit(-1)

    before = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(SystemExit):
            try:
                with sigterm_interrupts():
                    os.kill(os.getpid(), signal.SIGUSR2)
                    for _ in range(10**6):  # a signal is handled between two bytecodes
                        pass
            except JobInterrupted:
                pytest.fail("the requeue's SIGTERM interrupted the job as if it had been cancelled")
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored
        with pytest.raises(JobInterrupted), sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):
                pass
    finally:
        signal.signal(signal.SIGUSR2, before)
