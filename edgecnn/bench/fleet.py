"""`edgecnn bench ARTIFACT... --host HOST...` and `edgecnn deploy`: the workstation drives boards over SSH.

Per host, in its own thread: probe the board's edgecnn (version, manifest and result schema, artifact folder, which
files it already holds), deploy each artifact and its manifest to ``<board cache>/artifacts/<sha256>/`` (skipped
when there with the right hash), run the board's own ``edgecnn bench`` on them in a remote temp folder, bring its
bench.json back and remove the folder. Rows from every host merge into one result (schema.json): each row carries
``host`` (and ``source``), ``environments[host]`` that board's fingerprint, ``hosts[host]`` what happened there.
A host that fails gives failed rows with the reason; the others go on. Ctrl-C stops every remote run (its process
group, started under ``setsid``) and removes the remote temp folders before the KeyboardInterrupt goes on.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from edgecnn.bench.jobs import Artifact, Job, collect_artifacts, parse_threads, plan_jobs
from edgecnn.bench.remote import (RemoteHostError, SshHost, Stopped, copy_to, last_line, run_script,
                                  SAFE_REMOTE_PATH)
from edgecnn.bench.result import RESULT_SCHEMA_VERSION, BenchRow, Status
from edgecnn.errors import UsageError
from edgecnn.manifest import find_manifest

CLEANUP_WAIT_S = 60.0  # after Ctrl-C: how long the hosts get to stop their runs and clean up

# Finds the board's edgecnn and puts its command words before "$@" (after the script consumed its own $1).
_RESOLVE = r"""e=$1; shift
case $e in "~/"*) e="$HOME/${e#??}";; esac
if [ -n "$e" ]; then
  command -v "$e" >/dev/null 2>&1 || { echo "edgecnn-missing $e" >&2; exit 3; }
  set -- "$e" "$@"
elif command -v edgecnn >/dev/null 2>&1; then set -- edgecnn "$@"
elif command -v python3 >/dev/null 2>&1 && python3 -c 'import edgecnn' >/dev/null 2>&1; then
  set -- python3 -m edgecnn "$@"
