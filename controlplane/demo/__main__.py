"""``make demo``: the controlplane, three sidecars over post-quantum mTLS, a traffic split changed live.

Owns the demo's story and its report. On the controlplane's embedded default mesh
(``controlplane/mesh/default.yaml``) it runs, all on loopback:

1. ``controlplane serve`` (the SPIFFE CA, xDS over ADS and the management API on one port);
2. the applications ``hello v1`` and ``hello v2`` (small HTTP servers, in this process);
3. three sidecars, ``meshproxy run`` processes: ``web``'s (the caller; ADS state of the world),
   ``hello-v1``'s and ``hello-v2``'s (one in front of each version, both with hello's SPIFFE ID:
   one identity per service account; ADS delta). Each gets its SVID from the controlplane's CA
   through its identity agent (a CSR; the key stays with the sidecar) and every listener, route
   and cluster over ADS: their bootstraps name nothing but the controlplane;

then sends traffic client → web's sidecar ══ PQ mTLS (X25519MLKEM768) ══▶ hello-v1's or
hello-v2's sidecar → that version, counts the split, runs ``meshctl split hello v1=0 v2=100`` as
a real command, waits until web's sidecar has applied the new route, counts again, and shows
``meshctl proxies`` and, per version and per round, the TLS evidence: its sidecar's inbound
handshakes by group and requests (admin ``/stats?format=flat``) and the caller identity its app saw in
``x-forwarded-client-cert`` (judged in ``evidence``). It exits 0 when everything happened as it
should, 1 when something was off (the report says what), 2 when something did not come up
(with the end of its log), 130 on Ctrl-C; every process it started is stopped in all cases.

Must not depend on: the proxy's or the controlplane's internals; it drives them as programs,
over their ports (``layout`` reads the mesh config to know those, and writes the controlplane's
tokens files). ``--pods`` runs the mesh in pods instead (``pods_demo``; needs root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from controlplane.demo import layout, pods_demo
from controlplane.demo.apps import Seen, Tally, send, start_app
from controlplane.demo.evidence import PQ_GROUP, Inbound, all_acked, matches
from controlplane.demo.layout import CALLER, OPERATOR, SERVICE, DemoError, Layout
from controlplane.demo.processes import Child, Children, fetch_json, run
from meshproxy.errors import ConfigError

STARTUP_TIMEOUT = 30.0
SHIFT = "v1=0 v2=100"  # blue-green: every request to v2


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


class Demo:
    """The running demo: its layout, its child processes and what it learned while starting them."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.layout: Layout = layout.plan(work, free_ports=args.free_ports)
        self.children = Children(work)
        self.apps: list[asyncio.Server] = []
        self.seen: dict[str, Seen] = {}  # per version: what its application saw
        self.admins: dict[str, str] = {}  # per sidecar group: its admin URL
        self.cert_dirs: list[Path] = []
        self.xds = ""
        self.meshctl_token = work / "meshctl.token"

    def meshctl(self, *args: str) -> list[str]:
        """The installed ``meshctl`` entry point beside this interpreter, else its module."""
        exe = Path(sys.executable).with_name("meshctl")
        prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "controlplane.meshctl"]
        return [*prog, "--server", self.xds, "--token-file", str(self.meshctl_token), *args]

    async def start(self) -> None:
        lay = self.layout
        if not self.args.free_ports and (taken := layout.busy(lay.fixed_ports())):
            raise DemoError(
                "the embedded default mesh needs these addresses, and something already listens there:\n  "
                + "\n  ".join(taken)
                + "\nStop it (another demo?), or run `python -m controlplane.demo --free-ports`."
            )
        for app in lay.apps:
            server, self.seen[app.version] = await start_app(app.version, *app.address)
            self.apps.append(server)
        await self._start_controlplane()
        await self._start_sidecars()
        for app in lay.apps:
            host, port = app.address
            print(f"  {SERVICE} {app.version} app      {host}:{port}, behind {app.sidecar}'s sidecar")

    async def _start_controlplane(self) -> None:
        lay, work = self.layout, self.work
        (work / "tokens").touch()
        layout.write_token(work / "management-tokens", OPERATOR, self.meshctl_token)
        argv = [sys.executable, "-m", "controlplane", "serve", "--ca-dir", str(work / "ca")]
        argv += ["--tokens", str(work / "tokens"), "--management-tokens", str(work / "management-tokens")]
        argv += ["--xds-address", lay.xds_address, "--xds-tls-address", "off"]  # a loopback demo
        argv += ["--mesh", str(lay.mesh_file)] if lay.mesh_file else []
        cp = self.children.start("the controlplane", argv, "controlplane.log")
        found = await self.children.wait_for_line(cp, r"serving xDS \(ADS\) on (\S+)", STARTUP_TIMEOUT)
        self.xds = found.group(1)
        mesh = lay.mesh_file or "the embedded default mesh"
        print(f"  controlplane      pid {cp.proc.pid:<7d} CA + xDS + management on {self.xds} ({mesh})")

    async def _start_sidecars(self) -> None:
        started: list[Child] = []
        for car in self.layout.sidecars:
            admin_port = layout.free_port()
            token = layout.write_token(self.work / "tokens", car.identity, self.work / f"{car.group}.token")
            argv = [sys.executable, "-m", "meshproxy", "run"]
            argv += ["-c", str(layout.write_bootstrap(self.work, car, admin_port, self.xds))]
            argv += ["--ca-address", self.xds, "--identity", car.identity]
            argv += ["--token-file", str(token), "--cert-dir", str(car.cert_dir)]
            self.cert_dirs.append(car.cert_dir)
            started.append(self.children.start(f"{car.group}'s sidecar", argv, f"{car.group}.log"))
            self.admins[car.group] = f"http://127.0.0.1:{admin_port}"
        cars = list(zip(self.layout.sidecars, started, strict=True))
        await asyncio.gather(
            *(self.children.wait_ready(child, self.admins[car.group], STARTUP_TIMEOUT) for car, child in cars)
        )
        for car, child in cars:
            ads = "state of the world" if car.api_type == "GRPC" else "delta"
            where = f"inbound {car.inbound[0]}:{car.inbound[1]}" if car.inbound else "outbound only"
            print(
                f"  {car.group + ' sidecar':17s} pid {child.proc.pid:<7d} {car.identity} "
                f"(SVID from the CA), ADS {ads}, {where}, admin {self.admins[car.group]}"
            )

    async def traffic(self, title: str) -> Tally:
        host, port = self.layout.entry
        n, c = self.args.requests, self.args.connections
        print(f"\n{title}: {n} requests, {c} keep-alive connections, to {CALLER}'s sidecar {host}:{port}")
        t0 = time.perf_counter()
        tally = await send(host, port, SERVICE, n, c)
        elapsed = time.perf_counter() - t0
        for app in self.layout.apps:
            k = tally.versions[app.version]
            print(f"    {SERVICE} {app.version}  {k:5d}  {100 * k / max(tally.total, 1):5.1f}%")
        failed = f", first error: {tally.first_error}" if tally.failed else ""
        print(f"    failed    {tally.failed:5d}{failed}")
        print(f"    ({elapsed:.2f}s, {tally.total / elapsed:,.0f} req/s)")
        return tally

    async def shift(self) -> None:
        """``meshctl split``, then until the caller's sidecar has applied the new route."""
        caller = self.admins[CALLER]
        before = await _route_version(caller)
        print(f"\n$ meshctl split {SERVICE} {SHIFT}")
        t0 = time.perf_counter()
        code, out = await run(self.meshctl("split", SERVICE, *SHIFT.split()))
        print(_indent(out))
        if code != 0:
            raise DemoError(f"meshctl split exited with status {code}")
        deadline = time.monotonic() + 10
        while (after := await _route_version(caller)) == before:
            if time.monotonic() > deadline:
                raise DemoError(f"{CALLER}'s sidecar did not receive the new route within 10s")
            await asyncio.sleep(0.02)  # polling the sidecar's admin: no event crosses processes
        print(
            f"    {CALLER}'s sidecar applied RouteConfiguration version {after} (was {before}) "
            f"{time.perf_counter() - t0:.2f}s after the command started"
        )

    async def inbound(self) -> dict[str, Inbound]:
        """Per version, now: its sidecar's inbound TLS and HTTP counters and the callers its app saw."""
        caller = self.layout.sidecars[0].identity
        apps = self.layout.apps
        stats = await asyncio.gather(
            *(fetch_json(f"{self.admins[a.sidecar]}/stats?format=flat") for a in apps)
        )
        pairs = zip(apps, stats, strict=True)
        return {a.version: Inbound.measure(st, self.seen[a.version], caller) for a, st in pairs}

    def mtls(
        self, target: str, first: tuple[Tally, dict[str, Inbound]], second: tuple[Tally, dict[str, Inbound]]
    ) -> list[tuple[bool, str]]:
        """Report how each round reached the versions, and the checks that every request went over
        PQ mTLS; each round is its tally and each version's ``Inbound`` when it ended."""
        (before, mid), (after, end) = first, second
        caller = self.layout.sidecars[0].identity
        shifted = {v: end[v].since(mid[v]) for v in end}
        print(f"\nTLS between the sidecars (each {SERVICE} sidecar's inbound listener, admin /stats):")
        for app in self.layout.apps:
            now = end[app.version]
            print(
                f"    {app.sidecar}'s sidecar: handshakes by group {dict(now.handshakes)}, refused "
                f"{now.refused}; requests {mid[app.version].requests} before the shift, "
                f"{shifted[app.version].requests} after"
            )
        for app in self.layout.apps:
            now = end[app.version]
            print(
                f"    {SERVICE} {app.version} app: {now.app_requests} requests, {now.vouched} from "
                f"{caller}, {shifted[app.version].vouched} of them after the shift"
            )
        print(f"    the last x-forwarded-client-cert {SERVICE} {target} saw: {self.seen[target].xfcc}")
        via = next(a.sidecar for a in self.layout.apps if a.version == target)
        return [
            *(
                (end[a.version].pq_only, f"{a.sidecar}'s sidecar: inbound TLS {PQ_GROUP} only, none refused")
                for a in self.layout.apps
            ),
            (
                all(mid[v].all_vouched(before.versions[v]) for v in mid),
                f"before the shift each request went over mTLS, its app saw the caller {caller}",
            ),
            (
                all(shifted[v].all_vouched(after.versions[v]) for v in shifted),
                f"after the shift all {after.total} requests went over PQ mTLS through {via}'s "
                f"sidecar, {target} saw the caller on each",
            ),
        ]

    def stop(self) -> None:
        codes = self.children.stop_all()
        for server in self.apps:
            server.close()
        for cert_dir in self.cert_dirs:  # the SVIDs and keys of the sidecars it started
            shutil.rmtree(cert_dir, ignore_errors=True)
        if codes:
            print("stopped: " + ", ".join(f"{name} ({code})" for name, code in codes.items()))


