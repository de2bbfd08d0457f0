"""testinfra checks run against a container of an npubox image (`invoke check --env X` runs them).

pytest tests/infra --hosts=docker://<container> --npubox-env=<env>
"""

import json

import pytest

from llm.env.commands import resolve


def pytest_addoption(parser):
    parser.addoption("--npubox-env", default="cpu", help="the env spec the container must match")
    parser.addoption("--npubox-twin", default=None, help="the container is that env's twin (cpu)")


def _loaded(config):
    return resolve(config.getoption("--npubox-env"), config.getoption("--npubox-twin"))


@pytest.fixture(scope="session")
def loaded(request):
    return _loaded(request.config)


def pytest_generate_tests(metafunc):
    if "pin" in metafunc.fixturenames:
        loaded = _loaded(metafunc.config)
        pins = sorted(loaded.pins().items())
        metafunc.parametrize("pin", pins, ids=[name for name, _ in pins])


@pytest.fixture(scope="module")
def installed(host):
    """{normalized name: version} of every distribution in the image's Python (`llm env`'s own reading)."""
    return json.loads(host.check_output("python -m llm env --json --all-packages"))["all_packages"]
