"""descriptor.json and the job agree on every parameter: name, type and default, read statically and
through the client's own parsing of what the server registered from the descriptor."""
from __future__ import annotations

import dataclasses
import json

import pytest
from cytomine.cytomine_job import _software_params_to_argparse, _to_bool
from cytomine.models import SoftwareParameterCollection

from cyseg.errors import CysegError
from cyseg.job.descriptor import DESCRIPTOR_PATH, command_line, load_descriptor, parameters
from cyseg.pipeline.config import LEARNING_PARAMETERS, MODES, SERVER_PARAMETERS, JobConfig
from cyseg.server.runner import Endpoint
from .helpers import ROOT, connect, job_argv


def user_parameters() -> dict[str, dict]:
    return {entry["id"]: entry for entry in load_descriptor()["inputs"] if not entry.get("set-by-server")}


def typed(kind: str, value):
    """A descriptor default in the type the client parses it to."""
    return {"Number": float, "Boolean": _to_bool, "String": str}[kind](value)


def test_descriptor_is_the_repository_file() -> None:
    assert DESCRIPTOR_PATH == ROOT / "descriptor.json"
    assert load_descriptor()["schema-version"] == "cytomine-0.1"


def test_server_set_inputs_are_the_five_cytomine_ones() -> None:
    server_set = [e["id"] for e in load_descriptor()["inputs"] if e.get("set-by-server")]
    assert tuple(server_set) == SERVER_PARAMETERS


def test_every_user_parameter_is_a_config_field_with_the_same_type_and_default() -> None:
    declared = user_parameters()
    types = JobConfig.parameter_types()
    assert list(declared) == list(types)
    defaults = JobConfig()
    for name, entry in declared.items():
        assert entry["type"] == types[name], name
        assert entry["description"] and entry["name"], name
        default = getattr(defaults, name)
        if "default-value" not in entry:
            assert entry["optional"] and default in (None, ()), name
        else:
            assert typed(entry["type"], entry["default-value"]) == typed(entry["type"], default), name


def test_mode_parameters_say_which_modes_they_serve() -> None:
    """The mode's help explains every mode; each other learning parameter says which modes use it."""
    declared = user_parameters()
    assert all(f"{mode}:" in declared["mode"]["description"] for mode in MODES)
    for name in LEARNING_PARAMETERS[1:]:
        modes = declared[name]["description"].split(":", 1)[0].lower().replace(" only", "")
        assert modes and set(modes.split(", ")) <= set(MODES) - {"segment"}, name


def test_no_default_is_lost_by_the_router() -> None:
    """The router reads defaults with Groovy's `?:`, which drops 0, false and "": such defaults must be
    written as strings ("0"). No String may need a space either: the command line is split on spaces."""
    for name, entry in user_parameters().items():
        value = entry.get("default-value")
        assert value not in (0, False, ""), name
        assert " " not in str(value), name


def test_command_line_places_every_parameter_and_drops_empty_optional_ones() -> None:
    descriptor = load_descriptor()
    values = {"cytomine_host": "http://h", "cytomine_public_key": "a", "cytomine_private_key": "b",
              "cytomine_id_project": 1, "cytomine_id_software": 2, "cytomine_id_images": (3, 4)}
    argv = command_line(descriptor, values)
    assert argv[:4] == ["python", "run.py", "--cytomine_host", "http://h"]
    assert argv[argv.index("--cytomine_id_images") + 1] == "3,4"
    assert argv[argv.index("--tissue_detection") + 1] == "true"
    assert "--cytomine_id_roi_term" not in argv and "--threshold" not in argv   # empty: the model's own
    flags = {p.flag for p in parameters(descriptor)} - {"--cytomine_id_roi_term", "--cytomine_id_result_term",
                                                        "--cytomine_id_blurry_term", "--threshold"}
    assert flags == {a for a in argv if a.startswith("--")}
    with pytest.raises(CysegError, match="contains a space"):
        command_line(descriptor, values | {"model": "my model"})
    with pytest.raises(CysegError, match="cytomine_host is required"):
        command_line(descriptor, {k: v for k, v in values.items() if k != "cytomine_host"})


def test_client_parses_the_registered_parameters_into_the_default_config(server: Endpoint, threshold_model) -> None:
    """What `CytomineJob.from_cli` does with the parameters the server registered from the descriptor."""
    connect(server)
    registered = SoftwareParameterCollection(filters={"software": server.software_id}, withSetByServer=True).fetch()
    parsed, _ = _software_params_to_argparse(registered).parse_known_args(job_argv(server, threshold_model))
    config = JobConfig.from_parameters(parsed)
    expected = dataclasses.replace(JobConfig(), model=str(threshold_model), batch_size=2,
                                   cytomine_id_result_term=server.terms["Nucleus"])
    assert config == expected
    defaults_only, _ = _software_params_to_argparse(registered).parse_known_args(server.cli_arguments())
    assert JobConfig.from_parameters(defaults_only) == JobConfig()


def test_descriptor_is_valid_json_with_unique_ids() -> None:
    descriptor = json.loads(DESCRIPTOR_PATH.read_text())
    ids = [e["id"] for e in descriptor["inputs"]]
    assert len(ids) == len(set(ids))
    assert all(f"[{i.upper()}]" in descriptor["command-line"] for i in ids)
