"""`WorkerConfig`, `ConfigManager`, `get_config`, `update_config`, ``NEON_*`` variables."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import subprocess
import sys
import threading

import pytest

import neon_nb
from neon_nb import ConfigError, ConfigManager, ConfigTypeError, WorkerConfig, get_config, update_config
from neon_nb._config import config_from_env, config_manager

# The original Neon Worker API's configuration table: setting -> default.
ORIGINAL_TABLE = {
    "max_workers": 4,
    "queue_size": 100,
    "shutdown_timeout": 30.0,
    "log_level": "INFO",
    "retry_attempts": 3,
    "retry_delay": 1.0,
    "health_check_interval": 10.0,
    "enable_metrics": True,
}


def test_defaults_are_the_original_table():
    cfg = WorkerConfig()
    for name, default in ORIGINAL_TABLE.items():
        assert getattr(cfg, name) == default, name
        assert type(getattr(cfg, name)) is type(default), name


def test_global_config_starts_from_defaults_without_env(monkeypatch):
    for name in WorkerConfig().as_dict():
        monkeypatch.delenv("NEON_" + name.upper(), raising=False)
    assert config_manager().reset() == WorkerConfig()
    assert get_config() == WorkerConfig()


def test_snapshots_are_immutable():
    cfg = get_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_workers = 99  # type: ignore[misc]
    new = update_config(max_workers=7)
    assert cfg.max_workers == 4  # the old snapshot did not change
    assert new.max_workers == 7
    assert get_config() is new


def test_replace_returns_a_new_validated_snapshot():
    cfg = WorkerConfig()
    new = cfg.replace(retry_delay=2, log_level="debug")
    assert new.retry_delay == 2.0 and type(new.retry_delay) is float  # int accepted for a float
    assert new.log_level == "DEBUG"  # case-insensitive
    assert cfg.retry_delay == 1.0


def test_unknown_key_names_it_and_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        update_config(max_worker=8)
    msg = str(info.value)
    assert "'max_worker'" in msg
    for name in ORIGINAL_TABLE:
        assert name in msg
    assert get_config() == WorkerConfig()


@pytest.mark.parametrize(("key", "value", "kind", "allowed"), [
    ("max_workers", 0, ConfigError, ">= 1"),
    ("max_workers", -3, ConfigError, ">= 1"),
    ("max_workers", 100_000, ConfigError, "<="),
    ("max_workers", 2.0, ConfigTypeError, "an int"),
    ("max_workers", "4", ConfigTypeError, "an int"),
    ("max_workers", True, ConfigTypeError, "an int"),
    ("queue_size", -1, ConfigError, ">= 0"),
    ("queue_size", None, ConfigTypeError, "an int"),
    ("shutdown_timeout", -0.5, ConfigError, ">= 0"),
    ("shutdown_timeout", "30", ConfigTypeError, "a number"),
    ("shutdown_timeout", math.nan, ConfigError, "NaN"),
    ("log_level", "LOUD", ConfigError, "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("log_level", 10, ConfigTypeError, "DEBUG, INFO"),
    ("retry_attempts", -1, ConfigError, ">= 0"),
    ("retry_attempts", 1.5, ConfigTypeError, "an int"),
    ("retry_delay", -1, ConfigError, ">= 0"),
    ("health_check_interval", 0, ConfigError, "> 0"),
    ("enable_metrics", 1, ConfigTypeError, "True or False"),
    ("enable_metrics", "yes", ConfigTypeError, "True or False"),
    ("retry_backoff", 0.5, ConfigError, ">= 1"),
    ("retry_jitter", 1.5, ConfigError, "<= 1"),
    ("retry_jitter", -0.1, ConfigError, ">= 0"),
    ("history_size", -1, ConfigError, ">= 0"),
    ("stuck_task_threshold", 0, ConfigError, "> 0"),
])
def test_bad_values_are_rejected_naming_the_key_and_what_is_allowed(key, value, kind, allowed):
    before = get_config()
    with pytest.raises(kind) as info:
        update_config(**{key: value})
    assert key in str(info.value)
    assert allowed in str(info.value)
    assert get_config() is before
    # The same rules at construction.
    with pytest.raises(kind):
        WorkerConfig(**{key: value})


def test_config_errors_are_value_errors_and_type_errors_are_also_type_errors():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, neon_nb.NeonError)
    assert issubclass(ConfigTypeError, TypeError) and issubclass(ConfigTypeError, ConfigError)


@pytest.mark.parametrize("key", ["shutdown_timeout", "retry_delay", "retry_max_delay",
                                 "health_check_interval", "stuck_task_threshold"])
@pytest.mark.parametrize("value", [math.inf, 1e300])
def test_durations_must_be_finite_and_waitable(key, value):
    # A duration beyond threading.TIMEOUT_MAX cannot be waited on: health_check_interval=inf
    # used to crash the monitor thread with OverflowError (and with it every pending retry).
    with pytest.raises(ConfigError) as info:
        update_config(**{key: value})
    assert key in str(info.value)


def test_retry_backoff_must_be_finite():
    with pytest.raises(ConfigError, match="retry_backoff"):
        update_config(retry_backoff=math.inf)


def test_a_huge_health_check_interval_does_not_kill_the_monitor(make_worker):
    w = make_worker(max_workers=1, enable_metrics=False, health_check_interval=1e6, retry_delay=0.0,
                    retry_attempts=1)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("first attempt fails")
        return "ok"

    # The retry is scheduled by the monitor thread: it must still be alive.
    assert w.submit(flaky).result(timeout=10) == "ok"
    assert w._monitor.thread is not None and w._monitor.thread.is_alive()


def test_update_is_all_or_nothing():
    before = get_config()
    with pytest.raises(ConfigError, match="queue_size"):
        update_config(max_workers=8, retry_attempts=5, queue_size=-1)
    assert get_config() is before
    with pytest.raises(ConfigError, match="nope"):
        update_config(max_workers=8, nope=1)
    assert get_config().max_workers == 4


def test_update_config_sets_the_neon_nb_logger_level():
    update_config(log_level="debug")
    assert logging.getLogger("neon_nb").level == logging.DEBUG
    update_config(log_level="ERROR")
    assert logging.getLogger("neon_nb").level == logging.ERROR


def test_reset_returns_to_defaults():
    update_config(max_workers=9, retry_delay=0.25, log_level="DEBUG")
    cfg = config_manager().reset()
    assert cfg == config_from_env()
    assert get_config() is cfg


def test_config_from_env_reads_neon_variables():
    cfg = config_from_env({
        "NEON_MAX_WORKERS": "8",
        "NEON_QUEUE_SIZE": "0",
        "NEON_RETRY_DELAY": "0.5",
        "NEON_LOG_LEVEL": "warning",
        "NEON_ENABLE_METRICS": "off",
        "UNRELATED": "x",
    })
    assert (cfg.max_workers, cfg.queue_size, cfg.retry_delay, cfg.log_level, cfg.enable_metrics) == (
        8, 0, 0.5, "WARNING", False)
    assert cfg.shutdown_timeout == 30.0


@pytest.mark.parametrize(("var", "raw"), [
    ("NEON_MAX_WORKERS", "four"),
    ("NEON_MAX_WORKERS", "2.5"),
    ("NEON_RETRY_DELAY", "soon"),
    ("NEON_ENABLE_METRICS", "maybe"),
])
def test_bad_env_values_name_the_variable(var, raw):
    with pytest.raises(ConfigError) as info:
        config_from_env({var: raw})
    assert var in str(info.value) and repr(raw) in str(info.value)


def test_env_out_of_range_is_rejected():
    with pytest.raises(ConfigError, match="max_workers"):
        config_from_env({"NEON_MAX_WORKERS": "0"})


def test_initial_global_config_comes_from_the_environment():
    env = dict(os.environ, NEON_MAX_WORKERS="7", NEON_LOG_LEVEL="debug")
    out = subprocess.run(
        [sys.executable, "-c", "import neon_nb; c = neon_nb.get_config(); "
                               "print(c.max_workers, c.log_level)"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["7", "DEBUG"]


class _Listener:
    def __init__(self, manager, action=None):
        self.calls = []
        self.manager = manager
        self.action = action
        self.thread = None

    def _on_global_config(self, old, new, changed):
        self.thread = threading.current_thread()
        self.calls.append((old, new, changed))
        if self.action is not None:
            self.action(self)


def test_listeners_hear_changes_after_the_lock_is_released():
    mgr = ConfigManager()

    def reenter(listener):
        # Runs outside the manager's lock: reading and even updating again must not deadlock.
        assert listener.manager.get().max_workers == 6
        if listener.manager.get().queue_size != 11:
            listener.manager.update(queue_size=11)

    listener = _Listener(mgr, reenter)
    mgr.add_listener(listener._on_global_config)
    mgr.update(max_workers=6, retry_attempts=3)  # retry_attempts unchanged: not reported
    assert listener.calls[0][2] == frozenset({"max_workers"})
    assert listener.calls[0][0].max_workers == 4 and listener.calls[0][1].max_workers == 6
    assert listener.calls[1][2] == frozenset({"queue_size"})
    assert mgr.get().queue_size == 11
    assert listener.thread is threading.current_thread()


def test_no_change_no_notification():
    mgr = ConfigManager()
    listener = _Listener(mgr)
    mgr.add_listener(listener._on_global_config)
    mgr.update(max_workers=4)
    assert listener.calls == []


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog):
    mgr = ConfigManager()

    def boom(_):
        raise RuntimeError("listener bug")

    bad, good = _Listener(mgr, boom), _Listener(mgr)
    mgr.add_listener(bad._on_global_config)
    mgr.add_listener(good._on_global_config)
    with caplog.at_level(logging.ERROR, logger="neon_nb"):
        new = mgr.update(max_workers=2)
    assert new.max_workers == 2 and mgr.get() is new
    assert len(good.calls) == 1 and len(bad.calls) == 1
    assert any("listener" in r.getMessage() and r.exc_info for r in caplog.records)


def test_listeners_are_held_weakly_and_can_be_removed():
    mgr = ConfigManager()
    a, b = _Listener(mgr), _Listener(mgr)
    mgr.add_listener(a._on_global_config)
    mgr.add_listener(b._on_global_config)
    mgr.remove_listener(b._on_global_config)
    calls = b.calls
    del a
    gc.collect()
    mgr.update(max_workers=3)
    assert calls == []
    assert len(mgr._listeners) == 0


def test_concurrent_updates_lose_nothing_and_readers_never_see_half_an_update():
    mgr = ConfigManager(WorkerConfig(max_workers=1, queue_size=1))
    n_writers, rounds = 4, 300
    start = threading.Barrier(n_writers + 2)
    stop = threading.Event()
    torn = []

    def writer(i):
        start.wait()
        for r in range(rounds):
            # max_workers and queue_size always change together: a reader must never see them differ.
            v = 1 + (i * rounds + r) % 4000
            mgr.update(max_workers=v, queue_size=v)

    def reader():
        start.wait()
        while not stop.is_set():
            c = mgr.get()
            if c.max_workers != c.queue_size:
                torn.append(c)

    def counter_writer():
        start.wait()
        for r in range(rounds):
            mgr.update(history_size=r + 1)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_writers - 1)]
    threads.append(threading.Thread(target=counter_writer))
    rd = threading.Thread(target=reader)
    for t in [*threads, rd]:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    stop.set()
    rd.join()
    assert torn == []
    # The only writer of history_size wrote `rounds` last: no other update reverted it.
    assert mgr.get().history_size == rounds
