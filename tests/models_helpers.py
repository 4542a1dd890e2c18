"""A stand-in GGUF source and converter for the cache tests: the locking, atomic rename and
manifest logic of src.models.embedded run for real, without a 25-300 s dequantisation.

    python tests/models_helpers.py ROOT SECONDS     # one converting process (the race test)
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.models.embedded import EMBEDDED, Source  # noqa: E402

ALIAS = "smollm2-135m-instruct"
PAYLOAD = b"not really a gguf" * 1000


class FakeSource(Source):
    """The GGUF is PAYLOAD (or `payload`), its expected checksum `expected`."""

    def __init__(self, payload: bytes = PAYLOAD, expected: str | None = None, stamp: str = "v1"):
        super().__init__(EMBEDDED[ALIAS])
        self.payload, self.stamp = payload, stamp
        self.expected = expected if expected is not None else hashlib.sha256(PAYLOAD).hexdigest()

    def fingerprint(self) -> dict:
        return {"fake": self.stamp}

    def digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def prepare(self, work: Path):
        from src.models.embedded import ModelLoadError
        path = work / "fake.gguf"
        path.write_bytes(self.payload)
        if self.digest() != self.expected:
            raise ModelLoadError(f"model '{ALIAS}': checksum mismatch for {path.name}")
        return path, self.digest()


def slow_convert(seconds: float = 0.0):
    def convert(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text('{"model_type": "llama"}')
        time.sleep(seconds)  # the window in which a second process arrives
        (out / "model.safetensors").write_bytes(gguf.read_bytes() * 3)
    return convert


if __name__ == "__main__":
    from src.models.embedded import ensure_converted
    root, seconds = Path(sys.argv[1]), float(sys.argv[2])
    print("READY", flush=True)
    sys.stdin.readline()  # both processes start converting on the same signal
    print(ensure_converted(ALIAS, root=root, source=FakeSource(), convert=slow_convert(seconds)), flush=True)
