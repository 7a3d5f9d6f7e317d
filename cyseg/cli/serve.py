"""`cyseg serve`: a local Cytomine-compatible server over a folder of slides (no Cytomine needed)."""
from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from cyseg.errors import CysegError
from cyseg.server.app import DEFAULT_MAX_BODY_BYTES
from cyseg.server.runner import LocalServer, write_credentials

DEFAULT_PORT = 8080


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/cyseg/server (~/.local/share/cyseg/server): kept between runs, outside the repository."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "cyseg" / "server"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run a local Cytomine-compatible test server over a folder of slides",
        description=__doc__.split(": ", 1)[1])
    parser.add_argument("--slides", type=Path, required=True, metavar="DIR",
                        help="folder of slides (SVS, tiled TIFF, OME-TIFF, plain TIFF/PNG, ...), read recursively")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help=f"state folder (SQLite database, attached files); default {default_data_dir()}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port, 0 for any free one "
                                                                       f"(default {DEFAULT_PORT})")
    parser.add_argument("--bind", default="127.0.0.1", metavar="ADDRESS",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--software", type=Path, default=None, metavar="descriptor.json",
                        help="Cytomine software descriptor to register (its inputs become software parameters)")
    parser.add_argument("--project", default=None, metavar="NAME",
                        help="project name (default: the slides folder's name)")
    parser.add_argument("--credentials-file", type=Path, default=None, metavar="FILE",
                        help="where to write host, keys, project and software ids (default DATA/credentials.json)")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20, metavar="MB",
                        help="largest request body accepted, in MiB (default %(default)g)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_dir = args.data or default_data_dir()
    if args.max_body_mb <= 0:
        raise CysegError("--max-body-mb must be positive")
    try:
        server = LocalServer(args.slides, data_dir, args.software, address=args.bind, port=args.port,
                             project_name=args.project, max_body_bytes=int(args.max_body_mb * 2**20),
                             access_log=args.verbose)
    except OSError as error:
        raise CysegError(f"cannot listen on {args.bind}:{args.port}: {error.strerror}") from error
    endpoint = server.endpoint
    credentials_file = args.credentials_file or data_dir / "credentials.json"
    write_credentials(credentials_file, endpoint)
    print(json.dumps(endpoint.credentials, indent=2))
    print(f"\ncredentials written to {credentials_file}")
    print(f"web page: {endpoint.host}/")
    print(f"run a job: python run.py {shlex.join(endpoint.cli_arguments())}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl-C
        print("stopped", flush=True)
    return 0
