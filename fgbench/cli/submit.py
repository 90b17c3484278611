"""``fgbench submit``: the job grid of ``fgbench run`` as an array of Slurm (or local) jobs, via submitit."""

from __future__ import annotations

from pathlib import Path

import click

from fgbench.cli._common import one_line_errors
from fgbench._plugins import get_host


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: sbatch job array; local: processes on this machine (for trying a set-up).")
@click.option("--shards", type=int, default=1, show_default=True,
              help="Array tasks; task i runs `fgbench run ... --shard i/N`.")
@click.option("--gpus", type=int, default=1, show_default=True,
              help="GPUs per task; N > 1 trains each job on N processes (DDP). 0: CPU only.")
@click.option("--cpus-per-task", type=int, default=8, show_default=True, help="CPU cores per process.")
@click.option("--mem-gb", type=float, default=None, help="Memory per node (GB).")
@click.option("--timeout-min", type=int, default=24 * 60, show_default=True, help="Wall-time limit per task.")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--array-parallelism", type=int, default=64, show_default=True, help="Most tasks running at once.")
@click.option("--slurm", "slurm_params", multiple=True, metavar="KEY=VALUE",
              help="Extra #SBATCH setting, e.g. --slurm account=abc --slurm qos=high; repeatable.")
@click.option("--folder", type=click.Path(path_type=Path), default=Path("submitit"), show_default=True,
              help="Logs and pickles of the submitted tasks.")
@click.option("--name", default="fgbench", show_default=True, help="Job name.")
@click.option("--wait", is_flag=True, help="Wait for every task and report its result (exit 1 if one failed).")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@one_line_errors
def submit(executor: str, shards: int, gpus: int, cpus_per_task: int, mem_gb: float | None, timeout_min: int,
           partition: str | None, array_parallelism: int, slurm_params: tuple[str, ...], folder: Path, name: str,
           wait: bool, run_args: tuple[str, ...]) -> None:
    """Submit the grid of `fgbench run RUN_ARGS` as --shards array tasks.

    \b
    RUN_ARGS are `fgbench run` options, after `--`:
      fgbench submit --shards 8 --partition gpu -- --methods all --datasets cub,aircraft
    Every task writes to the same --results folder (shared file system):
    finished jobs are skipped and per-job locks keep a job from running
    twice, so resubmitting the same command completes an interrupted grid.
    """
    from fgbench.cli._grid import plan_grid
    from fgbench.engine.submit import SubmitOptions, submit_grid

    for option, value, least in (("--shards", shards, 1), ("--gpus", gpus, 0), ("--cpus-per-task", cpus_per_task, 1),
                                 ("--timeout-min", timeout_min, 1), ("--array-parallelism", array_parallelism, 1)):
        if value < least:
            raise click.BadParameter(f"{value}: use {least} or more", param_hint=option)
    if mem_gb is not None and not mem_gb > 0:
        raise click.BadParameter(f"{mem_gb}: use a positive number of GB", param_hint="--mem-gb")
    args = list(run_args)
    # the same checks as `fgbench run` (plan_grid), before anything is submitted
    try:
        group = click.get_current_context().find_root()
        run = group.command.get_command(group, "run")  # the sibling command, looked up, not imported
        run_ctx = run.make_context("run", list(args), resilient_parsing=False)
        plan = plan_grid(get_host().registry, run_ctx.params)
    except click.UsageError as exc:
        raise click.BadParameter(f"fgbench run options: {exc.format_message()}", param_hint="RUN_ARGS") from None
    for note in plan.notes:
        click.echo(note, err=True)
    if shards > len(plan.jobs):
        click.echo(f"warning: {shards} shards for {len(plan.jobs)} job(s): {shards - len(plan.jobs)} task(s) "
                   f"will have nothing to do", err=True)
    extra = {}
    for item in slurm_params:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--slurm")
        key, value = item.split("=", 1)
        extra[key.strip()] = value
    options = SubmitOptions(executor=executor, shards=shards, folder=folder, gpus=gpus, cpus_per_task=cpus_per_task,
                            mem_gb=mem_gb, timeout_min=timeout_min, partition=partition,
                            array_parallelism=array_parallelism, name=name, slurm=extra)
    jobs = submit_grid(args, options)
    ids = ", ".join(str(j.job_id) for j in jobs)
    click.echo(f"submitted {len(jobs)} task(s) to {executor}: {ids}; logs in {folder}")
    if not wait:
        return
    failed = 0
    for i, job in enumerate(jobs):
        try:
            click.echo(f"task {i}: {job.result()}")
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the task's error with its traceback
            failed += 1
            click.echo(f"task {i} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(jobs)} task(s) failed; logs in {folder}")
