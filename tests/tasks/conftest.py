import pytest

from tinythink.tasks import Tasks


@pytest.fixture(scope="module")
def tasks():
    t = Tasks.load("smollm2-135m", context=1024)
    yield t
    t.close()
