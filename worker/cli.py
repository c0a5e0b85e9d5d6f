"""The ``pprof-scraper`` command: the composition root that wires config, beat, workers and Redis."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import redis
from pydantic import ValidationError

from scraper.config import Config, load_config
from scraper.defaults import log_format
from scraper.errors import ConfigError, StartupError
from scraper.plan import make_plan, plan
from scraper.settings import Settings

EXAMPLES = """\
examples:
  pprof-scraper init                         write a commented example config
  pprof-scraper run                          scrape this run's own processes into ./profiles
  pprof-scraper run --config scraper.yaml    scrape what scraper.yaml says
  pprof-scraper check scraper.yaml           validate a config
  pprof-scraper plan scraper.yaml --json     every scrape the config implies
  pprof-scraper targets --health down        targets whose last scrape failed
  pprof-scraper deadletter list              pushes that used up their retries
  pprof-scraper top FILE --sample-type cpu   the top functions of a stored profile

environment: SCRAPER_CONFIG, SCRAPER_BROKER_URL (redis://, rediss://, sentinel://h:p;sentinel://h:p/0),
SCRAPER_BROKER_PASSWORD_FILE, SCRAPER_SENTINEL_MASTER, SCRAPER_DATA_DIR (default .pprof-scraper),
SCRAPER_HTTP_PORT, SCRAPER_HTTP_ADDRESS (default 127.0.0.1), SCRAPER_LOG_LEVEL, SCRAPER_CONCURRENCY,
SCRAPER_TARGETS_PER_TASK, SCRAPER_VISIBILITY_TIMEOUT,
SCRAPER_BEAT_LOCK_TTL, SCRAPER_BEAT_SHARD, SCRAPER_MAX_PENDING_BYTES, SCRAPER_MAX_DEADLETTER_BYTES,
SCRAPER_READY_IDLE_S, SCRAPER_SECURITY_KEY/_CERTIFICATE/_CERT_STORE, SCRAPER_TRACEMALLOC;
also read from a .env file. See the README for each.
"""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = [f"SCRAPER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(problems, "environment") from None


def _console():
    """A rich console; piped output gets room for whole URLs instead of the 80-column default."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=400)


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    specs = plan(config)
    targets = sum(len(job.targets) for job in config.scrape.values())
    discovering = sum(1 for job in config.scrape.values()
                      if job.file_sd_configs or job.http_sd_configs or job.dns_sd_configs or job.kubernetes_sd_configs)
    print(f"{args.config}: ok: {len(config.scrape)} jobs, {targets} targets, {len(specs)} scrapes per interval, "
          f"{len(config.write)} receivers" + (f" ({discovering} jobs also discover targets)" if discovering else ""))
    return 0


def _discover_once(config: Config) -> dict[str, list[dict[str, str]]]:
    """Each job's discovered targets, looked up once; failures are reported, not fatal."""
    from scraper.discovery.runner import DiscoveryRunner

    runner = DiscoveryRunner(config)
    try:
        runner.refresh_due()
        _, targets, errors = runner.snapshot()
    finally:
        runner.stop()
    for job, error in errors.items():
        print(f"warning: discovery for job {job} failed: {error}", file=sys.stderr)
    return targets


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    specs = make_plan(config, _discover_once(config)).specs
    if args.json:
        for spec in specs:
            print(json.dumps(spec.as_dict(), sort_keys=True))
        return 0
    from rich.table import Table

    table = Table("job", "type", "url", "every", "timeout", "offset", "forward_to", "labels")
    for spec in specs:
        labels = ", ".join(f"{k}={v}" for k, v in spec.labels.items() if k not in ("job", "__name__"))
        table.add_row(spec.job, spec.profile_type, spec.url, f"{spec.interval_s:g}s", f"{spec.timeout_s:g}s",
                      f"{spec.offset_s:.3f}s", ",".join(spec.forward_to), labels)
    _console().print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .supervisor import run

    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper(), format=log_format("run"))
    return run(settings, args.config, args.workers)


def cmd_targets(args: argparse.Namespace) -> int:
    from scraper import keys, status, status_view
    from scraper.broker import broker_url, connect_redis, text

    settings = _settings()
    client = connect_redis(broker_url(settings), settings.sentinel_master)
    if args.dropped:
        rows = [{"job": text(job), **entry}
                for key in sorted(client.scan_iter(match=keys.DROPPED + "*"))  # every beat shard's
                for job, value in sorted(client.hgetall(key).items()) if not args.job or text(job) == args.job
                for entry in json.loads(value)]
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
        else:
            from rich.table import Table

            table = Table("job", "reason", "labels before relabeling")
            for row in rows:
                table.add_row(row["job"], row["reason"], ", ".join(f"{k}={v}" for k, v in sorted(row["labels"].items())))
            _console().print(table)
        return 0
    health = status.TargetHealth(args.health) if args.health else None
    statuses = status.read_statuses(client, job=args.job, health=health)
    if args.json:
        print(status_view.statuses_json(statuses))
    else:
        from rich.console import Console

        Console().print(status_view.render_table(statuses))  # the terminal's width; COLUMNS, else 80, when piped
    return 0


