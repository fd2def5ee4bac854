"""Start-up: how long until a sidecar is ready and until each CLI command answers.

    python bench/startup.py                 # 10 runs per measure
    python bench/startup.py --runs 20 --json
    python bench/startup.py --only version,help

Measures (issue 18), each over repeated runs, median and p90 against its target:

| measure | what is timed | target |
|---|---|---:|
| floor | `python -c pass` (the interpreter alone, for reference) | - |
| version | `tulle --version` | 0.2 s |
| help | `tulle --help` | 0.2 s |
| proxy-static | `tulle proxy --static-dst ...` started -> admin `GET /ready` 200 | 0.3 s |
| proxy-mtls | the same with `--control-addr --identity --identity-token` | 0.6 s |
| | and `--trust-anchors`: ready once Identity.Certify issued its certificate | |
| stat | `tulle stat --json` against a running control plane scraping one proxy | 0.3 s |

The CLI commands run through hyperfine when it is installed (Debian: `apt-get
install -y hyperfine`), else through repeated timed runs here; both report the
wall-clock time of the whole process, start to exit. The proxy measures start
the process and poll `/ready` every 2 ms with a raw socket (a refused connect
costs microseconds), then stop it with SIGTERM before the next run; each run
uses fresh ports; one second after ready the proxy's resident memory (idle
RSS) is read too. `tulle` is the console script beside this interpreter (what
`pip install` puts on PATH), else `python -m tulle`; pass `--tulle` to choose.
Everything runs on 127.0.0.1; every process is stopped at the end.

Bytecode: an installed Tulle has its .pyc files (pip compiles them), so by
default every child runs with a fresh PYTHONPYCACHEPREFIX (and without
PYTHONDONTWRITEBYTECODE) that the warm-up runs fill; `--no-bytecode` measures
the compile-every-import case instead (PYTHONDONTWRITEBYTECODE=1, no cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.002
STOP_TIMEOUT_S = 10.0
IDLE_AFTER_READY_S = 1.0
TRUST_DOMAIN = "bench.local"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"

TARGETS_S = {
    "floor": None,
    "version": 0.2,
    "help": 0.2,
    "proxy-static": 0.3,
    "proxy-mtls": 0.6,
    "stat": 0.3,
}
DESCRIPTIONS = {
    "floor": "`python -c pass` (interpreter alone)",
    "version": "`tulle --version`",
    "help": "`tulle --help`",
    "proxy-static": "`tulle proxy` start to `/ready` 200, static destinations",
    "proxy-mtls": "`tulle proxy` start to `/ready` 200, control plane + mTLS (Certify)",
    "stat": "`tulle stat --json` against a running mesh",
}


class BenchError(Exception):
    pass


@dataclass
class Result:
    name: str
    times_s: list[float]
    tool: str
    cpu_s: list[float]
    rss_kib: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times_s)

    @property
    def p90(self) -> float:
        ordered = sorted(self.times_s)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def http_status(port: int, path: str) -> int | None:
    """The status of `GET path`, or None when nothing answers yet (raw socket: cheap)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def tulle_command(explicit: str) -> list[str]:
    if explicit:
        return explicit.split()
    script = Path(sys.executable).parent / "tulle"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "tulle"]


