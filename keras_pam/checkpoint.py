"""Checkpoints of a continual-learning run, written so a kill never
corrupts them.

A run folder holds `config.json`, committed checkpoints in
`checkpoints/task_XXXX/` and a `LATEST` file naming the newest one. A
checkpoint is written into a temporary folder, its files' SHA-256 sums
recorded in `manifest.json`, then renamed into place; only then is `LATEST`
replaced (an atomic rename). A run killed at any instant therefore leaves
either the previous checkpoint or the new one, never half of one, and a
checkpoint whose files do not match their sums is refused.

State trees (nested dicts and lists of numbers, strings, numpy arrays,
`AdapterState`s and numpy `Generator`s) are stored as a JSON skeleton plus
one `.npz` of arrays, with no pickling.
"""

import hashlib
import json
import os
import shutil

import numpy as np

from keras_pam.lora import AdapterState

LATEST = "LATEST"
CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
TREE_JSON = "state.json"
TREE_ARRAYS = "arrays.npz"


class CorruptCheckpointError(ValueError):
    """A checkpoint's files are missing or do not match their checksums."""


def _encode(value, arrays):
    if isinstance(value, AdapterState):
        return {"__adapter__": _encode(dict(value.numpy()), arrays)}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        if value.dtype == object:
            arrays[key] = np.asarray(value.tolist(), dtype=str)
            return {"__array__": key, "object": True, "size": len(value)}
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("State trees need str keys.")
        return {"__dict__": {k: _encode(v, arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Cannot store a {type(value).__name__} in a checkpoint.")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__adapter__" in value:
        return AdapterState(_decode(value["__adapter__"], arrays))
    if "__generator__" in value:
        state = value["__generator__"]
        generator = np.random.Generator(
            getattr(np.random, state["bit_generator"])()
        )
        generator.bit_generator.state = state
        return generator
    if "__array__" in value:
        array = arrays[value["__array__"]]
        if value.get("object"):
            out = np.empty(value["size"], dtype=object)
            out[:] = [str(s) for s in array.reshape(-1)]
            return out
        return array
    return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}


def save_tree(directory, tree):
    """Write a state tree as `state.json` + `arrays.npz` in `directory`."""
    arrays = {}
    skeleton = _encode(tree, arrays)
    with open(os.path.join(directory, TREE_JSON), "w") as f:
        json.dump(skeleton, f)
    np.savez(os.path.join(directory, TREE_ARRAYS), **arrays)


def load_tree(directory):
    """Read a state tree written by `save_tree`."""
    with open(os.path.join(directory, TREE_JSON)) as f:
        skeleton = json.load(f)
    with np.load(os.path.join(directory, TREE_ARRAYS)) as data:
        arrays = {k: data[k] for k in data.files}
    return _decode(skeleton, arrays)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def seal(directory):
    """Record the checksum of every file of `directory` in its manifest."""
    sums = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name != MANIFEST and os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            sums[name] = _sha256(path)
    write_atomic(os.path.join(directory, MANIFEST), json.dumps(sums, indent=1))


def verify(directory):
    """Raise `CorruptCheckpointError` unless every file matches the
    manifest."""
    manifest = os.path.join(directory, MANIFEST)
    if not os.path.isfile(manifest):
        raise CorruptCheckpointError(
            f"The checkpoint {directory!r} has no {MANIFEST}; it was not "
            "written completely."
        )
    try:
        with open(manifest) as f:
            sums = json.load(f)
    except ValueError as error:
        raise CorruptCheckpointError(
            f"The manifest of checkpoint {directory!r} is unreadable: {error}"
        ) from None
    for name, expected in sums.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise CorruptCheckpointError(
                f"The checkpoint {directory!r} is missing {name!r}."
            )
        if _sha256(path) != expected:
            raise CorruptCheckpointError(
                f"The file {name!r} of checkpoint {directory!r} does not match "
                "its checksum: it is corrupted. Delete the run folder's "
                f"{LATEST} file and this checkpoint to fall back to an "
                "earlier one, or start the run again."
            )


def write_atomic(path, text):
    """Write a text file so that readers see the old or the new content."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_directory(os.path.dirname(path) or ".")


def commit(run_dir, name, write):
    """Write a checkpoint atomically and make it the latest.

    Args:
        run_dir: str. The run folder.
        name: str. The checkpoint's folder name (e.g. `"task_0002"`).
        write: callable. `write(directory)` writes the files.

    Returns:
        The checkpoint's folder.
    """
    root = os.path.join(run_dir, CHECKPOINTS)
    os.makedirs(root, exist_ok=True)
    temporary = os.path.join(root, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    write(temporary)
    seal(temporary)
    final = os.path.join(root, name)
    # A folder of this name that `LATEST` does not name is a leftover of a
    # run killed between the rename and the `LATEST` update.
    shutil.rmtree(final, ignore_errors=True)
    os.rename(temporary, final)
    _fsync_directory(root)
    write_atomic(os.path.join(run_dir, LATEST), name)
    for entry in os.listdir(root):
        if entry != name:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return final


def latest(run_dir):
    """The latest committed checkpoint folder of a run, or `None`."""
    pointer = os.path.join(run_dir, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    directory = os.path.join(run_dir, CHECKPOINTS, name)
    if not os.path.isdir(directory):
        raise CorruptCheckpointError(
            f"{pointer} names the checkpoint {name!r}, which does not exist."
        )
    return directory