async def _route_version(admin: str) -> str:
    dump = await fetch_json(f"{admin}/config_dump?format=compiled")
    return str(dump["xds"]["types"].get("RouteConfiguration", {}).get("version_info", ""))


async def _demo(args: argparse.Namespace, work: Path) -> int:
    demo = Demo(args, work)
    lay = demo.layout
    target = SHIFT.split()[-1].split("=")[0]  # the version that takes everything
    try:
        print("meshproxy demo: a controlplane, three sidecars over post-quantum mTLS, a live traffic shift")
        await demo.start()
        before = await demo.traffic(f"1. traffic with the mesh's split {lay.split}")
        mid = await demo.inbound()
        await demo.shift()
        after = await demo.traffic(f"2. traffic after `meshctl split {SERVICE} {SHIFT}`")
        end = await demo.inbound()

        print("\n$ meshctl proxies")
        code, table = await run(demo.meshctl("proxies"))
        print(_indent(table))
        _, proxies_json = await run(demo.meshctl("-o", "json", "proxies"))
        groups = [car.group for car in lay.sidecars]
        acked = all_acked(proxies_json, set(groups))

        checks = [
            (before.failed == 0 and after.failed == 0, "every request answered"),
            (matches(before, dict(lay.service.routes[-1].split)), f"the counts match the split {lay.split}"),
            (after.versions[target] == after.total, f"every request went to {target} after the shift"),
            (code == 0 and acked, f"meshctl proxies: {', '.join(groups)} connected, every version ACKed"),
            *demo.mtls(target, (before, mid), (after, end)),
        ]
        print()
        for ok, what in checks:
            print(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if args.keep_running:
            print(f"\nrunning; try `{' '.join(demo.meshctl('status'))}`; Ctrl-C to stop", flush=True)
            await asyncio.Event().wait()
        return 0 if all(ok for ok, _ in checks) else 1
    finally:
        demo.stop()


async def _main(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM cancel the demo, whose `finally` stops every child process.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    work = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
    try:
        code = await _demo(args, work)
    except asyncio.CancelledError:
        print(f"\ninterrupted: everything the demo started is stopped; logs in {work}")
        return 130
    except (DemoError, ConfigError) as exc:
        why = "\n  ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
        print(f"\nmeshproxy demo: {why}", file=sys.stderr)
        print(f"logs and bootstraps kept in {work}", file=sys.stderr)
        return 2
    if code == 0 and not args.keep_running:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs and bootstraps in {work}")
    return code


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.demo", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=400, help="requests per traffic round (default 400)")
    p.add_argument("--connections", type=int, default=4, help="keep-alive connections (default 4)")
    p.add_argument(
        "--free-ports",
        action="store_true",
        help="run a copy of the default mesh on free ports (beside another demo, or in tests)",
    )
    p.add_argument("--keep-running", action="store_true", help="leave everything up until Ctrl-C")
    p.add_argument(
        "--pods",
        action="store_true",
        help="the mesh in network-namespace pods with transparent sidecars (needs root; "
        "uses --requests only)",
    )
    args = p.parse_args()
    if args.requests < 1 or not 1 <= args.connections <= args.requests:
        p.error("--requests must be at least 1, --connections between 1 and --requests")
    if args.pods:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        return pods_demo.run(args.requests)
    os.environ["PYTHONUNBUFFERED"] = "1"  # the children's logs, line by line
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # the report, as it happens
    from meshproxy.cli import new_event_loop

    loop = new_event_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return loop.run_until_complete(_main(args))
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
