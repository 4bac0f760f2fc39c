import threading

from curate.ops import images
from curate.ops.images import decode_many, decode_rgb, map_images
from tests.conftest import jpeg_bytes, noise_image


def test_decode_many_equals_decoding_one_by_one_in_order():
    blobs = [jpeg_bytes(noise_image(64 + 8 * i, 48, seed=i)) for i in range(6)]
    assert [im.tobytes() for im in decode_many(blobs)] == [decode_rgb(b).tobytes() for b in blobs]


def test_map_images_uses_several_threads_and_keeps_the_order(monkeypatch):
    monkeypatch.setattr(images, "IMAGE_THREADS", 4)
    barrier = threading.Barrier(4, timeout=10)  # four calls in flight at once, or it breaks

    def wait_then_double(x):
        barrier.wait()
        return 2 * x

    assert map_images(wait_then_double, list(range(4))) == [0, 2, 4, 6]


def test_map_images_runs_in_the_caller_with_one_thread(monkeypatch):
    monkeypatch.setattr(images, "IMAGE_THREADS", 1)
    caller = threading.get_ident()
    assert map_images(lambda _: threading.get_ident(), [1, 2, 3]) == [caller] * 3
