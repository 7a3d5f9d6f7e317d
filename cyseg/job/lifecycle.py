"""A job's life on the server, inside cyseg's guard: connect, create (or adopt) the job, record its
parameters, run, and end TERMINATED or FAILED with a message naming the request and the cause.

The 2.4.1 client's `CytomineJob.from_cli` cannot be used as is: it sends its first requests on a
session without timeouts or retries, stores `False` for a project or user it could not fetch, parses
the parameters with argparse types (a value like `threshold=abc` exits with status 2 before any
check, leaving a router-created job NOT_LAUNCHED), and starts the job inside `__enter__`, so a
failure while starting leaves it RUNNING with no comment. `CysegJob` is the same `CytomineJob`
(the job body uses its `job`, `project`, `parameters` and `current_user`) started here instead:

- the session is hardened (`connection.harden`) before the client's first request;
- every start-up request goes through `connection.call`, which names it when it fails;
- parameters are kept as text: `JobConfig` converts and checks them, so a bad value fails the job;
- the POSTs that create the job and its parameters are checked before a retry (a lost answer
  does not create a second job or a parameter twice).

`run_guarded` marks the job FAILED with the error's message as soon as the job is known (a job
launched from the UI is known from its user, before anything else); where even that fails (the
server is gone), the process still exits non-zero with the message, and running the job again with
its own keys finishes it.
"""
from __future__ import annotations

import logging
import signal
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, Callable

import requests
from cytomine import Cytomine, CytomineJob
from cytomine.cytomine import _cytomine_parameter_name_synonyms
from cytomine.models import (CurrentUser, Job, JobCollection, JobParameter, Project, Software,
                             SoftwareParameterCollection, User)

from cyseg.cytomine.connection import ServerError, call, describe, harden
from cyseg.errors import CysegError

log = logging.getLogger(__name__)

STATUS_LENGTH = 255  # Cytomine's limit on a status comment
CREATE_ATTEMPTS = 8  # POSTs that create the job and its parameters, each checked before a retry
CREATE_BACKOFF_S = 0.1  # doubled after each failure, capped (connection.MAX_BACKOFF_S)
CONNECT_WAIT_S = 30.0  # how long the server may take to answer its first ping (the client waits 120 s)