def cmd_deadletter(args: argparse.Namespace) -> int:
    from scraper import delivery
    from scraper.broker import broker_url, connect_redis

    settings = _settings()
    client = connect_redis(broker_url(settings), settings.sentinel_master)
    now = time.time()
    if args.action == "list":
        for entry in delivery.list_dead_letters(client, limit=args.limit):
            print(json.dumps(entry.summary(now), sort_keys=True))
        return 0
    if args.action == "purge":
        print(f"purged {delivery.purge_dead_letters(client)} dead letters")
        return 0
    from worker.tasks import push

    config_path = args.config or settings.config
    if config_path is None:
        windows: dict[str, float] = {}
        print("note: no --config and no SCRAPER_CONFIG, so receivers' reject_older_than is unknown: "
              "replaying every entry", file=sys.stderr)
    else:
        windows = delivery.ingestion_windows(load_config(config_path))
    taken, left = delivery.take_dead_letters(
        client, args.limit, leave=lambda e: e.receiver in windows and e.age_s(now) >= windows[e.receiver])
    for entry in taken:
        delivery.stash(client, entry.profile(), [entry.receiver], settings.max_pending_bytes,
                       settings.max_deadletter_bytes)
        push.apply_async(args=(entry.id, entry.receiver), argsrepr=f"{entry.receiver} replay of {entry.id}")
        delivery.published(client, [entry.id])
    print(f"replayed {len(taken)} dead letters (sent again as push tasks)")
    if left:
        receivers = ", ".join(f"{name} ({windows[name]:g}s)" for name in sorted({e.receiver for e in left}))
        print(f"left {len(left)} dead letters older than their receiver's reject_older_than, which the store "
              f"would refuse: {receivers}; `pprof-scraper deadletter purge` drops the list")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from scraper import flame

    try:
        profile = flame.parse(args.file.read_bytes())
        index = profile.type_index(args.sample_type)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (flame.ProfileUnreadable, KeyError) as exc:
        print(f"error: {args.file}: {exc.args[0]}", file=sys.stderr)
        return 2
    sample_type = profile.sample_types[index]
    total = profile.total(index)
    rows = flame.top(profile, index)
    print(f"{args.file}: {sample_type.name} ({sample_type.unit}), total {flame.format_value(total, sample_type.unit)}"
          + (", counted since process start" if sample_type.cumulative else "")
          + f"; showing {min(args.n, len(rows))} of {len(rows)} functions")
    print("\n".join(flame.format_top(rows, total, sample_type.unit, args.n)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    if args.path.exists():
        print(f"error: {args.path} exists; give another path or remove it first", file=sys.stderr)
        return 2
    from scraper.defaults import EXAMPLE_CONFIG

    args.path.write_text(EXAMPLE_CONFIG.read_text())
    print(f"wrote {args.path}: check it with `pprof-scraper check {args.path}`, "
          f"run it with `pprof-scraper run --config {args.path}`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pprof-scraper",
        description="A distributed pprof scraper on Celery and Redis, configured like Grafana Alloy's pyroscope.scrape.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", type=Path, help="the YAML config file")
    check.set_defaults(func=cmd_check)

    plan_ = sub.add_parser("plan", help="print every scrape the config implies")
    plan_.add_argument("config", type=Path, help="the YAML config file")
    plan_.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    plan_.set_defaults(func=cmd_plan)

    run = sub.add_parser("run", help="run Redis (unless SCRAPER_BROKER_URL is set), beat and workers until Ctrl-C")
    run.add_argument("--config", type=Path, default=None,
                     help="the YAML config file (default: SCRAPER_CONFIG, else a built-in config scraping this run)")
    run.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    run.set_defaults(func=cmd_run)

    targets = sub.add_parser("targets", help="the last scrape of every target, from Redis")
    targets.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    targets.add_argument("--job", help="only this job")
    targets.add_argument("--health", choices=["up", "down", "unknown"], help="only targets with this health")
    targets.add_argument("--dropped", action="store_true",
                         help="the targets relabeling dropped (with their labels before relabeling) instead")
    targets.set_defaults(func=cmd_targets)

    dead = sub.add_parser("deadletter", help="pushes that used up their retries: list, replay or purge them")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("--limit", type=int, default=1000, help="at most this many entries (list, replay)")
    dead.add_argument("--config", type=Path, default=None,
                      help="replay: the config whose receivers' reject_older_than decide which entries are too old "
                           "to send (default: SCRAPER_CONFIG)")
    dead.set_defaults(func=cmd_deadletter)

    top = sub.add_parser("top", help="print the top functions of a stored profile, as `go tool pprof -top` does")
    top.add_argument("file", type=Path, help="a pprof profile (.pb.gz or raw), e.g. from the file store")
    top.add_argument("--sample-type", help="which value to rank by, e.g. alloc_space (default: the profile's default)")
    top.add_argument("-n", type=int, default=20, help="how many functions (default: 20)")
    top.set_defaults(func=cmd_top)

    init = sub.add_parser("init", help="write a commented example config to start from")
    init.add_argument("path", type=Path, nargs="?", default=Path("pprof-scraper.yaml"),
                      help="where to write it (default: pprof-scraper.yaml)")
    init.set_defaults(func=cmd_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except redis.ConnectionError as exc:
        print(f"error: cannot reach Redis ({exc}); set SCRAPER_BROKER_URL, or start `pprof-scraper run` "
              "in this directory first", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
