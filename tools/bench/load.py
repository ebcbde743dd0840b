"""The load generators: h2load (HTTP/2 over TLS, through nginx) and wrk (HTTP/1.1, straight to
gunicorn), each run read into a results.Run; with a CpuMeter, the servers' CPU per request."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tools.bench.processes import BenchError, CpuMeter, stop
from tools.bench.results import Run

# A stream that failed this close to the end of a run was cut off by h2load stopping.
CUT_OFF_WINDOW_US = 50_000


def read_request_log(
    path: Path, duration_s: int, request_interval_s: float = 0
) -> tuple[list[int], int]:
    """h2load's per-request log, which holds the measured period only (not the warm-up).
    Returns the latencies (µs) of answered requests, sorted, and the number of streams that
    failed before the end of the run: h2load stops its clients at the end, and the streams
    then in flight fail too, without the server having done anything wrong."""
    rows = []
    with path.open() as lines:
        for line in lines:
            start, status, duration = map(int, line.split("\t")[:3])
            rows.append((start, status, duration))
    if not rows:
        raise BenchError(f"no requests logged in {path}")
    begin = min(start for start, _, _ in rows)
    end = max(start + duration for start, _, duration in rows)
    # h2load's timed mode never reconnects: a connection the server closed stays closed.
    # At a fixed rate (--rps) the first and last requests are up to one interval from the ends.
    if end - begin < (0.8 * duration_s - request_interval_s) * 1e6:
        raise BenchError(f"the load stopped after {(end - begin) / 1e6:.1f} s of {duration_s} s")
    latencies = sorted(duration for _, status, duration in rows if status != -1)
    failed_before_the_end = sum(
        1
        for start, status, duration in rows
        if status == -1 and end - (start + duration) > CUT_OFF_WINDOW_US
    )
    return latencies, failed_before_the_end


def percentile(sorted_values: list[int], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] / 1000


def h2load(
    url: str,
    work: Path,
    *,
    clients: int,
    streams: int = 1,
    duration: int,
    warmup: int,
    headers: dict[str, str] | None = None,
    rps: int | None = None,
    meter: CpuMeter | None = None,
    port: int = 443,
    data: Path | None = None,
) -> Run:
    """HTTP/2 over TLS to an edge (SNI and Host are the site's name, the TCP peer is loopback).
    With `data`, every request POSTs that file. With `meter`, the servers' CPU is measured
    from the end of the warm-up to the end."""
    log_file = work / "h2load-requests.tsv"
    log_file.unlink(missing_ok=True)
    command = [
        "h2load",
        f"--connect-to=127.0.0.1:{port}",
        f"-c{clients}",
        f"-m{streams}",
        # One client thread: h2load stops each thread's clients on that thread's own clock, so
        # a second thread would cut off streams in the middle of the other's run.
        "-t1",
        f"-D{duration}",
        f"--warm-up-time={warmup}",
        f"--log-file={log_file}",
    ]
    if rps:
        command.append(f"--rps={rps}")
    if data:
        command.append(f"--data={data}")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    result = _run_metered([*command, url], warmup, duration, meter)
    return _read_h2load(result, log_file, duration, 1 / rps if rps else 0, meter)


def _read_h2load(
    result: subprocess.CompletedProcess,
    log_file: Path,
    duration: int,
    request_interval: float,
    meter: CpuMeter | None,
) -> Run:
    output = result.stdout
    summary = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if result.returncode != 0 or not (summary and counts and codes):
        raise _failed(result)
    _, done, _, failed, _, timeout = map(int, counts.groups())
    ok, *not_ok = map(int, codes.groups())
    latencies, failed_before_the_end = read_request_log(log_file, duration, request_interval)
    errors = failed_before_the_end + timeout + sum(not_ok)
    cpu = {"cpu_ms_per_request": meter.per_request_ms(done)} if meter else {}
    return Run(
        value=float(summary[1]),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        requests=done,
        errors=errors,
        detail={
            "2xx": ok,
            "3xx_4xx_5xx": not_ok,
            "failed_streams": failed,
            "cut_off_at_the_end": failed - failed_before_the_end,
            **cpu,
            # h2load's own account of what went wrong, kept for the JSON.
            **({"output": output[-1500:]} if errors else {}),
        },
    )


def _failed(result: subprocess.CompletedProcess) -> BenchError:
    return BenchError(
        f"{result.args[0]} failed ({result.returncode}): "
        f"{result.stdout[-800:]} {result.stderr[-400:]}"
    )


def _run_metered(
    command: list[str], warmup: int, duration: int, meter: CpuMeter | None
) -> subprocess.CompletedProcess:
    """Run a load generator; with `meter`, start it once the warm-up is over."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if meter:
            time.sleep(warmup)
            meter.start()
        stdout, stderr = process.communicate(timeout=duration + warmup + 60)
    finally:
        stop(process, signal.SIGKILL, timeout=5)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def wrk(
    url: str, *, clients: int, duration: int, warmup: int, meter: CpuMeter | None = None
) -> Run:
    """HTTP/1.1 straight to gunicorn (its sync workers close every connection, which wrk
    handles and h2load's timed mode does not)."""
    base = ["wrk", "-t1", f"-c{clients}"]
    subprocess.run(
        [*base, f"-d{warmup}s", url], capture_output=True, check=True, timeout=warmup + 60
    )
    result = _run_metered([*base, f"-d{duration}s", "--latency", url], 0, duration, meter)
    output = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    done = re.search(r"(\d+) requests in", output)
    if result.returncode != 0 or not (rate and done):
        raise _failed(result)

    def ms(percent: str) -> float:
        value, unit = re.search(
            rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE
        ).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(non_2xx[1]) if non_2xx else 0
    return Run(
        value=float(rate[1]),
        p50_ms=ms("50"),
        p99_ms=ms("99"),
        requests=int(done[1]),
        errors=errors,
        detail={"cpu_ms_per_request": meter.per_request_ms(int(done[1]))} if meter else {},
    )
