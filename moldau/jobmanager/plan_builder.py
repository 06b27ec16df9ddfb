"""Build the JobGraph of an uploaded job script, in a process of its own.

    python -m moldau.jobmanager.plan_builder [--output FILE] [--parallelism N] DIR ENTRY [ARGS...]

runs ``DIR/ENTRY`` as ``__main__`` (working directory DIR, DIR first on ``sys.path``,
``sys.argv = [ENTRY, *ARGS]``) with the stream environment's executor hook set to write the
graph of the script's first ``env.execute()`` (``JobGraph.to_bytes()``) to FILE and exit at
once, the way Flink's web submission runs a jar's main method only to extract its job
graph. The REST server runs it for ``POST /jars/<id>/run``: the script is the user's code,
so it never runs inside the JobManager's own process.

Exit status: 0 the graph is in FILE; 1 the script failed (its traceback, trimmed to the
job's own files, on stderr); 2 bad arguments; 3 the script ended without calling
``execute()``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

EXIT_SCRIPT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_JOB = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moldau.jobmanager.plan_builder",
                                description="Write the JobGraph a job script builds to a file.")
    p.add_argument("--output", type=Path, default=Path("jobgraph.bin"), metavar="FILE",
                   help="where to write the graph (default: jobgraph.bin in the current "
                   "directory)")
    p.add_argument("--parallelism", type=int, default=None, metavar="N",
                   help="the job's default parallelism (parallelism.default)")
    p.add_argument("dir", type=Path, metavar="DIR", help="the job's files")
    p.add_argument("entry", metavar="ENTRY", help="the script inside DIR")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the script's arguments")
    return p


def _exit(code: int) -> NoReturn:
    # os._exit: the script's threads and atexit hooks must not keep this process alive or
    # run anything more once the graph is written
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    from moldau.clients.cli.jobs import format_script_error, run_job_script
    from moldau.clients.stream.jobgraph import GraphError, JobGraph

    opts = _parser().parse_args(argv)
    root = opts.dir.resolve()
    script = (root / opts.entry).resolve()
    if not script.is_relative_to(root) or not script.is_file():
        print(f"{opts.entry}: no such file in the job's files", file=sys.stderr)
        _exit(EXIT_USAGE)
    if opts.parallelism is not None and opts.parallelism < 1:
        print(f"the parallelism must be at least 1, got {opts.parallelism}", file=sys.stderr)
        _exit(EXIT_USAGE)
    output = opts.output.resolve()
    config = {} if opts.parallelism is None else {"parallelism.default": opts.parallelism}

    def write_graph(graph: JobGraph) -> NoReturn:
        data = graph.to_bytes()
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, output)
        _exit(0)

    os.chdir(root)
    try:
        run_job_script(script, list(opts.args), write_graph, config)
    except GraphError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        _exit(EXIT_SCRIPT_FAILED)
    except SystemExit as e:
        print(f"the job script exited (status {e.code}) without calling execute()",
              file=sys.stderr)
        _exit(EXIT_SCRIPT_FAILED)
    except BaseException as e:
        print(format_script_error(e, root), file=sys.stderr)
        _exit(EXIT_SCRIPT_FAILED)
    print("The program didn't contain a job. Perhaps you forgot to call execute() on the "
          "execution environment.", file=sys.stderr)
    _exit(EXIT_NO_JOB)


if __name__ == "__main__":
    main()