else echo "edgecnn-missing" >&2; exit 3; fi
"""
_PROBE = _RESOLVE + r"""d=$(mktemp -d "${TMPDIR:-/tmp}/edgecnn-fleet.XXXXXX") || exit 5
printf 'TMP %s\n' "$d"
"$@" remote-info CHECKS && exit 0
rm -rf -- "$d"
v=$("$@" --version 2>&1) || { printf '%s\n' "$v" >&2; exit 4; }
printf 'VERSION %s\n' "$v"
exit 6
"""
_PLACE = r"""d=$1; a=$2; shift 2
while [ $# -gt 1 ]; do
  mkdir -p -- "$(dirname -- "$a/$2")" && mv -f -- "$d/$1" "$a/$2" || exit 7
  shift 2
done
"""
# The run's own session: its process group is what a stop kills. The "stop" marker closes the race with a stop
# that comes before the group id is written (the stopper touches it before it reads pgid).
_RUN = r"""d=$1; shift
""" + _RESOLVE + r"""cd "$d" || exit 9
s=; command -v setsid >/dev/null 2>&1 && s=setsid
$s sh -c '[ -e stop ] && exit 130; echo $$ > pgid || exit 9; [ -e stop ] && exit 130; exec "$@"' edgecnn-bench "$@" \
  >stdout 2>stderr </dev/null
"""
_STOP = r"""d=$1
[ -d "$d" ] || exit 0
touch "$d/stop" 2>/dev/null
if [ -f "$d/pgid" ]; then
  p=$(cat "$d/pgid")
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  i=0
  while [ $i -lt 50 ] && { kill -0 -- "-$p" 2>/dev/null || kill -0 "$p" 2>/dev/null; }; do sleep 0.1; i=$((i+1)); done
  kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
fi
rm -rf -- "$d"
"""
_FETCH = r"""d=$1
rc=8
[ -f "$d/out/bench.json" ] && cat "$d/out/bench.json" && rc=0
tail -n 5 "$d/stderr" >&2 2>/dev/null
rm -rf -- "$d"
exit $rc
"""


@dataclass(frozen=True)
class Upload:
    """One file the board must hold: ``<artifacts dir>/<folder>/<name>`` with content ``sha256``."""

    local: Path
    folder: str  # the artifact's sha256: the content-addressed folder
    name: str
    sha256: str

    @property
    def relative(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def check(self) -> str:
        return f"{self.relative}={self.sha256}"


def plan_uploads(artifacts: Sequence[Artifact]) -> dict[Path, list[Upload]]:
    """Artifact path -> its uploads: the artifact, and the manifest beside it when that manifest lists it."""
    from edgecnn.fileio import sha256_of  # noqa: PLC0415

    plan: dict[Path, list[Upload]] = {}
    for art in artifacts:
        digest = sha256_of(art.path)
        files = [Upload(art.path, digest, art.path.name, digest)]
        manifest = find_manifest(art.path) if art.manifest is not None else None
        if manifest is not None:
            files.append(Upload(manifest, digest, manifest.name, sha256_of(manifest)))
        plan[art.path] = files
    return plan


class Board:
    """One host's session: every ssh call for it, its remote temp folder, and stopping what it started."""

    def __init__(self, host: SshHost, remote_edgecnn: Optional[str], stop: threading.Event,
                 say: Callable[[str], None] = lambda text: None) -> None:
        self.host, self.remote_edgecnn, self.stop, self.say = host, remote_edgecnn or "", stop, say
        self.tmp: Optional[str] = None
        self.info: dict[str, Any] = {}

    def probe(self, uploads: Sequence[Upload]) -> dict[str, Any]:
        """The board's remote-info (see remote.board_info), checked against this edgecnn; makes the temp folder."""
        import shlex  # noqa: PLC0415

        self.say("checking edgecnn")
        script = _PROBE.replace("CHECKS", " ".join(shlex.quote(u.check) for u in uploads))
        done = run_script(self.host, script, [self.remote_edgecnn], self.stop)
        lines = done.stdout.splitlines()
        self.tmp = next((ln[4:] for ln in lines if ln.startswith("TMP ")), None)
        version = next((ln[8:] for ln in lines if ln.startswith("VERSION ")), "?")
        if done.returncode != 0:
            self.tmp = None  # the probe removed it, or never made it
            raise RemoteHostError(self._probe_failure(done.returncode, done.stderr, version))
        raw = next((ln for ln in lines if ln.startswith("{")), "")
        try:
            self.info = json.loads(raw)
        except json.JSONDecodeError:
            raise RemoteHostError(f"{self.host.spec}: the board's edgecnn answered remote-info with no JSON") from None
        check_board(self.info, self.host.spec)
        if self.tmp is None or not SAFE_REMOTE_PATH.match(self.tmp):
            raise RemoteHostError(f"{self.host.spec}: remote temp folder {self.tmp!r} is not a plain path",
                                  "set TMPDIR on the board to a plain path")
        return self.info

    def _probe_failure(self, code: int, stderr: str, version: str) -> str:
        where, ours = self.host.spec, _our_version()
        if code == 3:
            if self.remote_edgecnn:
                return f"{where}: --remote-edgecnn {self.remote_edgecnn} is not on the board (or not executable)"
            return (f"{where}: no edgecnn on the board (not on PATH, and python3 -m edgecnn fails): install "
                    f"edgecnn[device]=={ours} there, or give its path with --remote-edgecnn PATH")
        if code == 4:
            return f"{where}: the board's edgecnn does not start ({last_line(stderr) or 'no message'})"
        if code == 6:
            return (f"{where}: the board's edgecnn ({version}) cannot report its versions (remote-info): "
                    f"install edgecnn=={ours} there")
        return f"{where}: probing the board failed (exit {code}: {last_line(stderr) or 'no message'})"

    def deploy(self, uploads: Sequence[Upload]) -> tuple[int, int]:
        """Copy what the board lacks (scp into the temp folder, then one atomic mv each). Returns (copied, kept)."""
        present = set(self.info.get("present", []))
        missing = [u for u in uploads if u.check not in present]
        if missing:
            self.say(f"copying {len(missing)} file(s)")
            with tempfile.TemporaryDirectory(prefix="edgecnn-deploy-") as stage:
                staged = []
                for i, upload in enumerate(missing):  # unique names: two artifacts may share a file name
                    link = Path(stage) / f"up-{i}"
                    link.symlink_to(upload.local.absolute())
                    staged.append(link)
                copy_to(self.host, staged, f"{self.tmp}/", stop=self.stop)
            pairs = [item for i, u in enumerate(missing) for item in (f"up-{i}", u.relative)]
            done = run_script(self.host, _PLACE, [self.tmp, self.info["artifacts_dir"], *pairs], self.stop)
            if done.returncode != 0:
                raise RemoteHostError(f"{self.host.spec}: placing the copies failed ({last_line(done.stderr)})")
        return len(missing), len(uploads) - len(missing)

    def remote_path(self, upload: Upload) -> str:
        return f"{self.info['artifacts_dir']}/{upload.relative}"

    def bench(self, bench_args: Sequence[str], data: Optional[Path]) -> tuple[Optional[dict], str]:
        """Run the board's `edgecnn bench` in the temp folder; returns (its bench.json, or None, and its last
        stderr line). ``data``: a local --data path copied over first; "{data}" in ``bench_args`` becomes its
        remote path."""
        args = list(bench_args)
        if data is not None:
            self.say("copying --data")
            copy_to(self.host, [data], f"{self.tmp}/data{data.suffix}", recursive=data.is_dir(), stop=self.stop)
            args = [f"{self.tmp}/data{data.suffix}" if a == "{data}" else a for a in args]
        self.say("running edgecnn bench")
        run_script(self.host, _RUN, [self.tmp, self.remote_edgecnn, *args, "--out", f"{self.tmp}/out", "--force",
                                     "--json"], self.stop, on_stop=self.stop_remote)
        self.say("collecting")
        done = run_script(self.host, _FETCH, [self.tmp], self.stop, on_stop=self.stop_remote)
        self.tmp = None  # the fetch removed it
        if done.returncode != 0:
            return None, last_line(done.stderr).removeprefix("error: ")
        try:
            return json.loads(done.stdout), ""
        except json.JSONDecodeError:
            return None, "the board's bench.json is not JSON"

    def stop_remote(self) -> None:
        """Stop the remote run (its process group) and remove the temp folder; never raises."""
        if self.tmp is None:
            return
        try:
            run_script(self.host, _STOP, [self.tmp], None, timeout_s=self.host.connect_timeout_s + 20)
        except RemoteHostError:
            pass
        self.tmp = None


def check_board(info: dict[str, Any], where: str) -> None:
    """The board's edgecnn must be this version and write the result schema this one reads. Raises
    RemoteHostError with both versions."""
    ours = _our_version()
    theirs = info.get("edgecnn")
    if theirs != ours:
        raise RemoteHostError(f"{where}: the board runs edgecnn {theirs}, this workstation {ours}",
                              f"install edgecnn=={ours} on the board (or point --remote-edgecnn at it)")
    if info.get("result_schema") != RESULT_SCHEMA_VERSION:
        raise RemoteHostError(f"{where}: the board writes result schema {info.get('result_schema')}, "
                              f"this edgecnn reads {RESULT_SCHEMA_VERSION}", f"install edgecnn=={ours} on the board")


def check_manifests(info: dict[str, Any], artifacts: Sequence[Artifact], where: str) -> None:
    readable = info.get("manifest_readable") or []
    for art in artifacts:
        if art.manifest is not None and art.manifest.schema_version not in readable:
            raise RemoteHostError(f"{where}: the board's edgecnn reads manifest schema {readable}, "
                                  f"{art.path.name}'s is {art.manifest.schema_version}", "update edgecnn on the board")


def _our_version() -> str:
    from edgecnn import __version__  # noqa: PLC0415

    return __version__


# -- the fleet run ------------------------------------------------------------------------------------------
def deploy(models: Sequence[str | Path], host: SshHost, remote_edgecnn: Optional[str] = None) -> list[str]:
    """``edgecnn deploy``: put each artifact (and its manifest) in the board's content-addressed folder; returns
    the remote paths of the artifacts. Raises RemoteHostError with the reason when the board cannot be used."""
    artifacts = collect_artifacts(models)
    uploads = plan_uploads(artifacts)
    board = Board(host, remote_edgecnn, threading.Event())
    try:
        board.probe([u for files in uploads.values() for u in files])
        check_manifests(board.info, artifacts, host.spec)
        board.deploy([u for files in uploads.values() for u in files])
        return [board.remote_path(uploads[a.path][0]) for a in artifacts]
    finally:
        board.stop_remote()


def bench_fleet(models: Sequence[str | Path], hosts: Sequence[SshHost], devices: Sequence[str],
                threads: Sequence[int | str], data: Optional[str], options: Any,
                remote_edgecnn: Optional[str] = None, command: str = "", prep_args: Sequence[str] = ()) -> dict[str, Any]:
    """Benchmark ``models`` on every host at once (``options``: harness.BenchOptions, forwarded to the boards;
    ``prep_args``: the preprocessing options as given on the command line, forwarded as they are).
    Returns the merged result dict (schema.json): one row per host x artifact x target x threads."""
    from edgecnn.bench.envinfo import fingerprint  # noqa: PLC0415
    from edgecnn.bench.harness import _options_dict  # noqa: PLC0415 - the one place options become JSON

    options.validate()
    if getattr(options, "ray", None) is not None:
        raise UsageError("--ray cannot be used with --host: each board measures its own accuracy",
                         "leave out --ray, or bench on the cluster's machines without --host")
    if options.reference:
        raise UsageError("--reference cannot be used with --host: a board has no TensorFlow to run Keras",
                         "the boards measure the loss against the fp32 artifact; bench it alongside")
    _check_hosts(hosts)
    counts = parse_threads(threads)
    artifacts = collect_artifacts(models)
    jobs = plan_jobs(artifacts, devices, counts)  # bad names fail here, once, before any host is touched
    local_data = Path(data) if data and Path(data).exists() else None
    uploads = plan_uploads(artifacts)
    stop = threading.Event()
    with _HostProgress(options.progress, hosts) as say, ThreadPoolExecutor(len(hosts)) as pool:
        futures = [pool.submit(_bench_host, host, artifacts, jobs, uploads, devices, counts, data, local_data,
                               options, remote_edgecnn, stop, say, tuple(prep_args)) for host in hosts]
        try:
            while wait(futures, timeout=0.2).not_done:
                pass
        except KeyboardInterrupt:
            stop.set()  # every host ends its ssh call, stops its remote run and removes its temp folder
            wait(futures, timeout=CLEANUP_WAIT_S)
            raise
    outcomes = [f.result() for f in futures]
    return {"schema_version": RESULT_SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "data": data, "environment": fingerprint(),
            "options": {**_options_dict(options, devices, counts), "hosts": [h.spec for h in hosts]},
            "notes": [note for o in outcomes for note in o["notes"]],
            "rows": [row for o in outcomes for row in o["rows"]],
            "environments": {o["host"]: o["environment"] for o in outcomes if o["environment"]},
            "hosts": {o["host"]: o["summary"] for o in outcomes}}


def _check_hosts(hosts: Sequence[SshHost]) -> None:
    if not hosts:
        raise UsageError("no --host given", "e.g. --host pi5 --host user@192.168.1.20")
    specs = [h.spec for h in hosts]
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise UsageError(f"--host {twice[0]} is given twice", "give each board once")


def _bench_args(paths: Sequence[str], devices: Sequence[str], counts: Sequence[int], data: Optional[str],
                local_data: Optional[Path], options: Any) -> list[str]:
    args = ["bench", *paths, "--device", ",".join(devices), "--threads", ",".join(map(str, counts)),
            "--warmup", str(options.warmup), "--min-agreement", repr(options.min_agreement)]
    if options.runs is not None:
        args += ["--runs", str(options.runs)]
    if options.duration_s is not None:
        args += ["--duration", repr(options.duration_s)]
    if options.offline:
        args += ["--offline", "--batch", str(options.batch)]
    if options.max_samples is not None:
        args += ["--samples", str(options.max_samples)]
    if options.max_drop_pp is not None:
        args += ["--max-drop", repr(options.max_drop_pp)]
    if not options.step:
        args.append("--no-step")
    if data:
        args += ["--data", "{data}" if local_data is not None else data]
    return args


def _bench_host(host: SshHost, artifacts: Sequence[Artifact], jobs: Sequence[Job], uploads: dict[Path, list[Upload]],
                devices: Sequence[str], counts: Sequence[int], data: Optional[str], local_data: Optional[Path],
                options: Any, remote_edgecnn: Optional[str], stop: threading.Event, say: Callable,
                prep_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One host, start to end; never raises but KeyboardInterrupt: a failure becomes failed rows with the reason."""
    board = Board(host, remote_edgecnn, stop, lambda text: say(host.spec, text))
    summary: dict[str, Any] = {"status": "failed", "reason": "", "edgecnn": None, "copied": 0, "already_there": 0}
    flat = [u for files in uploads.values() for u in files]
    try:
        info = board.probe(flat)
        summary["edgecnn"] = info.get("edgecnn")
        check_manifests(info, artifacts, host.spec)
        summary["copied"], summary["already_there"] = board.deploy(flat)
        paths = [board.remote_path(uploads[a.path][0]) for a in artifacts]
        raw, reason = board.bench(_bench_args(paths, devices, counts, data, local_data, options) + list(prep_args),
                                  local_data)
        if raw is None:
            raise RemoteHostError(f"{host.spec}: the board's edgecnn bench failed: {reason or 'no message'}")
    except Stopped:
        summary["reason"] = "interrupted"
        say(host.spec, "interrupted: remote run stopped", True)
        return _failed(host, jobs, summary)
    except RemoteHostError as exc:
        summary["reason"] = exc.one_line()
        say(host.spec, f"[red]failed[/]: {exc.one_line()}", True)
        return _failed(host, jobs, summary)
    finally:
        board.stop_remote()
    rows = [{**row, "host": host.spec, "source": host.spec} for row in raw.get("rows", [])]
    bad = sum(row["status"] != Status.OK.value for row in rows)
    summary.update(status="ok" if not bad else "some rows failed", reason="")
    say(host.spec, f"done: {len(rows)} row(s)" + (f", [red]{bad} not passed[/]" if bad else ""), True)
    return {"host": host.spec, "rows": rows, "environment": raw.get("environment", {}), "summary": summary,
            "notes": [f"{host.spec}: {note}" for note in raw.get("notes", [])]}


def _failed(host: SshHost, jobs: Sequence[Job], summary: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for job in jobs:
        art = job.artifact
        row = BenchRow(model=art.model_name, artifact=str(art.path), format=art.format, family=art.family,
                       precision=art.precision, target=job.target, threads=job.threads, status=Status.FAILED,
                       reason=summary["reason"], size_bytes=art.path.stat().st_size)
        rows.append({**row.to_dict(), "host": host.spec, "source": host.spec})
    return {"host": host.spec, "rows": rows, "environment": {}, "summary": summary, "notes": []}


class _HostProgress:
    """One line per host on stderr (rich): spinner, host, what it is doing, time; or nothing."""

    def __init__(self, enabled: bool, hosts: Sequence[SshHost]) -> None:
        self.enabled, self.hosts = enabled, hosts
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Callable[..., None]:
        if not self.enabled:
            return lambda host, text, final=False: None
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        self._bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[host]}[/]"), TimeElapsedColumn(),
                             TextColumn("{task.description}"), console=Console(stderr=True))
        self._bar.__enter__()
        self._tasks = {h.spec: self._bar.add_task("waiting", host=h.spec, total=None) for h in self.hosts}
        return self._say

    def _say(self, host: str, text: str, final: bool = False) -> None:
        self._bar.update(self._tasks[host], description=text, **({"total": 1, "completed": 1} if final else {}))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
