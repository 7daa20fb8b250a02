"""The handlers of ``campaign validate``, ``pin``, ``plan``, ``render`` and ``train``: from
your files to images and LoRAs.

Each handler imports the stages it calls when it runs, so ``campaign --help`` and the
commands that only read files start without the rendering stack (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from renderer.cli.training_progress import StepLines
from renderer.core.errors import InputError
from renderer.core.terminal import printable, say


def cmd_validate(args: argparse.Namespace) -> int:
    failures = 0
    for path in args.files:
        try:
            say(validated(path, verify_hashes=not args.no_hash))
        except InputError as err:
            failures += 1
            say(f"error: {err}", err=True)
    return 2 if failures else 0


def validated(path: Path, *, verify_hashes: bool = True) -> str:
    """What ``campaign validate`` says of a file that passes every check; InputError (exit
    2) for one that does not."""
    # on use (start-up): the loaders and the plan
    from renderer.plan.output_folder import check_planned
    from renderer.plan.variants import make_plan
    from renderer.validate.any_kind import load_any
    from renderer.validate.inputs import Campaign, Recipe
    from renderer.validate.training_spec import TrainingSpec

    loaded = load_any(path, verify_hashes=verify_hashes)
    if isinstance(loaded, Campaign):
        check_planned(make_plan(loaded).planned_files(), loaded.document)
        return (
            f"ok  {path}: campaign {loaded.spec.name} ({len(loaded.points)} "
            f"variants, recipe {loaded.recipe_refs})"
        )
    if isinstance(loaded, TrainingSpec):
        # On use: it loads the ledger's modules, which only a training spec needs.
        from renderer.train.command import resolve

        training = resolve(loaded)  # the engine's own checks, at their lines
        return (
            f"ok  {printable(path)}: training {printable(loaded.ref)} "
            f"({loaded.spec.family} on {printable(loaded.base.ref)}, "
            f"{len(loaded.images)} images, id {printable(training.training_id)})"
        )
    if isinstance(loaded, Recipe):
        return (
            f"ok  {path}: recipe {loaded.ref} ({loaded.spec.family}, model hash "
            f"{loaded.checkpoint.sha256[:10]})"
        )
    return f"ok  {path}: brand kit {loaded.spec.name}"


def cmd_pin(args: argparse.Namespace) -> int:
    from renderer.commands.pin import pin  # on use (start-up)

    for path in args.files:
        changes = pin(path)
        for change in changes:
            say(change.describe())
        if not changes:
            say(f"{path}: every pin already matches")
        elif any(change.old for change in changes):
            say(
                "pins changed: a recipe that already produced deliverables needs a new "
                "version before it renders again",
                err=True,
            )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    # on use (start-up): the loaders, the plan and its estimates
    from renderer.plan.estimate import estimate, load_estimates
    from renderer.plan.output_folder import check_planned
    from renderer.plan.variants import make_plan, sample_variants
    from renderer.validate.campaign import load_campaign
    from renderer.validate.matrix import axis_label

    plan = make_plan(load_campaign(args.campaign))
    check_planned(plan.planned_files(), plan.campaign.document)
    variants = list(plan.variants)
    if args.sample is not None:
        variants = sample_variants(variants, args.sample)
    table = load_estimates(args.estimates)
    by_recipe = {
        recipe.ref: [v for v in plan.variants if v.spec.recipe.ref == recipe.ref]
        for recipe in plan.campaign.recipes
    }
    estimates = {ref: estimate(members, table) for ref, members in by_recipe.items()}
    total = estimate(plan.variants, table)
    if args.json:
        print(
            json.dumps(
                {
                    "variants": [
                        {
                            "id": v.id,
                            "recipe": v.spec.recipe.ref,
                            "seed": v.seed,
                            "axes": v.axes,
                            "prompt": v.prompt,
                            "negative_prompt": v.negative_prompt,
                            "width": v.width,
                            "height": v.height,
                            "delivery": list(plan.delivery_size(v)),
                            "steps": v.steps,
                            "cfg": v.cfg,
                            "output": v.output_name,
                        }
                        for v in variants
                    ],
                    "total": len(plan.variants),
                    "estimates": [{"gpu": e.gpu, "hours": e.hours, "usd": e.usd} for e in total],
                    "recipes": [
                        {
                            "recipe": ref,
                            "family": plan.campaign.recipe(ref).spec.family,
                            "variants": len(by_recipe[ref]),
                            "estimates": [
                                {"gpu": e.gpu, "hours": e.hours, "usd": e.usd} for e in per_recipe
                            ],
                        }
                        for ref, per_recipe in estimates.items()
                    ],
                },
                indent=2,
            )
        )
        return 0
    # size: what the base renders; delivery: the master after refine (exports are cut from it).
    say(f"{'id':12}  {'seed':>10}  {'size':>9}  {'delivery':>9}  axes / prompt")
    for v in variants:
        axes = ", ".join(f"{name}={axis_label(value)}" for name, value in v.axes.items())
        delivery = "{}x{}".format(*plan.delivery_size(v))
        say(f"{v.id[:12]}  {v.seed:>10}  {v.width:>4}x{v.height:<4}  {delivery:>9}  {axes}")
        say(f"{'':50}{v.prompt[:100]}")
    shown = f" ({len(variants)} shown)" if len(variants) != len(plan.variants) else ""
    families = ", ".join(dict.fromkeys(r.spec.family for r in plan.campaign.recipes))
    say(
        f"\n{len(plan.variants)} variants{shown}, recipe {plan.campaign.recipe_refs} "
        f"({families}); estimated GPU time and cost:"
    )
    columns = (
        {f"{ref} ({len(by_recipe[ref])})": per_recipe for ref, per_recipe in estimates.items()}
        if len(estimates) > 1
        else {}
    )
    columns["all" if columns else ""] = total
    if len(columns) > 1:
        say(f"  {'':<12}" + "".join(f"  {title:>22}" for title in columns))
    for row, gpu in enumerate(e.gpu for e in total):
        say(
            f"  {gpu:<12}"
            + "".join(
                f"  {_duration(column[row].hours * 3600):>10} {f'${column[row].usd:,.4f}':>11}"
                for column in columns.values()
            )
        )
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cmd_render(args: argparse.Namespace) -> int:
    from renderer.run.execute import render_campaign  # on use (start-up): loads numpy

    if (args.address or args.workers) and args.executor != "ray":
        raise InputError(
            "--address and --workers are for --executor ray", fix="add --executor ray, or drop them"
        )
    summary = render_campaign(
        args.campaign,
        args.out,
        wait=not args.no_wait,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
        existing=args.existing,
    )
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    say(
        f"{summary.campaign}: {summary.rendered} rendered, {summary.skipped} skipped, "
        f"{summary.passed} passed, {summary.review} to review, {summary.failed} failed in "
        f"{summary.seconds:.1f} s\nreport: {summary.report}",
        err=True,
    )
    return summary.exit_code


def cmd_train(args: argparse.Namespace) -> int:
    # on use (start-up): the training stage and the loaders
    from renderer.train.command import train_spec
    from renderer.validate.training import load_training

    lines = StepLines()
    outcome = train_spec(load_training(args.spec), args.out, progress=lines.progress, log=lines.log)
    lines.end()
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    if outcome.status == "already trained":
        head = f"{outcome.ref}: already trained ({outcome.steps} steps), nothing to do"
    else:
        resumed = f", resumed at step {outcome.resumed_from}" if outcome.resumed_from else ""
        head = f"{outcome.ref}: trained {outcome.steps} steps in {outcome.seconds:.1f} s{resumed}"
    say(
        f"{head}\ntraining {outcome.training_id}\nLoRA: {outcome.lora} (sha256 "
        f"{outcome.sha256})\nreport: {outcome.report}",
        err=True,
    )
    return 0
