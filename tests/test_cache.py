"""The Session's result cache is bounded in bytes, least recently used first."""
from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from famegui.core.cache import ENTRY_OVERHEAD, ByteLRU, cache_limit_bytes, nbytes
from famegui.session import MapResult, Session
from famegui.targets import Target

MB = 1 << 20


def _result(i: int, side: int = 150) -> MapResult:
    m = np.random.default_rng(i).random((side, side), dtype=np.float32)  # a dlib-sized map: 90 KB
    t = Target("cell", layer="layer4", cell=(i % 7, i // 7 % 7))
    return MapResult(m, "fame", t, {"iterations": 10}, "probe", None, 0.1, {"initial_loss": 1.0}, ("k", i))


def test_2000_results_stay_under_the_byte_limit():
    limit = 16 * MB
    cache = ByteLRU(limit)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    peak_entries = 0
    for i in range(2000):
        cache[("k", i)] = _result(i)
        assert cache.nbytes <= limit  # the accounting
        if i % 100 == 99:  # the memory really held: arrays are traced by tracemalloc
            held = tracemalloc.get_traced_memory()[0] - base
            assert held <= limit + 2 * MB, f"{held / MB:.1f} MB held after {i + 1} results"
        peak_entries = max(peak_entries, len(cache))
    tracemalloc.stop()
    per = 150 * 150 * 4 + ENTRY_OVERHEAD
    assert len(cache) == limit // per and peak_entries == len(cache)  # full, not emptied
    assert cache.evictions == 2000 - len(cache)
    assert ("k", 1999) in cache and ("k", 0) not in cache  # the newest kept, the oldest gone


def test_least_recently_used_goes_first():
    per = nbytes(_result(0)) + ENTRY_OVERHEAD
    cache = ByteLRU(3 * per)
    for i in range(3):
        cache[i] = _result(i)
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache[3] = _result(3)
    assert list(cache) == [2, 0, 3]  # 1 was the least recently used
    cache.peek(2)  # peeking does not count as a use
    cache[4] = _result(4)
    assert 2 not in cache and set(cache) == {0, 3, 4}


def test_limits_zero_too_large_and_shrinking():
    r = _result(0)
    assert ByteLRU(0).get("x") is None
    zero = ByteLRU(0)
    zero["a"] = r
    assert len(zero) == 0 and zero.nbytes == 0
    small = ByteLRU(1000)
    small["a"] = r  # larger than the whole budget: not kept
    assert "a" not in small
    cache = ByteLRU(10 * MB)
    for i in range(50):
        cache[i] = _result(i)
    cache.set_limit(1 * MB)
    assert cache.nbytes <= 1 * MB and 49 in cache and 0 not in cache
    with pytest.raises(ValueError):
        ByteLRU(-1)


def test_replacing_a_key_keeps_the_count_right():
    cache = ByteLRU(10 * MB)
    for _ in range(5):
        cache["same"] = _result(1)
    assert len(cache) == 1 and cache.nbytes == nbytes(_result(1)) + ENTRY_OVERHEAD
    del cache["same"]
    assert cache.nbytes == 0


def test_threads_never_push_it_over(monkeypatch):
    cache = ByteLRU(2 * MB)
    results = [_result(i, side=64) for i in range(400)]

    def fill(offset):
        for i, r in enumerate(results):
            cache[(offset, i)] = r
            cache.get((offset, i - 3))
            assert cache.nbytes <= 2 * MB

    threads = [threading.Thread(target=fill, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == sum(nbytes(v) + ENTRY_OVERHEAD for v in cache.values_list()) <= 2 * MB


def test_the_setting_and_the_session(monkeypatch, resnet18_random):
    monkeypatch.setenv("FAMEGUI_CACHE_MB", "1.5")
    assert cache_limit_bytes() == int(1.5 * MB)
    s = Session()
    assert s.cache.max_bytes == int(1.5 * MB)
    monkeypatch.setenv("FAMEGUI_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="FAMEGUI_CACHE_MB"):
        cache_limit_bytes()
    monkeypatch.delenv("FAMEGUI_CACHE_MB")
    assert cache_limit_bytes() == 512 * MB
    # real maps through Session.explain: a budget of ~2.5 maps keeps the last two, and cached() finds them
    from conftest import face

    s = Session()
    s.set_model(resnet18_random)
    s.set_image("probe", face("london_001", "neutral.jpg"))
    per = 224 * 224 * 4 + ENTRY_OVERHEAD
    s.set_cache_limit(2.5 * per / MB)
    for k in range(5):
        s.explain("gradcam", Target("class", class_index=k))
        assert s.cache.nbytes <= 2.5 * per
    assert len(s.cache) == 2
    assert s.cached("gradcam", Target("class", class_index=4), None) is not None
    assert s.cached("gradcam", Target("class", class_index=0), None) is None
