"""Fixtures the control tests share: the Pendulum-v1 data sets of :mod:`tests.control.helpers`,
built once per session for each number of preference pairs and read-only to the tests."""

import pytest


@pytest.fixture(scope="session")
def pendulum_data(tmp_path_factory):
    """``get(num_preferences)``: the folder of the Pendulum-v1 data set with that many labelled pairs
    (2 demonstrations, the pool, ``meta.json``), built on first use."""
    from tests.control.helpers import pendulum_dataset  # imports the control package: only when used

    built = {}

    def get(num_preferences: int):
        if num_preferences not in built:
            folder = tmp_path_factory.mktemp(f"pendulum{num_preferences}")
            pendulum_dataset(folder, num_preferences=num_preferences)
            built[num_preferences] = folder
        return built[num_preferences]

    return get


@pytest.fixture(scope="module")
def data_dir(request, pendulum_data):
    """The module's data set: ``NUM_PREFERENCES`` pairs (a module attribute; 60 by default)."""
    return pendulum_data(getattr(request.module, "NUM_PREFERENCES", 60))
