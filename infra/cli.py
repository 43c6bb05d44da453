"""The ``peakend`` command.

peakend api      serve the HTTP API on the embedded default (or PEAKEND_DATABASE_URL)
peakend demo     the API plus simulated omnichannel traffic, for a first look
peakend replay   rebuild every projection from the event store and swap it in
peakend retry-quarantined   re-apply the held events of quarantined documents
peakend worker   a Faust stream worker (cluster mode); run as many as you like
peakend relay    the outbox relay alone (workers run it too unless --no-relay)
peakend topics create   create the Kafka topics
peakend import FILE     bulk-load historical touchpoints (JSON Lines, or CSV + mapping)
peakend purge-rejects   delete import reject files past their retention
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from infra import audit, jobs
from infra.bootstrap import Platform, bootstrap, reporting_money
from infra.keys import SCOPE_MEANING, SCOPES, AccessNotConfigured, KeyRefused
from infra.logs import configure_logging
from infra.progress import progress
from infra.settings import Settings
from streams.embedded import EmbeddedDriver
from streams.projector import Progress, head, replay, retry_quarantined

log = logging.getLogger("peakend")

# The share of the demo's touchpoints (those naming the customer by e-mail, phone, card or
# device) that come without the source's customer id, so identity resolution has work:
# links, and merges of the customers such touchpoints start.
DEMO_SOURCELESS_RATE = 0.3


def _serve(platform: Platform, host: str, port: int) -> uvicorn.Server:
    # log_config=None: uvicorn's loggers go through ours (and its format), not its own.
    config = uvicorn.Config(
        create_app(platform), host=host, port=port, log_level="warning", log_config=None
    )
    return uvicorn.Server(config)


def run_api(args: argparse.Namespace) -> int:
    platform = bootstrap(Settings(), mode=args.mode)
    # Embedded, this process is the whole platform, time included; in cluster mode the
    # workers (or peakend scheduler) own the clock and API replicas do no background work.
    clock = jobs.scheduler(platform) if args.mode == "embedded" else None
    try:
        server = _serve(platform, args.host, args.port)
        if clock is not None:
            clock.start()
        print(f"Peakend API on http://{args.host}:{args.port}  (docs: /docs)", flush=True)
        server.run()  # uvicorn picks its loop (uvloop, httptools)
    except AccessNotConfigured as why:
        print(f"peakend api: refused: {why}", file=sys.stderr)
        return 2
    finally:
        if clock is not None:
            clock.stop()
        platform.close()
    return 0


def run_scheduler(_: argparse.Namespace) -> int:
    """The scheduler alone: it waits to lead, then runs the scheduled jobs."""
    platform = bootstrap(Settings(), mode="none", start=False)
    clock = jobs.scheduler(platform)
    print(f"scheduler {clock.name}: leads when no other scheduler does", flush=True)
    clock.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        clock.stop()
        platform.close()
    return 0


def run_keys(args: argparse.Namespace) -> int:
    platform = bootstrap(Settings(), mode="none", start=False)
    actor = audit.command_actor()
    try:
        if args.action == "create":
            try:
                key, secret = platform.keys.create(args.name, args.scope)
            except (KeyRefused, ValueError) as refusal:
                print(f"peakend keys create: {refusal}", file=sys.stderr)
                return 2
            audit.record(
                platform.store, actor, "key_created", key.id, name=key.name, scopes=args.scope
            )
            print(
                f"created key {key.id} named {key.name!r}, scopes {', '.join(sorted(key.scopes))}"
            )
            print(f"  {secret}\nKeep it now: it is stored only as a digest and never shown again.")
        elif args.action == "list":
            keys = platform.keys.list(include_revoked=args.all)
            print(f"{'id':<21} {'name':<24} {'scopes':<28} {'hint':<14} last used / revoked")
            for k in keys:
                when = (
                    f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
                    if k.revoked_at
                    else (f"{k.last_used_at:%Y-%m-%d %H:%M:%S}" if k.last_used_at else "never")
                )
                scopes = ",".join(sorted(k.scopes))
                print(f"{k.id:<21} {k.name:<24} {scopes:<28} {k.hint:<14} {when}")
        else:
            try:
                revoked = platform.keys.revoke(args.key)
            except KeyRefused as refusal:
                print(f"peakend keys revoke: {refusal}", file=sys.stderr)
                return 2
            if revoked is None:
                print(f"peakend keys revoke: no active key {args.key!r}", file=sys.stderr)
                return 1
            audit.record(platform.store, actor, "key_revoked", revoked.id, name=revoked.name)
            print(
                f"revoked key {revoked.id} named {revoked.name!r}; API processes refuse it "
                f"within {platform.settings.key_cache_seconds:g} s"
            )
    finally:
        platform.close()
    return 0


def seed_history(
    platform: Platform,
    *,
    customers: int,
    touchpoints: int,
    seed: int,
    days: int = 730,
    quiet: bool = False,
) -> None:
    """Two years of simulated history for the demo's customers, recorded through the
    recorder, so that value, RFM, migration and lifetime value have a past to show."""
    from domain.touchpoints import parse_touchpoint
    from infra.simulator import Simulator, SimulatorConfig, period
    from projections import analytics

    start, end = period(days)
    simulator = Simulator(
        SimulatorConfig(
            seed=seed,
            customers=customers,
            start=start,
            end=end,
            sourceless_rate=DEMO_SOURCELESS_RATE,
        )
    )
    recorded = 0
    with progress(touchpoints, "demo history", unit="tp", quiet=quiet) as bar:
        while recorded < touchpoints:
            batch = simulator.touchpoints(min(1000, touchpoints - recorded))
            if not batch:
                break
            settings = platform.settings
            platform.records.record(
                [
                    parse_touchpoint(
                        e,
                        earliest=settings.earliest_occurred_at,
                        phone_region=settings.phone_default_region,
                        identifier_kinds=settings.identifier_kinds,
                    )
                    for e in batch
                ]
            )
            recorded += len(batch)
            bar.update(len(batch))
    if isinstance(platform.driver, EmbeddedDriver):
        platform.driver.wait_until_projected(120)
    try:
        analytics.fit_clv(
            platform.store,
            as_of=end,
            currency=platform.settings.currency,
            unit=platform.settings.clv_time_unit,
            money=reporting_money(platform.settings),
        )
    except ValueError as why:
        log.warning("no lifetime-value model for the demo: %s", why)


async def _demo(platform: Platform, args: argparse.Namespace) -> None:
    from infra.simulator import Simulator, SimulatorConfig, send_http

    server = _serve(platform, args.host, args.port)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # re-raises why the server could not start
            return
        await asyncio.sleep(0.05)
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    key = platform.keys.ensure_development_key()
    simulator = Simulator(
        SimulatorConfig(
            seed=args.seed, customers=args.customers, sourceless_rate=DEMO_SOURCELESS_RATE
        )
    )
    # The most valuable customer is the busiest one: their projections fill up first.
    vip = max(simulator.customers, key=lambda c: c.value_weight).id
    print(
        "\nPeakend demo is running; simulated traffic at "
        f"{args.rate:g} touchpoints/s from {args.customers} customers.\n"
        f"  development API key (every scope; refused outside development):\n"
        f"                 {key}\n"
        f'  try            curl -H "Authorization: Bearer {key}" {base}/v1/analytics/pyramid\n'
        "  in /docs       Authorize, then paste the key\n"
        f"  API docs       {base}/docs\n"
        f"  health         {base}/v1/healthz\n"
        f"  a VIP customer {base}/v1/customers/{vip}\n"
        f"  their journeys {base}/v1/customers/{vip}/journeys\n"
        f"  their timeline {base}/v1/customers/{vip}/timeline\n"
        f"  the pyramid    {base}/v1/analytics/pyramid\n"
        f"  satisfaction   {base}/v1/analytics/satisfaction?period=month\n"
        f"  emotion curves {base}/v1/analytics/emotion-curves\n"
        "Ctrl-C stops.\n",
        flush=True,
    )
    stop = asyncio.Event()
    counts = {"accepted": 0, "rejected": 0}

    def count(accepted: int, rejected: int) -> None:
        counts["accepted"] += accepted
        counts["rejected"] += rejected

    async def report() -> None:
        while not stop.is_set():
            await asyncio.sleep(10)
            lag = await asyncio.to_thread(platform.driver.lag)
            print(
                f"accepted {counts['accepted']}, rejected {counts['rejected']}, "
                f"projection lag {lag} events",
                flush=True,
            )

    sending = asyncio.create_task(
        send_http(
            base,
            simulator,
            rate=args.rate,
            batch_size=args.batch,
            total=args.total,
            stop=stop,
            on_batch=count,
            api_key=key,
        )
    )
    reporting = asyncio.create_task(report())
    try:
        await serving
    finally:
        stop.set()
        reporting.cancel()
        stats = await sending
        print(f"sent {stats.sent}, accepted {stats.accepted}, rejected {stats.rejected}")


def run_demo(args: argparse.Namespace) -> int:
    # The demo is development by definition: its well-known key and secrets are refused
    # anywhere else.
    platform = bootstrap(Settings(environment="development"))
    clock = jobs.scheduler(platform)
    clock.start()
    try:
        if args.history and head(platform.records) == 0:
            seed_history(
                platform, customers=args.customers, touchpoints=args.history, seed=args.seed
            )
        asyncio.run(_demo(platform, args))
    except KeyboardInterrupt:
        pass
    finally:
        clock.stop()
        platform.close()
    return 0


def run_replay(args: argparse.Namespace) -> int:
    settings = Settings()
    platform = bootstrap(settings, start=False)
    try:
        total = head(platform.records)
        with progress(total, "replay", unit="event", quiet=args.quiet) as bar:

            def on_progress(progress: Progress) -> None:
                bar.total = max(total, progress.position)
                bar.n = progress.position
                bar.refresh()

            result = replay(
                platform.records,
                platform.store,
                batch_size=settings.project_batch_size,
                on_progress=on_progress,
            )
        audit.record(
            platform.store,
            audit.command_actor(),
            "replay",
            None,
            events=result.read,
            position=result.position,
        )
        print(
            f"replayed {result.read} events ({result.applied} projection updates) into "
            f"{len(platform.store.projections)} projections; swapped in at position "
            f"{result.position}"
        )
    finally:
        platform.close()
    return 0


def run_retry(_: argparse.Namespace) -> int:
    platform = bootstrap(Settings(), start=False)
    try:
        result = retry_quarantined(platform.records, platform.store)
        audit.record(
            platform.store,
            audit.command_actor(),
            "retry_quarantined",
            None,
            released=result.released,
            failing=len(result.failing),
        )
    finally:
        platform.close()
    print(f"released {result.released} quarantined documents; {len(result.failing)} still fail")
    for projection, key, error in result.failing:
        print(f"  {projection} {key}: {error}")
    return 1 if result.failing else 0


def run_worker(args: argparse.Namespace) -> int:
    import faust

    from streams.cluster import ROLES
    from streams.cluster import create_app as create_stream_app

    settings = Settings()
    if args.no_relay:
        settings = settings.model_copy(update={"worker_runs_relay": False})
    platform = bootstrap(settings, mode="none", start=False)
    # Every worker runs a scheduler; one of them leads (the others take over if it dies).
    clock = None if args.no_scheduler else jobs.scheduler(platform)
    if clock is not None:
        clock.start()
    try:
        roles = tuple(args.roles.split(",")) if args.roles else ROLES
        app = create_stream_app(
            settings,
            platform.records,
            platform.store,
            database_url=platform.database_url,
            roles=roles,
            metrics=platform.metrics,
        )
        if args.metrics_port:
            from prometheus_client import start_http_server

            # The worker's own counts (batches, outcomes, errors) for Prometheus to scrape.
            start_http_server(args.metrics_port, registry=platform.metrics.registry)
        # override_logging=False: Faust keeps our handlers (and the JSON format).
        worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
        worker.execute_from_commandline()  # returns only when the worker stops
    finally:
        if clock is not None:
            clock.stop()
        platform.close()
    return 0


def run_relay(args: argparse.Namespace) -> int:

    from kafka import KafkaProducer

    from infra.kafka import Topics
    from streams.relay import LogNotifications, relay

    settings = Settings()
    platform = bootstrap(settings, mode="none", start=False)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=settings.kafka_linger_ms,
        max_in_flight_requests_per_connection=1,
    )
    topic = Topics.named(settings.kafka_topic_prefix).customer_events
    print(f"relaying the event store to {topic} on {settings.kafka_bootstrap}", flush=True)
    recorded = LogNotifications.of(platform.records, platform.database_url)
    try:
        while True:
            sent = relay(
                platform.records,
                platform.store,
                producer,
                topic,
                batch_size=settings.stream_batch_size,
            )
            if sent:
                log.info("relayed %d events", sent)
            else:
                recorded.wait(1.0)  # caught up: until the next insert, or a second
    except KeyboardInterrupt:
        return 0
    finally:
        recorded.close()
        producer.close(5)
        platform.close()


def run_broker(args: argparse.Namespace) -> int:
    import time

    from infra.broker import LocalBroker

    with LocalBroker(port=args.port) as broker:
        print(
            f"local Kafka-protocol broker (Tansu, in memory) on {broker.bootstrap}; "
            f"export PEAKEND_KAFKA_BOOTSTRAP={broker.bootstrap}. Ctrl-C stops.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def run_topics(args: argparse.Namespace) -> int:
    from infra.kafka import create_topics

    settings = Settings()
    for topic, outcome in create_topics(settings).items():
        print(
            f"{topic}: {outcome} ({settings.kafka_partitions} partitions, "
            f"replication {settings.kafka_replication})"
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from infra.importer import count_lines, import_file

    path = Path(args.file)
    mapping = json.loads(Path(args.mapping).read_text()) if args.mapping else None
    platform = bootstrap(Settings(), mode="none", start=False)
    try:
        with progress(
            count_lines(path), f"import {path.name}", unit="line", quiet=args.quiet
        ) as bar:

            def on_progress(line: int) -> None:
                bar.n = line
                bar.refresh()

            summary = import_file(
                platform,
                path,
                fmt=args.format,
                mapping=mapping,
                batch_size=args.batch,
                restart=args.restart,
                reject_path=Path(args.rejects) if args.rejects else None,
                on_progress=on_progress,
            )
    finally:
        platform.close()
    print(
        f"{summary.source}: {summary.lines} lines, {summary.recorded} recorded, "
        f"{summary.duplicates} already recorded, {summary.skipped} skipped (done before), "
        f"{summary.rejected} rejected"
    )
    if summary.purchases_by_currency:
        print(
            f"money in {summary.currency}; purchases by currency: "
            + ", ".join(f"{c} {n}" for c, n in sorted(summary.purchases_by_currency.items()))
        )
    if summary.unconverted:
        print(
            "no exchange rate (PEAKEND_EXCHANGE_RATES) for: "
            + ", ".join(f"{c} {amount}" for c, amount in sorted(summary.unconverted.items()))
            + ": value measures leave this money out"
        )
    if summary.rejected:
        top = ", ".join(
            f"{field} ({n})"
            for field, n in sorted(summary.reasons.items(), key=lambda kv: -kv[1])[:8]
        )
        print(f"rejected lines and reasons: {summary.reject_file}; by field: {top}")
    return 1 if summary.rejected else 0


def run_purge_rejects(_: argparse.Namespace) -> int:
    from datetime import timedelta

    from infra.rejects import purge_expired

    settings = Settings()
    platform = bootstrap(settings, mode="none", start=False)
    try:
        retention = timedelta(hours=settings.reject_file_retention_hours)
        removed = purge_expired(platform.store, retention)
    finally:
        platform.close()
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} reject files older than {settings.reject_file_retention_hours:g} h")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infra.bench import run

    if args.mode == "reads":
        from infra.bench_reads import run as run_reads

        customers = [int(n) for n in args.customers.split(",") if n.strip()]
        report = run_reads(
            Settings(),
            customers=customers,
            requests=args.requests,
            analytics_requests=args.analytics_requests,
            concurrency=args.concurrency,
            seed=args.seed,
            log_dir=Path(args.logs),
        )
        print(
            f"\npeakend bench --mode reads --customers {','.join(map(str, customers))} "
            f"--requests {args.requests} --analytics-requests {args.analytics_requests} "
            f"--concurrency {args.concurrency}\n\n{report}"
        )
        return 0
    if args.mode == "alerts":
        from infra.bench_alerts import run as run_alerts

        paths = [p.strip() for p in args.alert_paths.split(",") if p.strip()]
        unknown = sorted(set(paths) - {"embedded", "cluster"})
        if unknown or not paths:
            print(f"peakend bench: --alert-paths: embedded, cluster (got {args.alert_paths!r})")
            return 2
        report = run_alerts(
            Settings(),
            n=args.n,
            rate=args.rate,
            seed=args.seed,
            modes=paths,
            workers=args.workers,
            log_dir=Path(args.logs),
        )
        print(
            f"\npeakend bench --mode alerts --n {args.n} --rate {args.rate:g} "
            f"--alert-paths {','.join(paths)} --workers {args.workers}\n\n{report}"
        )
        return 0
    modes = ["embedded", "cluster"] if args.mode == "both" else [args.mode]
    report = run(
        Settings(),
        n=args.n,
        naive_n=args.naive_n or args.n,
        rate=args.rate,
        modes=modes,
        workers=args.workers,
        split=args.layout == "split",
        seed=args.seed,
        log_dir=Path(args.logs),
    )
    print(
        f"\npeakend bench --n {args.n} --rate {args.rate:g} --mode {args.mode} "
        f"--workers {args.workers} --layout {args.layout}\n\n{report}"
    )
    return 0


def _population_sizes(text: str) -> str:
    """``--customers``: a comma list of positive integers (kept as text)."""
    try:
        sizes = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"give one or more positive sizes: {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="peakend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG also shows the per-connection lines of the Kafka clients",
    )
    commands = root.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--mode",
        choices=["embedded", "cluster"],
        default="embedded",
        help="embedded: record in-process; cluster: produce to Kafka",
    )
    api.set_defaults(run=run_api)

    worker = commands.add_parser("worker", help="a Faust stream worker (cluster mode)")
    worker.add_argument(
        "--no-relay", action="store_true", help="do not run the outbox relay in this worker"
    )
    worker.add_argument(
        "--no-scheduler", action="store_true", help="do not run a scheduler in this worker"
    )
    worker.add_argument(
        "--roles",
        default=None,
        help="record, project, or both (the default): single-role workers "
        "form their own consumer group per role",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this worker's Prometheus metrics on this port (/metrics)",
    )
    worker.set_defaults(run=run_worker)

    relay = commands.add_parser("relay", help="the outbox relay alone (cluster mode)")
    relay.set_defaults(run=run_relay)

    load = commands.add_parser("import", help="bulk-load historical touchpoints")
    load.add_argument("file", help="a JSON Lines file of envelopes, or a CSV file")
    load.add_argument(
        "--format", choices=["jsonl", "csv"], default=None, help="default: from the file's suffix"
    )
    load.add_argument(
        "--mapping",
        help="CSV only: a JSON file mapping envelope fields to columns (see infra/importer.py)",
    )
    load.add_argument("--batch", type=int, default=1000, help="touchpoints per transaction")
    load.add_argument("--rejects", help="where refused lines go (default: FILE.rejects.jsonl)")
    load.add_argument(
        "--restart",
        action="store_true",
        help="start from the first line, not where the last run stopped",
    )
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(run=run_import)

    purge = commands.add_parser(
        "purge-rejects",
        help="delete import reject files older than PEAKEND_REJECT_FILE_RETENTION_HOURS",
    )
    purge.set_defaults(run=run_purge_rejects)

    bench = commands.add_parser("bench", help="measure throughput and freshness")
    bench.add_argument("--n", type=int, default=20_000, help="touchpoints per run")
    bench.add_argument(
        "--naive-n", type=int, default=None, help="touchpoints for the naive path (default: --n)"
    )
    bench.add_argument(
        "--rate", type=float, default=2000.0, help="offered touchpoints/s for the freshness runs"
    )
    bench.add_argument(
        "--mode",
        choices=["embedded", "cluster", "both", "reads", "alerts"],
        default="both",
        help="reads: read latencies per population size (--customers), not ingest; "
        "alerts: touchpoint -> SSE alert latency at --rate",
    )
    bench.add_argument("--workers", type=int, default=1)
    bench.add_argument(
        "--alert-paths",
        default="embedded,cluster",
        help="alerts: which paths to measure, a comma list of embedded and cluster",
    )
    bench.add_argument(
        "--layout",
        choices=["split", "combined"],
        default="split",
        help="split: separate recorder and projector workers (each --workers); "
        "combined: --workers workers doing both",
    )
    bench.add_argument(
        "--customers",
        type=_population_sizes,
        default="10000,100000",
        help="reads: population sizes, a comma list",
    )
    bench.add_argument(
        "--requests", type=int, default=400, help="reads: requests per customer/changes endpoint"
    )
    bench.add_argument(
        "--analytics-requests", type=int, default=20, help="reads: requests per analytics endpoint"
    )
    bench.add_argument("--concurrency", type=int, default=4, help="reads: concurrent clients")
    bench.add_argument("--seed", type=int, default=11)
    bench.add_argument("--logs", default=".peakend/bench-logs")
    bench.set_defaults(run=run_bench)

    broker = commands.add_parser(
        "broker",
        help="a local in-memory Kafka-protocol broker for trying cluster mode (not for production)",
    )
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(run=run_broker)

    topics = commands.add_parser("topics", help="Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(run=run_topics)

    demo = commands.add_parser("demo", help="the API plus simulated traffic")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--rate", type=float, default=200.0, help="touchpoints per second")
    demo.add_argument("--batch", type=int, default=50, help="touchpoints per request")
    demo.add_argument("--customers", type=int, default=500)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--total", type=int, default=None, help="stop sending after this many")
    demo.add_argument(
        "--history",
        type=int,
        default=20_000,
        help="touchpoints of simulated history (two years) recorded on first "
        "start, before live traffic; 0 for none",
    )
    demo.set_defaults(run=run_demo)

    rebuild = commands.add_parser("replay", help="rebuild every projection from the events")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(run=run_replay)

    retry = commands.add_parser(
        "retry-quarantined",
        help="re-apply the events of quarantined documents (after a reducer fix)",
    )
    retry.set_defaults(run=run_retry)

    schedule = commands.add_parser(
        "scheduler", help="the scheduler alone (one leads across processes; workers run one)"
    )
    schedule.set_defaults(run=run_scheduler)

    keys = commands.add_parser("keys", help="API keys: create, list, revoke")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="a new key (its secret is shown once)")
    create.add_argument("--name", required=True, help="unique: who or what uses it")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        help="repeat for several: " + "; ".join(f"{s}: {m}" for s, m in SCOPE_MEANING.items()),
    )
    listing = key_actions.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = key_actions.add_parser("revoke", help="revoke a key by id or name")
    revoke.add_argument("key", help="the key's id (key_…) or name")
    keys.set_defaults(run=run_keys)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings(environment="development") if args.run is run_demo else Settings()
    except ValidationError as refused:
        for error in refused.errors():
            print(
                f"peakend: settings: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr
            )
        return 2
    configure_logging(settings, level=logging.getLevelName(args.log_level))
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
