"""The embedded Redis's data directory belongs to one `flowgate serve` at a time."""

from gateway.embedded import _claim


def test_a_second_server_on_one_bulk_dir_gets_a_private_redis_dir(tmp_path):
    first_dir, first_lock = _claim(tmp_path / "redis")
    second_dir, second_lock = _claim(tmp_path / "redis")
    try:
        assert first_dir == tmp_path / "redis"
        assert second_dir != first_dir and second_dir.exists()
    finally:
        second_lock.close()
        first_lock.close()
    third_dir, third_lock = _claim(tmp_path / "redis")  # released when its holder stops
    third_lock.close()
    assert third_dir == first_dir