class _Parser(ArgumentParser):
    """argparse that raises a CysegError instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CysegError(f"invalid command line: {message}")


def _server_arguments(argv: list[str]) -> Namespace:
    parser = Cytomine._add_cytomine_cli_args(_Parser(add_help=False))
    for name in ("software_id", "project_id"):
        parser.add_argument(*_cytomine_parameter_name_synonyms(name), dest=name, type=int, required=True)
    return parser.parse_known_args(argv)[0]


def _parameters_as_text(argv: list[str], parameters: list[Any]) -> Namespace:
    """The job's parameters from the command line as text (the descriptor's defaults for absent ones)."""
    parser = _Parser(add_help=False)
    for parameter in parameters:
        default = parameter.defaultParamValue
        parser.add_argument(*_cytomine_parameter_name_synonyms(parameter.name), dest=parameter.name,
                            default=None if default is None else str(default))
    return parser.parse_known_args(argv)[0]


class CysegJob(CytomineJob):
    """A `CytomineJob` connected with a hardened session and started step by step (see the module notes)."""

    def __init__(self, host: str, public_key: str, private_key: str, project_id: int, software_id: int,
                 argv: list[str], **options: Any) -> None:
        """Connect (see `wait_to_accept_connection`); `argv` carries the job's parameters."""
        self._ids, self._argv = (project_id, software_id), list(argv)
        self._job = None
        self._project = self._software = self._parameters = None
        self._job_done = False
        try:
            Cytomine.__init__(self, host, public_key, private_key, **options)
        except requests.RequestException as error:
            raise ServerError(f"Cytomine server {host}: connecting (GET /server/ping, user/current.json) failed: "
                              f"{describe(error)}") from error
        self._check_user("these keys")
        if self.current_user.algo:  # launched by the server: the job exists already
            self._job = call(f"GET job/{self.current_user.job}.json (the job of user {self.current_user.id})",
                             lambda: Job().fetch(self.current_user.job))

    def _check_user(self, keys: str) -> None:
        """The user of the keys in use, fetched again if the client could not (the answer names the cause)."""
        if not self.current_user:
            self._current_user = call(f"GET user/current.json (the user of {keys})", lambda: CurrentUser().fetch())

    def wait_to_accept_connection(self, *args: Any, **kwargs: Any) -> bool:
        """The client's first use of its new session (a ping): give the session timeouts and retries first,
        and wait `CONNECT_WAIT_S` at most."""
        harden(self)
        return super().wait_to_accept_connection(CONNECT_WAIT_S)

    @classmethod
    def from_command_line(cls, argv: list[str], **options: Any) -> "CysegJob":
        """Connect with the server arguments of a job's command line (as `CytomineJob.from_cli` reads them)."""
        arguments = _server_arguments(argv)
        level = arguments.log_level if arguments.log_level is not None else arguments.verbose
        return cls(arguments.host, arguments.public_key, arguments.private_key, arguments.project_id,
                   arguments.software_id, argv, verbose=level, **options)

    def start(self) -> None:
        """Fetch the project, the software and its parameters; create the job (or take the server's), mark it
        RUNNING and record its parameters."""
        project_id, software_id = self._ids
        self._project = call(f"GET project/{project_id}.json (the job's project)", lambda: Project().fetch(project_id))
        self._software = call(f"GET software/{software_id}.json (the job's software)",
                              lambda: Software().fetch(software_id))
        registered = call(f"GET software/{software_id}/software_parameter.json (the job's parameters)",
                          lambda: SoftwareParameterCollection(filters={"software": software_id},
                                                              withSetByServer=True).fetch())
        self._parameters = _parameters_as_text(self._argv, list(registered))
        launched_by_server = self._job is not None
        if not launched_by_server:
            self._job = self._create_job()
            user = call(f"GET user/{self._job.userJob}.json (the job's user)", lambda: User().fetch(self._job.userJob))
            self._public_key, self._private_key = user.publicKey, user.privateKey
            self._current_user = None
            self._check_user(f"the keys of job {self._job.id}")
        self._update(Job.RUNNING, "starting", 0)
        if not launched_by_server:
            self._save_parameters(list(registered))

    def _create_job(self) -> Job:
        """POST job.json; before a retry, a job that appeared meanwhile (the answer was lost) is taken instead."""
        project, software = self._project.id, self._software.id

        def listed() -> dict[int, Any]:
            jobs = call(f"GET job.json?project={project} (the project's jobs)",
                        lambda: JobCollection(project=project, software=software).fetch())
            return {j.id: j for j in jobs if j.software == software}

        before = listed()
        adopted: list[int] = []

        def create() -> Job | bool:
            if adopted:
                return call(f"GET job/{adopted[0]}.json", lambda: Job().fetch(adopted[0]))
            return Job(project, software).save()

        def look_for_it() -> None:
            new = [i for i, j in listed().items() if i not in before and j.status == Job.NOT_LAUNCH]
            adopted[:] = new[:1] if len(new) == 1 else []

        return call("POST job.json (creating the job)", create, attempts=CREATE_ATTEMPTS, backoff_s=CREATE_BACKOFF_S,
                    before_retry=look_for_it)

    def _save_parameters(self, registered: list[Any]) -> None:
        """POST one jobparameter.json per parameter; before a retry, one the server did store is not resent."""
        values = vars(self._parameters)
        stored: set[int] = set()

        def read_stored() -> None:
            job = call(f"GET job/{self._job.id}.json (its parameters)", lambda: Job().fetch(self._job.id))
            stored.update(p["softwareParameter"] for p in job.jobParameters or [])

        read_stored()
        for parameter in registered:
            value = values.get(parameter.name, parameter.defaultParamValue)
            call(f"POST jobparameter.json ({parameter.name})",
                 lambda: parameter.id in stored or JobParameter(self._job.id, parameter.id, value).save(),
                 attempts=CREATE_ATTEMPTS, backoff_s=CREATE_BACKOFF_S, before_retry=read_stored)

    def _update(self, status: int, comment: str, progress: int | None = None) -> None:
        changes = {"status": status, "statusComment": comment[:STATUS_LENGTH]}
        if progress is not None:
            changes["progress"] = progress
        call(f"PUT job/{self._job.id}.json (status {status})", lambda: self._job.update(**changes))

    def close(self, message: str | None) -> None:
        """TERMINATED (no message) or FAILED with `message`."""
        if message is None:
            self._update(Job.TERMINATED, "Job successfully terminated")
        else:
            self._update(Job.FAILED, message)


def _stop(signum: int, _: Any) -> None:
    """SIGTERM (`docker stop` and the like) ends the job FAILED with a message rather than leave it RUNNING."""
    raise CysegError(f"the job was stopped (signal {signal.Signals(signum).name})")


def run_guarded(argv: list[str], body: Callable[[CysegJob], None],
                describe: Callable[[BaseException], str]) -> int:
    """Start the job of this command line, run `body` on it and end it; 0 when it ended TERMINATED.

    Any error, from the first request on, ends the job FAILED with `describe(error)` (once the job is
    known) and is printed in one line; the exit status is then 1.
    """
    job: CysegJob | None = None
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        job = CysegJob.from_command_line(argv)
        job.start()
        body(job)
        job.close(None)
        return 0
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        message = describe(error)
        if job is not None and job.job is not None:
            try:
                job.close(message)
            except CysegError as closing:
                log.error("cannot mark job %s FAILED: %s", job.job.id, closing)
        print(f"cyseg job failed: {message}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
