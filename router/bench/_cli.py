"""``router bench compare``: the arguments, mapped onto ``CompareConfig``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.errors import ConfigError

if TYPE_CHECKING:
    from router.bench._runner import CompareConfig


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for report.md, results.json, queries.jsonl.gz and the PNGs")
    p.add_argument("--datasets", type=_csv, help="comma-separated (default: clinc150,banking77)")
    p.add_argument("--methods", type=_csv, help="comma-separated, of: tiers01, tiers01-finetuned, tiers01-static-off, "
                                                "tiers01-http, tier2, semantic-router, semantic-router-fitted, "
                                                "llm-every-turn (default: all; tiers01-finetuned is skipped, with a "
                                                "note, without the [train] extra)")
    p.add_argument("--limit", type=int, dest="test_limit", help="test queries per dataset (default: all)")
    p.add_argument("--tier2-sample", type=int, help="test queries for tiers 0-1 + tier 2 (default 1000)")
    p.add_argument("--every-turn-sample", type=int, help="test queries for the LLM every turn (default 40)")
    p.add_argument("--max-intents", type=int, help="a slice: the first N intents by name (and out-of-scope rows)")
    p.add_argument("--train-per-intent", type=int, help="a slice: at most N training/validation rows per label")
    p.add_argument("--llm", help="LLM backend for tier 2 and the LLM every turn (default llama_cpp)")
    p.add_argument("--llm-model", help="its model (default smollm2-135m-q4)")
    p.add_argument("--llm-url", help="base URL, for openai_compatible / vllm")
    p.add_argument("--llm-timeout", type=float, help="per-call timeout in seconds (default 60)")
    p.add_argument("--finetune-epochs", type=int,
                   help="fine-tuning epochs of the tiers01-finetuned row (default 3; other settings: the "
                        "finetune defaults)")
    p.add_argument("--mine-rules", action="store_true", help="mine keyword rules for tier 0 when building")
    p.add_argument("--vcpu-hour-usd", type=float, help="price of one vCPU-hour for the cost model (default 0.05)")
    p.add_argument("--price-model", help="price-table model a remote LLM call is billed as (default gpt-5.4-nano)")
    p.add_argument("--scaling-sizes", help="comma-separated example counts, or 'none' "
                                           "(default 1000,4096,10000,100000,1000000)")
    p.add_argument("--seed", type=int, help="seed of the test-query samples (default 0)")
    p.add_argument("--render-only", action="store_true",
                   help="re-write report.md and the plots from the results.json and queries.jsonl.gz in --out")


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """``args.argv`` (set by ``router._cli.main``) is recorded in the report as the command that made it."""
    from pydantic import ValidationError

    from router._strict import format_validation_error
    from router.bench._runner import CompareConfig

    data: dict[str, Any] = {"out": Path(args.out), "command": shlex.join(["router", *getattr(args, "argv", [])])}
    for key in ("datasets", "methods", "test_limit", "tier2_sample", "every_turn_sample", "max_intents",
                "train_per_intent", "finetune_epochs", "vcpu_hour_usd", "price_model", "seed"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.mine_rules:
        data["mine_rules"] = True
    if args.scaling_sizes is not None:
        try:
            data["scaling_sizes"] = [] if args.scaling_sizes == "none" else [int(n) for n in _csv(args.scaling_sizes)]
        except ValueError as exc:
            raise ConfigError(f"--scaling-sizes={args.scaling_sizes!r}: expected comma-separated integers "
                              "or 'none'") from exc
    llm = {"backend": args.llm, "model": args.llm_model, "url": args.llm_url, "timeout_s": args.llm_timeout}
    if any(v is not None for v in llm.values()):
        base = CompareConfig.model_fields["llm"].default.model_dump(exclude_unset=True)
        if args.llm is not None and args.llm != base["backend"]:
            base = {"backend": args.llm}
        data["llm"] = {**base, **{k: v for k, v in llm.items() if v is not None}}
    try:
        return CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "router bench compare")) from exc


def run(args: argparse.Namespace) -> int:
    from router.bench._runner import run_compare

    if args.render_only:
        from router.bench._report import load_results, write_report

        out = Path(args.out)
        if not (out / "results.json").is_file():
            raise ConfigError(f"--out={args.out!r} has no results.json to render; run without --render-only first")
        write_report(load_results(out), out)
        print(f"report: {out / 'report.md'} (re-rendered)")
        return 0
    from router._progress import make_progress

    config = config_from_args(args)
    results = run_compare(config, make_progress(not getattr(args, "quiet", False)))
    print(f"report: {config.out / 'report.md'} ({results['wall_s'] / 60:.1f} min)")
    return 0