class Processes:
    """Every long-running child this benchmark starts; `close()` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        child = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(STOP_TIMEOUT_S)
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in list(self.children):
            self.stop(child)

    def log_tail(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def wait_for(child: subprocess.Popen[bytes], what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchError(f"{what} exited with status {child.returncode}")
        if check():
            return
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"{what} not ready within {READY_TIMEOUT_S} s")


def time_commands(
    argv: list[str], runs: int, use_hyperfine: bool
) -> tuple[list[float], list[float], str]:
    """Wall-clock and CPU seconds of `argv`, start to exit, `runs` times (after a warm-up)."""
    hyperfine = shutil.which("hyperfine") if use_hyperfine else None
    if hyperfine:
        with tempfile.NamedTemporaryFile(suffix=".json") as export:
            subprocess.run(
                [hyperfine, "--shell=none", "--warmup", "1", "--runs", str(runs), "--style", "none",
                 "--export-json", export.name, " ".join(_quote(a) for a in argv)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            document = json.loads(Path(export.name).read_text())
        result = document["results"][0]
        # hyperfine keeps only the mean CPU time per command, not each run's.
        cpu = [float(result["user"]) + float(result["system"])]
        return [float(t) for t in result["times"]], cpu, "hyperfine"
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    times, cpu = [], []
    for _ in range(runs):
        before = _children_cpu()
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - before)
    return times, cpu, "timed runs"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quote(arg: str) -> str:
    # hyperfine --shell=none splits on whitespace and honours quotes.
    return f'"{arg}"' if any(c.isspace() for c in arg) else arg


def time_proxy_ready(
    processes: Processes, tulle: list[str], flags: Callable[[], list[str]], runs: int, name: str
) -> tuple[list[float], list[float], list[int]]:
    """Seconds (wall, CPU) from starting `tulle proxy` to its first `/ready` 200, `runs` times.

    Also its resident memory once idle (one second after ready)."""
    times, cpu, rss = [], [], []
    for index in range(runs + 1):  # the first run warms the page cache and is dropped
        admin_port = free_port()
        argv = [
            *tulle, "proxy",
            "--inbound-addr", f"{LOOPBACK}:{free_port()}",
            "--outbound-addr", f"{LOOPBACK}:{free_port()}",
            "--admin-addr", f"{LOOPBACK}:{admin_port}",
            *flags(),
        ]  # fmt: skip
        started = time.perf_counter()
        child = processes.start(name, argv)
        try:
            wait_for(child, f"`tulle proxy` ({name})", _ready_probe(admin_port))
            elapsed = time.perf_counter() - started
            used = process_cpu_s(child.pid)
            time.sleep(IDLE_AFTER_READY_S)  # RSS when idle, not mid-start
            resident = rss_kib(child.pid)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{processes.log_tail(name)}") from None
        finally:
            processes.stop(child)
        if index:
            times.append(elapsed)
            cpu.append(used)
            rss.append(resident)
    return times, cpu, rss


def _ready_probe(admin_port: int) -> Callable[[], bool]:
    return lambda: http_status(admin_port, "/ready") == 200


@dataclass
class Mesh:
    """A control plane (gRPC, HTTP API, Identity.Certify) and one proxy it scrapes."""

    grpc_port: int
    http_port: int
    issuer: Path
    token: str


@contextlib.contextmanager
def running_mesh(processes: Processes, tulle: list[str], work: Path) -> Iterator[Mesh]:
    issuer = work / "issuer"
    subprocess.run(
        [*tulle, "identity", "init", "--dir", str(issuer), "--trust-domain", TRUST_DOMAIN],
        check=True, capture_output=True,
    )  # fmt: skip
    token = subprocess.run(
        [*tulle, "identity", "token", CLIENT_ID, "--dir", str(issuer)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    backend_port, proxy_admin = free_port(), free_port()
    manifest = work / "mesh.yaml"
    manifest.write_text(
        f"services:\n  - name: books\n    endpoints: ['{LOOPBACK}:{backend_port}']\n"
    )
    grpc_port, http_port = free_port(), free_port()
    control = processes.start(
        "control",
        [*tulle, "control", "--manifest", str(manifest),
         "--grpc-addr", f"{LOOPBACK}:{grpc_port}", "--admin-addr", f"{LOOPBACK}:{free_port()}",
         "--http-addr", f"{LOOPBACK}:{http_port}", "--identity-dir", str(issuer),
         "--scrape-targets", f"web=web-0={LOOPBACK}:{proxy_admin}", "--scrape-interval", "1"],
    )  # fmt: skip
    try:
        wait_for(control, "`tulle control`", lambda: http_status(http_port, "/api") == 200)
    except BenchError as exc:
        raise BenchError(f"{exc}\n{processes.log_tail('control')}") from None
    proxy = processes.start(
        "mesh-proxy",
        [*tulle, "proxy", "--inbound-addr", f"{LOOPBACK}:{free_port()}",
         "--outbound-addr", f"{LOOPBACK}:{free_port()}",
         "--admin-addr", f"{LOOPBACK}:{proxy_admin}",
         "--control-addr", f"{LOOPBACK}:{grpc_port}", "--identity", CLIENT_ID,
         "--identity-token", token, "--trust-anchors", str(issuer / "bundle.pem")],
    )  # fmt: skip
    try:
        wait_for(proxy, "the mesh's proxy", lambda: http_status(proxy_admin, "/ready") == 200)
        yield Mesh(grpc_port, http_port, issuer, token)
    finally:
        processes.stop(proxy)
        processes.stop(control)


def run(args: argparse.Namespace) -> list[Result]:
    tulle = tulle_command(args.tulle)
    wanted = [name for name in TARGETS_S if not args.only or name in args.only]
    results: list[Result] = []
    use_hyperfine = not args.no_hyperfine

    def cli(name: str, argv: list[str]) -> None:
        if name in wanted:
            print(f"[startup] {name}: {' '.join(argv)}", file=sys.stderr)
            times, cpu, tool = time_commands(argv, args.runs, use_hyperfine)
            results.append(Result(name, times, tool, cpu))

    cli("floor", [sys.executable, "-c", "pass"])
    cli("version", [*tulle, "--version"])
    cli("help", [*tulle, "--help"])
    with tempfile.TemporaryDirectory(prefix="tulle-startup-") as tmp:
        work = Path(tmp)
        processes = Processes(work)
        try:
            if "proxy-static" in wanted:
                print("[startup] proxy-static", file=sys.stderr)
                static = ["--static-dst", f"books={LOOPBACK}:{free_port()}"]
                times, cpu, rss = time_proxy_ready(
                    processes, tulle, lambda: static, args.runs, "proxy"
                )
                results.append(Result("proxy-static", times, "timed runs", cpu, rss))
            if {"proxy-mtls", "stat"} & set(wanted):
                with running_mesh(processes, tulle, work) as mesh:
                    if "proxy-mtls" in wanted:
                        print("[startup] proxy-mtls", file=sys.stderr)
                        flags = [
                            "--control-addr", f"{LOOPBACK}:{mesh.grpc_port}",
                            "--identity", CLIENT_ID, "--identity-token", mesh.token,
                            "--trust-anchors", str(mesh.issuer / "bundle.pem"),
                        ]  # fmt: skip
                        times, cpu, rss = time_proxy_ready(
                            processes, tulle, lambda: flags, args.runs, "mtls"
                        )
                        results.append(Result("proxy-mtls", times, "timed runs", cpu, rss))
                    control_url = f"http://{LOOPBACK}:{mesh.http_port}"
                    cli("stat", [*tulle, "stat", "--json", "--control", control_url])
        finally:
            processes.close()
    return results


def render(results: list[Result], tulle: list[str], runs: int, bytecode: str) -> str:
    lines = [
        f"`{' '.join(tulle)}`, {runs} runs per measure, {bytecode}, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| measure | median s | p90 s | target s | | CPU s | runs by |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for result in results:
        target = TARGETS_S[result.name]
        verdict = "" if target is None else ("ok" if result.median <= target else "OVER")
        lines.append(
            f"| {DESCRIPTIONS[result.name]} | {result.median:.3f} | {result.p90:.3f} | "
            f"{'-' if target is None else f'{target:.1f}'} | {verdict} | {result.cpu_median:.3f} | "
            f"{result.tool} |"
        )
    for result in results:
        if result.rss_kib:
            lines.append(
                f"\n{DESCRIPTIONS[result.name]}: idle RSS "
                f"{statistics.median(result.rss_kib) / 1024:.1f} MiB (median, 1 s after ready)"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="Runs per measure (default 10).")
    parser.add_argument(
        "--only", type=lambda s: set(s.split(",")), default=set(),
        help=f"Comma-separated measures: {','.join(TARGETS_S)}.",
    )  # fmt: skip
    parser.add_argument("--tulle", default="", help="The tulle command (default: console script).")
    parser.add_argument("--no-hyperfine", action="store_true", help="Time CLI runs here.")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="Compile every import (no .pyc cache)."
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of markdown.")
    args = parser.parse_args()
    unknown = args.only - set(TARGETS_S)
    if unknown:
        parser.error(f"unknown measures: {', '.join(sorted(unknown))}")
    # Every child inherits this environment (see "Bytecode" above).
    cache = tempfile.mkdtemp(prefix="tulle-startup-pycache-")
    if args.no_bytecode:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
    else:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = cache
    try:
        results = run(args)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench/startup.py: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if args.json:
        document = {
            r.name: {"median_s": r.median, "p90_s": r.p90, "target_s": TARGETS_S[r.name],
                     "times_s": r.times_s, "cpu_s": r.cpu_s, "rss_kib": r.rss_kib,
                     "tool": r.tool}
            for r in results
        }  # fmt: skip
        print(json.dumps(document, indent=2))
    else:
        bytecode = "no .pyc (compiled on every import)" if args.no_bytecode else ".pyc cached"
        print(render(results, tulle_command(args.tulle), args.runs, bytecode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
