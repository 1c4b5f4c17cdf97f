"""The host's image cache: each image file fetched from the controller once, checked, kept.

A file is streamed by the controller link's `fetch` into a temporary file next to its
final place, checked against the size and sha256 the controller recorded, and only then
renamed into place; so a file in the cache is always whole and the one the controller
has, and a failed or corrupt fetch leaves nothing behind. Files are named by their
sha256: the same file of two images is fetched once, and a name cannot point at other
content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from passthru.errors import HostError, PassthruError
from passthru.pci.work import ImageFile, ImagePart, ImageRef

_CHUNK = 1 << 20


class ImageError(HostError):
    """An image file that could not be fetched, or is not the file the controller has."""


class ImageFetch(Protocol):
    """Writes file `part` of image `image_id` to `dest` (the controller link streams it)."""

    def __call__(self, image_id: str, part: ImagePart, dest: Path) -> None: ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImageCache:
    """Image files under `root`, fetched through `fetch` when first needed."""

    def __init__(self, root: Path, fetch: ImageFetch) -> None:
        self.root = root
        self.fetch = fetch

    def path(self, file: ImageFile) -> Path:
        return self.root / f"sha256-{file.sha256.lower()}"

    def get(self, image: ImageRef, part: ImagePart) -> Path | None:
        """The cached file of `part` of `image`, fetched first if need be; None when the
        image has no such part."""
        file = image.file(part)
        if file is None:
            return None
        final = self.path(file)
        if final.exists():
            return final
        where = f"{part} of image {image.name} ({image.id})"
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.root, prefix=f".{final.name}.")
        os.close(handle)
        partial = Path(temp)
        try:
            try:
                self.fetch(image.id, ImagePart(part), partial)
            except (OSError, PassthruError) as error:
                raise ImageError(f"fetching the {where} failed: {error}") from None
            size = partial.stat().st_size
            if size != file.size:
                raise ImageError(f"the {where} is {size} bytes, but the controller recorded "
                                 f"{file.size}; it was cut short or changed on the way, "
                                 f"fetch it again")
            digest = sha256_of(partial)
            if digest != file.sha256.lower():
                raise ImageError(f"the {where} has sha256 {digest}, but the controller "
                                 f"recorded {file.sha256}; it was corrupted on the way or the "
                                 f"image was replaced, fetch it again")
            partial.chmod(0o644)
            partial.replace(final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return final
