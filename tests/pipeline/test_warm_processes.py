"""What `ctdc run` prepares ahead: the fork server's imports (pipeline/preload.py, with the
collector paused) and, while the chains run, a new store's migrations."""

import gc
import json
import subprocess
import sys

import pytest

from ctdc_harmonizer.memory import collector_paused
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.warehouse import schema


def test_the_collector_is_paused_inside_and_restarted_after_also_on_failure():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_importing_the_preload_imports_the_chains_libraries_and_freezes_them():
    # A fresh interpreter, as the fork server is: this test session must not be frozen.
    probe = (
        "import gc, json, sys\n"
        "before = gc.get_freeze_count()\n"
        "import ctdc_harmonizer.pipeline.preload as p\n"
        "print(json.dumps({'before': before, 'frozen': gc.get_freeze_count(),\n"
        "  'enabled': gc.isenabled(), 'missing': [m for m in p.PRELOADED\n"
        "  if m not in sys.modules]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(done.stdout)
    assert seen["before"] == 0
    assert seen["frozen"] > 100_000  # pandas, pyarrow, pandera and the package's modules
    assert seen["enabled"]
    assert seen["missing"] == []


def test_the_fork_server_is_asked_to_import_the_preload(monkeypatch):
    asked = []

    class Context:
        def set_forkserver_preload(self, modules):
            asked.append(list(modules))

    monkeypatch.setattr(local.multiprocessing, "get_context", lambda method: Context())
    monkeypatch.setattr(local.forkserver, "ensure_running", lambda: None)
    local._start_fork_server()
    assert asked == [["ctdc_harmonizer.pipeline.preload"]]


class _Plan:
    def __init__(self, url):
        self.url = url

    def warehouse(self):
        return self.url


@pytest.mark.parametrize("exists", [False, True])
def test_migrations_are_loaded_ahead_only_for_a_store_still_to_be_created(
    tmp_path, monkeypatch, exists
):
    store = tmp_path / "warehouse.sqlite"
    if exists:
        store.write_bytes(b"")
    warmed = []
    monkeypatch.setattr(schema, "warm_migrations", lambda: warmed.append(True))
    local._warm_store_creation(_Plan(f"sqlite:///{store}"))
    assert warmed == ([] if exists else [True])


def test_loading_the_migrations_ahead_writes_nothing_and_leaves_the_real_creation_whole(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    schema.warm_migrations()
    assert list(tmp_path.iterdir()) == []
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    schema.migrate(url)
    engine = schema.create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(schema.text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert [row[0] for row in version] == [schema.HEAD_REVISION]
